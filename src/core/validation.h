// Argument validation of the ops. Each function throws ValueError naming the argument, its value
// and what is allowed, and returns the problem description used for backend selection.
#pragma once

#include "nattn/ops.h"

namespace nattn::detail {

NaProblem validate(const NaForwardArgs& args, const RunOptions& options);
NaProblem validate(const NaBackwardArgs& args, const RunOptions& options);
FmhaProblem validate(const FmhaForwardArgs& args, const RunOptions& options);
FmhaProblem validate(const FmhaBackwardArgs& args, const RunOptions& options);

// The NA parameter rules against the spatial extents (k >= 2, s >= 1, d >= 1, k*d <= L, s <= k).
void validate_na_params(const NaParams& params, const std::vector<int64_t>& spatial, const char* op);

// The scale to use: args.scale, or head_dim^-0.5.
double resolve_scale(const std::optional<double>& scale, int64_t head_dim, const char* op);

}  // namespace nattn::detail
