// SIMT forward kernel (any dtype, fp32 math, SM75+): the fp32 path, and the fallback for fp16/bf16
// below SM80. Same CTA/tile walk as the tensor-core kernel (fna_common.cuh). 128 threads: two
// threads per query row, each owning every other key of a tile and every other output column.
// Synchronous loads (16-byte when aligned); K and V share one smem buffer.
#pragma once

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_fwd/fna_common.cuh"

namespace nattn::cuda::fna {

template <class T> constexpr int simt_pad() { return sizeof(T) == 4 ? 1 : 2; }

template <class T, int HD, int LD, int kRows, class RowFn>
__device__ __forceinline__ void load_rows_sync(T* smem, const T* gbase, int ncols, bool aligned, RowFn row_fn) {
  constexpr int E = 16 / sizeof(T);
  constexpr int kChunksPerRow = HD / E;
  constexpr int kChunks = kRows * kChunksPerRow;
  for (int id = threadIdx.x; id < kChunks; id += kThreads) {
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
      for (int i = 0; i < E; ++i) dst[i] = (ok && col + i < ncols) ? gbase[off + col + i] : from_float<T>(0.f);
    }
  }
}

template <class T, int HD>
__global__ void __launch_bounds__(kThreads) fna_fwd_simt_kernel(const __grid_constant__ FwdParams p) {
  constexpr int LD = HD + simt_pad<T>();
  constexpr int kHalfN = kBlockN / 2;
  constexpr int kHalfD = HD / 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sKV = sQ + kBlockM * LD;

  const Ctx& c = shared_ctx(p);
  if (!c.any_row) return;
  const int tid = threadIdx.x;
  const int row = tid >> 1, half = tid & 1;
  const unsigned lane = tid & 31;
  const bool aligned = p.aligned != 0;

  load_rows_sync<T, HD, LD, kBlockM>(sQ, static_cast<const T*>(p.q), p.head_dim, aligned, [&](int r, int64_t& off) {
    int64_t x[3];
    const bool ok = row_coords(p, c, r, x);
    off = offset5(p.qs, c.b, x, c.h);
    return ok;
  });
  RowWin win;
  row_window(p, c, row, win);

  float acc[kHalfD];
#pragma unroll
  for (int j = 0; j < kHalfD; ++j) acc[j] = 0.f;
  float m = -INFINITY, l = 0.f;

  const int64_t total = c.nA + c.nB;
  Tile tile;
  for (int64_t t = next_tile(p, c, 0, tile); t < total; t = next_tile(p, c, t + 1, tile)) {
    __syncthreads();
    load_rows_sync<T, HD, LD, kBlockN>(sKV, static_cast<const T*>(key_base(p, tile)), p.head_dim, aligned,
                                       [&](int kk, int64_t& off) {
                                         int64_t voff;
                                         return key_offsets(p, c, tile, kk, off, voff);
                                       });
    __syncthreads();
    float s[kHalfN];
#pragma unroll
    for (int i = 0; i < kHalfN; ++i) s[i] = 0.f;
    const T* qrow = sQ + row * LD;
#pragma unroll 4
    for (int d = 0; d < HD; ++d) {
      const float qd = to_float(qrow[d]);
#pragma unroll
      for (int i = 0; i < kHalfN; ++i) s[i] += qd * to_float(sKV[(2 * i + half) * LD + d]);
    }
    float mx = m;
#pragma unroll
    for (int i = 0; i < kHalfN; ++i) {
      s[i] *= p.scale_log2;
      if (tile.masked) {
        KeyPos kp;
        key_pos(p, tile, 2 * i + half, kp);
        if (!sees(p, c, tile, win, kp)) s[i] = -INFINITY;
      }
      mx = fmaxf(mx, s[i]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float ref = mx == -INFINITY ? 0.f : mx;
    const float alpha = exp2f(m - ref);
    m = mx;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kHalfN; ++i) {
      s[i] = exp2f(s[i] - ref);
      sum += s[i];
    }
    l = l * alpha + sum;
#pragma unroll
    for (int j = 0; j < kHalfD; ++j) acc[j] *= alpha;

    __syncthreads();
    load_rows_sync<T, HD, LD, kBlockN>(sKV, static_cast<const T*>(value_base(p, tile)), p.head_dim_v, aligned,
                                       [&](int kk, int64_t& off) {
                                         int64_t koff;
                                         return key_offsets(p, c, tile, kk, koff, off);
                                       });
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kHalfN; ++i) {
      const float p0 = __shfl_sync(0xffffffffu, s[i], lane & ~1u);
      const float p1 = __shfl_sync(0xffffffffu, s[i], lane | 1u);
      const T* v0 = sKV + (2 * i) * LD + half;
      const T* v1 = v0 + LD;
#pragma unroll
      for (int j = 0; j < kHalfD; ++j) acc[j] += p0 * to_float(v0[2 * j]) + p1 * to_float(v1[2 * j]);
    }
  }

  float lt = l + __shfl_xor_sync(0xffffffffu, l, 1);
  int64_t x[3];
  if (!row_coords(p, c, row, x)) return;
  const float inv = lt > 0.f ? 1.f / lt : 0.f;
  T* gout = static_cast<T*>(p.o);
  const int64_t ooff = offset5(p.os, c.b, x, c.h);
#pragma unroll
  for (int j = 0; j < kHalfD; ++j) {
    const int col = 2 * j + half;
    if (col < p.head_dim_v) gout[ooff + col] = from_float<T>(acc[j] * inv);
  }
  if (p.lse != nullptr && half == 0)
    p.lse[offset5(p.ls, c.b, x, c.h)] = lt > 0.f ? (m + __log2f(lt)) * 0.69314718055994531f : -INFINITY;
}

template <class T, int HD>
constexpr int simt_smem_bytes() {
  return (kBlockM + kBlockN) * (HD + simt_pad<T>()) * static_cast<int>(sizeof(T));
}

template <class T, int HD>
void launch_simt(const FwdParams& p, cudaStream_t stream, dim3 grid) {
  constexpr int smem = simt_smem_bytes<T, HD>();
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(fna_fwd_simt_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  fna_fwd_simt_kernel<T, HD><<<grid, kThreads, smem, stream>>>(p);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna
