// Timing of the Hopper (sm_90a) FMHA forward kernel (src/cuda/sm90/fmha_fwd), called directly
// (not through the registry): median of 10 timed calls after 3 warm-ups, CUDA events.
// Default problem: B=1, S=32768, H=16, D=128, bf16, non-causal; FLOPs = 4*S*S*D*H (half of that
// when causal). Also prints the same problem through the registry's cutlass-fmha for comparison
// unless --no-compare.
// Usage: bench_hopper_fmha [--seq N] [--heads N] [--hd 64|128] [--fp16] [--causal] [--no-compare]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/half.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"
#include "nattn/ops.h"

using namespace nattn;

#define CHECK(call)                                                     \
  do {                                                                  \
    cudaError_t e_ = (call);                                            \
    if (e_ != cudaSuccess) {                                            \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));  \
      std::exit(1);                                                     \
    }                                                                   \
  } while (0)

namespace {

void* random_device(int64_t n, DType dtype, uint64_t seed) {
  std::vector<uint16_t> h(static_cast<size_t>(n));
  uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
  for (auto& x : h) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float f = static_cast<float>((s >> 40) & 0xFFFF) / 32768.f - 1.f;
    x = dtype == DType::bf16 ? detail::float_to_bf16(f) : detail::float_to_fp16(f);
  }
  void* d = nullptr;
  CHECK(cudaMalloc(&d, static_cast<size_t>(n) * 2));
  CHECK(cudaMemcpy(d, h.data(), static_cast<size_t>(n) * 2, cudaMemcpyHostToDevice));
  return d;
}

template <class F>
double median_ms(F&& f) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  CHECK(cudaDeviceSynchronize());
  std::vector<float> t;
  for (int i = 0; i < 10; ++i) {
    CHECK(cudaEventRecord(a));
    f();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return 0.5 * (t[4] + t[5]);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t S = 32768, H = 16, D = 128;
  DType dtype = DType::bf16;
  bool causal = false, compare = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seq" && i + 1 < argc) S = std::atoll(argv[++i]);
    else if (a == "--heads" && i + 1 < argc) H = std::atoll(argv[++i]);
    else if (a == "--hd" && i + 1 < argc) D = std::atoll(argv[++i]);
    else if (a == "--fp16") dtype = DType::f16;
    else if (a == "--causal") causal = true;
    else if (a == "--no-compare") compare = false;
    else {
      std::fprintf(stderr, "usage: %s [--seq N] [--heads N] [--hd 64|128] [--fp16] [--causal] [--no-compare]\n", argv[0]);
      return 2;
    }
  }
  const int64_t n = S * H * D;
  const Device gpu{DeviceKind::cuda, 0};
  void* q = random_device(n, dtype, 1);
  void* k = random_device(n, dtype, 2);
  void* v = random_device(n, dtype, 3);
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
  try {
    const double ms = median_ms([&] { cuda::sm90::fmha_forward(args, nullptr); });
    CHECK(cudaGetLastError());
    std::printf("  hopper-fmha (sm90a)  %9.3f ms  %7.1f TFLOP/s\n", ms, flops / (ms * 1e-3) / 1e12);
  } catch (const std::exception& e) {
    std::printf("  hopper-fmha (sm90a)  failed: %s\n", e.what());
    rc = 1;
  }
  if (compare) {
    try {
      RunOptions opt;
      opt.backend = "cutlass-fmha";
      const double ms = median_ms([&] { fmha_forward(args, opt); });
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
  return rc;
}
