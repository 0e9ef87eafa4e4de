#!/usr/bin/env bash
# One-shot GPU check (NOT YET RUN ON A GPU): on a fresh machine with Python 3.10+ and the CUDA driver,
#   1. create .venv-gpu, install a CUDA build of torch (TORCH_SPEC, default torch==2.14.1, a CUDA build
#      on PyPI) and, if no nvcc is on the machine, the nvcc wheel matching torch's CUDA version;
#   2. build mint with its CUDA kernels (pip install --no-build-isolation -Ccmake.define.MINT_CUDA=ON);
#   3. run the CUDA tests (tests/ops/test_cuda.py: CPU vs CUDA on every shared case + references);
#   4. run bench/cuda_bench.py (per op: time, GB/s or TFLOP/s, % of H200 peak, ratio to the PyTorch
#      reference in the same run; FlashInfer sampling when flashinfer-python installs), one table.
# Budget: under 8 minutes on an H200 (install ~2-3 min, build ~2 min, tests ~1 min, bench ~1 min).
# Usage: bash bench/gpu_check.sh            (from the repository root; writes logs to $OUT or /tmp)
# Options (environment): PYTHON=python3.x; TORCH_SPEC="torch==..."; USE_SYSTEM_TORCH=1 reuses a CUDA torch
# already installed for $PYTHON (venv with --system-site-packages, no torch download); for a machine
# without internet, pip's own PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels work unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
logs=${OUT:-/tmp/mint-gpu-check}
mkdir -p "$logs"
py=${PYTHON:-python3}
stage() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stage "venv + CUDA torch"
if [ "${USE_SYSTEM_TORCH:-0}" = 1 ]; then
  "$py" -m venv --system-site-packages .venv-gpu
else
  "$py" -m venv .venv-gpu
fi
V=.venv-gpu/bin
$V/pip install -q --upgrade pip || true
if [ "${USE_SYSTEM_TORCH:-0}" != 1 ]; then $V/pip install -q "${TORCH_SPEC:-torch==2.14.1}"; fi
$V/pip install -q numpy pytest ninja cmake "scikit-build-core>=0.10" pydantic
$V/python -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
cuda_ver=$($V/python -c "import torch; print(torch.version.cuda)")
cuda_major=${cuda_ver%%.*}

stage "nvcc"
nvcc_bin=$(command -v nvcc || true)
[ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_bin=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc_bin" ]; then
  if [ "$cuda_major" -ge 13 ]; then pkg="nvidia-cuda-nvcc==${cuda_ver}.*"; else pkg="nvidia-cuda-nvcc-cu${cuda_major}==${cuda_ver}.*"; fi
  $V/pip install -q "$pkg" || $V/pip install -q "${pkg%%==*}"
  nvcc_bin=$(find .venv-gpu -type f -name nvcc -path "*bin*" | head -1)
fi
[ -n "$nvcc_bin" ] || { echo "no nvcc found or installable"; exit 1; }
echo "nvcc: $nvcc_bin"
# CUDA headers and libraries of the pip wheels (torch's nvidia-* dependencies) for cmake and the compiler
site=$($V/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
incs=$(find "$site/nvidia" "$(dirname "$(dirname "$nvcc_bin")")" -maxdepth 4 -type d -name include 2>/dev/null | tr '\n' ':')
libs=$(find "$site/nvidia" "$(dirname "$(dirname "$nvcc_bin")")" -maxdepth 4 -type d -name lib -o -maxdepth 4 -type d -name lib64 2>/dev/null | tr '\n' ':')
cuda_root="$(dirname "$(dirname "$nvcc_bin")")"
# pip's CUDA wheels ship only versioned libraries (libcudart.so.13); CMake's FindCUDAToolkit wants the
# unversioned name, so link one into a private folder.
links=.venv-gpu/cuda-links
mkdir -p "$links"
for lib in cudart; do
  if ! find "$cuda_root" /usr/local/cuda/lib64 -maxdepth 3 -name "lib$lib.so" 2>/dev/null | grep -q .; then
    so=$(find "$site/nvidia" -name "lib$lib.so.*" 2>/dev/null | head -1)
    [ -n "$so" ] && ln -sf "$so" "$links/lib$lib.so"
  fi
done
libs="$PWD/$links:$libs"
export CUDACXX="$nvcc_bin" CUDAToolkit_ROOT="$cuda_root"
export CPATH="${incs}${CPATH:-}" LIBRARY_PATH="${libs}${LIBRARY_PATH:-}" LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"

stage "build mint with CUDA (sm_90a)"
MAX_JOBS=16 CMAKE_BUILD_PARALLEL_LEVEL=16 $V/pip install -q --no-build-isolation . \
  -Ccmake.define.MINT_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90a \
  -Ccmake.define.CMAKE_CUDA_COMPILER="$nvcc_bin" -Ccmake.define.CUDAToolkit_ROOT="$cuda_root" \
  -Ccmake.define.CMAKE_LIBRARY_PATH="${libs//:/;}" 2>&1 | tee "$logs/build.log" | tail -20
$V/python -c "import mint, torch; assert torch._C._dispatch_has_kernel_for_dispatch_key('mint::sample', 'CUDA'); print('mint CUDA kernels registered')"

stage "CUDA tests"
set +e
timeout 240 $V/python -m pytest -q tests/ops/test_cuda.py 2>&1 | tee "$logs/tests.log" | tail -15
tests_rc=${PIPESTATUS[0]}
set -e

stage "flashinfer (optional)"
timeout 90 $V/pip install -q flashinfer-python >/dev/null 2>&1 && echo "flashinfer-python installed" || echo "flashinfer-python not installed; sampling is compared with torch only"

stage "benchmarks"
timeout 180 $V/python bench/cuda_bench.py 2>&1 | tee "$logs/bench.log" || echo "benchmarks failed or timed out"

stage "done: tests exit code $tests_rc, total $(( $(date +%s) - start ))s"
exit "$tests_rc"
