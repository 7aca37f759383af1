// Tensor-core forward kernel (fp16/bf16, SM80+), FA2 structure: a CTA of BM queries (BM = 64 or
// 128: a 1-D/2-D/3-D box, the Q tile of the config) is BM/32 warps x 32 query rows (head dim <= 128)
// or BM/16 warps x 16 rows (256); KV tiles of kBlockN keys (boxes of the KV tile shape) are walked
// over the exact KV box of the CTA's windows, then the phase-B tokens (additional KV / FMHA keys);
// NA walks are listed in shared memory (the non-empty tiles, in order) before the tile loop.
// mma.sync m16n8k16 (CuTe SM80 atoms), ldmatrix (x4, .trans for V), cp.async with zero fill, two
// barriers per KV tile. Boundary tiles are masked with one 64-bit visibility mask per query row
// (built from per-axis bit ranges), interior tiles run unmasked. Online softmax in fp32 (log2
// domain), LSE output (natural log).
#pragma once

#include <climits>
#include <cstdlib>
#include <type_traits>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include "cuda/common/cuda_check.h"
#include "cuda/common/fast_math.cuh"
#include "cuda/common/tile_copy.cuh"
#include "cuda/common/tile_mask.cuh"
#include "cuda/sm80/fna_fwd/fna_common.cuh"
#include "cuda/sm80/fna_fwd/walk_bound.h"

namespace nattn::cuda::fna {

template <class T> struct MmaOp;
template <> struct MmaOp<__half> {
  using Atom = cute::SM80_16x8x16_F32F16F16F32_TN;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct MmaOp<__nv_bfloat16> {
  using Atom = cute::SM80_16x8x16_F32BF16BF16F32_TN;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// m16 row tiles per warp: 2 (32 query rows per warp: every K/V fragment read from shared memory
// feeds two MMAs) up to head dim 128; 1 (16 rows) at 256 for registers.
template <int HD> constexpr int mma_warp_m() { return HD <= 128 ? 2 : 1; }
template <int HD, int BM> constexpr int mma_threads() { return BM / (16 * mma_warp_m<HD>()) * 32; }

constexpr int kMaxAxisTiles = 256;  // per-axis tile classes cached in shared memory up to this count
constexpr int kLoadUnroll = 8;  // K/V tile load loop unrolled: row offsets become adds

// Extra per-CTA values of the tensor-core kernel (shared memory, written by thread 0).
struct MmaCtx {
  int64_t kb, vb;          // phase A: K/V offset of in-group coordinate 0 (batch, group, KV head)
  int64_t dk[3], dv[3];    // phase A: K/V offset step per in-group coordinate (dilation x stride)
  int64_t ekb, evb;        // phase B: offset of token 0 of the sequence
  int64_t ek1, ev1;        // phase B: per-token step
  uint64_t rep1, rep0;     // phase A: repunits that replicate axis-2 / axis-1,2 bit patterns
  bool cached;             // per-axis classes are in s_cls
};

// Class bits of KV tile m along axis i: 0 empty; else kAxisLive, plus kAxisMasked for a boundary
// or partial tile, plus kAxisPartial when the tile runs past the KV box (rows there are not read).
constexpr int kAxisLive = 1, kAxisMasked = 2, kAxisPartial = 4;
__device__ __forceinline__ int axis_class(const FwdParams& p, const Ctx& c, int i, int m) {
  const int64_t lo = c.blo[i] + static_cast<int64_t>(m) * p.kv_tile[i];
  const int64_t hi = sem::min64(lo + p.kv_tile[i], c.bhi[i]);
  const sem::TileClass cls = sem::classify(sem::Range{c.qlo[i], c.qhi[i]}, sem::Range{lo, hi}, c.lg[i], c.ax[i]);
  if (cls == sem::TileClass::empty) return 0;
  if (lo + p.kv_tile[i] > c.bhi[i]) return kAxisLive | kAxisMasked | kAxisPartial;
  return cls == sem::TileClass::interior ? kAxisLive : kAxisLive | kAxisMasked;
}

// A KV tile of the walk.
struct MTile {
  int c[3];     // phase A: in-group origin per axis
  int n0;       // phase B: first token
  bool phase_a;
  bool masked;   // element mask needed (boundary or partial tile)
  bool partial;  // phase A: runs past the KV box (its rows there are zero-filled, not read)
};

// Entries of the per-CTA tile list (shared memory, 20 bytes each) = walk positions per segment:
// sized so that the list does not lower the CTAs per SM of the head dim's kernels on the H100 (and,
// by the shared-memory arithmetic, not measured, on SM86/89's 100 KB: head dim 32 at 64 queries
// keeps 4 CTAs with 128 entries, would drop to 3 with 256).
template <int HD> constexpr int tile_list_cap() { return HD > 128 ? 128 : HD > 64 ? 512 : HD > 32 ? 256 : 128; }

// How the kernel walks its KV tiles (template parameter): standard attention (tile j computed from
// j); NA with the CTA's whole walk listed before the loop (the launch checks that the largest walk
// fits the list: max_walk_positions); NA listed one segment of the walk at a time. The two NA
// kinds are one code path; they are separate kernels because the segment loop around the tile
// loop costs the tile loop its register allocation (ptxas renames the O accumulators and copies
// them back every tile: 3D 16x44x80 9.24 ms listed at once vs 9.98 ms by segments, H100).
enum WalkKind : int { kWalkFmha = 0, kWalkListed = 1, kWalkSegments = 2 };

// The non-empty tiles at walk positions [seg, min(seg + kCap, total)) (position t < c.nA: phase-A
// tile t by linear index, last axis fastest; then phase-B tile t - c.nA), in walk order, written to
// list by all threads: each round classifies kNT consecutive positions (one per thread: the
// per-axis classes, cached in s_cls or computed) and compacts the non-empty ones by ballot. Returns
// their count. Called by every thread (it synchronises; the list is written only after the first
// barrier, so the previous segment's readers are done); s_wcount holds one count per warp.
template <int kNT, int kCap>
__device__ __forceinline__ int build_tile_list(const FwdParams& p, const Ctx& c, bool cached,
                                               const uint8_t (*s_cls)[kMaxAxisTiles], int seg, int total,
                                               MTile* list, int* s_wcount) {
  constexpr int kWarps = kNT / 32;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nA = static_cast<int>(c.nA), n1 = static_cast<int>(c.nt[1]), n2 = static_cast<int>(c.nt[2]);
  const int end = min(total, seg + kCap);
  int count = 0;
  for (int base = seg; base < end; base += kNT) {
    const int t = base + tid;
    MTile tile;
    bool keep = false;
    if (t < end && t < nA) {
      const int m[3] = {t / (n1 * n2), (t / n2) % n1, t % n2};
      int cl[3];
#pragma unroll
      for (int i = 0; i < 3; ++i) cl[i] = cached ? s_cls[i][m[i]] : axis_class(p, c, i, m[i]);
      keep = cl[0] != 0 && cl[1] != 0 && cl[2] != 0;
      tile.phase_a = true;
#pragma unroll
      for (int i = 0; i < 3; ++i) tile.c[i] = static_cast<int>(c.blo[i] + m[i] * p.kv_tile[i]);
      tile.n0 = 0;
      tile.masked = ((cl[0] | cl[1] | cl[2]) & kAxisMasked) != 0;
      tile.partial = ((cl[0] | cl[1] | cl[2]) & kAxisPartial) != 0;
    } else if (t < end) {
      keep = true;
      tile.phase_a = false;
      tile.c[0] = tile.c[1] = tile.c[2] = 0;
      tile.n0 = (t - nA) * kBlockN;
      tile.masked = tile.n0 + kBlockN > c.nb_len;
      tile.partial = false;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) s_wcount[warp] = __popc(ballot);
    __syncthreads();
    int before = count;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += s_wcount[w];
      count += s_wcount[w];
    }
    if (keep) list[before + __popc(ballot & ((1u << lane) - 1u))] = tile;
    __syncthreads();  // the list is complete; s_wcount is rewritten by the next round
  }
  return count;
}

// Load kRows rows of HD columns into smem (row stride LD elements); row r comes from
// g + off_fn(r) (false: zero row); columns >= ncols are zero. Each thread copies a fixed 16-byte
// column chunk of rows r0, r0 + kRS, ...: cp.async when every row is 16-byte aligned (the loop
// unrolled kUnroll times: row offsets become adds), element loads otherwise.
template <class T, int HD, int LD, int kRows, int kNT, int kUnroll, class OffFn>
__device__ __forceinline__ void load_tile(T* smem, const T* g, int ncols, bool aligned, OffFn off_fn) {
  using Chunks = RowChunks<T, HD, kNT>;  // tile_copy.cuh
  constexpr int E = Chunks::kElems, kCPR = Chunks::kPerRow, kRS = Chunks::kRowStep;
  const int col = (threadIdx.x % kCPR) * E;
  const int r0 = threadIdx.x / kCPR;
  const bool col_ok = col < ncols;
  T* dst0 = smem + r0 * LD + col;
  if (aligned) {
    cp_async_rows<T, HD, LD, kRows, kNT, kUnroll>(dst0, g, col, r0, col_ok, off_fn);
  } else {
#pragma unroll 1
    for (int it = 0; it < kRows / kRS; ++it) {
      int64_t off = 0;
      const bool ok = off_fn(r0 + it * kRS, off) && col_ok;
      T* dst = dst0 + it * kRS * LD;
#pragma unroll
      for (int e = 0; e < E; ++e) dst[e] = (ok && col + e < ncols) ? g[off + col + e] : from_float<T>(0.f);
    }
  }
}

// Load rows [0, kRows) of a row-strided source (row r at g0 + r * step; rows >= nrows are zero),
// the layout of phase-B tokens: one running pointer per thread, no per-row multiply.
template <class T, int HD, int LD, int kRows, int kNT>
__device__ __forceinline__ void load_rows_strided(T* smem, const T* g0, int64_t step, int nrows, int ncols,
                                                  bool aligned) {
  using Chunks = RowChunks<T, HD, kNT>;  // tile_copy.cuh
  constexpr int E = Chunks::kElems, kCPR = Chunks::kPerRow, kRS = Chunks::kRowStep;
  if (!aligned) {
    load_tile<T, HD, LD, kRows, kNT, 1>(smem, g0, ncols, false, [&](int r, int64_t& off) {
      off = r * step;
      return r < nrows;
    });
    return;
  }
  const int col = (threadIdx.x % kCPR) * E;
  const int r0 = threadIdx.x / kCPR;
  const bool col_ok = col < ncols;
  T* dst0 = smem + r0 * LD + col;
  const T* src = g0 + r0 * step + col;
  const int64_t jump = kRS * step;
#pragma unroll
  for (int it = 0; it < kRows / kRS; ++it) {
    const bool ok = r0 + it * kRS < nrows && col_ok;
    cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
        *reinterpret_cast<const cute::uint128_t*>(ok ? src : g0), *reinterpret_cast<cute::uint128_t*>(dst0 + it * kRS * LD),
        ok);
    src += jump;
  }
}

// kWalk (WalkKind): kWalkFmha is the walk of a standard-attention problem (p.fmha, phase-B tiles
// only), a kernel of its own so that its loop and the NA loop do not share one register allocation.
template <class T, int HD, int BM, int kWalk>
__global__ void __launch_bounds__(mma_threads<HD, BM>()) fna_fwd_mma_kernel(const __grid_constant__ FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool kFmha = kWalk == kWalkFmha;
  constexpr bool kKAfterSoftmax = !kFmha;  // where K_{j+1} starts loading (see the S block below)
  constexpr int BN = kBlockN;
  static_assert(BN == 64, "row masks are 64-bit");
  constexpr int LD = HD + 8;  // +16 bytes per row: conflict-free ldmatrix
  constexpr int kWM = mma_warp_m<HD>();
  constexpr int kNT = mma_threads<HD, BM>();
  constexpr int kKSteps = HD / 16;  // QK^T k-steps over the head dim
  constexpr int kNTiles = BN / 8;   // S n-tiles per m-tile
  constexpr int kOTiles = HD / 8;   // O n-tiles per m-tile
  using Op = MmaOp<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BM * LD;
  T* sV = sK + BN * LD;
  __shared__ RowWin s_win[BM];
  __shared__ int64_t s_krel[BN], s_vrel[BN];
  __shared__ uint8_t s_cls[3][kMaxAxisTiles];
  __shared__ MmaCtx s_x;

  const Ctx& c = shared_ctx(p);
  if (!c.any_row) return;

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, t4 = lane % 4;
  const int row0 = warp * 16 * kWM;  // first query row of the warp
  const bool aligned = p.aligned != 0;

  // Q tile.
  load_tile<T, HD, LD, BM, kNT, 1>(sQ, static_cast<const T*>(p.q), p.head_dim, aligned, [&](int r, int64_t& off) {
    int64_t xq[3];
    const bool ok = row_coords(p, c, r, xq);
    off = offset5(p.qs, c.b, xq, c.h);
    return ok;
  });
  cute::cp_async_fence();

  // Per-CTA tables: row windows, in-tile key offsets, per-axis tile classes, base offsets.
  for (int r = tid; r < BM; r += kNT) row_window(p, c, r, s_win[r]);
  if (!p.fmha) {
    for (int kk = tid; kk < BN; kk += kNT) {
      int a[3];
      delin_pow2(kk, p.kv_shift, a);
      int64_t rk = 0, rv = 0;
      for (int i = 0; i < 3; ++i) {
        rk += a[i] * p.dilation[i] * p.ks[1 + i];
        rv += a[i] * p.dilation[i] * p.vs[1 + i];
      }
      s_krel[kk] = rk;
      s_vrel[kk] = rv;
    }
  }
  const bool cached = c.nt[0] <= kMaxAxisTiles && c.nt[1] <= kMaxAxisTiles && c.nt[2] <= kMaxAxisTiles;
  if (cached && c.nA > 0) {
    const int n0 = static_cast<int>(c.nt[0]), n1 = static_cast<int>(c.nt[1]), n2 = static_cast<int>(c.nt[2]);
    for (int id = tid; id < n0 + n1 + n2; id += kNT) {
      const int i = id < n0 ? 0 : id < n0 + n1 ? 1 : 2;
      const int m = id - (i == 0 ? 0 : i == 1 ? n0 : n0 + n1);
      s_cls[i][m] = static_cast<uint8_t>(axis_class(p, c, i, m));
    }
  }
  if (tid == 0) {
    MmaCtx x;
    int64_t kb = c.b * p.ks[0] + c.hk * p.ks[4], vb = c.b * p.vs[0] + c.hk * p.vs[4];
    for (int i = 0; i < 3; ++i) {
      kb += (c.g[i] - p.kv_origin[i]) * p.ks[1 + i];  // in-group coordinate 0 in local K/V coordinates
      vb += (c.g[i] - p.kv_origin[i]) * p.vs[1 + i];
      x.dk[i] = p.dilation[i] * p.ks[1 + i];
      x.dv[i] = p.dilation[i] * p.vs[1 + i];
    }
    x.kb = kb;
    x.vb = vb;
    x.ekb = c.b * p.eks[0] + c.kvbase * p.eks[1] + c.hk * p.eks[2];
    x.evb = c.b * p.evs[0] + c.kvbase * p.evs[1] + c.hk * p.evs[2];
    x.ek1 = p.eks[1];
    x.ev1 = p.evs[1];
    const tile_mask::Repunits rep = tile_mask::repunits(p.kv_shift);
    x.rep1 = rep.rep1;
    x.rep0 = rep.rep0;
    x.cached = cached;
    s_x = x;
  }
  __syncthreads();
  const MmaCtx& x = s_x;

  // Loads of a tile's K or V rows (false: the row is outside the box / past the tokens). Every
  // value kept in shared memory (tile, context) is read into registers once per load: the copy
  // loop's cp.async statements clobber memory, so a read inside the loop is repeated per row.
  auto load_kv = [&](const MTile& tile_smem, T* dst, const void* ga, const void* gb, int ncols, int64_t a_base,
                     const int64_t* a_step, const int64_t* a_rel, int64_t b_base, int64_t b_step) {
    const MTile tile = tile_smem;
    if (tile.phase_a) {
      const T* g = static_cast<const T*>(ga);
      const int64_t base = a_base + tile.c[0] * a_step[0] + tile.c[1] * a_step[1] + tile.c[2] * a_step[2];
      // Only partial tiles test their rows against the box; a boundary tile lies inside it (its
      // mask is the softmax's business): 3D 16x44x80 9.32 -> 9.21 ms, H100, bench/RESULTS.md.
      if (!tile.partial) {
        load_tile<T, HD, LD, BN, kNT, kLoadUnroll>(dst, g, ncols, aligned, [&](int kk, int64_t& off) {
          off = base + a_rel[kk];
          return true;
        });
      } else {
        const int e0 = static_cast<int>(c.bhi[0]) - tile.c[0], e1 = static_cast<int>(c.bhi[1]) - tile.c[1],
                  e2 = static_cast<int>(c.bhi[2]) - tile.c[2];
        load_tile<T, HD, LD, BN, kNT, kLoadUnroll>(dst, g, ncols, aligned, [&](int kk, int64_t& off) {
          off = base + a_rel[kk];
          int a[3];
          delin_pow2(kk, p.kv_shift, a);
          return a[0] < e0 && a[1] < e1 && a[2] < e2;
        });
      }
    } else {
      load_rows_strided<T, HD, LD, BN, kNT>(dst, static_cast<const T*>(gb) + b_base + tile.n0 * b_step, b_step,
                                            static_cast<int>(c.nb_len) - tile.n0, ncols, aligned);
    }
  };
  auto load_k = [&](const MTile& tile) {
    load_kv(tile, sK, p.k, p.ek, p.head_dim, x.kb, x.dk, s_krel, x.ekb, x.ek1);
  };
  auto load_v = [&](const MTile& tile) {
    load_kv(tile, sV, p.v, p.ev, p.head_dim_v, x.vb, x.dv, s_vrel, x.evb, x.ev1);
  };

  float o[kWM][kOTiles][4];
#pragma unroll
  for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
    for (int j = 0; j < kOTiles; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float m[kWM][2], l[kWM][2];
#pragma unroll
  for (int mt = 0; mt < kWM; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

  // NA walks: the non-empty tiles of the walk (kWalkSegments: of each segment of kListCap walk
  // positions) are listed in shared memory by all threads before the tile loop, so that no thread's
  // per-tile walk sits between the loop's barriers (thread 0 walked there before: 3D 16x44x80
  // 9.75-9.95 -> 9.23-9.27 ms, H100, bench/RESULTS.md).
  constexpr int kListCap = tile_list_cap<HD>();
  __shared__ MTile s_list[kFmha ? 1 : kListCap];
  __shared__ int s_wcount[kNT / 32];
  const int walk_total = kFmha ? 0 : static_cast<int>(c.nA + c.nB);
  // The launch picked kWalkListed from the largest walk (walk_bound.h); a CTA past the list would
  // skip tiles, so that broken invariant stops the kernel (a launch error) instead.
  if (kWalk == kWalkListed && walk_total > kListCap) __trap();
  // FMHA walks (phase B only: tile j = tokens 64 j ..) need no walk state: every thread computes its
  // tile from j, so no thread's per-tile work (thread 0's walk) sits between two barriers (dense
  // forward, 16K tokens: 6.73-6.89 -> 6.39-6.48 ms, bench/RESULTS.md).
  const int fm_tiles = static_cast<int>(c.nB), fm_len = static_cast<int>(c.nb_len);
  const int fm_causal_row = p.fmha && p.fmha_causal ? static_cast<int>(c.q_row0) : INT_MAX;
  auto fm_tile = [&](int j) {
    MTile t;
    t.phase_a = false;
    t.n0 = j * BN;
    t.masked = t.n0 + BN > fm_len || t.n0 + BN - 1 > fm_causal_row;
    return t;
  };
  for (int seg = 0;; seg += kListCap) {  // NA: one pass per segment of the walk; FMHA: one pass
    const int n_tiles =
        kFmha ? fm_tiles : build_tile_list<kNT, kListCap>(p, c, x.cached, s_cls, seg, walk_total, s_list, s_wcount);
    int j = 0;
    if (n_tiles > 0) load_k(kFmha ? fm_tile(0) : s_list[0]);
    cute::cp_async_fence();

    while (j < n_tiles) {
      MTile fm_cur;
      if (kFmha) fm_cur = fm_tile(j);
      // NA: read from shared memory where used (no tile registers); FMHA: computed, in registers.
      const MTile& cur = kFmha ? fm_cur : s_list[j];
      cute::cp_async_wait<0>();
      __syncthreads();  // K_j (and Q) landed; every warp is done with V_{j-1}
      load_v(cur);
      cute::cp_async_fence();

      uint32_t cmask[kWM];  // element mask bits of the thread's rows (masked tiles; built below)
      // The scale is folded into the exponent, p = 2^(s*sc - ref) with ref = max(s)*sc, when it is
      // positive (masked scores are -inf either way); otherwise S is scaled first (sc = 1).
      const bool fold = p.scale_log2 > 0.f;
      const float sc = fold ? p.scale_log2 : 1.f;

      // S = Q K^T for 16 query rows (m-tile mt) x BN keys (s[j]: n-tile j, thread rows gq / gq + 8).
      const T* ksrc = sK + ((lane % 8) + 8 * (lane / 16)) * LD + 8 * ((lane / 8) % 2);
      auto qsrc = [&](int mt, int ks) {
        return sQ + (row0 + mt * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + ks * 16 + 8 * (lane / 16);
      };
      auto mma_s = [&](float (*s)[4], const uint32_t* a, const uint32_t* b) {
        Op::Atom::fma(s[0][0], s[0][1], s[0][2], s[0][3], a[0], a[1], a[2], a[3], b[0], b[1], s[0][0], s[0][1],
                      s[0][2], s[0][3]);
        Op::Atom::fma(s[1][0], s[1][1], s[1][2], s[1][3], a[0], a[1], a[2], a[3], b[2], b[3], s[1][0], s[1][1],
                      s[1][2], s[1][3]);
      };
      // Scale / mask, online softmax of one m-tile; P packed to 16-bit A fragments (pk[kk]: the A
      // operand of key step kk).
      auto softmax = [&](int mt, float (*s)[4], uint32_t (*pkm)[4]) {
        if (!fold) {
#pragma unroll
          for (int j = 0; j < kNTiles; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] *= p.scale_log2;
        }
        if (cur.masked) {
          // Bit order (row half, n-tile, column pair) so that consecutive bits mask consecutive
          // elements: ptxas then moves them to predicates 7 at a time (R2P) instead of one test each.
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int j = 0; j < kNTiles; ++j)
#pragma unroll
              for (int e = 0; e < 2; ++e)
                if (!(cmask[mt] & (1u << (r * 16 + 2 * j + e)))) s[j][2 * r + e] = -INFINITY;
        }
        // Lazy rescaling: the reference max of a row only moves when the tile's max exceeds it by more
        // than kLazy (log2 units), so most tiles skip the O rescale (a warp-uniform vote). Exact: O
        // and l share the reference, P <= 2^kLazy stays well inside the 16-bit range.
        constexpr float kLazy = 8.f;
        float mx[2];
        bool need = false;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          // A tree (depth 4, not a chain of 8): the max is exact in any order.
          float t[kNTiles];
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) t[j] = fmaxf(s[j][2 * r], s[j][2 * r + 1]);
#pragma unroll
          for (int w = kNTiles / 2; w >= 1; w /= 2)
#pragma unroll
            for (int j = 0; j < w; ++j) t[j] = fmaxf(t[j], t[j + w]);
          float v = t[0];
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
          mx[r] = v * sc;
          need = need || mx[r] > m[mt][r] + kLazy;
        }
        if (__any_sync(0xffffffffu, need)) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float mn = fmaxf(m[mt][r], mx[r]);
            const float alpha = mn == -INFINITY ? 1.f : fast_exp2(m[mt][r] - mn);
            m[mt][r] = mn;
            l[mt][r] *= alpha;
#pragma unroll
            for (int j = 0; j < kOTiles; ++j) {
              o[mt][j][2 * r] *= alpha;
              o[mt][j][2 * r + 1] *= alpha;
            }
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float ref = m[mt][r] == -INFINITY ? 0.f : m[mt][r];
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) {
            const float p0 = fast_exp2(fmaf(s[j][2 * r], sc, -ref));
            const float p1 = fast_exp2(fmaf(s[j][2 * r + 1], sc, -ref));
            sum += p0 + p1;
            pkm[j / 2][(j % 2) * 2 + r] = Op::pack(p0, p1);
          }
          l[mt][r] += sum;
        }
      };

      // S of every m-tile at once: each K fragment read from shared memory feeds kWM MMAs. Then the
      // CTA syncs and K_{j+1} starts loading: NA kernels after the softmax (overlapping P V), FMHA
      // right after S (FA2's order, overlapping the softmax too). In the NA kernels the 3-D row
      // address code of that load ran while S was live in FA2's order and ptxas spilled ~100 bytes
      // inside the loop; after the softmax they have no spills: 3D 16x44x80 9.34 -> 8.86 ms,
      // 30x48x80 78.1 -> 73.8 ms, 1D 32K k2048 2.24 -> 2.09 ms (H100). The FMHA kernel's running-
      // pointer load is cheap: there FA2's order is 2.5% faster (dense 16K tokens 6.33 vs 6.49 ms).
      uint32_t pk[kWM][BN / 16][4];
      {
        float s[kWM][kNTiles][4];
#pragma unroll
        for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          uint32_t a[kWM][4];
#pragma unroll
          for (int mt = 0; mt < kWM; ++mt)
            cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(qsrc(mt, ks)), a[mt][0], a[mt][1],
                                          a[mt][2], a[mt][3]);
#pragma unroll
          for (int np = 0; np < kNTiles / 2; ++np) {
            uint32_t b[4];
            const T* kp = ksrc + np * 16 * LD + ks * 16;
            cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(kp), b[0], b[1], b[2], b[3]);
#pragma unroll
            for (int mt = 0; mt < kWM; ++mt) mma_s(&s[mt][2 * np], a[mt], b);
          }
        }
        // Element mask of a boundary tile, built while the S MMAs drain: one 64-bit visibility word
        // per query row (bit kk: key kk of the tile, from per-axis bit ranges), built once per row
        // (lane l: row l of the warp), transposed by column quad and fetched by the four threads of
        // the row (thread (gq, t4) holds keys j*8 + 2*t4 + e -> bit 2j + e; row gq + 8 in the upper
        // half).
        if (cur.masked) {
          uint64_t vis;
          {
            const RowWin& rw = s_win[row0 + lane % (16 * kWM)];
            if (cur.phase_a) {
              vis = tile_mask::tile_visibility(rw.lo, rw.hi, cur.c, p.kv_shift, x.rep1, x.rep0);
            } else {
              int lim = static_cast<int>(c.nb_len) - cur.n0;
              if (p.fmha && p.fmha_causal) lim = min(lim, rw.qi + 1 - cur.n0);
              vis = tile_mask::bit_range(0, min(max(lim, 0), BN));
            }
          }
          uint32_t w0, w1;
          tile_mask::quad_transpose(vis, w0, w1);
#pragma unroll
          for (int mt = 0; mt < kWM; ++mt) cmask[mt] = tile_mask::quad_row_bits(w0, w1, mt * 16 + gq, t4);
        }
        auto next_k = [&] {
          cute::cp_async_wait<0>();
          __syncthreads();  // V_j landed; every warp is done with K_j
          if (j + 1 < n_tiles) load_k(kFmha ? fm_tile(j + 1) : s_list[j + 1]);
          cute::cp_async_fence();
        };
        if (!kKAfterSoftmax) next_k();
#pragma unroll
        for (int mt = 0; mt < kWM; ++mt) softmax(mt, s[mt], pk[mt]);
        if (kKAfterSoftmax) next_k();
      }

      // O += P V (every V fragment feeds the MMAs of every m-tile).
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < kOTiles / 2; ++np) {
          uint32_t b[4];
          const T* src = sV + (kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + np * 16 + 8 * (lane / 16);
          cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(src), b[0], b[1], b[2], b[3]);
#pragma unroll
          for (int mt = 0; mt < kWM; ++mt) {
            float* o0 = o[mt][2 * np];
            float* o1 = o[mt][2 * np + 1];
            const uint32_t* a = pk[mt][kk];
            Op::Atom::fma(o0[0], o0[1], o0[2], o0[3], a[0], a[1], a[2], a[3], b[0], b[1], o0[0], o0[1], o0[2], o0[3]);
            Op::Atom::fma(o1[0], o1[1], o1[2], o1[3], a[0], a[1], a[2], a[3], b[2], b[3], o1[0], o1[1], o1[2], o1[3]);
          }
        }
      }
      ++j;
    }
    if (kWalk != kWalkSegments || seg + kListCap >= walk_total) break;
  }
  cute::cp_async_wait<0>();

  // Epilogue: O / l and the LSE.
  T* gout = static_cast<T*>(p.o);
#pragma unroll
  for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lt = l[mt][r];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const int row = row0 + mt * 16 + gq + 8 * r;
      int64_t xo[3];
      if (!row_coords(p, c, row, xo)) continue;
      const float inv = lt > 0.f ? 1.f / lt : 0.f;
      const int64_t ooff = offset5(p.os, c.b, xo, c.h);
#pragma unroll
      for (int j = 0; j < kOTiles; ++j) {
        const int col = j * 8 + 2 * t4;
        if (col < p.head_dim_v) {
          gout[ooff + col] = from_float<T>(o[mt][j][2 * r] * inv);
          gout[ooff + col + 1] = from_float<T>(o[mt][j][2 * r + 1] * inv);
        }
      }
      if (p.lse != nullptr && t4 == 0)
        p.lse[offset5(p.ls, c.b, xo, c.h)] = lt > 0.f ? (m[mt][r] + __log2f(lt)) * 0.69314718055994531f : -INFINITY;
    }
#endif
}

template <class T, int HD, int BM>
constexpr int mma_smem_bytes() {
  return (BM + 2 * kBlockN) * (HD + 8) * static_cast<int>(sizeof(T));
}

template <class T, int HD, int BM>
void launch_mma(const FwdParams& p, cudaStream_t stream, dim3 grid) {
  constexpr int smem = mma_smem_bytes<T, HD, BM>();
  auto kernel = fna_fwd_mma_kernel<T, HD, BM, kWalkFmha>;
  if (!p.fmha) {
    // Testing hook: NATTN_CUDA_FWD_WALK_SEGMENTS=1 runs every NA walk on the segment kernel.
    const char* force = std::getenv("NATTN_CUDA_FWD_WALK_SEGMENTS");
    const bool segments = (force != nullptr && force[0] == '1') || max_walk_positions(p) > tile_list_cap<HD>();
    kernel = segments ? fna_fwd_mma_kernel<T, HD, BM, kWalkSegments> : fna_fwd_mma_kernel<T, HD, BM, kWalkListed>;
  }
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, mma_threads<HD, BM>(), smem, stream>>>(p);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna
