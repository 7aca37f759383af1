// Normal mode of `nattn profile`: warmup, timed forward/backward runs, the results table and JSON.
#include <cmath>
#include <cstdio>
#include <fstream>

#include "nattn/cuda_device.h"
#include "nattn/errors.h"
#include "nattn/profile/report.h"
#include "nattn/profile/session.h"
#include "nattn/profile/workspace.h"
#include "nattn/version.h"

namespace nattn::cli::profile {
namespace {

constexpr double kBackwardFlopFactor = 2.5;  // backward counted as 2.5x the forward flops

double gflops(double flops, double seconds) {
  return seconds > 0 && std::isfinite(seconds) ? flops / seconds * 1e-9 : std::nan("");
}

std::string flop_text(double flops) {
  char text[64];
  if (flops >= 1e9) std::snprintf(text, sizeof(text), "%.3f GFLOP", flops * 1e-9);
  else std::snprintf(text, sizeof(text), "%.3f MFLOP", flops * 1e-6);
  return text;
}

std::string fixed3(double value) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof(text), "%.3f", value);
  return text;
}

const OperationResult* find_operation(const std::vector<OperationResult>& results, const std::string& name) {
  for (const OperationResult& r : results) {
    if (r.operation == name) return &r;
  }
  return nullptr;
}

void write_config(JsonWriter& json, const std::optional<TileConfig>& config) {
  if (!config) {
    json.null();
    return;
  }
  json.begin_object();
  json.key("q_tile").value(config->q_tile);
  json.key("kv_tile").value(config->kv_tile);
  json.key("schedule").value(schedule_name(config->schedule));
  json.end_object();
}

void write_trials(JsonWriter& json, const std::vector<ConfigTrial>& trials) {
  json.begin_array();
  for (const ConfigTrial& trial : trials) {
    json.begin_object();
    json.key("config");
    write_config(json, trial.config);
    json.key("median_us").value(trial.seconds * 1e6);
    if (!trial.error.empty()) json.key("error").value(trial.error);
    json.end_object();
  }
  json.end_array();
}

}  // namespace

std::vector<OperationResult> run_timed(const Plan& plan, Progress& progress) {
  const ProfileOptions& o = plan.options;
  Workspace workspace(plan.problem, o.backprop, o.normal_inputs);
  const RunOptions forward_options = run_options(plan, Pass::forward);
  const RunOptions backward_options = run_options(plan, Pass::backward);
  const bool sync = on_cuda(plan.problem);

  for (int64_t step = 0; step < o.warmup_steps; ++step) {
    na_forward(workspace.forward_args(), forward_options);
    if (o.backprop) na_backward(workspace.backward_args(), backward_options);
    progress.update("warmup", step + 1, o.warmup_steps);
  }
  if (sync) cuda_synchronize("after the warmup runs");

  OperationResult forward{plan.forward_backend, "NaForward", {}};
  OperationResult backward{plan.backward_backend, "NaBackward", {}};
  for (int64_t step = 0; step < o.iterations; ++step) {
    // The backward of each iteration uses the output and LSE of that iteration's forward.
    forward.samples.seconds.push_back(
        time_call([&] { na_forward(workspace.forward_args(), forward_options); }, sync));
    if (o.backprop) {
      backward.samples.seconds.push_back(
          time_call([&] { na_backward(workspace.backward_args(), backward_options); }, sync));
    }
    progress.update("timing", step + 1, o.iterations);
  }
  progress.clear();

  std::vector<OperationResult> results{forward};
  if (o.backprop) results.push_back(backward);
  return results;
}

void print_results(std::ostream& os, const Plan& plan, const std::vector<OperationResult>& results) {
  Table table({"Backend", "Operation", "# calls", "Runtime"}, {false, false, true, true});
  table.add_title("");
  table.add_title("Profiler results");
  double total = 0;
  int64_t calls = 0;
  for (const OperationResult& r : results) {
    table.add_row({r.backend, r.operation, std::to_string(r.samples.seconds.size()), format_time(r.samples.median())});
    total += r.samples.median();
    calls += static_cast<int64_t>(r.samples.seconds.size());
  }
  table.add_footer({"", "Total", std::to_string(calls), format_time(total)});
  table.print(os);
  os << "Runtime: median of the timed calls of each operation (" << timing_method(plan.problem)
     << "); Total: sum of the medians.\n";
  for (const OperationResult& r : results) {
    os << "  " << r.operation << ": min " << format_time(r.samples.min()) << ", max "
       << format_time(r.samples.max()) << "\n";
  }

  const double flops = forward_flops(plan.problem);
  const bool causal = [&] {
    for (bool c : plan.options.causal) if (c) return true;
    return false;
  }();
  const char* bound = causal ? " (an upper bound: causal windows near the start hold fewer keys)" : "";
  if (const OperationResult* f = find_operation(results, "NaForward")) {
    os << "Effective forward throughput: " << fixed3(gflops(flops, f->samples.median())) << " GFLOP/s"
       << bound << "\n"
       << "  counting 2 * B * N * H * (window volume + additional KV) * (D + Dv) = "
       << flop_text(flops) << " per forward\n";
  }
  if (const OperationResult* b = find_operation(results, "NaBackward")) {
    os << "Effective backward throughput: " << fixed3(gflops(kBackwardFlopFactor * flops, b->samples.median()))
       << " GFLOP/s (backward counted as 2.5x the forward flops)" << bound << "\n";
  }
}

void write_json(const std::string& path, const Plan& plan, const std::vector<OperationResult>& results,
                const std::optional<SearchResult>& search) {
  std::ofstream file(path);
  if (!file) throw RuntimeError("--json: cannot open '" + path + "' for writing");
  const ProfileOptions& o = plan.options;
  JsonWriter json(file);
  json.begin_object();
  json.key("tool").value("nattn profile");
  json.key("version").value(NATTN_VERSION_STRING);
  json.key("mode").value(o.optimize ? "optimize" : "profile");
  json.key("device").value(device_name(plan.problem.device));
  if (on_cuda(plan.problem)) {
    json.key("device_name").value(cuda_device_name(plan.problem.device.index));
    json.key("compute_capability").value(plan.problem.compute_capability);
  }
  json.key("timing").value(timing_method(plan.problem));

  write_problem_json(json, o);

  json.key("backend").begin_object();
  json.key("forward").value(plan.forward_backend);
  json.key("backward");
  if (o.backprop) json.value(plan.backward_backend); else json.null();
  json.key("selection").value(plan.automatic_backend ? "automatic" : "requested");
  json.key("explain").value(plan.forward_explain);
  json.key("fmha_backend");
  if (o.fmha_backend.empty()) json.null(); else json.value(o.fmha_backend);
  json.end_object();

  json.key("configs").begin_object();
  json.key("forward");
  write_config(json, plan.forward_config_used);
  json.key("backward");
  if (o.backprop) write_config(json, plan.backward_config_used); else json.null();
  json.end_object();

  json.key("threads").value(o.num_threads == 0 ? hardware_threads() : o.num_threads);
  json.key("warmup_steps").value(o.warmup_steps);
  json.key("iterations").value(o.iterations);

  json.key("operations").begin_array();
  double total = 0;
  for (const OperationResult& r : results) {
    std::vector<double> samples_us;
    for (double s : r.samples.seconds) samples_us.push_back(s * 1e6);
    json.begin_object();
    json.key("backend").value(r.backend);
    json.key("operation").value(r.operation);
    json.key("calls").value(static_cast<int64_t>(r.samples.seconds.size()));
    json.key("median_us").value(r.samples.median() * 1e6);
    json.key("min_us").value(r.samples.min() * 1e6);
    json.key("max_us").value(r.samples.max() * 1e6);
    json.key("samples_us").value(samples_us);
    json.end_object();
    total += r.samples.median();
  }
  json.end_array();
  json.key("total_median_us").value(total * 1e6);

  const double flops = forward_flops(plan.problem);
  bool causal = false;
  for (bool c : o.causal) causal = causal || c;
  json.key("gflops").begin_object();
  json.key("forward_flops").value(flops);
  json.key("upper_bound").value(causal);
  const OperationResult* f = find_operation(results, "NaForward");
  json.key("forward").value(f ? gflops(flops, f->samples.median()) : std::nan(""));
  const OperationResult* b = find_operation(results, "NaBackward");
  json.key("backward");
  if (b) json.value(gflops(kBackwardFlopFactor * flops, b->samples.median())); else json.null();
  json.key("backward_flop_factor").value(kBackwardFlopFactor);
  json.end_object();

  if (search) {
    json.key("search").begin_object();
    json.key("forward");
    write_trials(json, search->forward);
    json.key("backward");
    write_trials(json, search->backward);
    json.end_object();
  }
  json.end_object();
  file.flush();
  if (!file) throw RuntimeError("--json: writing '" + path + "' failed");
}

}  // namespace nattn::cli::profile
