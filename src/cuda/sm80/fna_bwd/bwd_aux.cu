#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_bwd/bwd_aux.h"
#include "cuda/sm80/fna_bwd/bwd_common.cuh"

namespace nattn::cuda::fna_bwd {

namespace {

// Calls f(row, b, x, h) for the rows [0, batch * tokens * heads) of a [batch, tokens, heads]
// layout, one warp per row (grid-stride): batch b, head h, spatial coordinates x of the token
// (`extent`, last axis fastest).
template <class F>
__device__ __forceinline__ void for_each_row_warp(int64_t batch, int64_t tokens, int64_t heads, const int64_t* extent,
                                                  F&& f) {
  const int64_t rows = batch * tokens * heads;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    const int64_t h = row % heads;
    int64_t r = row / heads;
    const int64_t t = r % tokens;
    const int64_t b = r / tokens;
    int64_t x[3];
    r = t;
    x[2] = r % extent[2];
    r /= extent[2];
    x[1] = r % extent[1];
    x[0] = r / extent[1];
    f(row, b, x, h);
  }
}

template <class T>
__global__ void delta_kernel(const DeltaParams p) {
  const int lane = threadIdx.x % 32;
  for_each_row_warp(p.batch, p.tokens, p.heads, p.extent, [&](int64_t row, int64_t b, const int64_t* x, int64_t h) {
    const T* o = static_cast<const T*>(p.o) + offset5(p.os, b, x, h);
    const T* d = static_cast<const T*>(p.dout) + offset5(p.dos, b, x, h);
    float sum = 0.f;
    for (int cc = lane; cc < p.head_dim_v; cc += 32) sum += to_f(o[cc]) * to_f(d[cc]);
#pragma unroll
    for (int m = 16; m > 0; m /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, m);
    if (lane == 0) p.delta[row] = sum;
  });
}

template <class T>
__global__ void dq_convert_kernel(const DqConvertParams p) {
  const int lane = threadIdx.x % 32;
  for_each_row_warp(p.batch, p.tokens, p.heads, p.extent, [&](int64_t row, int64_t b, const int64_t* x, int64_t h) {
    T* dst = static_cast<T*>(p.dq) + offset5(p.dqs, b, x, h);
    const float* src = p.accum + row * p.accum_ld;
    for (int cc = lane; cc < p.head_dim; cc += 32) dst[cc] = from_f<T>(src[cc] * p.scale);
  });
}

__global__ void zero_kernel(unsigned char* data, int64_t esize, int64_t rows, int64_t heads, int64_t dim,
                            int64_t ts_t, int64_t ts_h, const int* cu, int64_t nseq) {
  const int64_t first = cu[nseq];
  const int64_t n = rows * heads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / heads, h = i % heads;
    if (r < first) continue;
    unsigned char* row = data + (r * ts_t + h * ts_h) * esize;
    for (int64_t b = 0; b < dim * esize; ++b) row[b] = 0;
  }
}

unsigned blocks_for(int64_t work, int64_t per_block) {
  const int64_t b = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 8192 ? (b > 0 ? b : 1) : 8192);
}

}  // namespace

void launch_delta(const DeltaParams& p, DType dtype, cudaStream_t stream) {
  const int64_t rows = p.batch * p.tokens * p.heads;
  if (rows == 0) return;
  const unsigned grid = blocks_for(rows, 8);
  switch (dtype) {
    case DType::f32: delta_kernel<float><<<grid, 256, 0, stream>>>(p); break;
    case DType::f16: delta_kernel<__half><<<grid, 256, 0, stream>>>(p); break;
    case DType::bf16: delta_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(p); break;
    default: throw NotImplementedError("cutlass backward: delta pre-pass: unsupported dtype");
  }
  NATTN_CUDA_CHECK(cudaGetLastError());
}

void launch_dq_convert(const DqConvertParams& p, DType dtype, cudaStream_t stream) {
  const int64_t rows = p.batch * p.tokens * p.heads;
  if (rows == 0) return;
  const unsigned grid = blocks_for(rows, 8);
  switch (dtype) {
    case DType::f32: dq_convert_kernel<float><<<grid, 256, 0, stream>>>(p); break;
    case DType::f16: dq_convert_kernel<__half><<<grid, 256, 0, stream>>>(p); break;
    case DType::bf16: dq_convert_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(p); break;
    default: throw NotImplementedError("cutlass backward: dQ conversion: unsupported dtype");
  }
  NATTN_CUDA_CHECK(cudaGetLastError());
}

void zero_uncovered(void* data, int64_t esize, int64_t rows, int64_t heads, int64_t dim, const int64_t* ts,
                    const int* cu, int64_t nseq, cudaStream_t stream) {
  if (rows * heads == 0) return;
  zero_kernel<<<blocks_for(rows * heads, 256), 256, 0, stream>>>(static_cast<unsigned char*>(data), esize, rows,
                                                                  heads, dim, ts[1], ts[2], cu, nseq);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna_bwd
