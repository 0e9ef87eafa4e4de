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

# The tensor-facing bindings (csrc/cuda/*.cpp) need torch's CUDA headers, which a CPU torch ships
# without the generated c10/cuda/impl/cuda_cmake_macros.h and whose ATen/cuda/CUDAContext.h includes
# cuSPARSE / cuBLAS / cuSOLVER headers. When a Python with torch is at hand ($PYTHON, or .venv), they
# are syntax-checked (g++ -fsyntax-only -Wall -Werror) against torch's real headers plus minimal stubs
# of those missing ones: this catches API misuse, not link or runtime errors.
python=${PYTHON:-.venv/bin/python}
bindings=(csrc/cuda/*.cpp)
if [ ${#bindings[@]} -gt 0 ] && [ -x "$python" ] && "$python" -c "import torch" 2>/dev/null; then
  stub=$(mktemp -d)
  mkdir -p "$stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
  printf '#pragma once\ntypedef struct cusparseContext* cusparseHandle_t;\ntypedef int cusparseStatus_t;\nconst char* cusparseGetErrorString(cusparseStatus_t);\n' > "$stub/cusparse.h"
  printf '#pragma once\ntypedef struct cublasContext* cublasHandle_t;\ntypedef int cublasStatus_t;\n' > "$stub/cublas_v2.h"
  printf '#pragma once\ntypedef struct cublasLtContext* cublasLtHandle_t;\n' > "$stub/cublasLt.h"
  printf '#pragma once\ntypedef struct cusolverDnContext* cusolverDnHandle_t;\n' > "$stub/cusolverDn.h"
  printf '#pragma once\ntypedef int cusolverStatus_t;\n' > "$stub/cusolver_common.h"
  mapfile -t tinc < <("$python" -c "from torch.utils import cpp_extension as c; print('\n'.join(c.include_paths()))")
  cuda_inc=$(dirname "$(readlink -f "$nvcc")")/../include
  [ -f "$cuda_inc/cuda_runtime_api.h" ] || cuda_inc=/usr/local/cuda/include
  abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
  for src in "${bindings[@]}"; do
    echo "g++ -fsyntax-only $src"
    ${CXX:-g++} -std=c++20 -fsyntax-only -Wall -Werror -Icsrc/include -I"$stub" "${tinc[@]/#/-I}" \
      -I"$cuda_inc" -D_GLIBCXX_USE_CXX11_ABI="$abi" "$src"
  done
  rm -rf "$stub"
else
  echo "bindings: no Python with torch found (set PYTHON); syntax check of csrc/cuda/*.cpp skipped"
fi
