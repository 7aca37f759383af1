#include "cuda/sm80/fna_fwd/fna_fwd_dispatch.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm80/fna_fwd/aux_kernels.h"
#include "cuda/sm80/fna_fwd/params.h"
#include "nattn/errors.h"

namespace nattn::cuda::fna {

using LaunchFn = void (*)(const FwdParams&, dim3, cudaStream_t);

#define NATTN_FNA_FWD_KERNEL(kind, dtype, hd, bm) \
  void fna_fwd_##kind##_##dtype##_hd##hd##_q##bm(const FwdParams&, dim3, cudaStream_t);
#include "fna_fwd_table.inc"
#undef NATTN_FNA_FWD_KERNEL

namespace {

struct Entry {
  const char* kind;
  DType dtype;
  int hd;
  int bm;  // queries per CTA
  LaunchFn fn;
};

#define NATTN_FNA_FWD_KERNEL(kind, dtype, hd, bm) \
  {#kind, DType::dtype, hd, bm, &fna_fwd_##kind##_##dtype##_hd##hd##_q##bm},
const Entry kTable[] = {
#include "fna_fwd_table.inc"
    {nullptr, DType::f32, 0, 0, nullptr}};
#undef NATTN_FNA_FWD_KERNEL

const Entry* find_kernel(const std::string& kind, DType dtype, int64_t need_hd, int bm) {
  const Entry* best = nullptr;
  for (const Entry& e : kTable) {
    if (e.kind == nullptr || kind != e.kind || e.dtype != dtype || e.hd < need_hd || e.bm != bm) continue;
    if (best == nullptr || e.hd < best->hd) best = &e;
  }
  return best;
}

int64_t smem_bytes(const std::string& kind, DType dtype, int hd, int bm) {
  const int64_t es = dtype_size(dtype);
  if (kind == "mma") return (bm + 2 * kBlockN) * (hd + 8) * es;
  return (kBlockM + kBlockN) * (hd + (es == 4 ? 1 : 2)) * es;
}

// Static shared memory of the kernels (CTA context, row windows, offset and class tables, and in
// the tensor-core kernel the tile list), upper bounds: the tensor-core kernel uses up to 15.8 KB
// (head dim 128, 128 queries per CTA: a 512-entry list), the SIMT kernel about 5.7 KB.
int64_t static_smem(const std::string& kind) { return kind == "mma" ? 16 * 1024 : 8 * 1024; }

bool aligned16(const void* ptr, const std::vector<int64_t>& strides, int64_t esize) {
  if (ptr == nullptr) return true;
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  for (size_t i = 0; i + 1 < strides.size(); ++i)
    if ((strides[i] * esize) % 16 != 0) return false;
  return true;
}

// [B, *S, H, ...] strides -> {batch, s0, s1, s2, head} with zeros for missing axes.
void strides5(const TensorView& t, int rank, int64_t* out) {
  out[0] = t.stride(0);
  for (int i = 0; i < 3; ++i) out[1 + i] = i < rank ? t.stride(1 + i) : 0;
  out[4] = t.stride(1 + rank);
}

struct Choice {
  const Entry* entry = nullptr;
  std::string kind;
  int bm = kBlockM;
  int64_t smem = 0;
};

// bm: the queries per CTA wanted (64 or 128). A 128-query kernel that is not compiled for this
// dtype/head dim (or the SIMT kernel) leaves out.bm = 64: the caller then splits each Q tile in two.
std::string choose(DType dtype, int64_t d, int64_t dv, int cc, int smem_limit, int bm, Choice& out) {
  out.kind = forward_kernel_kind(dtype, cc);
  // Testing hook: NATTN_CUDA_FORCE_SIMT=1 runs fp16/bf16 on the SIMT kernel (the SM75 path) too.
  const char* force = std::getenv("NATTN_CUDA_FORCE_SIMT");
  if (force != nullptr && force[0] == '1') out.kind = "simt";
  const int64_t need = std::max(d, dv);
  out.entry = nullptr;
  if (bm == 128 && out.kind == "mma") {
    out.entry = find_kernel(out.kind, dtype, need, 128);
    if (out.entry != nullptr && smem_bytes(out.kind, dtype, out.entry->hd, 128) + static_smem(out.kind) > smem_limit)
      out.entry = nullptr;
    if (out.entry != nullptr && find_kernel(out.kind, dtype, need, 64) != nullptr &&
        find_kernel(out.kind, dtype, need, 64)->hd < out.entry->hd)
      out.entry = nullptr;  // a tighter head dim at 64 queries beats a padded one at 128
  }
  if (out.entry == nullptr) out.entry = find_kernel(out.kind, dtype, need, 64);
  if (out.entry == nullptr)
    return std::string("no compiled ") + out.kind + " forward kernel for dtype " + dtype_name(dtype) +
           " and head dim " + std::to_string(need) +
           " (this build's NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS leave it out)";
  out.bm = out.entry->bm;
  out.smem = smem_bytes(out.kind, dtype, out.entry->hd, out.bm);
  if (out.smem + static_smem(out.kind) > smem_limit)
    return std::string("the ") + out.kind + " forward kernel for " + dtype_name(dtype) + " head dim " +
           std::to_string(out.entry->hd) + " needs " + std::to_string(out.smem) +
           " bytes of shared memory per block; compute capability " + std::to_string(cc) + " allows " +
           std::to_string(smem_limit);
  return {};
}

// Read the tile config into p (q_tile, kv_tile, shifts). Returns the Q tile volume (64 or 128).
// KV tiles of volume 128 are walked as two volume-64 halves (the first axis halved); the result is
// the same function, the walk is finer.
int64_t check_config(const char* backend, const TileConfig& config, int rank, FwdParams& p) {
  int64_t qv = 1, kv = 1;
  bool ok = static_cast<int>(config.q_tile.size()) == rank && static_cast<int>(config.kv_tile.size()) == rank;
  if (ok) {
    for (int i = 0; i < rank; ++i) {
      qv *= config.q_tile[static_cast<size_t>(i)];
      kv *= config.kv_tile[static_cast<size_t>(i)];
      p.q_tile[i] = config.q_tile[static_cast<size_t>(i)];
      p.kv_tile[i] = config.kv_tile[static_cast<size_t>(i)];
    }
  }
  for (int i = 0; i < rank && ok; ++i) {
    const int64_t a = p.q_tile[i], b = p.kv_tile[i];
    ok = a > 0 && b > 0 && (a & (a - 1)) == 0 && (b & (b - 1)) == 0;
  }
  if (ok && kv == 2 * kBlockN) {
    for (int i = 0; i < rank; ++i)
      if (p.kv_tile[i] >= 2) {
        p.kv_tile[i] /= 2;
        kv /= 2;
        break;
      }
  }
  if (!ok || (qv != 64 && qv != 128) || kv != kBlockN)
    throw NotImplementedError(std::string(backend) + ": tile config " + config.describe() +
                              " is not compiled in this build (the forward kernels take q_tile shapes of powers "
                              "of two and volume 64 or 128, kv_tile shapes of volume 64 or 128, e.g. "
                              "q_tile=(8, 8) kv_tile=(8, 8))");
  return qv;
}

// Set p.block_m, splitting a 128-query tile in two (first axis of extent >= 2) when the chosen
// kernel takes 64 queries, and the power-of-two shifts.
void set_tiles(FwdParams& p, int64_t qv, int bm) {
  p.block_m = bm;
  if (qv == 128 && bm == 64) {
    for (int i = 0; i < 3; ++i)
      if (p.q_tile[i] >= 2) {
        p.q_tile[i] /= 2;
        break;
      }
  }
  for (int i = 0; i < 3; ++i) {
    p.q_shift[i] = p.kv_shift[i] = 0;
    while ((int64_t{1} << p.q_shift[i]) < p.q_tile[i]) ++p.q_shift[i];
    while ((int64_t{1} << p.kv_shift[i]) < p.kv_tile[i]) ++p.kv_shift[i];
  }
}

void launch(const Choice& ch, const FwdParams& p, int64_t gx, int64_t gy, int64_t gz, const DeviceProps& props,
            cudaStream_t stream, const char* backend) {
  if (gx == 0 || gy == 0 || gz == 0) return;
  // The kernels keep in-sequence coordinates in 32 bits (offsets stay 64-bit).
  const int64_t lim = std::numeric_limits<int32_t>::max() / 2;
  for (int64_t x : {p.extent[0], p.extent[1], p.extent[2], p.num_extra, p.seqlen_q, p.seqlen_kv})
    if (x > lim)
      throw NotImplementedError(std::string(backend) + ": sequence/axis lengths above " + std::to_string(lim) +
                                " are not supported (got " + std::to_string(x) + ")");
  if (gx > std::numeric_limits<int32_t>::max() || gy > props.max_grid_y || gz > props.max_grid_z)
    throw NotImplementedError(std::string(backend) + ": the launch grid (" + std::to_string(gx) + ", " +
                              std::to_string(gy) + ", " + std::to_string(gz) +
                              ") exceeds the device limits (heads <= " + std::to_string(props.max_grid_y) +
                              ", batch <= " + std::to_string(props.max_grid_z) + ")");
  ch.entry->fn(p, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz)), stream);
}

}  // namespace

const char* forward_kernel_kind(DType dtype, int cc) {
  return (cc >= 80 && (dtype == DType::f16 || dtype == DType::bf16)) ? "mma" : "simt";
}

std::string forward_reject(const std::string& backend, DType dtype, int64_t head_dim, int64_t head_dim_v,
                           int64_t batch, int64_t heads, int cc) {
  Choice ch;
  const std::string why = choose(dtype, head_dim, head_dim_v, cc, smem_optin_for_cc(cc), 64, ch);
  if (!why.empty()) return backend + ": " + why;
  if (heads > 65535 || batch > 65535)
    return backend + " supports at most 65535 heads and 65535 batch entries (got heads=" + std::to_string(heads) +
           ", batch=" + std::to_string(batch) + ")";
  return {};
}

void na_forward(const NaForwardArgs& a, const TileConfig& config, const RunOptions& options) {
  const char* backend = "cutlass-fna";
  const int rank = a.params.rank;
  const DeviceProps& props = device_props(a.query.device.index);
  DeviceGuard guard(props.index);
  const DType dtype = a.query.dtype;
  const int64_t esize = dtype_size(dtype);

  FwdParams p;
  const int64_t qv = check_config(backend, config, rank, p);
  p.q = a.query.data;
  p.k = a.key.data;
  p.v = a.value.data;
  p.o = a.out.data;
  strides5(a.query, rank, p.qs);
  strides5(a.key, rank, p.ks);
  strides5(a.value, rank, p.vs);
  strides5(a.out, rank, p.os);
  if (a.lse) {
    p.lse = static_cast<float*>(a.lse->data);
    strides5(*a.lse, rank, p.ls);
  }
  p.batch = a.query.size(0);
  p.heads = a.query.size(rank + 1);
  p.heads_kv = a.key.size(rank + 1);
  p.head_dim = static_cast<int>(a.query.size(rank + 2));
  p.head_dim_v = static_cast<int>(a.value.size(rank + 2));
  int64_t groups = 1, qtiles = 1;
  for (int i = 0; i < rank; ++i) {
    p.q_extent[i] = a.query.size(1 + i);
    p.extent[i] = a.sub_domain ? a.sub_domain->global_extent[static_cast<size_t>(i)] : p.q_extent[i];
    p.q_origin[i] = a.sub_domain ? a.sub_domain->q_origin[static_cast<size_t>(i)] : 0;
    p.kv_origin[i] = a.sub_domain ? a.sub_domain->kv_origin[static_cast<size_t>(i)] : 0;
    p.kernel[i] = a.params.kernel_size[static_cast<size_t>(i)];
    p.stride[i] = a.params.stride[static_cast<size_t>(i)];
    p.dilation[i] = a.params.dilation[static_cast<size_t>(i)];
    p.causal[i] = a.params.is_causal[static_cast<size_t>(i)] ? 1 : 0;
  }
  Choice ch;
  const std::string why =
      choose(dtype, p.head_dim, p.head_dim_v, props.cc, props.max_smem_optin, static_cast<int>(qv), ch);
  if (!why.empty()) throw NotImplementedError(std::string(backend) + ": " + why);
  set_tiles(p, qv, ch.bm);
  for (int i = 0; i < 3; ++i) {
    // the most local queries of one dilation group along this axis
    const int64_t lg_max = (p.q_extent[i] + p.dilation[i] - 1) / p.dilation[i];
    p.q_tiles[i] = (lg_max + p.q_tile[i] - 1) / p.q_tile[i];
    groups *= p.dilation[i];
    qtiles *= p.q_tiles[i];
  }
  bool aligned = aligned16(p.q, a.query.strides, esize) && aligned16(p.k, a.key.strides, esize) &&
                 aligned16(p.v, a.value.strides, esize);
  if (a.additional_keys && a.additional_values) {
    p.ek = a.additional_keys->data;
    p.ev = a.additional_values->data;
    p.num_extra = a.additional_keys->size(1);
    for (int i = 0; i < 3; ++i) {
      p.eks[i] = a.additional_keys->stride(i == 0 ? 0 : i == 1 ? 1 : 2);
      p.evs[i] = a.additional_values->stride(i == 0 ? 0 : i == 1 ? 1 : 2);
    }
    aligned = aligned && aligned16(p.ek, a.additional_keys->strides, esize) &&
              aligned16(p.ev, a.additional_values->strides, esize);
  }
  p.aligned = aligned ? 1 : 0;
  p.scale_log2 = static_cast<float>(*a.scale * 1.4426950408889634);
  launch(ch, p, groups * qtiles, p.heads, p.batch, props, static_cast<cudaStream_t>(options.stream), backend);
}

void fmha_forward(const FmhaForwardArgs& a, const TileConfig& config, const RunOptions& options) {
  const char* backend = "cutlass-fmha";
  const DeviceProps& props = device_props(a.query.device.index);
  DeviceGuard guard(props.index);
  const DType dtype = a.query.dtype;
  const int64_t esize = dtype_size(dtype);
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);

  FwdParams p;
  const int64_t qv = check_config(backend, config, 1, p);
  p.fmha = 1;
  p.fmha_causal = a.is_causal ? 1 : 0;
  p.q = a.query.data;
  p.ek = a.key.data;
  p.ev = a.value.data;
  p.o = a.out.data;
  strides5(a.query, 1, p.qs);
  strides5(a.out, 1, p.os);
  if (a.lse) {
    p.lse = static_cast<float*>(a.lse->data);
    strides5(*a.lse, 1, p.ls);
  }
  for (int i = 0; i < 3; ++i) {
    p.eks[i] = a.key.stride(i);
    p.evs[i] = a.value.stride(i);
  }
  p.batch = a.query.size(0);
  p.heads = a.query.size(2);
  p.heads_kv = a.key.size(2);
  p.head_dim = static_cast<int>(a.query.size(3));
  p.head_dim_v = static_cast<int>(a.value.size(3));
  p.seqlen_q = a.query.size(1);
  p.seqlen_kv = a.key.size(1);
  p.aligned = (aligned16(p.q, a.query.strides, esize) && aligned16(p.ek, a.key.strides, esize) &&
               aligned16(p.ev, a.value.strides, esize))
                  ? 1
                  : 0;
  p.scale_log2 = static_cast<float>(*a.scale * 1.4426950408889634);

  Choice ch;
  const std::string why =
      choose(dtype, p.head_dim, p.head_dim_v, props.cc, props.max_smem_optin, static_cast<int>(qv), ch);
  if (!why.empty()) throw NotImplementedError(std::string(backend) + ": " + why);
  set_tiles(p, qv, ch.bm);
  const int64_t bm = p.block_m;

  if (a.cu_seqlens_q && a.cu_seqlens_kv) {
    p.cu_q = static_cast<const int*>(a.cu_seqlens_q->data);
    p.cu_kv = static_cast<const int*>(a.cu_seqlens_kv->data);
    const int64_t nseq = a.cu_seqlens_q->size(0) - 1;
    const int64_t max_q = a.max_seqlen_q > 0 ? a.max_seqlen_q : longest_sequence(p.cu_q, nseq, stream);
    const int64_t os3[3] = {a.out.stride(0), a.out.stride(1), a.out.stride(2)};
    int64_t ls3[3] = {0, 0, 0};
    if (a.lse) {
      ls3[0] = a.lse->stride(0);
      ls3[1] = a.lse->stride(1);
      ls3[2] = a.lse->stride(2);
    }
    zero_uncovered_rows(p.o, esize, p.seqlen_q, p.heads, p.head_dim_v, os3, p.lse, a.lse ? ls3 : nullptr, p.cu_q,
                        nseq, stream);
    launch(ch, p, (max_q + bm - 1) / bm, p.heads, nseq, props, stream, backend);
    return;
  }
  launch(ch, p, (p.seqlen_q + bm - 1) / bm, p.heads, p.batch, props, stream, backend);
}

}  // namespace nattn::cuda::fna
