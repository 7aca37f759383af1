// Small kernels of the backward pass: the delta pre-pass and the zeroing of varlen rows that no
// sequence covers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "nattn/tensor.h"

namespace nattn::cuda::fna_bwd {

struct DeltaParams {
  const void* o = nullptr;
  const void* dout = nullptr;
  float* delta = nullptr;  // [batch, tokens, heads] contiguous
  int64_t os[5] = {}, dos[5] = {};  // batch, spatial 0..2, head
  int64_t extent[3] = {1, 1, 1};
  int64_t batch = 1, tokens = 1, heads = 1;
  int head_dim_v = 0;
};

// delta[b, t, h] = sum_c dO[b, t, h, c] * O[b, t, h, c] in fp32 (one warp per row).
void launch_delta(const DeltaParams& p, DType dtype, cudaStream_t stream);

// dQ = scale * dq_accum in the dQ tensor's dtype and layout (the fused-dQ backward): dq_accum is
// [batch, tokens, heads, accum_ld] fp32, rows in the order of the delta workspace.
struct DqConvertParams {
  const float* accum = nullptr;
  int64_t accum_ld = 0;
  void* dq = nullptr;
  int64_t dqs[5] = {};  // batch, spatial 0..2, head
  int64_t extent[3] = {1, 1, 1};
  int64_t batch = 1, tokens = 1, heads = 1;
  int head_dim = 0;
  float scale = 1.f;
};
void launch_dq_convert(const DqConvertParams& p, DType dtype, cudaStream_t stream);

// Rows [cu[nseq], rows) of a [1, rows, heads, dim] tensor (element strides ts = {batch, token,
// head}) are set to zero; cu is a device array.
void zero_uncovered(void* data, int64_t esize, int64_t rows, int64_t heads, int64_t dim, const int64_t* ts,
                    const int* cu, int64_t nseq, cudaStream_t stream);

}  // namespace nattn::cuda::fna_bwd
