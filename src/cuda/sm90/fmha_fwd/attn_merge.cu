// Merge of two (output, LSE) pairs on the device (see attn_merge.h). Bandwidth-bound: a group of
// dim / 8 threads (8 or 16 for the Hopper head dims) owns one row; every thread reads both LSEs of
// its row, computes the two weights in fp32 and merges one 16-byte vector (8 elements) of the row;
// the group's first thread writes the merged LSE (into a separate buffer, so no thread reads an
// LSE another one has overwritten).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/sm90/fmha_fwd/attn_merge.h"
#include "nattn/errors.h"

namespace nattn::cuda::sm90 {
namespace {

struct Half {
  using T = __half;
  static __device__ float load(T x) { return __half2float(x); }
  static __device__ T store(float x) { return __float2half_rn(x); }
};
struct BFloat {
  using T = __nv_bfloat16;
  static __device__ float load(T x) { return __bfloat162float(x); }
  static __device__ T store(float x) { return __float2bfloat16_rn(x); }
};

// out_a / lse_out rows are (token, head) with token strides `a_ts` (in 16-byte chunks) and `l_ts`;
// out_b / lse_a / lse_b rows are dense.
template <typename E>
__global__ void __launch_bounds__(256)
    merge_pair_kernel(int64_t rows, int64_t heads, int chunks_per_row, uint4* out_a, int64_t a_ts, const float* lse_a,
                      const uint4* out_b, const float* lse_b, float* lse_out, int64_t l_ts) {
  using T = typename E::T;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = t / chunks_per_row;
  if (row >= rows) return;
  const int64_t chunk = t - row * chunks_per_row, tok = row / heads, head = row - tok * heads;
  uint4* a_at = out_a + tok * a_ts + head * chunks_per_row + chunk;
  const float la = lse_a[row], lb = lse_b[row];
  const float m = fmaxf(la, lb);
  float wa = 0.f, wb = 0.f, l = -INFINITY;
  if (m != -INFINITY) {
    const float ea = expf(la - m), eb = expf(lb - m), s = ea + eb;
    wa = ea / s;
    wb = eb / s;
    l = m + logf(s);
  }
  uint4 va = *a_at;
  const uint4 vb = out_b[t];
  T* a = reinterpret_cast<T*>(&va);
  const T* b = reinterpret_cast<const T*>(&vb);
#pragma unroll
  for (int i = 0; i < 8; ++i) a[i] = E::store(wa * E::load(a[i]) + wb * E::load(b[i]));
  *a_at = va;
  if (chunk == 0) lse_out[tok * l_ts + head] = l;
}

}  // namespace

void merge_attention_pair(DType dtype, int64_t rows, int64_t dim, void* out_a, const float* lse_a, const void* out_b,
                          const float* lse_b, float* lse_out, cudaStream_t stream) {
  merge_attention_pair(dtype, rows, 1, dim, out_a, dim, lse_a, out_b, lse_b, lse_out, 1, stream);
}

void merge_attention_pair(DType dtype, int64_t tokens, int64_t heads, int64_t dim, void* out_a,
                          int64_t out_a_token_stride, const float* lse_a, const void* out_b, const float* lse_b,
                          float* lse_out, int64_t lse_token_stride, cudaStream_t stream) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw ValueError(std::string("merge_attention_pair: dtype ") + dtype_name(dtype) + " (allowed: fp16, bf16)");
  if (dim <= 0 || dim % 8 != 0 || dim / 8 > 256 || reinterpret_cast<uintptr_t>(out_a) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out_b) % 16 != 0 || out_a_token_stride % 8 != 0 || heads < 1)
    throw ValueError("merge_attention_pair: needs a head dim that is a multiple of 8 up to 2048, 16-byte aligned "
                     "outputs and a token stride that is a multiple of 8 elements, got dim " + std::to_string(dim) +
                     ", token stride " + std::to_string(out_a_token_stride) + ", heads " + std::to_string(heads));
  const int64_t rows = tokens * heads;
  if (rows <= 0) return;
  const int chunks = static_cast<int>(dim / 8);
  const int64_t threads = rows * chunks, per_block = 256;
  const int64_t blocks = (threads + per_block - 1) / per_block;
  if (blocks > 0x7fffffff) throw ValueError("merge_attention_pair: too many rows (" + std::to_string(rows) + ")");
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(per_block));
  const int64_t a_ts = out_a_token_stride / 8;  // in 16-byte chunks
  if (dtype == DType::f16)
    merge_pair_kernel<Half><<<grid, block, 0, stream>>>(rows, heads, chunks, static_cast<uint4*>(out_a), a_ts, lse_a,
                                                         static_cast<const uint4*>(out_b), lse_b, lse_out,
                                                         lse_token_stride);
  else
    merge_pair_kernel<BFloat><<<grid, block, 0, stream>>>(rows, heads, chunks, static_cast<uint4*>(out_a), a_ts,
                                                           lse_a, static_cast<const uint4*>(out_b), lse_b, lse_out,
                                                           lse_token_stride);
  NATTN_CUDA_CHECK_LAUNCH("merge_pair_kernel");
}

}  // namespace nattn::cuda::sm90
