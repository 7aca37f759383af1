// Device-side NA tiling of the Hopper forward kernel (hopper-fna): which in-group queries a CTA
// owns, which KV tiles it visits (permuted mode: the tiles of the KV tile grid that intersect
// sem::kv_box of its Q tile box; direct mode: tiles laid from the box's first key), and which of
// them need the element mask (sem::classify's interior rule, per axis) and what that mask is
// (row_mask). All window math goes through nattn/semantics.h.
//
// Set-up per CTA (shared memory, na::Shared): three lanes compute the context, one axis each
// (make_ctx_axis: the Q tile box, the KV box, and per axis the tiles inside the keys every real
// query sees), one combines them (finish_ctx); then every thread of the CTA fills, in parallel, the
// per-axis windows of the Q tile's rows (fill_tables). The walk itself (a Cursor advanced once per
// tile by the producer thread and by every consumer thread) is division-free int32 work.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/semantics.h"

// Host and device: the host self-check in tests/cuda/test_hopper_fna.cpp (HopperFnaWalk) runs this
// walk on the CPU against a brute force of the spec.
#if defined(__CUDACC__)
#define NATTN_NA_HD __host__ __device__ __forceinline__
#else
#define NATTN_NA_HD inline
#endif

#if defined(__CUDA_ARCH__)
#define NATTN_NA_UNROLL _Pragma("unroll")
#else
#define NATTN_NA_UNROLL
#endif

namespace nattn::cuda::sm90::na {

NATTN_NA_HD int sem_clamp(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

// A copy of a rank-3 permutation whose rank the compiler sees as the constant 3, so that the
// sem::Permutation loops unroll and their arrays stay in registers.
NATTN_NA_HD sem::Permutation rank3(const sem::Permutation& p) {
  sem::Permutation c = p;
  c.rank = 3;
  return c;
}

// Per-CTA context (shared memory).
struct Ctx {
  int64_t lg[3];           // extent of this CTA's dilation group per axis
  int64_t q0[3];           // in-group origin of the Q tile box (sub-domain: local, global = q_org + q0)
  int64_t qlo[3], qhi[3];  // its real (non-padding) queries: [q0, min(q0 + Tq, lg)) (sub-domain: local extent)
  int tlo[3], tn[3];       // KV tile box: first KV tile coordinate and tile count per axis
  int kvo[3];              // in-group coordinate of the box's first key per axis: tlo * tile
                           // (permuted mode, tiles on the global grid) or the KV box start (direct;
                           // sub-domain: local, global key = kv_org + key; in_lo / in_hi likewise)
  // Per axis, from the windows of the first and last real query (windows are intervals that move
  // forward with the query): keys [in_lo, in_hi) are seen by every real query, so a KV tile inside
  // them on every axis needs no mask (sem::classify's interior rule).
  int in_lo[3], in_hi[3];
  int ia[3], ib[3];        // the same as tile indices: tiles ia <= m < ib of the box lie inside them
  int n_tiles;             // prod(tn): the walk length
  int valid;               // 0: the whole Q tile is padding (the CTA exits)
};

// Row windows: a row's window on axis i depends only on its offset along that axis inside the Q
// tile, so one entry per (axis, offset): win_*[g.win_off[i] + offset], sum of the Q tile sizes
// entries (<= 128 + 1 + 1 for power-of-two sizes of volume 128).
constexpr int kWinEntries = 132;

// Per-CTA tables (shared memory, inside the kernel's SharedStorage; small enough that the NA
// kernel keeps the FMHA's three K/V stages at head dim 128).
struct Shared {
  Ctx ctx;
  int win_lo[kWinEntries], win_hi[kWinEntries];
  // Per consumer warpgroup w (Q tile rows 64 w .. 64 w + 63): the part of the walk it computes,
  // positions [wg_first[w], wg_end[w]) (wg_walk); wg_lo[w] is the cursor at wg_first[w].
  int wg_first[2], wg_end[2];
  int wg_lo[2][3];
};

// Axis i of the context (the axes are independent: the kernel computes them on three lanes).
// m_block: linear Q tile index; pb: permuted batch index
// b * G + group. An axis without real queries (possible with dilation) gets tn = 0.
// I: the integer type of the arithmetic, int32_t when NaGeom::narrow says every coordinate fits
// (a fraction of the int64 divisions' cost, on the path before a CTA's first load), else int64_t.
template <class I>
NATTN_NA_HD void make_ctx_axis_as(const NaGeom& g, int m_block, int pb, int i, Ctx& c) {
  const sem::Permutation qp = rank3(g.qp), kvp = rank3(g.kvp);
  I grp[3], nq[3], r[3], dil[3];
  for (int a = 0; a < 3; ++a) {
    nq[a] = qp.tiles_as<I>(a);
    dil[a] = static_cast<I>(qp.dilation[a]);
  }
  qp.delinear(static_cast<I>(pb) % (dil[0] * dil[1] * dil[2]), dil, grp);
  // The Q tile at permuted positions m_block * 128 .. (direct mode: the same order, axis 0 fastest;
  // walking another axis first changed nothing measurable on the video problem).
  qp.delinear(static_cast<I>(m_block), nq, r);
  const sem::Axis& ax = g.ax[i];
  const I k = static_cast<I>(ax.kernel), s = static_cast<I>(ax.stride);
  const I lg = sem::group_extent_as<I>(static_cast<I>(ax.extent), dil[i], grp[i]);
  const I qt = static_cast<I>(qp.tile[i]);
  const I q0 = r[i] * qt;
  // Queries end at the group extent; a sub-domain's (direct mode) at its local extent, with the
  // windows taken at the global coordinates q_org + x and the keys made local by - kv_org.
  const I qend = g.direct ? static_cast<I>(qp.extent[i]) : lg;
  const I qo = static_cast<I>(g.q_org[i]), ko = static_cast<I>(g.kv_org[i]);
  const I qhi = q0 + qt < qend ? q0 + qt : qend;
  c.lg[i] = lg;
  c.q0[i] = c.qlo[i] = q0;
  c.qhi[i] = qhi;
  if (q0 >= qhi) {
    c.tn[i] = 0;
    return;
  }
  I first_start, first_end, last_start, last_end;
  sem::window_as<I>(qo + q0, lg, k, s, ax.causal, first_start, first_end);
  sem::window_as<I>(qo + qhi - 1, lg, k, s, ax.causal, last_start, last_end);
  first_start -= ko;
  first_end -= ko;
  last_start -= ko;
  last_end -= ko;
  c.in_lo[i] = static_cast<int>(last_start);
  c.in_hi[i] = static_cast<int>(first_end);
  // The KV box (sem::kv_box) is [first_start, last_end).
  const I t = static_cast<I>(kvp.tile[i]);
  if (g.direct) {  // tiles of the box itself: the first starts at the box's first key
    c.tlo[i] = 0;
    c.kvo[i] = static_cast<int>(first_start);
    c.tn[i] = static_cast<int>((last_end - first_start + t - 1) / t);
  } else {  // tiles of the global tile grid of the permuted sequence
    c.tlo[i] = static_cast<int>(first_start / t);
    c.kvo[i] = static_cast<int>(static_cast<I>(c.tlo[i]) * t);
    c.tn[i] = static_cast<int>((last_end + t - 1) / t - first_start / t);
  }
  // Tile m covers keys [kvo + m t, kvo + (m + 1) t); kvo <= in_lo and kvo < in_hi.
  c.ia[i] = static_cast<int>((static_cast<I>(c.in_lo[i] - c.kvo[i]) + t - 1) / t);
  c.ib[i] = static_cast<int>(static_cast<I>(c.in_hi[i] - c.kvo[i]) / t);
}

NATTN_NA_HD void make_ctx_axis(const NaGeom& g, int m_block, int pb, int i, Ctx& c) {
  if (g.narrow)
    make_ctx_axis_as<int32_t>(g, m_block, pb, i, c);
  else
    make_ctx_axis_as<int64_t>(g, m_block, pb, i, c);
}

// After the three axes: the walk length, and whether the Q tile has any real query.
NATTN_NA_HD void finish_ctx(Ctx& c) {
  c.n_tiles = c.tn[0] * c.tn[1] * c.tn[2];
  c.valid = c.n_tiles > 0 ? 1 : 0;
}

NATTN_NA_HD void make_ctx(const NaGeom& g, int m_block, int pb, Ctx& c) {
  for (int i = 0; i < 3; ++i) make_ctx_axis(g, m_block, pb, i, c);
  finish_ctx(c);
}

// Index into Shared::win_* of the window of Q tile row `row` (0..127) on axis i.
NATTN_NA_HD int win_index(const NaGeom& g, int i, int row) { return g.win_off[i] + ((row >> g.q_shift[i]) & g.q_mask[i]); }

// Every thread of the CTA (tid of nthreads) after make_ctx and a barrier; a barrier must follow.
NATTN_NA_HD void fill_tables(const NaGeom& g, Shared& s, int tid, int nthreads) {
  const Ctx& c = s.ctx;
  const int n = g.win_off[2] + static_cast<int>(g.qp.tile[2]);
  for (int e = tid; e < n; e += nthreads) {
    const int i = e < g.win_off[1] ? 0 : (e < g.win_off[2] ? 1 : 2);
    // Padding rows take the window of the last real query of the axis (finite, inside the box).
    const int64_t j = sem::min64(c.q0[i] + (e - g.win_off[i]), c.qhi[i] - 1);
    const sem::Range w = sem::window(g.q_org[i] + j, c.lg[i], g.ax[i]);  // global query, local keys
    s.win_lo[e] = static_cast<int>(w.start - g.kv_org[i]);
    s.win_hi[e] = static_cast<int>(w.end - g.kv_org[i]);
  }
}

// The cursor indices along axis i of the KV tiles that some row of consumer warpgroup wg (Q tile
// rows 64 wg .. 64 wg + 63) sees: [lo, hi] (after fill_tables). Rows are numbered axis 0 fastest over
// power-of-two tile sizes, so the warpgroup's rows form a box whose offsets along axis i run from
// (64 wg >> q_shift) & q_mask to ((64 wg + 63) >> q_shift) & q_mask. The union over a box of rows of
// their window boxes is the box of the per-axis unions, so a tile is seen by some row of the
// warpgroup iff its index lies in [lo, hi] on every axis: a tile outside is fully masked for all 64
// rows and the warpgroup can skip it. (The hull [min lo, max hi) of the windows is used; were the
// union not an interval, the test would only skip less.)
NATTN_NA_HD void wg_tile_range(const NaGeom& g, const Shared& s, int wg, int i, int& lo, int& hi) {
  const int first = ((64 * wg) >> g.q_shift[i]) & g.q_mask[i];
  const int last = ((64 * wg + 63) >> g.q_shift[i]) & g.q_mask[i];
  int klo = s.win_lo[g.win_off[i] + first], khi = s.win_hi[g.win_off[i] + first];
  for (int o = first + 1; o <= last; ++o) {
    klo = s.win_lo[g.win_off[i] + o] < klo ? s.win_lo[g.win_off[i] + o] : klo;
    khi = s.win_hi[g.win_off[i] + o] > khi ? s.win_hi[g.win_off[i] + o] : khi;
  }
  const int t = static_cast<int>(g.kvp.tile[i]);
  const int a = klo - s.ctx.kvo[i], b = khi - 1 - s.ctx.kvo[i];  // key offsets from the box's first key
  lo = a < 0 ? 0 : a / t;  // (the box starts at or before every window: a >= 0 in practice)
  hi = b < 0 ? -1 : b / t;
  hi = hi < s.ctx.tn[i] - 1 ? hi : s.ctx.tn[i] - 1;
}

// One KV tile of the walk.
struct KvTile {
  int index;    // linear tile index in the permuted K/V sequence (TMA tile coordinate; permuted mode)
  int org[3];   // in-group coordinate of its first key per axis (the TMA box origin in direct mode)
  bool masked;  // needs the element mask (not inside the all-seen keys on some axis, or padding keys)
  int inner;    // bit i: inside the all-seen keys on axis i (that axis needs no mask work)
};

// The walk: positions 0 .. n_tiles - 1 over the tile box, axis 0 fastest. No tile of the box is
// empty (each intersects the union of the windows on every axis), so producer and consumers walk
// every position. The cursor holds the position as per-axis tile indices and advances without
// divisions (the kernel advances it once per tile, in the producer and in every consumer thread).
struct Cursor {
  int m[3] = {0, 0, 0};
};

NATTN_NA_HD void advance(const Ctx& c, Cursor& u) {
  if (++u.m[0] == c.tn[0]) {
    u.m[0] = 0;
    if (++u.m[1] == c.tn[1]) {
      u.m[1] = 0;
      ++u.m[2];
    }
  }
}

// The part of the walk consumer warpgroup wg computes (after fill_tables): the tiles its rows see
// form the box [lo, hi] of wg_tile_range, whose first and last positions in walk order (axis 0
// fastest) bound it: positions before the first and after the last are fully masked for the
// warpgroup's rows and skipped. (Positions in between that lie outside the box are not skipped:
// with the warpgroups splitting the Q tile's slowest axis, which is also the walk's slowest, there
// are none unless the Q tile is 1 along an axis the walk still varies.) Sets s.wg_first / wg_end /
// wg_lo for wg.
NATTN_NA_HD void wg_walk(const NaGeom& g, Shared& s, int wg) {
  int lo[3], hi[3];
  for (int i = 0; i < 3; ++i) wg_tile_range(g, s, wg, i, lo[i], hi[i]);
  const Ctx& c = s.ctx;
  bool any = true;
  for (int i = 0; i < 3; ++i) any = any && lo[i] <= hi[i];
  s.wg_first[wg] = lo[0] + c.tn[0] * (lo[1] + c.tn[1] * lo[2]);
  s.wg_end[wg] = any ? hi[0] + c.tn[0] * (hi[1] + c.tn[1] * hi[2]) + 1 : s.wg_first[wg];
  for (int i = 0; i < 3; ++i) s.wg_lo[wg][i] = lo[i];
}

// Bit i: the cursor's tile lies inside the all-seen keys on axis i (7: no mask at all).
NATTN_NA_HD int inner_axes(const Ctx& c, const Cursor& u) {
  int inner = 0;
  NATTN_NA_UNROLL
  for (int i = 0; i < 3; ++i)
    if (c.ia[i] <= u.m[i] && u.m[i] < c.ib[i]) inner |= 1 << i;
  return inner;
}

// The cursor's tile: first key per axis (org), its permuted-sequence index, its mask flags.
NATTN_NA_HD void tile_of(const NaGeom& g, const Ctx& c, const Cursor& u, KvTile& k) {
  NATTN_NA_UNROLL
  for (int i = 0; i < 3; ++i) k.org[i] = c.kvo[i] + u.m[i] * static_cast<int>(g.kvp.tile[i]);
  // Permuted mode: kvp.linear(tile coordinate, tiles) for a rank-3 flipped permutation, axis 0
  // fastest. Direct mode: unused (the TMA coordinates are org).
  k.index = (c.tlo[0] + u.m[0]) + g.kv_tiles[0] * ((c.tlo[1] + u.m[1]) + g.kv_tiles[1] * (c.tlo[2] + u.m[2]));
  k.inner = inner_axes(c, u);
  k.masked = k.inner != 7;
}

// Bits [lo, hi) of a 32-bit word, both clipped to [0, 32] (0 when empty).
// Bits below n (n clipped to [0, 32]): one clamping funnel shift on the device, no branch.
NATTN_NA_HD uint32_t bits_below(int n) {
  n = n < 0 ? 0 : n;
#if defined(__CUDA_ARCH__)
  return __funnelshift_lc(0xffffffffu, 0u, static_cast<unsigned>(n));  // high word of ~0 << min(n, 32)
#else
  return n >= 32 ? 0xffffffffu : (1u << n) - 1u;
#endif
}

// Bits [lo, hi) of a 32-bit word, both clipped to [0, 32] (0 when empty: below(hi) is then a
// subset of below(lo)).
NATTN_NA_HD uint32_t bit_range(int lo, int hi) { return bits_below(hi) & ~bits_below(lo); }

// Word j of the element mask of one query row for KV tile k: bit b is set iff key column 32 j + b
// lies in the row's window [lo[i], hi[i]) on every axis i. Only the axes that are not all-seen for
// the tile (k.inner) are evaluated: with the in-tile decode (c >> shift) & (T - 1), the columns of
// one offset interval [u, v) are the bit range [u << shift, v << shift) repeated every T << shift
// columns. Padding keys lie outside every window, so they are masked too. (The kernel's four
// threads of a row quad compute one word each and exchange them.)
NATTN_NA_HD uint32_t row_mask_word(const NaGeom& g, const KvTile& k, const int* lo, const int* hi, int j) {
  uint32_t w = 0xffffffffu;
  NATTN_NA_UNROLL
  for (int i = 0; i < 3; ++i) {
    if ((k.inner >> i) & 1) continue;
    const int sh = g.kv_shift[i], len = g.kv_mask[i] + 1, period = len << sh;
    const int u = sem_clamp(lo[i] - k.org[i], 0, len) << sh;
    const int v = sem_clamp(hi[i] - k.org[i], 0, len) << sh;
    if (period >= 32) {
      const int o = (32 * j) & (period - 1);  // offset of the word inside its period
      w &= bit_range(u - o, v - o);
    } else {  // several periods per word: the period's pattern, replicated (kv_rep)
      w &= bit_range(u, v) * g.kv_rep[i];
    }
  }
  return w;
}

// The whole row mask: W words (4 for the 128-key tiles, 2 for the 64-key tiles of head dim 256).
template <int W>
NATTN_NA_HD void row_mask(const NaGeom& g, const KvTile& k, const int* lo, const int* hi, uint32_t (&w)[W]) {
  static_assert(W == 2 || W == 4, "KV tiles of 64 or 128 keys");
  NATTN_NA_UNROLL
  for (int j = 0; j < W; ++j) w[j] = row_mask_word(g, k, lo, hi, j);
}

}  // namespace nattn::cuda::sm90::na
