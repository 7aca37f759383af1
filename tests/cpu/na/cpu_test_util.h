// Helpers for the cpu backend tests: tensors with arbitrary (padded, permuted) strides whose last
// axis is contiguous, logical read/write, and a check that nothing outside the view was written.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/half.h"
#include "nattn/ops.h"

namespace nattn::test {

// A tensor view into its own storage. When `strided`, every axis but the last is padded by 0-2
// elements and the non-last axes are laid out in a random order.
struct StridedTensor {
  std::vector<unsigned char> bytes;
  TensorView view;
  std::vector<int64_t> offsets;  // element offset of every logical element, row-major order
  int64_t storage = 0;           // elements of storage

  StridedTensor() = default;
  StridedTensor(DType dtype, const std::vector<int64_t>& shape, std::mt19937_64* rng, bool strided) {
    const int n = static_cast<int>(shape.size());
    std::vector<int64_t> extent = shape;
    std::vector<int> order(static_cast<size_t>(n));  // memory order, outermost first
    std::iota(order.begin(), order.end(), 0);
    if (strided && n > 1) {
      for (int a = 0; a + 1 < n; ++a) extent[static_cast<size_t>(a)] += static_cast<int64_t>((*rng)() % 3);
      std::shuffle(order.begin(), order.end() - 1, *rng);
    }
    std::vector<int64_t> strides(static_cast<size_t>(n), 1);
    int64_t stride = 1;
    for (int i = n - 1; i >= 0; --i) {
      const int a = order[static_cast<size_t>(i)];
      strides[static_cast<size_t>(a)] = stride;
      stride *= std::max<int64_t>(extent[static_cast<size_t>(a)], 1);
    }
    storage = stride;
    bytes.assign(static_cast<size_t>(storage * dtype_size(dtype)) + 1, 0);
    view = TensorView(bytes.data(), dtype, shape, strides);
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    offsets.resize(static_cast<size_t>(numel));
    std::vector<int64_t> idx(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < numel; ++i) {
      int64_t off = 0;
      for (int a = 0; a < n; ++a) off += idx[static_cast<size_t>(a)] * strides[static_cast<size_t>(a)];
      offsets[static_cast<size_t>(i)] = off;
      for (int a = n - 1; a >= 0; --a) {
        if (++idx[static_cast<size_t>(a)] < shape[static_cast<size_t>(a)]) break;
        idx[static_cast<size_t>(a)] = 0;
      }
    }
  }

  int64_t numel() const { return static_cast<int64_t>(offsets.size()); }
  float get(int64_t i) const { return detail::load_float(view.data, offsets[static_cast<size_t>(i)], view.dtype); }
  void set(int64_t i, float v) { detail::store_float(view.data, offsets[static_cast<size_t>(i)], view.dtype, v); }
  std::vector<float> values() const {
    std::vector<float> out(offsets.size());
    for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = get(i);
    return out;
  }
  void fill_random(std::mt19937_64& rng, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    for (int64_t i = 0; i < numel(); ++i) set(i, dist(rng));
  }
  // NaN in every storage element, padding included.
  void poison() {
    for (int64_t i = 0; i < storage; ++i)
      detail::store_float(view.data, i, view.dtype, std::numeric_limits<float>::quiet_NaN());
  }
  // Number of storage elements outside the view that are no longer NaN (written by mistake).
  int64_t touched_padding() const {
    std::vector<char> inside(static_cast<size_t>(storage), 0);
    for (int64_t off : offsets) inside[static_cast<size_t>(off)] = 1;
    int64_t touched = 0;
    for (int64_t i = 0; i < storage; ++i) {
      if (!inside[static_cast<size_t>(i)] && !std::isnan(detail::load_float(view.data, i, view.dtype))) ++touched;
    }
    return touched;
  }
  // A contiguous copy with the same values.
  HostTensor contiguous() const {
    HostTensor t(view.dtype, view.shape);
    for (int64_t i = 0; i < numel(); ++i) t.set(i, get(i));
    return t;
  }
};

inline std::vector<float> values_of(const HostTensor& t) { return t.to_float(); }
inline std::vector<float> values_of(const StridedTensor& t) { return t.values(); }

// max |got - want| / max(1, max |want|); +inf on NaN/inf in got or a size mismatch.
inline double scaled_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double scale = 1.0, worst = 0.0;
  for (float w : want) {
    if (std::isfinite(w)) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isinf(w) && g == w) continue;  // e.g. lse = -inf of a row without keys
    const double d = std::fabs(g - w);
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst / scale;
}

// Kernel instruction sets this CPU runs; NATTN_CPU_ISA selects one (README.md of src/cpu/na).
inline std::vector<std::string> cpu_isas() {
  std::vector<std::string> names{"generic"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) names.push_back("avx2");
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    names.push_back("avx512");
  return names;
}

class IsaScope {
 public:
  explicit IsaScope(const std::string& isa) {
    if (!isa.empty()) setenv("NATTN_CPU_ISA", isa.c_str(), 1);
  }
  ~IsaScope() { unsetenv("NATTN_CPU_ISA"); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;
};

}  // namespace nattn::test
