// Host entry of the Hopper (sm_90a) FMHA forward kernel (registry name `hopper-fmha`).
// Framework-free: takes the library's FmhaForwardArgs with device views and a CUDA stream.
//
// Supported: fp16 / bf16, head dim 32, 64, 128 or 256 (D == Dv), non-causal or top-left causal, GQA/MQA
// (H a multiple of Hkv), any Sq, Skv >= 1 up to 2^31 - 1, batch and heads up to 65535, variable
// length (B == 1, contiguous int32 cu_seqlens on the device, at most 65535 sequences; without a
// max_seqlen_q hint the offsets are read back, which synchronises the stream), softmax
// scale > 0; every tensor's head dim contiguous, base address and other strides multiples of 16
// bytes (TMA). Anything else raises NotImplementedError (valid but unsupported) or ValueError
// (inconsistent arguments); nothing aborts. Needs a compute capability 9.0 device.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "nattn/ops.h"
#include "nattn/tensor.h"

namespace nattn::cuda::sm90 {

// True when the kernel of (dtype, head_dim) was compiled into this build (NATTN_CUDA_ARCHS
// contains 90 and the dtype / head dim pass NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS).
bool fmha_forward_compiled(DType dtype, int head_dim);

// "" when fmha_forward can run these arguments on the current device, else the reason (what the
// registry prints). Does not touch the device beyond querying its compute capability.
std::string fmha_forward_unsupported_reason(const FmhaForwardArgs& args);

// Runs the forward on `stream` (asynchronous). Throws ValueError / NotImplementedError (with the
// reason above) / RuntimeError (a CUDA error).
// pingpong: the consumer schedule (config "pp", the default; false: "coop").
void fmha_forward(const FmhaForwardArgs& args, cudaStream_t stream, bool pingpong = true);

}  // namespace nattn::cuda::sm90
