// The CUDA backends: cutlass-fna and cutlass-fmha (portable forward and backward kernels of
// src/cuda/sm80), hopper-fna / hopper-fmha (sm_90a forwards of src/cuda/sm90, when compiled), and the device
// hooks the core needs (cuda_backend, cuda_compute_capability).
#include <cuda_runtime.h>

#include <optional>
#include <string>

#include "core/backend.h"
#include "core/log.h"
#include "core/validation.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm80/fna_bwd/fna_bwd_dispatch.h"
#include "cuda/sm80/fna_fwd/fna_fwd_dispatch.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"
#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"

namespace nattn::detail {

namespace {

class CutlassFna final : public Backend {
 public:
  const char* name() const override { return "cutlass-fna"; }
  std::string reject(const NaProblem& p, Pass pass) const override {
    if (pass == Pass::backward)
      return cuda::fna_bwd::backward_reject(name(), p.dtype, p.head_dim, p.head_dim_v, p.batch, p.heads,
                                            p.compute_capability);
    return cuda::fna::forward_reject(name(), p.dtype, p.head_dim, p.head_dim_v, p.batch, p.heads,
                                     p.compute_capability);
  }
  void na_forward(const NaForwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    cuda::fna::na_forward(args, config, options);
  }
  void na_backward(const NaBackwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    cuda::fna_bwd::na_backward(args, config, options);
  }
};

class CutlassFmha final : public Backend {
 public:
  const char* name() const override { return "cutlass-fmha"; }
  std::string reject(const FmhaProblem& p, Pass pass) const override {
    if (pass == Pass::backward)
      return cuda::fna_bwd::backward_reject(name(), p.dtype, p.head_dim, p.head_dim_v, p.batch, p.heads,
                                            p.compute_capability);
    return cuda::fna::forward_reject(name(), p.dtype, p.head_dim, p.head_dim_v, p.batch, p.heads,
                                     p.compute_capability);
  }
  void fmha_forward(const FmhaForwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    cuda::fna::fmha_forward(args, config, options);
  }
  void fmha_backward(const FmhaBackwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    cuda::fna_bwd::fmha_backward(args, config, options);
  }
};

// Forward only (the capability table rejects the backward pass: training runs its backward on
// cutlass-fmha from this forward's output and LSE).
class HopperFmha final : public Backend {
 public:
  const char* name() const override { return "hopper-fmha"; }
  std::string reject(const FmhaProblem& p, Pass) const override {
    if (!p.scale_positive) return std::string(name()) + " needs a softmax scale > 0 (use cutlass-fmha)";
    if (!cuda::sm90::fmha_forward_compiled(p.dtype, static_cast<int>(p.head_dim)))
      return std::string(name()) + ": no kernel for dtype " + dtype_name(p.dtype) + " and head dim " +
             std::to_string(p.head_dim) + " in this build (compiled: fp16/bf16 x 32/64/128/256 filtered by " +
             "NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS, with 90 in NATTN_CUDA_ARCHS)";
    if (p.heads > 65535 || p.batch > 65535)
      return std::string(name()) + " supports at most 65535 heads and 65535 batch entries (got heads=" +
             std::to_string(p.heads) + ", batch=" + std::to_string(p.batch) + ")";
    return {};
  }
  void fmha_forward(const FmhaForwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    cuda::sm90::fmha_forward(args, static_cast<cudaStream_t>(options.stream),
                             config.schedule != KernelSchedule::cooperative);
  }
};

// Forward only, like hopper-fmha: token-permuted tiles (src/cuda/sm90/fmha_fwd/na_fwd_sm90.h), head
// dims multiples of 8 up to 128 zero-padded to the kernel's, additional KV through hopper-fmha and
// an LSE merge. The problem-level rules are na_forward's own (na_forward_reject), so the registry
// and the op agree.
class HopperFna final : public Backend {
 public:
  const char* name() const override { return "hopper-fna"; }
  std::string reject(const NaProblem& p, Pass) const override {
    if (!p.scale_positive) return std::string(name()) + " needs a softmax scale > 0 (use cutlass-fna)";
    return cuda::sm90::na_forward_reject(p);
  }
  void na_forward(const NaForwardArgs& args, const TileConfig& config, const RunOptions& options) const override {
    // A sub-domain runs in the direct mode only; the registry sees the problem, not the tensors, so
    // a layout the direct mode cannot read (strides, alignment) runs on cutlass-fna instead.
    if (args.sub_domain) {
      const std::string blocker = cuda::sm90::na_forward_direct_blocker(args);
      if (!blocker.empty()) {
        log_once(LogLevel::warning, "hopper-fna sub-domain fallback",
                 "hopper-fna: a sub-domain forward whose tensors the direct mode cannot read (" + blocker +
                     ") runs on cutlass-fna (slower); logged once");
        NaProblem p = validate(args, options);
        p.compute_capability = cuda_compute_capability(args.query.device);
        cuda::fna::na_forward(args, resolve_config("cutlass-fna", p, Pass::forward, std::nullopt), options);
        return;
      }
    }
    cuda::sm90::na_forward(args, config, static_cast<cudaStream_t>(options.stream));
  }
};

// Built when at least one instantiation is compiled (NATTN_CUDA_ARCHS holds 90).
bool hopper_built(bool na) {
  for (DType t : {DType::f16, DType::bf16})
    for (int hd : {32, 64, 128, 256})
      if (na ? cuda::sm90::na_forward_compiled(t, hd) : cuda::sm90::fmha_forward_compiled(t, hd)) return true;
  return false;
}

}  // namespace

const Backend* cuda_backend(const std::string& name) {
  static const CutlassFna fna;
  static const CutlassFmha fmha;
  static const HopperFna hopper_fna;
  static const HopperFmha hopper_fmha;
  if (name == fna.name()) return &fna;
  if (name == fmha.name()) return &fmha;
  if (name == hopper_fna.name()) return hopper_built(true) ? &hopper_fna : nullptr;
  if (name == hopper_fmha.name()) return hopper_built(false) ? &hopper_fmha : nullptr;
  return nullptr;
}

int cuda_compute_capability(const Device& device) {
  if (device.kind != DeviceKind::cuda)
    throw RuntimeError("cuda_compute_capability: " + device_name(device) + " is not a CUDA device");
  try {
    return cuda::device_props(device.index).cc;
  } catch (const RuntimeError& e) {
    throw RuntimeError("cannot query " + device_name(device) + ": " + e.what());
  }
}

}  // namespace nattn::detail
