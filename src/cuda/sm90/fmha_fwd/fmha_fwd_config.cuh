// Hopper attention forward, the pieces around the kernel: compile-time configuration (shared-memory
// layouts, tiled MMAs, pipelines: FmhaFwdConfig), the TMA descriptor builders, the kernel's
// parameter block (FmhaFwdKernelParams) and small device helpers (named barriers, shared-memory
// accesses, the online-softmax step). Included by fmha_fwd_kernel.cuh and fmha_fwd_epilogue.cuh.
// See README.md.
#pragma once

#include <cuda_runtime.h>

#include <cute/tensor.hpp>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "cuda/sm90/fmha_fwd/na_tiles.cuh"
#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/errors.h"

namespace nattn::cuda::sm90 {

// ---- compile-time configuration -----------------------------------------------------------------
// Mainloop / epilogue variants (Sm90Variant in params.h, chosen with -DNATTN_SM90_VARIANT=N):
//   kDbufP      P double-buffered in registers: the wait for P_j V_j is issued only after
//               S_{j+2} = Q K_{j+2}^T, so softmax_{j+1} always overlaps P_j V_j (no wait that
//               ptxas could hoist above the softmax).
//   kPingPong   the two consumer warpgroups take turns issuing their GEMMs (named barriers), so
//               one warpgroup's softmax runs while the other's GEMMs use the tensor cores.
//   kSmemEpilogue  O is staged through the warpgroup's own (finished) Q shared memory and written
//               with coalesced 16-byte stores (falls back to 4-byte stores if O is not 16-byte
//               aligned).
//   kThreeStages   3 K and 3 V stages at head dim 128, FMHA and NA (227 KB shared memory with the
//               NA tables, the most a CTA can have).
// T: cutlass::half_t or cutlass::bfloat16_t; D: head dim (32, 64, 128, 256); Stages: K and
// V ring depth (0 = the default for D).
template <class T, int D, int Stages = 0>
struct FmhaFwdConfig {
  static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim 32, 64, 128 or 256");
  static constexpr int kBlockM = kFmhaBlockM;  // queries per CTA (2 consumer warpgroups x 64)
  // Keys per KV tile. Head dim 256 (FMHA and NA) takes 64: its O accumulator alone is 128 registers
  // per consumer thread, and S / the two P buffers of a 128-key tile would not fit beside it.
  static constexpr int kBlockN = fmha_block_n(D);
  // P double-buffered (Sm90Variant::kDbufP) up to head dim 128; at 256 the second buffer spilled.
  static constexpr bool kDbufP = Sm90Variant::kDbufP && D <= 128;
  static constexpr int kStages = Stages > 0 ? Stages : (D <= 64 ? 3 : 2);  // K and V ring depth (each)
  static constexpr int kThreads = 384;
  // Several (head, sequence) pairs per CTA up to head dim 128 (README.md, "Pairs per CTA"): the
  // producer's pair loop needs 48 registers (24 to 40 spilled), which leaves the consumers 224 (no
  // spills up to head dim 128). Head dim 256 keeps one pair per CTA (its consumers spilled at 224):
  // producer 40 (the per-pair TMA tensors spilled at 24), consumers 232. setmaxnreg moves registers
  // inside the CTA's launch allocation (168 x 384), which the split must not exceed.
  static constexpr bool kMultiPair = D <= 128;
  static constexpr int kProducerRegs = kMultiPair ? 48 : 40;
  static constexpr int kConsumerRegs = kMultiPair ? 224 : 232;
  static_assert(kProducerRegs * 128 + kConsumerRegs * 256 <= 168 * 384, "setmaxnreg split beyond the CTA's registers");

  // Head-dim elements of one swizzle block (one TMA box in the direct NA mode): 64 (128-byte rows,
  // 128-byte swizzle) for D = 64 / 128, 32 (64-byte rows, 64-byte swizzle) for D = 32.
  static constexpr int kBlockD = D < 64 ? D : 64;
  using AtomK = cute::conditional_t<kBlockD == 64, cute::GMMA::Layout_K_SW128_Atom<T>, cute::GMMA::Layout_K_SW64_Atom<T>>;
  using AtomMN =
      cute::conditional_t<kBlockD == 64, cute::GMMA::Layout_MN_SW128_Atom<T>, cute::GMMA::Layout_MN_SW64_Atom<T>>;

  using BM = cute::Int<kBlockM>;
  using BN = cute::Int<kBlockN>;
  using HD = cute::Int<D>;

  // Shared-memory layouts (128-byte swizzle, the canonical wgmma operand layouts).
  // Q (BM, D) and K (BN, D) are K-major (the head dim is contiguous); V is read by the PV product
  // as its B operand (N = D, K = BN), whose N is the contiguous dim: MN-major, (D, BN) per stage.
  // All three hold, per stage, D/kBlockD blocks of [rows][kBlockD elements] (128-byte rows swizzled
  // in 1024-byte groups, or 64-byte rows in 512-byte groups at D = 32): the V atoms are repeated
  // along the keys first (Step<_2, _1, _3>), so that one TMA box of kBlockD head-dim elements x 128
  // tokens fills one block, the image the direct NA mode writes with its rank-5 boxes (producer).
  using SmemLayoutQ = decltype(cute::tile_to_shape(AtomK{}, cute::Shape<BM, HD>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(AtomK{}, cute::Shape<BN, HD, cute::Int<kStages>>{}));
  using SmemLayoutV = decltype(cute::tile_to_shape(AtomMN{},
                                                   cute::Shape<HD, BN, cute::Int<kStages>>{},
                                                   cute::Step<cute::_2, cute::_1, cute::_3>{}));

  // wgmma: two warpgroups tiled along M, each 64 rows.
  using MmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<T, T, float, cute::Shape<cute::_64, BN, HD>>(),
      cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>{}));
  using MmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<T, T, float, cute::Shape<cute::_64, HD, BN>, cute::GMMA::Major::K,
                                 cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>{}));

  using PipelineKV = cutlass::PipelineTmaAsync<kStages>;

  struct SharedStorage {
    alignas(1024) T q[cute::cosize_v<SmemLayoutQ>];
    alignas(1024) T k[cute::cosize_v<SmemLayoutK>];
    alignas(1024) T v[cute::cosize_v<SmemLayoutV>];
    typename PipelineKV::SharedStorage pipe_k;
    typename PipelineKV::SharedStorage pipe_v;
    alignas(8) uint64_t q_barrier;  // Q loaded (transaction barrier, one phase per pair)
    alignas(8) uint64_t q_empty;    // Q buffer released by both consumer warpgroups (per pair)
    na::Shared na;  // NA tiling context and row windows (unused by FMHA; fits the struct's padding)
    // The work unit of producer warp 0 ([0]) and of consumer warpgroups 0 and 1 ([1], [2]): its
    // index, Q tile, first pair and end of its pairs (the kernel's UnitSlot fields).
    alignas(16) int unit[3][4];
  };
  // +1024: the kernel aligns the dynamic shared memory base up to 1024 bytes (128-byte swizzle).
  static constexpr int kSmemBytes = static_cast<int>(sizeof(SharedStorage)) + 1024;
  static_assert(kSmemBytes <= 232448, "more than the 227 KB of shared memory a CTA can have on SM90");

  static constexpr uint32_t kBytesQ = kBlockM * D * sizeof(T);
  static constexpr uint32_t kBytesKV = kBlockN * D * sizeof(T);  // one K or V stage
};

// ---- TMA descriptors (host) ---------------------------------------------------------------------
// Global tensors as rank-4 views: Q/K (seq, D, head, batch) with D contiguous, V (D, seq, head,
// batch). Shapes are int (TMA coordinates are 32-bit), strides int64 elements.
template <class T, int D>
auto make_tma_q(const T* ptr, int seq, int heads, int batch, int64_t s_seq, int64_t s_head, int64_t s_batch) {
  using C = FmhaFwdConfig<T, D>;
  auto g = cute::make_tensor(cute::make_gmem_ptr(ptr), cute::make_shape(seq, int(D), heads, batch),
                             cute::make_stride(s_seq, cute::_1{}, s_head, s_batch));
  return cute::make_tma_copy(cute::SM90_TMA_LOAD{}, g, typename C::SmemLayoutQ{},
                             cute::Shape<typename C::BM, typename C::HD>{}, cute::_1{});
}
template <class T, int D>
auto make_tma_k(const T* ptr, int seq, int heads, int batch, int64_t s_seq, int64_t s_head, int64_t s_batch) {
  using C = FmhaFwdConfig<T, D>;
  auto g = cute::make_tensor(cute::make_gmem_ptr(ptr), cute::make_shape(seq, int(D), heads, batch),
                             cute::make_stride(s_seq, cute::_1{}, s_head, s_batch));
  return cute::make_tma_copy(cute::SM90_TMA_LOAD{}, g,
                             cute::take<0, 2>(typename C::SmemLayoutK{}),
                             cute::Shape<typename C::BN, typename C::HD>{}, cute::_1{});
}
template <class T, int D>
auto make_tma_v(const T* ptr, int seq, int heads, int batch, int64_t s_seq, int64_t s_head, int64_t s_batch) {
  using C = FmhaFwdConfig<T, D>;
  auto g = cute::make_tensor(cute::make_gmem_ptr(ptr), cute::make_shape(int(D), seq, heads, batch),
                             cute::make_stride(cute::_1{}, s_seq, s_head, s_batch));
  return cute::make_tma_copy(cute::SM90_TMA_LOAD{}, g,
                             cute::take<0, 2>(typename C::SmemLayoutV{}),
                             cute::Shape<typename C::HD, typename C::BN>{}, cute::_1{});
}

// Direct NA mode: a rank-5 TMA descriptor over a heads-last tensor [B, *S, H, D] whose head stride
// is D (heads and head dim merge into one contiguous dim of H * D elements): dims (H * D, S_0, S_1,
// S_2, B) with S in NaGeom's (reversed) axis order, box (block_d, tile_0, tile_1, tile_2, 1),
// block_d = FmhaFwdConfig::kBlockD (64: 128-byte swizzle; 32: 64-byte swizzle). Box coordinates
// outside the grid read zeros. The host (na_fwd_sm90.cpp) checked the
// alignment and strides (16-byte multiples below 2^40 bytes).
template <class T>
CUtensorMap make_tma_na_direct(const T* ptr, int heads, int head_dim, int block_d, const int64_t (&extent)[3],
                               const int64_t (&stride)[3], int batch, int64_t batch_stride, const int64_t (&tile)[3]) {
  CUtensorMap map;
  const cuuint64_t dims[5] = {static_cast<cuuint64_t>(heads) * static_cast<cuuint64_t>(head_dim),
                              static_cast<cuuint64_t>(extent[0]), static_cast<cuuint64_t>(extent[1]),
                              static_cast<cuuint64_t>(extent[2]), static_cast<cuuint64_t>(batch)};
  // Strides of dims 1..4 in bytes; an extent-1 dim takes a valid placeholder (its stride is never used).
  const cuuint64_t fallback = static_cast<cuuint64_t>(heads) * static_cast<cuuint64_t>(head_dim) * sizeof(T);
  auto bytes = [&](int64_t n, int64_t s) -> cuuint64_t {
    return n > 1 ? static_cast<cuuint64_t>(s) * sizeof(T) : fallback;
  };
  const cuuint64_t strides[4] = {bytes(extent[0], stride[0]), bytes(extent[1], stride[1]),
                                 bytes(extent[2], stride[2]), bytes(batch, batch_stride)};
  const cuuint32_t box[5] = {static_cast<cuuint32_t>(block_d), static_cast<cuuint32_t>(tile[0]),
                             static_cast<cuuint32_t>(tile[1]),
                             static_cast<cuuint32_t>(tile[2]), 1};
  const cuuint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType dtype =
      cute::is_same_v<T, cutlass::bfloat16_t> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUresult r = CUTLASS_CUDA_DRIVER_WRAPPER_CALL(cuTensorMapEncodeTiled)(
      &map, dtype, 5, const_cast<T*>(ptr), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      block_d == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw RuntimeError("hopper-fna: cuTensorMapEncodeTiled failed (CUresult " + std::to_string(static_cast<int>(r)) +
                       ") for a rank-5 box over a [" + std::to_string(batch) + ", ..., " + std::to_string(heads) + ", " +
                       std::to_string(head_dim) + "] tensor");
  return map;
}

template <class T, int D>
struct FmhaFwdKernelParams {
  using TmaQ = decltype(make_tma_q<T, D>(nullptr, 1, 1, 1, 0, 0, 0));
  using TmaK = decltype(make_tma_k<T, D>(nullptr, 1, 1, 1, 0, 0, 0));
  using TmaV = decltype(make_tma_v<T, D>(nullptr, 1, 1, 1, 0, 0, 0));
  TmaQ tma_q;
  TmaK tma_k;
  TmaV tma_v;
  T* o;
  float* lse;
  int64_t o_stride[3];    // batch, seq, head
  int64_t lse_stride[3];  // batch, seq, head
  int batch, seqlen_q, seqlen_kv, heads, heads_kv, group;  // group = heads / heads_kv
  int num_m_blocks;
  int n_pairs;        // heads x (batch or varlen sequences): the (head, sequence) pairs of a Q tile
  int pairs_per_cta;  // consecutive pairs one CTA computes (grid y / z: ceil(n_pairs / pairs_per_cta))
  int units;          // persistent: num_m_blocks x ceil(n_pairs / pairs_per_cta) work units; 0: not persistent
  float scale_log2;
  int causal;
  int pingpong;      // 1: the consumer warpgroups take turns (FmhaFwdParams::pingpong); 0: cooperative
  const int* cu_q;   // varlen FMHA: per-sequence query / key offsets (FmhaFwdParams), else nullptr
  const int* cu_kv;
  NaGeom na;  // kNa only
  // Direct NA mode (na.direct): rank-5 TMA descriptors over the caller's Q / K / V, dims
  // (heads * D, S_0, S_1, S_2, B) in NaGeom's axis order, box (kBlockD, tile_0, tile_1, tile_2, 1).
  CUtensorMap dq, dk, dv;
};

// ---- device helpers -----------------------------------------------------------------------------
namespace detail {

// threadIdx.x read again (volatile: not merged with earlier reads), so that values derived from it
// are recomputed where they are used instead of being held in registers across the mainloop.
__device__ __forceinline__ int fresh_tid_x() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
  return t;
}

// K/V ring depth of an instantiation, FMHA and NA alike (0 = FmhaFwdConfig's default).
template <int D>
constexpr int kernel_stages() {
  return Sm90Variant::kThreeStages && D == 128 ? 3 : 0;
}

// Named barriers (id 0 is __syncthreads): the ping-pong turn of consumer warpgroup w is barrier
// kBarTurn + w (256 threads: the other warpgroup arrives, w syncs); the smem epilogue of consumer
// warpgroup w uses kBarEpi + w (its 128 threads).
constexpr int kBarTurn = 4;
constexpr int kBarEpi = 6;
// Persistent NA: the unit switch of producer warp 0 and both consumer warpgroups (288 threads), and
// of the consumers alone (256).
constexpr int kBarUnit = 8;
constexpr int kBarUnitConsumers = 9;
__device__ __forceinline__ void named_bar_sync(int id, int nthreads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(nthreads) : "memory");
}
// The same without .aligned (bar.sync is barrier.sync.aligned, whose participants must all execute
// the same instruction): for kBarUnit, which producer warp 0 and the consumers reach at different
// places in the code (compute-sanitizer synccheck flagged the aligned form there).
__device__ __forceinline__ void named_bar_sync_unaligned(int id, int nthreads) {
  asm volatile("barrier.sync %0, %1;" ::"r"(id), "r"(nthreads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int nthreads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(nthreads) : "memory");
}
// Shared-memory accesses by 32-bit shared address (the kernel's aligned smem base goes through an
// integer, so plain pointers would compile to generic LD/ST).
__device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
// 16-byte global store (the caller has checked the alignment; a plain uint4 store through the
// element pointer compiled to four 4-byte stores).
__device__ __forceinline__ void st_global_v4(void* ptr, const uint4& v) {
  const size_t gaddr = __cvta_generic_to_global(ptr);
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(gaddr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ int ld_shared_s32(uint32_t addr) {
  int v;
  asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (cute::is_same_v<T, cutlass::bfloat16_t>) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

// One warpgroup-wide wgmma batch: C (+)= A * B over every k-block of A/B, committed as one group.
// kZeroInit: the first k-block overwrites C. kRegA: A is a register fragment (RS), else smem
// descriptors (SS).
template <bool kZeroInit, bool kRegA, class Mma, class TA, class TB, class TC>
__device__ __forceinline__ void wgmma_batch(Mma& mma, TA& a, TB const& b, TC& c) {
  if constexpr (kRegA) cute::warpgroup_fence_operand(a);
  cute::warpgroup_fence_operand(c);
  cute::warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? cute::GMMA::ScaleOut::Zero : cute::GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int kb = 0; kb < cute::size<2>(a); ++kb) {
    cute::gemm(mma, a(cute::_, cute::_, kb), b(cute::_, cute::_, kb), c);
    mma.accumulate_ = cute::GMMA::ScaleOut::One;
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_fence_operand(c);
  if constexpr (kRegA) cute::warpgroup_fence_operand(a);
}

// Accumulator element i of a 64xN wgmma fragment ((2, 2, N/8), 1, 1) lies in row half (i >> 1) & 1
// of the thread's two rows (r, r + 8); checked against CuTe's identity partition in the host
// self-check (see README.md).
__device__ __forceinline__ constexpr int row_half(int i) { return (i >> 1) & 1; }

// Online softmax on one S tile (fp32, in place: S becomes P = 2^(S*c - m*c)); m, l: running row
// max (raw scores) and per-thread partial row sum of the thread's two rows; alpha: the factor
// the O rows must be multiplied by. Rows whose max is still -inf (all keys masked so far) keep
// P = 0 and alpha = 0 without producing NaN.
template <bool kFirst, class TS>
__device__ __forceinline__ void softmax_step(TS& s, float c, float (&m)[2], float (&l)[2], float (&alpha)[2]) {
  float mx[2] = {kFirst ? -INFINITY : m[0], kFirst ? -INFINITY : m[1]};
  CUTE_UNROLL
  for (int i = 0; i < cute::size(s); ++i) mx[row_half(i)] = fmaxf(mx[row_half(i)], s(i));
  float mc[2];
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    mx[r] = quad_max(mx[r]);
    mc[r] = mx[r] == -INFINITY ? 0.f : mx[r] * c;
    alpha[r] = kFirst ? 0.f : ex2(m[r] * c - mc[r]);  // m = -inf -> 0
    m[r] = mx[r];
  }
  float sum[2] = {0.f, 0.f};
  CUTE_UNROLL
  for (int i = 0; i < cute::size(s); ++i) {
    const float p = ex2(fmaf(s(i), c, -mc[row_half(i)]));
    s(i) = p;
    sum[row_half(i)] += p;
  }
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) l[r] = kFirst ? sum[r] : fmaf(l[r], alpha[r], sum[r]);
}

}  // namespace detail

}  // namespace nattn::cuda::sm90
