// Parameters of the Hopper (sm_90a) FMHA forward kernel: a plain struct shared by the host
// validation (fmha_fwd_sm90.cpp, compiled by the host compiler) and the kernel translation units
// (generated from src/cuda/cuda.cmake, table NATTN_SM90_FMHA_FWD_TABLE). No CuTe types here.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nattn::cuda::sm90 {

// Tile sizes of every instantiation: 128 queries per CTA (two consumer warpgroups x 64 rows),
// 128 keys per KV tile.
constexpr int kFmhaBlockM = 128;
constexpr int kFmhaBlockN = 128;

struct FmhaFwdParams {
  const void* q = nullptr;  // [B, Sq, H, D], element strides below, last dim contiguous
  const void* k = nullptr;  // [B, Skv, Hkv, D]
  const void* v = nullptr;  // [B, Skv, Hkv, D]
  void* o = nullptr;        // [B, Sq, H, D], the dtype of q
  float* lse = nullptr;     // [B, Sq, H] fp32, natural log; optional

  // Element strides: {batch, sequence, head}.
  int64_t q_stride[3] = {}, k_stride[3] = {}, v_stride[3] = {}, o_stride[3] = {}, lse_stride[3] = {};

  int batch = 0, seqlen_q = 0, seqlen_kv = 0, heads = 0, heads_kv = 0;
  float scale_log2 = 0.f;  // softmax scale * log2(e), > 0
  bool causal = false;     // top-left aligned: query i sees keys j <= i
};

}  // namespace nattn::cuda::sm90
