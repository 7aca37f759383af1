// Helpers shared by the CUDA benchmarks: a CUDA check that exits (benchmarks are programs, not
// library code), random 16-bit device buffers (never all zeros), and a median timer on CUDA events.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "core/half.h"
#include "nattn/tensor.h"

#define NATTN_BENCH_CHECK(call)                                        \
  do {                                                                 \
    cudaError_t e_ = (call);                                           \
    if (e_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

namespace nattn::bench {

// n fp16 / bf16 values uniform in [-1, 1) from a fixed generator, on the current device; `keep`
// (optional) receives the host copy of the bits.
inline void* random_device(int64_t n, DType dtype = DType::bf16, uint64_t seed = 1,
                           std::vector<uint16_t>* keep = nullptr) {
  std::vector<uint16_t> h(static_cast<size_t>(n));
  uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
  for (auto& x : h) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float f = static_cast<float>((s >> 40) & 0xFFFF) / 32768.f - 1.f;
    x = dtype == DType::f16 ? detail::float_to_fp16(f) : detail::float_to_bf16(f);
  }
  void* d = nullptr;
  NATTN_BENCH_CHECK(cudaMalloc(&d, static_cast<size_t>(n) * 2));
  NATTN_BENCH_CHECK(cudaMemcpy(d, h.data(), static_cast<size_t>(n) * 2, cudaMemcpyHostToDevice));
  if (keep != nullptr) *keep = std::move(h);
  return d;
}

// Zeroed device bytes.
inline void* device_buffer(int64_t bytes) {
  void* d = nullptr;
  NATTN_BENCH_CHECK(cudaMalloc(&d, static_cast<size_t>(bytes)));
  NATTN_BENCH_CHECK(cudaMemset(d, 0, static_cast<size_t>(bytes)));
  return d;
}

struct Timing {
  double median = 0, min = 0, max = 0;  // ms
};

// Times of `iters` calls of f (each timed alone with CUDA events on the default stream) after
// `warmup` untimed calls.
template <class F>
Timing timing_ms(F&& f, int warmup = 3, int iters = 10) {
  cudaEvent_t a, b;
  NATTN_BENCH_CHECK(cudaEventCreate(&a));
  NATTN_BENCH_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) f();
  NATTN_BENCH_CHECK(cudaDeviceSynchronize());
  std::vector<float> t;
  for (int i = 0; i < iters; ++i) {
    NATTN_BENCH_CHECK(cudaEventRecord(a));
    f();
    NATTN_BENCH_CHECK(cudaEventRecord(b));
    NATTN_BENCH_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    NATTN_BENCH_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  NATTN_BENCH_CHECK(cudaEventDestroy(a));
  NATTN_BENCH_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  const size_t m = t.size() / 2;
  return Timing{t.size() % 2 ? t[m] : (t[m - 1] + t[m]) / 2, t.front(), t.back()};
}

// Medians of `iters` calls each of f and g, alternating f, g, f, g, ... after `warmup` untimed
// pairs: both see the same clocks and temperature (a ratio of two runs timed one after the other is
// biased by the GPU heating up under the first).
template <class F, class G>
std::pair<double, double> interleaved_median_ms(F&& f, G&& g, int warmup = 3, int iters = 15) {
  for (int i = 0; i < warmup; ++i) {
    f();
    g();
  }
  NATTN_BENCH_CHECK(cudaDeviceSynchronize());
  std::vector<double> tf, tg;
  for (int i = 0; i < iters; ++i) {
    tf.push_back(timing_ms(f, 0, 1).median);
    tg.push_back(timing_ms(g, 0, 1).median);
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tg.begin(), tg.end());
  return {tf[tf.size() / 2], tg[tg.size() / 2]};
}

// Median of timing_ms.
template <class F>
double median_ms(F&& f, int warmup = 3, int iters = 10) {
  return timing_ms(f, warmup, iters).median;
}

}  // namespace nattn::bench
