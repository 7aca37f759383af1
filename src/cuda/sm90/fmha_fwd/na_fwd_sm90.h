// Host entry of the Hopper (sm_90a) NA forward (registry name `hopper-fna`). Direct mode where it
// can (na_forward_direct_blocker): the shared warp-specialised TMA + wgmma kernel of
// fmha_fwd_kernel.cuh reads rank-5 boxes of the caller's heads-last tensors and writes O and LSE in
// place. Otherwise it token-permutes Q, K, V (dilation groups folded into the batch, head dims
// zero-padded), runs the kernel on the permuted tensors with per-KV-tile mask classes, and
// unpermutes O and the LSE into the caller's tensors. Framework-free; asynchronous on `stream`
// (workspace through cudaMallocAsync / cudaFreeAsync on that stream).
//
// Supported: rank 1-3, fp16 / bf16, head dims D (query/key) and Dv (value) multiples of 8 in
// [8, 256], Dv may differ from D (both are zero-padded during the permutation to the kernel head
// dim na_kernel_head_dim: the smallest compiled 32 / 64 / 128 / 256 >= max(D, Dv); the scale stays
// the caller's, default D^-0.5 of the real D), any kernel size / stride / dilation / per-axis
// causality, GQA/MQA, optional LSE, additional KV tokens (a dense hopper-fmha forward of the
// queries against them, merged exactly with the NA part by LSE), any strides with the head dim
// contiguous; sub-domains (direct mode only); config q_tile of volume 128 and kv_tile of volume
// na_kv_tile_volume (128; 64 at kernel head dim 256), both of the NA rank (powers of two),
// schedule pp or coop. Not supported (NotImplementedError): scale <= 0, B * G or H > 65535. Needs a
// compute capability 9.0 device.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/ops.h"
#include "nattn/problem.h"
#include "nattn/tensor.h"

namespace nattn::cuda::sm90 {

// True when the kernel of (dtype, head_dim) was compiled into this build (same table as FMHA).
bool na_forward_compiled(DType dtype, int head_dim);

// The kernel head dim for (D, Dv): the smallest compiled one (32, 64, 128, 256) >= max(D, Dv); 0 when none.
int na_kernel_head_dim(DType dtype, int64_t head_dim, int64_t head_dim_v);

// Keys per KV tile of the kernel of that head dim (FmhaFwdConfig::kBlockN): 128, and 64 at 256
// (its O accumulator leaves no registers for 128-key S / P fragments). Config kv_tile volumes.
int64_t na_kv_tile_volume(int kernel_head_dim);

// "" when na_forward accepts the problem at the shape level (dtype, head dims, compiled kernels,
// additional KV, batch x dilation groups, heads, sub-domain), else the reason: what the registry
// (HopperFna::reject) reports. na_forward applies exactly these rules, plus the config, scale,
// layout and sequence-length checks of na_forward_unsupported_reason.
std::string na_forward_reject(const NaProblem& problem);

// "" when na_forward can run these arguments with this config on the current device, else the
// reason. Does not touch the device beyond querying its compute capability.
std::string na_forward_unsupported_reason(const NaForwardArgs& args, const TileConfig& config);

// Throws ValueError / NotImplementedError (with the reason above) / RuntimeError (a CUDA error).
void na_forward(const NaForwardArgs& args, const TileConfig& config, cudaStream_t stream);

// The kernel's NA geometry (rank-3 permutations with flip = true, per-axis parameters, in-tile
// decode) for parameters already checked; exposed for the host self-check of the tile walk.
// direct: the geometry of the direct mode (axes reversed, KV tiles from the KV box start; the
// caller fills the strides), else of the permuted mode. extent: the query's spatial extent.
// sub_domain (direct mode only): the window math on sub_domain->global_extent, the query box at
// q_origin, the K/V box of extent kv_extent at kv_origin (NaGeom::q_org / kv_org).
NaGeom na_geometry(const NaParams& params, const std::vector<int64_t>& extent, const TileConfig& config,
                   bool direct = false, const SubDomain* sub_domain = nullptr,
                   const std::vector<int64_t>& kv_extent = {});

// "" when na_forward runs these (valid) arguments in direct mode: no permutation, the kernel reads
// Q/K/V and writes O/LSE in the caller's tensors (dilation 1, D == Dv == 32, 64, 128 or 256, TMA-compatible
// strides: head stride D, 16-byte aligned bases and strides; with additional KV also row-major O / LSE
// and a query whose spatial axes merge into one token axis); else why it permutes.
// NATTN_HOPPER_FNA_PERMUTED=1 in the environment forces the permuted path (benchmarks).
std::string na_forward_direct_blocker(const NaForwardArgs& args);

// The kernel alone (benchmarks): on tensors already permuted as token_permute does with the
// config's tiles and flip = true, contiguous, head dim dk = na_kernel_head_dim(dtype, D, Dv)
// (zero-padded where D or Dv < dk): q_perm / o_perm [B * G, Pq, H, dk], k_perm / v_perm
// [B * G, Pkv, Hkv, dk], lse_perm [B * G, Pq, H] fp32 (required). `args` is checked as by na_forward
// and gives the problem; its tensors are not touched. No additional KV (NotImplementedError).
void na_forward_permuted(const NaForwardArgs& args, const TileConfig& config, const void* q_perm, const void* k_perm,
                         const void* v_perm, void* o_perm, float* lse_perm, cudaStream_t stream);

}  // namespace nattn::cuda::sm90
