// Shared helpers for tests: owning host buffers with a TensorView, random fills, poison, errors.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/half.h"
#include "nattn/tensor.h"

namespace nattn::test {

// An owning, contiguous host tensor.
struct HostTensor {
  std::vector<unsigned char> bytes;
  TensorView view;

  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    bytes.assign(static_cast<size_t>(n * dtype_size(dtype)) + 1, 0);
    view = TensorView(bytes.data(), dtype, std::move(shape));
  }
  HostTensor(const HostTensor& o) : bytes(o.bytes), view(o.view) { view.data = bytes.data(); }
  HostTensor& operator=(const HostTensor& o) {
    bytes = o.bytes;
    view = o.view;
    view.data = bytes.data();
    return *this;
  }
  HostTensor(HostTensor&&) = default;
  HostTensor& operator=(HostTensor&&) = default;

  int64_t numel() const { return view.numel(); }
  float get(int64_t i) const { return detail::load_float(view.data, i, view.dtype); }
  void set(int64_t i, float v) { detail::store_float(view.data, i, view.dtype, v); }
  std::vector<float> to_float() const {
    std::vector<float> out(static_cast<size_t>(numel()));
    for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = get(i);
    return out;
  }
  // A copy in another dtype (values rounded to it).
  HostTensor cast(DType dtype) const {
    HostTensor out(dtype, view.shape);
    for (int64_t i = 0; i < numel(); ++i) out.set(i, get(i));
    return out;
  }
};

inline HostTensor random_tensor(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng,
                                float lo = -1.f, float hi = 1.f) {
  HostTensor t(dtype, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, dist(rng));
  return t;
}

// Outputs are poisoned with NaN before a run so that an element a backend forgets to write fails.
inline HostTensor poisoned_tensor(DType dtype, std::vector<int64_t> shape) {
  HostTensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std::numeric_limits<float>::quiet_NaN());
  return t;
}

// max |a - b| over all elements; NaN anywhere gives +inf.
inline double max_abs_diff(const HostTensor& a, const HostTensor& b) {
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(a.get(i)) - static_cast<double>(b.get(i)));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    worst = d > worst ? d : worst;
  }
  return worst;
}

// max |a - b| / (atol_floor + max |b|): a scale-aware error for 16-bit comparisons.
inline double max_rel_diff(const HostTensor& a, const HostTensor& b, double floor = 1e-6) {
  double ref = 0;
  for (int64_t i = 0; i < b.numel(); ++i) ref = std::fmax(ref, std::fabs(b.get(i)));
  return max_abs_diff(a, b) / (floor + ref);
}

}  // namespace nattn::test
