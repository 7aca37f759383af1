#include "cuda/sm80/fna_bwd/fna_bwd_dispatch.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/sm80/fna_fwd/aux_kernels.h"
#include "cuda/common/device.h"
#include "cuda/sm80/fna_bwd/bwd_aux.h"
#include "cuda/sm80/fna_bwd/bwd_params.h"
#include "core/log.h"
#include "nattn/errors.h"

namespace nattn::cuda::fna_bwd {

using LaunchFn = void (*)(const BwdParams&, bool, int, dim3, cudaStream_t);

#define NATTN_FNA_BWD_KERNEL(kind, dtype, hd) \
  void fna_bwd_##kind##_##dtype##_hd##hd(const BwdParams&, bool, int, dim3, cudaStream_t);
#include "fna_bwd_table.inc"
#undef NATTN_FNA_BWD_KERNEL

namespace {

constexpr int kMaxHeadDim = 128;
constexpr int kStaticSmem = 12 * 1024;  // context, row/column mask info, statistics, row offsets (~9.6 KB)

struct Entry {
  const char* kind;
  DType dtype;
  int hd;
  LaunchFn fn;
};

#define NATTN_FNA_BWD_KERNEL(kind, dtype, hd) {#kind, DType::dtype, hd, &fna_bwd_##kind##_##dtype##_hd##hd},
const Entry kTable[] = {
#include "fna_bwd_table.inc"
    {nullptr, DType::f32, 0, nullptr}};
#undef NATTN_FNA_BWD_KERNEL

const Entry* find_kernel(const std::string& kind, DType dtype, int64_t need_hd) {
  const Entry* best = nullptr;
  for (const Entry& e : kTable) {
    if (e.kind == nullptr || kind != e.kind || e.dtype != dtype || e.hd < need_hd) continue;
    if (best == nullptr || e.hd < best->hd) best = &e;
  }
  return best;
}

int64_t smem_bytes(const std::string& kind, DType dtype, int hd, int stages) {
  const int64_t es = dtype_size(dtype);
  if (kind == "mma") return (2 + 2 * stages) * kTileM * (hd + 8) * es;
  return 4 * kTileM * (hd + (es == 4 ? 1 : 2)) * es;
}

// fp32 workspace on the stream (stream-ordered allocation; freed on the stream when done). A
// required workspace throws when it cannot be allocated; an optional one (a faster path that has
// a fallback) leaves get() == nullptr and logs why, once.
class Workspace {
 public:
  enum class Need { required, optional };
  Workspace(size_t bytes, cudaStream_t stream, Need need = Need::required) : stream_(stream) {
    if (bytes == 0) return;
    cudaError_t e = cudaMallocAsync(&ptr_, bytes, stream);
    if (e == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      e = cudaMalloc(&ptr_, bytes);
      async_ = false;
    }
    if (e == cudaSuccess) return;
    ptr_ = nullptr;
    if (need == Need::required) NATTN_CUDA_CHECK(e);
    (void)cudaGetLastError();
    ::nattn::detail::log_once(::nattn::detail::LogLevel::warning, "cutlass-bwd-optional-workspace",
                              "cutlass backward: no memory for an optional workspace (" + std::to_string(bytes) +
                                  " bytes: " + cudaGetErrorString(e) + "); running the path without it");
  }
  ~Workspace() {
    if (ptr_ == nullptr) return;
    if (async_) {
      cudaFreeAsync(ptr_, stream_);  // best effort in a destructor
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(ptr_);
    }
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  float* get() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  bool async_ = true;
};

// A tensor's rows are 16-byte aligned and its row length a multiple of 16 bytes, so that the
// kernels may copy 16-byte chunks without reading past the head dim.
bool aligned16(const TensorView& t) {
  const int64_t es = dtype_size(t.dtype);
  if (t.data == nullptr) return true;
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  for (size_t i = 0; i + 1 < t.strides.size(); ++i)
    if ((t.strides[i] * es) % 16 != 0) return false;
  return (t.shape.back() * es) % 16 == 0;
}

void strides5(const TensorView& t, int rank, int64_t* out) {
  out[0] = t.stride(0);
  for (int i = 0; i < 3; ++i) out[1 + i] = i < rank ? t.stride(1 + i) : 0;
  out[4] = t.stride(1 + rank);
}
void strides3(const TensorView& t, int64_t* out) {
  out[0] = t.stride(0);
  out[1] = t.stride(1);
  out[2] = t.stride(2);
}

struct Choice {
  const Entry* entry = nullptr;
  std::string kind;
  int stages = 1;
};

std::string choose(DType dtype, int64_t d, int64_t dv, int cc, int smem_limit, Choice& out) {
  out.kind = backward_kernel_kind(dtype, cc);
  const char* force = std::getenv("NATTN_CUDA_FORCE_SIMT");  // testing hook: the SM75 path on any GPU
  if (force != nullptr && force[0] == '1') out.kind = "simt";
  const int64_t need = std::max(d, dv);
  if (need > kMaxHeadDim)
    return "the backward kernels support head dims up to " + std::to_string(kMaxHeadDim) + " (got head_dim=" +
           std::to_string(d) + ", head_dim_v=" + std::to_string(dv) +
           "): the dK/dV accumulators of a larger head dim do not fit the register file";
  out.entry = find_kernel(out.kind, dtype, need);
  if (out.entry == nullptr)
    return std::string("no compiled ") + out.kind + " backward kernel for dtype " + dtype_name(dtype) +
           " and head dim " + std::to_string(need) +
           " (this build's NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS leave it out)";
  out.stages = 1;
  if (out.kind == "mma" && smem_bytes(out.kind, dtype, out.entry->hd, 2) + kStaticSmem <= smem_limit) out.stages = 2;
  const int64_t smem = smem_bytes(out.kind, dtype, out.entry->hd, out.stages);
  if (smem + kStaticSmem > smem_limit)
    return std::string("the ") + out.kind + " backward kernel for " + dtype_name(dtype) + " head dim " +
           std::to_string(out.entry->hd) + " needs " + std::to_string(smem + kStaticSmem) +
           " bytes of shared memory per block; compute capability " + std::to_string(cc) + " allows " +
           std::to_string(smem_limit);
  return {};
}

// Fused dQ (BwdParams::dq_accum): with RunOptions::deterministic = false and the tensor-core
// kernels, the dkdv kernel also accumulates dQ with fp32 atomics into a zeroed [B, tokens, H, hd]
// workspace and the dq kernel (which recomputes S and dP) is skipped; a conversion pass writes dQ.
// Not taken (the deterministic two-kernel path runs) for the SIMT kernels, sub-domains, or when
// the workspace cannot be allocated (Workspace::Need::optional: logged once).
class DqAccum {
 public:
  DqAccum(bool want, const Choice& ch, const BwdParams& p, cudaStream_t stream)
      : ld_(want && ch.kind == "mma" ? ch.entry->hd : 0),
        bytes_(static_cast<size_t>(p.batch * p.tokens * p.heads * ld_) * sizeof(float)),
        ws_(bytes_, stream, Workspace::Need::optional) {
    if (ws_.get() != nullptr) NATTN_CUDA_CHECK(cudaMemsetAsync(ws_.get(), 0, bytes_, stream));
  }
  float* get() const { return ws_.get(); }              // nullptr: not taken (deterministic path)
  int64_t ld() const { return get() != nullptr ? ld_ : 0; }  // floats per [B, tokens, H] row

 private:
  int64_t ld_;
  size_t bytes_;
  Workspace ws_;
};

// dQ = scale * accum, into the dQ tensor (strides5 layout, extents of the local queries).
void convert_dq(const DqAccum& acc, const BwdParams& p, DType dtype, cudaStream_t stream) {
  DqConvertParams cp;
  cp.accum = acc.get();
  cp.accum_ld = acc.ld();
  cp.dq = p.dq;
  for (int i = 0; i < 5; ++i) cp.dqs[i] = p.dqs[i];
  for (int i = 0; i < 3; ++i) cp.extent[i] = p.q_extent[i];
  cp.batch = p.batch;
  cp.tokens = p.tokens;
  cp.heads = p.heads;
  cp.head_dim = p.head_dim;
  cp.scale = p.scale;
  launch_dq_convert(cp, dtype, stream);
}

void check_config(const char* backend, const TileConfig& config, int rank, BwdParams& p) {
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
    while (ok && (int64_t{1} << p.q_shift[i]) < a) ++p.q_shift[i];
    while (ok && (int64_t{1} << p.kv_shift[i]) < b) ++p.kv_shift[i];
  }
  if (!ok || qv != kTileM || kv != kTileN)
    throw NotImplementedError(std::string(backend) + ": backward tile config " + config.describe() +
                              " is not compiled in this build (the backward kernels take q_tile and kv_tile "
                              "shapes of powers of two and volume 64, e.g. q_tile=(8, 8) kv_tile=(8, 8))");
}

void check_sizes(const char* backend, const BwdParams& p, int64_t gx, int64_t gy, int64_t gz, const DeviceProps& props) {
  const int64_t lim = std::numeric_limits<int32_t>::max() / 2;
  for (int64_t x : {p.extent[0], p.extent[1], p.extent[2], p.num_extra, p.seqlen_q, p.seqlen_kv, p.tokens})
    if (x > lim)
      throw NotImplementedError(std::string(backend) + ": sequence/axis lengths above " + std::to_string(lim) +
                                " are not supported by the backward kernels (got " + std::to_string(x) + ")");
  if (gx > std::numeric_limits<int32_t>::max() || gy > props.max_grid_y || gz > props.max_grid_z)
    throw NotImplementedError(std::string(backend) + ": the backward launch grid (" + std::to_string(gx) + ", " +
                              std::to_string(gy) + ", " + std::to_string(gz) +
                              ") exceeds the device limits (heads <= " + std::to_string(props.max_grid_y) +
                              ", batch <= " + std::to_string(props.max_grid_z) + ")");
}

void launch(const Choice& ch, const BwdParams& p, bool dkdv, int64_t gx, int64_t gy, int64_t gz, cudaStream_t stream) {
  if (gx == 0 || gy == 0 || gz == 0) return;
  ch.entry->fn(p, dkdv, ch.stages, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz)),
               stream);
}

}  // namespace

const char* backward_kernel_kind(DType dtype, int cc) {
  return (cc >= 80 && (dtype == DType::f16 || dtype == DType::bf16)) ? "mma" : "simt";
}

std::string backward_reject(const std::string& backend, DType dtype, int64_t head_dim, int64_t head_dim_v,
                            int64_t batch, int64_t heads, int cc) {
  Choice ch;
  const std::string why = choose(dtype, head_dim, head_dim_v, cc, smem_optin_for_cc(cc), ch);
  if (!why.empty()) return backend + ": " + why;
  if (heads > 65535 || batch > 65535)
    return backend + " supports at most 65535 heads and 65535 batch entries (got heads=" + std::to_string(heads) +
           ", batch=" + std::to_string(batch) + ")";
  return {};
}

void na_backward(const NaBackwardArgs& a, const TileConfig& config, const RunOptions& options) {
  const char* backend = "cutlass-fna";
  const int rank = a.params.rank;
  const DeviceProps& props = device_props(a.query.device.index);
  DeviceGuard guard(props.index);
  const DType dtype = a.query.dtype;
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);

  BwdParams p;
  check_config(backend, config, rank, p);
  p.q = a.query.data;
  p.k = a.key.data;
  p.v = a.value.data;
  p.dout = a.dout.data;
  p.lse = static_cast<const float*>(a.lse.data);
  p.dq = a.dquery.data;
  p.dk = a.dkey.data;
  p.dv = a.dvalue.data;
  strides5(a.query, rank, p.qs);
  strides5(a.key, rank, p.ks);
  strides5(a.value, rank, p.vs);
  strides5(a.dout, rank, p.dos);
  strides5(a.lse, rank, p.ls);
  strides5(a.dquery, rank, p.dqs);
  strides5(a.dkey, rank, p.dks);
  strides5(a.dvalue, rank, p.dvs);
  p.batch = a.query.size(0);
  p.heads = a.query.size(rank + 1);
  p.heads_kv = a.key.size(rank + 1);
  p.head_dim = static_cast<int>(a.query.size(rank + 2));
  p.head_dim_v = static_cast<int>(a.value.size(rank + 2));
  p.tokens = 1;
  for (int i = 0; i < rank; ++i) {
    const size_t u = static_cast<size_t>(i);
    p.q_extent[i] = a.query.size(1 + i);
    p.kv_extent[i] = a.key.size(1 + i);
    p.extent[i] = a.sub_domain ? a.sub_domain->global_extent[u] : p.q_extent[i];
    p.q_origin[i] = a.sub_domain ? a.sub_domain->q_origin[u] : 0;
    p.kv_origin[i] = a.sub_domain ? a.sub_domain->kv_origin[u] : 0;
    p.kernel[i] = a.params.kernel_size[u];
    p.stride[i] = a.params.stride[u];
    p.dilation[i] = a.params.dilation[u];
    p.causal[i] = a.params.is_causal[u] ? 1 : 0;
    p.tokens *= p.q_extent[i];
  }
  bool aligned = aligned16(a.query) && aligned16(a.key) && aligned16(a.value) && aligned16(a.dout);
  if (a.additional_keys && a.additional_values) {
    if (!a.dadditional_keys || !a.dadditional_values)
      throw ValueError(std::string(backend) + ": dadditional_keys/dadditional_values are required with additional keys");
    p.ek = a.additional_keys->data;
    p.ev = a.additional_values->data;
    p.dek = a.dadditional_keys->data;
    p.dev = a.dadditional_values->data;
    p.num_extra = a.additional_keys->size(1);
    strides3(*a.additional_keys, p.eks);
    strides3(*a.additional_values, p.evs);
    strides3(*a.dadditional_keys, p.deks);
    strides3(*a.dadditional_values, p.devs);
    aligned = aligned && aligned16(*a.additional_keys) && aligned16(*a.additional_values);
  }
  p.aligned = aligned ? 1 : 0;
  p.scale = static_cast<float>(*a.scale);
  p.scale_log2 = static_cast<float>(*a.scale * 1.4426950408889634);

  Choice ch;
  const std::string why = choose(dtype, p.head_dim, p.head_dim_v, props.cc, props.max_smem_optin, ch);
  if (!why.empty()) throw NotImplementedError(std::string(backend) + ": " + why);

  int64_t groups = 1, qtiles = 1, kvtiles = 1;
  int64_t own_q[3], own_kv[3];
  for (int i = 0; i < 3; ++i) {
    // the most local queries / keys of one dilation group along this axis
    const int64_t q_max = (p.q_extent[i] + p.dilation[i] - 1) / p.dilation[i];
    const int64_t kv_max = (p.kv_extent[i] + p.dilation[i] - 1) / p.dilation[i];
    own_q[i] = (q_max + p.q_tile[i] - 1) / p.q_tile[i];
    own_kv[i] = (kv_max + p.kv_tile[i] - 1) / p.kv_tile[i];
    groups *= p.dilation[i];
    qtiles *= own_q[i];
    kvtiles *= own_kv[i];
  }
  const int64_t gx_dq = groups * qtiles;
  const int64_t gx_dkdv = groups * kvtiles + (p.num_extra + kTileM - 1) / kTileM;
  check_sizes(backend, p, std::max(gx_dq, gx_dkdv), p.heads, p.batch, props);
  if (p.batch == 0 || p.tokens == 0 || p.heads == 0) return;

  Workspace ws(static_cast<size_t>(p.batch * p.tokens * p.heads) * sizeof(float), stream);
  DeltaParams dp;
  dp.o = a.out.data;
  dp.dout = a.dout.data;
  dp.delta = ws.get();
  strides5(a.out, rank, dp.os);
  strides5(a.dout, rank, dp.dos);
  for (int i = 0; i < 3; ++i) dp.extent[i] = p.q_extent[i];  // the local query layout
  dp.batch = p.batch;
  dp.tokens = p.tokens;
  dp.heads = p.heads;
  dp.head_dim_v = p.head_dim_v;
  launch_delta(dp, dtype, stream);
  p.delta = ws.get();

  // Sub-domains keep the two-kernel path (their dQ / dK split across ranks is tested there).
  const DqAccum acc(!options.deterministic && !a.sub_domain, ch, p, stream);
  if (acc.get() == nullptr) {
    BwdParams pq = p;
    for (int i = 0; i < 3; ++i) pq.own_tiles[i] = own_q[i];
    launch(ch, pq, false, gx_dq, p.heads, p.batch, stream);
  }
  BwdParams pk = p;
  for (int i = 0; i < 3; ++i) pk.own_tiles[i] = own_kv[i];
  pk.na_ctas = groups * kvtiles;
  pk.dq_accum = acc.get();
  pk.dq_accum_ld = acc.ld();
  launch(ch, pk, true, gx_dkdv, p.heads_kv, p.batch, stream);
  if (acc.get() != nullptr) convert_dq(acc, p, dtype, stream);
}

void fmha_backward(const FmhaBackwardArgs& a, const TileConfig& config, const RunOptions& options) {
  const char* backend = "cutlass-fmha";
  const DeviceProps& props = device_props(a.query.device.index);
  DeviceGuard guard(props.index);
  const DType dtype = a.query.dtype;
  const int64_t esize = dtype_size(dtype);
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);

  BwdParams p;
  check_config(backend, config, 1, p);
  p.fmha = 1;
  p.fmha_causal = a.is_causal ? 1 : 0;
  p.q = a.query.data;
  p.ek = a.key.data;
  p.ev = a.value.data;
  p.dout = a.dout.data;
  p.lse = static_cast<const float*>(a.lse.data);
  p.dq = a.dquery.data;
  p.dek = a.dkey.data;
  p.dev = a.dvalue.data;
  strides5(a.query, 1, p.qs);
  strides5(a.dout, 1, p.dos);
  strides5(a.lse, 1, p.ls);
  strides5(a.dquery, 1, p.dqs);
  strides3(a.key, p.eks);
  strides3(a.value, p.evs);
  strides3(a.dkey, p.deks);
  strides3(a.dvalue, p.devs);
  p.batch = a.query.size(0);
  p.heads = a.query.size(2);
  p.heads_kv = a.key.size(2);
  p.head_dim = static_cast<int>(a.query.size(3));
  p.head_dim_v = static_cast<int>(a.value.size(3));
  p.seqlen_q = a.query.size(1);
  p.seqlen_kv = a.key.size(1);
  p.tokens = p.seqlen_q;
  p.extent[0] = p.q_extent[0] = p.seqlen_q;
  p.kv_extent[0] = p.seqlen_kv;
  p.aligned = (aligned16(a.query) && aligned16(a.key) && aligned16(a.value) && aligned16(a.dout)) ? 1 : 0;
  p.scale = static_cast<float>(*a.scale);
  p.scale_log2 = static_cast<float>(*a.scale * 1.4426950408889634);

  Choice ch;
  const std::string why = choose(dtype, p.head_dim, p.head_dim_v, props.cc, props.max_smem_optin, ch);
  if (!why.empty()) throw NotImplementedError(std::string(backend) + ": " + why);
  if (p.batch == 0 || p.heads == 0) return;

  Workspace ws(static_cast<size_t>(p.batch * p.tokens * p.heads) * sizeof(float), stream);
  if (p.tokens > 0) {
    DeltaParams dp;
    dp.o = a.out.data;
    dp.dout = a.dout.data;
    dp.delta = ws.get();
    strides5(a.out, 1, dp.os);
    strides5(a.dout, 1, dp.dos);
    dp.extent[0] = p.seqlen_q;
    dp.batch = p.batch;
    dp.tokens = p.tokens;
    dp.heads = p.heads;
    dp.head_dim_v = p.head_dim_v;
    launch_delta(dp, dtype, stream);
  }
  p.delta = ws.get();

  if (a.cu_seqlens_q && a.cu_seqlens_kv) {
    p.cu_q = static_cast<const int*>(a.cu_seqlens_q->data);
    p.cu_kv = static_cast<const int*>(a.cu_seqlens_kv->data);
    const int64_t nseq = a.cu_seqlens_q->size(0) - 1;
    const int64_t max_q = a.max_seqlen_q > 0 ? a.max_seqlen_q : fna::longest_sequence(p.cu_q, nseq, stream);
    const int64_t max_kv = a.max_seqlen_kv > 0 ? a.max_seqlen_kv : fna::longest_sequence(p.cu_kv, nseq, stream);
    const int64_t gx_q = (max_q + kTileM - 1) / kTileM, gx_kv = (max_kv + kTileM - 1) / kTileM;
    check_sizes(backend, p, std::max(gx_q, gx_kv), p.heads, nseq, props);
    int64_t ts[3];
    strides3(a.dkey, ts);
    zero_uncovered(p.dek, esize, p.seqlen_kv, p.heads_kv, p.head_dim, ts, p.cu_kv, nseq, stream);
    strides3(a.dvalue, ts);
    zero_uncovered(p.dev, esize, p.seqlen_kv, p.heads_kv, p.head_dim_v, ts, p.cu_kv, nseq, stream);
    // dQ: the fused path converts every row (rows no sequence covers get 0 from the zeroed
    // accumulator); the two-kernel path zeroes them here.
    const DqAccum acc(!options.deterministic, ch, p, stream);
    if (acc.get() == nullptr) {
      strides3(a.dquery, ts);
      zero_uncovered(p.dq, esize, p.seqlen_q, p.heads, p.head_dim, ts, p.cu_q, nseq, stream);
      launch(ch, p, false, gx_q, p.heads, nseq, stream);
    }
    BwdParams pk = p;
    pk.dq_accum = acc.get();
    pk.dq_accum_ld = acc.ld();
    launch(ch, pk, true, gx_kv, p.heads_kv, nseq, stream);
    if (acc.get() != nullptr) convert_dq(acc, p, dtype, stream);
    return;
  }
  const int64_t gx_q = (p.seqlen_q + kTileM - 1) / kTileM, gx_kv = (p.seqlen_kv + kTileM - 1) / kTileM;
  check_sizes(backend, p, std::max(gx_q, gx_kv), p.heads, p.batch, props);
  const DqAccum acc(!options.deterministic, ch, p, stream);
  if (acc.get() == nullptr) launch(ch, p, false, gx_q, p.heads, p.batch, stream);
  BwdParams pk = p;
  pk.dq_accum = acc.get();
  pk.dq_accum_ld = acc.ld();
  launch(ch, pk, true, gx_kv, p.heads_kv, p.batch, stream);
  if (acc.get() != nullptr) convert_dq(acc, p, dtype, stream);
}

}  // namespace nattn::cuda::fna_bwd
