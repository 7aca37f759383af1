#include "nattn/tensor.h"

#include <sstream>

#include "nattn/errors.h"

namespace nattn {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    case DType::i32: return "int32";
    case DType::f64: return "fp64";
  }
  return "unknown";
}

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f16:
    case DType::bf16: return 2;
    case DType::f64: return 8;
    default: return 4;
  }
}

DType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "float") return DType::f32;
  if (name == "fp16" || name == "float16" || name == "half") return DType::f16;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "fp64" || name == "float64" || name == "double") return DType::f64;
  throw ValueError("dtype '" + name + "' is not supported; allowed: fp32, fp16, bf16, fp64 (reference backend only)");
}

std::string device_name(const Device& device) {
  if (device.kind == DeviceKind::cpu) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[static_cast<size_t>(i)] = strides[static_cast<size_t>(i) + 1] * shape[static_cast<size_t>(i) + 1];
  }
  return strides;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  // std::to_string, not an ostream: see src/core/problem.cpp.
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

TensorView::TensorView(void* data_, DType dtype_, std::vector<int64_t> shape_, Device device_)
    : data(data_), dtype(dtype_), device(device_), shape(std::move(shape_)) {
  strides = contiguous_strides(shape);
}

TensorView::TensorView(void* data_, DType dtype_, std::vector<int64_t> shape_,
                       std::vector<int64_t> strides_, Device device_)
    : data(data_), dtype(dtype_), device(device_), shape(std::move(shape_)), strides(std::move(strides_)) {
  if (strides.size() != shape.size()) {
    throw ValueError("TensorView: strides " + shape_string(strides) + " must have one entry per axis of shape " +
                     shape_string(shape));
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

bool TensorView::is_contiguous() const { return strides == contiguous_strides(shape); }

std::string TensorView::describe() const {
  return std::string(dtype_name(dtype)) + " " + device_name(device) + " " + shape_string(shape);
}

}  // namespace nattn
