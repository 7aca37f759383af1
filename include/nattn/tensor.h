// A framework-free, non-owning tensor view: data pointer, dtype, device, int64 shape and strides.
// Strides are in elements (as in DLPack and PyTorch). nattn never allocates through a view.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nattn {

// f64 is for the fp64 `reference` backend only (e.g. torch.autograd.gradcheck); every other
// backend rejects it with a reason.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, i32 = 3, f64 = 4 };

enum class DeviceKind : int { cpu = 0, cuda = 1 };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

const char* dtype_name(DType dtype);        // "fp32", "fp16", "bf16", "int32", "fp64"
int64_t dtype_size(DType dtype);            // bytes per element
DType parse_dtype(const std::string& name); // fp32/float32, fp16/float16, bf16/bfloat16, fp64/float64; else ValueError
std::string device_name(const Device& device);  // "cpu", "cuda:0"

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device{};
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements

  TensorView() = default;
  // Contiguous row-major view.
  TensorView(void* data, DType dtype, std::vector<int64_t> shape, Device device = {});
  TensorView(void* data, DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
             Device device = {});

  int dim() const { return static_cast<int>(shape.size()); }
  int64_t size(int i) const { return shape.at(i < 0 ? i + dim() : i); }
  int64_t stride(int i) const { return strides.at(i < 0 ? i + dim() : i); }
  int64_t numel() const;
  bool is_contiguous() const;
  bool defined() const { return !shape.empty() || data != nullptr; }
  std::string describe() const;  // e.g. "fp16 cpu [2, 8, 8, 4, 32]"
};

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 8, 8]"

}  // namespace nattn
