// Parameters of the portable backward kernels (host and device). One struct serves NA (rank 1-3,
// padded to 3 axes with extent 1, optional additional KV tokens) and FMHA (1-D, optional top-left
// causal mask and varlen), and both kernels: `dq` (a CTA owns a query tile and walks its keys) and
// `dkdv` (a CTA owns a key tile and walks the queries that see it).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nattn::cuda::fna_bwd {

constexpr int kTileM = 64;  // rows a CTA owns (queries for dq, keys for dkdv)
constexpr int kTileN = 64;  // rows of a walked tile (keys for dq, queries for dkdv)

struct BwdParams {
  // Inputs.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* dout = nullptr;
  const float* lse = nullptr;
  const float* delta = nullptr;  // [B, tokens, H] fp32 workspace, contiguous (written by the pre-pass)
  const void* ek = nullptr;      // additional keys (NA) or the keys (FMHA)
  const void* ev = nullptr;
  // Outputs.
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* dek = nullptr;  // gradient of ek / ev (NA: additional KV; FMHA: dk / dv)
  void* dev = nullptr;

  // Element strides, 5 entries: batch, spatial axis 0..2, head (LSE: no channel axis).
  int64_t qs[5] = {}, ks[5] = {}, vs[5] = {}, dos[5] = {}, ls[5] = {};
  int64_t dqs[5] = {}, dks[5] = {}, dvs[5] = {};
  // Token tensors (additional KV / FMHA keys): batch, token, head.
  int64_t eks[3] = {}, evs[3] = {}, deks[3] = {}, devs[3] = {};

  int64_t batch = 1, heads = 1, heads_kv = 1;
  int head_dim = 0, head_dim_v = 0;
  int64_t tokens = 1;  // local query tokens per batch entry (prod of q_extent; FMHA: Sq)

  // NA geometry (axes beyond the rank: extent 1, kernel 1, stride 1, dilation 1). `extent` is the
  // grid the windows are computed on; the query-side tensors hold its queries q_origin + [0,
  // q_extent), the key-side tensors its keys kv_origin + [0, kv_extent) (a sub-domain; without one:
  // origins 0 and both extents = extent).
  int64_t extent[3] = {1, 1, 1}, kernel[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, dilation[3] = {1, 1, 1};
  int64_t q_origin[3] = {0, 0, 0}, kv_origin[3] = {0, 0, 0}, q_extent[3] = {1, 1, 1}, kv_extent[3] = {1, 1, 1};
  int causal[3] = {0, 0, 0};
  int64_t q_tile[3] = {1, 1, 1}, kv_tile[3] = {1, 1, 1};  // volumes kTileM / kTileN
  int q_shift[3] = {0, 0, 0}, kv_shift[3] = {0, 0, 0};    // log2 of the tile dims
  // Tiles per axis of the most local rows of one dilation group: of q_tile (dq grid) or kv_tile
  // (dkdv grid).
  int64_t own_tiles[3] = {1, 1, 1};
  int64_t num_extra = 0;  // additional KV tokens (NA)
  // dkdv: the grid's x covers the NA key tiles first (na_ctas), then the additional-KV tiles.
  int64_t na_ctas = 0;

  float scale = 0.f;       // softmax scale (for dq / dk)
  float scale_log2 = 0.f;  // scale * log2(e)

  // FMHA mode: queries [qbase, qbase + sq), keys [kvbase, kvbase + skv) of a sequence.
  int fmha = 0;
  int fmha_causal = 0;
  int64_t seqlen_q = 0, seqlen_kv = 0;
  const int* cu_q = nullptr;  // varlen: blockIdx.z is the sequence
  const int* cu_kv = nullptr;

  int aligned = 0;  // 16-byte vector loads are legal for every row of every input tensor

  // Fused dQ (dkdv kernel, tensor-core path, RunOptions::deterministic = false): the dkdv kernel
  // also computes each walked tile's dQ contribution dS K and adds it with fp32 atomics into
  // dq_accum [B, tokens, H, dq_accum_ld] (zeroed by the host); the dq kernel is not launched and
  // a conversion pass writes dQ = scale * dq_accum. nullptr: the deterministic two-kernel path.
  float* dq_accum = nullptr;
  int64_t dq_accum_ld = 0;
};

}  // namespace nattn::cuda::fna_bwd
