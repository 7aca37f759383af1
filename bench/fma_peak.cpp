// FP32 FMA peak measurement. Each kernel runs 12 independent accumulator chains (enough to cover
// FMA latency x throughput on current x86 cores: 4 cycles x 2 pipes = 8), compiled for its ISA with
// a function target attribute so the rest of the project keeps the default ISA.
#include "fma_peak.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NATTN_BENCH_X86 1
#endif

namespace nattn::bench {
namespace {

// Keeps results alive so the chains cannot be optimised away.
volatile float g_sink = 0;

// acc = acc * kMultiplier + kAddend converges to 1.0: no overflow, no denormals.
constexpr float kMultiplier = 0.999f;
constexpr float kAddend = 0.001f;
constexpr int kChains = 12;

#define NATTN_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

#if NATTN_BENCH_X86
__attribute__((target("avx512f"))) float chains_avx512(int64_t iterations) {
  const __m512 m = _mm512_set1_ps(kMultiplier);
  const __m512 c = _mm512_set1_ps(kAddend);
#define DECL(i) __m512 a##i = _mm512_set1_ps(1.0f + 0.01f * i);
  NATTN_CHAINS(DECL)
#undef DECL
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, m, c);
    NATTN_CHAINS(STEP)
#undef STEP
  }
  __m512 sum = _mm512_setzero_ps();
#define SUM(i) sum = _mm512_add_ps(sum, a##i);
  NATTN_CHAINS(SUM)
#undef SUM
  // (_mm512_reduce_add_ps trips GCC 12's -Wuninitialized inside its own header.)
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

__attribute__((target("avx2,fma"))) float chains_avx2(int64_t iterations) {
  const __m256 m = _mm256_set1_ps(kMultiplier);
  const __m256 c = _mm256_set1_ps(kAddend);
#define DECL(i) __m256 a##i = _mm256_set1_ps(1.0f + 0.01f * i);
  NATTN_CHAINS(DECL)
#undef DECL
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, m, c);
    NATTN_CHAINS(STEP)
#undef STEP
  }
  __m256 sum = _mm256_setzero_ps();
#define SUM(i) sum = _mm256_add_ps(sum, a##i);
  NATTN_CHAINS(SUM)
#undef SUM
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

float chains_sse2(int64_t iterations) {
  const __m128 m = _mm_set1_ps(kMultiplier);
  const __m128 c = _mm_set1_ps(kAddend);
#define DECL(i) __m128 a##i = _mm_set1_ps(1.0f + 0.01f * i);
  NATTN_CHAINS(DECL)
#undef DECL
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) a##i = _mm_add_ps(_mm_mul_ps(a##i, m), c);
    NATTN_CHAINS(STEP)
#undef STEP
  }
  __m128 sum = _mm_setzero_ps();
#define SUM(i) sum = _mm_add_ps(sum, a##i);
  NATTN_CHAINS(SUM)
#undef SUM
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, sum);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

float chains_scalar(int64_t iterations) {
#define DECL(i) float a##i = 1.0f + 0.01f * i;
  NATTN_CHAINS(DECL)
#undef DECL
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) a##i = a##i * kMultiplier + kAddend;
    NATTN_CHAINS(STEP)
#undef STEP
  }
  float sum = 0;
#define SUM(i) sum += a##i;
  NATTN_CHAINS(SUM)
#undef SUM
  return sum;
}

#undef NATTN_CHAINS

using Kernel = float (*)(int64_t);

Kernel kernel_for(const std::string& isa, int* lanes) {
#if NATTN_BENCH_X86
  if (isa == "avx512f") { *lanes = 16; return chains_avx512; }
  if (isa == "avx2+fma") { *lanes = 8; return chains_avx2; }
  if (isa == "sse2 (mul+add)") { *lanes = 4; return chains_sse2; }
#endif
  if (isa == "scalar") { *lanes = 1; return chains_scalar; }
  throw std::invalid_argument("unknown ISA '" + isa + "'");
}

// Wall time of `threads` threads each running `iterations` of the kernel.
double run_parallel(Kernel kernel, int threads, int64_t iterations) {
  const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
  {
    const float r = kernel(iterations);
#pragma omp critical
    g_sink = g_sink + r;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> isas;
#if NATTN_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) isas.push_back("avx512f");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back("avx2+fma");
  if (isas.empty()) isas.push_back("sse2 (mul+add)");  // no FMA unit: the best this CPU has
#else
  isas.push_back("scalar");
#endif
  return isas;
}

PeakMeasurement measure_peak(const std::string& isa, int threads, double seconds) {
  PeakMeasurement m;
  m.isa = isa;
  m.threads = threads;
  const Kernel kernel = kernel_for(isa, &m.lanes);
  // Calibrate the iteration count (this run also warms the cores up).
  int64_t iterations = 1 << 20;
  double t = run_parallel(kernel, threads, iterations);
  while (t < 0.05) {
    iterations *= 4;
    t = run_parallel(kernel, threads, iterations);
  }
  iterations = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iterations) * seconds / t));
  const double flops_per_run =
      2.0 * m.lanes * kChains * static_cast<double>(iterations) * static_cast<double>(threads);
  for (int run = 0; run < 3; ++run) {
    const double elapsed = run_parallel(kernel, threads, iterations);
    m.gflops = std::max(m.gflops, flops_per_run / elapsed * 1e-9);
  }
  return m;
}

PeakMeasurement measure_best_peak(int threads, double seconds, std::vector<PeakMeasurement>* all) {
  PeakMeasurement best;
  for (const std::string& isa : supported_isas()) {
    const PeakMeasurement m = measure_peak(isa, threads, seconds);
    if (all) all->push_back(m);
    if (m.gflops > best.gflops) best = m;
  }
  return best;
}

}  // namespace nattn::bench
