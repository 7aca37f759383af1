// Allocation and random fill of the profile tensors.
#include "nattn/profile/workspace.h"

#include <unistd.h>

#include <cstdlib>
#include <new>
#include <string>

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

Workspace::Workspace(const NaProblem& p, bool with_backward, uint64_t seed) {
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
  // the process would be killed while filling).
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
  const int64_t available = physical_memory_bytes();
  if (available > 0 && needed > available) {
    throw RuntimeError("problem too large: the tensors need " + gib(needed) + " but the machine has " +
                       gib(available) + " of memory");
  }

  query_ = HostBuffer(p.dtype, q_shape);
  key_ = HostBuffer(p.dtype, k_shape);
  value_ = HostBuffer(p.dtype, v_shape);
  out_ = HostBuffer(p.dtype, o_shape);
  lse_ = HostBuffer(DType::f32, lse_shape);
  fill_uniform(query_.view(), seed);
  fill_uniform(key_.view(), seed + 1);
  fill_uniform(value_.view(), seed + 2);
  fill_zero(out_);
  fill_zero(lse_);

  forward_.query = query_.view();
  forward_.key = key_.view();
  forward_.value = value_.view();
  forward_.out = out_.view();
  forward_.lse = lse_.view();
  forward_.params = p.params;
  if (p.additional_kv > 0) {
    add_key_ = HostBuffer(p.dtype, add_k_shape);
    add_value_ = HostBuffer(p.dtype, add_v_shape);
    fill_uniform(add_key_.view(), seed + 3);
    fill_uniform(add_value_.view(), seed + 4);
    forward_.additional_keys = add_key_.view();
    forward_.additional_values = add_value_.view();
  }
  if (!with_backward) return;

  dout_ = HostBuffer(p.dtype, o_shape);
  dquery_ = HostBuffer(p.dtype, q_shape);
  dkey_ = HostBuffer(p.dtype, k_shape);
  dvalue_ = HostBuffer(p.dtype, v_shape);
  fill_uniform(dout_.view(), seed + 5);
  fill_zero(dquery_);
  fill_zero(dkey_);
  fill_zero(dvalue_);
  backward_.query = query_.view();
  backward_.key = key_.view();
  backward_.value = value_.view();
  backward_.out = out_.view();
  backward_.lse = lse_.view();
  backward_.dout = dout_.view();
  backward_.dquery = dquery_.view();
  backward_.dkey = dkey_.view();
  backward_.dvalue = dvalue_.view();
  backward_.params = p.params;
  if (p.additional_kv > 0) {
    dadd_key_ = HostBuffer(p.dtype, add_k_shape);
    dadd_value_ = HostBuffer(p.dtype, add_v_shape);
    fill_zero(dadd_key_);
    fill_zero(dadd_value_);
    backward_.additional_keys = add_key_.view();
    backward_.additional_values = add_value_.view();
    backward_.dadditional_keys = dadd_key_.view();
    backward_.dadditional_values = dadd_value_.view();
  }
}

int64_t Workspace::total_bytes() const {
  int64_t total = 0;
  for (const HostBuffer* b : {&query_, &key_, &value_, &out_, &lse_, &add_key_, &add_value_, &dout_,
                              &dquery_, &dkey_, &dvalue_, &dadd_key_, &dadd_value_}) {
    total += b->bytes();
  }
  return total;
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
