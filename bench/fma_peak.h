// Measured FP32 fused-multiply-add peak of this machine: independent FMA chains in registers, for
// the widest vector ISA the CPU supports, on one thread and on every requested thread (OpenMP).
#pragma once

#include <string>
#include <vector>

namespace nattn::bench {

struct PeakMeasurement {
  std::string isa;       // "avx512f", "avx2+fma", "sse2 (mul+add)"
  int lanes = 1;         // fp32 lanes per vector
  int threads = 1;
  double gflops = 0;     // best of several runs, 2 flops per lane per FMA
};

// The ISAs this CPU can run, widest first (checked with __builtin_cpu_supports).
std::vector<std::string> supported_isas();

// Peak of `isa` on `threads` OpenMP threads; each run lasts about `seconds`.
PeakMeasurement measure_peak(const std::string& isa, int threads, double seconds);

// The best ISA's peak on `threads` threads (all supported ISAs are measured; the fastest wins,
// since e.g. AMD Zen 4 runs 512-bit FMAs at half rate and AVX2 can tie).
PeakMeasurement measure_best_peak(int threads, double seconds, std::vector<PeakMeasurement>* all = nullptr);

}  // namespace nattn::bench
