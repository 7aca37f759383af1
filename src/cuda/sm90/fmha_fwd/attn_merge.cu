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

template <typename E>
__global__ void __launch_bounds__(256)
    merge_pair_kernel(int64_t rows, int chunks_per_row, uint4* out_a, const float* lse_a, const uint4* out_b,
                      const float* lse_b, float* lse_out) {
  using T = typename E::T;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = t / chunks_per_row;
  if (row >= rows) return;
  const float la = lse_a[row], lb = lse_b[row];
  const float m = fmaxf(la, lb);
  float wa = 0.f, wb = 0.f, l = -INFINITY;
  if (m != -INFINITY) {
    const float ea = expf(la - m), eb = expf(lb - m), s = ea + eb;
    wa = ea / s;
    wb = eb / s;
    l = m + logf(s);
  }
  uint4 va = out_a[t];
  const uint4 vb = out_b[t];
  T* a = reinterpret_cast<T*>(&va);
  const T* b = reinterpret_cast<const T*>(&vb);
#pragma unroll
  for (int i = 0; i < 8; ++i) a[i] = E::store(wa * E::load(a[i]) + wb * E::load(b[i]));
  out_a[t] = va;
  if (t - row * chunks_per_row == 0) lse_out[row] = l;
}

}  // namespace

void merge_attention_pair(DType dtype, int64_t rows, int64_t dim, void* out_a, const float* lse_a, const void* out_b,
                          const float* lse_b, float* lse_out, cudaStream_t stream) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw ValueError(std::string("merge_attention_pair: dtype ") + dtype_name(dtype) + " (allowed: fp16, bf16)");
  if (dim <= 0 || dim % 8 != 0 || dim / 8 > 256 || reinterpret_cast<uintptr_t>(out_a) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out_b) % 16 != 0)
    throw ValueError("merge_attention_pair: needs a head dim that is a multiple of 8 up to 2048 and 16-byte aligned "
                     "outputs, got dim " + std::to_string(dim));
  if (rows <= 0) return;
  const int chunks = static_cast<int>(dim / 8);
  const int64_t threads = rows * chunks, per_block = 256;
  const int64_t blocks = (threads + per_block - 1) / per_block;
  if (blocks > 0x7fffffff) throw ValueError("merge_attention_pair: too many rows (" + std::to_string(rows) + ")");
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(per_block));
  if (dtype == DType::f16)
    merge_pair_kernel<Half><<<grid, block, 0, stream>>>(rows, chunks, static_cast<uint4*>(out_a), lse_a,
                                                         static_cast<const uint4*>(out_b), lse_b, lse_out);
  else
    merge_pair_kernel<BFloat><<<grid, block, 0, stream>>>(rows, chunks, static_cast<uint4*>(out_a), lse_a,
                                                           static_cast<const uint4*>(out_b), lse_b, lse_out);
  NATTN_CUDA_CHECK_LAUNCH("merge_pair_kernel");
}

}  // namespace nattn::cuda::sm90
