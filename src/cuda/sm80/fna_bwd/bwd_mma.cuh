// Tensor-core backward kernels (fp16/bf16, SM80+): mma.sync m16n8k16 through the CuTe SM80 atoms,
// ldmatrix (.trans for the second GEMM of each pair), cp.async with zero fill, 2-stage walked
// tiles when shared memory allows. A CTA is 4 warps x 16 stationary rows; a walked tile of 64
// rows is processed in two 32-column halves so that S and dP stay small next to the fp32
// accumulators (dq: dQ; dkdv: dK and dV), which are written once at the end (no atomics).
#pragma once

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include "cuda/common/cuda_check.h"
#include "cuda/common/fast_math.cuh"
#include "cuda/common/tile_copy.cuh"
#include "cuda/common/tile_mask.cuh"
#include "cuda/sm80/fna_bwd/bwd_common.cuh"

namespace nattn::cuda::fna_bwd {

template <class T> struct Mma;
template <> struct Mma<__half> {
  using Atom = cute::SM80_16x8x16_F32F16F16F32_TN;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  using Atom = cute::SM80_16x8x16_F32BF16BF16F32_TN;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

constexpr int kMmaThreads = 128;
// Walked columns per step: 64 (the whole tile), or 32 (two halves) where the two dK/dV
// accumulators of head dim 128 leave no room for 64 columns of S and dP.
template <int HD, bool kDkdv> constexpr int sub_n() { return (!kDkdv || HD <= 64) ? 64 : 32; }

template <int HD> constexpr int mma_ld() { return HD + 8; }  // +16 bytes: conflict-free ldmatrix

// Copy kRows rows into smem (row stride LD), zero-filling columns >= ncols and rows for which
// row_fn returns false. cp.async when every row is 16-byte aligned, plain loads otherwise. A rolled
// loop: the dq kernel's 168 registers (3 CTAs per SM on the H100) depend on it.
template <class T, int HD, int LD, int kRows, class RowFn>
__device__ __forceinline__ void load_rows(T* smem, const T* gbase, int ncols, bool aligned, RowFn row_fn) {
  constexpr int E = 16 / sizeof(T);
  constexpr int kChunksPerRow = HD / E;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kMmaThreads == 0, "tile must split evenly over the threads");
#pragma unroll 1
  for (int it = 0; it < kChunks / kMmaThreads; ++it) {
    const int id = it * kMmaThreads + threadIdx.x;
    const int row = id / kChunksPerRow;
    const int col = (id % kChunksPerRow) * E;
    int64_t off = 0;
    const bool ok = row_fn(row, off) && col < ncols;
    T* dst = smem + row * LD + col;
    if (aligned) {
      const T* src = ok ? gbase + off + col : gbase;
      cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
          *reinterpret_cast<const cute::uint128_t*>(src), *reinterpret_cast<cute::uint128_t*>(dst), ok);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) dst[e] = (ok && col + e < ncols) ? gbase[off + col + e] : from_f<T>(0.f);
    }
  }
}

// The same copy unrolled (dkdv kernel's walked tiles): each thread keeps one 16-byte column chunk
// of rows r0, r0 + kRS, ..., the aligned test is outside the loop and row offsets become adds
// (fused-dQ backward 3% faster on the H100).
template <class T, int HD, int LD, int kRows, class RowFn>
__device__ __forceinline__ void load_rows_unrolled(T* smem, const T* gbase, int ncols, bool aligned, RowFn row_fn) {
  using Chunks = RowChunks<T, HD, kMmaThreads>;  // tile_copy.cuh
  constexpr int E = Chunks::kElems, kChunksPerRow = Chunks::kPerRow, kRS = Chunks::kRowStep;
  if (!aligned) {
    load_rows<T, HD, LD, kRows>(smem, gbase, ncols, false, row_fn);
    return;
  }
  const int col = (threadIdx.x % kChunksPerRow) * E;
  const int r0 = threadIdx.x / kChunksPerRow;
  const bool col_ok = col < ncols;
  cp_async_rows<T, HD, LD, kRows, kMmaThreads, kRows / kRS>(smem + r0 * LD + col, gbase, col, r0, col_ok, row_fn);
}

// ---- fused dQ (dkdv kernel with BwdParams::dq_accum) ----------------------------------------------

template <int kSubN> constexpr int ds_ld() { return kSubN + 8; }  // dS^T staging row: +16 bytes

// Where a half's dS^T [64 keys][kSubN queries] is staged: walked rows of the current buffer that
// nothing reads any more. Two halves (head dim 128): the half's own 32 rows of B2 (32 x (HD + 8)
// >= 64 x 40 elements; the other half's rows stay intact); one half (head dim <= 64): B1 and B2,
// contiguous (2 x 64 x (HD + 8) >= 64 x 72 elements).
template <class T, int HD, int kSubN>
__device__ __forceinline__ T* dq_stage(T* b1, int n0) {
  constexpr int LD = mma_ld<HD>();
  static_assert(kSubN == kTileN || (kTileN / 2) * LD >= kTileM * ds_ld<kSubN>(), "dS^T fits the half's B2 rows");
  static_assert(kSubN != kTileN || 2 * kTileN * LD >= kTileM * ds_ld<kSubN>(), "dS^T fits B1 and B2");
  return kSubN < kTileN ? b1 + kTileN * LD + n0 * LD : b1;
}

// dq_accum[q] += dS[q][:] K for the kSubN walked queries of one half. sds: dS^T [64 keys][ds_ld];
// sk: the CTA's keys [64][LD] (zero rows past the tile, so they add nothing); stat: the half's
// walked-row statistics (acc < 0: not a real query, skipped). The warps split the queries x
// head-dim tile: kWn head-dim slices, kWm query slices; fp32 atomics (the order of the additions
// varies).
template <class T, int HD, int kSubN>
__device__ __forceinline__ void fused_dq_tile(const T* sds, const T* sk, const ColStat* stat, float* accum, int warp,
                                              int lane) {
  using Op = Mma<T>;
  constexpr int LD = mma_ld<HD>();
  constexpr int kDsLd = ds_ld<kSubN>();
  constexpr int kWn = HD >= 64 ? 4 : 2;
  constexpr int kWm = 4 / kWn;
  constexpr int kCols = HD / kWn;        // head-dim columns per warp: 32 / 16 / 16
  constexpr int kPasses = kCols / 16;    // one pass per 16 columns, two n8 tiles (registers: the dK/dV accumulators stay live)
  constexpr int kMt = kSubN / 16 / kWm;  // m16 query tiles per warp
  static_assert(kPasses >= 1 && kMt >= 1, "warp tile");
  const int m0 = (warp / kWn) * (kMt * 16);
  const int gq = lane / 4, t4 = lane % 4;
#pragma unroll 1
  for (int pass = 0; pass < kPasses; ++pass) {
    const int c0 = (warp % kWn) * kCols + pass * 16;
    float acc[kMt][2][4];
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int j = 0; j < 2; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kTileM / 16; ++kk) {
      uint32_t b[4];  // K: 16 keys x the pass's 16 columns (n8 tiles 0 and 1)
      const int boff = (kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + c0 + 8 * (lane / 16);
      cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sk + boff), b[0], b[1], b[2], b[3]);
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt) {
        // A = dS (queries x keys) from dS^T: matrix i = lane / 8 covers queries +8 (i & 1), keys +8 (i >> 1).
        const int i = lane / 8;
        const int aoff = (kk * 16 + (i >> 1) * 8 + lane % 8) * kDsLd + m0 + mt * 16 + (i & 1) * 8;
        uint32_t a[4];
        cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sds + aoff), a[0], a[1], a[2], a[3]);
        float* o0 = acc[mt][0];
        float* o1 = acc[mt][1];
        Op::Atom::fma(o0[0], o0[1], o0[2], o0[3], a[0], a[1], a[2], a[3], b[0], b[1], o0[0], o0[1], o0[2], o0[3]);
        Op::Atom::fma(o1[0], o1[1], o1[2], o1[3], a[0], a[1], a[2], a[3], b[2], b[3], o1[0], o1[1], o1[2], o1[3]);
      }
    }
    // The atomics: thread (gq, t4) holds columns 2 t4 and 2 t4 + 1 of rows gq and gq + 8 (per n8
    // tile j). Lanes gq and gq ^ 1 swap one value so that each instruction covers whole 32-byte
    // sectors: first the even row of the pair (lane gq: column 2 t4, lane gq | 1: column 2 t4 + 1),
    // then the odd row (lane gq & ~1: column 2 t4, lane gq | 1: column 2 t4 + 1): 4 sectors of 8
    // floats per instruction instead of 8 half-filled ones.
    const bool odd = (gq & 1) != 0;
    // Every shuffle first, then the atomics: each atomic sits in its own divergent branch (a row may
    // be padding), which the compiler does not move a shuffle across, so shuffles interleaved with
    // the atomics each stall on their latency.
    float got[kMt][2][2];
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          // even lane sends (even row, 2 t4 + 1); odd lane sends (odd row, 2 t4).
          const float send = odd ? acc[mt][j][2 * r] : acc[mt][j][2 * r + 1];
          got[mt][r][j] = __shfl_xor_sync(0xffffffffu, send, 4);
        }
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int pair = m0 + mt * 16 + (gq & ~1) + 8 * r;  // the even row of this lane's row pair
        const int64_t base_even = stat[pair].acc, base_odd = stat[pair + 1].acc;
        const int col = c0 + 2 * t4 + (odd ? 1 : 0);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          // even lane: keeps (own row = even, column 2 t4); odd lane: keeps (own row = odd, column
          // 2 t4 + 1). Even lane: even row <- keep, odd row <- got (odd row, 2 t4); odd lane: even
          // row <- got (even row, 2 t4 + 1), odd row <- keep.
          const float keep = odd ? acc[mt][j][2 * r + 1] : acc[mt][j][2 * r];
          const float v_even = odd ? got[mt][r][j] : keep, v_odd = odd ? keep : got[mt][r][j];
          if (base_even >= 0) atomicAdd(accum + base_even + col + j * 8, v_even);
          if (base_odd >= 0) atomicAdd(accum + base_odd + col + j * 8, v_odd);
        }
      }
  }
}

template <class T, int HD>
constexpr int mma_smem_bytes(int stages) {
  return (2 + 2 * stages) * kTileM * mma_ld<HD>() * static_cast<int>(sizeof(T));
}

template <class T, int HD, bool kDkdv>
__global__ void __launch_bounds__(kMmaThreads) fna_bwd_mma_kernel(const __grid_constant__ BwdParams p, int stages) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static_assert(kTileM == kTileN, "square tiles");
  constexpr int LD = mma_ld<HD>();
  constexpr int kKSteps = HD / 16;  // k-steps of S = A1 B1^T and dP = A2 B2^T
  constexpr int kSubN = sub_n<HD, kDkdv>();
  constexpr int kNTiles = kSubN / 8;  // S n-tiles per step
  constexpr int kOTiles = HD / 8;     // accumulator n-tiles
  constexpr int kAcc = kDkdv ? 2 : 1;
  using Op = Mma<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sA1 = reinterpret_cast<T*>(smem_raw);
  T* sA2 = sA1 + kTileM * LD;
  T* sB = sA2 + kTileM * LD;  // stages x (B1, B2)
  __shared__ Info s_rinfo[kTileM];
  __shared__ int s_cok[2][kTileN];  // walked rows: a real token (their loads zero-fill the others)
  __shared__ ColStat s_cstat[kDkdv ? 2 : 1][kDkdv ? kTileN : 1];  // dkdv only (dq keeps its rows' statistics in registers)
  __shared__ RowOff s_coff[2][kTileN];
  __shared__ uint64_t s_rep[2];  // tile_mask repunits of the walked tile shape
  __shared__ uint2 s_qw[2][kTileM];  // per buffer and stationary row: its tile visibility word, by column quad
  __shared__ uint8_t s_cls[kDkdv ? 3 : 1][kMaxAxisTiles];  // dkdv: per-axis classes of the walked tiles
  __shared__ WalkedRel s_wrel[kDkdv ? kTileN : 1];         // dkdv: per-row terms of walked-row offsets

  const Ctx& c = shared_ctx<kDkdv>(p);
  if (!c.any_row) return;
  const bool fused_dq = kDkdv && p.dq_accum != nullptr;  // CTA-uniform

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, t4 = lane % 4;
  const int row0 = warp * 16;
  const bool aligned = p.aligned != 0;
  const T* gA1 = static_cast<const T*>(kDkdv ? (p.fmha || c.extra ? p.ek : p.k) : p.q);
  const T* gA2 = static_cast<const T*>(kDkdv ? (p.fmha || c.extra ? p.ev : p.v) : p.dout);

  load_rows<T, HD, LD, kTileM>(sA1, gA1, p.head_dim, aligned, [&](int r, int64_t& off) {
    RowAddr ad;
    Info inf;
    const bool ok = stationary_row<kDkdv, false>(p, c, r, ad, inf);
    off = ad.a1;
    return ok;
  });
  load_rows<T, HD, LD, kTileM>(sA2, gA2, p.head_dim_v, aligned, [&](int r, int64_t& off) {
    RowAddr ad;
    Info inf;
    const bool ok = stationary_row<kDkdv, false>(p, c, r, ad, inf);
    off = ad.a2;
    return ok;
  });
  cute::cp_async_fence();
  // Element masks of phase-A tiles (tile_mask.cuh): per stationary row and axis, the interval of
  // walked in-group coordinates it sees. dq: the query's window (as stationary_row leaves it).
  // dkdv: the queries whose window holds the key (sem::inverse_window), clipped to the walked box
  // (a sub-domain's box holds only the local queries); padding keys take the last real key's
  // interval (their K / V rows are zero and their dK / dV are never stored).
  const bool na_rows = !p.fmha && !c.extra;
  for (int r = tid; r < kTileM; r += kMmaThreads) {
    RowAddr ad;
    Info& ri = s_rinfo[r];
    stationary_row<kDkdv>(p, c, r, ad, ri);
    if (kDkdv && na_rows) {
      int a[3];
      delin_pow2(r, p.kv_shift, a);
#pragma unroll
      for (int i = 0; i < 3; ++i) {
        const int64_t key = sem::min64(c.olo[i] + a[i], c.ohi[i] - 1);
        const sem::Range w = sem::inverse_window(key, c.lg[i], c.ax[i]);
        ri.lo[i] = static_cast<int>(sem::max64(w.start, c.blo[i]));
        ri.hi[i] = static_cast<int>(sem::min64(w.end, c.bhi[i]));
      }
    }
  }
  if (tid == 0) {
    const tile_mask::Repunits rep = tile_mask::repunits(kDkdv ? p.q_shift : p.kv_shift);
    s_rep[0] = rep.rep1;
    s_rep[1] = rep.rep0;
  }
  // dkdv: per-axis tile classes once per CTA, so the walk (run by every thread per tile) reads three
  // bytes instead of classifying three axes from the shared-memory context (H100, 3-D 16x44x80:
  // fused-dQ backward 39.5 -> 36.9 ms). The dq kernel classifies on the fly: with the cache ptxas
  // gave it 224 registers instead of 168, i.e. 2 CTAs per SM instead of 3.
  if (kDkdv) {
    fill_axis_classes<kDkdv>(p, c, s_cls, tid, kMmaThreads);
    fill_walked_rel<kMmaThreads>(p, s_wrel, tid);
  }
  const uint8_t(*walk_cls)[kMaxAxisTiles] = kDkdv ? s_cls : nullptr;
  __syncthreads();  // s_rinfo, s_rep and s_cls before issue() and the walk use them
  // dq: the statistics of this thread's two query rows.
  float rl2[2] = {0.f, 0.f}, rdelta[2] = {0.f, 0.f};
  if (!kDkdv) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      RowAddr ad;
      Info inf;
      const bool ok = stationary_row<kDkdv>(p, c, row0 + gq + 8 * r, ad, inf);
      rl2[r] = INFINITY;
      if (ok) {
        rl2[r] = lse_log2(p.lse[ad.lsoff]);
        rdelta[r] = p.delta[(c.b * p.tokens + ad.tok) * p.heads + c.h];
      }
    }
  }

  float acc[kAcc][kOTiles][4];
#pragma unroll
  for (int a = 0; a < kAcc; ++a)
#pragma unroll
    for (int j = 0; j < kOTiles; ++j) acc[a][j][0] = acc[a][j][1] = acc[a][j][2] = acc[a][j][3] = 0.f;

  const T* gB1 = nullptr;
  const T* gB2 = nullptr;
  auto issue = [&](const Tile& tile, int buf) {
    T* b1 = sB + buf * 2 * kTileN * LD;
    T* b2 = b1 + kTileN * LD;
    if (kDkdv) {
      gB1 = static_cast<const T*>(p.q);
      gB2 = static_cast<const T*>(p.dout);
    } else {
      gB1 = static_cast<const T*>(tile.phase_a ? p.k : p.ek);
      gB2 = static_cast<const T*>(tile.phase_a ? p.v : p.ev);
    }
    // Row addresses, mask info and statistics first (one thread per row), then the copies.
    // Threads 64-127 meanwhile build a masked tile's visibility words, one stationary row each,
    // transposed by column quad, into s_qw[buf] (tile_mask.cuh). Phase A: the per-axis intervals
    // of s_rinfo. Phase B (64 consecutive walked indices from n0): the real ones (< nb_len) and,
    // FMHA causal, query index >= key index.
    static_assert(kMmaThreads == kTileN + kTileM, "threads 0-63: walked rows; 64-127: stationary rows");
    if (tid < kTileN) {
      fill_cols_off<kDkdv, kTileN>(p, c, tile, s_cok[buf], s_cstat[kDkdv ? buf : 0], s_coff[buf], s_wrel);
    } else if (tile.masked) {
      const int r = tid - kTileN;
      const Info& ri = s_rinfo[r];
      uint64_t vis;
      if (tile.phase_a) {
        vis = tile_mask::tile_visibility(ri.lo, ri.hi, tile.c, kDkdv ? p.q_shift : p.kv_shift, s_rep[0], s_rep[1]);
      } else {
        auto cl = [](int64_t v) { return static_cast<int>(sem::min64(sem::max64(v, 0), kTileN)); };
        int64_t lo = 0, hi = c.nb_len - tile.n0;
        if (p.fmha && p.fmha_causal) {
          if (kDkdv)
            lo = ri.qi - tile.n0;  // queries at or after the key
          else
            hi = sem::min64(hi, ri.qi + 1 - tile.n0);  // keys up to the query
        }
        vis = tile_mask::bit_range(cl(lo), cl(hi));
      }
      uint32_t w0, w1;
      tile_mask::quad_transpose(vis, w0, w1);
      s_qw[buf][r] = make_uint2(w0, w1);
    }
    __syncthreads();
    const int* real = s_cok[buf];
    const RowOff* roff = s_coff[buf];
    auto row_b1 = [&](int kk, int64_t& off) {
      off = roff[kk].b1;
      return real[kk] != 0;
    };
    auto row_b2 = [&](int kk, int64_t& off) {
      off = roff[kk].b2;
      return real[kk] != 0;
    };
    if (kDkdv) {
      load_rows_unrolled<T, HD, LD, kTileN>(b1, gB1, p.head_dim, aligned, row_b1);
      load_rows_unrolled<T, HD, LD, kTileN>(b2, gB2, p.head_dim_v, aligned, row_b2);
    } else {
      load_rows<T, HD, LD, kTileN>(b1, gB1, p.head_dim, aligned, row_b1);
      load_rows<T, HD, LD, kTileN>(b2, gB2, p.head_dim_v, aligned, row_b2);
    }
    cute::cp_async_fence();
  };

  const int64_t total = walk_total<kDkdv>(c);
  Tile cur;
  int64_t t = next_tile<kDkdv>(p, c, 0, cur, walk_cls);
  int buf = 0;
  if (t < total) issue(cur, 0);

  while (t < total) {
    Tile nxt;
    const int64_t tn = next_tile_after<kDkdv>(p, c, t + 1, cur, nxt, walk_cls);
    if (stages == 2 && tn < total) {
      issue(nxt, buf ^ 1);
      cute::cp_async_wait<1>();
    } else {
      cute::cp_async_wait<0>();
    }
    __syncthreads();
    const T* sB1 = sB + buf * 2 * kTileN * LD;
    const T* sB2 = sB1 + kTileN * LD;
#pragma unroll 1
    for (int half = 0; half < kTileN / kSubN; ++half) {
      const int n0 = half * kSubN;
      // Masked tile: bit 16 r + 2 j + e of hmask = the half's walked column 8 j + 2 t4 + e is seen by
      // stationary row row0 + gq + 8 r (row words from s_qw, built when the tile was issued).
      uint32_t hmask = 0;
      if (cur.masked) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint2 w = s_qw[buf][row0 + gq + 8 * r];
          const uint32_t x = (t4 & 2) ? w.y : w.x;
          hmask |= ((t4 & 1) ? (x >> 16) : (x & 0xffffu)) << (16 * r);
        }
        hmask >>= n0 / 4;  // the half's columns from bit 0 (row gq) / 16 (row gq + 8)
      }
      float s[kNTiles][4], dp[kNTiles][4];
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
      // S = A1 B1^T and dP = A2 B2^T (16 rows x 32 columns per warp).
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        uint32_t a[4], a2[4];
        {
          const int off = (row0 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + ks * 16 + 8 * (lane / 16);
          cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sA1 + off), a[0], a[1], a[2], a[3]);
          cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sA2 + off), a2[0], a2[1], a2[2],
                                        a2[3]);
        }
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          uint32_t b[4], b2[4];
          const int off = (n0 + np * 16 + (lane % 8) + 8 * (lane / 16)) * LD + ks * 16 + 8 * ((lane / 8) % 2);
          cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sB1 + off), b[0], b[1], b[2], b[3]);
          cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(sB2 + off), b2[0], b2[1], b2[2],
                                        b2[3]);
          float* s0 = s[2 * np];
          float* s1 = s[2 * np + 1];
          float* d0 = dp[2 * np];
          float* d1 = dp[2 * np + 1];
          Op::Atom::fma(s0[0], s0[1], s0[2], s0[3], a[0], a[1], a[2], a[3], b[0], b[1], s0[0], s0[1], s0[2], s0[3]);
          Op::Atom::fma(s1[0], s1[1], s1[2], s1[3], a[0], a[1], a[2], a[3], b[2], b[3], s1[0], s1[1], s1[2], s1[3]);
          Op::Atom::fma(d0[0], d0[1], d0[2], d0[3], a2[0], a2[1], a2[2], a2[3], b2[0], b2[1], d0[0], d0[1], d0[2],
                        d0[3]);
          Op::Atom::fma(d1[0], d1[1], d1[2], d1[3], a2[0], a2[1], a2[2], a2[3], b2[2], b2[3], d1[0], d1[1], d1[2],
                        d1[3]);
        }
      }
      // P = exp2(S * scale * log2e - LSE * log2e) (0 where masked); dS = P (dP - delta).
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int col = n0 + j * 8 + 2 * t4 + (e % 2);
          const float l2 = kDkdv ? lse_log2(s_cstat[kDkdv ? buf : 0][kDkdv ? col : 0].lse) : rl2[r];
          const float dl = kDkdv ? s_cstat[kDkdv ? buf : 0][kDkdv ? col : 0].delta : rdelta[r];
          float pr = fast_exp2(s[j][e] * p.scale_log2 - l2);
          if (cur.masked && ((hmask >> (16 * r + 2 * j + (e % 2))) & 1u) == 0) pr = 0.f;
          s[j][e] = pr;
          dp[j][e] = pr * (dp[j][e] - dl);
        }
      // dS in 16 bits, two elements per word (row r of n-tile j): the A operand below and, with a
      // fused dQ, what is staged in shared memory afterwards (half the registers of fp32 dS).
      uint32_t ds_pk[kNTiles][2];
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        ds_pk[j][0] = Op::pack(dp[j][0], dp[j][1]);
        ds_pk[j][1] = Op::pack(dp[j][2], dp[j][3]);
      }
      // acc1 += dS B1 (dq: dS K; dkdv: dS^T Q); dkdv: acc2 += P B2 (P^T dO).
#pragma unroll
      for (int kk = 0; kk < kSubN / 16; ++kk) {
        uint32_t ad[4], ap[4];
        ad[0] = ds_pk[2 * kk][0];
        ad[1] = ds_pk[2 * kk][1];
        ad[2] = ds_pk[2 * kk + 1][0];
        ad[3] = ds_pk[2 * kk + 1][1];
        if (kDkdv) {
          ap[0] = Op::pack(s[2 * kk][0], s[2 * kk][1]);
          ap[1] = Op::pack(s[2 * kk][2], s[2 * kk][3]);
          ap[2] = Op::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
          ap[3] = Op::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
#pragma unroll
        for (int np = 0; np < kOTiles / 2; ++np) {
          const int off = (n0 + kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + np * 16 + 8 * (lane / 16);
          uint32_t b[4];
          cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sB1 + off), b[0], b[1], b[2], b[3]);
          float* o0 = acc[0][2 * np];
          float* o1 = acc[0][2 * np + 1];
          Op::Atom::fma(o0[0], o0[1], o0[2], o0[3], ad[0], ad[1], ad[2], ad[3], b[0], b[1], o0[0], o0[1], o0[2], o0[3]);
          Op::Atom::fma(o1[0], o1[1], o1[2], o1[3], ad[0], ad[1], ad[2], ad[3], b[2], b[3], o1[0], o1[1], o1[2], o1[3]);
          if (kDkdv) {
            uint32_t bv[4];
            cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(sB2 + off), bv[0], bv[1], bv[2],
                                          bv[3]);
            float* v0 = acc[kAcc - 1][2 * np];
            float* v1 = acc[kAcc - 1][2 * np + 1];
            Op::Atom::fma(v0[0], v0[1], v0[2], v0[3], ap[0], ap[1], ap[2], ap[3], bv[0], bv[1], v0[0], v0[1], v0[2],
                          v0[3]);
            Op::Atom::fma(v1[0], v1[1], v1[2], v1[3], ap[0], ap[1], ap[2], ap[3], bv[2], bv[3], v1[0], v1[1], v1[2],
                          v1[3]);
          }
        }
      }
      if (kDkdv && fused_dq) {
        // dQ of this half's walked queries: dQ[q][:] += sum over the CTA's keys of dS[q][key] K[key][:].
        // dS^T (this warp's 16 keys x kSubN queries, packed in ds_pk) goes to shared memory, into walked
        // rows of this buffer that no warp reads any more (barrier first), so that each warp can take
        // all 64 keys for a slice of the dQ tile; the products are added to dq_accum atomically.
        T* sds = dq_stage<T, HD, kSubN>(sB + buf * 2 * kTileN * LD, n0);
        __syncthreads();  // every warp is past its reads of those walked rows
#pragma unroll
        for (int j = 0; j < kNTiles; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int key = row0 + gq + 8 * r, q = j * 8 + 2 * t4;
            *reinterpret_cast<uint32_t*>(sds + key * ds_ld<kSubN>() + q) = ds_pk[j][r];
          }
        __syncthreads();
        fused_dq_tile<T, HD, kSubN>(sds, sA1, s_cstat[kDkdv ? buf : 0] + n0, p.dq_accum, warp, lane);
      }
    }
    __syncthreads();  // every warp is done with this buffer
    if (stages != 2 && tn < total) issue(nxt, buf);
    if (stages == 2) buf ^= 1;
    cur = nxt;
    t = tn;
  }
  cute::cp_async_wait<0>();

  // Epilogue: dq: dQ = scale * acc; dkdv: dK = scale * acc[0], dV = acc[1].
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    RowAddr ad;
    Info inf;
    if (!stationary_row<kDkdv, false>(p, c, row0 + gq + 8 * r, ad, inf)) continue;
    T* g1 = static_cast<T*>(kDkdv ? (p.fmha || c.extra ? p.dek : p.dk) : p.dq);
    T* g2 = static_cast<T*>(kDkdv ? (p.fmha || c.extra ? p.dev : p.dv) : nullptr);
#pragma unroll
    for (int j = 0; j < kOTiles; ++j) {
      const int col = j * 8 + 2 * t4;
      if (col < p.head_dim) {
        g1[ad.g1 + col] = from_f<T>(acc[0][j][2 * r] * p.scale);
        g1[ad.g1 + col + 1] = from_f<T>(acc[0][j][2 * r + 1] * p.scale);
      }
      if (kDkdv && col < p.head_dim_v) {
        g2[ad.g2 + col] = from_f<T>(acc[kAcc - 1][j][2 * r]);
        g2[ad.g2 + col + 1] = from_f<T>(acc[kAcc - 1][j][2 * r + 1]);
      }
    }
  }
#endif
}

template <class T, int HD>
void launch_mma(const BwdParams& p, bool dkdv, int stages, dim3 grid, cudaStream_t stream) {
  const auto kernel = dkdv ? fna_bwd_mma_kernel<T, HD, true> : fna_bwd_mma_kernel<T, HD, false>;
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        mma_smem_bytes<T, HD>(stages)));
  // One walked-tile buffer instead of two where that lets more CTAs share an SM: the kernels are
  // latency-bound, and another resident CTA hides a tile's loads better than the second buffer
  // (H100, dq kernel at head dim 128: 3 CTAs with 1 stage vs 2 with 2 stages, 3-D backward 453 ->
  // 415 ms). The dkdv kernel's registers allow 2 CTAs either way there.
  if (stages == 2) {
    int two = 0, one = 0;
    NATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&two, kernel, kMmaThreads, mma_smem_bytes<T, HD>(2)));
    NATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&one, kernel, kMmaThreads, mma_smem_bytes<T, HD>(1)));
    if (one > two) stages = 1;
  }
  kernel<<<grid, kMmaThreads, mma_smem_bytes<T, HD>(stages), stream>>>(p, stages);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna_bwd
