// GPU helpers of the CLI (see cuda_device.h).
#include "nattn/cuda_device.h"

#include <utility>

#include "nattn/backends.h"
#include "nattn/errors.h"

#ifdef NATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace nattn::cli {
namespace {

#ifndef NATTN_WITH_CUDA
[[noreturn]] void not_built(const std::string& what) {
  throw RuntimeError(what + ": this nattn was built without CUDA (rebuild with -DNATTN_ENABLE_CUDA=ON)");
}
#else
// Throws RuntimeError "WHAT: CUDA error STRING (NAME)". The error is also taken off the runtime's
// last-error slot, so that a later cudaGetLastError() (a backend's launch check) does not report it
// again.
void check(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw RuntimeError(what + ": CUDA error: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

std::string on_device(const char* call, int device) {
  return std::string(call) + " on cuda:" + std::to_string(device);
}
#endif

}  // namespace

bool cuda_built() {
#ifdef NATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count(std::string* why) {
  if (why) why->clear();
#ifdef NATTN_WITH_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
    return 0;
  }
  if (count <= 0) {
    if (why) *why = "cudaGetDeviceCount: 0 devices";
    return 0;
  }
  return count;
#else
  if (why) *why = "this nattn was built without CUDA";
  return 0;
#endif
}

int cuda_compute_capability(int index) {
#ifdef NATTN_WITH_CUDA
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index),
        on_device("cudaDeviceGetAttribute(compute capability)", index));
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index),
        on_device("cudaDeviceGetAttribute(compute capability)", index));
  return major * 10 + minor;
#else
  (void)index;
  not_built("cuda_compute_capability");
#endif
}

std::string cuda_device_name(int index) {
#ifdef NATTN_WITH_CUDA
  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, index), on_device("cudaGetDeviceProperties", index));
  return props.name;
#else
  (void)index;
  not_built("cuda_device_name");
#endif
}

void cuda_memory_info(int index, int64_t& free_bytes, int64_t& total_bytes) {
#ifdef NATTN_WITH_CUDA
  check(cudaSetDevice(index), on_device("cudaSetDevice", index));
  size_t free_memory = 0, total_memory = 0;
  check(cudaMemGetInfo(&free_memory, &total_memory), on_device("cudaMemGetInfo", index));
  free_bytes = static_cast<int64_t>(free_memory);
  total_bytes = static_cast<int64_t>(total_memory);
#else
  (void)index;
  free_bytes = total_bytes = 0;
  not_built("cuda_memory_info");
#endif
}

void cuda_synchronize(const std::string& context) {
#ifdef NATTN_WITH_CUDA
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize " + context);
#else
  not_built(context);
#endif
}

bool is_cuda_backend(const std::string& backend) {
  for (const BackendInfo& info : list_backends())
    if (info.name == backend) return info.device == DeviceKind::cuda;
  return false;
}

// ---- DeviceBuffer --------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(int64_t bytes, int device) : bytes_(bytes), device_(device) {
#ifdef NATTN_WITH_CUDA
  if (bytes < 0) throw RuntimeError("DeviceBuffer: negative size " + std::to_string(bytes));
  check(cudaSetDevice(device), on_device("cudaSetDevice", device));
  void* ptr = nullptr;
  check(cudaMalloc(&ptr, static_cast<size_t>(bytes > 0 ? bytes : 1)),
        on_device(("cudaMalloc(" + std::to_string(bytes) + " bytes)").c_str(), device));
  data_ = ptr;
#else
  not_built("a device buffer of " + std::to_string(bytes) + " bytes");
#endif
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)), device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

void DeviceBuffer::release() noexcept {
#ifdef NATTN_WITH_CUDA
  // A destructor does not throw: a failing cudaFree (a device already in an error state) is
  // dropped, and its error taken off the last-error slot.
  if (data_ != nullptr && cudaFree(data_) != cudaSuccess) (void)cudaGetLastError();
#endif
  data_ = nullptr;
  bytes_ = 0;
}

void DeviceBuffer::upload(const void* host, int64_t bytes) {
  if (bytes < 0 || bytes > bytes_)
    throw RuntimeError("DeviceBuffer::upload: " + std::to_string(bytes) + " bytes into a buffer of " +
                       std::to_string(bytes_));
#ifdef NATTN_WITH_CUDA
  check(cudaMemcpy(data_, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice),
        on_device(("cudaMemcpy(host to device, " + std::to_string(bytes) + " bytes)").c_str(), device_));
#else
  (void)host;
  not_built("DeviceBuffer::upload");
#endif
}

void DeviceBuffer::download(void* host, int64_t bytes) const {
  if (bytes < 0 || bytes > bytes_)
    throw RuntimeError("DeviceBuffer::download: " + std::to_string(bytes) + " bytes from a buffer of " +
                       std::to_string(bytes_));
#ifdef NATTN_WITH_CUDA
  check(cudaMemcpy(host, data_, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost),
        on_device(("cudaMemcpy(device to host, " + std::to_string(bytes) + " bytes)").c_str(), device_));
#else
  (void)host;
  not_built("DeviceBuffer::download");
#endif
}

void DeviceBuffer::zero() {
#ifdef NATTN_WITH_CUDA
  if (data_ == nullptr) return;
  check(cudaMemset(data_, 0, static_cast<size_t>(bytes_ > 0 ? bytes_ : 1)), on_device("cudaMemset", device_));
#else
  not_built("DeviceBuffer::zero");
#endif
}

TensorView DeviceBuffer::view(DType dtype, std::vector<int64_t> shape) const {
  return TensorView(data_, dtype, std::move(shape), Device{DeviceKind::cuda, device_});
}

TensorView DeviceBuffer::view(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides) const {
  return TensorView(data_, dtype, std::move(shape), std::move(strides), Device{DeviceKind::cuda, device_});
}

}  // namespace nattn::cli
