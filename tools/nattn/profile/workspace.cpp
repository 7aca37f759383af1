// Allocation and random fill of the profile tensors.
#include "nattn/profile/workspace.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "core/half.h"
#include "nattn/errors.h"

namespace nattn::cli::profile {
namespace {

constexpr int64_t kAlignment = 64;

// Product of `shape` times the element size, or -1 on int64 overflow.
int64_t checked_bytes(const std::vector<int64_t>& shape, int64_t element_size) {
  int64_t total = element_size;
  for (int64_t extent : shape) {
    if (__builtin_mul_overflow(total, extent, &total)) return -1;
  }
  return total;
}

// splitmix64: fast, and good enough for benchmark inputs (not zeros, no pattern a backend could
// exploit).
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fill_uniform(const TensorView& view, uint64_t seed) {
  uint64_t state = seed;
  const int64_t n = view.numel();
  for (int64_t i = 0; i < n; ++i) {
    // 24 random bits -> [-1, 1)
    const float unit = static_cast<float>(next_random(state) >> 40) * (1.0f / 16777216.0f);
    detail::store_float(view.data, i, view.dtype, 2.0f * unit - 1.0f);
  }
}

// Standard normal values (Box-Muller on two uniforms in (0, 1]), for inputs like torch.randn's.
void fill_normal(const TensorView& view, uint64_t seed) {
  uint64_t state = seed;
  const int64_t n = view.numel();
  constexpr double kTwoPi = 6.283185307179586;
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = static_cast<double>((next_random(state) >> 11) + 1) * (1.0 / 9007199254740992.0);
    const double u2 = static_cast<double>(next_random(state) >> 11) * (1.0 / 9007199254740992.0);
    const double r = std::sqrt(-2.0 * std::log(u1));
    detail::store_float(view.data, i, view.dtype, static_cast<float>(r * std::cos(kTwoPi * u2)));
    if (i + 1 < n) detail::store_float(view.data, i + 1, view.dtype, static_cast<float>(r * std::sin(kTwoPi * u2)));
  }
}

void fill_zero(const HostBuffer& buffer) {
  std::fill_n(static_cast<unsigned char*>(buffer.view().data), buffer.bytes(), 0);
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return -1;
  return static_cast<int64_t>(pages) * static_cast<int64_t>(page_size);
}

std::string gib(int64_t bytes) {
  return std::to_string(static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0)).substr(0, 6) + " GiB";
}

}  // namespace

void HostBuffer::AlignedDelete::operator()(unsigned char* p) const {
  ::operator delete[](p, std::align_val_t(kAlignment));
}

HostBuffer::HostBuffer(DType dtype, std::vector<int64_t> shape) {
  bytes_ = checked_bytes(shape, dtype_size(dtype));
  if (bytes_ < 0) {
    throw ValueError("problem too large: a tensor of shape " + shape_string(shape) +
                     " overflows int64 (allowed: at most 2^63 - 1 bytes per tensor)");
  }
  const size_t allocation = static_cast<size_t>(bytes_ > 0 ? bytes_ : 1);
  try {
    storage_.reset(static_cast<unsigned char*>(::operator new[](allocation, std::align_val_t(kAlignment))));
  } catch (const std::bad_alloc&) {
    throw RuntimeError("cannot allocate " + std::to_string(bytes_) + " bytes for a tensor of shape " +
                       shape_string(shape));
  }
  view_ = TensorView(storage_.get(), dtype, std::move(shape));
}

TensorView Workspace::input(DType dtype, const std::vector<int64_t>& shape, uint64_t seed) {
  HostBuffer host(dtype, shape);
  if (normal_)
    fill_normal(host.view(), seed);
  else
    fill_uniform(host.view(), seed);
  total_bytes_ += host.bytes();
  if (device_.kind == DeviceKind::cpu) {
    host_.push_back(std::move(host));
    return host_.back().view();
  }
  // Filled on the host (the same values as on the CPU), copied up; the host copy is dropped.
  device_buffers_.emplace_back(host.bytes(), device_.index);
  device_buffers_.back().upload(host.view().data, host.bytes());
  return device_buffers_.back().view(dtype, shape);
}

TensorView Workspace::output(DType dtype, const std::vector<int64_t>& shape) {
  if (device_.kind == DeviceKind::cpu) {
    host_.emplace_back(dtype, shape);
    fill_zero(host_.back());
    total_bytes_ += host_.back().bytes();
    return host_.back().view();
  }
  const int64_t bytes = checked_bytes(shape, dtype_size(dtype));
  if (bytes < 0) {
    throw ValueError("problem too large: a tensor of shape " + shape_string(shape) +
                     " overflows int64 (allowed: at most 2^63 - 1 bytes per tensor)");
  }
  device_buffers_.emplace_back(bytes, device_.index);
  device_buffers_.back().zero();
  total_bytes_ += bytes;
  return device_buffers_.back().view(dtype, shape);
}

Workspace::Workspace(const NaProblem& p, bool with_backward, bool normal_inputs, uint64_t seed)
    : device_(p.device), normal_(normal_inputs) {
  std::vector<int64_t> q_shape{p.batch}, k_shape{p.batch}, v_shape{p.batch}, o_shape{p.batch}, lse_shape{p.batch};
  for (int64_t extent : p.spatial) {
    for (auto* shape : {&q_shape, &k_shape, &v_shape, &o_shape, &lse_shape}) shape->push_back(extent);
  }
  q_shape.insert(q_shape.end(), {p.heads, p.head_dim});
  k_shape.insert(k_shape.end(), {p.heads_kv, p.head_dim});
  v_shape.insert(v_shape.end(), {p.heads_kv, p.head_dim_v});
  o_shape.insert(o_shape.end(), {p.heads, p.head_dim_v});
  lse_shape.push_back(p.heads);
  const std::vector<int64_t> add_k_shape{p.batch, p.additional_kv, p.heads_kv, p.head_dim};
  const std::vector<int64_t> add_v_shape{p.batch, p.additional_kv, p.heads_kv, p.head_dim_v};

  // Refuse before allocating what the machine cannot hold (overcommit would let it through and
  // the process would be killed while filling; a GPU allocation would fail half-way).
  std::vector<std::pair<const std::vector<int64_t>*, int64_t>> planned = {
      {&q_shape, dtype_size(p.dtype)}, {&k_shape, dtype_size(p.dtype)}, {&v_shape, dtype_size(p.dtype)},
      {&o_shape, dtype_size(p.dtype)}, {&lse_shape, 4}};
  if (p.additional_kv > 0) {
    planned.push_back({&add_k_shape, dtype_size(p.dtype)});
    planned.push_back({&add_v_shape, dtype_size(p.dtype)});
  }
  int64_t needed = 0;
  for (const auto& [shape, element_size] : planned) {
    const int64_t bytes = checked_bytes(*shape, element_size);
    if (bytes < 0 || __builtin_add_overflow(needed, with_backward ? 2 * bytes : bytes, &needed)) {
      throw ValueError("problem too large: the tensors overflow int64 bytes (" + p.describe() + ")");
    }
  }
  if (device_.kind == DeviceKind::cuda) {
    int64_t free_bytes = 0, total_memory = 0;
    cuda_memory_info(device_.index, free_bytes, total_memory);
    if (needed > free_bytes) {
      throw RuntimeError("problem too large: the tensors need " + gib(needed) + " but " + device_name(device_) +
                         " has " + gib(free_bytes) + " free (of " + gib(total_memory) + ")");
    }
  } else {
    const int64_t available = physical_memory_bytes();
    if (available > 0 && needed > available) {
      throw RuntimeError("problem too large: the tensors need " + gib(needed) + " but the machine has " +
                         gib(available) + " of memory");
    }
  }
  // The views point at the buffers' storage, which stays put when host_ / device_buffers_ grow.
  forward_.query = input(p.dtype, q_shape, seed);
  forward_.key = input(p.dtype, k_shape, seed + 1);
  forward_.value = input(p.dtype, v_shape, seed + 2);
  forward_.out = output(p.dtype, o_shape);
  forward_.lse = output(DType::f32, lse_shape);
  forward_.params = p.params;
  if (p.additional_kv > 0) {
    forward_.additional_keys = input(p.dtype, add_k_shape, seed + 3);
    forward_.additional_values = input(p.dtype, add_v_shape, seed + 4);
  }
  if (!with_backward) return;

  backward_.query = forward_.query;
  backward_.key = forward_.key;
  backward_.value = forward_.value;
  backward_.out = forward_.out;
  backward_.lse = *forward_.lse;
  backward_.dout = input(p.dtype, o_shape, seed + 5);
  backward_.dquery = output(p.dtype, q_shape);
  backward_.dkey = output(p.dtype, k_shape);
  backward_.dvalue = output(p.dtype, v_shape);
  backward_.params = p.params;
  if (p.additional_kv > 0) {
    backward_.additional_keys = forward_.additional_keys;
    backward_.additional_values = forward_.additional_values;
    backward_.dadditional_keys = output(p.dtype, add_k_shape);
    backward_.dadditional_values = output(p.dtype, add_v_shape);
  }
}

double forward_flops(const NaProblem& p) {
  double window_volume = 1;
  for (int a = 0; a < p.rank(); ++a) window_volume *= static_cast<double>(p.params.kernel_size[static_cast<size_t>(a)]);
  double tokens = 1;
  for (int64_t extent : p.spatial) tokens *= static_cast<double>(extent);
  return 2.0 * static_cast<double>(p.batch) * tokens * static_cast<double>(p.heads) *
         (window_volume + static_cast<double>(p.additional_kv)) *
         static_cast<double>(p.head_dim + p.head_dim_v);
}

}  // namespace nattn::cli::profile
