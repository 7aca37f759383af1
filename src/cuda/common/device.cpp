#include "cuda/common/device.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>

#include "cuda/common/cuda_check.h"

namespace nattn::cuda {

const DeviceProps& device_props(int index) {
  static std::mutex mutex;
  static std::map<int, DeviceProps> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(index);
  if (it != cache.end()) return it->second;
  int count = 0;
  NATTN_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (index < 0 || index >= count)
    throw RuntimeError("CUDA device index " + std::to_string(index) + " is out of range (" +
                       std::to_string(count) + " devices)");
  DeviceProps p;
  p.index = index;
  int major = 0, minor = 0;
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index));
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index));
  p.cc = major * 10 + minor;
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&p.sm_count, cudaDevAttrMultiProcessorCount, index));
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&p.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index));
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&p.max_grid_y, cudaDevAttrMaxGridDimY, index));
  NATTN_CUDA_CHECK(cudaDeviceGetAttribute(&p.max_grid_z, cudaDevAttrMaxGridDimZ, index));
  return cache.emplace(index, p).first->second;
}

DeviceGuard::DeviceGuard(int index) {
  NATTN_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != index) NATTN_CUDA_CHECK(cudaSetDevice(index));
  changed_ = previous_ != index;
}

DeviceGuard::~DeviceGuard() {
  if (changed_) cudaSetDevice(previous_);  // best effort: a destructor does not throw
}

int current_device() {
  int d = 0;
  NATTN_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

int smem_optin_for_cc(int cc) {
  switch (cc) {
    case 75: return 64 * 1024;
    case 80: case 87: return 163 * 1024;
    case 86: case 89: case 120: return 99 * 1024;
    case 90: case 100: case 103: return 227 * 1024;
    default: return 48 * 1024;
  }
}

}  // namespace nattn::cuda
