// Host side of the portable backward kernels: argument packing, kernel choice and launch.
#pragma once

#include <string>

#include "nattn/ops.h"

namespace nattn::cuda::fna_bwd {

// Why the compiled backward kernels cannot run a problem of this shape on compute capability `cc`
// ("" if they can). `backend` names the backend in the message.
std::string backward_reject(const std::string& backend, DType dtype, int64_t head_dim, int64_t head_dim_v,
                            int64_t batch, int64_t heads, int cc);

void na_backward(const NaBackwardArgs& args, const TileConfig& config, const RunOptions& options);
void fmha_backward(const FmhaBackwardArgs& args, const TileConfig& config, const RunOptions& options);

// "simt" or "mma": the kernel family a backward of this dtype runs on.
const char* backward_kernel_kind(DType dtype, int cc);

}  // namespace nattn::cuda::fna_bwd
