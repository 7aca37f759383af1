// Validation of every op's arguments. Messages: "<op>: <argument> <what is wrong> (got <value>;
// allowed: <rule>)".
#include "core/validation.h"

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <vector>

#include "nattn/errors.h"
#include "nattn/semantics.h"

namespace nattn::detail {
namespace {

using Shape = std::vector<int64_t>;

// A gradient output and the input whose shape it must have.
struct GradOf {
  const char* name;
  const TensorView* grad;
  const TensorView* input;
};

void check_grads(const char* op, std::initializer_list<GradOf> grads, const TensorView& q);

[[noreturn]] void fail(const char* op, const std::string& message) {
  throw ValueError(std::string(op) + ": " + message);
}

std::string tuple3(const std::array<int64_t, 3>& v, int rank) {
  // std::to_string, not an ostream: see src/core/problem.cpp.
  std::string s = "(";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(v[static_cast<size_t>(i)]);
  return s + (rank == 1 ? ",)" : ")");
}

// Checks every tensor shares: defined data, floating dtype, contiguous head dim, non-negative shape.
void check_tensor(const char* op, const char* name, const TensorView& t) {
  if (t.strides.size() != t.shape.size())
    fail(op, std::string(name) + " has " + std::to_string(t.strides.size()) + " strides for a " +
                 std::to_string(t.dim()) + "-D shape " + shape_string(t.shape));
  for (int64_t s : t.shape)
    if (s < 0) fail(op, std::string(name) + " has a negative extent (got shape " + shape_string(t.shape) + ")");
  if (t.numel() > 0 && t.data == nullptr) fail(op, std::string(name) + " has no data (null pointer)");
  if (t.dim() > 0 && t.shape.back() > 1 && t.strides.back() != 1)
    fail(op, std::string(name) + " must be contiguous in its last axis (got strides " + shape_string(t.strides) +
                 "; allowed: last stride 1)");
}

// fp64 passes here; which backends run it is the registry's business (the reference backend only).
void check_float_dtype(const char* op, const char* name, const TensorView& t) {
  if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16 && t.dtype != DType::f64)
    fail(op, std::string(name) + " has dtype " + dtype_name(t.dtype) + " (allowed: fp32, fp16, bf16, fp64)");
}

void check_shape(const char* op, const char* name, const TensorView& t, const Shape& want, const char* layout) {
  if (t.shape != want)
    fail(op, std::string(name) + " must have shape " + shape_string(want) + " " + layout + " (got " +
                 shape_string(t.shape) + ")");
}

void check_same(const char* op, const char* name, const TensorView& t, const TensorView& q, bool same_dtype) {
  if (t.device != q.device)
    fail(op, std::string(name) + " is on " + device_name(t.device) + " but query is on " + device_name(q.device) +
                 " (all tensors must be on one device)");
  if (same_dtype && t.dtype != q.dtype)
    fail(op, std::string(name) + " has dtype " + dtype_name(t.dtype) + " but query has " + dtype_name(q.dtype) +
                 " (all inputs and outputs share the query's dtype)");
}

void check_lse(const char* op, const char* name, const TensorView& lse, const TensorView& q, const Shape& want) {
  check_tensor(op, name, lse);
  check_same(op, name, lse, q, false);
  // The LSE is fp32, except next to fp64 inputs, where it keeps their precision.
  const DType want_dtype = q.dtype == DType::f64 ? DType::f64 : DType::f32;
  if (lse.dtype != want_dtype)
    fail(op, std::string(name) + " must be " + dtype_name(want_dtype) + " for " + dtype_name(q.dtype) + " inputs (got " +
                 dtype_name(lse.dtype) + ")");
  check_shape(op, name, lse, want, "[batch, *spatial, heads]");
}

struct Heads {
  int64_t heads, heads_kv, head_dim, head_dim_v;
};

// Q/K/V of an NA call: ranks, devices, dtypes, batch, spatial, heads.
// With a sub-domain (kv_own_spatial), key/value have their own spatial extents (checked against the
// sub-domain by check_sub_domain_*); they still match the query in batch and each other everywhere.
Heads check_qkv(const char* op, const TensorView& q, const TensorView& k, const TensorView& v, int expect_rank,
                bool kv_own_spatial = false) {
  check_tensor(op, "query", q);
  check_tensor(op, "key", k);
  check_tensor(op, "value", v);
  check_float_dtype(op, "query", q);
  check_same(op, "key", k, q, true);
  check_same(op, "value", v, q, true);
  if (q.dim() < 4 || q.dim() > 6)
    fail(op, "query must be a 4-D, 5-D or 6-D tensor [batch, *spatial, heads, head_dim] for 1-D, 2-D or 3-D "
             "neighborhood attention (got " + std::to_string(q.dim()) + "-D shape " + shape_string(q.shape) + ")");
  if (expect_rank != q.dim() - 3)
    fail(op, "params.rank is " + std::to_string(expect_rank) + " but query " + shape_string(q.shape) + " is " +
                 std::to_string(q.dim() - 3) + "-D neighborhood attention (allowed: params.rank == query.dim() - 3)");
  if (k.dim() != q.dim() || v.dim() != q.dim())
    fail(op, "query, key and value must have the same rank (got " + shape_string(q.shape) + ", " +
                 shape_string(k.shape) + ", " + shape_string(v.shape) + ")");
  for (int i = 0; kv_own_spatial && i < q.dim() - 2; ++i) {
    if (k.shape[0] != q.shape[0] || v.shape[0] != q.shape[0] ||
        v.shape[static_cast<size_t>(i)] != k.shape[static_cast<size_t>(i)])
      fail(op, "with a sub_domain, key and value must match each other in spatial extents and the query in batch "
               "(query " + shape_string(q.shape) + ", key " + shape_string(k.shape) + ", value " +
               shape_string(v.shape) + ")");
  }
  for (int i = 0; !kv_own_spatial && i < q.dim() - 2; ++i) {
    if (k.shape[static_cast<size_t>(i)] != q.shape[static_cast<size_t>(i)] ||
        v.shape[static_cast<size_t>(i)] != q.shape[static_cast<size_t>(i)])
      fail(op, "key and value must match query in batch and spatial extents (query " + shape_string(q.shape) +
                   ", key " + shape_string(k.shape) + ", value " + shape_string(v.shape) + ")");
  }
  Heads h{q.size(-2), k.size(-2), q.size(-1), v.size(-1)};
  if (h.heads < 1) fail(op, "query must have at least one head (got heads=" + std::to_string(h.heads) + ")");
  if (v.size(-2) != h.heads_kv)
    fail(op, "key and value must have the same number of heads (got " + std::to_string(h.heads_kv) + " and " +
                 std::to_string(v.size(-2)) + ")");
  if (h.heads_kv < 1 || h.heads % h.heads_kv != 0)
    fail(op, "query heads must be a multiple of key/value heads (got heads=" + std::to_string(h.heads) +
                 ", heads_kv=" + std::to_string(h.heads_kv) + "; allowed: heads % heads_kv == 0, heads_kv >= 1)");
  if (h.head_dim < 1 || k.size(-1) != h.head_dim)
    fail(op, "query and key must have the same head_dim >= 1 (got " + std::to_string(h.head_dim) + " and " +
                 std::to_string(k.size(-1)) + ")");
  if (h.head_dim_v < 1) fail(op, "value must have head_dim >= 1 (got " + std::to_string(h.head_dim_v) + ")");
  return h;
}

Shape with_last(Shape s, int64_t heads, int64_t dim) {
  s[s.size() - 2] = heads;
  s[s.size() - 1] = dim;
  return s;
}
Shape drop_last(Shape s) {
  s.pop_back();
  return s;
}

int64_t check_additional(const char* op, const std::optional<TensorView>& ak, const std::optional<TensorView>& av,
                         const TensorView& q, const Heads& h) {
  if (ak.has_value() != av.has_value())
    fail(op, std::string("additional_keys and additional_values must be given together (got only ") +
                 (ak ? "additional_keys" : "additional_values") + ")");
  if (!ak) return 0;
  check_tensor(op, "additional_keys", *ak);
  check_tensor(op, "additional_values", *av);
  check_same(op, "additional_keys", *ak, q, true);
  check_same(op, "additional_values", *av, q, true);
  if (ak->dim() != 4 || av->dim() != 4)
    fail(op, "additional_keys/additional_values must be 4-D [batch, tokens, heads_kv, head_dim] (got " +
                 shape_string(ak->shape) + " and " + shape_string(av->shape) + ")");
  const int64_t n = ak->size(1);
  check_shape(op, "additional_keys", *ak, {q.size(0), n, h.heads_kv, h.head_dim}, "[batch, tokens, heads_kv, head_dim]");
  check_shape(op, "additional_values", *av, {q.size(0), n, h.heads_kv, h.head_dim_v},
              "[batch, tokens, heads_kv, head_dim_v]");
  return n;
}

// The sub-domain rules: extents and origins in range, then (after the NA parameter rules against the
// global extents) every window of the local queries inside the local key/value range.
void check_sub_domain_ranges(const char* op, const SubDomain& sd, int rank, const TensorView& q,
                             const TensorView& k) {
  for (int i = 0; i < rank; ++i) {
    const size_t a = static_cast<size_t>(i);
    const int64_t g = sd.global_extent[a], qo = sd.q_origin[a], ko = sd.kv_origin[a];
    const int64_t sq = q.shape[1 + a], skv = k.shape[1 + a];
    const std::string axis = " on axis " + std::to_string(i);
    if (g < 1)
      fail(op, "sub_domain.global_extent must be >= 1 on every axis (got global_extent=" +
                   tuple3(sd.global_extent, rank) + ")");
    if (qo < 0 || qo + sq > g)
      fail(op, "sub_domain: the local queries must lie inside the global grid" + axis + " (got q_origin=" +
                   std::to_string(qo) + " with " + std::to_string(sq) + " local query tokens = global [" +
                   std::to_string(qo) + ", " + std::to_string(qo + sq) + "), global_extent=" + std::to_string(g) +
                   "; allowed: q_origin >= 0 and q_origin + query extent <= global_extent)");
    if (ko < 0 || ko + skv > g)
      fail(op, "sub_domain: the local keys/values must lie inside the global grid" + axis + " (got kv_origin=" +
                   std::to_string(ko) + " with " + std::to_string(skv) + " local key tokens = global [" +
                   std::to_string(ko) + ", " + std::to_string(ko + skv) + "), global_extent=" + std::to_string(g) +
                   "; allowed: kv_origin >= 0 and kv_origin + key extent <= global_extent)");
  }
}

void check_sub_domain_halo(const char* op, const SubDomain& sd, const NaParams& params, const TensorView& q,
                           const TensorView& k) {
  for (int i = 0; i < params.rank; ++i) {
    const size_t a = static_cast<size_t>(i);
    const int64_t qo = sd.q_origin[a], ko = sd.kv_origin[a];
    const int64_t sq = q.shape[1 + a], skv = k.shape[1 + a];
    if (sq == 0) continue;  // no local queries along this axis: nothing to cover
    const sem::Range need = sem::halo_range(qo, qo + sq, sd.global_extent[a], params.kernel_size[a],
                                            params.stride[a], params.dilation[a], params.is_causal[a]);
    const std::string what = "sub_domain: key/value on axis " + std::to_string(i) + " hold global keys [" +
                             std::to_string(ko) + ", " + std::to_string(ko + skv) + ") but the local queries [" +
                             std::to_string(qo) + ", " + std::to_string(qo + sq) + ") attend global keys [" +
                             std::to_string(need.start) + ", " + std::to_string(need.end) + ")";
    if (ko > need.start)
      fail(op, what + ": the low halo is missing " + std::to_string(ko - need.start) +
                   " tokens (it must hold the keys [" + std::to_string(need.start) + ", " + std::to_string(qo) +
                   "), " + std::to_string(qo - need.start) + " tokens before the local queries; allowed: kv_origin <= " +
                   std::to_string(need.start) + ")");
    if (ko + skv < need.end)
      fail(op, what + ": the high halo is missing " + std::to_string(need.end - (ko + skv)) +
                   " tokens (it must hold the keys [" + std::to_string(qo + sq) + ", " + std::to_string(need.end) +
                   "), " + std::to_string(need.end - (qo + sq)) +
                   " tokens after the local queries; allowed: kv_origin + key extent >= " + std::to_string(need.end) +
                   ")");
  }
}

// Q/K/V and the NA parameters, with or without a sub-domain.
Heads check_na_inputs(const char* op, const TensorView& q, const TensorView& k, const TensorView& v,
                      const NaParams& params, const std::optional<SubDomain>& sd) {
  const Heads h = check_qkv(op, q, k, v, params.rank, sd.has_value());
  if (!sd) {
    validate_na_params(params, Shape(q.shape.begin() + 1, q.shape.end() - 2), op);
    return h;
  }
  check_sub_domain_ranges(op, *sd, params.rank, q, k);
  validate_na_params(params, Shape(sd->global_extent.begin(), sd->global_extent.begin() + params.rank), op);
  check_sub_domain_halo(op, *sd, params, q, k);
  return h;
}

NaProblem make_problem(const TensorView& q, const Heads& h, const NaParams& params, int64_t additional,
                       const RunOptions& options) {
  NaProblem p;
  p.batch = q.size(0);
  p.spatial.assign(q.shape.begin() + 1, q.shape.end() - 2);
  p.heads = h.heads;
  p.heads_kv = h.heads_kv;
  p.head_dim = h.head_dim;
  p.head_dim_v = h.head_dim_v;
  p.additional_kv = additional;
  p.dtype = q.dtype;
  p.device = q.device;
  p.params = params;
  p.requires_grad = options.requires_grad;
  p.deterministic = options.deterministic;
  return p;
}

void check_cu_seqlens(const char* op, const std::optional<TensorView>& cq, const std::optional<TensorView>& ckv,
                      const TensorView& q, const TensorView& k, int64_t max_q, int64_t max_kv) {
  if (cq.has_value() != ckv.has_value())
    fail(op, "cu_seqlens_q and cu_seqlens_kv must be given together (variable-length attention)");
  if (!cq) {
    return;
  }
  for (const auto& [name, t] : {std::pair<const char*, const TensorView*>{"cu_seqlens_q", &*cq},
                                std::pair<const char*, const TensorView*>{"cu_seqlens_kv", &*ckv}}) {
    check_tensor(op, name, *t);
    if (t->dtype != DType::i32) fail(op, std::string(name) + " must be int32 (got " + dtype_name(t->dtype) + ")");
    if (t->dim() != 1 || t->size(0) < 2)
      fail(op, std::string(name) + " must be 1-D with at least 2 entries (got shape " + shape_string(t->shape) + ")");
    if (t->device != q.device)
      fail(op, std::string(name) + " is on " + device_name(t->device) + " but query is on " + device_name(q.device));
  }
  if (cq->size(0) != ckv->size(0))
    fail(op, "cu_seqlens_q and cu_seqlens_kv must have the same length (got " + std::to_string(cq->size(0)) +
                 " and " + std::to_string(ckv->size(0)) + ")");
  if (q.size(0) != 1)
    fail(op, "variable-length attention needs batch == 1 (packed sequences; got batch " + std::to_string(q.size(0)) + ")");
  if (max_q < 0 || max_kv < 0)
    fail(op, "max_seqlen_q/max_seqlen_kv must be >= 0 (got " + std::to_string(max_q) + ", " + std::to_string(max_kv) + ")");
  // Offsets in host memory are checked here; device offsets are the kernels' contract.
  if (q.device.kind != DeviceKind::cpu) return;
  struct Offsets {
    const char* name;
    const TensorView* t;
    int64_t total, max_len;
  };
  for (const Offsets& o : {Offsets{"cu_seqlens_q", &*cq, q.size(1), max_q}, Offsets{"cu_seqlens_kv", &*ckv, k.size(1), max_kv}}) {
    const char* name = o.name;
    const TensorView* t = o.t;
    const int64_t total = o.total, max_len = o.max_len;
    const auto* data = static_cast<const int32_t*>(t->data);
    const int64_t n = t->size(0), stride = t->stride(0);
    if (data[0] != 0) fail(op, std::string(name) + "[0] must be 0 (got " + std::to_string(data[0]) + ")");
    for (int64_t i = 1; i < n; ++i) {
      const int64_t prev = data[(i - 1) * stride], cur = data[i * stride];
      if (cur < prev)
        fail(op, std::string(name) + " must be non-decreasing (entry " + std::to_string(i) + " is " +
                     std::to_string(cur) + " after " + std::to_string(prev) + ")");
      if (max_len > 0 && cur - prev > max_len)
        fail(op, std::string(name) + " has a sequence of length " + std::to_string(cur - prev) +
                     " above the given maximum " + std::to_string(max_len));
    }
    if (data[(n - 1) * stride] > total)
      fail(op, std::string(name) + " ends at " + std::to_string(data[(n - 1) * stride]) +
                   " beyond the packed length " + std::to_string(total));
  }
}

Heads check_fmha_qkv(const char* op, const TensorView& q, const TensorView& k, const TensorView& v) {
  check_tensor(op, "query", q);
  check_tensor(op, "key", k);
  check_tensor(op, "value", v);
  check_float_dtype(op, "query", q);
  check_same(op, "key", k, q, true);
  check_same(op, "value", v, q, true);
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail(op, "query, key and value must be 4-D [batch, seqlen, heads, head_dim] (got " + shape_string(q.shape) +
                 ", " + shape_string(k.shape) + ", " + shape_string(v.shape) + ")");
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0))
    fail(op, "query, key and value must have the same batch (got " + shape_string(q.shape) + ", " +
                 shape_string(k.shape) + ", " + shape_string(v.shape) + ")");
  if (k.size(1) != v.size(1))
    fail(op, "key and value must have the same sequence length (got " + std::to_string(k.size(1)) + " and " +
                 std::to_string(v.size(1)) + ")");
  Heads h{q.size(2), k.size(2), q.size(3), v.size(3)};
  if (h.heads < 1) fail(op, "query must have at least one head (got heads=" + std::to_string(h.heads) + ")");
  if (v.size(2) != h.heads_kv)
    fail(op, "key and value must have the same number of heads (got " + std::to_string(h.heads_kv) + " and " +
                 std::to_string(v.size(2)) + ")");
  if (h.heads_kv < 1 || h.heads % h.heads_kv != 0)
    fail(op, "query heads must be a multiple of key/value heads (got heads=" + std::to_string(h.heads) +
                 ", heads_kv=" + std::to_string(h.heads_kv) + "; allowed: heads % heads_kv == 0, heads_kv >= 1)");
  if (h.head_dim < 1 || k.size(3) != h.head_dim)
    fail(op, "query and key must have the same head_dim >= 1 (got " + std::to_string(h.head_dim) + " and " +
                 std::to_string(k.size(3)) + ")");
  if (h.head_dim_v < 1) fail(op, "value must have head_dim >= 1 (got " + std::to_string(h.head_dim_v) + ")");
  return h;
}

FmhaProblem make_fmha_problem(const TensorView& q, const TensorView& k, const Heads& h, bool causal, bool varlen,
                              const RunOptions& options) {
  FmhaProblem p;
  p.batch = q.size(0);
  p.seqlen_q = q.size(1);
  p.seqlen_kv = k.size(1);
  p.heads = h.heads;
  p.heads_kv = h.heads_kv;
  p.head_dim = h.head_dim;
  p.head_dim_v = h.head_dim_v;
  p.dtype = q.dtype;
  p.device = q.device;
  p.is_causal = causal;
  p.is_varlen = varlen;
  p.requires_grad = options.requires_grad;
  p.deterministic = options.deterministic;
  return p;
}

void check_grads(const char* op, std::initializer_list<GradOf> grads, const TensorView& q) {
  for (const GradOf& g : grads) {
    check_tensor(op, g.name, *g.grad);
    check_same(op, g.name, *g.grad, q, true);
    check_shape(op, g.name, *g.grad, g.input->shape, "(the shape of its input)");
  }
}

}  // namespace

void validate_na_params(const NaParams& params, const std::vector<int64_t>& spatial, const char* op) {
  const int rank = params.rank;
  if (rank < 1 || rank > 3) fail(op, "params.rank must be 1, 2 or 3 (got " + std::to_string(rank) + ")");
  if (static_cast<int>(spatial.size()) != rank)
    fail(op, "params.rank " + std::to_string(rank) + " does not match the " + std::to_string(spatial.size()) +
                 "-D token layout " + shape_string(spatial));
  for (int i = 0; i < rank; ++i) {
    const size_t a = static_cast<size_t>(i);
    const int64_t k = params.kernel_size[a], s = params.stride[a], d = params.dilation[a], L = spatial[a];
    const std::string axis = " on axis " + std::to_string(i);
    if (k < 2)
      fail(op, "kernel_size must be >= 2 on every axis (got kernel_size=" + tuple3(params.kernel_size, rank) + ")");
    if (s < 1) fail(op, "stride must be >= 1 on every axis (got stride=" + tuple3(params.stride, rank) + ")");
    if (d < 1) fail(op, "dilation must be >= 1 on every axis (got dilation=" + tuple3(params.dilation, rank) + ")");
    if (s > k)
      fail(op, "stride must not exceed kernel_size" + axis + " (got stride=" + std::to_string(s) +
                   ", kernel_size=" + std::to_string(k) + ")");
    if (k * d > L)
      fail(op, "kernel_size * dilation must not exceed the input extent" + axis + " (got kernel_size=" +
                   std::to_string(k) + " * dilation=" + std::to_string(d) + " = " + std::to_string(k * d) +
                   " > extent " + std::to_string(L) + ")");
  }
}

double resolve_scale(const std::optional<double>& scale, int64_t head_dim, const char* op) {
  if (!scale) return 1.0 / std::sqrt(static_cast<double>(head_dim));
  if (!std::isfinite(*scale)) fail(op, "scale must be finite (got " + std::to_string(*scale) + ")");
  return *scale;
}

NaProblem validate(const NaForwardArgs& a, const RunOptions& options) {
  const char* op = "na_forward";
  const Heads h = check_na_inputs(op, a.query, a.key, a.value, a.params, a.sub_domain);
  check_tensor(op, "out", a.out);
  check_same(op, "out", a.out, a.query, true);
  check_shape(op, "out", a.out, with_last(a.query.shape, h.heads, h.head_dim_v), "[batch, *spatial, heads, head_dim_v]");
  if (a.lse) check_lse(op, "lse", *a.lse, a.query, drop_last(a.query.shape));
  const int64_t n = check_additional(op, a.additional_keys, a.additional_values, a.query, h);
  const double scale = resolve_scale(a.scale, h.head_dim, op);
  NaProblem p = make_problem(a.query, h, a.params, n, options);
  p.sub_domain = a.sub_domain;
  p.scale_positive = scale > 0.0;
  return p;
}

NaProblem validate(const NaBackwardArgs& a, const RunOptions& options) {
  const char* op = "na_backward";
  const Heads h = check_na_inputs(op, a.query, a.key, a.value, a.params, a.sub_domain);
  const Shape out_shape = with_last(a.query.shape, h.heads, h.head_dim_v);
  for (const auto& [name, t] : {std::pair<const char*, const TensorView*>{"out", &a.out}, {"dout", &a.dout}}) {
    check_tensor(op, name, *t);
    check_same(op, name, *t, a.query, true);
    check_shape(op, name, *t, out_shape, "[batch, *spatial, heads, head_dim_v]");
  }
  check_lse(op, "lse", a.lse, a.query, drop_last(a.query.shape));
  check_grads(op, {GradOf{"dquery", &a.dquery, &a.query}, GradOf{"dkey", &a.dkey, &a.key},
                   GradOf{"dvalue", &a.dvalue, &a.value}},
              a.query);
  const int64_t n = check_additional(op, a.additional_keys, a.additional_values, a.query, h);
  if (n > 0 || a.dadditional_keys || a.dadditional_values) {
    if (!a.additional_keys)
      fail(op, "dadditional_keys/dadditional_values were given without additional_keys/additional_values");
    if (!a.dadditional_keys || !a.dadditional_values)
      fail(op, "dadditional_keys and dadditional_values are required when additional keys/values are given");
    check_grads(op,
                {GradOf{"dadditional_keys", &*a.dadditional_keys, &*a.additional_keys},
                 GradOf{"dadditional_values", &*a.dadditional_values, &*a.additional_values}},
                a.query);
  }
  const double scale = resolve_scale(a.scale, h.head_dim, op);
  NaProblem p = make_problem(a.query, h, a.params, n, options);
  p.sub_domain = a.sub_domain;
  p.scale_positive = scale > 0.0;
  return p;
}

FmhaProblem validate(const FmhaForwardArgs& a, const RunOptions& options) {
  const char* op = "fmha_forward";
  const Heads h = check_fmha_qkv(op, a.query, a.key, a.value);
  check_tensor(op, "out", a.out);
  check_same(op, "out", a.out, a.query, true);
  check_shape(op, "out", a.out, with_last(a.query.shape, h.heads, h.head_dim_v), "[batch, seqlen_q, heads, head_dim_v]");
  if (a.lse) check_lse(op, "lse", *a.lse, a.query, drop_last(a.query.shape));
  check_cu_seqlens(op, a.cu_seqlens_q, a.cu_seqlens_kv, a.query, a.key, a.max_seqlen_q, a.max_seqlen_kv);
  const double scale = resolve_scale(a.scale, h.head_dim, op);
  FmhaProblem p = make_fmha_problem(a.query, a.key, h, a.is_causal, a.cu_seqlens_q.has_value(), options);
  p.scale_positive = scale > 0.0;
  return p;
}

FmhaProblem validate(const FmhaBackwardArgs& a, const RunOptions& options) {
  const char* op = "fmha_backward";
  const Heads h = check_fmha_qkv(op, a.query, a.key, a.value);
  const Shape out_shape = with_last(a.query.shape, h.heads, h.head_dim_v);
  for (const auto& [name, t] : {std::pair<const char*, const TensorView*>{"out", &a.out}, {"dout", &a.dout}}) {
    check_tensor(op, name, *t);
    check_same(op, name, *t, a.query, true);
    check_shape(op, name, *t, out_shape, "[batch, seqlen_q, heads, head_dim_v]");
  }
  check_lse(op, "lse", a.lse, a.query, drop_last(a.query.shape));
  check_grads(op, {GradOf{"dquery", &a.dquery, &a.query}, GradOf{"dkey", &a.dkey, &a.key},
                   GradOf{"dvalue", &a.dvalue, &a.value}},
              a.query);
  check_cu_seqlens(op, a.cu_seqlens_q, a.cu_seqlens_kv, a.query, a.key, a.max_seqlen_q, a.max_seqlen_kv);
  const double scale = resolve_scale(a.scale, h.head_dim, op);
  FmhaProblem p = make_fmha_problem(a.query, a.key, h, a.is_causal, a.cu_seqlens_q.has_value(), options);
  p.scale_positive = scale > 0.0;
  return p;
}

}  // namespace nattn::detail
