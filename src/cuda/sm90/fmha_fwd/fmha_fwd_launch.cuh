// Host launcher of the Hopper attention forward kernel (fmha_fwd_kernel.cuh): TMA descriptors,
// grid (Q tiles x pair blocks, or persistent CTAs), shared memory and launch. Included only by the
// generated translation units of table NATTN_SM90_FWD_TABLE (src/cuda/cuda.cmake). See README.md.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_kernel.cuh"
#include "nattn/errors.h"

namespace nattn::cuda::sm90 {

// na == nullptr: FMHA; else NA on permuted tensors (a describes them: batch = B * G, seqlen = P).
template <class T, int D, bool kNa>
void launch_attn_fwd_sm90(const FmhaFwdParams& a, const NaGeom* na, cudaStream_t stream) {
  using C = FmhaFwdConfig<T, D, detail::kernel_stages<D>()>;
  // Direct NA mode: the sequence-view descriptors are unused (placeholders over one row) and the
  // rank-5 ones are built instead.
  const bool direct = na != nullptr && na->direct;
  const int sq = direct ? 1 : a.seqlen_q, skv = direct ? 1 : a.seqlen_kv;
  const int hq = direct ? 1 : a.heads, hkv = direct ? 1 : a.heads_kv, nb = direct ? 1 : a.batch;
  auto st = [&](int64_t s) { return direct ? int64_t{D} : s; };
  FmhaFwdKernelParams<T, D> p{
      make_tma_q<T, D>(static_cast<const T*>(a.q), sq, hq, nb, st(a.q_stride[1]), st(a.q_stride[2]), st(a.q_stride[0])),
      make_tma_k<T, D>(static_cast<const T*>(a.k), skv, hkv, nb, st(a.k_stride[1]), st(a.k_stride[2]),
                       st(a.k_stride[0])),
      make_tma_v<T, D>(static_cast<const T*>(a.v), skv, hkv, nb, st(a.v_stride[1]), st(a.v_stride[2]),
                       st(a.v_stride[0])),
      static_cast<T*>(a.o),
      a.lse,
      {a.o_stride[0], a.o_stride[1], a.o_stride[2]},
      {a.lse_stride[0], a.lse_stride[1], a.lse_stride[2]},
      a.batch,
      a.seqlen_q,
      a.seqlen_kv,
      a.heads,
      a.heads_kv,
      a.heads / a.heads_kv,
      ((a.cu_q != nullptr ? a.max_seqlen_q : a.seqlen_q) + C::kBlockM - 1) / C::kBlockM,
      0,
      1,
      0,
      a.scale_log2,
      a.causal ? 1 : 0,
      a.pingpong ? 1 : 0,
      na == nullptr ? a.cu_q : nullptr,
      na == nullptr ? a.cu_kv : nullptr,
      na != nullptr ? *na : NaGeom{},
      {},
      {},
      {}};
  if (direct) {
    // The tensors' own extents (a sub-domain's Q and K/V boxes differ; else both are the grid's).
    int64_t q_extent[3], kv_extent[3], q_tile[3], kv_tile[3];
    for (int i = 0; i < 3; ++i) {
      q_extent[i] = na->qp.extent[i];
      kv_extent[i] = na->kvp.extent[i];
      q_tile[i] = na->qp.tile[i];
      kv_tile[i] = na->kvp.tile[i];
    }
    p.dq = make_tma_na_direct(static_cast<const T*>(a.q), a.heads, D, C::kBlockD, q_extent, na->q_sp, a.batch,
                              a.q_stride[0], q_tile);
    p.dk = make_tma_na_direct(static_cast<const T*>(a.k), a.heads_kv, D, C::kBlockD, kv_extent, na->k_sp, a.batch,
                              a.k_stride[0], kv_tile);
    p.dv = make_tma_na_direct(static_cast<const T*>(a.v), a.heads_kv, D, C::kBlockD, kv_extent, na->v_sp, a.batch,
                              a.v_stride[0], kv_tile);
  }
  auto kernel = attn_fwd_sm90_kernel<T, D, kNa>;
  const int smem = C::kSmemBytes;
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int n_seq = na == nullptr && a.cu_q != nullptr ? a.num_seqs : a.batch;  // varlen: one per sequence
  if (p.num_m_blocks == 0 || n_seq == 0) return;
  // (head, sequence) pairs per CTA (README.md, "Pairs per CTA"): grid (Q tiles, pair blocks); one
  // pair per CTA keeps the grid (Q tiles, heads, sequences).
  const int64_t n_pairs = static_cast<int64_t>(a.heads) * n_seq;
  if (n_pairs > std::numeric_limits<int32_t>::max() - 65536)  // the kernel indexes pairs in int32
    throw NotImplementedError("hopper attention forward: heads x batch (or varlen sequences) must be < 2^31 - 65536, got " +
                              std::to_string(n_pairs));
  // NA with dilation: the context depends on the dilation group (part of the sequence index), so
  // a CTA's pairs must share one: one pair per CTA.
  const bool groups = na != nullptr && na->qp.dilation[0] * na->qp.dilation[1] * na->qp.dilation[2] > 1;
  // The KV tiles a CTA walks per pair (NA: per axis the window plus the Q tile, in KV tiles; an
  // estimate), which the automatic choice weighs; FMHA: not grouped automatically (measured: no gain
  // at 512 keys and more, bench/RESULTS.md).
  int64_t walk = int64_t{1} << 30;
  if (na != nullptr) {
    walk = 1;
    for (int i = 0; i < 3; ++i) {
      const int64_t span = std::min(na->ax[i].kernel, na->ax[i].extent) + na->qp.tile[i] - 1;
      walk *= (span + na->kvp.tile[i] - 1) / na->kvp.tile[i];
    }
  }
  const int per_cta =
      groups || !C::kMultiPair ? 1 : choose_pairs_per_cta(p.num_m_blocks, n_pairs, walk, a.pairs_per_cta);
  p.n_pairs = static_cast<int>(n_pairs);
  p.pairs_per_cta = per_cta;
  const int64_t blocks = (n_pairs + per_cta - 1) / per_cta;
  dim3 grid = per_cta == 1 ? dim3(static_cast<unsigned>(p.num_m_blocks), static_cast<unsigned>(a.heads),
                                  static_cast<unsigned>(n_seq))
                           : dim3(static_cast<unsigned>(p.num_m_blocks), static_cast<unsigned>(blocks), 1u);
  // Persistent (README.md, "Persistent scheduling"): one CTA per SM (the shared memory allows no
  // more) walks the (Q tile, pair block) units, Q tile fastest.
  const int ctas = a.persistent == 0 ? 0 : persistent_ctas(a.persistent, device_props(current_device()).sm_count);
  if (ctas > 0) {
    const int64_t units = static_cast<int64_t>(p.num_m_blocks) * blocks;
    if (units > std::numeric_limits<int32_t>::max() - (int64_t{1} << 20))  // the kernel steps units in int32
      throw NotImplementedError("hopper attention forward, persistent: Q tiles x pair blocks must be < 2^31 - 2^20, got " +
                                std::to_string(units));
    p.units = static_cast<int>(units);
    grid = dim3(static_cast<unsigned>(std::min<int64_t>(units, ctas)), 1u, 1u);
  }
  kernel<<<grid, C::kThreads, smem, stream>>>(p);
  NATTN_CUDA_CHECK_LAUNCH(kNa ? "attn_fwd_sm90_kernel<na>" : "attn_fwd_sm90_kernel<fmha>");
}

template <class T, int D>
void launch_fmha_fwd_sm90(const FmhaFwdParams& a, cudaStream_t stream) {
  launch_attn_fwd_sm90<T, D, false>(a, nullptr, stream);
}
template <class T, int D>
void launch_na_fwd_sm90(const FmhaFwdParams& a, const NaGeom& na, cudaStream_t stream) {
  launch_attn_fwd_sm90<T, D, true>(a, &na, stream);
}

}  // namespace nattn::cuda::sm90
