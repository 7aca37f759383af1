// Internal interface every backend implements. Ops validate arguments, fill in the scale and pick
// the tile config before calling a backend, so backends receive checked, complete arguments:
// `args.scale` is always set, shapes/dtypes/devices are consistent, head dims are contiguous.
#pragma once

#include <string>

#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn::detail {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Why this backend cannot run the problem, beyond the capability table of src/core/capabilities.cpp
  // (which the registry checks first). "" when it can.
  virtual std::string reject(const NaProblem&, Pass) const { return {}; }
  virtual std::string reject(const FmhaProblem&, Pass) const { return {}; }

  virtual void na_forward(const NaForwardArgs&, const TileConfig&, const RunOptions&) const {
    throw NotImplementedError(std::string(name()) + " does not implement na_forward");
  }
  virtual void na_backward(const NaBackwardArgs&, const TileConfig&, const RunOptions&) const {
    throw NotImplementedError(std::string(name()) + " does not implement na_backward");
  }
  virtual void fmha_forward(const FmhaForwardArgs&, const TileConfig&, const RunOptions&) const {
    throw NotImplementedError(std::string(name()) + " does not implement fmha_forward");
  }
  virtual void fmha_backward(const FmhaBackwardArgs&, const TileConfig&, const RunOptions&) const {
    throw NotImplementedError(std::string(name()) + " does not implement fmha_backward");
  }
};

// Built backends (defined by each backend family; registered explicitly by the registry because
// static linking drops static initialisers).
const Backend& reference_backend();  // src/cpu/reference
const Backend& cpu_backend();        // src/cpu/na

#ifdef NATTN_WITH_CUDA
// CUDA backends (src/cuda): the backend object of a built CUDA backend, or nullptr.
const Backend* cuda_backend(const std::string& name);
// Compute capability of a CUDA device (e.g. 90), or throws RuntimeError naming the device.
int cuda_compute_capability(const Device& device);
#endif

// The backend object of a built backend, or nullptr.
const Backend* find_built_backend(const std::string& name);

}  // namespace nattn::detail
