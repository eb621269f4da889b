#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine without Rust: the
# stripped CUDA binary, the check, the two specs and MNIST (~21 MB).
#
#   scripts/gpu-bundle.sh [OUT_DIR]      # default target/gpu-bundle
#   # there: bash OUT_DIR/gpu-check.sh OUT_DIR/runner OUT_DIR/mnist
#
# Builds the binary first (scripts/build-cuda.sh) unless it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bundle}
bin=target/cuda/release/runner
mnist=${MNIST_DIR:-../shared/data/mnist}
[ -x "$bin" ] || scripts/build-cuda.sh
rm -rf "$out"
mkdir -p "$out/experiments" "$out/mnist"
strip -o "$out/runner" "$bin"
cp scripts/gpu-check.sh "$out/"
# Where the build put what the binary names, for the check to show absent.
read -r cuda_root _ < target/cuda/cuda-toolkit.stamp
printf '%s\n' "$PWD/target/cuda" "$cuda_root" > "$out/build-paths.txt"
cp experiments/baseline.toml experiments/modern.toml "$out/experiments/"
cp "$mnist"/*.gz "$mnist"/MD5SUMS "$out/mnist/"
size=$(du -sm "$out" | cut -f1)
echo "bundle: $out, ${size} MiB"
[ "$size" -le 64 ] || { echo "the bundle is over 64 MiB" >&2; exit 1; }
echo "on a GPU machine: bash $out/gpu-check.sh $out/runner $out/mnist"
