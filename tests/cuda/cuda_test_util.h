// Helpers shared by the GPU tests: device presence, and tensors mirrored on host and device.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/test_util.h"

namespace nattn::test {

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

inline int gpu_cc() {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  return major * 10 + minor;
}

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A tensor on the host and the device with the same (possibly padded) layout: logical shape
// `shape`; with pad > 0 the storage has `pad` extra elements on the last axis and one extra head,
// so the view is non-contiguous. Random contents are never exactly zero; `poison` fills NaN.
struct Dual {
  HostTensor host;  // storage, contiguous in the padded shape
  void* dev = nullptr;
  TensorView hview, dview;

  Dual() = default;
  Dual(const Dual&) = delete;
  ~Dual() {
    if (dev) cudaFree(dev);
  }
  void init(DType dtype, const std::vector<int64_t>& shape, int64_t pad, std::mt19937_64* rng, bool poison) {
    std::vector<int64_t> storage = shape;
    storage.back() += pad;
    if (pad > 0 && storage.size() >= 3) storage[storage.size() - 2] += 1;
    host = rng ? random_tensor(dtype, storage, *rng) : HostTensor(dtype, storage);
    if (rng) {
      for (int64_t i = 0; i < host.numel(); ++i)
        if (host.get(i) == 0.f) host.set(i, 0.25f);
    }
    if (poison)
      for (int64_t i = 0; i < host.numel(); ++i) host.set(i, std::nanf(""));
    const std::vector<int64_t> strides = contiguous_strides(storage);
    hview = TensorView(host.view.data, dtype, shape, strides);
    upload_storage();
    dview = TensorView(dev, dtype, shape, strides, Device{DeviceKind::cuda, 0});
  }
  // Host storage -> device (allocated on first use).
  void upload_storage() {
    const size_t bytes = static_cast<size_t>(host.numel() * dtype_size(host.view.dtype));
    if (dev == nullptr) check_cuda(cudaMalloc(&dev, bytes + 16), "cudaMalloc");
    check_cuda(cudaMemcpy(dev, host.view.data, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  // Device -> a fresh host copy in the same layout.
  HostTensor fetch() const {
    HostTensor out = host;
    const size_t bytes = static_cast<size_t>(host.numel() * dtype_size(host.view.dtype));
    check_cuda(cudaMemcpy(out.view.data, dev, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy back");
    return out;
  }
};

// The logical elements of a view (over storage `t` with the view's strides), as doubles.
inline std::vector<double> gather(const HostTensor& t, const TensorView& v) {
  std::vector<double> out;
  const int nd = v.dim();
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  const int64_t n = v.numel();
  out.reserve(static_cast<size_t>(n));
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = 0;
    for (int d = 0; d < nd; ++d) off += idx[static_cast<size_t>(d)] * v.strides[static_cast<size_t>(d)];
    out.push_back(t.get(off));
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < v.shape[static_cast<size_t>(d)]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return out;
}

// Output and LSE errors of a forward run: relative L2 of the output, max |LSE difference|, and the
// count of non-finite values in either (an unwritten, poisoned output shows up here).
struct Errors {
  double out_rel_l2 = 0, lse_max_abs = 0;
  int64_t nan = 0;
};

inline Errors compare(const std::vector<double>& got, const std::vector<double>& ref, const std::vector<double>& glse,
                      const std::vector<double>& rlse) {
  Errors e;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) ++e.nan;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  e.out_rel_l2 = std::sqrt(num / (den > 0 ? den : 1));
  for (size_t i = 0; i < rlse.size(); ++i) {
    if (!std::isfinite(glse[i])) ++e.nan;
    e.lse_max_abs = std::fmax(e.lse_max_abs, std::fabs(glse[i] - rlse[i]));
  }
  return e;
}

}  // namespace nattn::test
