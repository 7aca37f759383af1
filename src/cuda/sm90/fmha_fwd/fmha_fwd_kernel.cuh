// Hopper (sm_90a) attention forward kernel: TMA loads, wgmma, warp specialisation, online softmax.
// One template for FMHA (kNa = false, hopper-fmha) and NA on token-permuted tensors (kNa = true,
// hopper-fna: the KV tiles visited are the KV box of the Q tile, with a per-tile mask class; see
// na_tiles.cuh). Its host launcher is in fmha_fwd_launch.cuh, which the generated translation units
// of table NATTN_SM90_FWD_TABLE (src/cuda/cuda.cmake) include, compiled with
// -gencode arch=compute_90a,code=sm_90a. See README.md.
//
// CTA = 128 queries of one (batch, head), 3 warpgroups (384 threads):
//   warpgroup 0: producer. One thread issues the TMA loads: Q once (its own mbarrier), then K_j, V_j
//                for every KV tile j into two rings of kStages stages (PipelineTmaAsync each, so
//                S = Q K_j^T can start before V_j has landed). Registers lowered to
//                kProducerRegs (40; 48 with several pairs per CTA).
//   warpgroups 1, 2: consumers, each owning 64 query rows (its own softmax state and O
//                accumulator); registers raised to kConsumerRegs (224; 232 at head dim 256). Per KV tile:
//                  S_{j+1} = Q K_{j+1}^T (wgmma SS, async)   O += P_j V_j (wgmma RS, async)
//                  wait for S_{j+1}; mask; online softmax (overlaps P_j V_j on the tensor cores)
//                  wait for P_j V_j; rescale O; P_{j+1} = convert(S_{j+1}) in registers.
//                (That is the baseline, variant 0; the variants of Sm90Variant (params.h) change the
//                mainloop (P double-buffered, ping-pong turns), the epilogue and the stage count:
//                see "compile-time configuration" below.)
#pragma once

#include <cuda_runtime.h>

#include <cute/tensor.hpp>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/sm90/fmha_fwd/fmha_fwd_config.cuh"
#include "cuda/sm90/fmha_fwd/fmha_fwd_epilogue.cuh"
#include "cuda/sm90/fmha_fwd/na_tiles.cuh"
#include "cuda/sm90/fmha_fwd/params.h"

// The kernel's lambdas capture register fragments by reference: one that is not inlined (NVVM
// declined the large mainloop steps of the NA instantiation) moves them to local memory.
#define NATTN_SM90_INLINE __attribute__((always_inline))

namespace nattn::cuda::sm90 {

// ---- the kernel ---------------------------------------------------------------------------------
template <class T, int D, bool kNa>
__global__ void __launch_bounds__(384, 1) attn_fwd_sm90_kernel(const __grid_constant__ FmhaFwdKernelParams<T, D> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cute;
  using C = FmhaFwdConfig<T, D, detail::kernel_stages<D>()>;
  using Storage = typename C::SharedStorage;
  using Pipeline = typename C::PipelineKV;
  constexpr int kBM = C::kBlockM, kBN = C::kBlockN;
  // NA: KV tiles of kBN keys (128; 64 at head dim 256), row masks of kBN / 32 words.
  static_assert(!kNa || kBN == 128 || kBN == 64, "the NA tiling takes KV tiles of 128 or 64 keys");

  extern __shared__ char smem_raw[];
  // Aligned up to 1024 bytes as an offset from smem_raw, so that the compiler still knows the
  // storage is shared memory (shared loads, not generic ones).
  const uint32_t smem_misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Storage& ss = *reinterpret_cast<Storage*>(smem_raw + ((1024u - smem_misalign) & 1023u));

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int wg_idx = cutlass::canonical_warp_group_idx();
  const bool lane_pred = cute::elect_one_sync();
  const bool is_producer_thread = warp_idx == 0 && lane_pred;

  // Work unit = (Q tile m_block, pairs [pair_begin, pair_end)): the (head, sequence) pairs of the Q
  // tile that the CTA computes one after the other (pair = head + heads * z, z = batch entry or
  // varlen sequence), p.pairs_per_cta consecutive ones, so that the per-unit set-up (NA context and
  // windows, which depend on the Q tile only) is paid once and the next pair's first K/V loads
  // overlap the current pair's last tiles and epilogue (README.md, "Pairs per CTA").
  // Non-persistent (p.units == 0): one unit per CTA, Q tile blockIdx.x, pair block (y, z).
  // Persistent (p.units > 0): a grid of at most one CTA per SM walks units blockIdx.x, + gridDim.x,
  // ... of p.units, Q tile fastest (README.md, "Persistent scheduling"); producer and consumers
  // walk the same units.
  // Causal FMHA: the most expensive Q tiles (the last ones) come first. NA: p.causal = 0 (its
  // per-axis causality lives in p.na).
  const bool persistent = p.units > 0;
  // Unit u's Q tile and pairs (the first unit is blockIdx.x in both modes).
  auto m_block_of = [&](int u) NATTN_SM90_INLINE -> int {
    const int m_rank = persistent ? u % p.num_m_blocks : u;
    return p.causal ? p.num_m_blocks - 1 - m_rank : m_rank;
  };
  auto pair_begin_of = [&](int u) NATTN_SM90_INLINE -> int {
    const int block = persistent ? u / p.num_m_blocks
                                 : static_cast<int>(blockIdx.y) + static_cast<int>(gridDim.y) * static_cast<int>(blockIdx.z);
    return block * p.pairs_per_cta;
  };
  // (Head dim 256: one pair, a compile-time trip count, so that the pair loops vanish.)
  auto pair_end_of = [&](int begin) NATTN_SM90_INLINE -> int {
    return C::kMultiPair ? min(begin + p.pairs_per_cta, p.n_pairs) : begin + 1;
  };
  // The current unit of this thread's role lives in shared memory (ss.unit[warpgroup]: index, Q
  // tile, first pair, end of pairs), read where used: held in registers across the mainloop, these
  // values spilled at head dim 128. The slot is indexed by wg_idx (canonical_warp_group_idx(), a
  // warp-uniform shuffle taken once, converged): ptxas keeps it in a uniform register. (Not the
  // shuffle itself here: the producer's elected lane reads these alone, and a full-warp shuffle
  // from one lane hangs.)
  auto slot = [&](int field) NATTN_SM90_INLINE -> uint32_t {
    return static_cast<uint32_t>(__cvta_generic_to_shared(&ss.unit[0][0])) + 16 * wg_idx +
           4 * field;
  };
  auto unit = [&]() NATTN_SM90_INLINE -> int { return detail::ld_shared_s32(slot(0)); };
  auto m_block = [&]() NATTN_SM90_INLINE -> int { return detail::ld_shared_s32(slot(1)); };
  auto pair_begin = [&]() NATTN_SM90_INLINE -> int { return detail::ld_shared_s32(slot(2)); };
  auto pair_end = [&]() NATTN_SM90_INLINE -> int { return detail::ld_shared_s32(slot(3)); };
  // Moves this role to its next unit; false when none is left. sync_role: a barrier of all the
  // role's threads (each has read the current unit before it is overwritten, and reads the new one
  // after); `writer`: the one thread that writes it.
  auto next_unit = [&](auto sync_role, bool writer) NATTN_SM90_INLINE -> bool {
    if (!persistent) return false;
    const int next = unit() + static_cast<int>(gridDim.x);
    if (next >= p.units) return false;
    sync_role();
    if (writer) {
      const int begin = pair_begin_of(next);
      detail::st_shared_b32(slot(0), static_cast<uint32_t>(next));
      detail::st_shared_b32(slot(1), static_cast<uint32_t>(m_block_of(next)));
      detail::st_shared_b32(slot(2), static_cast<uint32_t>(begin));
      detail::st_shared_b32(slot(3), static_cast<uint32_t>(pair_end_of(begin)));
    }
    sync_role();
    return true;
  };
  // The current pair: its head, its sequence (batch entry `batch`, or varlen packed sequence z of the
  // single batch entry, starting at query row q_start and key row kv_start) and its KV length.
  // (Its query count is not kept: seq_q_of(pair) where needed, one register less across the mainloop.)
  int head = 0, head_kv = 0, batch = 0, q_start = 0, kv_start = 0, seq_kv = p.seqlen_kv;
  int n_blocks = 1;
  auto seq_q_of = [&](int pair) NATTN_SM90_INLINE -> int {
    if (!kNa && p.cu_q != nullptr) {
      const int z = pair / p.heads;
      return p.cu_q[z + 1] - p.cu_q[z];
    }
    return p.seqlen_q;
  };
  // Sets the pair's values; false when its sequence has no rows in this Q tile (varlen: the grid
  // covers the longest sequence), which producer and consumers skip alike.
  auto set_pair = [&](int pair) NATTN_SM90_INLINE -> bool {
    head = pair % p.heads;
    head_kv = head / p.group;
    const int z = pair / p.heads;
    batch = z;
    if (!kNa && p.cu_q != nullptr) {
      batch = 0;
      q_start = p.cu_q[z];
      kv_start = p.cu_kv[z];
      seq_kv = p.cu_kv[z + 1] - kv_start;
    }
    const int kv_end = p.causal ? min(seq_kv, (m_block() + 1) * kBM) : seq_kv;
    // >= 1: a varlen sequence without keys still walks one (fully masked) tile, so that its rows
    // come out as O = 0, LSE = -inf through the ordinary epilogue.
    n_blocks = max(1, (kv_end + kBN - 1) / kBN);
    return m_block() * kBM < seq_q_of(pair);
  };
  // NA: the context below takes the first pair's batch (all pairs of a unit share it). (From
  // blockIdx: the unit slots are read only after the barrier below.)
  if constexpr (kNa) batch = pair_begin_of(static_cast<int>(blockIdx.x)) / p.heads;

  // NA direct mode: Q/K/V/O/LSE in the caller's layout (NaGeom::direct), CTA-uniform.
  const bool direct = kNa && p.na.direct;
  if (is_producer_thread) {
    if (direct) {
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dq));
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dk));
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dv));
    } else {
      cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    }
    cutlass::arch::ClusterTransactionBarrier::init(&ss.q_barrier, 1);
    cutlass::arch::ClusterBarrier::init(&ss.q_empty, 2);  // one arrive per consumer warpgroup
    const int u0 = static_cast<int>(blockIdx.x), begin0 = pair_begin_of(u0);
    for (int r = 0; r < 3; ++r) {  // (read after the barrier below)
      ss.unit[r][0] = u0;
      ss.unit[r][1] = m_block_of(u0);
      ss.unit[r][2] = begin0;
      ss.unit[r][3] = pair_end_of(begin0);
    }
  }
  na::Shared& nas = ss.na;  // NA tiling context and row windows
  if constexpr (kNa) {
    // The three axes on lanes 0-2 of warp 0 (long int64 chains: one lane for all took ~3% of the
    // kernel's time), then lane 0 combines them.
    if (threadIdx.x < 32) {
      if (threadIdx.x < 3) na::make_ctx_axis(p.na, m_block_of(static_cast<int>(blockIdx.x)), batch, static_cast<int>(threadIdx.x), nas.ctx);
      __syncwarp();  // the whole warp: orders the three lanes' shared-memory writes before lane 0 reads
      if (threadIdx.x == 0) na::finish_ctx(nas.ctx);
    }
  }
  typename Pipeline::Params pp;
  pp.transaction_bytes = C::kBytesKV;
  pp.role = wg_idx == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pp.is_leader = is_producer_thread;
  pp.num_consumers = 256;
  pp.initializing_warp = 0;
  Pipeline pipe_k(ss.pipe_k, pp, Shape<_1, _1, _1>{});
  Pipeline pipe_v(ss.pipe_v, pp, Shape<_1, _1, _1>{});
  cutlass::arch::fence_barrier_init();
  __syncthreads();
  // NA: a Q tile made only of padding (possible with dilation) has nothing to compute; its rows
  // of the permuted output are dropped by the unpermute. CTA-uniform, before any pipeline use.
  // Persistent: that unit is skipped by both roles (more units follow).
  if constexpr (kNa) {
    if (!persistent && !nas.ctx.valid) return;
    if (nas.ctx.valid) na::fill_tables(p.na, nas, static_cast<int>(threadIdx.x), C::kThreads);
    __syncthreads();
  }
  // NA, persistent: the context of a unit after the first, switched by producer warp 0 and both
  // consumer warpgroups together (288 threads, named barrier kBarUnit), each after it is done with
  // the previous unit (warp 0: its loads issued; the consumers: their epilogues written, which read
  // the context in direct mode). Consumer warp 4 computes it (lanes 0-2 one axis each, as warp 0
  // does for the first unit; the producer's code stays small for its 48 registers), the consumers
  // fill the windows. Both return whether the Q tile has a real query (the same in every thread).
  auto switch_ctx_producer = [&]() NATTN_SM90_INLINE -> bool {
    detail::named_bar_sync_unaligned(detail::kBarUnit, 288);  // the previous unit's context is read no more
    detail::named_bar_sync_unaligned(detail::kBarUnit, 288);  // the new context is written
    return nas.ctx.valid != 0;
  };
  auto switch_ctx_consumer = [&]() NATTN_SM90_INLINE -> bool {
    const int tid = static_cast<int>(threadIdx.x);
    detail::named_bar_sync_unaligned(detail::kBarUnit, 288);
    if (tid < 160) {  // consumer warp 4
      if (tid < 131) na::make_ctx_axis(p.na, m_block(), batch, tid - 128, nas.ctx);
      __syncwarp();
      if (tid == 128) na::finish_ctx(nas.ctx);
    }
    detail::named_bar_sync_unaligned(detail::kBarUnit, 288);
    const bool valid = nas.ctx.valid != 0;
    if (valid) {
      na::fill_tables(p.na, nas, tid - 128, 256);
      detail::named_bar_sync(detail::kBarUnitConsumers, 256);
    }
    return valid;
  };

  // The KV walk, identical in the producer and the consumers: position t -> tile (index in the
  // K/V sequence, mask flag). FMHA: tiles 0..n_blocks-1 (per pair). NA: every tile of the KV tile box.
  // Called with t = 0, 1, 2, ... in order by each thread: NA advances the thread's cursor
  // (na::Cursor, no divisions) instead of decoding t. Past the end the tile is garbage, unused.
  na::Cursor cursor;
  auto next_tile = [&](int t, na::KvTile& tile) NATTN_SM90_INLINE -> int {
    if constexpr (kNa) {
      if (t == 0)
        cursor = na::Cursor{};
      else
        na::advance(nas.ctx, cursor);
      na::tile_of(p.na, nas.ctx, cursor, tile);
      return t;
    } else {
      // Causal: the walk ends at the Q tile's diagonal, n_blocks <= (m_block + 1) kBM / kBN, so the
      // tiles before the last kBM / kBN ones end at or below m_block kBM, below every row of the Q
      // tile: unmasked. (The last ones are all masked, at worst one more than needed when the
      // sequence ends inside the diagonal; the element mask is exact either way.) No m_block here:
      // persistent, it is a shared-memory read and a division, which cost registers in this loop.
      static_assert(kBM % kBN == 0, "causal tiles: kBN divides kBM");
      const int end = (t + 1) * kBN;
      tile.index = t;
      tile.masked = end > seq_kv || (p.causal && t >= n_blocks - kBM / kBN);
      return t;
    }
  };

  // The walk length inside the KV loops; NA: re-read from shared memory at each use (a volatile
  // load), which keeps ptxas from holding it in a register across the loops (with kDbufP it spilled
  // it in the consumers, and the 24-register producer spilled a value).
  auto walk_end = [&]() NATTN_SM90_INLINE -> int {
    if constexpr (kNa) {
      return detail::ld_shared_s32(static_cast<uint32_t>(__cvta_generic_to_shared(&nas.ctx.n_tiles)));
    } else {
      return n_blocks;
    }
  };

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename C::SmemLayoutQ{});  // (BM, D)
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename C::SmemLayoutK{});  // (BN, D, stages)
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename C::SmemLayoutV{});  // (D, BN, stages)

  if (wg_idx == 0) {
    // ---------------------------------------------------------------- producer warpgroup
    cutlass::arch::warpgroup_reg_dealloc<C::kProducerRegs>();
    // Per pair: Q, then the K/V tiles of the walk. From the second pair on, the first K/V stages
    // are loaded before Q, which waits until both consumer warpgroups released the Q buffer
    // (q_empty, after their epilogue, which stages O through it).
    // Warp 0 walks the units (all lanes: the unit switch is a named barrier of whole warps); its
    // elected lane issues the loads. K and V advance together (one pipeline state serves both
    // rings: registers are scarce here); the ring and the pair count run on across units.
    if (warp_idx == 0) {
      auto kv_state = cutlass::make_producer_start_state<Pipeline>();
      int it = 0;
      na::KvTile tile;
      bool valid = !kNa || nas.ctx.valid != 0;
      // The start of pair number `it` of this CTA: from the second pair on, the first K/V stages of
      // its walk (load_kv: the current mode's loads of `tile`), then the wait for both consumer
      // warpgroups to release the Q buffer (q_empty). Head dim 256 computes a pair per unit, but a
      // persistent CTA has several units. Returns the walk position of the next tile to load.
      auto preload_kv = [&](int it, auto&& load_kv) NATTN_SM90_INLINE -> int {
        int t = next_tile(0, tile);
        if (it > 0) {
          if constexpr (C::kMultiPair)
            for (int pre = 0; pre < C::kStages && t < walk_end(); ++pre, t = next_tile(t + 1, tile)) load_kv();
          cutlass::arch::ClusterBarrier::wait(&ss.q_empty, (it - 1) & 1);
        }
        return t;
      };
      for (;;) {
        if (valid && lane_pred) {
          if (direct) {
            // Rank-5 boxes (kBlockD head-dim elements, tile_0, tile_1, tile_2, 1) straight from the
            // caller's tensors: each fills one [tile tokens][kBlockD] block of a Q / K / V stage (see
            // SmemLayoutV), in the token order of the tile decode (axis 0 fastest). Out-of-grid tokens
            // read as zeros.
            constexpr int kBD = C::kBlockD;
            constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
            const na::Ctx& cx = nas.ctx;
            // Head-dim coordinate of block h, computed where it is used (as a loop invariant it was one
            // value too many for the producer's registers once: a spill).
            auto c0_of = [&](int h) NATTN_SM90_INLINE {
              int c;
              asm volatile("mad.lo.s32 %0, %1, %2, %3;" : "=r"(c) : "r"(head_kv), "n"(D), "r"(kBD * h));
              return c;
            };
            // One K or V stage of the current tile: D / kBD boxes into the ring's stage kv_state.
            auto load_stage = [&](Pipeline& pipe, const CUtensorMap* map, T* ring) NATTN_SM90_INLINE {
              pipe.producer_acquire(kv_state);
              CUTE_UNROLL
              for (int h = 0; h < D / kBD; ++h)
                cute::SM90_TMA_LOAD_5D::copy(map, pipe.producer_get_barrier(kv_state), kHint,
                                             ring + kv_state.index() * (kBN * D) + h * (kBN * kBD), c0_of(h), tile.org[0],
                                             tile.org[1], tile.org[2], batch);
            };
            auto load_kv = [&]() NATTN_SM90_INLINE {
              load_stage(pipe_k, &p.dk, ss.k);
              load_stage(pipe_v, &p.dv, ss.v);
              ++kv_state;
            };
            for (int pair = pair_begin(); pair < pair_end(); ++pair, ++it) {
              set_pair(pair);  // NA: every pair is valid
              int t = preload_kv(it, load_kv);
              cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.q_barrier, C::kBytesQ);
              CUTE_UNROLL
              for (int h = 0; h < D / kBD; ++h)
                cute::SM90_TMA_LOAD_5D::copy(&p.dq, &ss.q_barrier, kHint, ss.q + h * (kBM * kBD), head * D + kBD * h,
                                             static_cast<int>(cx.q0[0]), static_cast<int>(cx.q0[1]),
                                             static_cast<int>(cx.q0[2]), batch);
              for (; t < walk_end(); t = next_tile(t + 1, tile)) load_kv();
            }
          } else {
            Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.seqlen_q, int(D), p.heads, p.batch));
            Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.seqlen_kv, int(D), p.heads_kv, p.batch));
            Tensor mV = p.tma_v.get_tma_tensor(make_shape(int(D), p.seqlen_kv, p.heads_kv, p.batch));
            for (int pair = pair_begin(); pair < pair_end(); ++pair) {
              if (!set_pair(pair)) continue;
              // Varlen: the sequence's rows start at q_start / kv_start of the packed tensors (rows past
              // the sequence belong to the next one or lie outside the tensor, read as zeros; they are
              // masked or not stored).
              Tensor gQ = local_tile(domain_offset(make_coord(q_start, 0), mQ(_, _, head, batch)),
                                     Shape<Int<kBM>, Int<D>>{}, make_coord(m_block(), 0));  // (BM, D)
              Tensor gK = local_tile(domain_offset(make_coord(kv_start, 0), mK(_, _, head_kv, batch)),
                                     Shape<Int<kBN>, Int<D>>{}, make_coord(_, 0));  // (BN, D, n)
              Tensor gV = local_tile(domain_offset(make_coord(0, kv_start), mV(_, _, head_kv, batch)),
                                     Shape<Int<D>, Int<kBN>>{}, make_coord(0, _));  // (D, BN, n)
              auto [tQg, tQs] = tma_partition(p.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
              // (gmem, smem) partitions of K and V; not structured bindings, which a C++17 lambda cannot capture.
              auto tK = tma_partition(p.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
              auto tV = tma_partition(p.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
              auto load_kv = [&]() NATTN_SM90_INLINE {
                const int j = tile.index;
                pipe_k.producer_acquire(kv_state);
                copy(p.tma_k.with(*pipe_k.producer_get_barrier(kv_state)), get<0>(tK)(_, j), get<1>(tK)(_, kv_state.index()));
                pipe_v.producer_acquire(kv_state);
                copy(p.tma_v.with(*pipe_v.producer_get_barrier(kv_state)), get<0>(tV)(_, j), get<1>(tV)(_, kv_state.index()));
                ++kv_state;
              };
              int t = preload_kv(it, load_kv);
              cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.q_barrier, C::kBytesQ);
              copy(p.tma_q.with(ss.q_barrier), tQg, tQs);
              for (; t < walk_end(); t = next_tile(t + 1, tile)) load_kv();
              ++it;
            }
          }
        }
        __syncwarp();
        if (!next_unit([] { __syncwarp(); }, threadIdx.x == 0)) break;
        set_pair(pair_begin());  // NA: the unit's context takes its first pair's batch
        valid = !kNa || switch_ctx_producer();
      }
    }
  } else {
    // ---------------------------------------------------------------- consumer warpgroups
    cutlass::arch::warpgroup_reg_alloc<C::kConsumerRegs>();
    using V = Sm90Variant;
    const int ctid = static_cast<int>(threadIdx.x) - 128;  // 0..255
    const int cwg = ctid / 128;  // consumer warpgroup: CTA tile rows 64 * cwg .. 64 * cwg + 63
    typename C::MmaQK mma_qk;
    typename C::MmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);

    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // descriptors (MMA, 1, D/16)
    Tensor tSrK = thr_qk.partition_fragment_B(sK);  // descriptors (MMA, 1, D/16, stages)
    Tensor tOrV = thr_pv.partition_fragment_B(sV);  // descriptors (MMA, 1, BN/16, stages)
    Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBM>, Int<kBN>>{});  // fp32 ((2,2,BN/8),1,1)
    Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<kBM>, Int<D>>{});    // fp32 ((2,2,D/8),1,1)
    Tensor tOrP = make_tensor<T>(partition_shape_A(mma_pv, Shape<Int<kBM>, Int<kBN>>{}));  // ((2,2,2),1,BN/16)
    // kDbufP: the second P buffer (P_j and P_{j+1} alternate between tOrP and tOrP2).
    Tensor tOrP2 = make_tensor<T>(partition_shape_A(mma_pv, Shape<Int<kBM>, Int<kBN>>{}));
    static_assert(decltype(size(tSrS))::value == decltype(size(tOrP))::value, "P = S element for element");
    static_assert(decltype(size<0>(tOrP))::value == 8 && decltype(size<2>(tOrP))::value == kBN / 16, "A layout");
    static_assert(decltype(size<1>(tSrS))::value == 1 && decltype(size<2>(tSrS))::value == 1, "one atom per WG");
    static_assert(decltype(size<1>(tOrO))::value == 1 && decltype(size<2>(tOrO))::value == 1, "one atom per WG");

    // Row / column (inside the CTA tile) of every S element.
    Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));
    // FMHA: keys >= col_limit[r] are masked for row r (last tile: Skv; causal: row + 1); per pair.
    int col_limit[2];
    // NA: the in-group window of each of the thread's two rows per axis (padding keys lie outside
    // every window, so the window test also masks them). Held in registers, except with kDbufP
    // (the second P buffer leaves no room) and at head dim 256 (O alone is 128 registers): then
    // read from shared memory by each masked tile.
    constexpr bool kWindowsInRegisters = !C::kDbufP && D <= 128;
    int win_lo[2][3], win_hi[2][3];
    auto load_windows = [&]() NATTN_SM90_INLINE {  // per unit
      if constexpr (kNa && kWindowsInRegisters) {
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          CUTE_UNROLL
          for (int i = 0; i < 3; ++i) {
            const int e = na::win_index(p.na, i, get<0>(tScS(0)) + 8 * r);
            win_lo[r][i] = nas.win_lo[e];
            win_hi[r][i] = nas.win_hi[e];
          }
        }
      }
    };
    // Element mask of a tile that needs one (tile.masked, warp-uniform: every lane takes part).
    // NA: per row, the kBN-bit mask of its visible key columns (na::row_mask_word, shared with the
    // host self-check). The four threads of a quad hold the same two rows: each computes one word
    // (lane % 4, modulo the word count) of both rows and the quad exchanges them (a quarter of the
    // per-thread mask arithmetic, which sits between S's wait and the softmax). Each word is then
    // shifted right by the thread's column offset 2 (lane % 4) so that element i (column
    // 8 (i >> 2) + 2 (lane % 4) + (i & 1), layout_check.cu) tests the constant bit
    // 8 ((i >> 2) & 3) + (i & 1) of word i >> 4.
    auto apply_mask = [&](const na::KvTile& tile) NATTN_SM90_INLINE {
      if constexpr (kNa) {
        constexpr int kWords = kBN / 32;
        const int lane = ctid & 31;
        const int q2 = 2 * (lane & 3);
        uint32_t mine[2];
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          // Row r's windows: held in registers, or read from shared memory one row at a time.
          if constexpr (!kWindowsInRegisters) {
            CUTE_UNROLL
            for (int i = 0; i < 3; ++i) {
              const int e = na::win_index(p.na, i, get<0>(tScS(0)) + 8 * r);
              win_lo[r][i] = nas.win_lo[e];
              win_hi[r][i] = nas.win_hi[e];
            }
          }
          mine[r] = na::row_mask_word(p.na, tile, win_lo[r], win_hi[r], lane & (kWords - 1));
        }
        uint32_t w[2][kWords];
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          CUTE_UNROLL
          for (int k = 0; k < kWords; ++k) w[r][k] = __shfl_sync(0xffffffffu, mine[r], (lane & ~3) | k) >> q2;
        }
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i)
          if (((w[detail::row_half(i)][i >> 4] >> (8 * ((i >> 2) & 3) + (i & 1))) & 1u) == 0u) tSrS(i) = -INFINITY;
      } else {
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i) {
          const int col = tile.index * kBN + get<1>(tScS(i));
          if (col >= col_limit[detail::row_half(i)]) tSrS(i) = -INFINITY;
        }
      }
    };
    // P = S converted to the element type, into the RS A fragment `dst`.
    auto convert_p = [&](auto& dst) NATTN_SM90_INLINE {
      Tensor p32 = recast<uint32_t>(dst);
      CUTE_UNROLL
      for (int i = 0; i < size(p32); ++i) p32(i) = detail::pack2<T>(tSrS(2 * i), tSrS(2 * i + 1));
    };
    auto rescale_o = [&](const float (&alpha)[2]) NATTN_SM90_INLINE {
      CUTE_UNROLL
      for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= alpha[detail::row_half(i)];
    };
    // kPingPong: one "turn" = the GEMMs a warpgroup issues in one step; the two warpgroups' turns
    // alternate (warpgroup 0 first: warpgroup 1 pre-arrives on its barrier). Both warpgroups take
    // the same number of turns (they walk the same KV tiles, pair after pair: the alternation runs
    // on across pairs); warpgroup 0 takes one extra sync after the last pair to consume warpgroup
    // 1's last arrive.
    // Cooperative launches (p.pingpong == 0, CTA-uniform) take no turns.
    auto turn_begin = [&]() NATTN_SM90_INLINE {
      if constexpr (V::kPingPong) {
        if (p.pingpong) detail::named_bar_sync(detail::kBarTurn + cwg, 256);
      }
    };
    auto turn_end = [&]() NATTN_SM90_INLINE {
      if constexpr (V::kPingPong) {
        if (p.pingpong) detail::named_bar_arrive(detail::kBarTurn + (1 - cwg), 256);
      }
    };
    const float c = p.scale_log2;
    float row_max[2], row_sum[2], alpha[2];
    cutlass::PipelineState<C::kStages> k_state, v_state;  // the K/V rings run on across pairs
    int it = 0;  // pairs computed so far: the parity of the Q barriers' phases
    // The end of this warpgroup's part of the walk (NA: re-read from shared memory at each use, as
    // walk_end); FMHA: the whole walk.
    // (Indexed by wg_idx, warp-uniform (a shuffle) and kept in a uniform register: indexing by cwg,
    // a per-thread value, cost the head dim 128 consumers 100-230 bytes of spills in the mainloop.)
    auto wg_end = [&]() NATTN_SM90_INLINE -> int {
      if constexpr (kNa) {
        const int w = wg_idx - 1;
        return detail::ld_shared_s32(static_cast<uint32_t>(__cvta_generic_to_shared(&nas.wg_end[0])) + 4 * w);
      } else {
        return n_blocks;
      }
    };
    // The tile of walk position t > the previous one (NA: the cursor advanced once).
    auto wg_next = [&](int t, na::KvTile& tile) NATTN_SM90_INLINE {
      if constexpr (kNa) {
        na::advance(nas.ctx, cursor);
        na::tile_of(p.na, nas.ctx, cursor, tile);
      } else {
        next_tile(t, tile);
      }
    };
    if constexpr (V::kPingPong) {
      if (p.pingpong && cwg == 1) detail::named_bar_arrive(detail::kBarTurn + 0, 256);
    }
    // The units of this CTA (one unless persistent); the K/V ring states, the pair count and the
    // ping-pong turns run on across them.
    bool valid = !kNa || nas.ctx.valid != 0;
    for (;; valid = !kNa || switch_ctx_consumer()) {
      if (!valid) {
        if (!next_unit([&] { detail::named_bar_sync(detail::kBarEpi + cwg, 128); }, (ctid & 127) == 0)) break;
        set_pair(pair_begin());
        continue;
      }
      if constexpr (kNa) {
        // This warpgroup's part of the walk (na::wg_walk), once per unit: the Q tile, and so every
        // window, is the same for all of its pairs.
        // (Warp-uniform index: with cwg ptxas hoisted the slot addresses out of the unit loop and
        // spilled them.)
        if ((ctid & 127) == 0) na::wg_walk(p.na, nas, wg_idx - 1);
        detail::named_bar_sync(detail::kBarEpi + cwg, 128);
      }
      load_windows();
      for (int pair = pair_begin(); pair < pair_end(); ++pair) {
        if (!set_pair(pair)) continue;
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r)  // the thread's rows: m_block * kBM + its CTA tile rows
          col_limit[r] = p.causal ? min(seq_kv, m_block() * kBM + get<0>(tScS(0)) + 8 * r + 1) : seq_kv;
        clear(tOrO);

        cutlass::arch::ClusterTransactionBarrier::wait(&ss.q_barrier, it & 1);

        // This warpgroup computes walk positions [wg_first, wg_end) (NA: na::wg_walk; FMHA: all). The
        // positions before and after are fully masked for its 64 rows: it waits for and releases their
        // K and V stages (ring order kept) without GEMMs and still takes their ping-pong turns, so
        // both warpgroups take n + 1 turns per pair. No P is pending across a skip (the leading ones
        // come before the first S, the trailing ones after the last P V), so no V stage is held while
        // the other warpgroup needs the producer to refill it.
        auto skip_positions = [&](int n) NATTN_SM90_INLINE {
  #pragma unroll 1
          for (; n > 0; --n) {
            pipe_k.consumer_wait(k_state);
            pipe_k.consumer_release(k_state);
            ++k_state;
            turn_begin();
            turn_end();
            pipe_v.consumer_wait(v_state);
            pipe_v.consumer_release(v_state);
            ++v_state;
          }
        };
        na::KvTile tile;
        int t = 0;
        if constexpr (kNa) {
          const int w = wg_idx - 1;
          t = nas.wg_first[w];
          skip_positions(t);
          CUTE_UNROLL
          for (int i = 0; i < 3; ++i) cursor.m[i] = nas.wg_lo[w][i];
          na::tile_of(p.na, nas.ctx, cursor, tile);
        } else {
          next_tile(0, tile);
        }
        if (t >= wg_end()) {  // cannot happen (every query sees >= 1 key); no hang, no NaN if it did
          row_max[0] = row_max[1] = -INFINITY;
          row_sum[0] = row_sum[1] = 0.f;
          turn_begin();  // the turn of the last P V
          turn_end();
        } else {
          // First tile: S_0, softmax, P_0.
          pipe_k.consumer_wait(k_state);
          turn_begin();
          detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
          turn_end();
          warpgroup_wait<0>();
          warpgroup_fence_operand(tSrS);  // reads of S stay after the wait
          pipe_k.consumer_release(k_state);
          ++k_state;
          if (tile.masked) apply_mask(tile);
          detail::softmax_step<true>(tSrS, c, row_max, row_sum, alpha);
          convert_p(tOrP);

          // The walk's last P V (its own turn), waited for; V's stage released. The V ring runs on
          // into the next pair.
          auto final_pv = [&](auto& p_last) NATTN_SM90_INLINE {
            pipe_v.consumer_wait(v_state);
            turn_begin();
            detail::wgmma_batch<false, true>(mma_pv, p_last, tOrV(_, _, _, v_state.index()), tOrO);
            turn_end();
            warpgroup_wait<0>();
            warpgroup_fence_operand(tOrO);
            pipe_v.consumer_release(v_state);
            ++v_state;
          };
          if constexpr (C::kDbufP) {
            // Step j (P_j in p_cur, alpha = alpha_j, P_{j-1} V_{j-1} possibly in flight):
            //   issue S_{j+1}; wait_group 1 (= P_{j-1} V_{j-1} done); O *= alpha_j; issue O += P_j V_j;
            //   wait_group 1 (= S_{j+1} done); mask, softmax -> alpha_{j+1}; P_{j+1} into p_next.
            // Every wait sits right after an issue, so ptxas cannot move it above the softmax, and
            // softmax_{j+1} overlaps P_j V_j; the O rescale overlaps S_{j+1}. Rescale order: O holds
            // sum_{i<j} P_i V_i relative to m_{j-1}; alpha_j = 2^(c (m_{j-1} - m_j)) brings it to m_j
            // before P_j V_j (relative to m_j) is added.
            // The O rescale is skipped when no row of the warp changed its max (alpha == 1 exactly:
            // the product would leave O bit for bit unchanged), the usual case after the first tiles.
            auto rescale_o_if_needed = [&](const float (&a)[2]) NATTN_SM90_INLINE {
              if (__any_sync(0xffffffffu, a[0] != 1.f || a[1] != 1.f)) rescale_o(a);
            };
            bool pv_pending = false;  // P_{j-1} V_{j-1} issued, V_{j-1} not yet released
            cutlass::PipelineState<C::kStages> v_release = v_state;  // the V ring runs on across pairs
            // t_next: the walk position of S_{j+1}'s tile; its mask information (needed only by the
            // mask) is computed after the GEMMs are issued, while they run.
            auto step = [&](auto& p_cur, auto& p_next, int t_next) NATTN_SM90_INLINE {
              pipe_k.consumer_wait(k_state);
              turn_begin();
              detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
              warpgroup_wait<1>();  // P_{j-1} V_{j-1} done (S_{j+1} may run)
              warpgroup_fence_operand(tOrO);
              warpgroup_fence_operand(p_next);  // P_{j-1}'s registers, rewritten below
              if (pv_pending) {
                pipe_v.consumer_release(v_release);
                ++v_release;
              }
              rescale_o_if_needed(alpha);
              pipe_v.consumer_wait(v_state);
              detail::wgmma_batch<false, true>(mma_pv, p_cur, tOrV(_, _, _, v_state.index()), tOrO);
              turn_end();
              ++v_state;
              pv_pending = true;
              na::KvTile nxt;
              wg_next(t_next, nxt);
              warpgroup_wait<1>();  // S_{j+1} done (P_j V_j may run)
              warpgroup_fence_operand(tSrS);
              pipe_k.consumer_release(k_state);
              ++k_state;
              if (nxt.masked) apply_mask(nxt);
              detail::softmax_step<false>(tSrS, c, row_max, row_sum, alpha);
              convert_p(p_next);
            };
            auto last_step = [&](auto& p_cur) NATTN_SM90_INLINE {
              warpgroup_wait<0>();  // P_{n-2} V_{n-2} done
              warpgroup_fence_operand(tOrO);
              if (pv_pending) {
                pipe_v.consumer_release(v_release);
                ++v_release;
              }
              rescale_o_if_needed(alpha);
              final_pv(p_cur);
            };
            // Unrolled by two so that both P buffers are compile-time register arrays.
            // Every walk position is a tile (next_tile(t) is position t).
            for (;;) {
              if (t + 1 >= wg_end()) {
                last_step(tOrP);
                break;
              }
              step(tOrP, tOrP2, t + 1);
              ++t;
              if (t + 1 >= wg_end()) {
                last_step(tOrP2);
                break;
              }
              step(tOrP2, tOrP, t + 1);
              ++t;
            }
          } else {
            // Further tiles: S_j overlaps the P_{j-1} V_{j-1} product. Tile j's mask information is
            // computed after its GEMMs are issued (while both accumulators are in flight, so it is not
            // live across the issue: at head dim 256 that spilled).
            for (++t; t < wg_end(); ++t) {
              pipe_k.consumer_wait(k_state);
              turn_begin();
              detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
              pipe_v.consumer_wait(v_state);
              detail::wgmma_batch<false, true>(mma_pv, tOrP, tOrV(_, _, _, v_state.index()), tOrO);
              turn_end();
              wg_next(t, tile);
              warpgroup_wait<1>();  // S_j done (P_{j-1} V_{j-1} may still run)
              warpgroup_fence_operand(tSrS);
              pipe_k.consumer_release(k_state);
              ++k_state;
              if (tile.masked) apply_mask(tile);
              detail::softmax_step<false>(tSrS, c, row_max, row_sum, alpha);
              // NOTE: ptxas 13.0 hoists the wait below above the softmax (SASS: WARPGROUP.DEPBAR right
              // after the mask), so the intended overlap of softmax_j with P_{j-1} V_{j-1} inside one
              // warpgroup does not happen (kDbufP avoids this).
              warpgroup_wait<0>();  // P_{j-1} V_{j-1} done: O and P may be touched
              warpgroup_fence_operand(tOrO);
              warpgroup_fence_operand(tOrP);
              pipe_v.consumer_release(v_state);
              ++v_state;
              rescale_o(alpha);
              convert_p(tOrP);
            }
            final_pv(tOrP);
          }
        }  // t < wg_end()
        if constexpr (kNa) {  // the positions after this warpgroup's part of the walk
          skip_positions(walk_end() - max(t, wg_end()));
        }

        // ---- epilogue: O / l in the input dtype, LSE = ln(2) * (m * c + log2 l)
        float inv[2], lse[2];
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          const float l = detail::quad_sum(row_sum[r]);
          inv[r] = l > 0.f ? 1.f / l : 0.f;
          lse[r] = l > 0.f ? (row_max[r] * c + __log2f(l)) * 0.69314718055994531f : -INFINITY;
        }
        // The thread's indices, derived again from %tid.x: kept live across the mainloop they were
        // spilled at head dim 256 (recomputing them is a few integer instructions).
        const int ectid = detail::fresh_tid_x() - 128;  // 0..255, as ctid
        const int ecwg = ectid / 128;                   // as cwg
        Tensor tOcO = mma_pv.get_thread_slice(ectid).partition_C(make_identity_tensor(Shape<Int<kBM>, Int<D>>{}));
        const int erow = get<0>(tOcO(0));  // CTA tile row of the thread's first O (and S) row; the second is + 8
        T* o_base = p.o + batch * p.o_stride[0] + head * p.o_stride[2] + q_start * p.o_stride[1];
        // Where CTA tile row `lrow` (0..127) goes: false for padding rows; else the element offsets of
        // its O row (from o_base) and of its LSE (from the (batch, head) base). Sequence layout: row
        // m_block * 128 + lrow; direct NA: the row's grid coordinate, decoded as the TMA box laid it out.
        const int row_base = m_block() * kBM;  // sequence layout: the Q tile's first row (once per epilogue)
        const int seq_q_end = seq_q_of(pair);
        auto row_dest = [&](int lrow, int64_t& o_off, int64_t& l_off) NATTN_SM90_INLINE -> bool {
          if (direct) {
            o_off = l_off = 0;
            bool real = true;
            CUTE_UNROLL
            for (int i = 0; i < 3; ++i) {
              const int64_t x = nas.ctx.q0[i] + ((lrow >> p.na.q_shift[i]) & p.na.q_mask[i]);
              real = real && x < nas.ctx.qhi[i];
              o_off += x * p.na.o_sp[i];
              l_off += x * p.na.lse_sp[i];
            }
            return real;
          }
          const int grow = row_base + lrow;
          o_off = static_cast<int64_t>(grow) * p.o_stride[1];
          l_off = static_cast<int64_t>(grow) * p.lse_stride[1];
          return grow < seq_q_end;
        };
        detail::store_o<T, D, kBM, V::kSmemEpilogue && C::kBlockD == 64>(
            tOrO, tOcO, inv, o_base, direct ? (p.na.o_sp[0] | p.na.o_sp[1] | p.na.o_sp[2]) : p.o_stride[1],
            static_cast<uint32_t>(__cvta_generic_to_shared(ss.q)), ectid, erow, row_dest);
        if (p.lse != nullptr && (threadIdx.x & 3) == 0) {
          CUTE_UNROLL
          for (int r = 0; r < 2; ++r) {
            int64_t o_off, l_off;
            if (row_dest(erow + 8 * r, o_off, l_off))
              p.lse[batch * p.lse_stride[0] + head * p.lse_stride[2] + q_start * p.lse_stride[1] + l_off] = lse[r];
          }
        }
        // The Q buffer is free for the next pair once all of this warpgroup's threads are past the
        // epilogue (the last reads of sQ: the staged O); one arrive per warpgroup.
        detail::named_bar_sync(detail::kBarEpi + ecwg, 128);
        if ((ectid & 127) == 0) cutlass::arch::ClusterBarrier::arrive(&ss.q_empty);
        ++it;
      }  // pairs
      if (!next_unit([&] { detail::named_bar_sync(detail::kBarEpi + cwg, 128); }, (ctid & 127) == 0)) break;
      set_pair(pair_begin());  // NA: the unit's context takes its first pair's batch
    }
    if constexpr (V::kPingPong) {
      if (p.pingpong && cwg == 0) detail::named_bar_sync(detail::kBarTurn + 0, 256);  // warpgroup 1's last arrive
    }
  }
#endif
}

}  // namespace nattn::cuda::sm90
