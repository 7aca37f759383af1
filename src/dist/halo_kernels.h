// Strided box copies for the halo exchange (src/dist/halo_kernels.cu): pack a box of a tensor into a
// contiguous buffer, unpack it into another tensor, or add it there (fp32 sum, one rounding).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "nattn/tensor.h"

namespace nattn::dist::detail {

constexpr int kMaxCopyDims = 6;  // [B, S0, S1, S2, H, D]

// dst[i] = src[i] (converted to dst's dtype) or, with accumulate, dst[i] = dst[i] + src[i] summed in
// fp32, for every index i of the box `n` (dims entries); strides in elements. The innermost axis
// must have stride 1 in both (it may have extent 1). dtypes: fp32, fp16, bf16.
struct BoxCopy {
  const void* src = nullptr;
  void* dst = nullptr;
  DType src_dtype = DType::f32;
  DType dst_dtype = DType::f32;
  int dims = 0;
  int64_t n[kMaxCopyDims] = {};
  int64_t src_stride[kMaxCopyDims] = {};
  int64_t dst_stride[kMaxCopyDims] = {};
  bool accumulate = false;
};

// Merges the axes that are contiguous in both layouts, then launches one kernel on `stream`
// (16/8/4/2-byte vector moves for same-dtype copies when the addresses allow). Throws
// nattn::RuntimeError on a CUDA error and ValueError on an unsupported dtype or layout.
void launch_box_copy(const BoxCopy& copy, cudaStream_t stream);

}  // namespace nattn::dist::detail
