#!/usr/bin/env bash
# Builds runner with the CUDA backend (dfdx's `cuda` feature), on a machine
# with no GPU and no system CUDA toolkit.
#
#   scripts/build-cuda.sh            # -> target/cuda/release/runner
#   scripts/build-cuda.sh clippy --all-targets -- -D warnings   # any cargo command
#
# The toolkit comes from NVIDIA's CUDA 13 wheels (pip), assembled once into
# a cache folder ($RUNNER_CUDA_CACHE, default ~/.cache/runner-cuda):
#   - nvcc, cicc, the headers, NVRTC and cuBLAS from the 13.0 wheels. 13.0 is
#     pinned: its PTX (.version 9.0) loads on any CUDA 13 driver, while newer
#     nvcc emits PTX that only newer drivers load;
#   - lib64/ links to the wheels' .so.13 files, where cudarc looks;
#   - lib64/stubs/libcuda.so: libcuda comes only with a driver, so the link
#     goes against a stub whose functions all fail (CUDA_ERROR_STUB_LIBRARY).
#     The stub is for linking, and for CI's "no GPU" check; never put it on
#     the loader's path on a machine with a GPU;
#   - an nvidia-smi shim: dfdx's build script asks nvidia-smi for the GPU.
# With CUDA_ROOT set to a real toolkit, that toolkit is used instead.
#
# The kernels are compiled for CUDA_COMPUTE_CAP (default 90: H100, H200).
# The binary needs, at run time, the driver's libcuda.so.1 and CUDA 13's
# libnvrtc.so.13, libcublas.so.13 and libcublasLt.so.13 (see gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

wheels_version=13.0.3.0
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
target_dir="${CUDA_TARGET_DIR:-target/cuda}"
cache="${RUNNER_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner-cuda}/$wheels_version"

# The stub's functions: every driver function cudarc declares. Each returns
# CUDA_ERROR_STUB_LIBRARY (34), except the two that name an error, which
# cudarc calls (and unwraps) while formatting one.
write_libcuda_stub() {
  local sys_rs=$1 out=$2
  {
    echo '/* libcuda stub for linking without a driver: every call fails. */'
    echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = "CUDA_ERROR_STUB_LIBRARY: no NVIDIA driver (linked against a stub)"; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_STUB_LIBRARY"; return 0; }'
    grep -o 'pub fn cu[A-Za-z0-9_]*' "$sys_rs" | sed 's/pub fn //' | sort -u |
      grep -vx 'cuGetErrorString\|cuGetErrorName' |
      sed 's/.*/int &(void) { return 34; }/'
  } > "$out/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so" "$out/libcuda_stub.c"
  ln -sf libcuda.so "$out/libcuda.so.1"
}

assemble_toolkit() {
  local root="$cache/nvidia/cu13"
  if [ -f "$cache/.complete" ]; then echo "$root"; return; fi
  echo "assembling a CUDA $wheels_version toolkit from NVIDIA's wheels in $cache" >&2
  rm -rf "$cache"
  python3 -m pip install -q --disable-pip-version-check --target "$cache" \
    "cuda-toolkit[nvcc,cccl,cublas]==$wheels_version" >&2
  mkdir -p "$root/lib64/stubs"
  for lib in nvrtc cublas cublasLt; do
    ln -sf "../lib/lib$lib.so.13" "$root/lib64/lib$lib.so"
  done
  local sys_rs
  sys_rs="$(dirname "$(cargo metadata --format-version 1 --locked --features cuda |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')")/src/driver/sys.rs"
  write_libcuda_stub "$sys_rs" "$root/lib64/stubs"
  # dfdx's build script reads the GPU's compute capability from nvidia-smi.
  mkdir -p "$cache/shim"
  cat > "$cache/shim/nvidia-smi" <<'SHIM'
#!/bin/sh
# Answers dfdx's build script on a machine with no GPU: CUDA_COMPUTE_CAP.
echo compute_cap
echo "${CUDA_COMPUTE_CAP%?}.${CUDA_COMPUTE_CAP#"${CUDA_COMPUTE_CAP%?}"}"
SHIM
  chmod +x "$cache/shim/nvidia-smi"
  touch "$cache/.complete"
  echo "$root"
}

if [ -z "${CUDA_ROOT:-}" ]; then
  CUDA_ROOT=$(assemble_toolkit)
  command -v nvidia-smi >/dev/null || export PATH="$PATH:$cache/shim"
fi
export CUDA_ROOT
export PATH="$CUDA_ROOT/bin:$PATH"
command -v nvcc >/dev/null || { echo "no nvcc in $CUDA_ROOT/bin" >&2; exit 1; }
test -f "$CUDA_ROOT/include/cuda.h" || { echo "$CUDA_ROOT/include/cuda.h not found: set CUDA_ROOT" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: put the shim from $cache/shim on the PATH" >&2; exit 1; }

# dfdx's build script watches neither CUDA_ROOT nor PATH: when the toolkit
# changes, rebuild dfdx, or it keeps old PTX and an old include path.
stamp="$target_dir/cuda-toolkit.stamp"
want="$CUDA_ROOT sm_$CUDA_COMPUTE_CAP"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$want" ]; then
  cargo clean --release -p dfdx --target-dir "$target_dir"
fi
mkdir -p "$target_dir"
echo "$want" > "$stamp"

command=${1:-build}
shift || true
cargo "$command" --release --locked --features cuda --target-dir "$target_dir" "$@"
[ "$command" != build ] || echo "built $target_dir/release/runner (CUDA, sm_$CUDA_COMPUTE_CAP, toolkit $CUDA_ROOT)"
