// Host side of the Hopper NA forward (hopper-fna): argument and config checks, token permutation of
// Q/K/V into a stream-ordered workspace (head dims zero-padded to the kernel's), the kernel
// (generated table sm90_na_fwd_table.inc), additional KV tokens as a dense hopper-fmha forward on
// the permuted queries merged by LSE, and the unpermutation of O and LSE. See na_fwd_sm90.h and
// README.md.
#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "core/validation.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm90/fmha_fwd/host_check.h"
#include "cuda/common/token_permute.h"
#include "cuda/sm90/fmha_fwd/attn_merge.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"
#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/errors.h"
#include "nattn/semantics.h"

namespace nattn::cuda::sm90 {

// The compiled kernels: na_fwd_sm90_<dtype>_hd<hd>, one generated TU each.
#define NATTN_SM90_NA_FWD_KERNEL(dtype, hd) \
  void na_fwd_sm90_##dtype##_hd##hd(const FmhaFwdParams&, const NaGeom&, cudaStream_t);
#include "sm90_na_fwd_table.inc"
#undef NATTN_SM90_NA_FWD_KERNEL

namespace {

using Launch = void (*)(const FmhaFwdParams&, const NaGeom&, cudaStream_t);

Launch find_kernel(DType dtype, int head_dim) {
#define NATTN_SM90_NA_FWD_KERNEL(dt, hd) \
  if (dtype == DType::dt && head_dim == (hd)) return &na_fwd_sm90_##dt##_hd##hd;
#include "sm90_na_fwd_table.inc"
#undef NATTN_SM90_NA_FWD_KERNEL
  return nullptr;
}

Check fail(Verdict v, const std::string& what) { return check_failed("hopper-fna", v, what); }

constexpr int64_t kTile = kFmhaBlockM;  // tokens per Q tile
constexpr int64_t kMaxSeq = std::numeric_limits<int32_t>::max() - kTile;  // TMA coordinates are int32

bool pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

int log2_of(int64_t x) {
  int l = 0;
  while ((int64_t{1} << l) < x) ++l;
  return l;
}

constexpr int64_t kMaxHeadDim = 256;  // the largest kernel head dim; smaller head dims are zero-padded

// The problem-level rules (no config, no tensors): shared by na_forward (check_args) and the
// registry (na_forward_reject), so that both accept exactly the same problems.
Check shape_check(DType dtype, int64_t D, int64_t Dv, int64_t B, int64_t H, int64_t groups, int64_t n_extra,
                  bool sub_domain) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    return fail(Verdict::not_implemented, std::string("dtype ") + dtype_name(dtype) + " (allowed: fp16, bf16)");
  for (int64_t d : {D, Dv})
    if (d < 8 || d > kMaxHeadDim || d % 8 != 0)
      return fail(Verdict::not_implemented, "head dims " + std::to_string(D) + " (query/key) and " +
                                                std::to_string(Dv) + " (value): each must be a multiple of 8 in [8, 256]");
  const int dk = na_kernel_head_dim(dtype, D, Dv);
  if (dk == 0)
    return fail(Verdict::not_implemented, std::string("no kernel compiled for ") + dtype_name(dtype) + " head dim >= " +
                                              std::to_string(std::max(D, Dv)) +
                                              " (NATTN_CUDA_ARCHS needs 90; see NATTN_CUDA_DTYPES / HEAD_DIMS)");
  if (n_extra > 0 && !fmha_forward_compiled(dtype, dk))
    return fail(Verdict::not_implemented, std::string("additional KV tokens need the hopper-fmha kernel for ") +
                                              dtype_name(dtype) + " head dim " + std::to_string(dk) +
                                              ", not compiled into this build");
  // Sub-domains (multi-GPU halos) run in the direct mode only: its window math takes the box origins.
  if (sub_domain && (groups != 1 || D != Dv || D != dk))
    return fail(Verdict::not_implemented,
                "sub-domain NA runs in the direct mode only: dilation 1 and head dims D == Dv equal to a compiled "
                "kernel's (32, 64, 128, 256); got D=" +
                    std::to_string(D) + " Dv=" + std::to_string(Dv) + " dilation groups=" + std::to_string(groups) +
                    " (use cutlass-fna)");
  if (B * groups > 65535 || H > 65535)
    return fail(Verdict::not_implemented, "batch * dilation groups and heads must be <= 65535, got " +
                                              std::to_string(B * groups) + ", " + std::to_string(H));
  return {};
}

double scale_of(const NaForwardArgs& a, int64_t D) {
  return a.scale ? *a.scale : 1.0 / std::sqrt(static_cast<double>(D));
}

// The permutation of one tile shape over the NA axes (rank = NA rank, flip = true) of the query's
// extent (of `t`'s where given: a sub-domain's K/V box differs from its query box).
sem::Permutation make_perm(const NaForwardArgs& a, const std::vector<int64_t>& tile, const TensorView* t = nullptr) {
  sem::Permutation p;
  p.rank = a.params.rank;
  p.flip = true;
  for (int i = 0; i < p.rank; ++i) {
    p.extent[i] = (t != nullptr ? *t : a.query).shape[static_cast<size_t>(i + 1)];
    p.tile[i] = tile[static_cast<size_t>(i)];
    p.dilation[i] = a.params.dilation[static_cast<size_t>(i)];
  }
  return p;
}

// The same permutation padded to rank 3 with size-1 axes (identical linear indices).
sem::Permutation rank3(sem::Permutation p) {
  for (int i = p.rank; i < 3; ++i) p.extent[i] = p.tile[i] = p.dilation[i] = 1;
  p.rank = 3;
  return p;
}

// The consumer schedule of a checked config (pp or coop).
bool is_pingpong(const TileConfig& config) { return config.schedule != KernelSchedule::cooperative; }

// dk: the kernel's head dim (its KV tile volume: na_kv_tile_volume).
Check check_config(const NaForwardArgs& a, const TileConfig& config, int64_t dk) {
  const int rank = a.params.rank;
  const int64_t kv_volume = na_kv_tile_volume(static_cast<int>(dk));
  auto bad = [&](const std::string& why) {
    return fail(Verdict::not_implemented, "config " + config.describe() + " is not supported: " + why +
                                              " (runs a q_tile of " + std::to_string(kTile) + " tokens and a kv_tile of " +
                                              std::to_string(kv_volume) + " tokens at kernel head dim " +
                                              std::to_string(dk) + ", both of " + std::to_string(rank) +
                                              " axes, schedule pp or coop)");
  };
  if (config.schedule != KernelSchedule::pingpong && config.schedule != KernelSchedule::cooperative)
    return bad("schedule must be pp or coop (the kernel is warp-specialized: no 'non' schedule)");
  for (const std::vector<int64_t>* t : {&config.q_tile, &config.kv_tile}) {
    if (static_cast<int>(t->size()) != rank) return bad("tile rank differs from the NA rank");
    int64_t vol = 1;
    for (int64_t x : *t) {
      if (!pow2(x)) return bad("tile sizes must be powers of two");
      vol *= x;
    }
    const int64_t want = t == &config.q_tile ? kTile : kv_volume;
    if (vol != want)
      return bad(std::string(t == &config.q_tile ? "q_tile" : "kv_tile") + " volume must be " + std::to_string(want));
  }
  return {};
}

std::string direct_blocker(const NaForwardArgs& a, int64_t dk);  // below, beside the direct mode

// The stride of dims [first, last] of `t` merged into one axis (stride[i] = stride[i + 1] * extent[i + 1],
// size-1 dims aside; 0 when all have size 1), or -1 when they do not merge.
int64_t merged_stride(const TensorView& t, int first, int last) {
  int64_t inner = 0, expect = 0;  // expect: the stride the next outer non-trivial dim must have
  for (int i = last; i >= first; --i) {
    const size_t s = static_cast<size_t>(i);
    if (t.shape[s] == 1) continue;
    if (expect != 0 && t.strides[s] != expect) return -1;
    if (expect == 0) inner = t.strides[s];
    expect = t.strides[s] * t.shape[s];
  }
  return inner;
}

Check check_args(const NaForwardArgs& a, const TileConfig& config) {
  const TensorView &q = a.query, &k = a.key, &v = a.value, &o = a.out;
  const int rank = a.params.rank;
  if (rank < 1 || rank > 3) return fail(Verdict::value_error, "params.rank must be 1, 2 or 3, got " + std::to_string(rank));
  const int nd = rank + 3;
  for (const TensorView* t : {&q, &k, &v, &o})
    if (t->dim() != nd)
      return fail(Verdict::value_error, "query/key/value/out must be " + std::to_string(nd) + "-D [B, *S, H, D], got " +
                                            t->describe());
  if (a.additional_keys.has_value() != a.additional_values.has_value())
    return fail(Verdict::value_error, "additional_keys and additional_values must be given together");
  std::vector<const TensorView*> all = {&q, &k, &v, &o};
  if (a.additional_keys) {
    all.push_back(&*a.additional_keys);
    all.push_back(&*a.additional_values);
  }
  for (const TensorView* t : all)
    if (t->device.kind != DeviceKind::cuda || t->device != q.device)
      return fail(Verdict::not_implemented, "every tensor must be on one CUDA device, got " + t->describe());
  if (q.dtype != DType::f16 && q.dtype != DType::bf16)
    return fail(Verdict::not_implemented, std::string("dtype ") + dtype_name(q.dtype) + " (allowed: fp16, bf16)");
  for (const TensorView* t : all)
    if (t->dtype != q.dtype)
      return fail(Verdict::value_error, std::string("key/value/out dtype must match query (") + dtype_name(q.dtype) +
                                            "), got " + dtype_name(t->dtype));
  const int64_t B = q.shape[0], H = q.shape[static_cast<size_t>(rank + 1)], D = q.shape[static_cast<size_t>(rank + 2)];
  const int64_t Hkv = k.shape[static_cast<size_t>(rank + 1)], Dv = v.shape[static_cast<size_t>(rank + 2)];
  bool same = k.shape[0] == B && v.shape[0] == B && o.shape[0] == B && k.shape[static_cast<size_t>(rank + 2)] == D &&
              v.shape[static_cast<size_t>(rank + 1)] == Hkv && o.shape[static_cast<size_t>(rank + 1)] == H &&
              o.shape[static_cast<size_t>(rank + 2)] == Dv;
  // A sub-domain's K/V box may differ from its query box (the core checked that it holds the halo).
  std::vector<int64_t> spatial, window_extent;
  for (int i = 1; i <= rank; ++i) {
    const size_t s = static_cast<size_t>(i);
    spatial.push_back(q.shape[s]);
    window_extent.push_back(a.sub_domain ? a.sub_domain->global_extent[s - 1] : q.shape[s]);
    same = same && v.shape[s] == k.shape[s] && o.shape[s] == q.shape[s] && (a.sub_domain || k.shape[s] == q.shape[s]);
  }
  if (!same)
    return fail(Verdict::value_error, "inconsistent shapes: query " + shape_string(q.shape) + ", key " +
                                          shape_string(k.shape) + ", value " + shape_string(v.shape) + ", out " +
                                          shape_string(o.shape));
  if (Hkv <= 0 || H % Hkv != 0)
    return fail(Verdict::value_error, "heads " + std::to_string(H) + " must be a multiple of kv heads " + std::to_string(Hkv));
  int64_t n_extra = 0;
  if (a.additional_keys) {
    const TensorView &ek = *a.additional_keys, &ev = *a.additional_values;
    n_extra = ek.dim() == 4 ? ek.shape[1] : -1;
    const std::vector<int64_t> want_k = {B, n_extra, Hkv, D}, want_v = {B, n_extra, Hkv, Dv};
    if (n_extra < 0 || ek.shape != want_k || ev.shape != want_v)
      return fail(Verdict::value_error, "additional keys/values must be [B, N, Hkv, D] / [B, N, Hkv, Dv] = " +
                                            shape_string(want_k) + " / " + shape_string(want_v) + ", got " +
                                            ek.describe() + " / " + ev.describe());
  }
  for (const TensorView* t : all)
    if (t->strides.back() != 1) return fail(Verdict::value_error, "the head dim must be contiguous, got " + t->describe());
  if (a.lse) {
    const TensorView& l = *a.lse;
    std::vector<int64_t> want = {B};
    want.insert(want.end(), spatial.begin(), spatial.end());
    want.push_back(H);
    if (l.dtype != DType::f32 || l.shape != want || l.device != q.device)
      return fail(Verdict::value_error, "lse must be fp32 " + shape_string(want) + " on the query's device, got " +
                                            l.describe());
  }
  try {
    detail::validate_na_params(a.params, window_extent, "hopper-fna");
  } catch (const ValueError& e) {
    return {Verdict::value_error, e.what()};
  }
  int64_t groups = 1;
  for (int i = 0; i < rank; ++i) groups *= a.params.dilation[static_cast<size_t>(i)];
  Check c = shape_check(q.dtype, D, Dv, B, H, groups, n_extra, a.sub_domain.has_value());
  if (c.verdict != Verdict::ok) return c;
  const double scale = scale_of(a, D);
  if (!std::isfinite(scale)) return fail(Verdict::value_error, "scale must be finite, got " + std::to_string(scale));
  if (scale <= 0.0) return fail(Verdict::not_implemented, "scale must be > 0, got " + std::to_string(scale));
  c = check_config(a, config, na_kernel_head_dim(q.dtype, D, Dv));
  if (c.verdict != Verdict::ok) return c;
  const sem::Permutation qp = make_perm(a, config.q_tile), kvp = make_perm(a, config.kv_tile, &k);
  if (qp.seq_len() > kMaxSeq || kvp.seq_len() > kMaxSeq)
    return fail(Verdict::not_implemented, "permuted sequence lengths must be < 2^31 - 128, got " +
                                              std::to_string(qp.seq_len()) + ", " + std::to_string(kvp.seq_len()));
  if (a.sub_domain) {
    for (int64_t e : window_extent)
      if (e > kMaxSeq)
        return fail(Verdict::not_implemented, "sub_domain.global_extent must be < 2^31 - 128 on every axis, got " +
                                                  shape_string(window_extent));
    // The tensors' layout must suit the direct mode too (the problem-level rules are in shape_check).
    const std::string blocker = direct_blocker(a, D);
    if (!blocker.empty())
      return fail(Verdict::not_implemented, "sub-domain NA runs in the direct mode only, which these tensors "
                                            "do not allow (" + blocker + "; see na_forward_direct_blocker)");
  }
  // Additional KV: one dense FMHA over the permuted queries of each batch entry, [B, G * Pq, H, D].
  if (n_extra > 0 && (qp.num_groups() * qp.seq_len() > kMaxSeq || n_extra > kMaxSeq))
    return fail(Verdict::not_implemented, "with additional KV tokens, dilation groups x permuted query length and the "
                                          "additional tokens must be < 2^31 - 128, got " +
                                              std::to_string(qp.num_groups() * qp.seq_len()) + ", " +
                                              std::to_string(n_extra));
  return {};
}

Check check_device(const NaForwardArgs& a) { return check_sm90_device("hopper-fna", a.query.device); }

// Stream-ordered workspace, freed on the stream when the scope ends (also on exceptions).
struct Workspace {
  void* ptr = nullptr;
  cudaStream_t stream = nullptr;
  Workspace(size_t bytes, cudaStream_t s) : stream(s) { NATTN_CUDA_CHECK(cudaMallocAsync(&ptr, bytes, s)); }
  ~Workspace() {
    if (ptr) cudaFreeAsync(ptr, stream);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

// Per-axis in-tile decode of a tile shape (axis 0 fastest): shift and mask.
void decode(const sem::Permutation& p3, int* shift, int* mask) {
  int s = 0;
  for (int i = 0; i < 3; ++i) {
    shift[i] = s;
    mask[i] = static_cast<int>(p3.tile[i] - 1);
    s += log2_of(p3.tile[i]);
  }
}

}  // namespace

NaGeom na_geometry(const NaParams& params, const std::vector<int64_t>& extent, const TileConfig& config,
                   bool direct, const SubDomain* sub_domain, const std::vector<int64_t>& kv_extent) {
  const int rank = params.rank;
  if (sub_domain != nullptr && (!direct || static_cast<int>(kv_extent.size()) != rank))
    throw ValueError("hopper-fna: na_geometry of a sub-domain needs the direct mode and the K/V extent of " +
                     std::to_string(rank) + " axes (got direct=" + std::to_string(direct) + ", kv_extent " +
                     shape_string(kv_extent) + ")");
  // Direct mode: NaGeom axis i is NA axis rank - 1 - i (the innermost spatial axis first, the
  // fastest inside a TMA box); permuted mode: the NA axes in order (flip = true makes axis 0 the
  // fastest inside a permuted tile).
  auto src = [&](int i) { return static_cast<size_t>(direct ? rank - 1 - i : i); };
  sem::Permutation qp, kvp;
  qp.rank = kvp.rank = rank;
  qp.flip = kvp.flip = true;
  for (int i = 0; i < rank; ++i) {
    const size_t s = src(i);
    qp.extent[i] = extent[s];
    kvp.extent[i] = sub_domain != nullptr ? kv_extent[s] : extent[s];
    qp.dilation[i] = kvp.dilation[i] = params.dilation[s];
    qp.tile[i] = config.q_tile[s];
    kvp.tile[i] = config.kv_tile[s];
  }
  NaGeom g;
  g.qp = rank3(qp);
  g.kvp = rank3(kvp);
  for (int i = 0; i < 3; ++i) {
    const size_t s = i < rank ? src(i) : 0;
    if (i < rank) {
      const int64_t global = sub_domain != nullptr ? sub_domain->global_extent[s] : extent[s];
      g.ax[i] = sem::Axis{global, params.kernel_size[s], params.stride[s], params.dilation[s], params.is_causal[s]};
      if (sub_domain != nullptr) {  // origins < global extent < 2^31 (checked: TMA coordinates are int32)
        g.q_org[i] = static_cast<int>(sub_domain->q_origin[s]);
        g.kv_org[i] = static_cast<int>(sub_domain->kv_origin[s]);
      }
    } else {
      g.ax[i] = sem::Axis{1, 1, 1, 1, false};
    }
  }
  decode(g.qp, g.q_shift, g.q_mask);
  decode(g.kvp, g.kv_shift, g.kv_mask);
  for (int i = 0; i < 3; ++i) {
    const int period = (g.kv_mask[i] + 1) << g.kv_shift[i];
    g.kv_rep[i] = period < 32 ? 0xffffffffu / ((1u << period) - 1u) : 0u;
  }
  for (int i = 0; i < 3; ++i) g.kv_tiles[i] = static_cast<int>(g.kvp.tiles(i));
  g.win_off[1] = static_cast<int>(g.qp.tile[0]);
  g.win_off[2] = static_cast<int>(g.qp.tile[0] + g.qp.tile[1]);
  g.direct = direct ? 1 : 0;
  // 32-bit context math: coordinates stay below extent + stride + tile <= 2^31 when every extent
  // (and so every kernel, stride and dilation), every Q tile x dilation span (Permutation::tiles_as)
  // and the product of the dilations are below 2^30.
  constexpr int64_t kNarrow = int64_t{1} << 30;
  int64_t dilations = 1;
  bool narrow = true;
  for (int i = 0; i < 3; ++i) {
    narrow = narrow && g.ax[i].extent < kNarrow && g.qp.tile[i] * g.qp.dilation[i] < kNarrow;
    dilations *= g.ax[i].dilation;
  }
  // NATTN_HOPPER_FNA_WIDE_CTX=1 forces the 64-bit math (benchmarks: bench/RESULTS.md compares the two).
  const char* wide = std::getenv("NATTN_HOPPER_FNA_WIDE_CTX");
  if (wide != nullptr && std::string(wide) == "1") narrow = false;
  g.narrow = narrow && dilations < kNarrow ? 1 : 0;
  return g;
}

namespace {

// The kernel on permuted tensors (contiguous, from token_permute with qp / kvp, head dim dk: the
// kernel's, zero-padded). Arguments checked.
void run_kernel(const NaForwardArgs& a, const sem::Permutation& qp, const sem::Permutation& kvp, int64_t dk,
                const void* q_perm, const void* k_perm, const void* v_perm, void* o_perm, float* lse_perm,
                bool pingpong, cudaStream_t stream) {
  const int rank = a.params.rank;
  const TensorView &q = a.query, &k = a.key;
  const int64_t B = q.shape[0], H = q.shape[static_cast<size_t>(rank + 1)], D = q.shape[static_cast<size_t>(rank + 2)];
  const int64_t Hkv = k.shape[static_cast<size_t>(rank + 1)];
  const int64_t G = qp.num_groups(), Pq = qp.seq_len(), Pkv = kvp.seq_len();
  FmhaFwdParams p;
  p.q = q_perm;
  p.k = k_perm;
  p.v = v_perm;
  p.o = o_perm;
  p.lse = lse_perm;
  // Contiguous permuted tensors: [B * G, P, H, dk] and LSE [B * G, Pq, H].
  const int64_t qs[3] = {Pq * H * dk, H * dk, dk}, ks[3] = {Pkv * Hkv * dk, Hkv * dk, dk}, ls[3] = {Pq * H, H, 1};
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = p.o_stride[i] = qs[i];
    p.k_stride[i] = p.v_stride[i] = ks[i];
    p.lse_stride[i] = ls[i];
  }
  p.batch = static_cast<int>(B * G);
  p.seqlen_q = static_cast<int>(Pq);
  p.seqlen_kv = static_cast<int>(Pkv);
  p.heads = static_cast<int>(H);
  p.heads_kv = static_cast<int>(Hkv);
  p.scale_log2 = static_cast<float>(scale_of(a, D) * 1.4426950408889634);  // the real head dim's default
  p.causal = false;
  p.pingpong = pingpong;

  std::vector<int64_t> extent;
  for (int i = 0; i < rank; ++i) extent.push_back(q.shape[static_cast<size_t>(i + 1)]);
  TileConfig config;
  config.q_tile.assign(qp.tile, qp.tile + rank);
  config.kv_tile.assign(kvp.tile, kvp.tile + rank);
  find_kernel(q.dtype, static_cast<int>(dk))(p, na_geometry(a.params, extent, config), stream);
}

// Direct mode (no permutation): "" when the kernel can read Q/K/V and write O/LSE in the caller's
// tensors, else why not (then the permuted path runs). Needs dilation 1 (no groups to fold), head
// dims D == Dv == the kernel's (no padding), no additional KV, and TMA-compatible Q/K/V: base
// 16-byte aligned, head stride D (heads and head dim merge into one dim), batch and spatial strides
// 16-byte multiples below 2^40 bytes; O 4-byte aligned with even strides (pairs of elements).
std::string direct_blocker(const NaForwardArgs& a, int64_t dk) {
  const char* forced = std::getenv("NATTN_HOPPER_FNA_PERMUTED");  // read per call: tests switch it
  if (forced != nullptr && std::string(forced) == "1") return "NATTN_HOPPER_FNA_PERMUTED=1";
  const int rank = a.params.rank;
  for (int i = 0; i < rank; ++i)
    if (a.params.dilation[static_cast<size_t>(i)] != 1) return "dilation";
  const int64_t D = a.query.shape[static_cast<size_t>(rank + 2)], Dv = a.value.shape[static_cast<size_t>(rank + 2)];
  if (D != dk || Dv != dk) return "head dim padding";
  if (a.additional_keys) {
    // The dense part runs on the query viewed as [B, tokens, H, D] and is merged into `out` (rows of
    // H * D contiguous elements) and into the caller's LSE: all three must be plain row-major.
    // out / LSE as rows (batch and spatial axes merged into tokens) x heads x D, heads D apart.
    if (!fmha_forward_compiled(a.query.dtype, static_cast<int>(dk))) return "additional KV without hopper-fmha";
    const size_t hd = static_cast<size_t>(rank + 1);
    const TensorView& o = a.out;
    if (merged_stride(a.query, 1, rank) < 0 || merged_stride(o, 0, rank) < 0 || merged_stride(o, 0, rank) % 8 != 0 ||
        (o.shape[hd] > 1 && o.strides[hd] != dk))
      return "additional KV with a query or output whose tokens do not merge";
    if (a.lse && (merged_stride(*a.lse, 0, rank) < 0 || (a.lse->shape[hd] > 1 && a.lse->strides[hd] != 1)))
      return "additional KV with an LSE whose tokens do not merge";
    if (reinterpret_cast<uintptr_t>(o.data) % 16 != 0) return "additional KV with an unaligned output";
    const int64_t es = dtype_size(a.query.dtype);
    for (const TensorView* t : {&*a.additional_keys, &*a.additional_values}) {  // [B, N, Hkv, D] for TMA
      if (reinterpret_cast<uintptr_t>(t->data) % 16 != 0) return "unaligned additional KV";
      for (int d = 0; d < 3; ++d)
        if (t->shape[static_cast<size_t>(d)] > 1 && (t->strides[static_cast<size_t>(d)] * es) % 16 != 0)
          return "additional KV strides";
    }
  }
  const int64_t es = dtype_size(a.query.dtype);
  constexpr int64_t kMaxStrideBytes = int64_t{1} << 40;
  for (const TensorView* t : {&a.query, &a.key, &a.value}) {
    if (reinterpret_cast<uintptr_t>(t->data) % 16 != 0) return "unaligned input";
    if (t->shape[static_cast<size_t>(rank + 1)] > 1 && t->strides[static_cast<size_t>(rank + 1)] != D)
      return "head stride != head dim";
    for (int d = 0; d <= rank; ++d) {
      const size_t s = static_cast<size_t>(d);
      if (t->shape[s] > 1 && ((t->strides[s] * es) % 16 != 0 || t->strides[s] <= 0 || t->strides[s] * es >= kMaxStrideBytes))
        return "input strides";
    }
  }
  const TensorView& o = a.out;
  if (reinterpret_cast<uintptr_t>(o.data) % 4 != 0) return "unaligned output";
  for (int d = 0; d <= rank + 1; ++d)
    if (o.shape[static_cast<size_t>(d)] > 1 && o.strides[static_cast<size_t>(d)] % 2 != 0) return "output strides";
  return "";
}

// The kernel in direct mode on the caller's tensors (arguments checked, direct_blocker == "").
void run_direct(const NaForwardArgs& a, const TileConfig& config, cudaStream_t stream) {
  const int rank = a.params.rank;
  const TensorView &q = a.query, &k = a.key, &v = a.value, &o = a.out;
  const int64_t B = q.shape[0], H = q.shape[static_cast<size_t>(rank + 1)], D = q.shape[static_cast<size_t>(rank + 2)];
  const int64_t Hkv = k.shape[static_cast<size_t>(rank + 1)];
  std::vector<int64_t> extent;
  for (int i = 0; i < rank; ++i) extent.push_back(q.shape[static_cast<size_t>(i + 1)]);
  std::vector<int64_t> kv_extent;
  for (int i = 0; i < rank; ++i) kv_extent.push_back(k.shape[static_cast<size_t>(i + 1)]);
  NaGeom g = na_geometry(a.params, extent, config, true, a.sub_domain ? &*a.sub_domain : nullptr, kv_extent);
  // NaGeom axis i = NA axis rank - 1 - i = tensor dim rank - i; padded axes keep stride 0.
  for (int i = 0; i < rank; ++i) {
    const size_t d = static_cast<size_t>(rank - i);
    g.q_sp[i] = q.strides[d];
    g.k_sp[i] = k.strides[d];
    g.v_sp[i] = v.strides[d];
    g.o_sp[i] = o.strides[d];
    g.lse_sp[i] = a.lse ? a.lse->strides[d] : 0;
  }
  FmhaFwdParams p;
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.o = o.data;
  p.lse = a.lse ? static_cast<float*>(a.lse->data) : nullptr;
  const size_t hd = static_cast<size_t>(rank + 1);
  // {batch, sequence (unused in direct mode), head}
  const int64_t qs[3] = {q.strides[0], 0, q.strides[hd]}, ks[3] = {k.strides[0], 0, k.strides[hd]},
                vs[3] = {v.strides[0], 0, v.strides[hd]}, os[3] = {o.strides[0], 0, o.strides[hd]};
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = qs[i];
    p.k_stride[i] = ks[i];
    p.v_stride[i] = vs[i];
    p.o_stride[i] = os[i];
    p.lse_stride[i] = 0;
  }
  if (a.lse) {
    p.lse_stride[0] = a.lse->strides[0];
    p.lse_stride[2] = a.lse->strides[hd];
  }
  p.batch = static_cast<int>(B);
  p.seqlen_q = static_cast<int>(g.qp.seq_len());  // Q tiles x 128: the grid
  p.seqlen_kv = static_cast<int>(g.kvp.seq_len());
  p.heads = static_cast<int>(H);
  p.heads_kv = static_cast<int>(Hkv);
  p.scale_log2 = static_cast<float>(scale_of(a, D) * 1.4426950408889634);
  p.causal = false;
  p.pingpong = is_pingpong(config);
  find_kernel(q.dtype, static_cast<int>(D))(p, g, stream);
}

// Bump allocator over one workspace: 256-byte aligned pieces.
struct Carve {
  int64_t bytes = 0;
  int64_t take(int64_t n) {
    const int64_t at = bytes;
    bytes += (n + 255) / 256 * 256;
    return at;
  }
};

// Direct mode with additional KV tokens (direct_blocker == ""): the NA kernel writes O straight into
// `out` and its LSE into the workspace; a dense hopper-fmha forward of the query viewed as
// [B, tokens, H, D] against the additional keys writes O'' / LSE'' into the workspace;
// merge_attention_pair merges them into `out` (in place, rows (token, head) of D elements: also a
// head chunk of a larger tensor) and the merged LSE into the caller's LSE (or the workspace when
// none was asked for). No permutation.
void run_direct_extra(const NaForwardArgs& a, const TileConfig& config, cudaStream_t stream) {
  const int rank = a.params.rank;
  const TensorView& q = a.query;
  const int64_t B = q.shape[0], H = q.shape[static_cast<size_t>(rank + 1)], D = q.shape[static_cast<size_t>(rank + 2)];
  int64_t T = 1;  // tokens per batch entry
  for (int i = 1; i <= rank; ++i) T *= q.shape[static_cast<size_t>(i)];
  const int64_t es = dtype_size(q.dtype), rows = B * T * H;
  Carve plan;
  const int64_t off_l1 = plan.take(rows * 4), off_o2 = plan.take(rows * D * es), off_l2 = plan.take(rows * 4);
  const int64_t off_lm = a.lse ? 0 : plan.take(rows * 4);
  Workspace ws(static_cast<size_t>(plan.bytes), stream);
  char* base = static_cast<char*>(ws.ptr);
  const Device dev = q.device;
  std::vector<int64_t> lse_shape(q.shape.begin(), q.shape.end() - 1);  // [B, *S, H]
  NaForwardArgs na = a;
  na.additional_keys.reset();
  na.additional_values.reset();
  na.lse = TensorView(base + off_l1, DType::f32, lse_shape, dev);
  run_direct(na, config, stream);
  // The query as [B, tokens, H, D]: its spatial axes merge (checked by direct_blocker).
  const size_t last = static_cast<size_t>(rank);
  FmhaForwardArgs fa;
  fa.query = TensorView(q.data, q.dtype, {B, T, H, D}, {q.strides[0], merged_stride(q, 1, rank), q.strides[last + 1], 1},
                        dev);
  fa.key = *a.additional_keys;
  fa.value = *a.additional_values;
  fa.out = TensorView(base + off_o2, q.dtype, {B, T, H, D}, dev);
  fa.lse = TensorView(base + off_l2, DType::f32, {B, T, H}, dev);
  fa.scale = scale_of(a, D);
  fa.is_causal = false;
  fmha_forward(fa, stream);
  float* merged = a.lse ? static_cast<float*>(a.lse->data) : reinterpret_cast<float*>(base + off_lm);
  const int64_t lse_ts = a.lse ? merged_stride(*a.lse, 0, rank) : H;
  merge_attention_pair(q.dtype, B * T, H, D, a.out.data, merged_stride(a.out, 0, rank),
                       reinterpret_cast<const float*>(base + off_l1), fa.out.data,
                       reinterpret_cast<const float*>(base + off_l2), merged, lse_ts, stream);
}

}  // namespace

bool na_forward_compiled(DType dtype, int head_dim) { return find_kernel(dtype, head_dim) != nullptr; }

int64_t na_kv_tile_volume(int kernel_head_dim) { return fmha_block_n(kernel_head_dim); }

int na_kernel_head_dim(DType dtype, int64_t head_dim, int64_t head_dim_v) {
  const int64_t need = std::max(head_dim, head_dim_v);
  if (need < 1) return 0;
  for (int dk : {32, 64, 128, 256})
    if (dk >= need && na_forward_compiled(dtype, dk)) return dk;
  return 0;
}

std::string na_forward_reject(const NaProblem& p) {
  int64_t groups = 1;
  for (int i = 0; i < p.rank(); ++i) groups *= p.params.dilation[static_cast<size_t>(i)];
  return shape_check(p.dtype, p.head_dim, p.head_dim_v, p.batch, p.heads, groups, p.additional_kv,
                     p.sub_domain.has_value())
      .message;
}

std::string na_forward_unsupported_reason(const NaForwardArgs& args, const TileConfig& config) {
  Check c = check_args(args, config);
  if (c.verdict == Verdict::ok) c = check_device(args);
  return c.message;
}

std::string na_forward_direct_blocker(const NaForwardArgs& args) {
  const int rank = args.params.rank;
  return direct_blocker(args, na_kernel_head_dim(args.query.dtype, args.query.shape[static_cast<size_t>(rank + 2)],
                                                 args.value.shape[static_cast<size_t>(rank + 2)]));
}

void na_forward(const NaForwardArgs& a, const TileConfig& config, cudaStream_t stream) {
  raise(check_args(a, config));
  raise(check_device(a));
  const int rank = a.params.rank;
  const TensorView &q = a.query, &k = a.key, &v = a.value;
  const int64_t B = q.shape[0], H = q.shape[static_cast<size_t>(rank + 1)], D = q.shape[static_cast<size_t>(rank + 2)];
  const int64_t Hkv = k.shape[static_cast<size_t>(rank + 1)], Dv = v.shape[static_cast<size_t>(rank + 2)];
  if (B == 0 || H == 0) return;
  const int64_t dk = na_kernel_head_dim(q.dtype, D, Dv);  // D == Dv == dk: no padding
  if (direct_blocker(a, dk).empty()) {
    DeviceGuard guard(q.device.index);
    if (a.additional_keys)
      run_direct_extra(a, config, stream);
    else
      run_direct(a, config, stream);
    return;
  }
  const sem::Permutation qp = make_perm(a, config.q_tile), kvp = make_perm(a, config.kv_tile);
  const int64_t G = qp.num_groups(), Pq = qp.seq_len(), Pkv = kvp.seq_len();
  const int64_t es = dtype_size(q.dtype);
  const int64_t n_extra = a.additional_keys ? a.additional_keys->shape[1] : 0;

  // Workspace: Q', K', V', O' [B * G, P, H*, dk] and LSE' [B * G, Pq, H] fp32; with additional KV
  // also K'', V'' [B, N, Hkv, dk], the dense part's O'' [B, G * Pq, H, dk] and LSE'', and the
  // merged LSE.
  const int64_t n_q = B * G * Pq * H * dk, n_kv = B * G * Pkv * Hkv * dk, n_l = B * G * Pq * H;
  const int64_t n_e = B * n_extra * Hkv * dk;
  Carve ws_plan;
  const int64_t off_q = ws_plan.take(n_q * es), off_k = ws_plan.take(n_kv * es), off_v = ws_plan.take(n_kv * es);
  const int64_t off_o = ws_plan.take(n_q * es), off_l = ws_plan.take(n_l * 4);
  int64_t off_ek = 0, off_ev = 0, off_o2 = 0, off_l2 = 0, off_lm = 0;
  if (n_extra > 0) {
    off_ek = ws_plan.take(n_e * es);
    off_ev = ws_plan.take(n_e * es);
    off_o2 = ws_plan.take(n_q * es);
    off_l2 = ws_plan.take(n_l * 4);
    off_lm = ws_plan.take(n_l * 4);
  }
  DeviceGuard guard(q.device.index);
  Workspace ws(static_cast<size_t>(ws_plan.bytes), stream);
  char* base = static_cast<char*>(ws.ptr);
  const Device dev = q.device;
  const TensorView qv(base + off_q, q.dtype, {B * G, Pq, H, dk}, dev),
      kv(base + off_k, q.dtype, {B * G, Pkv, Hkv, dk}, dev), vv(base + off_v, q.dtype, {B * G, Pkv, Hkv, dk}, dev),
      ov(base + off_o, q.dtype, {B * G, Pq, H, dk}, dev);
  float* lse_na = reinterpret_cast<float*>(base + off_l);

  // Head dims below dk are zero-padded by the permutation (q.k and P.V unchanged, extra O columns 0).
  token_permute(a.query, qv, qp, stream);
  token_permute(a.key, kv, kvp, stream);
  token_permute(a.value, vv, kvp, stream);

  run_kernel(a, qp, kvp, dk, qv.data, kv.data, vv.data, ov.data, lse_na, is_pingpong(config), stream);

  float* lse_final = lse_na;
  if (n_extra > 0) {
    // Every query also attends every additional key: a dense FMHA of the permuted queries (each batch
    // entry's G groups are consecutive, so Q' is [B, G * Pq, H, dk]) against the additional keys
    // (copied, zero-padded to dk, through the identity permutation), merged with the NA part by LSE.
    // Padding query rows get finite garbage there and are dropped by the unpermute.
    sem::Permutation ident;
    ident.rank = 1;
    ident.extent[0] = n_extra;
    const TensorView ekv(base + off_ek, q.dtype, {B, n_extra, Hkv, dk}, dev),
        evv(base + off_ev, q.dtype, {B, n_extra, Hkv, dk}, dev);
    token_permute(*a.additional_keys, ekv, ident, stream);
    token_permute(*a.additional_values, evv, ident, stream);
    FmhaForwardArgs fa;
    fa.query = TensorView(qv.data, q.dtype, {B, G * Pq, H, dk}, dev);
    fa.key = ekv;
    fa.value = evv;
    fa.out = TensorView(base + off_o2, q.dtype, {B, G * Pq, H, dk}, dev);
    fa.lse = TensorView(base + off_l2, DType::f32, {B, G * Pq, H}, dev);
    fa.scale = scale_of(a, D);
    fa.is_causal = false;
    fmha_forward(fa, stream);
    lse_final = reinterpret_cast<float*>(base + off_lm);
    merge_attention_pair(q.dtype, B * G * Pq * H, dk, ov.data, lse_na, fa.out.data,
                         reinterpret_cast<const float*>(base + off_l2), lse_final, stream);
  }

  token_unpermute(ov, a.out, qp, stream);  // drops padding rows and the padded head-dim columns
  if (a.lse) {
    // The LSE [B, *S, H] as [B, *S, H, 1]: one fp32 "head row" per head.
    const TensorView& l = *a.lse;
    std::vector<int64_t> shape = l.shape, strides = l.strides;
    shape.push_back(1);
    strides.push_back(1);
    token_unpermute(TensorView(lse_final, DType::f32, {B * G, Pq, H, 1}, dev),
                    TensorView(l.data, DType::f32, shape, strides, l.device), qp, stream);
  }
}

void na_forward_permuted(const NaForwardArgs& a, const TileConfig& config, const void* q_perm, const void* k_perm,
                         const void* v_perm, void* o_perm, float* lse_perm, cudaStream_t stream) {
  raise(check_args(a, config));
  raise(check_device(a));
  if (a.additional_keys)
    raise(fail(Verdict::not_implemented, "na_forward_permuted runs the kernel alone: no additional KV tokens"));
  const int rank = a.params.rank;
  if (a.query.shape[0] == 0 || a.query.shape[static_cast<size_t>(rank + 1)] == 0) return;
  DeviceGuard guard(a.query.device.index);
  const int64_t dk = na_kernel_head_dim(a.query.dtype, a.query.shape[static_cast<size_t>(rank + 2)],
                                        a.value.shape[static_cast<size_t>(rank + 2)]);
  run_kernel(a, make_perm(a, config.q_tile), make_perm(a, config.kv_tile), dk, q_perm, k_perm, v_perm, o_perm,
             lse_perm, is_pingpong(config), stream);
}

}  // namespace nattn::cuda::sm90
