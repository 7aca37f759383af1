// Device-side tiling of the portable backward kernels (window math from nattn/semantics.h).
//
// Both kernels have the same shape: a CTA owns kTileM "stationary" rows and walks tiles of kTileN
// "walked" rows.
//   dq   (kDkdv = false): stationary = a query tile (q_tile box of one dilation group, or 64 FMHA
//        queries); walked = the exact KV box of its windows in kv_tile boxes, then the phase-B
//        tokens (additional keys; FMHA: the sequence's keys). A1 = Q, A2 = dO, B1 = K, B2 = V.
//   dkdv (kDkdv = true): stationary = a key tile (kv_tile box of one group, 64 additional keys, or
//        64 FMHA keys); walked = the query box that covers its inverse neighborhood (sem::q_box) in
//        q_tile boxes (additional keys: every query token; FMHA: the sequence's queries), for every
//        query head of its KV head. A1 = K, A2 = V, B1 = Q, B2 = dO.
// Both compute S = A1 B1^T and dP = A2 B2^T; the softmax statistics (LSE, delta) belong to the
// query side: per stationary row (dq) or per walked column (dkdv).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include <cute/arch/copy_sm80.hpp>

#include "cuda/sm80/fna_bwd/bwd_params.h"
#include "nattn/semantics.h"

namespace nattn::cuda::fna_bwd {

namespace sem = ::nattn::sem;

constexpr float kLog2e = 1.4426950408889634f;

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Per-CTA context; computed once by thread 0 into shared memory.
struct Ctx {
  int64_t b = 0, h = 0, hk = 0;  // dq: query head h; dkdv: KV head hk (h unused)
  int64_t group = 1;             // query heads per KV head
  sem::Axis ax[3];
  int64_t g[3] = {0, 0, 0}, lg[3] = {1, 1, 1};
  int64_t olo[3] = {0, 0, 0}, ohi[3] = {1, 1, 1};  // stationary box (in-group, valid part)
  int64_t blo[3] = {0, 0, 0}, bhi[3] = {1, 1, 1};  // walked box
  int64_t nt[3] = {1, 1, 1};                       // walked tiles per axis
  int64_t nA = 0, nB = 0;   // walked NA tiles, phase-B tiles (per head)
  int64_t nb_lo = 0, nb_len = 0;  // phase B: walked indices [nb_lo, nb_len)
  int64_t row0 = 0;         // FMHA / extra keys: first stationary index in the sequence
  int64_t nrows = 0;        // FMHA / extra keys: stationary rows count (sequence length)
  int64_t qbase = 0, kvbase = 0, sq = 0, skv = 0;  // FMHA
  int extra = 0;            // dkdv: this CTA owns additional keys
  int64_t k_origin_off = 0, v_origin_off = 0;  // dq: element offsets of the sub-domain's kv_origin in K / V
  bool any_row = false;
};

template <bool kDkdv>
__device__ __forceinline__ void make_ctx(const BwdParams& p, Ctx& c) {
  c.b = blockIdx.z;
  c.group = p.heads / p.heads_kv;
  if (kDkdv) {
    c.hk = blockIdx.y;
    c.h = c.hk * c.group;
  } else {
    c.h = blockIdx.y;
    c.hk = c.h / c.group;
  }
  c.any_row = false;
  if (p.fmha) {
    if (p.cu_q != nullptr) {
      const int64_t s = blockIdx.z;
      c.b = 0;
      c.qbase = p.cu_q[s];
      c.sq = p.cu_q[s + 1] - c.qbase;
      c.kvbase = p.cu_kv[s];
      c.skv = p.cu_kv[s + 1] - c.kvbase;
    } else {
      c.sq = p.seqlen_q;
      c.skv = p.seqlen_kv;
    }
    c.row0 = static_cast<int64_t>(blockIdx.x) * kTileM;
    if (!kDkdv) {
      c.nrows = c.sq;
      c.any_row = c.row0 < c.sq;
      if (!c.any_row) return;
      int64_t kv_end = c.skv;
      if (p.fmha_causal) kv_end = sem::min64(kv_end, sem::min64(c.row0 + kTileM, c.sq));
      c.nb_lo = 0;
      c.nb_len = kv_end;
    } else {
      c.nrows = c.skv;
      c.any_row = c.row0 < c.skv;
      if (!c.any_row) return;
      c.nb_lo = p.fmha_causal ? c.row0 : 0;  // causal: query i sees key j iff j <= i
      c.nb_len = c.sq;
    }
    c.nB = c.nb_len > c.nb_lo ? sem::ceil_div(c.nb_len - c.nb_lo, kTileN) : 0;
    c.nA = 0;
    return;
  }
  if (kDkdv && static_cast<int64_t>(blockIdx.x) >= p.na_ctas) {
    // Additional keys: every query token of the batch entry sees them (no mask).
    c.extra = 1;
    c.row0 = (static_cast<int64_t>(blockIdx.x) - p.na_ctas) * kTileM;
    c.nrows = p.num_extra;
    c.any_row = c.row0 < p.num_extra;
    c.nA = 0;
    c.nb_lo = 0;
    c.nb_len = p.tokens;
    c.nB = sem::ceil_div(p.tokens, kTileN);
    return;
  }
  int64_t tl = blockIdx.x;
  const int64_t ntiles = p.own_tiles[0] * p.own_tiles[1] * p.own_tiles[2];
  int64_t gl = tl / ntiles;
  tl -= gl * ntiles;
  int64_t t[3];
  t[2] = tl % p.own_tiles[2];
  tl /= p.own_tiles[2];
  t[1] = tl % p.own_tiles[1];
  t[0] = tl / p.own_tiles[1];
  c.g[2] = gl % p.dilation[2];
  gl /= p.dilation[2];
  c.g[1] = gl % p.dilation[1];
  c.g[0] = gl / p.dilation[1];
  const int64_t* own = kDkdv ? p.kv_tile : p.q_tile;
  const int64_t* walk = kDkdv ? p.q_tile : p.kv_tile;
  const int64_t* own_origin = kDkdv ? p.kv_origin : p.q_origin;
  const int64_t* own_extent = kDkdv ? p.kv_extent : p.q_extent;
  c.any_row = true;
  for (int i = 0; i < 3; ++i) {
    c.ax[i] = sem::Axis{p.extent[i], p.kernel[i], p.stride[i], p.dilation[i], p.causal[i] != 0};
    c.lg[i] = sem::group_extent(p.extent[i], p.dilation[i], c.g[i]);
    // In-group (global) indices of the group's local stationary rows; tiles start at the first.
    const int64_t jlo = sem::group_begin(own_origin[i], p.dilation[i], c.g[i]);
    const int64_t jhi = sem::group_begin(own_origin[i] + own_extent[i], p.dilation[i], c.g[i]);
    c.olo[i] = jlo + t[i] * own[i];
    c.ohi[i] = sem::min64(c.olo[i] + own[i], jhi);
    if (c.olo[i] >= c.ohi[i]) c.any_row = false;
  }
  if (!c.any_row) return;
  for (int i = 0; i < 3; ++i) {
    c.k_origin_off += p.kv_origin[i] * p.ks[1 + i];
    c.v_origin_off += p.kv_origin[i] * p.vs[1 + i];
  }
  c.nA = 1;
  for (int i = 0; i < 3; ++i) {
    const sem::Range r{c.olo[i], c.ohi[i]};
    sem::Range box = kDkdv ? sem::q_box(r, c.lg[i], c.ax[i]) : sem::kv_box(r, c.lg[i], c.ax[i]);
    if (kDkdv) {
      // Only the local queries exist here (a sub-domain's other queries belong to other ranks).
      box.start = sem::max64(box.start, sem::group_begin(p.q_origin[i], p.dilation[i], c.g[i]));
      box.end = sem::min64(box.end, sem::group_begin(p.q_origin[i] + p.q_extent[i], p.dilation[i], c.g[i]));
    }
    c.blo[i] = box.start;
    c.bhi[i] = box.end;
    c.nt[i] = box.size() > 0 ? sem::ceil_div(box.size(), walk[i]) : 0;
    c.nA *= c.nt[i];
  }
  if (!kDkdv) {
    c.nb_lo = 0;
    c.nb_len = p.num_extra;
    c.nB = sem::ceil_div(p.num_extra, kTileN);
  }
}

template <bool kDkdv>
__device__ __forceinline__ const Ctx& shared_ctx(const BwdParams& p) {
  __shared__ __align__(16) unsigned char raw[sizeof(Ctx)];
  Ctx& c = *reinterpret_cast<Ctx*>(raw);
  if (threadIdx.x == 0) {
    Ctx tmp;
    make_ctx<kDkdv>(p, tmp);
    c = tmp;
  }
  __syncthreads();
  return c;
}

// In-tile index -> per-axis offsets for a power-of-two tile (log2 dims), last axis fastest.
__device__ __forceinline__ void delin_pow2(int r, const int* shift, int* a) {
  a[2] = r & ((1 << shift[2]) - 1);
  a[1] = (r >> shift[2]) & ((1 << shift[1]) - 1);
  a[0] = r >> (shift[1] + shift[2]);
}

__device__ __forceinline__ int64_t offset5(const int64_t* s, int64_t b, const int64_t* x, int64_t h) {
  return b * s[0] + x[0] * s[1] + x[1] * s[2] + x[2] * s[3] + h * s[4];
}

// Mask information of one stationary row or walked column. For the query side: its window per
// axis [lo, hi) (NA) or its index `qi` in the sequence (FMHA). For the key side: its in-group
// position lo[] (NA) or its index qi (FMHA / additional keys). `ok` = a real token.
struct Info {
  int lo[3], hi[3];
  int qi;
  int ok;
};

// Stationary row r: the element offset of A1's and A2's row (and of the gradient rows), and its
// mask info. Returns false for padding rows.
struct RowAddr {
  int64_t a1, a2;  // offsets in A1 (dq: Q, dkdv: K) and A2 (dq: dO, dkdv: V)
  int64_t g1, g2;  // offsets in the gradient tensors (dq: dQ; dkdv: dK, dV)
  int64_t tok;     // dq: query token index for LSE/delta
  int64_t lsoff;   // dq: LSE offset
};

// kInfo = false: addresses only (the loaders), no window math.
template <bool kDkdv, bool kInfo = true>
__device__ __forceinline__ bool stationary_row(const BwdParams& p, const Ctx& c, int r, RowAddr& ad, Info& inf) {
  inf.ok = 0;
  inf.qi = 0;
  for (int i = 0; i < 3; ++i) inf.lo[i] = inf.hi[i] = 0;
  if (p.fmha || c.extra) {
    const int64_t i = c.row0 + r;
    const bool ok = i < c.nrows;
    inf.qi = static_cast<int>(i);
    inf.ok = ok;
    if (!kDkdv) {
      const int64_t tok = c.qbase + i;
      const int64_t x[3] = {tok, 0, 0};
      ad.a1 = offset5(p.qs, c.b, x, c.h);
      ad.a2 = offset5(p.dos, c.b, x, c.h);
      ad.g1 = offset5(p.dqs, c.b, x, c.h);
      ad.g2 = 0;
      ad.tok = tok;
      ad.lsoff = offset5(p.ls, c.b, x, c.h);
    } else {
      const int64_t tok = c.kvbase + i;  // FMHA keys or additional keys (kvbase = 0)
      ad.a1 = c.b * p.eks[0] + tok * p.eks[1] + c.hk * p.eks[2];
      ad.a2 = c.b * p.evs[0] + tok * p.evs[1] + c.hk * p.evs[2];
      ad.g1 = c.b * p.deks[0] + tok * p.deks[1] + c.hk * p.deks[2];
      ad.g2 = c.b * p.devs[0] + tok * p.devs[1] + c.hk * p.devs[2];
      ad.tok = 0;
      ad.lsoff = 0;
    }
    return ok;
  }
  int a[3];
  delin_pow2(r, kDkdv ? p.kv_shift : p.q_shift, a);
  const int64_t* origin = kDkdv ? p.kv_origin : p.q_origin;
  bool valid = true;
  int64_t x[3], tok = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t j = c.olo[i] + a[i];
    valid = valid && j < c.ohi[i];
    x[i] = c.g[i] + p.dilation[i] * j - origin[i];  // local coordinate
    tok = tok * p.q_extent[i] + x[i];               // dq: local query token
    if (!kDkdv && kInfo) {
      // padding rows get a clamped (valid) window; they are never stored
      const sem::Range w = sem::window(sem::min64(j, c.ohi[i] - 1), c.lg[i], c.ax[i]);
      inf.lo[i] = static_cast<int>(w.start);
      inf.hi[i] = static_cast<int>(w.end);
    } else {
      inf.lo[i] = static_cast<int>(j);
    }
  }
  inf.ok = valid;
  if (!kDkdv) {
    ad.a1 = offset5(p.qs, c.b, x, c.h);
    ad.a2 = offset5(p.dos, c.b, x, c.h);
    ad.g1 = offset5(p.dqs, c.b, x, c.h);
    ad.g2 = 0;
    ad.tok = tok;
    ad.lsoff = offset5(p.ls, c.b, x, c.h);
  } else {
    ad.a1 = offset5(p.ks, c.b, x, c.hk);
    ad.a2 = offset5(p.vs, c.b, x, c.hk);
    ad.g1 = offset5(p.dks, c.b, x, c.hk);
    ad.g2 = offset5(p.dvs, c.b, x, c.hk);
    ad.tok = 0;
    ad.lsoff = 0;
  }
  return valid;
}

// One walked tile.
struct Tile {
  int c[3];     // phase A: in-group origin per axis
  int n0;       // phase B: first walked index
  int head;     // dkdv: the query head of this step
  bool phase_a;
  bool masked;
};

// Per-axis tile classes are cached in shared memory by the tensor-core kernels for the first
// kMaxAxisTiles tiles of each axis; a tile past them is walked as a boundary tile (never skipped,
// always masked: exact through the element mask, only slower; an axis needs a window of more than
// ~16K to get there). The SIMT kernels compute the classes on the fly (no cache).
constexpr int kMaxAxisTiles = 256;

// Class of walked tile m along axis i: 0 empty, 1 interior and full, 2 boundary or partial (the
// combined class of a tile is empty if any axis is, unmasked only if every axis is 1).
template <bool kDkdv>
__device__ __forceinline__ int axis_class(const BwdParams& p, const Ctx& c, int i, int m) {
  const int64_t walk = kDkdv ? p.q_tile[i] : p.kv_tile[i];
  const int64_t lo = c.blo[i] + m * walk;
  const sem::Range own{c.olo[i], c.ohi[i]}, wt{lo, sem::min64(lo + walk, c.bhi[i])};
  // classify(query range, key range)
  const sem::TileClass cls = kDkdv ? sem::classify(wt, own, c.lg[i], c.ax[i]) : sem::classify(own, wt, c.lg[i], c.ax[i]);
  if (cls == sem::TileClass::empty) return 0;
  return (cls == sem::TileClass::interior && lo + walk <= c.bhi[i]) ? 1 : 2;
}

// Fill the per-axis class cache (every thread of the CTA takes a share; a barrier must follow).
template <bool kDkdv>
__device__ __forceinline__ void fill_axis_classes(const BwdParams& p, const Ctx& c, uint8_t (*cls)[kMaxAxisTiles],
                                                  int tid, int nthreads) {
  if (c.nA == 0) return;
  auto cached = [](int64_t n) { return static_cast<int>(sem::min64(n, kMaxAxisTiles)); };
  const int n0 = cached(c.nt[0]), n1 = cached(c.nt[1]), n2 = cached(c.nt[2]);
  for (int id = tid; id < n0 + n1 + n2; id += nthreads) {
    const int i = id < n0 ? 0 : id < n0 + n1 ? 1 : 2;
    const int m = id - (i == 0 ? 0 : i == 1 ? n0 : n0 + n1);
    cls[i][m] = static_cast<uint8_t>(axis_class<kDkdv>(p, c, i, m));
  }
}

// Walk step t (over heads x tiles for dkdv); false if the tile is empty. cls: the per-axis class
// cache, or nullptr.
template <bool kDkdv>
__device__ __forceinline__ bool tile_at(const BwdParams& p, const Ctx& c, int64_t t, Tile& tile,
                                        const uint8_t (*cls)[kMaxAxisTiles]) {
  const int64_t per_head = c.nA + c.nB;
  if (kDkdv) {
    const int64_t hi = c.group > 1 ? t / per_head : 0;
    tile.head = static_cast<int>(c.h + hi);
    t -= hi * per_head;
  } else {
    tile.head = static_cast<int>(c.h);
  }
  if (t < c.nA) {
    tile.phase_a = true;
    int m[3];
    {
      int r = static_cast<int>(t);
      const int n2 = static_cast<int>(c.nt[2]), n1 = static_cast<int>(c.nt[1]);
      m[2] = r % n2;
      r /= n2;
      m[1] = r % n1;
      m[0] = r / n1;
    }
    const int64_t* walk = kDkdv ? p.q_tile : p.kv_tile;
    if (cls != nullptr) {
      int cl[3];
#pragma unroll
      for (int i = 0; i < 3; ++i) cl[i] = m[i] < kMaxAxisTiles ? cls[i][m[i]] : 2;
      if (cl[0] == 0 || cl[1] == 0 || cl[2] == 0) return false;
#pragma unroll
      for (int i = 0; i < 3; ++i) tile.c[i] = static_cast<int>(c.blo[i] + m[i] * walk[i]);
      tile.masked = (cl[0] | cl[1] | cl[2]) > 1;
      return true;
    }
    // On the fly (the same classes; this form keeps the dq kernel at 168 registers).
    sem::TileClass cls3 = sem::TileClass::interior;
    bool full = true;
    for (int i = 0; i < 3; ++i) {
      tile.c[i] = static_cast<int>(c.blo[i] + m[i] * walk[i]);
      const int64_t end = sem::min64(tile.c[i] + walk[i], c.bhi[i]);
      full = full && (tile.c[i] + walk[i] <= c.bhi[i]);
      const sem::Range own{c.olo[i], c.ohi[i]}, wt{tile.c[i], end};
      // classify(query range, key range)
      cls3 = sem::combine(cls3, kDkdv ? sem::classify(wt, own, c.lg[i], c.ax[i]) : sem::classify(own, wt, c.lg[i], c.ax[i]));
    }
    if (cls3 == sem::TileClass::empty) return false;
    tile.masked = cls3 == sem::TileClass::boundary || !full;
    return true;
  }
  tile.phase_a = false;
  tile.n0 = static_cast<int>(c.nb_lo + (t - c.nA) * kTileN);
  const bool full = tile.n0 + kTileN <= c.nb_len;
  bool diag = false;
  if (p.fmha && p.fmha_causal) {
    // dq: key n visible to query row0 + r iff n <= row0 + r: unmasked if the tile's last key <= row0.
    // dkdv: query n sees key row0 + r iff row0 + r <= n: unmasked if the first query >= the last key.
    diag = kDkdv ? tile.n0 < c.row0 + kTileM - 1 : tile.n0 + kTileN - 1 > c.row0;
  }
  tile.masked = !full || diag;
  return true;
}

template <bool kDkdv>
__device__ __forceinline__ int64_t walk_total(const Ctx& c) {
  return kDkdv ? (c.nA + c.nB) * c.group : c.nA + c.nB;
}

template <bool kDkdv>
__device__ __forceinline__ int64_t next_tile(const BwdParams& p, const Ctx& c, int64_t t, Tile& tile,
                                             const uint8_t (*cls)[kMaxAxisTiles] = nullptr) {
  const int64_t total = walk_total<kDkdv>(c);
  while (t < total && !tile_at<kDkdv>(p, c, t, tile, cls)) ++t;
  return t;
}

// The walk step after `prev` (step t - 1): next_tile(t), but a phase-A step inside prev's head
// carries the per-axis tile indices of prev forward instead of dividing t by the tile counts (two
// 32-bit divisions, ~60 instructions per step and thread, ncu). Needs the class cache (cls).
template <bool kDkdv>
__device__ __forceinline__ int64_t next_tile_after(const BwdParams& p, const Ctx& c, int64_t t, const Tile& prev,
                                                   Tile& tile, const uint8_t (*cls)[kMaxAxisTiles]) {
  if (cls == nullptr || !prev.phase_a) return next_tile<kDkdv>(p, c, t, tile, cls);
  const int64_t head_base = (prev.head - c.h) * (c.nA + c.nB);  // step of prev's head's first tile
  const int* shift = kDkdv ? p.q_shift : p.kv_shift;             // the walked tile dims, log2
  const int n1 = static_cast<int>(c.nt[1]), n2 = static_cast<int>(c.nt[2]);
  int m[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) m[i] = (prev.c[i] - static_cast<int>(c.blo[i])) >> shift[i];
  for (; t - head_base < c.nA; ++t) {
    if (++m[2] == n2) {
      m[2] = 0;
      if (++m[1] == n1) {
        m[1] = 0;
        ++m[0];
      }
    }
    int cl[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) cl[i] = m[i] < kMaxAxisTiles ? cls[i][m[i]] : 2;
    if (cl[0] == 0 || cl[1] == 0 || cl[2] == 0) continue;
    tile.head = prev.head;
    tile.phase_a = true;
#pragma unroll
    for (int i = 0; i < 3; ++i) tile.c[i] = static_cast<int>(c.blo[i]) + (m[i] << shift[i]);
    tile.masked = (cl[0] | cl[1] | cl[2]) > 1;
    return t;
  }
  return next_tile<kDkdv>(p, c, t, tile, cls);  // phase B, the next head or the end
}

// Walked row kk of a tile: offsets of its B1 and B2 rows, its mask info (and, for dkdv, the LSE
// offset and token index of the query). Returns false for rows outside the walked range.
struct ColAddr {
  int64_t b1, b2;
  int64_t tok, lsoff;  // dkdv: query token index (delta) and LSE offset
};

template <bool kDkdv, bool kInfo = true>
__device__ __forceinline__ bool walked_row(const BwdParams& p, const Ctx& c, const Tile& tile, int kk, ColAddr& ad,
                                           Info& inf) {
  inf.ok = 0;
  inf.qi = 0;
  for (int i = 0; i < 3; ++i) inf.lo[i] = inf.hi[i] = 0;
  ad.tok = 0;
  ad.lsoff = 0;
  if (tile.phase_a) {
    int a[3];
    int64_t y[3], tok = 0;
    delin_pow2(kk, kDkdv ? p.q_shift : p.kv_shift, a);
    bool valid = true;
    for (int i = 0; i < 3; ++i) {
      const int64_t ci = tile.c[i] + a[i];
      valid = valid && ci < c.bhi[i];
      // dkdv: the local coordinate of the query and its local token; dq: the global coordinate of
      // the key (the origin is subtracted once per CTA below: a per-row subtraction here made the
      // hd128 dq kernel spill)
      y[i] = c.g[i] + p.dilation[i] * ci - (kDkdv ? p.q_origin[i] : 0);
      if (kDkdv) tok = tok * p.q_extent[i] + y[i];
      if (kDkdv) {
        if (kInfo && ci < c.bhi[i]) {
          const sem::Range w = sem::window(ci, c.lg[i], c.ax[i]);
          inf.lo[i] = static_cast<int>(w.start);
          inf.hi[i] = static_cast<int>(w.end);
        }
      } else {
        inf.lo[i] = static_cast<int>(ci);
      }
    }
    inf.ok = valid;
    if (kDkdv) {
      ad.b1 = offset5(p.qs, c.b, y, tile.head);
      ad.b2 = offset5(p.dos, c.b, y, tile.head);
      ad.tok = tok;
      ad.lsoff = offset5(p.ls, c.b, y, tile.head);
    } else {
      ad.b1 = offset5(p.ks, c.b, y, c.hk) - c.k_origin_off;
      ad.b2 = offset5(p.vs, c.b, y, c.hk) - c.v_origin_off;
    }
    return valid;
  }
  const int64_t n = tile.n0 + kk;
  const bool ok = n < c.nb_len;
  inf.ok = ok;
  inf.qi = static_cast<int>(n);
  if (!kDkdv) {
    const int64_t tok = c.kvbase + n;
    ad.b1 = c.b * p.eks[0] + tok * p.eks[1] + c.hk * p.eks[2];
    ad.b2 = c.b * p.evs[0] + tok * p.evs[1] + c.hk * p.evs[2];
    return ok;
  }
  int64_t y[3];
  if (p.fmha) {
    y[0] = c.qbase + n;
    y[1] = y[2] = 0;
    ad.tok = y[0];
  } else {
    // additional keys: walked queries are every local query token of the batch entry, row-major
    int64_t r = ok ? n : 0;
    y[2] = r % p.q_extent[2];
    r /= p.q_extent[2];
    y[1] = r % p.q_extent[1];
    y[0] = r / p.q_extent[1];
    ad.tok = ok ? n : 0;
  }
  ad.b1 = offset5(p.qs, c.b, y, tile.head);
  ad.b2 = offset5(p.dos, c.b, y, tile.head);
  ad.lsoff = offset5(p.ls, c.b, y, tile.head);
  return ok;
}

// Does the query of (row, col) see the key of (row, col)? dq: row = query, col = key; dkdv: row =
// key, col = query. Only called on masked tiles, by the SIMT kernels (the tensor-core kernels test
// bit words, tile_mask.cuh).
template <bool kDkdv>
__device__ __forceinline__ bool visible(const BwdParams& p, const Ctx& c, const Tile& tile, const Info& row,
                                        const Info& col) {
  if (!col.ok) return false;
  if (tile.phase_a) {
    const Info& q = kDkdv ? col : row;
    const Info& k = kDkdv ? row : col;
    return q.lo[0] <= k.lo[0] && k.lo[0] < q.hi[0] && q.lo[1] <= k.lo[1] && k.lo[1] < q.hi[1] &&
           q.lo[2] <= k.lo[2] && k.lo[2] < q.hi[2];
  }
  if (p.fmha && p.fmha_causal) return kDkdv ? row.qi <= col.qi : col.qi <= row.qi;
  return true;
}

// Per-walked-column statistics in shared memory (dkdv: the query's LSE, -inf for a walked row that
// is not a query, and delta; with a fused dQ, the element offset of its row in dq_accum, -1 for a
// walked row that is not a query). The tensor-core kernel copies LSE and delta by cp.async, so the
// LSE stays as stored and lse_log2 converts it where it is used.
struct ColStat {
  float lse;
  float delta;
  int64_t acc;
};

// LSE * log2(e); a query that attends nothing (LSE -inf) and a walked row that is not a query get
// +inf, i.e. P = 0 everywhere.
__device__ __forceinline__ float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

// Walked-row info + statistics for one tile, written by the threads of the CTA.
template <bool kDkdv, int kNT>
__device__ __forceinline__ void fill_cols(const BwdParams& p, const Ctx& c, const Tile& tile, Info* s_info,
                                          ColStat* s_stat) {
  for (int kk = threadIdx.x; kk < kTileN; kk += kNT) {
    ColAddr ad;
    Info inf;
    const bool ok = walked_row<kDkdv>(p, c, tile, kk, ad, inf);
    s_info[kk] = inf;
    if (kDkdv) {
      ColStat st{-INFINITY, 0.f, -1};
      if (ok) {
        st.lse = p.lse[ad.lsoff];
        st.delta = p.delta[(c.b * p.tokens + ad.tok) * p.heads + tile.head];
      }
      s_stat[kk] = st;
    }
  }
}

// Element offsets of a walked row in B1 and B2 (cached per tile in shared memory).
struct RowOff {
  int64_t b1, b2;
};

// dkdv, phase A: the walked query row kk of a tile at in-group origin tile.c is at local coordinate
// y0 + dilation * a (a = its in-tile offsets), so its Q / dO / LSE offsets and its token index are
// a per-tile base plus a per-row term that is the same for every tile: computed once per CTA.
struct WalkedRel {
  int64_t q, dout, lse, tok;
};

template <int kNT>
__device__ __forceinline__ void fill_walked_rel(const BwdParams& p, WalkedRel* rel, int tid) {
  const int64_t ext[3] = {p.q_extent[1] * p.q_extent[2], p.q_extent[2], 1};  // token index per coordinate
  for (int kk = tid; kk < kTileN; kk += kNT) {
    int a[3];
    delin_pow2(kk, p.q_shift, a);
    WalkedRel r{0, 0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      const int64_t d = a[i] * p.dilation[i];
      r.q += d * p.qs[1 + i];
      r.dout += d * p.dos[1 + i];
      r.lse += d * p.ls[1 + i];
      r.tok += d * ext[i];
    }
    rel[kk] = r;
  }
}

// For the tensor-core kernels, whose masks are bit words built from the stationary rows: per
// walked row whether it is a real token (s_ok), the statistics (dkdv: LSE and delta by cp.async,
// waited for with the tile's K / V or Q / dO rows), and its B1/B2 offsets (one thread per row, so
// that the tile loaders read the addresses instead of recomputing them per 16-byte chunk). dkdv
// phase-A rows come from the per-CTA table `rel` (fill_walked_rel) plus a per-tile base.
template <bool kDkdv, int kNT>
__device__ __forceinline__ void fill_cols_off(const BwdParams& p, const Ctx& c, const Tile& tile, int* s_ok,
                                              ColStat* s_stat, RowOff* s_off, const WalkedRel* rel) {
  auto stats = [&](int kk, bool ok, int64_t lsoff, int64_t tok) {
    if (!ok) {
      s_stat[kk] = ColStat{-INFINITY, 0.f, -1};
      return;
    }
    const int64_t row = (c.b * p.tokens + tok) * p.heads + tile.head;  // [B, tokens, H]
    cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(*reinterpret_cast<const uint32_t*>(p.lse + lsoff),
                                                         *reinterpret_cast<uint32_t*>(&s_stat[kk].lse), true);
    cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(*reinterpret_cast<const uint32_t*>(p.delta + row),
                                                         *reinterpret_cast<uint32_t*>(&s_stat[kk].delta), true);
    s_stat[kk].acc = row * p.dq_accum_ld;
  };
  if (kDkdv && tile.phase_a) {
    int64_t bq = c.b * p.qs[0] + tile.head * p.qs[4], bdo = c.b * p.dos[0] + tile.head * p.dos[4];
    int64_t bls = c.b * p.ls[0] + tile.head * p.ls[4], btok = 0;
    int e[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t y0 = c.g[i] + p.dilation[i] * tile.c[i] - p.q_origin[i];
      bq += y0 * p.qs[1 + i];
      bdo += y0 * p.dos[1 + i];
      bls += y0 * p.ls[1 + i];
      btok = btok * p.q_extent[i] + y0;
      e[i] = static_cast<int>(c.bhi[i] - tile.c[i]);  // in-tile offsets below this are in the walked box
    }
    for (int kk = threadIdx.x; kk < kTileN; kk += kNT) {
      int a[3];
      delin_pow2(kk, p.q_shift, a);
      const bool ok = a[0] < e[0] && a[1] < e[1] && a[2] < e[2];
      const WalkedRel r = rel[kk];
      s_ok[kk] = ok ? 1 : 0;
      stats(kk, ok, bls + r.lse, btok + r.tok);
      s_off[kk] = RowOff{bq + r.q, bdo + r.dout};
    }
    return;
  }
  for (int kk = threadIdx.x; kk < kTileN; kk += kNT) {
    ColAddr ad;
    Info inf;
    const bool ok = walked_row<kDkdv, false>(p, c, tile, kk, ad, inf);
    s_ok[kk] = ok ? 1 : 0;
    if (kDkdv) stats(kk, ok, ad.lsoff, ad.tok);
    s_off[kk] = RowOff{ad.b1, ad.b2};
  }
}

}  // namespace nattn::cuda::fna_bwd
