// Fast math shared by the portable (mma.sync) attention kernels.
#pragma once

#include <cuda_runtime.h>

namespace nattn::cuda {

// 2^x as one MUFU.EX2 (ex2.approx.ftz: results below 2^-126 flush to zero, 2^-inf = 0). exp2f
// compiles to the non-ftz form, which adds range-scaling instructions around the MUFU.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace nattn::cuda
