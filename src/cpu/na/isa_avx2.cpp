// The cpu backend's kernels compiled for AVX2 + FMA + F16C: the portable vector layer,
// auto-vectorised with per-file flags (sources.cmake); only called after a run-time CPU check
// (driver.cpp).
// Only <cstdint> and isa.h are included here, so that nothing inline from the standard library or
// the rest of nattn is instantiated with this file's instruction set (isa.h explains why).
#include <cstdint>

#include "cpu/na/isa.h"

#if defined(__x86_64__) && defined(__AVX2__)

namespace nattn::detail::cpu::kernels_avx2 {

#include "cpu/na/vec_generic.inc"
#include "cpu/na/kernels.inc"
#include "cpu/na/executors.inc"

}  // namespace nattn::detail::cpu::kernels_avx2

namespace nattn::detail::cpu {

const IsaOps& isa_avx2() {
  static const IsaOps ops = {"avx2",
                             kernels_avx2::pack_impl,
                             kernels_avx2::pack_stats_impl,
                             kernels_avx2::exec_forward,
                             kernels_avx2::exec_dq,
                             kernels_avx2::exec_dkv,
                             kernels_avx2::prefetch_impl};
  return ops;
}

}  // namespace nattn::detail::cpu

#endif  // x86-64 built with the ISA flags (sources.cmake)
