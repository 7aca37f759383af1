// The neighborhood-attention window math: the single source of truth for every backend.
//
// Host and device code include this header; nothing here allocates, throws or touches a framework
// type. All index math is int64. The rules are those of shared/spec/semantics.md:
//   - dilation splits an axis into groups g = x mod d with in-group index j = x div d;
//   - windows are computed on in-group indices with the group's own extent Lg = ceil((L - g) / d);
//   - non-causal windows always hold exactly k keys, shifted inward at the borders and shared by a
//     stride group (leader = centre member); causal windows end at the query itself.
// Because start(j) and end(j) never decrease as j grows, every derived quantity (the KV box of a
// query tile, the queries that see a key, the masked/unmasked classification of a KV tile) is an
// interval per axis, and the multi-dimensional versions are boxes (NA is separable).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NATTN_HD __host__ __device__ __forceinline__
#else
#define NATTN_HD inline
#endif

namespace nattn::sem {

constexpr int kMaxRank = 3;

NATTN_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
NATTN_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
NATTN_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Half-open interval [start, end).
struct Range {
  int64_t start = 0;
  int64_t end = 0;
  NATTN_HD int64_t size() const { return end > start ? end - start : 0; }
  NATTN_HD bool contains(int64_t i) const { return start <= i && i < end; }
};

// NA parameters of one axis.
struct Axis {
  int64_t extent = 1;    // L
  int64_t kernel = 1;    // k (window size)
  int64_t stride = 1;    // s
  int64_t dilation = 1;  // d
  bool causal = false;
};

// Number of tokens in dilation group g (0 <= g < d) of an axis of extent L.
// group_extent_as / window_as: the same in the integer type I (the CUDA kernels use 32 bits when
// every coordinate fits); the int64_t versions are the reference.
template <class I>
NATTN_HD I group_extent_as(I extent, I dilation, I group) {
  return group < extent ? (extent - group + dilation - 1) / dilation : I{0};
}
NATTN_HD int64_t group_extent(int64_t extent, int64_t dilation, int64_t group) {
  return group_extent_as<int64_t>(extent, dilation, group);
}

// In-group index of the first member of dilation group g at or after original coordinate x: the
// members of group g below x are exactly in-group indices [0, group_begin(x, d, g)).
// Requires 0 <= g < d and x >= 0.
NATTN_HD int64_t group_begin(int64_t x, int64_t dilation, int64_t group) {
  return x <= group ? 0 : ceil_div(x - group, dilation);
}

// Window of in-group query j in a group of extent lg, as in-group key indices.
// Requires 1 <= k <= lg (validated by the callers) and 1 <= s.
template <class I>
NATTN_HD void window_as(I j, I lg, I k, I s, bool causal, I& start, I& end) {
  auto lo = [](I a, I b) { return a < b ? a : b; };
  auto hi = [](I a, I b) { return a > b ? a : b; };
  if (causal) {
    const I leader = lo(s * (j / s) + s - 1, lg - 1);
    start = hi(leader - k + 1, I{0});
    end = lo(j + 1, lg);
    return;
  }
  const I leader = lo(s * (j / s) + s / 2, lg - 1);
  start = lo(hi(leader - k / 2, I{0}), lg - k);
  end = start + k;
}
NATTN_HD Range window(int64_t j, int64_t lg, int64_t k, int64_t s, bool causal) {
  Range r;
  window_as<int64_t>(j, lg, k, s, causal, r.start, r.end);
  return r;
}

NATTN_HD Range window(int64_t j, int64_t lg, const Axis& a) {
  return window(j, lg, a.kernel, a.stride, a.causal);
}

// Queries (in-group) whose window contains in-group key c: the inverse neighborhood, an interval
// because start() and end() are monotone. Binary search, O(log lg); exact by construction.
NATTN_HD Range inverse_window(int64_t c, int64_t lg, const Axis& a) {
  // first query whose window end exceeds c
  int64_t lo = 0, hi = lg;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (window(mid, lg, a).end > c) hi = mid; else lo = mid + 1;
  }
  const int64_t first = lo;
  // first query whose window starts after c
  lo = first;
  hi = lg;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (window(mid, lg, a).start > c) hi = mid; else lo = mid + 1;
  }
  return Range{first, lo};
}

// Union of the windows of in-group queries [q.start, q.end) (non-empty): the KV box a query tile
// must visit. Exact (no alignment to any global grid).
NATTN_HD Range kv_box(Range q, int64_t lg, const Axis& a) {
  return Range{window(q.start, lg, a).start, window(q.end - 1, lg, a).end};
}

// Union of the inverse windows of in-group keys [kv.start, kv.end): the queries a KV tile must
// visit in backward.
NATTN_HD Range q_box(Range kv, int64_t lg, const Axis& a) {
  return Range{inverse_window(kv.start, lg, a).start, inverse_window(kv.end - 1, lg, a).end};
}

// How a KV tile relates to a query tile along one axis (and, combined, in all axes).
enum class TileClass : int { empty = 0, interior = 1, boundary = 2 };

// kv: in-group key interval of the tile; q: in-group query interval of the tile (both non-empty).
// interior: every query of q sees every key of kv (no mask needed);
// empty: no query of q sees any key of kv; boundary: an element mask is needed.
NATTN_HD TileClass classify(Range q, Range kv, int64_t lg, const Axis& a) {
  const Range first = window(q.start, lg, a);
  const Range last = window(q.end - 1, lg, a);
  if (kv.end <= first.start || kv.start >= last.end) return TileClass::empty;
  if (last.start <= kv.start && kv.end <= first.end) return TileClass::interior;
  return TileClass::boundary;
}

// Combine per-axis classes: empty on any axis -> empty; interior on all -> interior.
NATTN_HD TileClass combine(TileClass a, TileClass b) {
  if (a == TileClass::empty || b == TileClass::empty) return TileClass::empty;
  if (a == TileClass::interior && b == TileClass::interior) return TileClass::interior;
  return TileClass::boundary;
}

// Does query x see key y along this axis (original, dilated coordinates)?
NATTN_HD bool attends(int64_t x, int64_t y, const Axis& a) {
  const int64_t d = a.dilation;
  if (x % d != y % d) return false;
  const int64_t lg = group_extent(a.extent, d, x % d);
  return window(x / d, lg, a).contains(y / d);
}

// Window of query x (original coordinates) as original key coordinates: keys are
// first, first + step, ..., first + step * (count - 1).
struct Strided {
  int64_t first = 0;
  int64_t step = 1;
  int64_t count = 0;
};

NATTN_HD Strided window_of(int64_t x, const Axis& a) {
  const int64_t d = a.dilation;
  const int64_t g = x % d;
  const Range w = window(x / d, group_extent(a.extent, d, g), a);
  return Strided{g + d * w.start, d, w.size()};
}

// Queries (original coordinates) that see key y: same form as window_of.
NATTN_HD Strided inverse_of(int64_t y, const Axis& a) {
  const int64_t d = a.dilation;
  const int64_t g = y % d;
  const Range r = inverse_window(y / d, group_extent(a.extent, d, g), a);
  return Strided{g + d * r.start, d, r.size()};
}

// Halo of a sub-domain (multi-device NA, issue 6): the smallest contiguous range of original key
// coordinates [kv_lo, kv_hi) holding every window of the queries [q_lo, q_hi) of an axis of global
// extent `extent`, over all dilation groups. Built from kv_box (so from window); queries and keys
// are global (original, dilated) coordinates. An empty query range gives an empty range {q_lo, q_lo}.
// Requires 0 <= q_lo, q_hi <= extent and the window rules (1 <= k <= group extent, s >= 1, d >= 1).
NATTN_HD Range halo_range(int64_t q_lo, int64_t q_hi, int64_t extent, int64_t k, int64_t s, int64_t d,
                          bool causal) {
  Range out{q_lo, q_lo};
  bool any = false;
  Axis a;
  a.extent = extent;
  a.kernel = k;
  a.stride = s;
  a.dilation = d;
  a.causal = causal;
  for (int64_t g = 0; g < d && g < extent; ++g) {
    // In-group queries j of group g with q_lo <= g + d j < q_hi.
    const int64_t j_lo = group_begin(q_lo, d, g);
    const int64_t j_hi = group_begin(q_hi, d, g);
    if (j_lo >= j_hi) continue;
    const Range box = kv_box(Range{j_lo, j_hi}, group_extent(extent, d, g), a);
    const Range orig{g + d * box.start, g + d * (box.end - 1) + 1};
    out = any ? Range{min64(out.start, orig.start), max64(out.end, orig.end)} : orig;
    any = true;
  }
  return out;
}

NATTN_HD Range halo_range(int64_t q_lo, int64_t q_hi, const Axis& a) {
  return halo_range(q_lo, q_hi, a.extent, a.kernel, a.stride, a.dilation, a.causal);
}

// ---------------------------------------------------------------------------------------------
// Token permutation (shared/spec/semantics.md, last section).
//
// Per axis with tile T and dilation d: pad X to ceil(X / (T d)) * T * d, write x = (r T + t) d + g
// and fold the dilation groups into the batch. Tokens are ordered by tile, then by offset in the
// tile, so each tile is a contiguous run of prod(T) tokens. `flip` (CuTe's colexicographic order,
// used by the Hopper/Blackwell kernels) makes axis 0 fastest in the group, tile and offset
// linearisations; otherwise the last axis is fastest (row-major, used by flex).
struct Permutation {
  int rank = 1;
  int64_t extent[kMaxRank] = {1, 1, 1};
  int64_t tile[kMaxRank] = {1, 1, 1};
  int64_t dilation[kMaxRank] = {1, 1, 1};
  bool flip = false;

  // Per-group padded extent along axis i: ceil(X / (T d)) * T.
  NATTN_HD int64_t group_padded(int i) const {
    return ceil_div(extent[i], tile[i] * dilation[i]) * tile[i];
  }
  NATTN_HD int64_t tiles(int i) const { return tiles_as<int64_t>(i); }
  // The same in the integer type I (the CUDA kernels use 32 bits when every index fits).
  template <class I>
  NATTN_HD I tiles_as(int i) const {
    const I span = static_cast<I>(tile[i]) * static_cast<I>(dilation[i]);
    return (static_cast<I>(extent[i]) + span - 1) / span;
  }
  NATTN_HD int64_t num_groups() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dilation[i];
    return n;
  }
  NATTN_HD int64_t tile_volume() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= tile[i];
    return n;
  }
  // Tokens per group in the permuted sequence.
  NATTN_HD int64_t seq_len() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= group_padded(i);
    return n;
  }

  // The index maps below are templates on the integer type I of the coordinates (int64_t on the
  // host; the CUDA kernels use uint32_t when every index fits in 31 bits).

  // Linearise a per-axis coordinate with per-axis sizes in this permutation's order.
  template <class I, class N>
  NATTN_HD I linear(const I* c, const N* n) const {
    I idx = 0;
    if (flip) {
      for (int i = rank - 1; i >= 0; --i) idx = idx * static_cast<I>(n[i]) + c[i];
    } else {
      for (int i = 0; i < rank; ++i) idx = idx * static_cast<I>(n[i]) + c[i];
    }
    return idx;
  }
  template <class J, class N, class I>
  NATTN_HD void delinear(J index, const N* n, I* c) const {
    I idx = static_cast<I>(index);
    if (flip) {
      for (int i = 0; i < rank; ++i) { c[i] = idx % static_cast<I>(n[i]); idx /= static_cast<I>(n[i]); }
    } else {
      for (int i = rank - 1; i >= 0; --i) { c[i] = idx % static_cast<I>(n[i]); idx /= static_cast<I>(n[i]); }
    }
  }

  // Original coordinate x -> (group, position in the permuted sequence).
  template <class I>
  NATTN_HD void forward(const I* x, I* group, I* pos) const {
    I g[kMaxRank], r[kMaxRank], t[kMaxRank], nr[kMaxRank];
    I volume = 1;
    for (int i = 0; i < rank; ++i) {
      const I d = static_cast<I>(dilation[i]), size = static_cast<I>(tile[i]);
      g[i] = x[i] % d;
      const I j = x[i] / d;
      r[i] = j / size;
      t[i] = j % size;
      nr[i] = tiles_as<I>(i);
      volume *= size;
    }
    *group = linear(g, dilation);
    *pos = linear(r, nr) * volume + linear(t, tile);
  }

  // (group, position) -> original coordinate; returns false for padding.
  template <class I>
  NATTN_HD bool inverse(I group, I pos, I* x) const {
    I g[kMaxRank], r[kMaxRank], t[kMaxRank], nr[kMaxRank];
    I volume = 1;
    for (int i = 0; i < rank; ++i) {
      nr[i] = tiles_as<I>(i);
      volume *= static_cast<I>(tile[i]);
    }
    delinear(group, dilation, g);
    delinear(pos / volume, nr, r);
    delinear(pos % volume, tile, t);
    bool valid = true;
    for (int i = 0; i < rank; ++i) {
      x[i] = (r[i] * static_cast<I>(tile[i]) + t[i]) * static_cast<I>(dilation[i]) + g[i];
      valid = valid && x[i] < static_cast<I>(extent[i]);
    }
    return valid;
  }
};

}  // namespace nattn::sem
