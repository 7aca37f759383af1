// Small helper kernels of the forward pass.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_fwd/aux_kernels.h"

namespace nattn::cuda::fna {

namespace {

// Rows [cu_q[nseq], rows) of out and lse belong to no sequence: out = 0, lse = 0.
__global__ void zero_uncovered_kernel(unsigned char* out, int64_t esize, int64_t rows, int64_t heads, int64_t dv,
                                      int64_t os_b, int64_t os_t, int64_t os_h, float* lse, int64_t ls_t,
                                      int64_t ls_h, const int* cu_q, int64_t nseq) {
  const int64_t first = cu_q[nseq];
  const int64_t n = rows * heads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / heads, h = i % heads;
    if (r < first) continue;
    unsigned char* row = out + (r * os_t + h * os_h) * esize;
    for (int64_t b = 0; b < dv * esize; ++b) row[b] = 0;
    if (lse != nullptr) lse[r * ls_t + h * ls_h] = 0.f;
  }
  (void)os_b;
}

}  // namespace

int64_t longest_sequence(const int* cu, int64_t nseq, cudaStream_t stream) {
  if (nseq <= 0) return 0;
  std::vector<int> h(static_cast<size_t>(nseq + 1));
  NATTN_CUDA_CHECK(cudaMemcpyAsync(h.data(), cu, h.size() * sizeof(int), cudaMemcpyDeviceToHost, stream));
  NATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
  int64_t longest = 0;
  for (size_t s = 0; s + 1 < h.size(); ++s) longest = std::max<int64_t>(longest, h[s + 1] - h[s]);
  return longest;
}

void zero_uncovered_rows(void* out, int64_t esize, int64_t rows, int64_t heads, int64_t dv, const int64_t* os,
                         float* lse, const int64_t* ls, const int* cu_q, int64_t nseq, cudaStream_t stream) {
  if (rows * heads == 0) return;
  const int64_t blocks = (rows * heads + 255) / 256;
  zero_uncovered_kernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(
      static_cast<unsigned char*>(out), esize, rows, heads, dv, os[0], os[1], os[2], lse, ls ? ls[1] : 0,
      ls ? ls[2] : 0, cu_q, nseq);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna
