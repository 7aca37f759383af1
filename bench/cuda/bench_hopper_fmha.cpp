// Timing of the Hopper (sm_90a) FMHA forward kernel (src/cuda/sm90/fmha_fwd), called directly
// (not through the registry): median of --reps (default 10) timed calls after 3 warm-ups, CUDA
// events. Default problem: B=1, S=32768, H=16, D=128, bf16, non-causal; FLOPs = 4*S*S*D*H (half of
// that when causal). Also prints the same problem through the registry's cutlass-fmha for
// comparison unless --no-compare. --check N compares N sampled (head, query) rows of O and LSE of
// the timed problem with an fp64 CPU reference (exit 1 above bf16/fp16 tolerance). The last line,
// "RESULT label=... ms=... tflops=... min_ms=... max_ms=... check=...", is for scripts
// (scripts/bench_sm90_variants.sh).
// Usage: bench_hopper_fmha [--seq N] [--heads N] [--hd 32|64|128|256] [--fp16] [--causal] [--no-compare]
//                          [--reps N] [--check N] [--label STR]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/half.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"
#include "nattn/ops.h"

using namespace nattn;

#define CHECK(call) NATTN_BENCH_CHECK(call)

namespace {

using bench::Timing;

// fp64 reference of `rows` sampled (head, query) rows of O and LSE ([1, S, H, D] layout, no
// causal mask unless `causal`); returns the worst relative L2 error of an O row and the worst
// absolute LSE error.
void check_rows(const std::vector<uint16_t>& q, const std::vector<uint16_t>& k, const std::vector<uint16_t>& v,
                const std::vector<uint16_t>& o, const std::vector<float>& lse, int64_t S, int64_t H, int64_t D,
                DType dtype, bool causal, int rows, double& o_err, double& lse_err) {
  auto f = [&](uint16_t x) { return dtype == DType::bf16 ? detail::bf16_to_float(x) : detail::fp16_to_float(x); };
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  o_err = lse_err = 0;
  uint64_t s = 12345;
  std::vector<double> sc(static_cast<size_t>(S)), acc(static_cast<size_t>(D));
  for (int it = 0; it < rows; ++it) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const int64_t h = static_cast<int64_t>((s >> 33) % static_cast<uint64_t>(H));
    // Rows spread over the sequence, including the first and last Q tile.
    const int64_t i = it == 0 ? 0 : (it == 1 ? S - 1 : static_cast<int64_t>((s >> 13) % static_cast<uint64_t>(S)));
    const int64_t nk = causal ? i + 1 : S;
    double mx = -1e300;
    for (int64_t j = 0; j < nk; ++j) {
      double d = 0;
      for (int64_t e = 0; e < D; ++e) d += static_cast<double>(f(q[(i * H + h) * D + e])) * f(k[(j * H + h) * D + e]);
      sc[j] = d * scale;
      mx = std::max(mx, sc[j]);
    }
    double l = 0;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < nk; ++j) {
      const double pj = std::exp(sc[j] - mx);
      l += pj;
      for (int64_t e = 0; e < D; ++e) acc[e] += pj * f(v[(j * H + h) * D + e]);
    }
    double num = 0, den = 0;
    for (int64_t e = 0; e < D; ++e) {
      const double ref = acc[e] / l, got = f(o[(i * H + h) * D + e]);
      num += (got - ref) * (got - ref);
      den += ref * ref;
    }
    const double err = std::sqrt(num / std::max(den, 1e-300));
    o_err = std::max(o_err, std::isfinite(err) ? err : 1e30);
    const double le = std::fabs(static_cast<double>(lse[i * H + h]) - (mx + std::log(l)));
    lse_err = std::max(lse_err, std::isfinite(le) ? le : 1e30);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t S = 32768, H = 16, D = 128;
  DType dtype = DType::bf16;
  bool causal = false, compare = true;
  int reps = 10, check = 0;
  std::string label = "hopper-fmha";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seq" && i + 1 < argc) S = std::atoll(argv[++i]);
    else if (a == "--heads" && i + 1 < argc) H = std::atoll(argv[++i]);
    else if (a == "--hd" && i + 1 < argc) D = std::atoll(argv[++i]);
    else if (a == "--fp16") dtype = DType::f16;
    else if (a == "--causal") causal = true;
    else if (a == "--no-compare") compare = false;
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--check" && i + 1 < argc) check = std::max(0, std::atoi(argv[++i]));
    else if (a == "--label" && i + 1 < argc) label = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--seq N] [--heads N] [--hd 32|64|128|256] [--fp16] [--causal] [--no-compare] [--reps N] "
                   "[--check N] [--label STR]\n",
                   argv[0]);
      return 2;
    }
  }
  const int64_t n = S * H * D;
  const Device gpu{DeviceKind::cuda, 0};
  std::vector<uint16_t> hq, hk, hv;
  void* q = bench::random_device(n, dtype, 1, check > 0 ? &hq : nullptr);
  void* k = bench::random_device(n, dtype, 2, check > 0 ? &hk : nullptr);
  void* v = bench::random_device(n, dtype, 3, check > 0 ? &hv : nullptr);
  void* o = nullptr;
  float* lse = nullptr;
  CHECK(cudaMalloc(&o, static_cast<size_t>(n) * 2));
  CHECK(cudaMalloc(&lse, static_cast<size_t>(S * H) * sizeof(float)));
  FmhaForwardArgs args;
  args.query = TensorView(q, dtype, {1, S, H, D}, gpu);
  args.key = TensorView(k, dtype, {1, S, H, D}, gpu);
  args.value = TensorView(v, dtype, {1, S, H, D}, gpu);
  args.out = TensorView(o, dtype, {1, S, H, D}, gpu);
  args.lse = TensorView(lse, DType::f32, {1, S, H}, gpu);
  args.is_causal = causal;
  const double flops = 4.0 * static_cast<double>(S) * static_cast<double>(S) * static_cast<double>(D) *
                       static_cast<double>(H) * (causal ? 0.5 : 1.0);
  std::printf("FMHA forward B=1 S=%lld H=%lld D=%lld %s %s\n", static_cast<long long>(S), static_cast<long long>(H),
              static_cast<long long>(D), dtype_name(dtype), causal ? "causal" : "non-causal");
  int rc = 0;
  Timing tm;
  std::string check_txt = "skipped";
  try {
    // Poison O (NaN bit pattern) so that an unwritten output cannot pass the check.
    CHECK(cudaMemset(o, 0xFF, static_cast<size_t>(n) * 2));
    CHECK(cudaMemset(lse, 0xFF, static_cast<size_t>(S * H) * sizeof(float)));
    tm = bench::timing_ms([&] { cuda::sm90::fmha_forward(args, nullptr); }, 3, reps);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::printf("  hopper-fmha (sm90a)  %9.3f ms  %7.1f TFLOP/s  (min %.3f max %.3f ms, %d reps)\n", tm.median,
                flops / (tm.median * 1e-3) / 1e12, tm.min, tm.max, reps);
    if (check > 0) {
      std::vector<uint16_t> ho(static_cast<size_t>(n));
      std::vector<float> hl(static_cast<size_t>(S * H));
      CHECK(cudaMemcpy(ho.data(), o, ho.size() * 2, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(hl.data(), lse, hl.size() * sizeof(float), cudaMemcpyDeviceToHost));
      double o_err = 0, l_err = 0;
      check_rows(hq, hk, hv, ho, hl, S, H, D, dtype, causal, check, o_err, l_err);
      const double tol = dtype == DType::f16 ? 2e-3 : 1.2e-2;
      const bool ok = o_err <= tol && l_err <= 2e-2;
      char buf[128];
      std::snprintf(buf, sizeof buf, "%s(o_rel_l2=%.2e,lse_abs=%.2e,rows=%d)", ok ? "pass" : "FAIL", o_err, l_err, check);
      check_txt = buf;
      std::printf("  check vs fp64 CPU on %d rows: worst O rel L2 %.3g (tol %.3g), worst LSE abs %.3g (tol 2e-2): %s\n",
                  check, o_err, tol, l_err, ok ? "pass" : "FAIL");
      if (!ok) rc = 1;
    }
  } catch (const std::exception& e) {
    std::printf("  hopper-fmha (sm90a)  failed: %s\n", e.what());
    rc = 1;
  }
  if (compare) {
    try {
      RunOptions opt;
      opt.backend = "cutlass-fmha";
      const double ms = bench::timing_ms([&] { fmha_forward(args, opt); }, 3, reps).median;
      std::printf("  cutlass-fmha (sm80)  %9.3f ms  %7.1f TFLOP/s\n", ms, flops / (ms * 1e-3) / 1e12);
    } catch (const std::exception& e) {
      std::printf("  cutlass-fmha (sm80)  not run: %s\n", e.what());
    }
  }
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaFree(q));
  CHECK(cudaFree(k));
  CHECK(cudaFree(v));
  CHECK(cudaFree(o));
  CHECK(cudaFree(lse));
  std::printf("RESULT label=%s ms=%.4f tflops=%.1f min_ms=%.4f max_ms=%.4f check=%s\n", label.c_str(), tm.median,
              tm.median > 0 ? flops / (tm.median * 1e-3) / 1e12 : 0.0, tm.min, tm.max, check_txt.c_str());
  return rc;
}
