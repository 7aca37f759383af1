// Parameters of the portable forward kernels (host and device). One struct serves NA (rank 1-3,
// padded to 3 axes with extent 1) and FMHA (mode `fmha`, 1-D, optional causal and varlen).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nattn::cuda::fna {

constexpr int kBlockM = 64;   // queries per CTA of the SIMT kernel (the tensor-core kernel: 64 or 128)
constexpr int kBlockN = 64;   // keys per KV tile
constexpr int kThreads = 128;  // SIMT kernel (the tensor-core kernel: mma_threads<HD>())

struct FwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;          // optional
  const void* ek = nullptr;      // phase-B keys: additional keys (NA) or the keys (FMHA)
  const void* ev = nullptr;

  // Element strides. 5-entry arrays: batch, spatial axis 0..2, head. LSE: batch, axes, head.
  int64_t qs[5] = {}, ks[5] = {}, vs[5] = {}, os[5] = {}, ls[5] = {};
  int64_t eks[3] = {}, evs[3] = {};  // phase B: batch, token, head

  int64_t batch = 1, heads = 1, heads_kv = 1;
  int head_dim = 0, head_dim_v = 0;

  // NA geometry (axes beyond the rank: extent 1, kernel 1, stride 1, dilation 1). `extent` is the
  // grid the windows are computed on; the tensors hold the queries q_origin + [0, q_extent) and the
  // keys kv_origin + [0, ...) of it (a sub-domain; without one: origins 0, q_extent = extent).
  int64_t extent[3] = {1, 1, 1}, kernel[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, dilation[3] = {1, 1, 1};
  int64_t q_origin[3] = {0, 0, 0}, kv_origin[3] = {0, 0, 0}, q_extent[3] = {1, 1, 1};
  int causal[3] = {0, 0, 0};
  int64_t q_tile[3] = {1, 1, 1}, kv_tile[3] = {1, 1, 1};  // products: block_m / kBlockN
  int q_shift[3] = {0, 0, 0}, kv_shift[3] = {0, 0, 0};  // log2 of the tile dims (powers of two)
  int64_t q_tiles[3] = {1, 1, 1};  // Q tiles per axis: of the most local queries of one dilation group
  int64_t num_extra = 0;           // additional KV tokens (NA)

  float scale_log2 = 0.f;  // scale * log2(e)

  // FMHA mode: queries [qbase, qbase + sq), keys [kvbase, kvbase + skv) of a sequence.
  int fmha = 0;
  int fmha_causal = 0;
  int64_t seqlen_q = 0, seqlen_kv = 0;
  const int* cu_q = nullptr;  // varlen: blockIdx.z is the sequence
  const int* cu_kv = nullptr;

  int aligned = 0;  // 16-byte vector loads are legal for every row of q/k/v/ek/ev
  int block_m = kBlockM;  // queries per CTA (the Q tile volume): 64, or 128 (tensor-core kernel)
};

}  // namespace nattn::cuda::fna
