// The cpu backend's kernels compiled for the baseline ISA: the portable vector layer with no extra flags; runs anywhere.
// Only <cstdint> and isa.h are included here, so that nothing inline from the standard library or
// the rest of nattn is instantiated with this file's instruction set (isa.h explains why).
#include <cstdint>

#include "cpu/na/isa.h"

namespace nattn::detail::cpu::kernels_generic {

#include "cpu/na/vec_generic.inc"
#include "cpu/na/kernels.inc"
#include "cpu/na/executors.inc"

}  // namespace nattn::detail::cpu::kernels_generic

namespace nattn::detail::cpu {

const IsaOps& isa_generic() {
  static const IsaOps ops = {"generic",
                             kernels_generic::pack_impl,
                             kernels_generic::pack_stats_impl,
                             kernels_generic::exec_forward,
                             kernels_generic::exec_dq,
                             kernels_generic::exec_dkv,
                             kernels_generic::prefetch_impl};
  return ops;
}

}  // namespace nattn::detail::cpu
