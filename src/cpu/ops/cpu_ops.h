// CPU implementations and argument validation of the device-dispatched helper ops declared in
// include/nattn/ops.h: merge_attentions, token_permute and token_unpermute. src/core/ops.cpp calls
// validate_*() first and then the cpu_*() function; the cpu_*() functions assume validated
// arguments (shapes, dtypes, devices, last axis contiguous, no forbidden overlap).
#pragma once

#include <cstdint>
#include <vector>

#include "nattn/semantics.h"
#include "nattn/tensor.h"

namespace nattn::detail {

// ---- merge_attentions --------------------------------------------------------------------------

// Throws ValueError unless: >= 2 outputs and as many LSEs; every output 4-D [B, S, H, Dv] of one
// shape and one dtype (fp32/fp16/bf16) with a contiguous last axis; every LSE 3-D [B, S, H] fp32;
// out shaped and typed like the outputs, lse [B, S, H] fp32; all on one device; non-null data.
// out may be the very same view as one of the outputs (same data and strides) and lse the same view
// as one of the LSEs; any other overlap between a written and another tensor is rejected.
// A non-CPU device raises NotImplementedError.
void validate_merge(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                    const TensorView& out, const TensorView& lse);

// outputs/lses validated: >=2 parts, outputs [B,S,H,Dv] same shape+dtype, lses [B,S,H] f32; out/lse may alias part 0.
// L = log sum_i exp(L_i), O = sum_i exp(L_i - L) O_i, in fp64 with the max subtracted. A part with
// L_i = -inf (no keys) gets weight 0 and its O_i is not read; a row whose parts are all -inf gets
// O = 0 and L = -inf. NaN in any L_i gives NaN in that row. num_threads <= 0: all hardware threads.
void cpu_merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                          const TensorView& out, const TensorView& lse, int num_threads);

// ---- token permutation -------------------------------------------------------------------------

// Throws ValueError unless: the unpermuted side (input when !inverse, output when inverse) is
// [B, *S, H, D] of rank 4 to 6; tile_shape and dilation hold one entry >= 1 per spatial axis; the
// permuted side has exactly token_permute_shape(unpermuted, tile_shape, dilation); both have one
// dtype (fp32/fp16/bf16) and one device, a contiguous last axis, non-null data, and do not overlap.
// A non-CPU device raises NotImplementedError.
void validate_token_permute(const TensorView& input, const TensorView& output,
                            const std::vector<int64_t>& tile_shape, const std::vector<int64_t>& dilation,
                            bool inverse);

// The permutation of an unpermuted shape [B, *S, H, D] (arguments validated).
sem::Permutation make_token_permutation(const std::vector<int64_t>& unpermuted_shape,
                                        const std::vector<int64_t>& tile_shape,
                                        const std::vector<int64_t>& dilation, bool flip_tiled_dims);

// input [B,*S,H,D] -> output [B*prod(d), prod(padded), H, D], validated shapes.
// Raw element copies (bit-exact for every dtype); padding slots are zero-filled.
void cpu_token_permute(const TensorView& input, const TensorView& output, const sem::Permutation& perm);
// input [B*prod(d), prod(padded), H, D] -> output [B,*S,H,D]; padding slots are dropped.
void cpu_token_unpermute(const TensorView& input, const TensorView& output, const sem::Permutation& perm);

// ---- shared helpers ----------------------------------------------------------------------------

// Whether the byte ranges spanned by two views intersect (empty views overlap nothing).
bool views_overlap(const TensorView& a, const TensorView& b);

// Whether two views are the same elements in the same layout (an allowed in-place alias).
bool same_view(const TensorView& a, const TensorView& b);

}  // namespace nattn::detail
