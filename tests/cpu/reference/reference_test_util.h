// Helpers of the reference-backend tests: a dense brute-force attention (every (query, key) pair
// is visited and a caller-given mask decides whether it counts; written independently of the
// reference engine, with dense loops and delta from P rather than from O, so the two cross-check)
// and copies between contiguous host tensors and strided views.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "common/test_util.h"

namespace nattn::test {

struct DenseShape {
  int64_t batch = 1, q_tokens = 1, kv_tokens = 1, heads = 1, heads_kv = 1, dim = 1, dim_v = 1;
};

struct DenseResult {
  std::vector<double> out, lse, dq, dk, dv;  // [B, Tq, H, Dv], [B, Tq, H], grads like the inputs
};

// mask(b, i, j): does query token i of batch b attend key token j? Tensors are contiguous
// [B, T, heads, dim] floats. Rows that attend nothing get out 0 and lse -inf.
inline DenseResult dense_attention(const DenseShape& s, const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const std::vector<float>& dout, double scale,
                                   const std::function<bool(int64_t, int64_t, int64_t)>& mask) {
  DenseResult r;
  r.out.assign(static_cast<size_t>(s.batch * s.q_tokens * s.heads * s.dim_v), 0.0);
  r.lse.assign(static_cast<size_t>(s.batch * s.q_tokens * s.heads), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  const int64_t group = s.heads / s.heads_kv;
  auto qi = [&](int64_t b, int64_t i, int64_t h, int64_t c) { return static_cast<size_t>(((b * s.q_tokens + i) * s.heads + h) * s.dim + c); };
  auto oi = [&](int64_t b, int64_t i, int64_t h, int64_t c) { return static_cast<size_t>(((b * s.q_tokens + i) * s.heads + h) * s.dim_v + c); };
  auto ki = [&](int64_t b, int64_t j, int64_t h, int64_t c) { return static_cast<size_t>(((b * s.kv_tokens + j) * s.heads_kv + h) * s.dim + c); };
  auto vi = [&](int64_t b, int64_t j, int64_t h, int64_t c) { return static_cast<size_t>(((b * s.kv_tokens + j) * s.heads_kv + h) * s.dim_v + c); };
  std::vector<double> logit(static_cast<size_t>(s.kv_tokens)), prob(static_cast<size_t>(s.kv_tokens));
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.q_tokens; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t hk = h / group;
        double max_logit = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.kv_tokens; ++j) {
          if (!mask(b, i, j)) continue;
          double dot = 0;
          for (int64_t c = 0; c < s.dim; ++c) dot += double(q[qi(b, i, h, c)]) * double(k[ki(b, j, hk, c)]);
          logit[static_cast<size_t>(j)] = scale * dot;
          max_logit = std::fmax(max_logit, scale * dot);
        }
        const size_t lse_index = static_cast<size_t>((b * s.q_tokens + i) * s.heads + h);
        if (std::isinf(max_logit)) {  // no keys
          r.lse[lse_index] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < s.kv_tokens; ++j) {
          if (mask(b, i, j)) sum += std::exp(logit[static_cast<size_t>(j)] - max_logit);
        }
        const double lse = max_logit + std::log(sum);
        r.lse[lse_index] = lse;
        // P, out, dP and delta = sum_j P dP (equal to rowsum(dO * O)).
        double delta = 0;
        for (int64_t j = 0; j < s.kv_tokens; ++j) {
          const double p = mask(b, i, j) ? std::exp(logit[static_cast<size_t>(j)] - lse) : 0.0;
          prob[static_cast<size_t>(j)] = p;
          double dp = 0;
          for (int64_t c = 0; c < s.dim_v; ++c) {
            r.out[oi(b, i, h, c)] += p * double(v[vi(b, j, hk, c)]);
            dp += double(dout[oi(b, i, h, c)]) * double(v[vi(b, j, hk, c)]);
          }
          delta += p * dp;
        }
        for (int64_t j = 0; j < s.kv_tokens; ++j) {
          const double p = prob[static_cast<size_t>(j)];
          if (p == 0) continue;
          double dp = 0;
          for (int64_t c = 0; c < s.dim_v; ++c) {
            dp += double(dout[oi(b, i, h, c)]) * double(v[vi(b, j, hk, c)]);
            r.dv[vi(b, j, hk, c)] += p * double(dout[oi(b, i, h, c)]);
          }
          const double ds = p * (dp - delta);
          for (int64_t c = 0; c < s.dim; ++c) {
            r.dq[qi(b, i, h, c)] += scale * ds * double(k[ki(b, j, hk, c)]);
            r.dk[ki(b, j, hk, c)] += scale * ds * double(q[qi(b, i, h, c)]);
          }
        }
      }
    }
  }
  return r;
}

// max |got - expected| with -inf == -inf counted as a match; NaN or any other mismatch in
// non-finite values gives +inf.
inline double max_error(const HostTensor& got, const std::vector<double>& expected) {
  if (static_cast<size_t>(got.numel()) != expected.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get(i), e = expected[static_cast<size_t>(i)];
    if (g == e) continue;
    const double d = std::fabs(g - e);
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    worst = std::fmax(worst, d);
  }
  return worst;
}

inline double max_magnitude(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) {
    if (std::isfinite(e)) m = std::fmax(m, std::fabs(e));
  }
  return m;
}

// Calls fn(element offset in `view`, row-major index) for every element of a strided view.
template <class Fn>
void for_each_element(const TensorView& view, Fn&& fn) {
  const int64_t n = view.numel();
  std::vector<int64_t> coord(static_cast<size_t>(view.dim()), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t offset = 0;
    for (int a = 0; a < view.dim(); ++a) offset += coord[static_cast<size_t>(a)] * view.strides[static_cast<size_t>(a)];
    fn(offset, i);
    for (int a = view.dim() - 1; a >= 0; --a) {
      if (++coord[static_cast<size_t>(a)] < view.shape[static_cast<size_t>(a)]) break;
      coord[static_cast<size_t>(a)] = 0;
    }
  }
}

// Writes the contiguous `src` into the strided `dst` (same shape and dtype).
inline void copy_into(const HostTensor& src, const TensorView& dst) {
  for_each_element(dst, [&](int64_t offset, int64_t i) { detail::store_float(dst.data, offset, dst.dtype, src.get(i)); });
}

// A contiguous copy of a strided view.
inline HostTensor gather(const TensorView& src) {
  HostTensor out(src.dtype, src.shape);
  for_each_element(src, [&](int64_t offset, int64_t i) { out.set(i, detail::load_float(src.data, offset, src.dtype)); });
  return out;
}

// Fills every element of a strided view with NaN.
inline void poison(const TensorView& view) {
  for_each_element(view, [&](int64_t offset, int64_t) {
    detail::store_float(view.data, offset, view.dtype, std::numeric_limits<float>::quiet_NaN());
  });
}

}  // namespace nattn::test
