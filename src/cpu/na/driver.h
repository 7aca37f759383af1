// Execution of a planned problem on the CPU: packing of lines, then the tasks of every unit in
// parallel (OpenMP), each task computed by exactly one thread with the same code whatever the thread
// count, so results are bit-identical for any number of threads.
#pragma once

#include <cstdint>

#include "cpu/na/isa.h"
#include "cpu/na/plan.h"

namespace nattn::detail::cpu {

struct OpTensors {
  TensorDesc q, k, v, out, lse, dout;
  TensorDesc dq, dk, dv;
  TensorDesc add_k, add_v, dadd_k, dadd_v;  // additional keys (NA), rank 1 over their N tokens
  bool has_lse = false;
};

struct OpConfig {
  int threads = 1;
  float scale = 1.f;
  int64_t dim = 0;
  int64_t dim_v = 0;
};

// The kernels for this CPU: AVX-512 when available, else AVX2, else the baseline. The environment
// variable NATTN_CPU_ISA (avx512 | avx2 | generic) asks for a narrower one, e.g. to test it.
const IsaOps& select_isa();

void run_forward(const Geometry& geo, const OpTensors& t, const OpConfig& cfg);
void run_backward(const Geometry& geo, const OpTensors& t, const OpConfig& cfg);

}  // namespace nattn::detail::cpu
