// Device-side tiling of the portable forward kernels: which queries a CTA owns, which KV tiles it
// visits (the exact KV box of its queries, from nattn/semantics.h), how each tile is classified
// (empty / interior = no mask / boundary = element mask), and the addresses of Q/K/V rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm80/fna_fwd/params.h"
#include "nattn/semantics.h"

namespace nattn::cuda::fna {

namespace sem = ::nattn::sem;

template <class T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Per-CTA context; every thread computes the same values.
struct Ctx {
  int64_t b = 0, h = 0, hk = 0;
  sem::Axis ax[3];
  int64_t g[3] = {0, 0, 0}, lg[3] = {1, 1, 1};
  int64_t qlo[3] = {0, 0, 0}, qhi[3] = {1, 1, 1};  // in-group query box (valid part), global indices
  int64_t blo[3] = {0, 0, 0}, bhi[3] = {1, 1, 1};  // KV box: union of the windows
  int64_t nt[3] = {1, 1, 1};                       // KV tiles per axis over the box
  int64_t nA = 0, nB = 0;                          // NA tiles, phase-B (extra / FMHA) tiles
  int64_t q_row0 = 0, sq = 0, skv = 0, qbase = 0, kvbase = 0;  // FMHA
  int64_t nb_len = 0;                              // phase-B token count
  bool any_row = false;
};

__device__ __forceinline__ void make_ctx(const FwdParams& p, Ctx& c) {
  c.h = blockIdx.y;
  c.b = blockIdx.z;
  c.hk = c.h / (p.heads / p.heads_kv);
  if (!p.fmha) {
    int64_t tl = blockIdx.x;
    const int64_t ntq = p.q_tiles[0] * p.q_tiles[1] * p.q_tiles[2];
    int64_t gl = tl / ntq;
    tl -= gl * ntq;
    int64_t t[3];
    t[2] = tl % p.q_tiles[2];
    tl /= p.q_tiles[2];
    t[1] = tl % p.q_tiles[1];
    t[0] = tl / p.q_tiles[1];
    c.g[2] = gl % p.dilation[2];
    gl /= p.dilation[2];
    c.g[1] = gl % p.dilation[1];
    c.g[0] = gl / p.dilation[1];
    c.any_row = true;
    for (int i = 0; i < 3; ++i) {
      c.ax[i] = sem::Axis{p.extent[i], p.kernel[i], p.stride[i], p.dilation[i], p.causal[i] != 0};
      c.lg[i] = sem::group_extent(p.extent[i], p.dilation[i], c.g[i]);
      // In-group (global) indices of the group's local queries; tiles start at the first of them.
      const int64_t jlo = sem::group_begin(p.q_origin[i], p.dilation[i], c.g[i]);
      const int64_t jhi = sem::group_begin(p.q_origin[i] + p.q_extent[i], p.dilation[i], c.g[i]);
      c.qlo[i] = jlo + t[i] * p.q_tile[i];
      c.qhi[i] = sem::min64(c.qlo[i] + p.q_tile[i], jhi);
      if (c.qlo[i] >= c.qhi[i]) c.any_row = false;
    }
    if (!c.any_row) return;
    c.nA = 1;
    for (int i = 0; i < 3; ++i) {
      const sem::Range box = sem::kv_box(sem::Range{c.qlo[i], c.qhi[i]}, c.lg[i], c.ax[i]);
      c.blo[i] = box.start;
      c.bhi[i] = box.end;
      c.nt[i] = sem::ceil_div(box.size(), p.kv_tile[i]);
      c.nA *= c.nt[i];
    }
    c.nb_len = p.num_extra;
    c.nB = sem::ceil_div(p.num_extra, kBlockN);
  } else {
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
    c.q_row0 = static_cast<int64_t>(blockIdx.x) * p.block_m;
    c.any_row = c.q_row0 < c.sq;
    if (!c.any_row) return;
    int64_t kv_end = c.skv;
    if (p.fmha_causal) kv_end = sem::min64(kv_end, sem::min64(c.q_row0 + p.block_m, c.sq));
    c.nb_len = kv_end;
    c.nB = sem::ceil_div(kv_end, kBlockN);
    c.nA = 0;
  }
}

// The CTA context lives in shared memory (computed once by thread 0): it keeps ~80 registers of
// int64 values out of the register file. Must be called by every thread (it synchronises).
__device__ __forceinline__ const Ctx& shared_ctx(const FwdParams& p) {
  __shared__ __align__(16) unsigned char raw[sizeof(Ctx)];
  Ctx& c = *reinterpret_cast<Ctx*>(raw);
  if (threadIdx.x == 0) {
    Ctx tmp;
    make_ctx(p, tmp);
    c = tmp;
  }
  __syncthreads();
  return c;
}

// Decompose a linear in-tile index (row-major, last axis fastest) by a tile shape.
__device__ __forceinline__ void delin(int64_t r, const int64_t* tile, int64_t* a) {
  a[2] = r % tile[2];
  r /= tile[2];
  a[1] = r % tile[1];
  a[0] = r / tile[1];
}

// Decompose an in-tile index by a power-of-two tile shape given as log2 per axis.
__device__ __forceinline__ void delin_pow2(int r, const int* shift, int* a) {
  a[2] = r & ((1 << shift[2]) - 1);
  a[1] = (r >> shift[2]) & ((1 << shift[1]) - 1);
  a[0] = r >> (shift[1] + shift[2]);
}

// Query row r of the CTA: original spatial coordinates (FMHA: token index in x[0]); false if the
// row is padding.
__device__ __forceinline__ bool row_coords(const FwdParams& p, const Ctx& c, int r, int64_t* x) {
  if (p.fmha) {
    const int64_t i = c.q_row0 + r;
    x[0] = c.qbase + i;
    x[1] = x[2] = 0;
    return i < c.sq;
  }
  int a[3];
  delin_pow2(r, p.q_shift, a);
  bool valid = true;
  for (int i = 0; i < 3; ++i) {
    const int64_t j = c.qlo[i] + a[i];
    valid = valid && j < c.qhi[i];
    x[i] = c.g[i] + p.dilation[i] * j - p.q_origin[i];  // local coordinate
  }
  return valid;
}

__device__ __forceinline__ int64_t offset5(const int64_t* s, int64_t b, const int64_t* x, int64_t h) {
  return b * s[0] + x[0] * s[1] + x[1] * s[2] + x[2] * s[3] + h * s[4];
}

// What a thread needs to test whether its query row sees a key.
// 32-bit: the host checks that every extent and sequence length is below 2^31.
struct RowWin {
  int lo[3], hi[3];  // NA: in-group window per axis
  int qi;            // FMHA: query index in the sequence (causal limit)
};

__device__ __forceinline__ void row_window(const FwdParams& p, const Ctx& c, int r, RowWin& w) {
  if (p.fmha) {
    w.qi = static_cast<int>(c.q_row0 + r);
    return;
  }
  int a[3];
  delin_pow2(r, p.q_shift, a);
  for (int i = 0; i < 3; ++i) {
    const int64_t j = sem::min64(c.qlo[i] + a[i], c.qhi[i] - 1);  // padding rows: any valid window
    const sem::Range win = sem::window(j, c.lg[i], c.ax[i]);
    w.lo[i] = static_cast<int>(win.start);
    w.hi[i] = static_cast<int>(win.end);
  }
  w.qi = 0;
}

// One KV tile of the CTA's walk.
struct Tile {
  int c[3];         // phase A: in-group origin per axis
  int n0;           // phase B: first token
  bool phase_a;
  bool masked;
};

// Tile t of the walk; false if it is empty (no query of the CTA sees any of its keys).
__device__ __forceinline__ bool tile_at(const FwdParams& p, const Ctx& c, int64_t t, Tile& tile) {
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
    sem::TileClass cls = sem::TileClass::interior;
    bool full = true;
    for (int i = 0; i < 3; ++i) {
      tile.c[i] = static_cast<int>(c.blo[i] + m[i] * p.kv_tile[i]);
      const int64_t end = sem::min64(tile.c[i] + p.kv_tile[i], c.bhi[i]);
      full = full && (tile.c[i] + p.kv_tile[i] <= c.bhi[i]);
      cls = sem::combine(cls, sem::classify(sem::Range{c.qlo[i], c.qhi[i]}, sem::Range{tile.c[i], end}, c.lg[i], c.ax[i]));
    }
    if (cls == sem::TileClass::empty) return false;
    tile.masked = cls == sem::TileClass::boundary || !full;
    return true;
  }
  tile.phase_a = false;
  tile.n0 = static_cast<int>((t - c.nA) * kBlockN);
  const bool full = tile.n0 + kBlockN <= c.nb_len;
  tile.masked = !full || (p.fmha && p.fmha_causal && tile.n0 + kBlockN - 1 > c.q_row0);
  return true;
}

// First non-empty tile at index >= t (or nA + nB).
__device__ __forceinline__ int64_t next_tile(const FwdParams& p, const Ctx& c, int64_t t, Tile& tile) {
  const int64_t total = c.nA + c.nB;
  while (t < total && !tile_at(p, c, t, tile)) ++t;
  return t;
}

// Element offsets of key row kk of a tile in K and V, or false if the row is outside the box.
__device__ __forceinline__ bool key_offsets(const FwdParams& p, const Ctx& c, const Tile& tile, int kk,
                                            int64_t& koff, int64_t& voff) {
  if (tile.phase_a) {
    int a[3];
    int64_t y[3];
    delin_pow2(kk, p.kv_shift, a);
    bool valid = true;
    for (int i = 0; i < 3; ++i) {
      const int ci = tile.c[i] + a[i];
      valid = valid && ci < c.bhi[i];
      y[i] = c.g[i] + p.dilation[i] * ci - p.kv_origin[i];  // local coordinate
    }
    koff = offset5(p.ks, c.b, y, c.hk);
    voff = offset5(p.vs, c.b, y, c.hk);
    return valid;
  }
  const int64_t n = tile.n0 + kk;
  const int64_t tok = c.kvbase + n;
  koff = c.b * p.eks[0] + tok * p.eks[1] + c.hk * p.eks[2];
  voff = c.b * p.evs[0] + tok * p.evs[1] + c.hk * p.evs[2];
  return n < c.nb_len;
}

// Per-column key description for the element mask of a boundary tile.
struct KeyPos {
  int c[3];  // phase A: in-group coordinate; phase B: c[0] = token index in the sequence
};

__device__ __forceinline__ void key_pos(const FwdParams& p, const Tile& tile, int kk, KeyPos& k) {
  if (tile.phase_a) {
    int a[3];
    delin_pow2(kk, p.kv_shift, a);
    for (int i = 0; i < 3; ++i) k.c[i] = tile.c[i] + a[i];
  } else {
    k.c[0] = static_cast<int>(tile.n0 + kk);
  }
}

__device__ __forceinline__ bool sees(const FwdParams& p, const Ctx& c, const Tile& tile, const RowWin& w,
                                     const KeyPos& k) {
  if (tile.phase_a) {
    // The window lies inside the KV box, so this also rejects keys past the box.
    return w.lo[0] <= k.c[0] && k.c[0] < w.hi[0] && w.lo[1] <= k.c[1] && k.c[1] < w.hi[1] &&
           w.lo[2] <= k.c[2] && k.c[2] < w.hi[2];
  }
  return k.c[0] < c.nb_len && !(p.fmha && p.fmha_causal && k.c[0] > w.qi);
}

__device__ __forceinline__ const void* key_base(const FwdParams& p, const Tile& tile) {
  return tile.phase_a ? p.k : p.ek;
}
__device__ __forceinline__ const void* value_base(const FwdParams& p, const Tile& tile) {
  return tile.phase_a ? p.v : p.ev;
}

}  // namespace nattn::cuda::fna
