// What one `nattn profile` invocation resolves and runs: the plan (problem, backends, configs),
// the three modes (profile, dry run, optimize) and their output.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "nattn/ops.h"
#include "nattn/problem.h"
#include "nattn/profile/options.h"
#include "nattn/profile/timing.h"

namespace nattn::cli::profile {

class JsonWriter;

// The resolved problem, backends and configurations of a run.
struct Plan {
  ProfileOptions options;
  NaProblem problem;
  bool automatic_backend = true;
  std::string forward_backend;
  std::string backward_backend;  // empty without --backprop
  std::string forward_explain;   // Selection::explain() when automatic
  std::string backward_explain;
  // Configs passed to the ops (nullopt = the backend's default), and what they resolve to.
  std::optional<TileConfig> forward_config, backward_config;
  TileConfig forward_config_used, backward_config_used;
};

// Resolves backends (explicit ones are checked with resolve_backend; automatic ones with
// choose_backend) and validates user tiles with resolve_config. Throws nattn errors.
Plan make_plan(const ProfileOptions& options);

// The config the user asked for in `pass` (tiles and/or schedule), or nullopt.
std::optional<TileConfig> requested_config(const ProfileOptions& options, const std::string& backend,
                                           const NaProblem& problem, Pass pass);

// Resolve `requested` for display and for the ops; see make_plan.
TileConfig resolved_config(const std::string& backend, const NaProblem& problem, Pass pass,
                           const std::optional<TileConfig>& requested);

struct OperationResult {
  std::string backend;
  std::string operation;  // "NaForward", "NaBackward"
  Samples samples;
};

struct ConfigTrial {
  std::optional<TileConfig> config;  // nullopt = the backend's default (no tile parameters)
  double seconds = 0;                // median; NaN when it failed
  std::string error;                 // why it failed, or ""
};

struct SearchResult {
  std::vector<ConfigTrial> forward, backward;
};

// Why --fmha-backend is unused.
inline constexpr const char* kFmhaBackendUnused = "nattn's NA backends handle additional KV inside the NA op";

// Where the problem runs: "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3, compute capability 9.0)".
bool on_cuda(const NaProblem& problem);
std::string device_text(const NaProblem& problem);
// How each timed call is measured (the footnote of the results and the JSON "timing" field).
std::string timing_method(const NaProblem& problem);

// The problem summary printed above every result.
void print_problem(std::ostream& os, const ProfileOptions& options, const NaProblem& problem);
// The "problem" object of the --json output (profile, optimize and dry run alike).
void write_problem_json(JsonWriter& json, const ProfileOptions& options);
void print_plan(std::ostream& os, const Plan& plan);
std::string config_text(const std::optional<TileConfig>& config);

// Modes. Each returns the exit code or throws nattn errors.
int run_dry_run(const ProfileOptions& options);
SearchResult run_optimize(Plan& plan, Progress& progress);  // updates the plan's configs
std::vector<OperationResult> run_timed(const Plan& plan, Progress& progress);

void print_results(std::ostream& os, const Plan& plan, const std::vector<OperationResult>& results);
void write_json(const std::string& path, const Plan& plan, const std::vector<OperationResult>& results,
                const std::optional<SearchResult>& search);

// RunOptions for the ops of a plan.
RunOptions run_options(const Plan& plan, Pass pass);

int hardware_threads();

}  // namespace nattn::cli::profile
