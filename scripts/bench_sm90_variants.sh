#!/usr/bin/env bash
# Builds, checks and times the variants of the Hopper attention forward kernel
# (src/cuda/sm90/fmha_fwd: Sm90Variant in params.h, -DNATTN_SM90_VARIANT=N) on an H100, one command:
#
#   scripts/bench_sm90_variants.sh [--no-build] [--quick] [--na-bench] [VARIANT ...]   (default: 0 1 2 3 4 5)
#
# Run from the repository root. Per variant N: its own build dir build-sm90v<N> (bf16, head dim 128
# only, NATTN_CUDA_RESOURCE_USAGE=ON), all variants built concurrently; the ptxas report and the
# HGMMA / LDL / STL counts (cuobjdump) of both kernels (FMHA, NA). Then on the GPU, one process at a
# time: bench_hopper_fmha (B=1 S=32768 H=16 D=128 bf16; non-causal twice, interleaved over the
# variants to show the run-to-run spread, with a 32-row fp64 check of the timed output; causal once),
# PyTorch SDPA cuDNN on the same problem when torch is there; then test_hopper_fmha and
# test_hopper_fna of every variant (concurrently). Every GPU program runs under `timeout` (pipeline
# bugs hang). --no-build reuses the build dirs; --quick skips the causal run and the second
# non-causal round; --na-bench also times bench_hopper_fna (3-D video problem, kernel alone and
# op) per variant (about 20-30 s each).
#
# Environment: NATTN_CUTLASS_INCLUDE and GTEST_ROOT are passed on to cmake (default: .devdeps/cutlass
# and .devdeps when .devdeps/ is there, as in bench/cuda/h100_round.sh); OUT: log folder (default
# build-sm90v-logs). test_hopper_fna runs without HopperFnaHost.GoldenCasesAccepted (host-only; it
# expects fp16 kernels, which these bf16-only builds lack). Prints one summary line per variant
# last; exit status 1 if any build, test or check failed.
set -u
DO_BUILD=1
QUICK=0
NA_BENCH=0
VARIANTS=()
for arg in "$@"; do
  case "$arg" in
    --no-build) DO_BUILD=0 ;;
    --quick) QUICK=1 ;;
    --na-bench) NA_BENCH=1 ;;
    [0-9]*) VARIANTS+=("$arg") ;;
    *) echo "usage: $0 [--no-build] [--quick] [--na-bench] [VARIANT ...]" >&2; exit 2 ;;
  esac
done
[ ${#VARIANTS[@]} -eq 0 ] && VARIANTS=(0 1 2 3 4 5)
LOGS="${OUT:-build-sm90v-logs}"
if [ -d .devdeps ]; then
  : "${NATTN_CUTLASS_INCLUDE:=$PWD/.devdeps/cutlass}"
  : "${GTEST_ROOT:=$PWD/.devdeps}"
fi
export NATTN_GOLDEN_DIR="$PWD/testdata/golden"
mkdir -p "$LOGS"
NPROC=$(nproc)
NV=${#VARIANTS[@]}
status=0
t0=$(date +%s)
step() { echo "=== $* (+$(( $(date +%s) - t0 )) s)"; }
bdir() { echo "build-sm90v$1"; }
bin() { if [ -x "$(bdir "$1")/tests/$2" ]; then echo "$(bdir "$1")/tests/$2"; else echo "$(bdir "$1")/$2"; fi; }

step "device"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader ||
  { echo "no GPU"; exit 1; }

# ---------------------------------------------------------------- build (concurrent)
if [ "$DO_BUILD" = 1 ]; then
  step "build variants ${VARIANTS[*]} (concurrently)"
  gen=()
  command -v ninja > /dev/null && gen=(-G Ninja)
  extra=()
  [ -n "${NATTN_CUTLASS_INCLUDE:-}" ] && extra+=("-DNATTN_CUTLASS_INCLUDE=$NATTN_CUTLASS_INCLUDE")
  [ -n "${GTEST_ROOT:-}" ] && extra+=("-DGTEST_ROOT=$GTEST_ROOT")
  jobs_each=$(( (NPROC + NV - 1) / NV + 2 ))
  for v in "${VARIANTS[@]}"; do
    (
      cmake -S . -B "$(bdir "$v")" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DNATTN_ENABLE_CUDA=ON \
        -DNATTN_CUDA_ARCHS=90 -DNATTN_CUDA_DTYPES=bf16 -DNATTN_CUDA_HEAD_DIMS=128 -DNATTN_CUDA_RESOURCE_USAGE=ON \
        -DNATTN_BUILD_PYTHON=OFF "-DCMAKE_CUDA_FLAGS=-DNATTN_SM90_VARIANT=$v" "${extra[@]}" \
        > "$LOGS/v$v.cmake.log" 2>&1 &&
        timeout 900 cmake --build "$(bdir "$v")" -j "$jobs_each" --target test_hopper_fmha test_hopper_fna bench_hopper_fmha bench_hopper_fna \
          > "$LOGS/v$v.build.log" 2>&1
      echo $? > "$LOGS/v$v.build.rc"
    ) &
  done
  wait
fi
declare -A BUILD_OK REG_F REG_N SASS_F SASS_N
for v in "${VARIANTS[@]}"; do
  rc=$(cat "$LOGS/v$v.build.rc" 2> /dev/null || echo 1)
  [ "$DO_BUILD" = 0 ] && rc=0
  if [ "$rc" = 0 ] && [ -x "$(bin "$v" bench_hopper_fmha)" ]; then BUILD_OK[$v]=ok; else
    BUILD_OK[$v]=FAIL; status=1
    echo "--- v$v build failed (rc $rc):"; grep -B2 -A10 -m3 "error" "$LOGS/v$v.build.log" "$LOGS/v$v.cmake.log" 2> /dev/null | head -40
  fi
  # ptxas: registers / stack / spill stores / spill loads of the FMHA (Lb0E) and NA (Lb1E) kernels.
  for kind in 0 1; do
    line=$(awk -v pat="attn_fwd_sm90_kernel.*Lb${kind}E" '
      /Compiling entry function/ { on = ($0 ~ pat) }
      on && /bytes stack frame/ { stack = $1; st = $5; ld = $9 }
      on && /Used [0-9]+ registers/ { for (i = 1; i <= NF; ++i) if ($i == "Used") regs = $(i + 1); on = 0 }
      END { if (regs != "") printf "%s/%s/%s/%s", regs, stack, st, ld; else printf "?" }' "$LOGS/v$v.build.log" 2> /dev/null)
    if [ "$kind" = 0 ]; then REG_F[$v]=$line; else REG_N[$v]=$line; fi
  done
  # SASS: HGMMA count and LDL/STL count per object.
  for kind in fmha na; do
    obj=$(find "$(bdir "$v")" -name "${kind}_fwd_sm90_bf16_hd128.cu.o" 2> /dev/null | head -1)
    s="?"
    if [ -n "$obj" ] && command -v cuobjdump > /dev/null; then
      cuobjdump -sass "$obj" > "$LOGS/v$v.$kind.sass" 2> /dev/null &&
        s="$(grep -c HGMMA "$LOGS/v$v.$kind.sass")/$(grep -cE '\b(LDL|STL)' "$LOGS/v$v.$kind.sass")"
    fi
    if [ "$kind" = fmha ]; then SASS_F[$v]=$s; else SASS_N[$v]=$s; fi
  done
  echo "v$v build ${BUILD_OK[$v]}  ptxas regs/stack/spill-st/spill-ld fmha ${REG_F[$v]} na ${REG_N[$v]}  HGMMA/LDL+STL fmha ${SASS_F[$v]} na ${SASS_N[$v]}"
done

# ---------------------------------------------------------------- timing (one process at a time)
declare -A T1 T2 TC CHK
run_bench() {  # variant, key, extra args...
  local v=$1 key=$2
  shift 2
  local log="$LOGS/v$v.bench.$key.log"
  timeout 180 "$(bin "$v" bench_hopper_fmha)" --no-compare --reps 20 --label "v$v" "$@" > "$log" 2>&1
  local rc=$?
  local res
  res=$(grep '^RESULT' "$log" | tail -1)
  local tf
  tf=$(echo "$res" | sed -n 's/.* tflops=\([0-9.]*\).*/\1/p')
  [ -z "$tf" ] && tf="rc$rc"
  [ "$rc" = 124 ] && tf="TIMEOUT"
  case $key in
    nc1) T1[$v]=$tf; CHK[$v]=$(echo "$res" | sed -n 's/.* check=\([a-zA-Z]*\).*/\1/p'); [ -z "${CHK[$v]}" ] && CHK[$v]="rc$rc" ;;
    nc2) T2[$v]=$tf ;;
    c) TC[$v]=$tf ;;
  esac
  [ "$rc" = 0 ] || status=1
  echo "v$v $key: $(grep 'hopper-fmha (sm90a)\|check vs' "$log" | tr -s ' ' | tr '\n' ' ')"
}
step "timing round 1 (non-causal, with 32-row fp64 check)"
for v in "${VARIANTS[@]}"; do [ "${BUILD_OK[$v]}" = ok ] && run_bench "$v" nc1 --check 32; done
if [ "$QUICK" = 0 ]; then
  step "timing round 2 (non-causal, reverse order)"
  for ((i = NV - 1; i >= 0; --i)); do v=${VARIANTS[$i]}; [ "${BUILD_OK[$v]}" = ok ] && run_bench "$v" nc2; done
  step "timing causal"
  for v in "${VARIANTS[@]}"; do [ "${BUILD_OK[$v]}" = ok ] && run_bench "$v" c --causal --check 16; done
fi
if [ "$NA_BENCH" = 1 ]; then
  step "bench_hopper_fna (NA, 3-D 30x48x80; op and kernel alone)"
  for v in "${VARIANTS[@]}"; do
    [ "${BUILD_OK[$v]}" = ok ] || continue
    timeout 300 "$(bin "$v" bench_hopper_fna)" --no-compare > "$LOGS/v$v.bench_fna.log" 2>&1 || status=1
    echo "v$v:"; grep -E "NA forward|hopper-fna" "$LOGS/v$v.bench_fna.log"
  done
fi
CUDNN="n/a"
if python3 -c "import torch" > /dev/null 2>&1; then
  step "PyTorch SDPA cuDNN, same problem ([B,S,H,D] memory, median of 20 after 3 warm-ups)"
  CUDNN=$(timeout 180 python3 - << 'EOF' 2> "$LOGS/cudnn.err"
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend
S, H, D = 32768, 16, 128
q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
f = torch.nn.functional.scaled_dot_product_attention
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for _ in range(3):
        f(q, k, v)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(q, k, v); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
ts.sort()
ms = 0.5 * (ts[9] + ts[10])
print(f"{4 * S * S * D * H / (ms * 1e-3) / 1e12:.1f}")
EOF
  )
  [ -z "$CUDNN" ] && CUDNN="failed (see cudnn.err)"
  echo "cuDNN: $CUDNN TFLOP/s"
fi

# ---------------------------------------------------------------- correctness (variants concurrently)
step "test_hopper_fmha + test_hopper_fna of every variant (concurrently)"
omp=$(( NPROC / NV )); [ "$omp" -lt 2 ] && omp=2
for v in "${VARIANTS[@]}"; do
  [ "${BUILD_OK[$v]}" = ok ] || continue
  (
    OMP_NUM_THREADS=$omp timeout 420 "$(bin "$v" test_hopper_fmha)" > "$LOGS/v$v.test_fmha.log" 2>&1
    echo $? > "$LOGS/v$v.test_fmha.rc"
    OMP_NUM_THREADS=$omp timeout 420 "$(bin "$v" test_hopper_fna)" --gtest_filter='-HopperFnaHost.GoldenCasesAccepted' \
      > "$LOGS/v$v.test_fna.log" 2>&1
    echo $? > "$LOGS/v$v.test_fna.rc"
  ) &
done
wait
verdict() {  # log, rc file
  local rc
  rc=$(cat "$2" 2> /dev/null || echo "?")
  if [ "$rc" = 0 ]; then
    if grep -q "PASSED" "$1"; then echo "PASS($(grep -c '^\[       OK' "$1")ok,$(grep -c '^\[  SKIPPED' "$1")skip)"; else echo "rc0?"; fi
  elif [ "$rc" = 124 ]; then echo "TIMEOUT"
  else echo "FAIL(rc$rc)"
  fi
}

# ---------------------------------------------------------------- summary
step "summary"
flags() {
  case $1 in
    0) echo "baseline" ;; 1) echo "dbufP" ;; 2) echo "dbufP+pingpong" ;; 3) echo "pingpong" ;;
    4) echo "dbufP+pp+smemEpi" ;; 5) echo "dbufP+pp+smemEpi+3stg" ;; *) echo "?" ;;
  esac
}
base=${T1[0]:-}
printf "%-4s %-22s %-7s %-16s %-16s %-10s %-10s %-20s %-20s %-6s %-8s %-8s %-8s %s\n" \
  var flags build "ptxas fmha" "ptxas na" "sass fmha" "sass na" test_fmha test_fna check "TF/s #1" "TF/s #2" causal "vs v0"
for v in "${VARIANTS[@]}"; do
  tf=${T1[$v]:--}; tf2=${T2[$v]:--}
  rel="-"
  if [[ "$base" =~ ^[0-9.]+$ && "$tf" =~ ^[0-9.]+$ ]]; then
    rel=$(awk -v a="$tf" -v b="$tf2" -v z="$base" 'BEGIN { m = a; if (b ~ /^[0-9.]+$/) m = (a + b) / 2; printf "%+.1f%%", 100 * (m / z - 1) }')
  fi
  tfm=$(verdict "$LOGS/v$v.test_fmha.log" "$LOGS/v$v.test_fmha.rc")
  tna=$(verdict "$LOGS/v$v.test_fna.log" "$LOGS/v$v.test_fna.rc")
  [[ "$tfm" == PASS* ]] || status=1
  [[ "$tna" == PASS* ]] || status=1
  printf "%-4s %-22s %-7s %-16s %-16s %-10s %-10s %-20s %-20s %-6s %-8s %-8s %-8s %s\n" "v$v" "$(flags "$v")" \
    "${BUILD_OK[$v]}" "${REG_F[$v]}" "${REG_N[$v]}" "${SASS_F[$v]}" "${SASS_N[$v]}" "$tfm" "$tna" "${CHK[$v]:--}" \
    "$tf" "$tf2" "${TC[$v]:--}" "$rel"
done
echo "cuDNN SDPA (same problem, same session): $CUDNN TFLOP/s;  ptxas = regs/stack/spill-stores/spill-loads;" \
  "sass = HGMMA/LDL+STL;  vs v0 = mean of the non-causal runs over v0's first run;  logs: $LOGS;  total $(( $(date +%s) - t0 )) s"
exit $status
