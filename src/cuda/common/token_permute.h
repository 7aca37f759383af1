// Token permutation on CUDA devices (src/core/ops.cpp calls these for device tensors after
// validate_token_permute): the same maps as the CPU version (nattn::sem::Permutation), as
// bandwidth-bound copy kernels. Host code only; `stream` is a cudaStream_t.
#pragma once

#include "nattn/semantics.h"
#include "nattn/tensor.h"

namespace nattn::cuda {

// input [B, *S, H, D] -> output [B * G, P, H, D]; padding rows are written as zeros.
void token_permute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream);
// input [B * G, P, H, D] -> output [B, *S, H, D]; padding rows are dropped.
void token_unpermute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream);

}  // namespace nattn::cuda
