// The cpu backend's kernels compiled for AVX-512 (F, BW, VL) with FMA and F16C; built with per-file
// flags (sources.cmake) and only called after a run-time CPU check (driver.cpp).
// Only <cstdint> and isa.h are included here, so that nothing inline from the standard library or
// the rest of nattn is instantiated with this file's instruction set (isa.h explains why).
// GCC 12's AVX-512 intrinsics initialise their "undefined" operands from themselves, which trips
// -W(maybe-)uninitialized wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <cstdint>

#include "cpu/na/isa.h"

#if defined(__x86_64__) && defined(__AVX512F__)

namespace nattn::detail::cpu::kernels_avx512 {

#include "cpu/na/vec_avx512.inc"
#include "cpu/na/kernels.inc"
#include "cpu/na/executors.inc"

}  // namespace nattn::detail::cpu::kernels_avx512

namespace nattn::detail::cpu {

const IsaOps& isa_avx512() {
  static const IsaOps ops = {"avx512",
                             kernels_avx512::pack_impl,
                             kernels_avx512::pack_stats_impl,
                             kernels_avx512::exec_forward,
                             kernels_avx512::exec_dq,
                             kernels_avx512::exec_dkv,
                             kernels_avx512::prefetch_impl};
  return ops;
}

}  // namespace nattn::detail::cpu

#endif  // x86-64 built with the ISA flags (sources.cmake)
