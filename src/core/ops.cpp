// The public ops: validate, describe the problem, resolve backend and tile config, run.
#include "nattn/ops.h"

#include "core/backend.h"
#include "core/validation.h"
#include "cpu/ops/cpu_ops.h"
#include "nattn/backends.h"
#include "nattn/errors.h"

#ifdef NATTN_WITH_CUDA
#include "cuda/common/token_permute.h"
#endif

namespace nattn {
namespace {

// The device's compute capability (0 on the CPU, and for CUDA devices when CUDA is not built).
int compute_capability(const Device& device) {
  if (device.kind == DeviceKind::cpu) return 0;
#ifdef NATTN_WITH_CUDA
  return detail::cuda_compute_capability(device);
#else
  return 0;
#endif
}

template <typename Problem>
const detail::Backend& pick(Problem& problem, Pass pass, const RunOptions& options, TileConfig& config) {
  problem.compute_capability = compute_capability(problem.device);
  const std::string name = resolve_backend(options.backend, problem, pass);
  config = resolve_config(name, problem, pass, options.config);
  const detail::Backend* backend = detail::find_built_backend(name);
  if (!backend) throw RuntimeError("backend '" + name + "' was selected but is not built into this library");
  return *backend;
}


}  // namespace

NaProblem describe(const NaForwardArgs& args) { return detail::validate(args, RunOptions{}); }
NaProblem describe(const NaBackwardArgs& args) { return detail::validate(args, RunOptions{}); }
FmhaProblem describe(const FmhaForwardArgs& args) { return detail::validate(args, RunOptions{}); }
FmhaProblem describe(const FmhaBackwardArgs& args) { return detail::validate(args, RunOptions{}); }

void na_forward(const NaForwardArgs& args, const RunOptions& options) {
  NaProblem problem = detail::validate(args, options);
  TileConfig config;
  const detail::Backend& backend = pick(problem, Pass::forward, options, config);
  if (args.out.numel() == 0) return;  // zero-size batch or heads: nothing to compute
  NaForwardArgs resolved = args;
  resolved.scale = detail::resolve_scale(args.scale, problem.head_dim, "na_forward");
  backend.na_forward(resolved, config, options);
}

void na_backward(const NaBackwardArgs& args, const RunOptions& options) {
  NaProblem problem = detail::validate(args, options);
  problem.requires_grad = true;
  TileConfig config;
  const detail::Backend& backend = pick(problem, Pass::backward, options, config);
  if (args.query.numel() == 0 && args.key.numel() == 0) return;
  NaBackwardArgs resolved = args;
  resolved.scale = detail::resolve_scale(args.scale, problem.head_dim, "na_backward");
  backend.na_backward(resolved, config, options);
}

void fmha_forward(const FmhaForwardArgs& args, const RunOptions& options) {
  FmhaProblem problem = detail::validate(args, options);
  TileConfig config;
  const detail::Backend& backend = pick(problem, Pass::forward, options, config);
  if (args.out.numel() == 0) return;
  FmhaForwardArgs resolved = args;
  resolved.scale = detail::resolve_scale(args.scale, problem.head_dim, "fmha_forward");
  backend.fmha_forward(resolved, config, options);
}

void fmha_backward(const FmhaBackwardArgs& args, const RunOptions& options) {
  FmhaProblem problem = detail::validate(args, options);
  problem.requires_grad = true;
  TileConfig config;
  const detail::Backend& backend = pick(problem, Pass::backward, options, config);
  if (args.query.numel() == 0 && args.key.numel() == 0) return;
  FmhaBackwardArgs resolved = args;
  resolved.scale = detail::resolve_scale(args.scale, problem.head_dim, "fmha_backward");
  backend.fmha_backward(resolved, config, options);
}

// The helper ops run on the CPU only for now; validate_* reject other devices.
void merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses, TensorView out,
                      TensorView lse, const RunOptions& options) {
  detail::validate_merge(outputs, lses, out, lse);
  detail::cpu_merge_attentions(outputs, lses, out, lse, options.num_threads);
}

namespace {
// CPU tensors run on the CPU; CUDA tensors on the GPU kernels when this build has them.
void check_permute_device(const char* op, const TensorView& input) {
  if (input.device.kind == DeviceKind::cpu) return;
#ifndef NATTN_WITH_CUDA
  throw NotImplementedError(std::string(op) + ": device " + device_name(input.device) +
                            " is not supported; this nattn was built without CUDA (NATTN_ENABLE_CUDA=OFF)");
#endif
}
}  // namespace

void token_permute(const TensorView& input, TensorView output, const std::vector<int64_t>& tile_shape,
                   const std::vector<int64_t>& dilation, bool flip_tiled_dims, const RunOptions& options) {
  detail::validate_token_permute(input, output, tile_shape, dilation, /*inverse=*/false);
  check_permute_device("token_permute", input);
  const sem::Permutation perm = detail::make_token_permutation(input.shape, tile_shape, dilation, flip_tiled_dims);
#ifdef NATTN_WITH_CUDA
  if (input.device.kind == DeviceKind::cuda) return cuda::token_permute(input, output, perm, options.stream);
#endif
  (void)options;
  detail::cpu_token_permute(input, output, perm);
}

void token_unpermute(const TensorView& input, TensorView output, const std::vector<int64_t>& tile_shape,
                     const std::vector<int64_t>& dilation, bool flip_tiled_dims, const RunOptions& options) {
  detail::validate_token_permute(input, output, tile_shape, dilation, /*inverse=*/true);
  check_permute_device("token_unpermute", input);
  const sem::Permutation perm = detail::make_token_permutation(output.shape, tile_shape, dilation, flip_tiled_dims);
#ifdef NATTN_WITH_CUDA
  if (input.device.kind == DeviceKind::cuda) return cuda::token_unpermute(input, output, perm, options.stream);
#endif
  (void)options;
  detail::cpu_token_unpermute(input, output, perm);
}

}  // namespace nattn
