// What each planned backend can run (shared/spec/natten-reference.md §4.1, adjusted to our plan:
// GQA/MQA native everywhere, hopper-* forward only, flex-* only through the Python package).
#include <sstream>

#include "core/tables.h"

namespace nattn::detail {
namespace {

bool is_16bit(DType d) { return d == DType::f16 || d == DType::bf16; }

std::string dtype_reject(const char* backend, DType dtype, bool allow_f32) {
  if (dtype == DType::f64)
    return std::string(backend) + " does not support dtype fp64 (only the 'reference' backend runs fp64)";
  if (dtype == DType::f32 && allow_f32) return {};
  if (is_16bit(dtype)) return {};
  return std::string(backend) + " does not support dtype " + dtype_name(dtype) + " (supported: " +
         (allow_f32 ? "fp32, fp16, bf16" : "fp16, bf16") + ")";
}

std::string list(const std::vector<int64_t>& v) {
  std::string s;  // std::to_string, not an ostream: see src/core/problem.cpp
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "/" : "") + std::to_string(v[i]);
  return s;
}

struct Shape {  // the fields capability checks share between NA and FMHA problems
  Device device;
  int cc;
  DType dtype;
  int64_t head_dim, head_dim_v;
  bool requires_grad, deterministic;
};

Shape shape_of(const NaProblem& p) {
  return {p.device, p.compute_capability, p.dtype, p.head_dim, p.head_dim_v, p.requires_grad, p.deterministic};
}
Shape shape_of(const FmhaProblem& p) {
  return {p.device, p.compute_capability, p.dtype, p.head_dim, p.head_dim_v, p.requires_grad, p.deterministic};
}

// Checks common to NA and FMHA for one backend family.
std::string family_reject(const std::string& name, const Shape& s, Pass pass) {
  const bool cuda = s.device.kind == DeviceKind::cuda;
  const std::string cc = std::to_string(s.cc);
  if (name == "reference" || name == "cpu") {
    if (s.device.kind != DeviceKind::cpu)
      return name + " runs on CPU tensors only (got " + device_name(s.device) + ")";
    if (name == "reference" && s.dtype == DType::f64) return {};
    return dtype_reject(name.c_str(), s.dtype, true);
  }
  if (name.rfind("flex-", 0) == 0) {
    if (s.head_dim != s.head_dim_v)
      return name + " needs head_dim_v == head_dim (got " + std::to_string(s.head_dim_v) + " vs " +
             std::to_string(s.head_dim) + ")";
    const int64_t d = s.head_dim;
    if (d < 8 || d > 512 || (d & (d - 1)) != 0)
      return name + " needs a power-of-two head_dim in [8, 512] (got " + std::to_string(d) + ")";
    return dtype_reject(name.c_str(), s.dtype, true);
  }
  if (!cuda) return name + " runs on CUDA tensors only (got " + device_name(s.device) + ")";
  if (name.rfind("cutlass-", 0) == 0) {
    if (s.cc < 75) return name + " needs compute capability >= 75 (got " + cc + ")";
    for (int64_t d : {s.head_dim, s.head_dim_v}) {
      if (d % 8 != 0 || d < 8 || d > 256)
        return name + " needs head dims that are multiples of 8 in [8, 256] (got head_dim=" +
               std::to_string(s.head_dim) + ", head_dim_v=" + std::to_string(s.head_dim_v) + ")";
    }
    return dtype_reject(name.c_str(), s.dtype, true);
  }
  if (name.rfind("hopper-", 0) == 0) {
    if (s.cc != 90) return name + " needs compute capability 90 (got " + cc + ")";
    if (pass == Pass::backward) return name + " has no backward pass (use cutlass-*)";
    if (name == "hopper-fna") {  // head dims zero-padded to the kernel's 32 / 64 / 128 / 256 (na_fwd_sm90.h)
      for (int64_t d : {s.head_dim, s.head_dim_v})
        if (d % 8 != 0 || d < 8 || d > 256)
          return name + " needs head dims that are multiples of 8 in [8, 256] (got head_dim=" +
                 std::to_string(s.head_dim) + ", head_dim_v=" + std::to_string(s.head_dim_v) + ")";
      return dtype_reject(name.c_str(), s.dtype, false);
    }
    if (s.head_dim != s.head_dim_v)
      return name + " needs head_dim_v == head_dim (got " + std::to_string(s.head_dim_v) + " vs " +
             std::to_string(s.head_dim) + ")";
    const std::vector<int64_t> dims = {32, 64, 128, 256};
    bool ok = false;
    for (int64_t d : dims) ok = ok || d == s.head_dim;
    if (!ok) return name + " supports head_dim " + list(dims) + " (got " + std::to_string(s.head_dim) + ")";
    return dtype_reject(name.c_str(), s.dtype, false);
  }
  if (name.rfind("blackwell-", 0) == 0) {
    if (s.cc != 100 && s.cc != 103) return name + " needs compute capability 100 or 103 (got " + cc + ")";
    if (s.head_dim != s.head_dim_v)
      return name + " needs head_dim_v == head_dim (got " + std::to_string(s.head_dim_v) + " vs " +
             std::to_string(s.head_dim) + ")";
    if (s.head_dim % 8 != 0 || s.head_dim < 8 || s.head_dim > 128)
      return name + " needs a head_dim that is a multiple of 8 in [8, 128] (got " + std::to_string(s.head_dim) + ")";
    if (pass == Pass::backward && s.deterministic && name == "blackwell-fna")
      return name + " has no deterministic backward";
    return dtype_reject(name.c_str(), s.dtype, false);
  }
  return name + " is not a known backend";
}

}  // namespace

const std::vector<BackendSpec>& backend_specs() {
  static const std::vector<BackendSpec> specs = {
      {"blackwell-fna", true, false, DeviceKind::cuda, false, "SM100 TMA/tcgen05 fused NA (planned)"},
      {"blackwell-fmha", false, true, DeviceKind::cuda, false, "SM100 TMA/tcgen05 fused attention (planned)"},
      {"hopper-fna", true, false, DeviceKind::cuda, false, "SM90a TMA/wgmma warp-specialized fused NA, forward (straight from the caller's tensors; token-permuted for dilation, padded head dims, additional KV)"},
      {"hopper-fmha", false, true, DeviceKind::cuda, false, "SM90a TMA/wgmma warp-specialized fused attention, forward"},
      {"cutlass-fna", true, false, DeviceKind::cuda, false, "portable CUDA fused NA, forward and backward, SM75-SM89 and later"},
      {"cutlass-fmha", false, true, DeviceKind::cuda, false, "portable CUDA fused attention, forward and backward"},
      {"flex-fna", true, false, DeviceKind::cuda, true, "PyTorch flex_attention with the NA mask (Python package only)"},
      {"flex-fmha", false, true, DeviceKind::cuda, true, "PyTorch flex_attention (Python package only)"},
      {"cpu", true, true, DeviceKind::cpu, false, "multithreaded, vectorised CPU kernels over the exact window"},
      {"reference", true, true, DeviceKind::cpu, false, "naive fp64-accumulating oracle, every configuration"},
  };
  return specs;
}

const BackendSpec* find_spec(const std::string& name) {
  for (const auto& s : backend_specs())
    if (name == s.name) return &s;
  return nullptr;
}

std::string capability_reject(const BackendSpec& spec, const NaProblem& p, Pass pass) {
  if (!spec.supports_na) return std::string(spec.name) + " runs standard attention only, not neighborhood attention";
  const std::string name = spec.name;
  // Sub-domain NA (multi-device halos, issue 6): one rule for every backend but the oracle.
  // hopper-fna takes one in its direct mode (forward; its own reject names the remaining rules).
  if (p.sub_domain && name != "reference" && name != "cutlass-fna" && !(name == "hopper-fna" && pass == Pass::forward))
    return "sub-domain NA runs on the reference and cutlass-fna backends only (and on hopper-fna forward)";
  if (name.rfind("hopper-", 0) == 0 || name.rfind("blackwell-", 0) == 0 || name.rfind("cutlass-", 0) == 0 ||
      name.rfind("flex-", 0) == 0) {
    if (p.rank() < 1 || p.rank() > 3) return name + " supports 1-D, 2-D and 3-D NA";
  }
  return family_reject(name, shape_of(p), pass);
}

std::string capability_reject(const BackendSpec& spec, const FmhaProblem& p, Pass pass) {
  if (!spec.supports_fmha) return std::string(spec.name) + " runs neighborhood attention only, not standard attention";
  const std::string name = spec.name;
  if (name.rfind("flex-", 0) == 0 && p.is_causal) return name + " does not support causal attention";
  if (name.rfind("flex-", 0) == 0 && p.is_varlen) return name + " does not support variable-length attention";
  return family_reject(name, shape_of(p), pass);
}

}  // namespace nattn::detail
