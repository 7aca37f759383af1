// The "reference" backend: the fp64 oracle every other backend is tested against.
//
// It states each problem as key lists (which keys each query attends) and hands them to the naive
// engine of reference_engine.cpp. Neighborhoods come from nattn::sem (window_of / inverse_of), the
// single source of truth for window math; additional keys are appended to every query's list so
// they share its softmax; FMHA lists are plain (causal: top-left) ranges per sequence.
#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cpu/reference/reference_engine.h"
#include "nattn/semantics.h"

namespace nattn::detail {
namespace {

using reference::Pattern;
using reference::Problem;
using reference::RowTensor;
using reference::make_rows;

// ---- neighborhood attention ---------------------------------------------------------------------

// Key lists of NA: the separable box of per-axis windows, then every additional key.
//
// With a sub-domain (multi-device NA) the local query tokens are the global queries
// q_origin + [0, Sq) and the local key tokens the global keys kv_origin + [0, Skv) per axis; windows
// are computed in global coordinates and mapped to local key indices (validation guarantees they
// lie inside the local KV range), and queries_of keeps only the local queries. Without one, both
// origins are 0 and the local grids are the whole grid. Key order is the same either way, so a
// query row sums its keys in the same order as on a single device.
class NaPattern final : public Pattern {
 public:
  NaPattern(const NaParams& params, const std::vector<int64_t>& q_spatial, const std::vector<int64_t>& kv_spatial,
            const std::optional<SubDomain>& sub_domain, int64_t extra_tokens)
      : rank_(static_cast<int>(q_spatial.size())), extra_tokens_(extra_tokens) {
    for (int i = 0; i < sem::kMaxRank; ++i) {
      const size_t a = static_cast<size_t>(i);
      sem::Axis& axis = axes_[a];
      if (i < rank_) {
        axis.extent = sub_domain ? sub_domain->global_extent[a] : q_spatial[a];
        axis.kernel = params.kernel_size[a];
        axis.stride = params.stride[a];
        axis.dilation = params.dilation[a];
        axis.causal = params.is_causal[a];
        q_extent_[a] = q_spatial[a];
        kv_extent_[a] = kv_spatial[a];
        if (sub_domain) {
          q_origin_[a] = sub_domain->q_origin[a];
          kv_origin_[a] = sub_domain->kv_origin[a];
        }
      }  // unused axes keep extent 1 and are padded out below
    }
    for (int i = 0; i < rank_; ++i) {
      q_tokens_ *= q_extent_[static_cast<size_t>(i)];
      kv_tokens_ *= kv_extent_[static_cast<size_t>(i)];
    }
  }

  bool keys_of(int64_t, int64_t t, std::vector<int64_t>& keys) const override {
    std::array<sem::Strided, sem::kMaxRank> sets;
    std::array<int64_t, sem::kMaxRank> x = coords(t, q_extent_);
    for (int i = 0; i < sem::kMaxRank; ++i) {
      const size_t a = static_cast<size_t>(i);
      if (i >= rank_) {
        sets[a] = sem::Strided{0, 1, 1};
        continue;
      }
      sem::Strided w = sem::window_of(q_origin_[a] + x[a], axes_[a]);
      w.first -= kv_origin_[a];  // global -> local key index
      if (w.count > 0 && (w.first < 0 || w.first + w.step * (w.count - 1) >= kv_extent_[a]))
        throw ValueError("reference backend: the window of a local query leaves the local key/value range on axis " +
                         std::to_string(i) + " (sub-domain halo too small)");
      sets[a] = w;
    }
    box(sets, kv_extent_, keys);
    for (int64_t e = 0; e < extra_tokens_; ++e) keys.push_back(kv_tokens_ + e);
    return true;
  }

  void queries_of(int64_t, int64_t u, std::vector<int64_t>& queries) const override {
    queries.clear();
    if (u >= kv_tokens_) {  // an additional key: every (local) query attends it
      for (int64_t t = 0; t < q_tokens_; ++t) queries.push_back(t);
      return;
    }
    std::array<sem::Strided, sem::kMaxRank> sets;
    std::array<int64_t, sem::kMaxRank> y = coords(u, kv_extent_);
    for (int i = 0; i < sem::kMaxRank; ++i) {
      const size_t a = static_cast<size_t>(i);
      if (i >= rank_) {
        sets[a] = sem::Strided{0, 1, 1};
        continue;
      }
      // Global queries that see the key, restricted to the local ones [lo, hi), as local indices.
      const sem::Strided r = sem::inverse_of(kv_origin_[a] + y[a], axes_[a]);
      const int64_t lo = q_origin_[a], hi = q_origin_[a] + q_extent_[a];
      const int64_t i_lo = r.first >= lo ? 0 : sem::ceil_div(lo - r.first, r.step);
      const int64_t i_hi = sem::min64(r.count, r.first >= hi ? 0 : sem::ceil_div(hi - r.first, r.step));
      sets[a] = sem::Strided{r.first + i_lo * r.step - lo, r.step, sem::max64(i_hi - i_lo, 0)};
    }
    box(sets, q_extent_, queries);
  }

 private:
  using Extents = std::array<int64_t, sem::kMaxRank>;

  // Row-major coordinates of token t in a grid of the given extents; unused trailing axes are 0.
  std::array<int64_t, sem::kMaxRank> coords(int64_t t, const Extents& extent) const {
    std::array<int64_t, sem::kMaxRank> x{0, 0, 0};
    for (int i = rank_ - 1; i >= 0; --i) {
      x[static_cast<size_t>(i)] = t % extent[static_cast<size_t>(i)];
      t /= extent[static_cast<size_t>(i)];
    }
    return x;
  }

  // Token indices of the box sets[0] x sets[1] x sets[2] (row-major over the used axes of a grid of
  // the given extents).
  void box(const std::array<sem::Strided, sem::kMaxRank>& sets, const Extents& extent,
           std::vector<int64_t>& out) const {
    out.clear();
    const int64_t e1 = rank_ > 1 ? extent[1] : 1;
    const int64_t e2 = rank_ > 2 ? extent[2] : 1;
    for (int64_t i0 = 0; i0 < sets[0].count; ++i0) {
      const int64_t x0 = sets[0].first + i0 * sets[0].step;
      for (int64_t i1 = 0; i1 < sets[1].count; ++i1) {
        const int64_t x1 = sets[1].first + i1 * sets[1].step;
        for (int64_t i2 = 0; i2 < sets[2].count; ++i2) {
          const int64_t x2 = sets[2].first + i2 * sets[2].step;
          out.push_back((x0 * e1 + x1) * e2 + x2);
        }
      }
    }
  }

  int rank_;
  int64_t extra_tokens_;
  int64_t q_tokens_ = 1, kv_tokens_ = 1;
  Extents q_extent_{1, 1, 1}, kv_extent_{1, 1, 1};
  Extents q_origin_{0, 0, 0}, kv_origin_{0, 0, 0};
  std::array<sem::Axis, sem::kMaxRank> axes_{};
};

int na_rank(const TensorView& query, const NaParams& params) {
  const int rank = query.dim() - 3;
  if (rank < 1 || rank > sem::kMaxRank || rank != params.rank) {
    throw ValueError("reference backend: query " + query.describe() + " does not match NA rank " +
                     std::to_string(params.rank) + " (expected [B, *S, H, D] with 1 to 3 spatial axes)");
  }
  return rank;
}

std::vector<int64_t> spatial_of(const TensorView& query, int rank) {
  return std::vector<int64_t>(query.shape.begin() + 1, query.shape.begin() + 1 + rank);
}

double resolved_scale(const std::optional<double>& scale, const TensorView& query) {
  return scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(query.shape.back()));
}

Problem make_problem(const TensorView& query, const TensorView& key, const TensorView& value,
                     const std::optional<TensorView>& extra_keys,
                     const std::optional<TensorView>& extra_values, int spatial_rank, double scale,
                     const Pattern& pattern, const RunOptions& options) {
  Problem p;
  p.query = make_rows(query, spatial_rank, true);
  p.key = make_rows(key, spatial_rank, true);
  p.value = make_rows(value, spatial_rank, true);
  if (extra_keys.has_value() != extra_values.has_value()) {
    throw ValueError("reference backend: additional_keys and additional_values must be given together");
  }
  if (extra_keys) {
    p.key_extra = make_rows(*extra_keys, 1, true);
    p.value_extra = make_rows(*extra_values, 1, true);
  }
  p.batch = query.shape[0];
  p.heads = query.shape[static_cast<size_t>(1 + spatial_rank)];
  p.heads_kv = key.shape[static_cast<size_t>(1 + spatial_rank)];
  p.scale = scale;
  p.pattern = &pattern;
  p.num_threads = options.num_threads;
  return p;
}

int64_t extra_tokens(const std::optional<TensorView>& extra_keys) {
  return extra_keys ? extra_keys->shape.at(1) : 0;
}

// ---- standard attention (FMHA) ------------------------------------------------------------------

// Key lists of FMHA: each query row attends a contiguous range of its sequence's keys. Without
// varlen every batch entry is one sequence; with varlen (B == 1) sequence s owns query rows
// [cu_q[s], cu_q[s+1]) and key rows [cu_kv[s], cu_kv[s+1]). Causal is top-left: local query i
// attends local keys j <= i (all of them once i >= the key count).
class FmhaPattern final : public Pattern {
 public:
  FmhaPattern(int64_t seqlen_q, int64_t seqlen_kv, bool causal, const std::optional<TensorView>& cu_q,
              const std::optional<TensorView>& cu_kv, int64_t batch)
      : causal_(causal) {
    if (cu_q.has_value() != cu_kv.has_value()) {
      throw ValueError("reference backend: cu_seqlens_q and cu_seqlens_kv must be given together");
    }
    if (!cu_q) {
      cu_q_ = {0, seqlen_q};
      cu_kv_ = {0, seqlen_kv};
      varlen_ = false;
      return;
    }
    varlen_ = true;
    if (batch != 1) {
      throw ValueError("reference backend: varlen attention needs batch 1, got " + std::to_string(batch));
    }
    cu_q_ = read_offsets(*cu_q, seqlen_q, "cu_seqlens_q");
    cu_kv_ = read_offsets(*cu_kv, seqlen_kv, "cu_seqlens_kv");
    if (cu_q_.size() != cu_kv_.size()) {
      throw ValueError("reference backend: cu_seqlens_q has " + std::to_string(cu_q_.size()) +
                       " entries but cu_seqlens_kv has " + std::to_string(cu_kv_.size()) +
                       "; they must be equal");
    }
    seq_of_q_ = owners(cu_q_, seqlen_q);
    seq_of_kv_ = owners(cu_kv_, seqlen_kv);
  }

  bool keys_of(int64_t, int64_t t, std::vector<int64_t>& keys) const override {
    keys.clear();
    const int64_t s = varlen_ ? seq_of_q_[static_cast<size_t>(t)] : 0;
    if (s < 0) return false;
    const int64_t i = t - cu_q_[static_cast<size_t>(s)];
    const int64_t kv_begin = cu_kv_[static_cast<size_t>(s)];
    const int64_t kv_count = cu_kv_[static_cast<size_t>(s) + 1] - kv_begin;
    const int64_t visible = causal_ ? std::min(i + 1, kv_count) : kv_count;
    for (int64_t j = 0; j < visible; ++j) keys.push_back(kv_begin + j);
    return true;
  }

  void queries_of(int64_t, int64_t u, std::vector<int64_t>& queries) const override {
    queries.clear();
    const int64_t s = varlen_ ? seq_of_kv_[static_cast<size_t>(u)] : 0;
    if (s < 0) return;
    const int64_t j = u - cu_kv_[static_cast<size_t>(s)];
    const int64_t q_begin = cu_q_[static_cast<size_t>(s)];
    const int64_t q_end = cu_q_[static_cast<size_t>(s) + 1];
    // Causal: local queries i >= j attend key j (rows past the key count attend every key).
    for (int64_t t = causal_ ? q_begin + j : q_begin; t < q_end; ++t) queries.push_back(t);
  }

 private:
  static std::vector<int64_t> read_offsets(const TensorView& cu, int64_t rows, const char* name) {
    if (cu.dtype != DType::i32 || cu.dim() != 1 || cu.shape[0] < 2 || cu.strides.size() != 1) {
      throw ValueError(std::string("reference backend: ") + name + " must be a 1-D int32 tensor with at least 2 "
                       "entries, got " + cu.describe());
    }
    std::vector<int64_t> offsets(static_cast<size_t>(cu.shape[0]));
    const int32_t* data = static_cast<const int32_t*>(cu.data);
    for (int64_t i = 0; i < cu.shape[0]; ++i) {
      offsets[static_cast<size_t>(i)] = data[i * cu.strides[0]];
      const int64_t previous = i == 0 ? 0 : offsets[static_cast<size_t>(i) - 1];
      if (offsets[static_cast<size_t>(i)] < previous || offsets[static_cast<size_t>(i)] > rows) {
        throw ValueError(std::string("reference backend: ") + name + "[" + std::to_string(i) + "] = " +
                         std::to_string(offsets[static_cast<size_t>(i)]) +
                         "; offsets must be non-decreasing, start at >= 0 and stay <= " +
                         std::to_string(rows));
      }
    }
    return offsets;
  }

  // The sequence owning each row, -1 for rows outside every sequence.
  static std::vector<int64_t> owners(const std::vector<int64_t>& cu, int64_t rows) {
    std::vector<int64_t> owner(static_cast<size_t>(rows), -1);
    for (size_t s = 0; s + 1 < cu.size(); ++s) {
      for (int64_t r = cu[s]; r < cu[s + 1]; ++r) owner[static_cast<size_t>(r)] = static_cast<int64_t>(s);
    }
    return owner;
  }

  bool causal_;
  bool varlen_ = false;
  std::vector<int64_t> cu_q_, cu_kv_;
  std::vector<int64_t> seq_of_q_, seq_of_kv_;
};

void check_fmha_rank(const TensorView& query) {
  if (query.dim() != 4) {
    throw ValueError("reference backend: FMHA query must be [B, S, H, D], got " + query.describe());
  }
}

// ---- the backend --------------------------------------------------------------------------------

class ReferenceBackend final : public Backend {
 public:
  const char* name() const override { return "reference"; }

  std::string reject(const NaProblem& problem, Pass) const override { return reject_device(problem.device); }
  std::string reject(const FmhaProblem& problem, Pass) const override { return reject_device(problem.device); }

  void na_forward(const NaForwardArgs& a, const TileConfig&, const RunOptions& options) const override {
    const int rank = na_rank(a.query, a.params);
    const NaPattern pattern(a.params, spatial_of(a.query, rank), spatial_of(a.key, rank), a.sub_domain,
                            extra_tokens(a.additional_keys));
    const Problem p = make_problem(a.query, a.key, a.value, a.additional_keys, a.additional_values, rank,
                                   resolved_scale(a.scale, a.query), pattern, options);
    const RowTensor out = make_rows(a.out, rank, true);
    if (a.lse) {
      const RowTensor lse = make_rows(*a.lse, rank, false);
      reference::forward(p, out, &lse);
    } else {
      reference::forward(p, out, nullptr);
    }
  }

  void na_backward(const NaBackwardArgs& a, const TileConfig&, const RunOptions& options) const override {
    const int rank = na_rank(a.query, a.params);
    const NaPattern pattern(a.params, spatial_of(a.query, rank), spatial_of(a.key, rank), a.sub_domain,
                            extra_tokens(a.additional_keys));
    const Problem p = make_problem(a.query, a.key, a.value, a.additional_keys, a.additional_values, rank,
                                   resolved_scale(a.scale, a.query), pattern, options);
    reference::Gradients g;
    g.dquery = make_rows(a.dquery, rank, true);
    g.dkey = make_rows(a.dkey, rank, true);
    g.dvalue = make_rows(a.dvalue, rank, true);
    if (a.additional_keys && a.dadditional_keys && a.dadditional_values) {
      g.dkey_extra = make_rows(*a.dadditional_keys, 1, true);
      g.dvalue_extra = make_rows(*a.dadditional_values, 1, true);
    }
    reference::backward(p, make_rows(a.out, rank, true), make_rows(a.lse, rank, false),
                        make_rows(a.dout, rank, true), g);
  }

  void fmha_forward(const FmhaForwardArgs& a, const TileConfig&, const RunOptions& options) const override {
    check_fmha_rank(a.query);
    const FmhaPattern pattern(a.query.shape[1], a.key.shape[1], a.is_causal, a.cu_seqlens_q,
                              a.cu_seqlens_kv, a.query.shape[0]);
    const Problem p = make_problem(a.query, a.key, a.value, std::nullopt, std::nullopt, 1,
                                   resolved_scale(a.scale, a.query), pattern, options);
    const RowTensor out = make_rows(a.out, 1, true);
    if (a.lse) {
      const RowTensor lse = make_rows(*a.lse, 1, false);
      reference::forward(p, out, &lse);
    } else {
      reference::forward(p, out, nullptr);
    }
  }

  void fmha_backward(const FmhaBackwardArgs& a, const TileConfig&, const RunOptions& options) const override {
    check_fmha_rank(a.query);
    const FmhaPattern pattern(a.query.shape[1], a.key.shape[1], a.is_causal, a.cu_seqlens_q,
                              a.cu_seqlens_kv, a.query.shape[0]);
    const Problem p = make_problem(a.query, a.key, a.value, std::nullopt, std::nullopt, 1,
                                   resolved_scale(a.scale, a.query), pattern, options);
    reference::Gradients g;
    g.dquery = make_rows(a.dquery, 1, true);
    g.dkey = make_rows(a.dkey, 1, true);
    g.dvalue = make_rows(a.dvalue, 1, true);
    reference::backward(p, make_rows(a.out, 1, true), make_rows(a.lse, 1, false), make_rows(a.dout, 1, true), g);
  }

 private:
  static std::string reject_device(const Device& device) {
    if (device.kind != DeviceKind::cpu) {
      return "reference runs on the CPU only, got " + device_name(device);
    }
    return {};
  }
};

}  // namespace

const Backend& reference_backend() {
  static const ReferenceBackend backend;
  return backend;
}

}  // namespace nattn::detail
