// The CUDA backends: cutlass-fna and cutlass-fmha (portable forward and backward kernels of
// src/cuda/sm80), and the device hooks the core needs (cuda_backend, cuda_compute_capability).
#include <cuda_runtime.h>

#include <string>

#include "core/backend.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm80/fna_bwd/fna_bwd_dispatch.h"
#include "cuda/sm80/fna_fwd/fna_fwd_dispatch.h"

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

}  // namespace

const Backend* cuda_backend(const std::string& name) {
  static const CutlassFna fna;
  static const CutlassFmha fmha;
  if (name == fna.name()) return &fna;
  if (name == fmha.name()) return &fmha;
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
