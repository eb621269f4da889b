#!/usr/bin/env bash
# Checks a CUDA binary from scripts/build-cuda.sh on a machine with no GPU
# (CI): it embeds real PTX for the target GPU, imports only functions that
# CUDA 13 has, trains on the CPU when the device is "auto", and reports a
# missing GPU as one line of error, with no panic text, when it is "cuda".
#
#   scripts/cuda-binary-check.sh [BINARY] [MNIST_DIR]
#
# It runs the binary against the libcuda link stub, whose every call fails
# as a machine without a driver would.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/cuda/release/runner}
data=${2:-${MNIST_DIR:-../shared/data/mnist}}
# build-cuda.sh records the toolkit and target it built with.
read -r cuda_root target < "$(dirname "$bin")/../cuda-toolkit.stamp"
fail() { echo "cuda-binary-check: $*" >&2; exit 1; }

# Kernels: dfdx's PTX, compiled for the target, in the binary.
ptx_targets=$(strings "$bin" | grep -c "^\.target $target" || true)
ptx_entries=$(strings "$bin" | grep -c '^\.visible \.entry' || true)
ptx_version=$(strings "$bin" | grep -m1 '^\.version' || true)
[ "$ptx_targets" -gt 0 ] && [ "$ptx_entries" -gt 0 ] || fail "no $target PTX in $bin"
echo "PTX: $ptx_targets modules for $target, $ptx_entries kernels, $ptx_version"

# Libraries: every cuBLAS and NVRTC function the binary imports is in
# CUDA 13's libraries, every driver function in CUDA 13's cuda.h (the
# loader binds functions lazily: a missing one would fail mid-run).
imports=$(nm -D --undefined-only "$bin" | awk '{print $2}' | sed 's/@.*//' | sort -u)
defined=$(nm -D --defined-only "$cuda_root/lib/libcublas.so.13" "$cuda_root/lib/libnvrtc.so.13" |
  awk '{print $3}' | sed 's/@.*//' | sort -u)
missing=$(comm -23 <(grep -E '^(cublas|nvrtc)' <<<"$imports") <(echo "$defined"))
[ -z "$missing" ] || fail "not in CUDA 13's cuBLAS/NVRTC: $missing"
for f in $(grep -E '^cu[A-Z]' <<<"$imports"); do
  grep -qw "$f" "$cuda_root/include/cuda.h" || fail "driver function $f is not in CUDA 13's cuda.h"
done
echo "imports: $(grep -cE '^cu[A-Z]' <<<"$imports") driver, $(grep -cE '^(cublas|nvrtc)' <<<"$imports") cuBLAS/NVRTC functions, all in CUDA 13"

export LD_LIBRARY_PATH="$cuda_root/lib64/stubs:$cuda_root/lib"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--set data.dir="$data" --set data.download=false --set data.limit_train=500
  --set data.limit_test=100 --set train.epochs=1)

# "cuda" without a GPU: a clear error, no panic.
if "$bin" run experiments/baseline.toml "${common[@]}" --set train.device=cuda \
    --results-dir "$out/cuda" > "$out/cuda.log" 2>&1; then
  fail "train.device=cuda succeeded without a GPU"
fi
grep -q 'no usable NVIDIA GPU was found' "$out/cuda.log" || { cat "$out/cuda.log"; fail "no GPU error"; }
! grep -qiE 'panick|backtrace' "$out/cuda.log" || { cat "$out/cuda.log"; fail "panic text printed"; }
echo "device=cuda: $(cat "$out/cuda.log")"

# "auto" without a GPU: trains on the CPU.
"$bin" run experiments/baseline.toml "${common[@]}" --set train.device=auto \
  --results-dir "$out/auto" > "$out/auto.log" 2>&1 || { cat "$out/auto.log"; fail "device=auto failed"; }
grep -q 'device cpu' "$out/auto.log" || { cat "$out/auto.log"; fail "device=auto did not use the CPU"; }
! grep -qiE 'panick|backtrace' "$out/auto.log" || { cat "$out/auto.log"; fail "panic text printed"; }
echo "device=auto: $(grep -m1 '^done' "$out/auto.log")"
echo "cuda-binary-check: passed"
