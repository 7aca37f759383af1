// Forward + backward timing of cutlass-fna (bf16, head dim 128, batch 1) on three anchor problems:
// median of 10 timed calls after 3 warm-ups, CUDA events. Backward FLOPs counted as 2.5x forward
// (S and dP recomputed, dV, dK, dQ: 5 GEMMs against the forward's 2).
// Both backward modes: deterministic (dq + dkdv kernels) and fused dQ (deterministic = false).
// Usage: bench_cuda_bwd [--only SUBSTR] [--profile-fused] [--all-configs]
// (--all-configs: the fused-dQ backward of every compiled backward config the finder lists, one
// line each, instead of the few others)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/half.h"
#include "nattn/backends.h"
#include "nattn/ops.h"

using namespace nattn;

#define CHECK(call) NATTN_BENCH_CHECK(call)

namespace {



struct Problem {
  std::string name;
  std::vector<int64_t> spatial, kernel;
  int64_t heads;
};

}  // namespace

int main(int argc, char** argv) {
  // --only SUBSTR: the problems whose name contains SUBSTR. --profile-fused: one forward, then two
  // fused-dQ backward calls and nothing else (for ncu: skip the first dkdv launch, profile the second).
  std::string only;
  bool profile_fused = false, all_configs = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--profile-fused") {
      profile_fused = true;
    } else if (a == "--all-configs") {
      all_configs = true;
    } else {
      std::fprintf(stderr, "bench_cuda_bwd: unknown argument '%s' (allowed: --only SUBSTR, --profile-fused, --all-configs)\n",
                   a.c_str());
      return 2;
    }
  }
  const int64_t d = 128;
  const std::vector<Problem> problems = {
      {"2D 128x128 k13x13, 16 heads", {128, 128}, {13, 13}, 16},
      {"3D 16x44x80 k8x16x24, 16 heads", {16, 44, 80}, {8, 16, 24}, 16},
      {"3D 30x48x80 k18x24x24, 24 heads", {30, 48, 80}, {18, 24, 24}, 24},
  };
  std::printf("| problem (bf16, hd128) | fwd ms | bwd ms | fwd+bwd ms | fwd TFLOP/s | bwd TFLOP/s |\n"
              "|---|---|---|---|---|---|\n");
  for (const Problem& pr : problems) {
    if (!only.empty() && pr.name.find(only) == std::string::npos) continue;
    int64_t tokens = 1, window = 1;
    for (size_t i = 0; i < pr.spatial.size(); ++i) {
      tokens *= pr.spatial[i];
      window *= pr.kernel[i];
    }
    const int64_t n = tokens * pr.heads * d;
    void* q = bench::random_device(n, DType::bf16, 1);
    void* k = bench::random_device(n, DType::bf16, 2);
    void* v = bench::random_device(n, DType::bf16, 3);
    void* dout = bench::random_device(n, DType::bf16, 4);
    void *o = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
    float* lse = nullptr;
    for (void** p : {&o, &dq, &dk, &dv}) CHECK(cudaMalloc(p, static_cast<size_t>(n) * 2));
    CHECK(cudaMalloc(&lse, static_cast<size_t>(tokens * pr.heads) * 4));
    const Device gpu{DeviceKind::cuda, 0};
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), pr.spatial.begin(), pr.spatial.end());
    shape.push_back(pr.heads);
    const std::vector<int64_t> lshape = shape;
    shape.push_back(d);
    NaParams params;
    params.rank = static_cast<int>(pr.spatial.size());
    for (size_t i = 0; i < pr.spatial.size(); ++i) params.kernel_size[i] = pr.kernel[i];
    NaForwardArgs a;
    a.query = TensorView(q, DType::bf16, shape, gpu);
    a.key = TensorView(k, DType::bf16, shape, gpu);
    a.value = TensorView(v, DType::bf16, shape, gpu);
    a.out = TensorView(o, DType::bf16, shape, gpu);
    a.lse = TensorView(lse, DType::f32, lshape, gpu);
    a.params = params;
    NaBackwardArgs b;
    b.query = a.query;
    b.key = a.key;
    b.value = a.value;
    b.out = a.out;
    b.lse = *a.lse;
    b.dout = TensorView(dout, DType::bf16, shape, gpu);
    b.dquery = TensorView(dq, DType::bf16, shape, gpu);
    b.dkey = TensorView(dk, DType::bf16, shape, gpu);
    b.dvalue = TensorView(dv, DType::bf16, shape, gpu);
    b.params = params;
    RunOptions opt;  // deterministic (the default): the dq and dkdv kernels
    opt.backend = "cutlass-fna";
    RunOptions fused = opt;  // deterministic = false: dQ fused into the dkdv kernel (fp32 atomics)
    fused.deterministic = false;
    if (profile_fused) {
      na_forward(a, opt);
      for (int i = 0; i < 2; ++i) na_backward(b, fused);
      CHECK(cudaDeviceSynchronize());
      for (void* p : {q, k, v, dout, o, dq, dk, dv}) cudaFree(p);
      cudaFree(lse);
      continue;
    }
    const double fwd = bench::median_ms([&] { na_forward(a, opt); });
    // The two backward modes alternate twice (same clocks and temperature for both).
    double bwd = 1e30, bwd_fused = 1e30;
    for (int round = 0; round < 2; ++round) {
      bwd = std::min(bwd, bench::median_ms([&] { na_backward(b, opt); }));
      bwd_fused = std::min(bwd_fused, bench::median_ms([&] { na_backward(b, fused); }));
    }
    CHECK(cudaGetLastError());
    const double flops = 4.0 * tokens * window * d * pr.heads;
    std::printf("| %s (default configs) | %.2f | %.2f | %.2f | %.0f | %.0f |\n", pr.name.c_str(), fwd, bwd,
                fwd + bwd, flops / (fwd * 1e-3) / 1e12, 2.5 * flops / (bwd * 1e-3) / 1e12);
    std::printf("| %s, fused dQ (deterministic = false) | %.2f | %.2f | %.2f | %.0f | %.0f |\n", pr.name.c_str(), fwd,
                bwd_fused, fwd + bwd_fused, flops / (fwd * 1e-3) / 1e12, 2.5 * flops / (bwd_fused * 1e-3) / 1e12);
    if (all_configs) {  // every listed backward config, fused dQ only (PyTorch's default mode)
      NaProblem prob = describe(b);
      prob.compute_capability = 90;
      for (const TileConfig& cfg : get_bwd_configs("cutlass-fna", prob)) {
        RunOptions o2 = fused;
        o2.config = cfg;
        const double ms = bench::median_ms([&] { na_backward(b, o2); });
        std::printf("    bwd-config %s: fused dQ %.2f ms\n", cfg.describe().c_str(), ms);
        std::fflush(stdout);
      }
      for (void* p : {q, k, v, dout, o, dq, dk, dv}) cudaFree(p);
      cudaFree(lse);
      continue;
    }
    // A few other compiled backward configs (volume 64 / 64).
    const std::vector<TileConfig> others =
        pr.spatial.size() == 2
            ? std::vector<TileConfig>{{{4, 16}, {4, 16}, KernelSchedule::none}, {{16, 4}, {16, 4}, KernelSchedule::none},
                                      {{8, 8}, {4, 16}, KernelSchedule::none}}
            : std::vector<TileConfig>{{{2, 4, 8}, {2, 4, 8}, KernelSchedule::none},
                                      {{4, 4, 4}, {2, 4, 8}, KernelSchedule::none},
                                      {{2, 8, 4}, {2, 8, 4}, KernelSchedule::none}};
    for (const TileConfig& cfg : others) {
      RunOptions o2 = opt;
      o2.config = cfg;
      const double ms = bench::median_ms([&] { na_backward(b, o2); });
      o2.deterministic = false;
      const double ms_fused = bench::median_ms([&] { na_backward(b, o2); });
      std::printf("    backward %s: %.2f ms (%.0f TFLOP/s); fused dQ %.2f ms (%.0f TFLOP/s)\n", cfg.describe().c_str(),
                  ms, 2.5 * flops / (ms * 1e-3) / 1e12, ms_fused, 2.5 * flops / (ms_fused * 1e-3) / 1e12);
    }
    std::fflush(stdout);
    for (void* p : {q, k, v, dout, o, dq, dk, dv}) cudaFree(p);
    cudaFree(lse);
  }
  return 0;
}
