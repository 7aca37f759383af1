// fp64 attention over explicit key lists (see reference_engine.h). Deliberately naive: every
// query row recomputes its logits from scratch; backward recomputes P from the given LSE.
#include "cpu/reference/reference_engine.h"

#include <omp.h>

#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <string>

#include "core/half.h"
#include "nattn/errors.h"

namespace nattn::detail::reference {

RowTensor make_rows(const TensorView& view, int spatial_rank, bool has_channels) {
  const int expected_dim = 1 + spatial_rank + (has_channels ? 2 : 1);
  if (view.dim() != expected_dim || static_cast<int>(view.strides.size()) != expected_dim) {
    throw ValueError("reference backend: tensor " + view.describe() + " should have " +
                     std::to_string(expected_dim) + " dims with strides");
  }
  RowTensor rows;
  rows.data = view.data;
  rows.dtype = view.dtype;
  rows.batch_stride = view.strides[0];
  rows.head_stride = view.strides[static_cast<size_t>(1 + spatial_rank)];
  if (has_channels) {
    rows.channel_stride = view.strides[static_cast<size_t>(2 + spatial_rank)];
    rows.channels = view.shape[static_cast<size_t>(2 + spatial_rank)];
  }
  int64_t tokens = 1;
  for (int i = 0; i < spatial_rank; ++i) tokens *= view.shape[static_cast<size_t>(1 + i)];
  rows.token_offset.resize(static_cast<size_t>(tokens));
  // Walk the spatial coordinates row-major (last axis fastest), keeping the element offset.
  std::vector<int64_t> coord(static_cast<size_t>(spatial_rank), 0);
  int64_t offset = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    rows.token_offset[static_cast<size_t>(t)] = offset;
    for (int i = spatial_rank - 1; i >= 0; --i) {
      const size_t axis = static_cast<size_t>(1 + i);
      ++coord[static_cast<size_t>(i)];
      offset += view.strides[axis];
      if (coord[static_cast<size_t>(i)] < view.shape[axis]) break;
      offset -= coord[static_cast<size_t>(i)] * view.strides[axis];
      coord[static_cast<size_t>(i)] = 0;
    }
  }
  return rows;
}

namespace {

// Per-thread work buffers, grown on demand.
struct Scratch {
  std::vector<int64_t> tokens;
  std::vector<double> logits;
  std::vector<double> a, b, c, acc, acc2;
};

// Runs body(scratch, i) for i in [0, n) on OpenMP threads. An exception thrown by the body is
// caught inside its iteration (OpenMP forbids unwinding out of a worksharing loop), the remaining
// iterations are skipped and the first exception is rethrown on the calling thread.
template <class Body>
void parallel_for(int64_t n, int num_threads, Body&& body) {
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(threads)
  {
    Scratch scratch;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        body(scratch, i);
      } catch (...) {
#pragma omp critical(nattn_reference_error)
        {
          if (!error) error = std::current_exception();
        }
        failed.store(true, std::memory_order_relaxed);
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

double load(const RowTensor& t, int64_t offset, int64_t c) {
  const int64_t at = offset + c * t.channel_stride;
  if (t.dtype == DType::f64) return static_cast<const double*>(t.data)[at];
  return static_cast<double>(load_float(t.data, at, t.dtype));
}
void store(const RowTensor& t, int64_t offset, int64_t c, double value) {
  const int64_t at = offset + c * t.channel_stride;
  if (t.dtype == DType::f64) {
    static_cast<double*>(t.data)[at] = value;
    return;
  }
  store_float(t.data, at, t.dtype, static_cast<float>(value));
}

void load_row(const RowTensor& t, int64_t offset, std::vector<double>& into) {
  into.resize(static_cast<size_t>(t.channels));
  for (int64_t c = 0; c < t.channels; ++c) into[static_cast<size_t>(c)] = load(t, offset, c);
}
void store_row(const RowTensor& t, int64_t offset, const std::vector<double>& values, double factor) {
  for (int64_t c = 0; c < t.channels; ++c) store(t, offset, c, factor * values[static_cast<size_t>(c)]);
}
void zero_row(const RowTensor& t, int64_t offset) {
  for (int64_t c = 0; c < t.channels; ++c) store(t, offset, c, 0.0);
}

double dot(const RowTensor& t, int64_t offset, const std::vector<double>& x) {
  double sum = 0;
  for (int64_t c = 0; c < t.channels; ++c) sum += load(t, offset, c) * x[static_cast<size_t>(c)];
  return sum;
}
// acc += w * row
void axpy(const RowTensor& t, int64_t offset, double w, std::vector<double>& acc) {
  for (int64_t c = 0; c < t.channels; ++c) acc[static_cast<size_t>(c)] += w * load(t, offset, c);
}

// Key token u of the problem: a main KV token or an additional one.
struct KeyRef {
  const RowTensor* key;
  const RowTensor* value;
  int64_t key_offset;
  int64_t value_offset;
};
KeyRef key_ref(const Problem& p, int64_t b, int64_t u, int64_t hk) {
  if (u < p.key.tokens()) {
    return {&p.key, &p.value, p.key.offset(b, u, hk), p.value.offset(b, u, hk)};
  }
  const int64_t e = u - p.key.tokens();
  return {&p.key_extra, &p.value_extra, p.key_extra.offset(b, e, hk), p.value_extra.offset(b, e, hk)};
}

void check_problem(const Problem& p) {
  if (p.pattern == nullptr || p.heads_kv <= 0 || p.heads % p.heads_kv != 0) {
    throw ValueError("reference backend: inconsistent problem (heads=" + std::to_string(p.heads) +
                     ", heads_kv=" + std::to_string(p.heads_kv) + ")");
  }
}

}  // namespace

void forward(const Problem& p, const RowTensor& out, const RowTensor* lse) {
  check_problem(p);
  const int64_t tq = p.query_tokens();
  const int64_t group = p.heads / p.heads_kv;
  parallel_for(p.batch * tq, p.num_threads, [&](Scratch& s, int64_t row) {
    const int64_t b = row / tq;
    const int64_t t = row % tq;
    const bool covered = p.pattern->keys_of(b, t, s.tokens);
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t out_offset = out.offset(b, t, h);
      if (!covered || s.tokens.empty()) {
        zero_row(out, out_offset);
        // A row outside every varlen sequence has LSE 0; a row that attends nothing has -inf.
        if (lse) store(*lse, lse->offset(b, t, h), 0, covered ? -std::numeric_limits<double>::infinity() : 0.0);
        continue;
      }
      const int64_t hk = h / group;
      load_row(p.query, p.query.offset(b, t, h), s.a);
      s.logits.resize(s.tokens.size());
      double max_logit = -std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < s.tokens.size(); ++j) {
        const KeyRef kr = key_ref(p, b, s.tokens[j], hk);
        s.logits[j] = p.scale * dot(*kr.key, kr.key_offset, s.a);
        max_logit = std::fmax(max_logit, s.logits[j]);
      }
      double sum = 0;
      for (double l : s.logits) sum += std::exp(l - max_logit);
      const double row_lse = max_logit + std::log(sum);
      s.acc.assign(static_cast<size_t>(out.channels), 0.0);
      for (size_t j = 0; j < s.tokens.size(); ++j) {
        const KeyRef kr = key_ref(p, b, s.tokens[j], hk);
        axpy(*kr.value, kr.value_offset, std::exp(s.logits[j] - row_lse), s.acc);
      }
      store_row(out, out_offset, s.acc, 1.0);
      if (lse) store(*lse, lse->offset(b, t, h), 0, row_lse);
    }
  });
}

void backward(const Problem& p, const RowTensor& out, const RowTensor& lse, const RowTensor& dout,
              const Gradients& g) {
  check_problem(p);
  const int64_t tq = p.query_tokens();
  const int64_t group = p.heads / p.heads_kv;
  // delta = rowsum(dO * O) per query row, from the given out and dout; shared by both passes.
  std::vector<double> delta(static_cast<size_t>(p.batch * tq * p.heads), 0.0);
  auto delta_at = [&](int64_t b, int64_t t, int64_t h) -> double& {
    return delta[static_cast<size_t>((b * tq + t) * p.heads + h)];
  };

  // Pass 1, per query row: delta, and dQ = scale * sum_j dS_j k_j with
  // dS_j = P_j (dO . v_j - delta), P_j = exp(scale q . k_j - lse).
  parallel_for(p.batch * tq, p.num_threads, [&](Scratch& s, int64_t row) {
    const int64_t b = row / tq;
    const int64_t t = row % tq;
    const bool covered = p.pattern->keys_of(b, t, s.tokens);
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t dq_offset = g.dquery.offset(b, t, h);
      if (!covered || s.tokens.empty()) {
        zero_row(g.dquery, dq_offset);
        continue;
      }
      const int64_t hk = h / group;
      load_row(p.query, p.query.offset(b, t, h), s.a);
      load_row(dout, dout.offset(b, t, h), s.b);
      const double row_delta = dot(out, out.offset(b, t, h), s.b);
      delta_at(b, t, h) = row_delta;
      const double row_lse = load(lse, lse.offset(b, t, h), 0);
      s.acc.assign(static_cast<size_t>(g.dquery.channels), 0.0);
      for (int64_t u : s.tokens) {
        const KeyRef kr = key_ref(p, b, u, hk);
        const double prob = std::exp(p.scale * dot(*kr.key, kr.key_offset, s.a) - row_lse);
        const double dscore = prob * (dot(*kr.value, kr.value_offset, s.b) - row_delta);
        axpy(*kr.key, kr.key_offset, dscore, s.acc);
      }
      store_row(g.dquery, dq_offset, s.acc, p.scale);
    }
  });

  // Pass 2, per key row (gathering over the queries that attend it, so no two threads write the
  // same element): dV = sum_i P_i dO_i and dK = scale * sum_i dS_i q_i over the query heads of
  // the kv head.
  const int64_t main_tokens = p.key.tokens();
  const bool extra_grads = g.dkey_extra.tokens() > 0 && g.dvalue_extra.tokens() > 0;
  const int64_t tk = extra_grads ? p.key_tokens() : main_tokens;
  parallel_for(p.batch * tk, p.num_threads, [&](Scratch& s, int64_t row) {
    const int64_t b = row / tk;
    const int64_t u = row % tk;
    const bool is_extra = u >= main_tokens;
    const RowTensor& dk = is_extra ? g.dkey_extra : g.dkey;
    const RowTensor& dv = is_extra ? g.dvalue_extra : g.dvalue;
    const int64_t token = is_extra ? u - main_tokens : u;
    p.pattern->queries_of(b, u, s.tokens);
    for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
      const KeyRef kr = key_ref(p, b, u, hk);
      load_row(*kr.key, kr.key_offset, s.a);
      load_row(*kr.value, kr.value_offset, s.c);
      s.acc.assign(static_cast<size_t>(dk.channels), 0.0);
      s.acc2.assign(static_cast<size_t>(dv.channels), 0.0);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t t : s.tokens) {
          const int64_t q_offset = p.query.offset(b, t, h);
          const int64_t do_offset = dout.offset(b, t, h);
          const double row_lse = load(lse, lse.offset(b, t, h), 0);
          const double prob = std::exp(p.scale * dot(p.query, q_offset, s.a) - row_lse);
          axpy(dout, do_offset, prob, s.acc2);
          const double dscore = prob * (dot(dout, do_offset, s.c) - delta_at(b, t, h));
          axpy(p.query, q_offset, dscore, s.acc);
        }
      }
      store_row(dk, dk.offset(b, token, hk), s.acc, p.scale);
      store_row(dv, dv.offset(b, token, hk), s.acc2, 1.0);
    }
  });
}

}  // namespace nattn::detail::reference
