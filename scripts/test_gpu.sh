#!/usr/bin/env bash
# One-command GPU check of the CUDA backends, run on a machine with a GPU from the repository root:
#
#   scripts/test_gpu.sh [--build] [BUILD_DIR] [--no-bench] [--full-bench] [--no-sanitizer]
#
# --build configures and builds BUILD_DIR (default build-gpu with --build, else build) with the CUDA
# backends for the GPU present (ninja when available; NATTN_CUTLASS_INCLUDE and GTEST_ROOT are
# passed on when set, for machines without network access). Without --build, BUILD_DIR must
# already hold a build with -DNATTN_ENABLE_CUDA=ON.
#
# Runs: the GPU test programs (forward, backward, token permutation; every one against the CPU
# reference; `nattn profile` on the GPU), compute-sanitizer memcheck, racecheck and synccheck on
# their small cases, `nattn verify testdata/golden` on cutlass-fna in fp32/fp16/bf16 (forward and
# backward), then the benchmarks (ours; PyTorch SDPA flash when torch is installed). Logs go to
# $OUT (if set) or BUILD_DIR/gpu-logs. Exit status: non-zero if any test, sanitizer or verify step failed.
set -u
BUILD=""
BENCH=quick
SANITIZE=1
DO_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --build) DO_BUILD=1 ;;
    --no-bench) BENCH=none ;;
    --full-bench) BENCH=full ;;
    --no-sanitizer) SANITIZE=0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) BUILD="$arg" ;;
  esac
done
[ -z "$BUILD" ] && { [ "$DO_BUILD" = 1 ] && BUILD=build-gpu || BUILD=build; }
LOGS="${OUT:-$BUILD/gpu-logs}"
mkdir -p "$LOGS"
export NATTN_GOLDEN_DIR="$PWD/testdata/golden"
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
# A program of the build: BUILD_DIR/NAME, or BUILD_DIR/tests/NAME (where CMake puts the tests).
bin() { if [ -x "$BUILD/$1" ]; then echo "$BUILD/$1"; else echo "$BUILD/tests/$1"; fi; }

step "device"
nvidia-smi -L || { echo "no GPU"; exit 1; }

if [ "$DO_BUILD" = 1 ]; then
  step "build ($BUILD)"
  gen=()
  command -v ninja > /dev/null && gen=(-G Ninja)
  extra=()
  [ -n "${NATTN_CUTLASS_INCLUDE:-}" ] && extra+=("-DNATTN_CUTLASS_INCLUDE=$NATTN_CUTLASS_INCLUDE")
  [ -n "${GTEST_ROOT:-}" ] && extra+=("-DGTEST_ROOT=$GTEST_ROOT")
  cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DNATTN_ENABLE_CUDA=ON \
    -DNATTN_CUDA_RESOURCE_USAGE=ON "${extra[@]}" > "$LOGS/cmake.log" 2>&1 || { tail -30 "$LOGS/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target test_cuda_forward test_cuda_backward test_cuda_token_permute test_cuda_subdomain \
    test_cli_profile_cuda bench_cuda_fna bench_cuda_bwd bench_token_permute nattn_cli > "$LOGS/build.log" 2>&1 ||
    { grep -B2 -A12 "error" "$LOGS/build.log" | head -60; exit 1; }
  # Registers and spills of every kernel (ptxas -v).
  grep -A3 "Compiling entry function" "$LOGS/build.log" | grep -E "entry|spill|Used" |
    sed 's/ptxas info    : //' > "$LOGS/registers.txt"
  echo "spilling kernels: $(grep -c ' [1-9][0-9]* bytes spill' "$LOGS/registers.txt")"
fi

for test in test_cuda_forward test_cuda_backward test_cuda_token_permute test_cuda_subdomain test_cli_profile_cuda; do
  step "gtest: $test"
  timeout 300 "$(bin "$test")" 2>&1 | tee "$LOGS/$test.log" | grep -vE '^\[ +(RUN|OK) +\]' | tail -40
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
done

if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for test in test_cuda_forward test_cuda_backward test_cuda_token_permute test_cuda_subdomain; do
    filter='*SmallForSanitizer*'
    [ "$test" = test_cuda_token_permute ] && filter='*SpecExample*'
    for tool in memcheck racecheck synccheck; do
      step "compute-sanitizer --tool $tool $test ($filter)"
      timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$(bin "$test")" --gtest_filter="$filter" > "$LOGS/sanitizer_${test}_$tool.log" 2>&1
      rc=$?
      tail -2 "$LOGS/sanitizer_${test}_$tool.log"
      [ "$rc" = 0 ] || { echo "sanitizer $tool $test: exit $rc"; status=1; }
    done
  done
fi

step "nattn verify testdata/golden --backend cutlass-fna"
for dtype in fp32 fp16 bf16; do
  timeout 120 "$(bin nattn)" verify testdata/golden --backend cutlass-fna --dtype "$dtype" 2>&1 |
    tee "$LOGS/verify_$dtype.log" | tail -3
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
done

if [ "$BENCH" != none ]; then
  flag=--quick
  [ "$BENCH" = full ] && flag=
  step "bench: cutlass-fna / cutlass-fmha forward (bf16, d=128)"
  timeout 420 "$(bin bench_cuda_fna)" $flag ${BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench_cuda_fna.log"
  step "bench: cutlass-fna forward + backward (bf16, d=128)"
  timeout 180 "$(bin bench_cuda_bwd)" 2>&1 | tee "$LOGS/bench_cuda_bwd.log"
  step "bench: token permutation bandwidth"
  timeout 120 "$(bin bench_token_permute)" $flag 2>&1 | tee "$LOGS/bench_token_permute.log"
  if python3 -c "import torch" > /dev/null 2>&1; then
    step "bench: PyTorch SDPA flash forward"
    timeout 120 python3 bench/cuda/sdpa_flash.py $flag 2>&1 | tee "$LOGS/bench_sdpa_flash.log"
  fi
fi
step "done: status $status"
exit $status
