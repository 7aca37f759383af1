// Host side of the Hopper FMHA forward: argument checks, packing into FmhaFwdParams, dispatch to
// the compiled (dtype, head dim) instantiations listed in the generated sm90_fmha_fwd_table.inc.
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm90/fmha_fwd/host_check.h"
#include "cuda/sm80/fna_fwd/aux_kernels.h"
#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/errors.h"

namespace nattn::cuda::sm90 {

// The compiled kernels: fmha_fwd_sm90_<dtype>_hd<hd>, one generated TU each.
#define NATTN_SM90_FMHA_FWD_KERNEL(dtype, hd) void fmha_fwd_sm90_##dtype##_hd##hd(const FmhaFwdParams&, cudaStream_t);
#include "sm90_fmha_fwd_table.inc"
#undef NATTN_SM90_FMHA_FWD_KERNEL

namespace {

using Launch = void (*)(const FmhaFwdParams&, cudaStream_t);

Launch find_kernel(DType dtype, int head_dim) {
#define NATTN_SM90_FMHA_FWD_KERNEL(dt, hd) \
  if (dtype == DType::dt && head_dim == (hd)) return &fmha_fwd_sm90_##dt##_hd##hd;
#include "sm90_fmha_fwd_table.inc"
#undef NATTN_SM90_FMHA_FWD_KERNEL
  return nullptr;
}

Check fail(Verdict v, const std::string& what) { return check_failed("hopper-fmha", v, what); }

std::string shape_of(const TensorView& t) { return shape_string(t.shape); }

constexpr int64_t kMaxSeq = std::numeric_limits<int32_t>::max() - kFmhaBlockM;  // TMA coordinates are int32

// TMA needs a 16-byte aligned base and every stride a multiple of 16 bytes below 2^40. Strides of
// size-1 axes are never stepped along and are not checked (the kernel replaces them).
std::string tma_layout_problem(const char* name, const TensorView& t) {
  const int64_t es = dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return std::string(name) + " base address is not 16-byte aligned";
  for (int i = 0; i < 3; ++i) {
    if (t.shape[static_cast<size_t>(i)] <= 1) continue;
    const int64_t s = t.strides[static_cast<size_t>(i)];
    if (s < 0 || (s * es) % 16 != 0 || s * es >= (int64_t{1} << 40))
      return std::string(name) + " stride " + std::to_string(s) + " of axis " + std::to_string(i) +
             " is not a non-negative multiple of 16 bytes below 2^40";
  }
  return "";
}

Check check_args(const FmhaForwardArgs& a) {
  const TensorView &q = a.query, &k = a.key, &v = a.value, &o = a.out;
  for (const TensorView* t : {&q, &k, &v, &o})
    if (t->dim() != 4)
      return fail(Verdict::value_error, "query/key/value/out must be 4-D [B, S, H, D], got " + shape_of(*t));
  for (const TensorView* t : {&q, &k, &v, &o})
    if (t->device.kind != DeviceKind::cuda || t->device != q.device)
      return fail(Verdict::not_implemented, "every tensor must be on one CUDA device, got " + t->describe());
  if (q.dtype != DType::f16 && q.dtype != DType::bf16)
    return fail(Verdict::not_implemented, std::string("dtype ") + dtype_name(q.dtype) + " (allowed: fp16, bf16)");
  for (const TensorView* t : {&k, &v, &o})
    if (t->dtype != q.dtype)
      return fail(Verdict::value_error, std::string("key/value/out dtype must match query (") + dtype_name(q.dtype) +
                                            "), got " + dtype_name(t->dtype));
  const int64_t B = q.shape[0], Sq = q.shape[1], H = q.shape[2], D = q.shape[3];
  const int64_t Skv = k.shape[1], Hkv = k.shape[2];
  if (k.shape[0] != B || k.shape[3] != D || v.shape[0] != B || v.shape[1] != Skv || v.shape[2] != Hkv ||
      o.shape[0] != B || o.shape[1] != Sq || o.shape[2] != H || o.shape[3] != v.shape[3])
    return fail(Verdict::value_error, "inconsistent shapes: query " + shape_of(q) + ", key " + shape_of(k) +
                                          ", value " + shape_of(v) + ", out " + shape_of(o));
  if (Hkv <= 0 || H % Hkv != 0)
    return fail(Verdict::value_error, "heads " + std::to_string(H) + " must be a multiple of kv heads " + std::to_string(Hkv));
  if (v.shape[3] != D)
    return fail(Verdict::not_implemented, "value head dim " + std::to_string(v.shape[3]) + " != query head dim " + std::to_string(D));
  if (D != 32 && D != 64 && D != 128 && D != 256)
    return fail(Verdict::not_implemented, "head dim " + std::to_string(D) + " (allowed: 32, 64, 128, 256)");
  for (const TensorView* t : {&q, &k, &v, &o})
    if (t->strides[3] != 1) return fail(Verdict::value_error, "the head dim must be contiguous, got " + t->describe());
  if (a.lse) {
    const TensorView& l = *a.lse;
    if (l.dtype != DType::f32 || l.dim() != 3 || l.shape[0] != B || l.shape[1] != Sq || l.shape[2] != H ||
        l.device != q.device)
      return fail(Verdict::value_error, "lse must be fp32 [B, Sq, H] = [" + std::to_string(B) + ", " +
                                            std::to_string(Sq) + ", " + std::to_string(H) + "] on the query's device, got " +
                                            l.describe());
    if (reinterpret_cast<uintptr_t>(l.data) % 4 != 0) return fail(Verdict::value_error, "lse is not 4-byte aligned");
  }
  if (a.cu_seqlens_q.has_value() != a.cu_seqlens_kv.has_value())
    return fail(Verdict::value_error, "cu_seqlens_q and cu_seqlens_kv must be given together");
  if (a.cu_seqlens_q) {  // varlen: one packed batch entry, int32 offsets on the query's device
    if (B != 1) return fail(Verdict::value_error, "varlen needs batch 1 (packed sequences), got " + std::to_string(B));
    for (const TensorView* t : {&*a.cu_seqlens_q, &*a.cu_seqlens_kv}) {
      if (t->dtype != DType::i32 || t->dim() != 1 || t->size(0) < 2 || t->device != q.device)
        return fail(Verdict::value_error, "cu_seqlens must be int32 [num_seqs + 1] on the query's device, got " +
                                              t->describe());
      if (t->strides[0] != 1) return fail(Verdict::not_implemented, "cu_seqlens must be contiguous, got " + t->describe());
    }
    if (a.cu_seqlens_q->size(0) != a.cu_seqlens_kv->size(0))
      return fail(Verdict::value_error, "cu_seqlens_q and cu_seqlens_kv differ in length: " +
                                            a.cu_seqlens_q->describe() + " and " + a.cu_seqlens_kv->describe());
    if (a.cu_seqlens_q->size(0) - 1 > 65535)
      return fail(Verdict::not_implemented, "at most 65535 varlen sequences, got " +
                                                std::to_string(a.cu_seqlens_q->size(0) - 1));
    if (a.max_seqlen_q < 0 || a.max_seqlen_q > kMaxSeq)
      return fail(Verdict::value_error, "max_seqlen_q must be in [0, 2^31 - 128), got " + std::to_string(a.max_seqlen_q));
  }
  if (B > 65535 || H > 65535)
    return fail(Verdict::not_implemented, "batch and heads must be <= 65535, got " + std::to_string(B) + ", " + std::to_string(H));
  if (Sq > kMaxSeq || Skv > kMaxSeq)
    return fail(Verdict::not_implemented, "sequence lengths must be < 2^31 - 128, got " + std::to_string(Sq) + ", " +
                                              std::to_string(Skv));
  // (Varlen sequences without keys are fine as long as the packed key tensor is not empty.)
  if (Skv == 0 && Sq > 0 && B > 0) return fail(Verdict::not_implemented, "seqlen_kv == 0 (no keys)");
  const double scale = a.scale ? *a.scale : 1.0 / std::sqrt(static_cast<double>(D));
  if (!std::isfinite(scale)) return fail(Verdict::value_error, "scale must be finite, got " + std::to_string(scale));
  if (scale <= 0.0) return fail(Verdict::not_implemented, "scale must be > 0, got " + std::to_string(scale));
  std::string bad = tma_layout_problem("query", q);
  if (bad.empty()) bad = tma_layout_problem("key", k);
  if (bad.empty()) bad = tma_layout_problem("value", v);
  if (!bad.empty()) return fail(Verdict::not_implemented, bad + " (TMA)");
  if (reinterpret_cast<uintptr_t>(o.data) % 4 != 0 || (o.shape[0] > 1 && o.strides[0] % 2 != 0) ||
      (o.shape[1] > 1 && o.strides[1] % 2 != 0) || (o.shape[2] > 1 && o.strides[2] % 2 != 0))
    return fail(Verdict::not_implemented, "out needs a 4-byte aligned base and even strides, got " + o.describe());
  if (!fmha_forward_compiled(q.dtype, static_cast<int>(D)))
    return fail(Verdict::not_implemented, std::string("no kernel compiled for ") + dtype_name(q.dtype) + " head dim " +
                                              std::to_string(D) + " (NATTN_CUDA_ARCHS needs 90; see NATTN_CUDA_DTYPES / HEAD_DIMS)");
  return {};
}

Check check_device(const FmhaForwardArgs& a) { return check_sm90_device("hopper-fmha", a.query.device); }

// The stride of axis i for TMA / the kernel: any 16-byte multiple where the axis has size 1.
int64_t axis_stride(const TensorView& t, int i) {
  return t.shape[static_cast<size_t>(i)] <= 1 ? t.shape[3] : t.strides[static_cast<size_t>(i)];
}

}  // namespace

bool fmha_forward_compiled(DType dtype, int head_dim) { return find_kernel(dtype, head_dim) != nullptr; }

std::string fmha_forward_unsupported_reason(const FmhaForwardArgs& args) {
  Check c = check_args(args);
  if (c.verdict == Verdict::ok) c = check_device(args);
  return c.message;
}

void fmha_forward(const FmhaForwardArgs& a, cudaStream_t stream, bool pingpong) {
  raise(check_args(a));
  raise(check_device(a));
  const TensorView &q = a.query, &k = a.key, &v = a.value, &o = a.out;
  if (q.shape[0] == 0 || q.shape[1] == 0 || q.shape[2] == 0) return;
  FmhaFwdParams p;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.o = o.data;
  p.lse = a.lse ? static_cast<float*>(a.lse->data) : nullptr;
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = axis_stride(q, i);
    p.k_stride[i] = axis_stride(k, i);
    p.v_stride[i] = axis_stride(v, i);
    p.o_stride[i] = o.strides[static_cast<size_t>(i)];
    p.lse_stride[i] = a.lse ? a.lse->strides[static_cast<size_t>(i)] : 0;
  }
  p.batch = static_cast<int>(q.shape[0]);
  p.seqlen_q = static_cast<int>(q.shape[1]);
  p.heads = static_cast<int>(q.shape[2]);
  p.seqlen_kv = static_cast<int>(k.shape[1]);
  p.heads_kv = static_cast<int>(k.shape[2]);
  const double scale = a.scale ? *a.scale : 1.0 / std::sqrt(static_cast<double>(q.shape[3]));
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.causal = a.is_causal;
  p.pingpong = pingpong;
  const Launch launch = find_kernel(q.dtype, static_cast<int>(q.shape[3]));
  DeviceGuard guard(q.device.index);
  if (a.cu_seqlens_q) {
    p.cu_q = static_cast<const int*>(a.cu_seqlens_q->data);
    p.cu_kv = static_cast<const int*>(a.cu_seqlens_kv->data);
    p.num_seqs = static_cast<int>(a.cu_seqlens_q->size(0) - 1);
    // Without a hint, read the offsets (synchronises the stream).
    const int64_t max_q = a.max_seqlen_q > 0 ? a.max_seqlen_q : fna::longest_sequence(p.cu_q, p.num_seqs, stream);
    if (max_q > kMaxSeq)
      throw NotImplementedError("hopper-fmha: a varlen sequence of " + std::to_string(max_q) +
                                " queries (at most 2^31 - 128)");
    p.max_seqlen_q = static_cast<int>(max_q);
    // Rows past the last sequence belong to none: O = 0, LSE = 0 (the kernel never visits them).
    const int64_t os[3] = {o.strides[0], o.strides[1], o.strides[2]};
    const int64_t ls[3] = {p.lse_stride[0], p.lse_stride[1], p.lse_stride[2]};
    fna::zero_uncovered_rows(o.data, dtype_size(o.dtype), q.shape[1], q.shape[2], o.shape[3], os, p.lse,
                             a.lse ? ls : nullptr, p.cu_q, p.num_seqs, stream);
  }
  launch(p, stream);
}

int persistent_ctas(int requested, int sms) {
  int k = requested;
  if (k < 0) {
    const char* env = std::getenv("NATTN_HOPPER_PERSISTENT");  // read per call: benchmarks switch it
    k = env != nullptr ? std::max(0, std::atoi(env)) : 0;
  }
  if (k <= 0) return 0;
  sms = std::max(sms, 1);
  return k == 1 ? sms : std::min(k, sms);
}

int choose_pairs_per_cta(int num_m_blocks, int64_t n_pairs, int64_t walk, int requested) {
  int64_t k = requested;
  if (k <= 0) {
    const char* env = std::getenv("NATTN_HOPPER_PAIRS_PER_CTA");  // read per call: benchmarks switch it
    if (env != nullptr && *env != '\0') k = std::atoll(env);
  }
  if (k <= 0 && walk > 16) k = 1;  // automatic, long walks: one pair per CTA
  if (k <= 0) {
    // Automatic, short walks: the set-up a CTA pays once is worth sharing while enough CTAs remain
    // to fill the GPU evenly (8 waves); at most 16 pairs per CTA.
    const int64_t sms = device_props(current_device()).sm_count;
    k = std::min<int64_t>(16, static_cast<int64_t>(num_m_blocks) * n_pairs / std::max<int64_t>(1, 8 * sms));
  }
  k = std::max<int64_t>({k, 1, (n_pairs + 65534) / 65535});  // grid y <= 65535
  return static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(1, n_pairs)));
}

}  // namespace nattn::cuda::sm90
