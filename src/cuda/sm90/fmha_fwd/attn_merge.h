// Exact merge of two attention results over disjoint key sets (hopper-fna with additional KV
// tokens: the NA part and the dense part over the additional keys), on the device:
//   m = max(L_a, L_b), L = m + log(e^(L_a - m) + e^(L_b - m)),
//   O = e^(L_a - L) O_a + e^(L_b - L) O_b   (fp32 arithmetic, one rounding to the output type),
// the formula of nattn::merge_attentions (src/cpu/ops/merge.cpp). Rows where both LSEs are -inf
// get O = 0 and L = -inf. Host code only; asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "nattn/tensor.h"

namespace nattn::cuda::sm90 {

// out_a, out_b: `rows` contiguous rows of `dim` elements of `dtype` (fp16 / bf16), 16-byte aligned
// bases, dim a multiple of 8; lse_a, lse_b, lse_out: `rows` fp32 values. out_a is overwritten with
// the merged output (in place) and lse_out with the merged LSE (lse_out must not alias lse_a or
// lse_b). Throws ValueError for a layout it cannot run, RuntimeError for a CUDA error.
void merge_attention_pair(DType dtype, int64_t rows, int64_t dim, void* out_a, const float* lse_a, const void* out_b,
                          const float* lse_b, float* lse_out, cudaStream_t stream);

// The same over `tokens` x `heads` rows (row r = token r / heads, head r % heads) where out_a and
// lse_out are strided views (e.g. a head chunk of a [tokens, H, dim] tensor): row (t, h) of out_a at
// element t * out_a_token_stride + h * dim (16-byte aligned: out_a_token_stride * element size a
// multiple of 16), its merged LSE at t * lse_token_stride + h. out_b, lse_a, lse_b: dense rows.
void merge_attention_pair(DType dtype, int64_t tokens, int64_t heads, int64_t dim, void* out_a,
                          int64_t out_a_token_stride, const float* lse_a, const void* out_b, const float* lse_b,
                          float* lse_out, int64_t lse_token_stride, cudaStream_t stream);

}  // namespace nattn::cuda::sm90
