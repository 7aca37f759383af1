// `nattn profile --optimize`: time every tile configuration and keep the fastest.
#include <cmath>
#include <iostream>
#include <limits>

#include "nattn/backends.h"
#include "nattn/cuda_device.h"
#include "nattn/errors.h"
#include "nattn/profile/report.h"
#include "nattn/profile/session.h"
#include "nattn/profile/workspace.h"

namespace nattn::cli::profile {
namespace {

// Timed runs per configuration: NATTEN times one; the median of three is steadier on a CPU.
constexpr int kTimedRunsPerConfig = 3;

bool is_empty_config(const TileConfig& c) {
  return c.q_tile.empty() && c.kv_tile.empty() && c.schedule == KernelSchedule::none;
}

// Candidates: the user's config if given, else every config of the backend; a backend without tile
// parameters has the single candidate "default" (nullopt).
std::vector<std::optional<TileConfig>> candidates(const std::optional<TileConfig>& requested,
                                                  const std::vector<TileConfig>& all) {
  std::vector<std::optional<TileConfig>> out;
  if (requested) {
    out.push_back(requested);
    return out;
  }
  for (const TileConfig& c : all) {
    if (is_empty_config(c)) out.push_back(std::nullopt);
    else out.push_back(c);
  }
  if (out.empty()) out.push_back(std::nullopt);
  return out;
}

// Times `run(config)` for each candidate; failures (a config the backend refuses, a failed kernel)
// are recorded. With `sync` (a GPU problem) each timed run counts the GPU work (time_call).
template <typename RunFn>
std::vector<ConfigTrial> search(const std::vector<std::optional<TileConfig>>& configs, int64_t warmup_steps,
                                bool sync, const char* phase, Progress& progress, RunFn run) {
  std::vector<ConfigTrial> trials;
  const int64_t total = static_cast<int64_t>(configs.size());
  for (int64_t i = 0; i < total; ++i) {
    ConfigTrial trial{configs[static_cast<size_t>(i)], std::numeric_limits<double>::quiet_NaN(), ""};
    try {
      for (int64_t step = 0; step < warmup_steps; ++step) run(trial.config);
      Samples samples;
      for (int r = 0; r < kTimedRunsPerConfig; ++r)
        samples.seconds.push_back(time_call([&] { run(trial.config); }, sync));
      trial.seconds = samples.median();
    } catch (const Error& e) {
      trial.error = e.what();
      // A kernel fault leaves the CUDA context unusable: every later configuration would fail
      // too, so stop here (this throws) unless the device is still fine.
      if (sync) cuda_synchronize("after the failed configuration " + config_text(trial.config));
    }
    trials.push_back(trial);
    progress.update(phase, i + 1, total);
  }
  progress.clear();
  return trials;
}

const ConfigTrial* best_of(const std::vector<ConfigTrial>& trials) {
  const ConfigTrial* best = nullptr;
  for (const ConfigTrial& t : trials) {
    if (t.error.empty() && std::isfinite(t.seconds) && (!best || t.seconds < best->seconds)) best = &t;
  }
  return best;
}

void print_trials(std::ostream& os, const std::vector<ConfigTrial>& trials, const ConfigTrial* best) {
  Table table({"#", "Configuration", "Runtime", "Note"}, {true, false, true, false});
  for (size_t i = 0; i < trials.size(); ++i) {
    const ConfigTrial& t = trials[i];
    table.add_row({std::to_string(i), config_text(t.config),
                   t.error.empty() ? format_time(t.seconds) : "failed: " + t.error, &t == best ? "best" : ""});
  }
  table.print(os);
}

std::string tile_text(const std::optional<TileConfig>& c, bool query) {
  const std::vector<int64_t>* tile = c ? (query ? &c->q_tile : &c->kv_tile) : nullptr;
  if (!tile || tile->empty()) return "(none)";
  return tuple_string(*tile);
}

}  // namespace

SearchResult run_optimize(Plan& plan, Progress& progress) {
  const ProfileOptions& o = plan.options;
  std::ostream& os = std::cout;
  Workspace workspace(plan.problem, o.backprop, o.normal_inputs);
  SearchResult result;

  const auto forward_candidates = candidates(plan.forward_config, get_configs(plan.forward_backend, plan.problem));
  os << "\nSearching " << forward_candidates.size() << " forward pass configs (each: " << o.optimize_warmup_steps
     << " warmup runs, median of " << kTimedRunsPerConfig << " timed runs)\n";
  RunOptions forward_options = run_options(plan, Pass::forward);
  const bool sync = on_cuda(plan.problem);
  result.forward = search(forward_candidates, o.optimize_warmup_steps, sync, "forward configs", progress,
                          [&](const std::optional<TileConfig>& config) {
                            forward_options.config = config;
                            na_forward(workspace.forward_args(), forward_options);
                          });
  const ConfigTrial* best_forward = best_of(result.forward);
  print_trials(os, result.forward, best_forward);
  if (!best_forward) throw RuntimeError("--optimize: every forward configuration failed (see the table above)");
  plan.forward_config = best_forward->config;
  plan.forward_config_used = resolved_config(plan.forward_backend, plan.problem, Pass::forward, plan.forward_config);

  if (o.backprop) {
    // The backward reads the output and LSE of one forward with the winning config.
    forward_options.config = plan.forward_config;
    na_forward(workspace.forward_args(), forward_options);
    const auto backward_candidates =
        candidates(plan.backward_config, get_bwd_configs(plan.backward_backend, plan.problem));
    os << "\nSearching " << backward_candidates.size() << " backward pass configs (each: "
       << o.optimize_warmup_steps << " warmup runs, median of " << kTimedRunsPerConfig << " timed runs)\n";
    RunOptions backward_options = run_options(plan, Pass::backward);
    result.backward = search(backward_candidates, o.optimize_warmup_steps, sync, "backward configs", progress,
                             [&](const std::optional<TileConfig>& config) {
                               backward_options.config = config;
                               na_backward(workspace.backward_args(), backward_options);
                             });
    const ConfigTrial* best_backward = best_of(result.backward);
    print_trials(os, result.backward, best_backward);
    if (!best_backward) throw RuntimeError("--optimize: every backward configuration failed (see the table above)");
    plan.backward_config = best_backward->config;
    plan.backward_config_used =
        resolved_config(plan.backward_backend, plan.problem, Pass::backward, plan.backward_config);
  }

  Table best({"Parameter", "Value"});
  best.add_title("");
  best.add_title("Best configuration");
  best.add_row({"backend", plan.forward_backend});
  best.add_row({"fmha_backend", o.fmha_backend.empty() ? "(unused)" : o.fmha_backend + " (unused)"});
  best.add_row({"device", device_name(plan.problem.device)});
  best.add_row({"q_tile_shape", tile_text(plan.forward_config_used, true)});
  best.add_row({"kv_tile_shape", tile_text(plan.forward_config_used, false)});
  if (plan.forward_config_used.schedule != KernelSchedule::none)
    best.add_row({"kernel_schedule", schedule_name(plan.forward_config_used.schedule)});
  if (o.backprop) {
    if (plan.backward_backend != plan.forward_backend) best.add_row({"backward_backend", plan.backward_backend});
    best.add_row({"backward_q_tile_shape", tile_text(plan.backward_config_used, true)});
    best.add_row({"backward_kv_tile_shape", tile_text(plan.backward_config_used, false)});
  }
  best.print(os);
  return result;
}

}  // namespace nattn::cli::profile
