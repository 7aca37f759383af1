#!/usr/bin/env bash
# One-command GPU check of the CUDA backends, run on a machine with a GPU from the repository root:
#   scripts/test_gpu.sh [BUILD_DIR] [--no-bench] [--no-sanitizer] [--full-bench]
# BUILD_DIR (default build) must be configured with -DNATTN_ENABLE_CUDA=ON and built with the
# targets test_cuda_forward and bench_cuda_fna. Logs go to $OUT (if set) or BUILD_DIR/gpu-logs.
# Exit status: non-zero if any test or sanitizer check failed.
set -u
BUILD=build
BENCH=quick
SANITIZE=1
for arg in "$@"; do
  case "$arg" in
    --no-bench) BENCH=none ;;
    --full-bench) BENCH=full ;;
    --no-sanitizer) SANITIZE=0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) BUILD="$arg" ;;
  esac
done
LOGS="${OUT:-$BUILD/gpu-logs}"
mkdir -p "$LOGS"
export NATTN_GOLDEN_DIR="$PWD/testdata/golden"
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "device"
nvidia-smi -L || { echo "no GPU"; exit 1; }

step "gtest: test_cuda_forward (GPU vs CPU reference, golden cases)"
timeout 300 "$BUILD/test_cuda_forward" 2>&1 | tee "$LOGS/test_cuda_forward.log" | grep -vE '^\[ +(RUN|OK) +\]' | tail -80
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool (small cases)"
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
      "$BUILD/test_cuda_forward" --gtest_filter='*SmallForSanitizer*' > "$LOGS/sanitizer_$tool.log" 2>&1
    rc=$?
    tail -4 "$LOGS/sanitizer_$tool.log"
    [ "$rc" = 0 ] || { echo "sanitizer $tool: exit $rc"; status=1; }
  done
fi

if [ "$BENCH" != none ]; then
  flag=--quick
  [ "$BENCH" = full ] && flag=
  step "bench: cutlass-fna / cutlass-fmha forward (bf16, d=128)"
  timeout 420 "$BUILD/bench_cuda_fna" $flag ${BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench_cuda_fna.log"
  step "bench: PyTorch SDPA flash forward"
  timeout 120 python3 bench/cuda/sdpa_flash.py $flag 2>&1 | tee "$LOGS/bench_sdpa_flash.log"
fi
step "done: status $status"
exit $status
