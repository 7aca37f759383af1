// Checking every CUDA runtime call: a failing call throws nattn::RuntimeError naming the call, the
// file:line and CUDA's error string. Host code only.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "nattn/errors.h"

namespace nattn::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw RuntimeError(std::string("CUDA error in ") + call + " at " + file + ":" + std::to_string(line) + ": " +
                     cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace nattn::cuda

#define NATTN_CUDA_CHECK(call)                                                    \
  do {                                                                            \
    const cudaError_t nattn_cuda_err_ = (call);                                   \
    if (nattn_cuda_err_ != cudaSuccess)                                           \
      ::nattn::cuda::throw_cuda_error(nattn_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors (the kernel itself runs asynchronously).
#define NATTN_CUDA_CHECK_LAUNCH(what) NATTN_CUDA_CHECK(cudaGetLastError())
