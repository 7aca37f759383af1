// Options of `nattn profile`: the options of NATTEN's profiler (shared/spec/natten-reference.md §6),
// with its quirks fixed (per-axis booleans are parsed, lone tiles and bad words are errors).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nattn/problem.h"
#include "nattn/tensor.h"

namespace nattn::cli::profile {

struct ProfileOptions {
  // Problem size.
  std::vector<int64_t> input_size;  // 1 to 3 entries
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t heads_kv = 0;   // 0 until resolved: = heads
  int64_t dim = 64;
  int64_t dim_value = 0;  // 0 until resolved: = dim

  // NA parameters, one entry per axis once resolved.
  std::vector<int64_t> window;
  std::vector<int64_t> stride;
  std::vector<int64_t> dilation;
  std::vector<bool> causal;

  // Run mode.
  DType dtype = DType::f32;
  bool backprop = false;
  int64_t additional_kv = 0;
  bool normal_inputs = false;  // --inputs normal: N(0, 1) inputs instead of uniform [-1, 1)

  // Backends and configs.
  std::string backend;       // "" = automatic
  std::string fmha_backend;  // "" = automatic
  std::string device;        // --device: "" = automatic, "cpu" or "cuda" (GPU 0)
  std::vector<int64_t> q_tile, kv_tile, backward_q_tile, backward_kv_tile;
  std::optional<KernelSchedule> schedule;

  // Timing.
  int64_t warmup_steps = 10;
  int64_t iterations = 10;
  int num_threads = 0;  // 0 = every hardware thread

  // Exploration.
  bool dry_run = false;
  int64_t max_configs = 10;  // 0 = all
  bool optimize = false;
  int64_t optimize_warmup_steps = 5;

  // Output.
  std::string json_path;
  bool quiet = false;        // no progress line and no backend-selection explanation
  bool show_progress = true;
  bool help = false;

  int rank() const { return static_cast<int>(input_size.size()); }
};

// Parses argv (argv[0] is "profile") and validates every rule that needs no backend: list lengths,
// window/stride/dilation against the input size, lone tiles, --dry-run with --optimize, known
// backend names. Throws nattn::ValueError naming the option, its value and what is allowed.
ProfileOptions parse_options(int argc, char** argv);

// The --help text.
std::string help_text();

// Where the tensors live: --device; else the device of --backend (cutlass-*, hopper-* and
// blackwell-* run on CUDA tensors, the others on the CPU); else cuda:0 when this nattn was built
// with CUDA and a CUDA device is present, else the CPU. Throws RuntimeError naming the option and
// its value when CUDA is asked for but this nattn was built without it or no device is present.
Device resolve_device(const ProfileOptions& options);

// The problem the options describe, on resolve_device(options) with that device's compute
// capability (0 on the CPU); requires_grad = backprop. Throws as resolve_device.
NaProblem make_problem(const ProfileOptions& options);

// True when the window covers the whole input on every axis and no axis is causal: plain
// self-attention, which NATTEN sends to its FMHA path.
bool is_self_attention(const ProfileOptions& options);

}  // namespace nattn::cli::profile
