// Bandwidth of the CUDA token permutation (src/cuda/common/token_permute.cu): large bf16 tensors of
// the anchor problems, permute and unpermute, median of 10 timed calls after 3 warm-ups (CUDA
// events). Effective bandwidth = (bytes read + bytes written) / time, padding rows included on the
// permuted side. The floor, timed the same way in the same process: cudaMemcpyAsync device to
// device of the unpermuted tensor (read + write). Not a test: prints numbers only.
//   bench_token_permute [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nattn/ops.h"

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Problem {
  const char* name;
  std::vector<int64_t> shape, tile, dilation;
  bool flip;
};

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t x : s) n *= x;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 5 : 10;
  const std::vector<Problem> problems = {
      {"3D 30x48x80, 24 heads, d128, tile (2,4,8) flip", {1, 30, 48, 80, 24, 128}, {2, 4, 8}, {1, 1, 1}, true},
      {"3D 30x48x80, 24 heads, d128, tile (4,4,8)", {1, 30, 48, 80, 24, 128}, {4, 4, 8}, {1, 1, 1}, false},
      {"3D 16x44x80, 16 heads, d128, tile (2,8,8) dil (1,2,2)", {1, 16, 44, 80, 16, 128}, {2, 8, 8}, {1, 2, 2}, true},
      {"2D 256x256, 24 heads, d128, tile (8,16)", {1, 256, 256, 24, 128}, {8, 16}, {1, 1}, true},
      {"1D 32768, 16 heads, d128, tile 128", {1, 32768, 16, 128}, {128}, {1}, false},
      {"2D 128x128, 4 heads, d32, tile (8,8)", {8, 128, 128, 4, 32}, {8, 8}, {1, 1}, false},
  };
  std::printf(
      "| problem | bytes (in + out) | permute | TB/s | unpermute | TB/s | cudaMemcpy TB/s |\n"
      "|---|---|---|---|---|---|---|\n");
  for (const Problem& p : problems) {
    const std::vector<int64_t> pshape = nattn::token_permute_shape(p.shape, p.tile, p.dilation);
    const int64_t n_in = numel(p.shape), n_out = numel(pshape);
    void *a = nullptr, *b = nullptr, *c = nullptr;
    check(cudaMalloc(&a, static_cast<size_t>(n_in * 2)), "cudaMalloc");
    check(cudaMalloc(&b, static_cast<size_t>(n_out * 2)), "cudaMalloc");
    check(cudaMalloc(&c, static_cast<size_t>(n_in * 2)), "cudaMalloc");
    check(cudaMemset(a, 0x3c, static_cast<size_t>(n_in * 2)), "cudaMemset");
    const nattn::Device dev{nattn::DeviceKind::cuda, 0};
    const nattn::TensorView u(a, nattn::DType::bf16, p.shape, dev), perm(b, nattn::DType::bf16, pshape, dev),
        back(c, nattn::DType::bf16, p.shape, dev);
    cudaEvent_t e0, e1;
    check(cudaEventCreate(&e0), "event");
    check(cudaEventCreate(&e1), "event");
    auto time = [&](int what) {  // 0 permute, 1 unpermute, 2 cudaMemcpy a -> c
      std::vector<float> ms;
      for (int i = 0; i < runs + 3; ++i) {
        check(cudaEventRecord(e0), "record");
        if (what == 1) nattn::token_unpermute(perm, back, p.tile, p.dilation, p.flip);
        else if (what == 0) nattn::token_permute(u, perm, p.tile, p.dilation, p.flip);
        else check(cudaMemcpyAsync(c, a, static_cast<size_t>(n_in * 2), cudaMemcpyDeviceToDevice), "memcpy");
        check(cudaEventRecord(e1), "record");
        check(cudaEventSynchronize(e1), "sync");
        float t = 0;
        check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
        if (i >= 3) ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    const float tp = time(0), tu = time(1), tm = time(2);
    // permute reads the valid rows and writes every permuted row; unpermute reads the valid rows
    // of the permuted tensor and writes the original.
    const double bytes_p = 2.0 * (n_in + n_out), bytes_u = 2.0 * (2 * n_in);
    std::printf("| %s | %.0f MB | %.3f ms | %.2f | %.3f ms | %.2f | %.2f |\n", p.name, bytes_p / 1e6, tp,
                bytes_p / tp / 1e9, tu, bytes_u / tu / 1e9, bytes_u / tm / 1e9);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  return 0;
}
