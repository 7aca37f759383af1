// Hopper (sm_90a) attention forward kernel: TMA loads, wgmma, warp specialisation, online softmax.
// One template for FMHA (kNa = false, hopper-fmha) and NA on token-permuted tensors (kNa = true,
// hopper-fna: the KV tiles visited are the KV box of the Q tile, with a per-tile mask class; see
// na_tiles.cuh). Included only by the generated translation units of table
// NATTN_SM90_FMHA_FWD_TABLE (src/cuda/cuda.cmake), compiled with
// -gencode arch=compute_90a,code=sm_90a. See README.md.
//
// CTA = 128 queries of one (batch, head), 3 warpgroups (384 threads):
//   warpgroup 0: producer. One thread issues the TMA loads: Q once (its own mbarrier), then K_j, V_j
//                for every KV tile j into two rings of kStages stages (PipelineTmaAsync each, so
//                S = Q K_j^T can start before V_j has landed). Registers lowered to 24.
//   warpgroups 1, 2: consumers, each owning 64 query rows (its own softmax state and O
//                accumulator); registers raised to 240. Per KV tile:
//                  S_{j+1} = Q K_{j+1}^T (wgmma SS, async)   O += P_j V_j (wgmma RS, async)
//                  wait for S_{j+1}; mask; online softmax (overlaps P_j V_j on the tensor cores)
//                  wait for P_j V_j; rescale O; P_{j+1} = convert(S_{j+1}) in registers.
//                (That is the baseline, variant 0; the variants of Sm90Variant (params.h) change the
//                mainloop (P double-buffered, ping-pong turns), the epilogue and the stage count:
//                see "compile-time configuration" below.)
#pragma once

#include <cuda_runtime.h>

#include <cute/tensor.hpp>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/sm90/fmha_fwd/na_tiles.cuh"
#include "cuda/sm90/fmha_fwd/params.h"

// The kernel's lambdas capture register fragments by reference: one that is not inlined (NVVM
// declined the large mainloop steps of the NA instantiation) moves them to local memory.
#define NATTN_SM90_INLINE __attribute__((always_inline))

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
// T: cutlass::half_t or cutlass::bfloat16_t; D: head dim (32, 64, 128; 256 FMHA only); Stages: K and
// V ring depth (0 = the default for D).
template <class T, int D, int Stages = 0>
struct FmhaFwdConfig {
  static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head dim 32, 64, 128 or 256");
  static constexpr int kBlockM = kFmhaBlockM;  // queries per CTA (2 consumer warpgroups x 64)
  // Keys per KV tile. Head dim 256 (FMHA only) takes 64: its O accumulator alone is 128 registers
  // per consumer thread, and S / the two P buffers of a 128-key tile would not fit beside it.
  static constexpr int kBlockN = D == 256 ? 64 : kFmhaBlockN;
  // P double-buffered (Sm90Variant::kDbufP) up to head dim 128; at 256 the second buffer spilled.
  static constexpr bool kDbufP = Sm90Variant::kDbufP && D <= 128;
  static constexpr int kStages = Stages > 0 ? Stages : (D <= 64 ? 3 : 2);  // K and V ring depth (each)
  static constexpr int kThreads = 384;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

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
    alignas(8) uint64_t q_barrier;
    na::Shared na;  // NA tiling context and row windows (unused by FMHA; fits the struct's padding)
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
  float scale_log2;
  int causal;
  const int* cu_q;   // varlen FMHA: per-sequence query / key offsets (FmhaFwdParams), else nullptr
  const int* cu_kv;
  NaGeom na;  // kNa only
  // Direct NA mode (na.direct): rank-5 TMA descriptors over the caller's Q / K / V, dims
  // (heads * D, S_0, S_1, S_2, B) in NaGeom's axis order, box (kBlockD, tile_0, tile_1, tile_2, 1).
  CUtensorMap dq, dk, dv;
};

// ---- device helpers -----------------------------------------------------------------------------
namespace detail {

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
__device__ __forceinline__ void named_bar_sync(int id, int nthreads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(nthreads) : "memory");
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

// ---- the kernel ---------------------------------------------------------------------------------
template <class T, int D, bool kNa>
__global__ void __launch_bounds__(384, 1) attn_fwd_sm90_kernel(const __grid_constant__ FmhaFwdKernelParams<T, D> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cute;
  using C = FmhaFwdConfig<T, D, detail::kernel_stages<D>()>;
  using Storage = typename C::SharedStorage;
  using Pipeline = typename C::PipelineKV;
  constexpr int kBM = C::kBlockM, kBN = C::kBlockN;
  static_assert(!kNa || kBN == na::kRows, "the NA tiling (row masks, tile volumes) assumes 128-key KV tiles");

  extern __shared__ char smem_raw[];
  // Aligned up to 1024 bytes as an offset from smem_raw, so that the compiler still knows the
  // storage is shared memory (shared loads, not generic ones).
  const uint32_t smem_misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Storage& ss = *reinterpret_cast<Storage*>(smem_raw + ((1024u - smem_misalign) & 1023u));

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int wg_idx = cutlass::canonical_warp_group_idx();
  const bool lane_pred = cute::elect_one_sync();
  const bool is_producer_thread = warp_idx == 0 && lane_pred;

  // Causal FMHA: the most expensive Q tiles (the last ones) are launched first. NA: p.causal = 0
  // (its per-axis causality lives in p.na).
  const int m_block = p.causal ? p.num_m_blocks - 1 - static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x);
  const int head = blockIdx.y;
  const int head_kv = head / p.group;
  // This CTA's sequence: batch entry blockIdx.z, or (varlen FMHA) packed sequence blockIdx.z of the
  // single batch entry, starting at query row q_start and key row kv_start.
  int batch = blockIdx.z, q_start = 0, kv_start = 0, seq_q = p.seqlen_q, seq_kv = p.seqlen_kv;
  if (!kNa && p.cu_q != nullptr) {
    batch = 0;
    q_start = p.cu_q[blockIdx.z];
    seq_q = p.cu_q[blockIdx.z + 1] - q_start;
    kv_start = p.cu_kv[blockIdx.z];
    seq_kv = p.cu_kv[blockIdx.z + 1] - kv_start;
    if (m_block * kBM >= seq_q) return;  // the grid covers the longest sequence (CTA-uniform, no barrier yet)
  }
  const int kv_end = p.causal ? min(seq_kv, (m_block + 1) * kBM) : seq_kv;
  // >= 1: a varlen sequence without keys still walks one (fully masked) tile, so that its rows come
  // out as O = 0, LSE = -inf through the ordinary epilogue.
  const int n_blocks = max(1, (kv_end + kBN - 1) / kBN);

  // NA direct mode: Q/K/V/O/LSE in the caller's layout (NaGeom::direct), CTA-uniform.
  const bool direct = kNa && p.na.direct;
  if (is_producer_thread) {
    if (direct) {
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dq));
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dk));
      cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&p.dv));
    } else {
      cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    }
    cutlass::arch::ClusterTransactionBarrier::init(&ss.q_barrier, 1);
  }
  na::Shared& nas = ss.na;  // NA tiling context and row windows
  if constexpr (kNa) {
    // The three axes on lanes 0-2 of warp 0 (long int64 chains: one lane for all took ~3% of the
    // kernel's time), then lane 0 combines them.
    if (threadIdx.x < 32) {
      if (threadIdx.x < 3) na::make_ctx_axis(p.na, m_block, batch, static_cast<int>(threadIdx.x), nas.ctx);
      __syncwarp();  // the whole warp: orders the three lanes' shared-memory writes before lane 0 reads
      if (threadIdx.x == 0) na::finish_ctx(nas.ctx);
    }
  }
  typename Pipeline::Params pp;
  pp.transaction_bytes = C::kBytesKV;
  pp.role = wg_idx == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pp.is_leader = is_producer_thread;
  pp.num_consumers = 256;
  pp.initializing_warp = 0;
  Pipeline pipe_k(ss.pipe_k, pp, Shape<_1, _1, _1>{});
  Pipeline pipe_v(ss.pipe_v, pp, Shape<_1, _1, _1>{});
  cutlass::arch::fence_barrier_init();
  __syncthreads();
  // NA: a Q tile made only of padding (possible with dilation) has nothing to compute; its rows
  // of the permuted output are dropped by the unpermute. CTA-uniform, before any pipeline use.
  if constexpr (kNa) {
    if (!nas.ctx.valid) return;
    na::fill_tables(p.na, nas, static_cast<int>(threadIdx.x), C::kThreads);
    __syncthreads();
  }

  // The KV walk, identical in the producer and the consumers: position t -> tile (index in the
  // K/V sequence, mask flag). FMHA: tiles 0..n_blocks-1. NA: every tile of the KV tile box.
  const int n_walk = kNa ? nas.ctx.n_tiles : n_blocks;
  // Called with t = 0, 1, 2, ... in order by each thread: NA advances the thread's cursor
  // (na::Cursor, no divisions) instead of decoding t. Past the end the tile is garbage, unused.
  na::Cursor cursor;
  auto next_tile = [&](int t, na::KvTile& tile) NATTN_SM90_INLINE -> int {
    if constexpr (kNa) {
      if (t == 0)
        cursor = na::Cursor{};
      else
        na::advance(nas.ctx, cursor);
      na::tile_of(p.na, nas.ctx, cursor, tile);
      return t;
    } else {
      const int end = (t + 1) * kBN;
      tile.index = t;
      tile.masked = end > seq_kv || (p.causal && end - 1 > m_block * kBM);
      return t;
    }
  };

  // The walk length inside the KV loops; NA: re-read from shared memory at each use (a volatile
  // load), which keeps ptxas from holding it in a register across the loops (with kDbufP it spilled
  // it in the consumers, and the 24-register producer spilled a value).
  auto walk_end = [&]() NATTN_SM90_INLINE -> int {
    if constexpr (kNa) {
      return detail::ld_shared_s32(static_cast<uint32_t>(__cvta_generic_to_shared(&nas.ctx.n_tiles)));
    } else {
      return n_walk;
    }
  };

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename C::SmemLayoutQ{});  // (BM, D)
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename C::SmemLayoutK{});  // (BN, D, stages)
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename C::SmemLayoutV{});  // (D, BN, stages)

  if (wg_idx == 0) {
    // ---------------------------------------------------------------- producer warpgroup
    cutlass::arch::warpgroup_reg_dealloc<C::kProducerRegs>();
    if (is_producer_thread && direct) {
      // Rank-5 boxes (kBlockD head-dim elements, tile_0, tile_1, tile_2, 1) straight from the
      // caller's tensors: each fills one [128 tokens][kBlockD] block of a Q / K / V stage (see
      // SmemLayoutV), in the token order of the tile decode (axis 0 fastest). Out-of-grid tokens
      // read as zeros.
      constexpr int kBD = C::kBlockD;
      constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
      const na::Ctx& cx = nas.ctx;
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.q_barrier, C::kBytesQ);
      CUTE_UNROLL
      for (int h = 0; h < D / kBD; ++h)
        cute::SM90_TMA_LOAD_5D::copy(&p.dq, &ss.q_barrier, kHint, ss.q + h * (kBM * kBD), head * D + kBD * h,
                                     static_cast<int>(cx.q0[0]), static_cast<int>(cx.q0[1]),
                                     static_cast<int>(cx.q0[2]), batch);
      auto k_state = cutlass::make_producer_start_state<Pipeline>();
      auto v_state = cutlass::make_producer_start_state<Pipeline>();
      const int c0 = head_kv * D;
      // Head-dim coordinate of block h, computed where it is used: as a loop invariant it was one
      // value too many for the producer's 24 registers (a 4-byte spill).
      auto c0_of = [&](int h) NATTN_SM90_INLINE {
        int c;
        asm volatile("add.s32 %0, %1, %2;" : "=r"(c) : "r"(c0), "r"(kBD * h));
        return c;
      };
      na::KvTile tile;
      // One K or V stage of the current tile: D / kBD boxes into the ring's next stage.
      auto load_stage = [&](Pipeline& pipe, auto& state, const CUtensorMap* map, T* ring) NATTN_SM90_INLINE {
        pipe.producer_acquire(state);
        CUTE_UNROLL
        for (int h = 0; h < D / kBD; ++h)
          cute::SM90_TMA_LOAD_5D::copy(map, pipe.producer_get_barrier(state), kHint,
                                       ring + state.index() * (kBN * D) + h * (kBN * kBD), c0_of(h), tile.org[0],
                                       tile.org[1], tile.org[2], batch);
        ++state;
      };
      for (int t = next_tile(0, tile); t < walk_end(); t = next_tile(t + 1, tile)) {
        load_stage(pipe_k, k_state, &p.dk, ss.k);
        load_stage(pipe_v, v_state, &p.dv, ss.v);
      }
    } else if (is_producer_thread) {
      Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.seqlen_q, int(D), p.heads, p.batch));
      Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.seqlen_kv, int(D), p.heads_kv, p.batch));
      Tensor mV = p.tma_v.get_tma_tensor(make_shape(int(D), p.seqlen_kv, p.heads_kv, p.batch));
      // Varlen: the sequence's rows start at q_start / kv_start of the packed tensors (rows past the
      // sequence belong to the next one or lie outside the tensor, read as zeros; they are masked or
      // not stored).
      Tensor gQ = local_tile(domain_offset(make_coord(q_start, 0), mQ(_, _, head, batch)), Shape<Int<kBM>, Int<D>>{},
                             make_coord(m_block, 0));  // (BM, D)
      Tensor gK = local_tile(domain_offset(make_coord(kv_start, 0), mK(_, _, head_kv, batch)),
                             Shape<Int<kBN>, Int<D>>{}, make_coord(_, 0));  // (BN, D, n)
      Tensor gV = local_tile(domain_offset(make_coord(0, kv_start), mV(_, _, head_kv, batch)),
                             Shape<Int<D>, Int<kBN>>{}, make_coord(0, _));  // (D, BN, n)
      auto [tQg, tQs] = tma_partition(p.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto [tKg, tKs] = tma_partition(p.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto [tVg, tVs] = tma_partition(p.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.q_barrier, C::kBytesQ);
      copy(p.tma_q.with(ss.q_barrier), tQg, tQs);

      auto k_state = cutlass::make_producer_start_state<Pipeline>();
      auto v_state = cutlass::make_producer_start_state<Pipeline>();
      na::KvTile tile;
      for (int t = next_tile(0, tile); t < walk_end(); t = next_tile(t + 1, tile)) {
        const int j = tile.index;
        pipe_k.producer_acquire(k_state);
        copy(p.tma_k.with(*pipe_k.producer_get_barrier(k_state)), tKg(_, j), tKs(_, k_state.index()));
        ++k_state;
        pipe_v.producer_acquire(v_state);
        copy(p.tma_v.with(*pipe_v.producer_get_barrier(v_state)), tVg(_, j), tVs(_, v_state.index()));
        ++v_state;
      }
    }
  } else {
    // ---------------------------------------------------------------- consumer warpgroups
    cutlass::arch::warpgroup_reg_alloc<C::kConsumerRegs>();
    using V = Sm90Variant;
    const int ctid = static_cast<int>(threadIdx.x) - 128;  // 0..255
    const int cwg = ctid / 128;  // consumer warpgroup: CTA tile rows 64 * cwg .. 64 * cwg + 63
    typename C::MmaQK mma_qk;
    typename C::MmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);

    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // descriptors (MMA, 1, D/16)
    Tensor tSrK = thr_qk.partition_fragment_B(sK);  // descriptors (MMA, 1, D/16, stages)
    Tensor tOrV = thr_pv.partition_fragment_B(sV);  // descriptors (MMA, 1, BN/16, stages)
    Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBM>, Int<kBN>>{});  // fp32 ((2,2,BN/8),1,1)
    Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<kBM>, Int<D>>{});    // fp32 ((2,2,D/8),1,1)
    Tensor tOrP = make_tensor<T>(partition_shape_A(mma_pv, Shape<Int<kBM>, Int<kBN>>{}));  // ((2,2,2),1,BN/16)
    // kDbufP: the second P buffer (P_j and P_{j+1} alternate between tOrP and tOrP2).
    Tensor tOrP2 = make_tensor<T>(partition_shape_A(mma_pv, Shape<Int<kBM>, Int<kBN>>{}));
    static_assert(decltype(size(tSrS))::value == decltype(size(tOrP))::value, "P = S element for element");
    static_assert(decltype(size<0>(tOrP))::value == 8 && decltype(size<2>(tOrP))::value == kBN / 16, "A layout");
    static_assert(decltype(size<1>(tSrS))::value == 1 && decltype(size<2>(tSrS))::value == 1, "one atom per WG");
    static_assert(decltype(size<1>(tOrO))::value == 1 && decltype(size<2>(tOrO))::value == 1, "one atom per WG");

    // Row / column (inside the CTA tile) of every S element; the thread's two rows.
    Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));
    const int row0 = m_block * kBM + get<0>(tScS(0));
    const int rows[2] = {row0, row0 + 8};
    // FMHA: keys >= col_limit[r] are masked for row r (last tile: Skv; causal: row + 1).
    int col_limit[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) col_limit[r] = p.causal ? min(seq_kv, rows[r] + 1) : seq_kv;
    // NA: the in-group window of each of the thread's two rows per axis (padding keys lie outside
    // every window, so the window test also masks them). Held in registers, except with kDbufP
    // (the second P buffer leaves no room): then read from shared memory by each masked tile.
    int win_lo[2][3], win_hi[2][3];
    auto load_windows = [&]() NATTN_SM90_INLINE {
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        CUTE_UNROLL
        for (int i = 0; i < 3; ++i) {
          const int e = na::win_index(p.na, i, get<0>(tScS(0)) + 8 * r);
          win_lo[r][i] = nas.win_lo[e];
          win_hi[r][i] = nas.win_hi[e];
        }
      }
    };
    if constexpr (kNa && !C::kDbufP) load_windows();
    // Element mask of a tile that needs one (tile.masked, warp-uniform).
    // NA: per row, the 128-bit mask of its visible key columns (na::row_mask, shared with the host
    // self-check), shifted right by the thread's column offset 2 (lane % 4) so that element i
    // (column 8 (i >> 2) + 2 (lane % 4) + (i & 1), layout_check.cu) tests the constant bit
    // 8 ((i >> 2) & 3) + (i & 1) of word i >> 4.
    auto apply_mask = [&](const na::KvTile& tile) NATTN_SM90_INLINE {
      if constexpr (kNa) {
        if constexpr (C::kDbufP) load_windows();
        uint32_t w[2][4];
        const int q2 = 2 * (ctid & 3);
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          na::row_mask(p.na, tile, win_lo[r], win_hi[r], w[r]);
          CUTE_UNROLL
          for (int k = 0; k < 4; ++k) w[r][k] >>= q2;
        }
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i)
          if (((w[detail::row_half(i)][i >> 4] >> (8 * ((i >> 2) & 3) + (i & 1))) & 1u) == 0u) tSrS(i) = -INFINITY;
      } else {
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i) {
          const int col = tile.index * kBN + get<1>(tScS(i));
          if (col >= col_limit[detail::row_half(i)]) tSrS(i) = -INFINITY;
        }
      }
    };
    // P = S converted to the element type, into the RS A fragment `dst`.
    auto convert_p = [&](auto& dst) NATTN_SM90_INLINE {
      Tensor p32 = recast<uint32_t>(dst);
      CUTE_UNROLL
      for (int i = 0; i < size(p32); ++i) p32(i) = detail::pack2<T>(tSrS(2 * i), tSrS(2 * i + 1));
    };
    auto rescale_o = [&](const float (&alpha)[2]) NATTN_SM90_INLINE {
      CUTE_UNROLL
      for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= alpha[detail::row_half(i)];
    };
    // kPingPong: one "turn" = the GEMMs a warpgroup issues in one step; the two warpgroups' turns
    // alternate (warpgroup 0 first: warpgroup 1 pre-arrives on its barrier). Both warpgroups take
    // the same number of turns (they walk the same KV tiles); warpgroup 0 takes one extra sync at
    // the end to consume warpgroup 1's last arrive.
    auto turn_begin = [&]() NATTN_SM90_INLINE {
      if constexpr (V::kPingPong) detail::named_bar_sync(detail::kBarTurn + cwg, 256);
    };
    auto turn_end = [&]() NATTN_SM90_INLINE {
      if constexpr (V::kPingPong) detail::named_bar_arrive(detail::kBarTurn + (1 - cwg), 256);
    };
    if constexpr (V::kPingPong) {
      if (cwg == 1) detail::named_bar_arrive(detail::kBarTurn + 0, 256);
    }

    const float c = p.scale_log2;
    float row_max[2], row_sum[2], alpha[2];
    clear(tOrO);
    cutlass::PipelineState<C::kStages> k_state, v_state;

    cutlass::arch::ClusterTransactionBarrier::wait(&ss.q_barrier, 0);

    na::KvTile tile;
    int t = next_tile(0, tile);
    if (t >= n_walk) {  // cannot happen (every query sees >= 1 key); no hang, no NaN if it did
      row_max[0] = row_max[1] = -INFINITY;
      row_sum[0] = row_sum[1] = 0.f;
    } else {
      // First tile: S_0, softmax, P_0.
      pipe_k.consumer_wait(k_state);
      turn_begin();
      detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
      turn_end();
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);  // reads of S stay after the wait
      pipe_k.consumer_release(k_state);
      ++k_state;
      if (tile.masked) apply_mask(tile);
      detail::softmax_step<true>(tSrS, c, row_max, row_sum, alpha);
      convert_p(tOrP);

      if constexpr (C::kDbufP) {
        // Step j (P_j in p_cur, alpha = alpha_j, P_{j-1} V_{j-1} possibly in flight):
        //   issue S_{j+1}; wait_group 1 (= P_{j-1} V_{j-1} done); O *= alpha_j; issue O += P_j V_j;
        //   wait_group 1 (= S_{j+1} done); mask, softmax -> alpha_{j+1}; P_{j+1} into p_next.
        // Every wait sits right after an issue, so ptxas cannot move it above the softmax, and
        // softmax_{j+1} overlaps P_j V_j; the O rescale overlaps S_{j+1}. Rescale order: O holds
        // sum_{i<j} P_i V_i relative to m_{j-1}; alpha_j = 2^(c (m_{j-1} - m_j)) brings it to m_j
        // before P_j V_j (relative to m_j) is added.
        // The O rescale is skipped when no row of the warp changed its max (alpha == 1 exactly:
        // the product would leave O bit for bit unchanged), the usual case after the first tiles.
        auto rescale_o_if_needed = [&](const float (&a)[2]) NATTN_SM90_INLINE {
          if (__any_sync(0xffffffffu, a[0] != 1.f || a[1] != 1.f)) rescale_o(a);
        };
        bool pv_pending = false;  // P_{j-1} V_{j-1} issued, V_{j-1} not yet released
        cutlass::PipelineState<C::kStages> v_release;
        // t_next: the walk position of S_{j+1}'s tile; its mask information (needed only by the
        // mask) is computed after the GEMMs are issued, while they run.
        auto step = [&](auto& p_cur, auto& p_next, int t_next) NATTN_SM90_INLINE {
          pipe_k.consumer_wait(k_state);
          turn_begin();
          detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
          warpgroup_wait<1>();  // P_{j-1} V_{j-1} done (S_{j+1} may run)
          warpgroup_fence_operand(tOrO);
          warpgroup_fence_operand(p_next);  // P_{j-1}'s registers, rewritten below
          if (pv_pending) {
            pipe_v.consumer_release(v_release);
            ++v_release;
          }
          rescale_o_if_needed(alpha);
          pipe_v.consumer_wait(v_state);
          detail::wgmma_batch<false, true>(mma_pv, p_cur, tOrV(_, _, _, v_state.index()), tOrO);
          turn_end();
          ++v_state;
          pv_pending = true;
          na::KvTile nxt;
          next_tile(t_next, nxt);
          warpgroup_wait<1>();  // S_{j+1} done (P_j V_j may run)
          warpgroup_fence_operand(tSrS);
          pipe_k.consumer_release(k_state);
          ++k_state;
          if (nxt.masked) apply_mask(nxt);
          detail::softmax_step<false>(tSrS, c, row_max, row_sum, alpha);
          convert_p(p_next);
        };
        auto last_step = [&](auto& p_cur) NATTN_SM90_INLINE {
          warpgroup_wait<0>();  // P_{n-2} V_{n-2} done
          warpgroup_fence_operand(tOrO);
          if (pv_pending) {
            pipe_v.consumer_release(v_release);
            ++v_release;
          }
          rescale_o_if_needed(alpha);
          pipe_v.consumer_wait(v_state);
          turn_begin();
          detail::wgmma_batch<false, true>(mma_pv, p_cur, tOrV(_, _, _, v_state.index()), tOrO);
          turn_end();
          warpgroup_wait<0>();
          warpgroup_fence_operand(tOrO);
          pipe_v.consumer_release(v_state);
        };
        // Unrolled by two so that both P buffers are compile-time register arrays.
        // Every walk position is a tile (next_tile(t) is position t).
        for (;;) {
          if (t + 1 >= walk_end()) {
            last_step(tOrP);
            break;
          }
          step(tOrP, tOrP2, t + 1);
          ++t;
          if (t + 1 >= walk_end()) {
            last_step(tOrP2);
            break;
          }
          step(tOrP2, tOrP, t + 1);
          ++t;
        }
      } else {
        // Further tiles: S_j overlaps the P_{j-1} V_{j-1} product.
        for (t = next_tile(t + 1, tile); t < n_walk; t = next_tile(t + 1, tile)) {
          pipe_k.consumer_wait(k_state);
          turn_begin();
          detail::wgmma_batch<true, false>(mma_qk, tSrQ, tSrK(_, _, _, k_state.index()), tSrS);
          pipe_v.consumer_wait(v_state);
          detail::wgmma_batch<false, true>(mma_pv, tOrP, tOrV(_, _, _, v_state.index()), tOrO);
          turn_end();
          warpgroup_wait<1>();  // S_j done (P_{j-1} V_{j-1} may still run)
          warpgroup_fence_operand(tSrS);
          pipe_k.consumer_release(k_state);
          ++k_state;
          if (tile.masked) apply_mask(tile);
          detail::softmax_step<false>(tSrS, c, row_max, row_sum, alpha);
          // NOTE: ptxas 13.0 hoists the wait below above the softmax (SASS: WARPGROUP.DEPBAR right
          // after the mask), so the intended overlap of softmax_j with P_{j-1} V_{j-1} inside one
          // warpgroup does not happen (kDbufP avoids this).
          warpgroup_wait<0>();  // P_{j-1} V_{j-1} done: O and P may be touched
          warpgroup_fence_operand(tOrO);
          warpgroup_fence_operand(tOrP);
          pipe_v.consumer_release(v_state);
          ++v_state;
          rescale_o(alpha);
          convert_p(tOrP);
        }
        pipe_v.consumer_wait(v_state);
        turn_begin();
        detail::wgmma_batch<false, true>(mma_pv, tOrP, tOrV(_, _, _, v_state.index()), tOrO);
        turn_end();
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipe_v.consumer_release(v_state);
      }
    }  // t < n_walk
    if constexpr (V::kPingPong) {
      if (cwg == 0) detail::named_bar_sync(detail::kBarTurn + 0, 256);  // warpgroup 1's last arrive
    }

    // ---- epilogue: O / l in the input dtype, LSE = ln(2) * (m * c + log2 l)
    float inv[2], lse[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float l = detail::quad_sum(row_sum[r]);
      inv[r] = l > 0.f ? 1.f / l : 0.f;
      lse[r] = l > 0.f ? (row_max[r] * c + __log2f(l)) * 0.69314718055994531f : -INFINITY;
    }
    Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<D>>{}));
    T* o_base = p.o + batch * p.o_stride[0] + head * p.o_stride[2] + q_start * p.o_stride[1];
    // Where CTA tile row `lrow` (0..127) goes: false for padding rows; else the element offsets of
    // its O row (from o_base) and of its LSE (from the (batch, head) base). Sequence layout: row
    // m_block * 128 + lrow; direct NA: the row's grid coordinate, decoded as the TMA box laid it out.
    auto row_dest = [&](int lrow, int64_t& o_off, int64_t& l_off) NATTN_SM90_INLINE -> bool {
      if (direct) {
        o_off = l_off = 0;
        bool real = true;
        CUTE_UNROLL
        for (int i = 0; i < 3; ++i) {
          const int64_t x = nas.ctx.q0[i] + ((lrow >> p.na.q_shift[i]) & p.na.q_mask[i]);
          real = real && x < nas.ctx.qhi[i];
          o_off += x * p.na.o_sp[i];
          l_off += x * p.na.lse_sp[i];
        }
        return real;
      }
      const int grow = m_block * kBM + lrow;
      o_off = static_cast<int64_t>(grow) * p.o_stride[1];
      l_off = static_cast<int64_t>(grow) * p.lse_stride[1];
      return grow < seq_q;
    };
    bool staged = false;
    if constexpr (V::kSmemEpilogue && C::kBlockD == 64) {  // the staging below assumes 128-byte rows
      // O through this warpgroup's own Q shared memory (rows 64 * cwg.. of sQ, which only this
      // warpgroup's wgmmas read, all completed by now), then 16-byte coalesced stores. Needs O
      // 16-byte aligned with a sequence stride multiple of 8 elements (CTA-uniform), else the
      // direct stores below. Staging layout: 16-byte chunk ch (columns 8 ch..8 ch+7) of local row r
      // (0..63) at byte (ch / 8) * kBM * 128 + cwg * 64 * 128 + r * 128 + ((ch % 8) ^ (r % 8)) * 16
      // of sQ. These are exactly the bytes of SmemLayoutQ's rows 64 cwg..64 cwg+63 (K-major 128-byte
      // swizzle: row r at r * 128 bytes inside each 64-column half of kBM * 128 bytes; the swizzle
      // only permutes 16-byte chunks inside a row), so the other warpgroup's Q is never touched.
      // The XOR makes both phases bank-conflict free (8 rows x 4 words per 32-bit store; 8 chunks of
      // one row per quarter-warp 16-byte load).
      const int64_t row_strides = direct ? (p.na.o_sp[0] | p.na.o_sp[1] | p.na.o_sp[2]) : p.o_stride[1];
      staged = (reinterpret_cast<uintptr_t>(o_base) & 15) == 0 && (row_strides & 7) == 0;
      if (staged) {
        const uint32_t stage = static_cast<uint32_t>(__cvta_generic_to_shared(ss.q)) + cwg * (64 * 128);
        auto chunk_at = [&](int r, int ch) NATTN_SM90_INLINE -> uint32_t {
          return stage + (ch >> 3) * (kBM * 128) + r * 128 + (((ch & 7) ^ (r & 7)) << 4);
        };
        detail::named_bar_sync(detail::kBarEpi + cwg, 128);  // all four warps past their last wgmma
        CUTE_UNROLL
        for (int i = 0; i < size(tOrO); i += 2) {
          const int r = detail::row_half(i);
          const int lrow = get<0>(tOcO(i)) - 64 * cwg;
          const int col = get<1>(tOcO(i));
          detail::st_shared_b32(chunk_at(lrow, col >> 3) + (col & 7) * 2,
                                detail::pack2<T>(tOrO(i) * inv[r], tOrO(i + 1) * inv[r]));
        }
        detail::named_bar_sync(detail::kBarEpi + cwg, 128);
        constexpr int kChunks = D / 8;  // 16-byte chunks per row
        const int wtid = ctid & 127;
        CUTE_UNROLL
        for (int it = 0; it < 64 * kChunks / 128; ++it) {
          const int idx = wtid + 128 * it;
          const int r = idx / kChunks, ch = idx % kChunks;
          const uint4 v = detail::ld_shared_v4(chunk_at(r, ch));
          int64_t o_off, l_off;
          if (row_dest(64 * cwg + r, o_off, l_off)) detail::st_global_v4(o_base + o_off + ch * 8, v);
        }
      }
    }
    if (!staged) {
      CUTE_UNROLL
      for (int i = 0; i < size(tOrO); i += 2) {
        const int r = detail::row_half(i);
        int64_t o_off, l_off;
        if (row_dest(rows[r] - m_block * kBM, o_off, l_off)) {
          const int col = get<1>(tOcO(i));
          *reinterpret_cast<uint32_t*>(o_base + o_off + col) = detail::pack2<T>(tOrO(i) * inv[r], tOrO(i + 1) * inv[r]);
        }
      }
    }
    if (p.lse != nullptr && (threadIdx.x & 3) == 0) {
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        int64_t o_off, l_off;
        if (row_dest(rows[r] - m_block * kBM, o_off, l_off))
          p.lse[batch * p.lse_stride[0] + head * p.lse_stride[2] + q_start * p.lse_stride[1] + l_off] = lse[r];
      }
    }
  }
#endif
}

// ---- host launcher (in the generated TU) --------------------------------------------------------
// na == nullptr: FMHA; else NA on permuted tensors (a describes them: batch = B * G, seqlen = P).
template <class T, int D, bool kNa>
void launch_attn_fwd_sm90(const FmhaFwdParams& a, const NaGeom* na, cudaStream_t stream) {
  using C = FmhaFwdConfig<T, D, detail::kernel_stages<D>()>;
  // Direct NA mode: the sequence-view descriptors are unused (placeholders over one row) and the
  // rank-5 ones are built instead.
  const bool direct = na != nullptr && na->direct;
  const int sq = direct ? 1 : a.seqlen_q, skv = direct ? 1 : a.seqlen_kv;
  const int hq = direct ? 1 : a.heads, hkv = direct ? 1 : a.heads_kv, nb = direct ? 1 : a.batch;
  auto st = [&](int64_t s) { return direct ? int64_t{D} : s; };
  FmhaFwdKernelParams<T, D> p{
      make_tma_q<T, D>(static_cast<const T*>(a.q), sq, hq, nb, st(a.q_stride[1]), st(a.q_stride[2]), st(a.q_stride[0])),
      make_tma_k<T, D>(static_cast<const T*>(a.k), skv, hkv, nb, st(a.k_stride[1]), st(a.k_stride[2]),
                       st(a.k_stride[0])),
      make_tma_v<T, D>(static_cast<const T*>(a.v), skv, hkv, nb, st(a.v_stride[1]), st(a.v_stride[2]),
                       st(a.v_stride[0])),
      static_cast<T*>(a.o),
      a.lse,
      {a.o_stride[0], a.o_stride[1], a.o_stride[2]},
      {a.lse_stride[0], a.lse_stride[1], a.lse_stride[2]},
      a.batch,
      a.seqlen_q,
      a.seqlen_kv,
      a.heads,
      a.heads_kv,
      a.heads / a.heads_kv,
      ((a.cu_q != nullptr ? a.max_seqlen_q : a.seqlen_q) + C::kBlockM - 1) / C::kBlockM,
      a.scale_log2,
      a.causal ? 1 : 0,
      na == nullptr ? a.cu_q : nullptr,
      na == nullptr ? a.cu_kv : nullptr,
      na != nullptr ? *na : NaGeom{},
      {},
      {},
      {}};
  if (direct) {
    int64_t extent[3], q_tile[3], kv_tile[3];
    for (int i = 0; i < 3; ++i) {
      extent[i] = na->ax[i].extent;
      q_tile[i] = na->qp.tile[i];
      kv_tile[i] = na->kvp.tile[i];
    }
    p.dq = make_tma_na_direct(static_cast<const T*>(a.q), a.heads, D, C::kBlockD, extent, na->q_sp, a.batch,
                              a.q_stride[0], q_tile);
    p.dk = make_tma_na_direct(static_cast<const T*>(a.k), a.heads_kv, D, C::kBlockD, extent, na->k_sp, a.batch,
                              a.k_stride[0], kv_tile);
    p.dv = make_tma_na_direct(static_cast<const T*>(a.v), a.heads_kv, D, C::kBlockD, extent, na->v_sp, a.batch,
                              a.v_stride[0], kv_tile);
  }
  auto kernel = attn_fwd_sm90_kernel<T, D, kNa>;
  const int smem = C::kSmemBytes;
  NATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int grid_z = na == nullptr && a.cu_q != nullptr ? a.num_seqs : a.batch;  // varlen: one slice per sequence
  if (p.num_m_blocks == 0 || grid_z == 0) return;
  const dim3 grid(static_cast<unsigned>(p.num_m_blocks), static_cast<unsigned>(a.heads),
                  static_cast<unsigned>(grid_z));
  kernel<<<grid, C::kThreads, smem, stream>>>(p);
  NATTN_CUDA_CHECK_LAUNCH(kNa ? "attn_fwd_sm90_kernel<na>" : "attn_fwd_sm90_kernel<fmha>");
}

template <class T, int D>
void launch_fmha_fwd_sm90(const FmhaFwdParams& a, cudaStream_t stream) {
  launch_attn_fwd_sm90<T, D, false>(a, nullptr, stream);
}
template <class T, int D>
void launch_na_fwd_sm90(const FmhaFwdParams& a, const NaGeom& na, cudaStream_t stream) {
  launch_attn_fwd_sm90<T, D, true>(a, &na, stream);
}

}  // namespace nattn::cuda::sm90
