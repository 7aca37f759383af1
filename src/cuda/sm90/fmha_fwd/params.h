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
// 128 keys per KV tile, 64 at head dim 256 (fmha_block_n: its O accumulator alone is 128 registers
// per consumer thread). Host code (config lists, NA tile volumes) reads the same functions.
constexpr int kFmhaBlockM = 128;
constexpr int kFmhaBlockN = 128;
constexpr int fmha_block_n(int head_dim) { return head_dim == 256 ? 64 : kFmhaBlockN; }

// Kernel variants (performance experiments; every variant computes the same function). Chosen at
// compile time with -DNATTN_SM90_VARIANT=N (default 5: fastest on the H100, bench/RESULTS.md); each flag can also
// be forced alone with -DNATTN_SM90_{DBUF_P,PINGPONG,SMEM_EPILOGUE,THREE_STAGES}=0|1.
//   N | kDbufP | kPingPong | kSmemEpilogue | kThreeStages
//   0 |   0    |     0     |       0       |      0        baseline
//   1 |   1    |     0     |       0       |      0        intra-warpgroup overlap, P double-buffered
//   2 |   1    |     1     |       0       |      0        + ping-pong of the consumer warpgroups
//   3 |   0    |     1     |       0       |      0        ping-pong on the baseline mainloop
//   4 |   1    |     1     |       1       |      0        + smem-staged coalesced O stores
//   5 |   1    |     1     |       1       |      1        + 3 K/V stages (hd128; hd64 always has 3)
// See fmha_fwd_kernel.cuh for what each flag changes.
#ifndef NATTN_SM90_VARIANT
#define NATTN_SM90_VARIANT 5
#endif
struct Sm90Variant {
  static constexpr int kId = NATTN_SM90_VARIANT;
  static_assert(kId >= 0 && kId <= 5, "NATTN_SM90_VARIANT must be 0..5");
#ifdef NATTN_SM90_DBUF_P
  static constexpr bool kDbufP = NATTN_SM90_DBUF_P != 0;
#else
  static constexpr bool kDbufP = kId == 1 || kId == 2 || kId == 4 || kId == 5;
#endif
#ifdef NATTN_SM90_PINGPONG
  static constexpr bool kPingPong = NATTN_SM90_PINGPONG != 0;
#else
  static constexpr bool kPingPong = kId == 2 || kId == 3 || kId == 4 || kId == 5;
#endif
#ifdef NATTN_SM90_SMEM_EPILOGUE
  static constexpr bool kSmemEpilogue = NATTN_SM90_SMEM_EPILOGUE != 0;
#else
  static constexpr bool kSmemEpilogue = kId == 4 || kId == 5;
#endif
#ifdef NATTN_SM90_THREE_STAGES
  static constexpr bool kThreeStages = NATTN_SM90_THREE_STAGES != 0;
#else
  static constexpr bool kThreeStages = kId == 5;
#endif
};

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

  // Variable length (FMHA only): batch == 1, seqlen_q / seqlen_kv are the packed totals, and
  // sequence s has the query rows [cu_q[s], cu_q[s + 1]) and key rows [cu_kv[s], cu_kv[s + 1])
  // (int32 device arrays of num_seqs + 1 entries). One grid z-slice per sequence, with
  // ceil(max_seqlen_q / 128) Q tiles each; max_seqlen_q must be >= every sequence's query count.
  const int* cu_q = nullptr;
  const int* cu_kv = nullptr;
  int num_seqs = 0, max_seqlen_q = 0;

  // (head, sequence) pairs one CTA computes one after the other, per Q tile (README.md, "Pairs per
  // CTA"): 0 = automatic (choose_pairs_per_cta).
  int pairs_per_cta = 0;
  // Persistent scheduling (README.md, "Persistent scheduling"): 0 off; 1 on, one CTA per SM; n > 1
  // on with at most n CTAs (tests use it to make every CTA walk several units); -1 (default): the
  // environment variable NATTN_HOPPER_PERSISTENT, read the same way (unset: off).
  int persistent = -1;
  // Consumer schedule (a run-time value: one instantiation serves both): true = ping-pong (the two
  // consumer warpgroups take turns issuing their GEMMs, so one's softmax overlaps the other's
  // GEMMs; schedule "pp", the default), false = cooperative (both issue as soon as their operands
  // are ready; schedule "coop"). Needs a kernel built with Sm90Variant::kPingPong (variants 2-5)
  // for "pp"; variants 0 and 1 always run cooperative.
  bool pingpong = true;
};

// The pairs per CTA of a launch of num_m_blocks Q tiles x n_pairs (head, sequence) pairs, each
// walking about `walk` KV tiles, on the current device: `requested` when > 0, else
// NATTN_HOPPER_PAIRS_PER_CTA when set, else automatic: one pair when walk > 16 (long walks amortise
// the set-up already; grouping them measured 10% slower on the 3-D video problem), otherwise
// enough pairs per CTA to keep >= 8 waves of CTAs, at most 16; then at least ceil(n_pairs / 65535)
// (grid y) and at most n_pairs. Host only (fmha_fwd_sm90.cpp).
int choose_pairs_per_cta(int num_m_blocks, int64_t n_pairs, int64_t walk, int requested);

// The CTAs of a persistent launch on a device of `sms` SMs (FmhaFwdParams::persistent, -1:
// NATTN_HOPPER_PERSISTENT); 0: not persistent. Host only.
int persistent_ctas(int requested, int sms);

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
  // Per KV axis whose offset pattern repeats within a 32-bit mask word (period (kv_mask + 1) <<
  // kv_shift below 32): the multiplier that replicates one period's bits across the word,
  // 0xffffffff / (2^period - 1); 0 otherwise. Host-computed: a run-time division per row and
  // tile in the kernel's mask cost ~15 instructions each.
  uint32_t kv_rep[3] = {0, 0, 0};
  int kv_tiles[3] = {1, 1, 1};  // kvp.tiles(i): the KV tile grid (tile index = kvp.linear)
  int win_off[3] = {0, 0, 0};   // row-window table offset of each axis: sum of the Q tile sizes before it
  // 1: every extent, Q tile x dilation span and the dilation product are below 2^30, so the context math
  // (na::make_ctx_axis) runs in 32 bits.
  int narrow = 0;

  // Direct mode (direct = 1): no permutation. The kernel reads Q/K/V and writes O/LSE in the
  // caller's heads-last tensors [B, *S, H, D] through rank-5 TMA boxes; KV tiles start at the
  // first key of the Q tile's KV box (not on a global tile grid). Needs dilation 1, so G = 1 and
  // the in-group coordinates are the grid coordinates. The axes of this struct are then the NA axes
  // in reverse order (axis 0 = the innermost spatial axis, the fastest inside a TMA box), padded
  // to 3 with extent-1 axes; the strides below follow that order.
  int direct = 0;
  // Sub-domain (direct mode only; multi-GPU halos, issue 6): the window math runs on the global grid
  // (ax[i].extent) while the tensors hold a box of it: local query x is global query q_org + x, local
  // key y is global key kv_org + y; qp.extent / kvp.extent are then the local Q / KV extents (the
  // grid of Q tiles and the TMA bounds). All zero, and the three extents equal, without a sub-domain.
  int q_org[3] = {0, 0, 0}, kv_org[3] = {0, 0, 0};
  int64_t q_sp[3] = {0, 0, 0}, k_sp[3] = {0, 0, 0}, v_sp[3] = {0, 0, 0};  // element strides per axis
  int64_t o_sp[3] = {0, 0, 0}, lse_sp[3] = {0, 0, 0};
};


}  // namespace nattn::cuda::sm90
