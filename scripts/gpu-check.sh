#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no Rust: one epoch of
# baseline.toml and of modern.toml on the GPU and on the CPU, same seed.
#
#   scripts/gpu-check.sh RUNNER_CUDA_BINARY MNIST_DIR [OUT_DIR]
#
# (From the bundle of scripts/gpu-bundle.sh: `bash gpu-check.sh runner mnist`.)
# Prints, per spec and device, the epoch's seconds and training images/s,
# then the CPU-vs-GPU differences of the final train/val loss and accuracy,
# and exits non-zero if one is over its tolerance. The devices sum floats in
# different orders, so the runs are close, not bit-identical, and how close
# depends on the spec. Measured on the CPU, the GPU's own code (the composed
# ops) against the CPU kernels after one epoch: baseline.toml (sigmoid, lr
# 1e-3) agrees to 6 digits, so it gets 1e-3 relative loss and 0.002
# accuracy; modern.toml (relu, max pooling, lr 0.02: ties and kinks let
# orders diverge) differs by 5e-3 relative train loss, 7e-2 relative val
# loss and 0.0026 val accuracy, so it gets 2e-2, 0.15 and 0.005.
set -euo pipefail
usage="usage: gpu-check.sh RUNNER_CUDA_BINARY MNIST_DIR [OUT_DIR]"
bin=$(realpath "${1:?$usage}")
data=$(realpath "${2:?$usage}")
out=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
experiments=$here/experiments
[ -d "$experiments" ] || experiments=$here/../experiments

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1 || true

# The binary links the driver's libcuda and CUDA 13's NVRTC and cuBLAS
# (too large to carry): find them where a CUDA 13 toolkit or PyTorch's
# wheels put them.
for lib in $(ldd "$bin" 2>/dev/null | awk '/not found/ {print $1}'); do
  [ "$lib" != libcuda.so.1 ] || { echo "no NVIDIA driver here (libcuda.so.1)" >&2; exit 1; }
  found=$(find /usr/local /opt /usr/lib /usr/lib64 "$(python3 -c 'import sys; print(sys.prefix)' 2>/dev/null || echo /usr)" \
    -name "$lib" -print -quit 2>/dev/null || true)
  [ -n "$found" ] || { echo "$lib not found: install CUDA 13's NVRTC and cuBLAS" >&2; exit 1; }
  export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
if ldd "$bin" | grep -q 'libcuda.so.1 => .*stubs'; then
  echo "libcuda.so.1 resolves to a link stub: take the stubs folder off LD_LIBRARY_PATH" >&2; exit 1
fi
ldd "$bin" | grep -E 'libcuda|libnvrtc|libcublas' | sed 's/^\s*/linked: /' || true

# The build machine's folders (the bundle lists them): the binary names
# them (dfdx's kernel sources, CUDA's headers) but must not need them.
if [ -f "$here/build-paths.txt" ]; then
  while read -r path; do
    if [ -e "$path" ]; then echo "build path present here: $path"; else echo "build path absent here: $path"; fi
  done < "$here/build-paths.txt"
fi

mkdir -p "$out"
status=0
for spec in baseline modern; do
  for device in cuda cpu; do
    "$bin" run "$experiments/$spec.toml" --force \
      --set data.dir="$data" --set data.download=false \
      --set train.epochs=1 --set train.device=$device \
      --results-dir "$out/$device" > "$out/$spec-$device.log" 2>&1 || { cat "$out/$spec-$device.log"; exit 1; }
    grep -E "device|^epoch|^done" "$out/$spec-$device.log" | sed "s/^/$spec $device: /"
  done
  cpu=$(ls "$out"/cpu/"$spec"/*/metrics.csv); gpu=$(ls "$out"/cuda/"$spec"/*/metrics.csv)
  python3 - "$spec" "$cpu" "$gpu" <<'PY' || status=1
import csv, sys
spec, a, b = sys.argv[1], *(list(csv.DictReader(open(p)))[-1] for p in sys.argv[2:])
# (train loss, val loss) relative, accuracy absolute: see the top of this file.
loss_tol, val_loss_tol, acc_tol = {"baseline": (1e-3, 1e-3, 2e-3), "modern": (2e-2, 0.15, 5e-3)}[spec]
bad = False
for key, tol, rel in [("train_loss", loss_tol, True), ("val_loss", val_loss_tol, True),
                      ("train_acc", acc_tol, False), ("val_acc", acc_tol, False)]:
    x, y = float(a[key]), float(b[key])
    diff = abs(x - y) / (abs(x) if rel and x else 1)
    ok = diff <= tol
    bad |= not ok
    kind = "relative" if rel else "absolute"
    print(f"{spec} {key}: cpu {x:.6f} gpu {y:.6f} {kind} diff {diff:.2e} {'ok' if ok else 'DIFFERS'}")
print(f"{spec} speed: cpu {float(a['epoch_seconds']):.2f} s/epoch {float(a['train_images_per_sec']):.0f} img/s; "
      f"gpu {float(b['epoch_seconds']):.2f} s/epoch {float(b['train_images_per_sec']):.0f} img/s")
sys.exit(1 if bad else 0)
PY
done
[ $status = 0 ] && echo "gpu-check: passed" || echo "gpu-check: FAILED"
exit $status
