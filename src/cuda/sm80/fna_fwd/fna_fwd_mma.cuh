// Tensor-core forward kernel (fp16/bf16, SM80+), FA2 structure: a CTA of kBlockM queries (a
// 1-D/2-D/3-D box) is 2 warps x 32 query rows (head dim <= 128) or 4 warps x 16 rows (256); KV
// tiles of kBlockN keys (boxes of the KV tile shape) are walked over the exact KV box of the CTA's
// windows, then the phase-B tokens (additional KV / FMHA keys). mma.sync m16n8k16 (CuTe SM80
// atoms), ldmatrix (x4, .trans for V), cp.async with zero fill. Online softmax in fp32 (log2
// domain), LSE output (natural log).
#pragma once

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_fwd/fna_common.cuh"

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

// Load `kRows` rows of up to HD elements into smem rows of stride LD (elements), zero-filling
// columns >= ncols and rows whose offset function returns false. Asynchronous (cp.async) when
// every row is 16-byte aligned; plain loads otherwise. kNT threads take part.
template <class T, int HD, int LD, int kRows, int kNT, class RowFn>
__device__ __forceinline__ void load_rows_async(T* smem, const T* gbase, int ncols, bool aligned, RowFn row_fn) {
  constexpr int E = 16 / sizeof(T);
  constexpr int kChunksPerRow = HD / E;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kNT == 0, "tile must split evenly over the threads");
#pragma unroll 1
  for (int it = 0; it < kChunks / kNT; ++it) {
    const int id = it * kNT + threadIdx.x;
    const int row = id / kChunksPerRow;
    const int col = (id % kChunksPerRow) * E;
    int64_t off = 0;
    const bool row_ok = row_fn(row, off);
    const bool ok = row_ok && col < ncols;
    T* dst = smem + row * LD + col;
    if (aligned) {
      const T* src = ok ? gbase + off + col : gbase;
      cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
          *reinterpret_cast<const cute::uint128_t*>(src), *reinterpret_cast<cute::uint128_t*>(dst), ok);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) dst[e] = (ok && col + e < ncols) ? gbase[off + col + e] : from_float<T>(0.f);
    }
  }
}

// m16 row tiles per warp: 2 (32 query rows per warp, 2 warps per CTA: every K/V fragment read from
// shared memory feeds two MMAs) up to head dim 128; 1 (16 rows, 4 warps) at 256 for registers.
template <int HD> constexpr int mma_warp_m() { return HD <= 128 ? 2 : 1; }
template <int HD> constexpr int mma_threads() { return kBlockM / (16 * mma_warp_m<HD>()) * 32; }

template <class T, int HD>
__global__ void __launch_bounds__(mma_threads<HD>()) fna_fwd_mma_kernel(const __grid_constant__ FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int LD = HD + 8;  // +16 bytes per row: conflict-free ldmatrix
  constexpr int kWM = mma_warp_m<HD>();
  constexpr int kNT = mma_threads<HD>();
  constexpr int kKSteps = HD / 16;      // QK^T k-steps over the head dim
  constexpr int kNTiles = kBlockN / 8;  // S n-tiles per m-tile
  constexpr int kOTiles = HD / 8;       // O n-tiles per m-tile
  using Op = MmaOp<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBlockM * LD;
  T* sV = sK + kBlockN * LD;

  const Ctx& c = shared_ctx(p);
  if (!c.any_row) return;

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, t4 = lane % 4;
  const int row0 = warp * 16 * kWM;  // first query row of the warp
  const bool aligned = p.aligned != 0;

  // Q tile.
  load_rows_async<T, HD, LD, kBlockM, kNT>(sQ, static_cast<const T*>(p.q), p.head_dim, aligned,
                                           [&](int r, int64_t& off) {
                                             int64_t x[3];
                                             const bool ok = row_coords(p, c, r, x);
                                             off = offset5(p.qs, c.b, x, c.h);
                                             return ok;
                                           });
  cute::cp_async_fence();

  // Row windows for the element mask live in shared memory (registers are for the accumulators);
  // the first barrier of the loop publishes them.
  __shared__ RowWin s_win[kBlockM];
  for (int r = tid; r < kBlockM; r += kNT) row_window(p, c, r, s_win[r]);

  float o[kWM][kOTiles][4];
#pragma unroll
  for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
    for (int j = 0; j < kOTiles; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float m[kWM][2], l[kWM][2];
#pragma unroll
  for (int mt = 0; mt < kWM; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

  const int64_t total = c.nA + c.nB;
  Tile cur;
  int64_t t = next_tile(p, c, 0, cur);
  auto load_k = [&](const Tile& tile) {
    load_rows_async<T, HD, LD, kBlockN, kNT>(sK, static_cast<const T*>(key_base(p, tile)), p.head_dim, aligned,
                                             [&](int kk, int64_t& off) {
                                               int64_t voff;
                                               return key_offsets(p, c, tile, kk, off, voff);
                                             });
  };
  auto load_v = [&](const Tile& tile) {
    load_rows_async<T, HD, LD, kBlockN, kNT>(sV, static_cast<const T*>(value_base(p, tile)), p.head_dim_v, aligned,
                                             [&](int kk, int64_t& off) {
                                               int64_t koff;
                                               return key_offsets(p, c, tile, kk, koff, off);
                                             });
  };
  if (t < total) load_k(cur);
  cute::cp_async_fence();

  while (t < total) {
    load_v(cur);
    cute::cp_async_fence();
    cute::cp_async_wait<1>();
    __syncthreads();

    // S = Q K^T (kWM x 16 rows x kBlockN per warp).
    float s[kWM][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      uint32_t a[kWM][4];
#pragma unroll
      for (int mt = 0; mt < kWM; ++mt) {
        const T* src = sQ + (row0 + mt * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + ks * 16 + 8 * (lane / 16);
        cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(src), a[mt][0], a[mt][1], a[mt][2],
                                      a[mt][3]);
      }
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        const T* src = sK + (np * 16 + (lane % 8) + 8 * (lane / 16)) * LD + ks * 16 + 8 * ((lane / 8) % 2);
        cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(src), b[0], b[1], b[2], b[3]);
#pragma unroll
        for (int mt = 0; mt < kWM; ++mt) {
          float* s0 = s[mt][2 * np];
          float* s1 = s[mt][2 * np + 1];
          Op::Atom::fma(s0[0], s0[1], s0[2], s0[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1], s0[0], s0[1],
                        s0[2], s0[3]);
          Op::Atom::fma(s1[0], s1[1], s1[2], s1[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3], s1[0], s1[1],
                        s1[2], s1[3]);
        }
      }
    }

    // Scale (log2 domain), then the element mask on boundary tiles.
#pragma unroll
    for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][j][e] *= p.scale_log2;
    if (cur.masked) {
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          KeyPos kp;
          key_pos(p, cur, j * 8 + 2 * t4 + e, kp);
#pragma unroll
          for (int mt = 0; mt < kWM; ++mt) {
            if (!sees(p, c, cur, s_win[row0 + mt * 16 + gq], kp)) s[mt][j][e] = -INFINITY;
            if (!sees(p, c, cur, s_win[row0 + mt * 16 + gq + 8], kp)) s[mt][j][2 + e] = -INFINITY;
          }
        }
    }

    // Online softmax; per m-tile each thread holds rows gq (r = 0) and gq + 8 (r = 1).
#pragma unroll
    for (int mt = 0; mt < kWM; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = m[mt][r];
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * r], s[mt][j][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float ref = mx == -INFINITY ? 0.f : mx;
        const float alpha = exp2f(m[mt][r] - ref);
        m[mt][r] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          s[mt][j][2 * r] = exp2f(s[mt][j][2 * r] - ref);
          s[mt][j][2 * r + 1] = exp2f(s[mt][j][2 * r + 1] - ref);
          sum += s[mt][j][2 * r] + s[mt][j][2 * r + 1];
        }
        l[mt][r] = l[mt][r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < kOTiles; ++j) {
          o[mt][j][2 * r] *= alpha;
          o[mt][j][2 * r + 1] *= alpha;
        }
      }

    __syncthreads();  // every warp is done with sK
    Tile nxt;
    const int64_t tn = next_tile(p, c, t + 1, nxt);
    if (tn < total) load_k(nxt);
    cute::cp_async_fence();
    cute::cp_async_wait<1>();
    __syncthreads();  // V landed

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[kWM][4];
#pragma unroll
      for (int mt = 0; mt < kWM; ++mt) {
        a[mt][0] = Op::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = Op::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = Op::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = Op::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int np = 0; np < kOTiles / 2; ++np) {
        uint32_t b[4];
        const T* src = sV + (kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + np * 16 + 8 * (lane / 16);
        cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(src), b[0], b[1], b[2], b[3]);
#pragma unroll
        for (int mt = 0; mt < kWM; ++mt) {
          float* o0 = o[mt][2 * np];
          float* o1 = o[mt][2 * np + 1];
          Op::Atom::fma(o0[0], o0[1], o0[2], o0[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1], o0[0], o0[1],
                        o0[2], o0[3]);
          Op::Atom::fma(o1[0], o1[1], o1[2], o1[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3], o1[0], o1[1],
                        o1[2], o1[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with sV
    cur = nxt;
    t = tn;
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
      int64_t x[3];
      if (!row_coords(p, c, row, x)) continue;
      const float inv = lt > 0.f ? 1.f / lt : 0.f;
      const int64_t ooff = offset5(p.os, c.b, x, c.h);
#pragma unroll
      for (int j = 0; j < kOTiles; ++j) {
        const int col = j * 8 + 2 * t4;
        if (col < p.head_dim_v) {
          gout[ooff + col] = from_float<T>(o[mt][j][2 * r] * inv);
          gout[ooff + col + 1] = from_float<T>(o[mt][j][2 * r + 1] * inv);
        }
      }
      if (p.lse != nullptr && t4 == 0)
        p.lse[offset5(p.ls, c.b, x, c.h)] = lt > 0.f ? (m[mt][r] + __log2f(lt)) * 0.69314718055994531f : -INFINITY;
    }
#endif
}

template <class T, int HD>
constexpr int mma_smem_bytes() {
  return (kBlockM + 2 * kBlockN) * (HD + 8) * static_cast<int>(sizeof(T));
}

template <class T, int HD>
void launch_mma(const FwdParams& p, cudaStream_t stream, dim3 grid) {
  constexpr int smem = mma_smem_bytes<T, HD>();
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(fna_fwd_mma_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  fna_fwd_mma_kernel<T, HD><<<grid, mma_threads<HD>(), smem, stream>>>(p);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nattn::cuda::fna
