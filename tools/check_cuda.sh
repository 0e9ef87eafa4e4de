#!/usr/bin/env bash
# Compile every torch-free CUDA source with nvcc for sm_90a, warnings as errors, without linking.
# This catches CUDA errors on machines without a GPU or a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
sources=(csrc/cuda/kernels/*.cu)
if [ ${#sources[@]} -eq 0 ]; then echo "no CUDA sources yet"; exit 0; fi
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
out=$(mktemp -d)
for src in "${sources[@]}"; do
  echo "nvcc $src"
  "$nvcc" -std=c++17 -arch=sm_90a -O3 -Icsrc/include -Werror all-warnings -Xcompiler -Wall,-Werror \
    -c "$src" -o "$out/$(basename "$src").o"
done
rm -rf "$out"
