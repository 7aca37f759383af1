// Timing of the cutlass-fna / cutlass-fmha forward on the anchors.md §8 problems (bf16, head dim
// 128, batch 1): median of 10 timed calls after 3 warm-ups, CUDA events.
// Usage: bench_cuda_fna [--quick] [--configs] [--only SUBSTR]   (--quick: the two smallest problems only;
// --only: the problems whose name contains SUBSTR;
// --configs: also time a set of tile configs (64- and 128-query tiles) and report the best; the
// dense FMHA line is timed with 128-query tiles (the default on SM90) and with 64)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/half.h"
#include "nattn/backends.h"
#include "nattn/ops.h"

using namespace nattn;

#define CHECK(call) NATTN_BENCH_CHECK(call)

struct Problem {
  std::string name;
  std::vector<int64_t> spatial, kernel;
  int64_t heads;
};



int main(int argc, char** argv) {
  bool quick = false, all_configs = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--configs") == 0) {
      all_configs = true;
    } else if (std::strcmp(argv[i], "--only") == 0) {
      if (i + 1 == argc) {
        std::fprintf(stderr, "bench_cuda_fna: --only needs a value (a substring of a problem name)\n");
        return 2;
      }
      only = argv[++i];
    } else {
      std::fprintf(stderr, "bench_cuda_fna: unknown argument '%s' (allowed: --quick, --configs, --only SUBSTR)\n", argv[i]);
      return 2;
    }
  }
  const int64_t d = 128;
  std::vector<Problem> problems = {
      {"2D 128x128 k13x13, 16 heads", {128, 128}, {13, 13}, 16},
      {"1D 32768 k2048, 16 heads", {32768}, {2048}, 16},
      {"2D 256x256 k32x32, 24 heads", {256, 256}, {32, 32}, 24},
      {"3D 16x44x80 k8x16x24, 16 heads", {16, 44, 80}, {8, 16, 24}, 16},
      {"3D 30x48x80 k18x24x24, 24 heads", {30, 48, 80}, {18, 24, 24}, 24},
  };
  if (quick) problems.resize(2);
  std::printf("| problem | cutlass-fna fwd | eff. TFLOP/s | cutlass-fmha dense fwd | TFLOP/s |\n|---|---|---|---|---|\n");
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
    void* o = nullptr;
    float* lse = nullptr;
    CHECK(cudaMalloc(&o, static_cast<size_t>(n) * 2));
    CHECK(cudaMalloc(&lse, static_cast<size_t>(tokens * pr.heads) * 4));
    const Device gpu{DeviceKind::cuda, 0};
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), pr.spatial.begin(), pr.spatial.end());
    shape.push_back(pr.heads);
    std::vector<int64_t> lshape = shape;
    shape.push_back(d);
    NaForwardArgs a;
    a.query = TensorView(q, DType::bf16, shape, gpu);
    a.key = TensorView(k, DType::bf16, shape, gpu);
    a.value = TensorView(v, DType::bf16, shape, gpu);
    a.out = TensorView(o, DType::bf16, shape, gpu);
    a.lse = TensorView(lse, DType::f32, lshape, gpu);
    a.params.rank = static_cast<int>(pr.spatial.size());
    for (size_t i = 0; i < pr.spatial.size(); ++i) a.params.kernel_size[i] = pr.kernel[i];
    RunOptions opt;
    opt.backend = "cutlass-fna";
    const double na_ms = bench::median_ms([&] { na_forward(a, opt); });
    CHECK(cudaGetLastError());
    // A set of tile configs with --configs (those the finder lists for this problem).
    std::string best_cfg = "default";
    double best_ms = na_ms;
    if (all_configs) {
      NaProblem prob = describe(a);
      prob.compute_capability = 90;
      const std::vector<TileConfig> valid = get_configs("cutlass-fna", prob);
      std::vector<TileConfig> want;
      const int rank = static_cast<int>(pr.spatial.size());
      auto tc = [](std::vector<int64_t> qt, std::vector<int64_t> kt) { return TileConfig{qt, kt, KernelSchedule::none}; };
      if (rank == 1) want = {tc({128}, {64}), tc({64}, {64})};
      if (rank == 2)
        want = {tc({16, 8}, {8, 8}), tc({8, 16}, {8, 8}), tc({16, 8}, {16, 4}), tc({8, 16}, {8, 8}),
                tc({32, 4}, {16, 4}), tc({8, 8}, {8, 8}), tc({16, 4}, {16, 4})};
      if (rank == 3)
        want = {tc({4, 4, 8}, {2, 4, 8}), tc({4, 4, 8}, {4, 4, 4}), tc({2, 8, 8}, {2, 4, 8}),
                tc({2, 8, 8}, {2, 8, 4}), tc({4, 8, 4}, {2, 8, 4}), tc({2, 4, 16}, {2, 4, 8}),
                tc({4, 4, 4}, {4, 4, 4}), tc({2, 4, 8}, {2, 4, 8})};
      for (const TileConfig& cfg : want) {
        if (std::find(valid.begin(), valid.end(), cfg) == valid.end()) continue;
        RunOptions o2 = opt;
        o2.config = cfg;
        const double ms = bench::median_ms([&] { na_forward(a, o2); });
        std::printf("    %s: %.2f ms\n", cfg.describe().c_str(), ms);
        if (ms < best_ms) {
          best_ms = ms;
          best_cfg = cfg.describe();
        }
      }
      std::printf("    best: %s %.2f ms (%.0f TFLOP/s)\n", best_cfg.c_str(), best_ms,
                  4.0 * tokens * window * d * pr.heads / (best_ms * 1e-3) / 1e12);
    }
    const double na_tflops = 4.0 * tokens * window * d * pr.heads / (na_ms * 1e-3) / 1e12;
    // Dense attention over the same tokens (what SDPA flash computes), only where it is quick.
    double fm_ms = 0, fm_tflops = 0, fm64_ms = 0;
    if (tokens <= 32768) {
      FmhaForwardArgs f;
      const std::vector<int64_t> fs = {1, tokens, pr.heads, d};
      f.query = TensorView(q, DType::bf16, fs, gpu);
      f.key = TensorView(k, DType::bf16, fs, gpu);
      f.value = TensorView(v, DType::bf16, fs, gpu);
      f.out = TensorView(o, DType::bf16, fs, gpu);
      f.lse = TensorView(lse, DType::f32, {1, tokens, pr.heads}, gpu);
      RunOptions fo;
      fo.backend = "cutlass-fmha";
      fm_ms = bench::median_ms([&] { fmha_forward(f, fo); });
      fm_tflops = 4.0 * tokens * tokens * d * pr.heads / (fm_ms * 1e-3) / 1e12;
      if (all_configs) {
        fo.config = TileConfig{{64}, {64}, KernelSchedule::none};
        fm64_ms = bench::median_ms([&] { fmha_forward(f, fo); });
        std::printf("    fmha q64/kv64: %.2f ms (%.0f TFLOP/s)\n", fm64_ms,
                    4.0 * tokens * tokens * d * pr.heads / (fm64_ms * 1e-3) / 1e12);
      }
    }
    std::printf("| %s | %.2f ms | %.0f | %s | %s |\n", pr.name.c_str(), na_ms, na_tflops,
                fm_ms > 0 ? (std::to_string(fm_ms).substr(0, 7) + " ms").c_str() : "-",
                fm_ms > 0 ? std::to_string(static_cast<int>(fm_tflops)).c_str() : "-");
    std::fflush(stdout);
    cudaFree(q);
    cudaFree(k);
    cudaFree(v);
    cudaFree(o);
    cudaFree(lse);
  }
  return 0;
}
