// Host side of the portable forward kernels: argument packing, kernel choice and launch.
#pragma once

#include <string>

#include "nattn/ops.h"

namespace nattn::cuda::fna {

// Why the compiled forward kernels cannot run a problem of this shape on compute capability `cc`
// ("" if they can): dtype/head dim not instantiated, shared memory beyond the chip's limit, grid
// limits. `backend` names the backend in the message.
std::string forward_reject(const std::string& backend, DType dtype, int64_t head_dim, int64_t head_dim_v,
                           int64_t batch, int64_t heads, int cc);

void na_forward(const NaForwardArgs& args, const TileConfig& config, const RunOptions& options);
void fmha_forward(const FmhaForwardArgs& args, const TileConfig& config, const RunOptions& options);

// "simt" or "mma": the kernel family a problem runs on (for tests and the README).
const char* forward_kernel_kind(DType dtype, int cc);

}  // namespace nattn::cuda::fna
