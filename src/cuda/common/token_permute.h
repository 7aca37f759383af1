// Token permutation on CUDA devices (src/core/ops.cpp calls these for device tensors after
// validate_token_permute): the same maps as the CPU version (nattn::sem::Permutation), as
// bandwidth-bound copy kernels. Host code only; `stream` is a cudaStream_t.
//
// Head-dim padding (hopper-fna): the two sides may have different head dims (last axis). Each head
// row then copies the first min(D_in, D_out) elements; a destination row longer than the source
// row is zero-filled past the source row, a longer source row is truncated. With equal head dims
// (every caller of the public ops) nothing changes. Both sides must have the same number of heads.
#pragma once

#include "nattn/semantics.h"
#include "nattn/tensor.h"

namespace nattn::cuda {

// input [B, *S, H, D] -> output [B * G, P, H, D'] (D' may differ, see above); padding rows are
// written as zeros.
void token_permute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream);
// input [B * G, P, H, D'] -> output [B, *S, H, D] (D may differ, see above); padding rows are dropped.
void token_unpermute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream);

}  // namespace nattn::cuda
