#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, compare one epoch of
# baseline.toml and of modern.toml on the GPU against the CPU, same seed.
#
#   scripts/gpu-check.sh RUNNER_CUDA_BINARY MNIST_DIR [OUT_DIR]
#
# Prints, per spec and device, the epoch's seconds, training images/s and
# metrics, then the CPU-vs-GPU differences in train/val loss and accuracy.
# Exits non-zero if a loss differs by more than 1e-3 relative or an accuracy
# by more than 0.002 (float reductions differ in order between the devices,
# so bit-identical results are not expected).
set -euo pipefail
bin=${1:?usage: gpu-check.sh RUNNER_CUDA_BINARY MNIST_DIR [OUT_DIR]}
data=${2:?usage: gpu-check.sh RUNNER_CUDA_BINARY MNIST_DIR [OUT_DIR]}
out=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/.." && pwd)
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv || true
status=0
for spec in baseline modern; do
  for device in cpu cuda; do
    "$bin" run "$here/experiments/$spec.toml" --force \
      --set data.dir="$data" --set data.download=false \
      --set train.epochs=1 --set train.device=$device \
      --results-dir "$out/$device" > "$out/$spec-$device.log" 2>&1 || { cat "$out/$spec-$device.log"; exit 1; }
    grep -E "^epoch|^done" "$out/$spec-$device.log" | sed "s/^/$spec $device: /"
  done
  cpu=$(ls "$out"/cpu/"$spec"/*/metrics.csv); gpu=$(ls "$out"/cuda/"$spec"/*/metrics.csv)
  python3 - "$spec" "$cpu" "$gpu" <<'PY' || status=1
import csv, sys
spec, a, b = sys.argv[1], *(list(csv.DictReader(open(p)))[-1] for p in sys.argv[2:])
bad = False
for key, tol, rel in [("train_loss", 1e-3, True), ("val_loss", 1e-3, True), ("train_acc", 2e-3, False), ("val_acc", 2e-3, False)]:
    x, y = float(a[key]), float(b[key])
    diff = abs(x - y) / (abs(x) if rel and x else 1)
    ok = diff <= tol
    bad |= not ok
    print(f"{spec} {key}: cpu {x:.6f} gpu {y:.6f} {'ok' if ok else 'DIFFERS'}")
print(f"{spec}: cpu {float(a['epoch_seconds']):.1f}s {float(a['train_images_per_sec']):.0f} img/s; "
      f"gpu {float(b['epoch_seconds']):.1f}s {float(b['train_images_per_sec']):.0f} img/s")
sys.exit(1 if bad else 0)
PY
done
exit $status
