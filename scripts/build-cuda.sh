#!/usr/bin/env bash
# Builds a runner binary with the CUDA backend (dfdx's `cuda` feature).
#
# dfdx 0.13 compiles its CUDA kernels with nvcc at build time and links
# libcuda, libnvrtc and libcublas, so this needs a CUDA toolkit: nvcc on the
# PATH (or in $CUDA_ROOT/bin), $CUDA_ROOT/include/cuda.h, and the libraries
# (libcuda from the driver, or the toolkit's lib64/stubs for linking only).
# The GPU's compute capability is read with nvidia-smi; on a machine without
# a GPU, set CUDA_COMPUTE_CAP (e.g. 90 for H100/H200, 80 for A100).
#
#   scripts/build-cuda.sh                # -> target/cuda/release/runner
#   CUDA_ROOT=/usr/local/cuda-12.4 CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh
#
# NVIDIA's PyPI wheels are not enough: nvidia-cuda-nvcc-cu12 ships ptxas and
# libnvvm but no nvcc driver, and no wheel ships libcuda (it comes with the
# driver). Without a toolkit, CI still type-checks the CUDA path with
# `cargo check --features cuda,dfdx/ci-check` (empty kernels, never runs).
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_ROOT="${CUDA_ROOT:-$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")}"
export CUDA_ROOT
export PATH="$CUDA_ROOT/bin:$PATH"
command -v nvcc >/dev/null || { echo "nvcc not found: install a CUDA toolkit or set CUDA_ROOT" >&2; exit 1; }
test -f "$CUDA_ROOT/include/cuda.h" || { echo "$CUDA_ROOT/include/cuda.h not found: set CUDA_ROOT" >&2; exit 1; }

if ! command -v nvidia-smi >/dev/null; then
  # dfdx's build script asks nvidia-smi for the GPU architecture; answer for it.
  : "${CUDA_COMPUTE_CAP:?no nvidia-smi here: set CUDA_COMPUTE_CAP, e.g. 90}"
  shim=$(mktemp -d)
  printf '#!/bin/sh\necho compute_cap\necho %s\n' "$(echo "$CUDA_COMPUTE_CAP" | sed 's/^\(.\)\(.*\)$/\1.\2/')" > "$shim/nvidia-smi"
  chmod +x "$shim/nvidia-smi"
  export PATH="$PATH:$shim"
fi
# Link against the stubs when the driver's libcuda is not installed.
if [ -d "$CUDA_ROOT/lib64/stubs" ]; then
  export LIBRARY_PATH="$CUDA_ROOT/lib64:$CUDA_ROOT/lib64/stubs:${LIBRARY_PATH:-}"
fi

cargo build --release --locked --features cuda --target-dir target/cuda
echo "built target/cuda/release/runner (CUDA); check it on a GPU with scripts/gpu-check.sh"
