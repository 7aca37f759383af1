#!/usr/bin/env bash
# One device round for the forward kernels (run from the repository root on the GPU machine):
# build with every core, tests, sanitizer, benchmarks (ours and SDPA flash), logs under $OUT.
# Needs .devdeps/ (carried): cutlass/ (cute + cutlass headers) and include/ + lib/ of GoogleTest.
set -u
# Env: CUDA_FLAGS (extra nvcc flags), TEST_T, SAN=0 (no sanitizers), BENCH_ARGS, NCU=N (ncu on a launch), KEEP_BIN=1.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/b
export NATTN_GOLDEN_DIR=$PWD/testdata/golden
step() { echo "=== $* ($(date -u +%T))"; }
step build
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DNATTN_ENABLE_CUDA=ON -DNATTN_CUDA_ARCHS=90 \
  -DNATTN_CUTLASS_INCLUDE=$PWD/.devdeps/cutlass -DGTEST_ROOT=$PWD/.devdeps -DNATTN_CUDA_RESOURCE_USAGE=ON \
  ${CUDA_FLAGS:+-DCMAKE_CUDA_FLAGS="$CUDA_FLAGS"} \
  > $OUT/cmake.log 2>&1 || { tail -40 $OUT/cmake.log; exit 1; }
ninja -C $B -j16 test_cuda_forward bench_cuda_fna > $OUT/build.log 2>&1 || { grep -B2 -A12 "error" $OUT/build.log | head -60; exit 1; }
grep -A3 "Compiling entry function '_ZN5nattn4cuda3fna18fna_fwd" $OUT/build.log | grep -E "entry|spill|Used" | sed 's/ptxas info    : //' > $OUT/regs.txt
step tests
timeout ${TEST_T:-200} $B/tests/test_cuda_forward > $OUT/test.log 2>&1; echo "test rc $?"
grep -E "^\[  (PASSED|FAILED)|Failure|FAILED|error|Expected|Which is" $OUT/test.log | head -40
if [ "${SAN:-1}" = 1 ]; then
  for tool in memcheck racecheck; do
    step $tool
    timeout 120 compute-sanitizer --tool $tool --error-exitcode 3 $B/tests/test_cuda_forward --gtest_filter='*SmallForSanitizer*' > $OUT/san_$tool.log 2>&1
    echo "$tool rc $?"; tail -3 $OUT/san_$tool.log
  done
fi
step bench
timeout ${BENCH_T:-200} $B/tests/bench_cuda_fna ${BENCH_ARGS:---configs} 2>&1 | tee $OUT/bench.log
step sdpa
timeout 90 python3 bench/cuda/sdpa_flash.py 2>&1 | tee $OUT/sdpa.log
if [ -n "${NCU:-}" ]; then
  step ncu
  # NCU=N: profile the N-th launch of bench --quick (13: the first dense FMHA, 2-D 128x128 tokens)
  timeout 120 ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio" \
    -k regex:fna_fwd_mma --launch-skip ${NCU} -c 1 $B/tests/bench_cuda_fna --quick > $OUT/ncu.log 2>&1
  grep -E "Duration|Registers|Achieved Occupancy|Issue Slots|Warp Cycles Per Issued|Compute \(SM\) Throughput|issue_stalled" $OUT/ncu.log | head -40
fi
[ "${KEEP_BIN:-0}" = 1 ] && { mkdir -p $OUT/bin; cp $B/tests/test_cuda_forward $B/tests/bench_cuda_fna $OUT/bin/ 2>/dev/null; }
step done
