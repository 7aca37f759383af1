// Host-side size of the forward kernels' NA walks: over all CTAs of a launch, the largest number of
// walk positions (KV tiles of the KV box, then the additional-KV tiles). The tensor-core kernel
// lists a CTA's tiles in shared memory; the launch picks the kernel that lists the whole walk at
// once when the largest walk fits the list (fna_fwd_mma.cuh).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/sm80/fna_fwd/params.h"
#include "nattn/semantics.h"

namespace nattn::cuda::fna {

// The most walk positions of one CTA of an NA launch (params p). The CTAs are every (dilation
// group, Q tile) per axis (make_ctx, fna_common.cuh), so a CTA's KV box is a product of independent
// per-axis boxes and the largest walk is the product of the per-axis maxima, plus the additional-KV
// tiles. Q tiles with no query in a group launch no walk.
inline int64_t max_walk_positions(const FwdParams& p) {
  int64_t phase_a = 1;
  for (int i = 0; i < 3; ++i) {
    const sem::Axis ax{p.extent[i], p.kernel[i], p.stride[i], p.dilation[i], p.causal[i] != 0};
    int64_t most = 0;
    for (int64_t g = 0; g < p.dilation[i]; ++g) {
      const int64_t lg = sem::group_extent(p.extent[i], p.dilation[i], g);
      const int64_t jlo = sem::group_begin(p.q_origin[i], p.dilation[i], g);
      const int64_t jhi = sem::group_begin(p.q_origin[i] + p.q_extent[i], p.dilation[i], g);
      for (int64_t t = 0; t < p.q_tiles[i]; ++t) {
        const int64_t qlo = jlo + t * p.q_tile[i];
        const int64_t qhi = std::min(qlo + p.q_tile[i], jhi);
        if (qlo >= qhi) continue;
        const sem::Range box = sem::kv_box(sem::Range{qlo, qhi}, lg, ax);
        most = std::max(most, sem::ceil_div(box.size(), p.kv_tile[i]));
      }
    }
    phase_a *= most;
  }
  return phase_a + sem::ceil_div(p.num_extra, kBlockN);
}

}  // namespace nattn::cuda::fna
