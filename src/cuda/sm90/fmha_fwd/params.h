// Parameters of the Hopper (sm_90a) attention forward kernel (FMHA and NA share one kernel
// template): plain structs shared by the host side (fmha_fwd_sm90.cpp, na_fwd_sm90.cpp, compiled by
// the host compiler) and the kernel translation units (generated from src/cuda/cuda.cmake, tables
// NATTN_SM90_FWD_TABLE). No CuTe types here.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "nattn/semantics.h"

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

// NA geometry of one launch (hopper-fna): the kernel runs on token-permuted tensors
// [B * G, P, H, D] (dilation groups folded into the batch), one CTA per Q tile of 128 permuted
// tokens. Both permutations are padded to rank 3 with size-1 axes (which leaves every linear index
// unchanged) and use flip = true (axis 0 fastest). Axes >= the NA rank have extent 1 and kernel 1.
struct NaGeom {
  sem::Permutation qp, kvp;  // Q (tile = q_tile) and K/V (tile = kv_tile) permutations, rank 3
  sem::Axis ax[3];           // per-axis NA parameters (extent, kernel, stride, dilation, causal)
  // In-tile decode of a permuted row r (0..127) to per-axis offsets: (r >> shift[i]) & mask[i]
  // (tile sizes are powers of two because each tile volume is 128).
  int q_shift[3] = {0, 0, 0}, q_mask[3] = {0, 0, 0};
  int kv_shift[3] = {0, 0, 0}, kv_mask[3] = {0, 0, 0};
  int kv_tiles[3] = {1, 1, 1};  // kvp.tiles(i): the KV tile grid (tile index = kvp.linear)
};

// Bound on the per-CTA table of per-axis KV tile classes: sum over axes of kvp.tiles(i) (checked
// by the host; every CTA's KV box has at most that many tiles per axis).
constexpr int kMaxAxisTiles = 4096;

}  // namespace nattn::cuda::sm90
