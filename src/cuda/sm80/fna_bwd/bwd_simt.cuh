// SIMT backward kernels (fp32 math, any dtype, SM75+): the fp32 path and the fallback for
// fp16/bf16 below SM80. Same CTA / tile walk as the tensor-core kernels (bwd_common.cuh): 128
// threads, two per stationary row, each owning every other walked column of a 32-column half tile
// and every other accumulator column. Synchronous loads, one buffer per operand.
#pragma once

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_bwd/bwd_common.cuh"

namespace nattn::cuda::fna_bwd {

constexpr int kSimtThreads = 128;

template <class T> constexpr int simt_pad() { return sizeof(T) == 4 ? 1 : 2; }
template <class T, int HD> constexpr int simt_ld() { return HD + simt_pad<T>(); }

template <class T, int HD>
constexpr int simt_smem_bytes() {
  return 4 * kTileM * simt_ld<T, HD>() * static_cast<int>(sizeof(T));
}

template <class T, int LD, int HD, int kRows, class RowFn>
__device__ __forceinline__ void load_rows_sync(T* smem, const T* gbase, int ncols, bool aligned, RowFn row_fn) {
  constexpr int E = 16 / sizeof(T);
  constexpr int kChunksPerRow = HD / E;
  constexpr int kChunks = kRows * kChunksPerRow;
  for (int id = threadIdx.x; id < kChunks; id += kSimtThreads) {
    const int row = id / kChunksPerRow;
    const int col = (id % kChunksPerRow) * E;
    int64_t off = 0;
    const bool ok = row_fn(row, off) && col < ncols;
    T* dst = smem + row * LD + col;
    if (ok && aligned) {
      const uint4 v = *reinterpret_cast<const uint4*>(gbase + off + col);
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int i = 0; i < E; ++i) dst[i] = e[i];
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) dst[i] = (ok && col + i < ncols) ? gbase[off + col + i] : from_f<T>(0.f);
    }
  }
}

template <class T, int HD, bool kDkdv>
__global__ void __launch_bounds__(kSimtThreads) fna_bwd_simt_kernel(const __grid_constant__ BwdParams p) {
  constexpr int LD = simt_ld<T, HD>();
  constexpr int kSub = 32;
  constexpr int kHalfSub = kSub / 2;
  constexpr int kHalfD = HD / 2;
  constexpr int kAcc = kDkdv ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sA1 = reinterpret_cast<T*>(smem_raw);
  T* sA2 = sA1 + kTileM * LD;
  T* sB1 = sA2 + kTileM * LD;
  T* sB2 = sB1 + kTileN * LD;
  __shared__ Info s_cinfo[kTileN];
  __shared__ ColStat s_cstat[kTileN];

  const Ctx& c = shared_ctx<kDkdv>(p);
  if (!c.any_row) return;
  const int tid = threadIdx.x;
  const int row = tid >> 1, hf = tid & 1;
  const unsigned lane = tid & 31;
  const bool aligned = p.aligned != 0;
  const T* gA1 = static_cast<const T*>(kDkdv ? (p.fmha || c.extra ? p.ek : p.k) : p.q);
  const T* gA2 = static_cast<const T*>(kDkdv ? (p.fmha || c.extra ? p.ev : p.v) : p.dout);

  load_rows_sync<T, LD, HD, kTileM>(sA1, gA1, p.head_dim, aligned, [&](int r, int64_t& off) {
    RowAddr ad;
    Info inf;
    const bool ok = stationary_row<kDkdv, false>(p, c, r, ad, inf);
    off = ad.a1;
    return ok;
  });
  load_rows_sync<T, LD, HD, kTileM>(sA2, gA2, p.head_dim_v, aligned, [&](int r, int64_t& off) {
    RowAddr ad;
    Info inf;
    const bool ok = stationary_row<kDkdv, false>(p, c, r, ad, inf);
    off = ad.a2;
    return ok;
  });
  RowAddr rad;
  Info rinfo;
  const bool row_ok = stationary_row<kDkdv>(p, c, row, rad, rinfo);
  float rl2 = INFINITY, rdelta = 0.f;
  if (!kDkdv && row_ok) {
    rl2 = lse_log2(p.lse[rad.lsoff]);
    rdelta = p.delta[(c.b * p.tokens + rad.tok) * p.heads + c.h];
  }

  float acc[kAcc][kHalfD];
#pragma unroll
  for (int a = 0; a < kAcc; ++a)
#pragma unroll
    for (int j = 0; j < kHalfD; ++j) acc[a][j] = 0.f;

  const int64_t total = walk_total<kDkdv>(c);
  Tile tile;
  for (int64_t t = next_tile<kDkdv>(p, c, 0, tile); t < total; t = next_tile<kDkdv>(p, c, t + 1, tile)) {
    __syncthreads();  // the previous tile is consumed
    const T* gB1;
    const T* gB2;
    if (kDkdv) {
      gB1 = static_cast<const T*>(p.q);
      gB2 = static_cast<const T*>(p.dout);
    } else {
      gB1 = static_cast<const T*>(tile.phase_a ? p.k : p.ek);
      gB2 = static_cast<const T*>(tile.phase_a ? p.v : p.ev);
    }
    load_rows_sync<T, LD, HD, kTileN>(sB1, gB1, p.head_dim, aligned, [&](int kk, int64_t& off) {
      ColAddr ad;
      Info inf;
      const bool ok = walked_row<kDkdv, false>(p, c, tile, kk, ad, inf);
      off = ad.b1;
      return ok;
    });
    load_rows_sync<T, LD, HD, kTileN>(sB2, gB2, p.head_dim_v, aligned, [&](int kk, int64_t& off) {
      ColAddr ad;
      Info inf;
      const bool ok = walked_row<kDkdv, false>(p, c, tile, kk, ad, inf);
      off = ad.b2;
      return ok;
    });
    fill_cols<kDkdv, kSimtThreads>(p, c, tile, s_cinfo, s_cstat);
    __syncthreads();

#pragma unroll 1
    for (int sub = 0; sub < kTileN / kSub; ++sub) {
      const int n0 = sub * kSub;
      float s[kHalfSub], dp[kHalfSub];
#pragma unroll
      for (int i = 0; i < kHalfSub; ++i) s[i] = dp[i] = 0.f;
      const T* a1 = sA1 + row * LD;
      const T* a2 = sA2 + row * LD;
#pragma unroll 4
      for (int d = 0; d < HD; ++d) {
        const float x1 = to_f(a1[d]);
        const float x2 = to_f(a2[d]);
#pragma unroll
        for (int i = 0; i < kHalfSub; ++i) {
          const int col = n0 + 2 * i + hf;
          s[i] += x1 * to_f(sB1[col * LD + d]);
          dp[i] += x2 * to_f(sB2[col * LD + d]);
        }
      }
#pragma unroll
      for (int i = 0; i < kHalfSub; ++i) {
        const int col = n0 + 2 * i + hf;
        const float l2 = kDkdv ? lse_log2(s_cstat[col].lse) : rl2;
        const float dl = kDkdv ? s_cstat[col].delta : rdelta;
        float pr = exp2f(s[i] * p.scale_log2 - l2);
        if (tile.masked && !visible<kDkdv>(p, c, tile, rinfo, s_cinfo[col])) pr = 0.f;
        s[i] = pr;
        dp[i] = pr * (dp[i] - dl);
      }
#pragma unroll
      for (int i = 0; i < kHalfSub; ++i) {
        const float d0 = __shfl_sync(0xffffffffu, dp[i], lane & ~1u);
        const float d1 = __shfl_sync(0xffffffffu, dp[i], lane | 1u);
        const T* w0 = sB1 + (n0 + 2 * i) * LD + hf;
        const T* w1 = w0 + LD;
#pragma unroll
        for (int j = 0; j < kHalfD; ++j) acc[0][j] += d0 * to_f(w0[2 * j]) + d1 * to_f(w1[2 * j]);
        if (kDkdv) {
          const float p0 = __shfl_sync(0xffffffffu, s[i], lane & ~1u);
          const float p1 = __shfl_sync(0xffffffffu, s[i], lane | 1u);
          const T* v0 = sB2 + (n0 + 2 * i) * LD + hf;
          const T* v1 = v0 + LD;
#pragma unroll
          for (int j = 0; j < kHalfD; ++j) acc[kAcc - 1][j] += p0 * to_f(v0[2 * j]) + p1 * to_f(v1[2 * j]);
        }
      }
    }
  }

  if (!row_ok) return;
  T* g1 = static_cast<T*>(kDkdv ? (p.fmha || c.extra ? p.dek : p.dk) : p.dq);
  T* g2 = static_cast<T*>(kDkdv ? (p.fmha || c.extra ? p.dev : p.dv) : nullptr);
#pragma unroll
  for (int j = 0; j < kHalfD; ++j) {
    const int col = 2 * j + hf;
    if (col < p.head_dim) g1[rad.g1 + col] = from_f<T>(acc[0][j] * p.scale);
    if (kDkdv && col < p.head_dim_v) g2[rad.g2 + col] = from_f<T>(acc[kAcc - 1][j]);
  }
}

template <class T, int HD>
void launch_simt(const BwdParams& p, bool dkdv, int /*stages*/, dim3 grid, cudaStream_t stream) {
  constexpr int smem = simt_smem_bytes<T, HD>();
  if (dkdv) {
    NATTN_CUDA_CHECK(cudaFuncSetAttribute(fna_bwd_simt_kernel<T, HD, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    fna_bwd_simt_kernel<T, HD, true><<<grid, kSimtThreads, smem, stream>>>(p);
  } else {
    NATTN_CUDA_CHECK(cudaFuncSetAttribute(fna_bwd_simt_kernel<T, HD, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    fna_bwd_simt_kernel<T, HD, false><<<grid, kSimtThreads, smem, stream>>>(p);
  }
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna_bwd
