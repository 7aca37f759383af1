// GPU helpers shared by `nattn verify` and `nattn profile`: whether CUDA is built and a device is
// present, and an owning device buffer. Every CUDA call is checked: a failure throws
// nattn::RuntimeError naming the call and CUDA's error string. In a build without CUDA
// (NATTN_WITH_CUDA undefined) the queries report "no CUDA" and DeviceBuffer throws.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nattn/tensor.h"

namespace nattn::cli {

// True when this nattn was built with the CUDA backends (NATTN_WITH_CUDA).
bool cuda_built();

// Number of CUDA devices; 0 when CUDA is not built or cudaGetDeviceCount fails (no driver, no
// device). `why`, when given, gets the reason for 0 ("" otherwise).
int cuda_device_count(std::string* why = nullptr);

// Compute capability of device `index` as major * 10 + minor (90 for an H100).
int cuda_compute_capability(int index);

// "NVIDIA H100 80GB HBM3"
std::string cuda_device_name(int index);

// Free and total memory of device `index` in bytes.
void cuda_memory_info(int index, int64_t& free_bytes, int64_t& total_bytes);

// Waits for every queued operation of the current device; a failed kernel surfaces here as
// RuntimeError "cudaDeviceSynchronize CONTEXT: CUDA error: ..." (context: e.g. "after a timed call").
void cuda_synchronize(const std::string& context);

// True for the backends that run on CUDA tensors (BackendInfo::device, from the registry's
// capability table): cutlass-*, hopper-*, blackwell-*, flex-*; false for unknown names.
bool is_cuda_backend(const std::string& backend);

// One allocation on GPU `device` (cudaMalloc; cudaFree on destruction). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocates max(bytes, 1) bytes (contents undefined).
  DeviceBuffer(int64_t bytes, int device);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  int device() const { return device_; }

  void upload(const void* host, int64_t bytes);  // host -> device, the first `bytes` bytes
  void download(void* host, int64_t bytes) const;  // device -> host
  void zero();                                     // every byte 0

  // Contiguous view of the buffer on Device{cuda, device()}.
  TensorView view(DType dtype, std::vector<int64_t> shape) const;
  // View with the given strides (elements).
  TensorView view(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides) const;

 private:
  void release() noexcept;
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  int device_ = 0;
};

}  // namespace nattn::cli
