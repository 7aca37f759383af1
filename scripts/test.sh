#!/usr/bin/env bash
# Builds nattn (if needed), runs every CPU test with ctest, then the Python package's tests.
# CI calls exactly this.
#
# Where nvcc is found (PATH or /usr/local/cuda), the same build also compiles every CUDA kernel
# for the full architecture list (75;80;86;89;90, or NATTN_CUDA_ARCHS) and the GPU test programs;
# without a GPU the tests labelled `cuda` are not run (scripts/test_gpu.sh runs them on a GPU
# machine). NATTN_TEST_CUDA=0 skips the CUDA build; NATTN_TEST_CUDA=1 requires it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${NATTN_BUILD_DIR:-$root/build}"
jobs="${NATTN_JOBS:-$(nproc)}"

cuda_args=(-DNATTN_ENABLE_CUDA=OFF)
want_cuda="${NATTN_TEST_CUDA:-auto}"
if [ "$want_cuda" != 0 ]; then
  nvcc_path="$(command -v nvcc || true)"
  [ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_path=/usr/local/cuda/bin/nvcc
  cutlass=""
  if [ -n "$nvcc_path" ]; then
    "$root/scripts/install_deps.sh" --cuda || true
    cutlass="$("$root/scripts/cutlass_include.sh" 2> /dev/null || true)"
  fi
  if [ -n "$nvcc_path" ] && [ -n "$cutlass" ]; then
    cuda_args=(-DNATTN_ENABLE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc_path" "-DNATTN_CUTLASS_INCLUDE=$cutlass"
               "-DNATTN_CUDA_ARCHS=${NATTN_CUDA_ARCHS:-75;80;86;89;90}")
    echo "[nattn] CUDA build with $nvcc_path for architectures ${NATTN_CUDA_ARCHS:-75;80;86;89;90}"
    # Multi-GPU NA over NCCL (src/dist): compiled too when NCCL's header is next to nvcc's toolkit.
    if [ -f "$(dirname "$(dirname "$nvcc_path")")/include/nccl.h" ] || [ -f /usr/include/nccl.h ] ||
       [ -n "${NCCL_ROOT:-}" ]; then
      cuda_args+=(-DNATTN_ENABLE_NCCL=ON)
      echo "[nattn] NCCL found: building the multi-GPU ops (src/dist)"
    fi
  elif [ -n "$nvcc_path" ]; then
    echo "[nattn] WARNING: nvcc found but the CUTLASS headers (pip nvidia-cutlass==4.2.0.0) could not be" \
         "installed: CPU-only build, the CUDA kernels are NOT compiled" >&2
    [ "$want_cuda" = 1 ] && exit 1
  elif [ "$want_cuda" = 1 ]; then
    echo "[nattn] NATTN_TEST_CUDA=1 but nvcc was not found" >&2
    exit 1
  else
    echo "[nattn] nvcc not found: CPU-only build (the CUDA kernels are not compiled)"
  fi
fi
"$root/scripts/install_deps.sh"

start=$(date +%s)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build" -j "$jobs"
echo "[nattn] build took $(( $(date +%s) - start )) s"

ctest_args=()
if ! nvidia-smi -L > /dev/null 2>&1; then
  ctest_args=(-LE cuda)  # no GPU here: the CUDA tests were compiled, not run
fi
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900 "${ctest_args[@]}"

# The Python package (pip install . into a venv, then pytest). Torch tests skip unless
# NATTN_PY_TORCH=1 (which installs torch from PyPI first).
NATTN_PY_TORCH="${NATTN_PY_TORCH:-0}" "$root/scripts/test_python.sh"
