// Device-side NA tiling of the Hopper forward kernel (hopper-fna): which in-group queries a CTA
// owns, which KV tiles of the permuted K/V it visits (the tiles of the KV tile grid that intersect
// sem::kv_box of its Q tile box), and how each is classified (empty / no mask / element mask) with
// sem::classify + sem::combine. All window math goes through nattn/semantics.h.
//
// Set-up per CTA (shared memory, na::Shared): one thread computes the context (make_ctx); then every
// thread of the CTA fills, in parallel, the per-axis class of each KV tile of the box and the
// per-axis window of each of the 128 query rows (fill_tables). The walk itself (tile_at, run by the
// producer thread and by every consumer thread in the same order) is then division-free int32
// work plus three shared-memory byte reads per tile.
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

namespace nattn::cuda::sm90::na {

constexpr int kRows = kFmhaBlockM;  // query rows per CTA

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
  int64_t q0[3];           // in-group origin of the Q tile box
  int64_t qlo[3], qhi[3];  // its real (non-padding) queries: [q0, min(q0 + Tq, lg))
  int tlo[3], tn[3];       // KV tile box: first KV tile coordinate and tile count per axis
  int n_tiles;             // prod(tn): the walk length
  int valid;               // 0: the whole Q tile is padding (the CTA exits)
};

// Per-axis tables (shared memory): cls[off(i) + m] for KV tile tlo[i] + m of axis i, off(0) = 0,
// off(1) = tn[0], off(2) = tn[0] + tn[1]; row windows per axis and query row.
struct Shared {
  Ctx ctx;
  int row_lo[3][kRows], row_hi[3][kRows];
  uint8_t cls[kMaxAxisTiles];  // sem::TileClass; boundary also for tiles holding padding keys
};

// m_block: linear Q tile index in the permuted sequence; pb: permuted batch index b * G + group.
NATTN_NA_HD void make_ctx(const NaGeom& g, int m_block, int pb, Ctx& c) {
  const sem::Permutation qp = rank3(g.qp), kvp = rank3(g.kvp);
  int64_t grp[3], nq[3], r[3];
  qp.delinear(pb % qp.num_groups(), qp.dilation, grp);
  for (int i = 0; i < 3; ++i) nq[i] = qp.tiles(i);
  qp.delinear(m_block, nq, r);
  c.valid = 1;
  c.n_tiles = 1;
  for (int i = 0; i < 3; ++i) {
    const sem::Axis& a = g.ax[i];
    c.lg[i] = sem::group_extent(a.extent, a.dilation, grp[i]);
    c.q0[i] = r[i] * qp.tile[i];
    c.qlo[i] = c.q0[i];
    c.qhi[i] = sem::min64(c.q0[i] + qp.tile[i], c.lg[i]);
    if (c.qlo[i] >= c.qhi[i]) c.valid = 0;
  }
  if (!c.valid) return;
  for (int i = 0; i < 3; ++i) {
    const sem::Range box = sem::kv_box(sem::Range{c.qlo[i], c.qhi[i]}, c.lg[i], g.ax[i]);
    const int64_t t = kvp.tile[i];
    c.tlo[i] = static_cast<int>(box.start / t);
    c.tn[i] = static_cast<int>(sem::ceil_div(box.end, t) - box.start / t);
    c.n_tiles *= c.tn[i];
  }
}

// Every thread of the CTA (tid of nthreads) after make_ctx and a barrier; a barrier must follow.
NATTN_NA_HD void fill_tables(const NaGeom& g, Shared& s, int tid, int nthreads) {
  const Ctx& c = s.ctx;
  const int n_cls = c.tn[0] + c.tn[1] + c.tn[2];
  for (int e = tid; e < n_cls + 3 * kRows; e += nthreads) {
    if (e < n_cls) {
      const int i = e < c.tn[0] ? 0 : (e < c.tn[0] + c.tn[1] ? 1 : 2);
      const int m = e - (i == 0 ? 0 : (i == 1 ? c.tn[0] : c.tn[0] + c.tn[1]));
      const int64_t T = g.kvp.tile[i];
      const int64_t lo = (c.tlo[i] + m) * T;
      const int64_t hi = sem::min64(lo + T, c.lg[i]);
      sem::TileClass cls = sem::classify(sem::Range{c.qlo[i], c.qhi[i]}, sem::Range{lo, hi}, c.lg[i], g.ax[i]);
      if (cls == sem::TileClass::interior && lo + T > c.lg[i]) cls = sem::TileClass::boundary;  // padding keys
      s.cls[e] = static_cast<uint8_t>(cls);
    } else {
      const int i = (e - n_cls) / kRows, row = (e - n_cls) % kRows;
      // Padding rows take the window of the last real query of the axis (finite, inside the box).
      const int64_t j = sem::min64(c.q0[i] + ((row >> g.q_shift[i]) & g.q_mask[i]), c.qhi[i] - 1);
      const sem::Range w = sem::window(j, c.lg[i], g.ax[i]);
      s.row_lo[i][row] = static_cast<int>(w.start);
      s.row_hi[i][row] = static_cast<int>(w.end);
    }
  }
}

// One KV tile of the walk.
struct KvTile {
  int index;    // linear tile index in the permuted K/V sequence (TMA tile coordinate)
  int org[3];   // in-group coordinate of its first key per axis
  bool masked;  // needs the element mask (boundary class on some axis, or padding keys)
};

// Walk position t (0 <= t < n_tiles, axis 0 fastest) -> tile; false when no query sees any key.
NATTN_NA_HD bool tile_at(const NaGeom& g, const Shared& s, int t, KvTile& k) {
  const Ctx& c = s.ctx;
  const int m0 = t % c.tn[0], rest = t / c.tn[0];
  const int m1 = rest % c.tn[1], m2 = rest / c.tn[1];
  const sem::TileClass cls = sem::combine(
      sem::combine(static_cast<sem::TileClass>(s.cls[m0]), static_cast<sem::TileClass>(s.cls[c.tn[0] + m1])),
      static_cast<sem::TileClass>(s.cls[c.tn[0] + c.tn[1] + m2]));
  if (cls == sem::TileClass::empty) return false;
  const int tc[3] = {c.tlo[0] + m0, c.tlo[1] + m1, c.tlo[2] + m2};
  for (int i = 0; i < 3; ++i) k.org[i] = tc[i] * static_cast<int>(g.kvp.tile[i]);
  // kvp.linear(tc, tiles) for a rank-3 flipped permutation: axis 0 fastest.
  k.index = tc[0] + g.kv_tiles[0] * (tc[1] + g.kv_tiles[1] * tc[2]);
  k.masked = cls != sem::TileClass::interior;
  return true;
}

// First non-empty walk position >= t (n_tiles when none); fills `k` for it.
NATTN_NA_HD int next_tile(const NaGeom& g, const Shared& s, int t, KvTile& k) {
  while (t < s.ctx.n_tiles && !tile_at(g, s, t, k)) ++t;
  return t;
}

}  // namespace nattn::cuda::sm90::na
