// Resolving and describing a profile plan: backends, tile configurations, the problem summary.
#include <thread>

#include "nattn/backends.h"
#include "nattn/cuda_device.h"
#include "nattn/errors.h"
#include "nattn/profile/report.h"
#include "nattn/profile/session.h"

namespace nattn::cli::profile {
namespace {

std::string choose_or_throw(const NaProblem& problem, Pass pass, std::string& explain) {
  const Selection selection = choose_backend(problem, pass);
  explain = selection.explain();
  if (selection.backend.empty()) {
    const bool gpu = problem.device.kind == DeviceKind::cuda;
    throw NotImplementedError(std::string("no backend can run this problem (") +
                              (pass == Pass::forward ? "forward" : "backward") + " pass):\n" + explain +
                              (gpu ? "\n(--device cpu runs it on the CPU backends)" : ""));
  }
  return selection.backend;
}

void print_indented(std::ostream& os, const std::string& text, const char* indent) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) os << indent << text.substr(start, end - start) << "\n";
    start = end + 1;
  }
}

}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::optional<TileConfig> requested_config(const ProfileOptions& o, const std::string& backend,
                                           const NaProblem& problem, Pass pass) {
  const bool forward = pass == Pass::forward;
  const std::vector<int64_t>& q = forward ? o.q_tile : o.backward_q_tile;
  const std::vector<int64_t>& kv = forward ? o.kv_tile : o.backward_kv_tile;
  // Schedules are a forward-only knob (Hopper-style backends).
  const bool has_schedule = forward && o.schedule.has_value();
  const KernelSchedule schedule = has_schedule ? *o.schedule : KernelSchedule::none;
  if (q.empty() && !has_schedule) return std::nullopt;
  TileConfig config;
  if (!q.empty()) {
    config.q_tile = q;
    config.kv_tile = kv;
  } else {
    // A schedule alone combines with the default tile shapes (as in NATTEN).
    const std::vector<TileConfig> defaults = get_configs(backend, problem);
    if (!defaults.empty()) config = defaults.front();
  }
  if (has_schedule) config.schedule = schedule;
  return config;
}

namespace {

// The pair rule of the tile options, which depends on the backend: a backend whose configurations
// have KV tiles (every CUDA backend) needs both options; one whose configurations are query blocks
// only (cpu) takes the query tile alone; one without tile parameters (reference) takes neither.
void check_tile_options(const ProfileOptions& o, const std::string& backend, const NaProblem& problem, Pass pass) {
  const bool forward = pass == Pass::forward;
  const std::string q_option = forward ? "--q-tile" : "--backward-q-tile";
  const std::string kv_option = forward ? "--kv-tile" : "--backward-kv-tile";
  const bool has_q = !(forward ? o.q_tile : o.backward_q_tile).empty();
  const bool has_kv = !(forward ? o.kv_tile : o.backward_kv_tile).empty();
  if (!has_q) return;
  const std::vector<TileConfig> configs = forward ? get_configs(backend, problem) : get_bwd_configs(backend, problem);
  bool any_q = false, any_kv = false;
  for (const TileConfig& c : configs) {
    any_q = any_q || !c.q_tile.empty();
    any_kv = any_kv || !c.kv_tile.empty();
  }
  if (!any_q) {
    throw ValueError(q_option + ": backend '" + backend + "' has no tile parameters (allowed: leave out " +
                     q_option + " and " + kv_option + ")");
  }
  if (any_kv && !has_kv) {
    throw ValueError(q_option + ": given without " + kv_option + ", but the configurations of backend '" +
                     backend + "' have both (allowed: both of the pair, or neither)");
  }
}

std::optional<TileConfig> checked_request(const ProfileOptions& o, const std::string& backend,
                                          const NaProblem& problem, Pass pass) {
  check_tile_options(o, backend, problem, pass);
  return requested_config(o, backend, problem, pass);
}

}  // namespace

TileConfig resolved_config(const std::string& backend, const NaProblem& problem, Pass pass,
                           const std::optional<TileConfig>& requested) {
  if (requested) {
    try {
      return resolve_config(backend, problem, pass, requested);
    } catch (const ValueError& e) {
      const char* options = pass == Pass::forward ? "--q-tile/--kv-tile/--schedule" : "--backward-q-tile/--backward-kv-tile";
      throw ValueError(std::string(options) + ": " + e.what() + "\n(nattn profile --dry-run --backend " +
                       backend + " lists them)");
    }
  }
  // Only for display: the default of a backend without tile parameters may be an empty config.
  try {
    return resolve_config(backend, problem, pass, std::nullopt);
  } catch (const Error&) {
    return TileConfig{};
  }
}

Plan make_plan(const ProfileOptions& o) {
  Plan plan;
  plan.options = o;
  plan.problem = make_problem(o);
  plan.automatic_backend = o.backend.empty();
  if (plan.automatic_backend) {
    plan.forward_backend = choose_or_throw(plan.problem, Pass::forward, plan.forward_explain);
    if (o.backprop) plan.backward_backend = choose_or_throw(plan.problem, Pass::backward, plan.backward_explain);
  } else {
    plan.forward_backend = resolve_backend(o.backend, plan.problem, Pass::forward);
    if (o.backprop) plan.backward_backend = resolve_backend(o.backend, plan.problem, Pass::backward);
  }
  plan.forward_config = checked_request(o, plan.forward_backend, plan.problem, Pass::forward);
  plan.forward_config_used = resolved_config(plan.forward_backend, plan.problem, Pass::forward, plan.forward_config);
  if (o.backprop) {
    plan.backward_config = checked_request(o, plan.backward_backend, plan.problem, Pass::backward);
    plan.backward_config_used =
        resolved_config(plan.backward_backend, plan.problem, Pass::backward, plan.backward_config);
  }
  return plan;
}

RunOptions run_options(const Plan& plan, Pass pass) {
  RunOptions run;
  run.backend = pass == Pass::forward ? plan.forward_backend : plan.backward_backend;
  run.config = pass == Pass::forward ? plan.forward_config : plan.backward_config;
  run.num_threads = plan.options.num_threads;
  return run;
}

std::string config_text(const std::optional<TileConfig>& config) {
  if (!config || (config->q_tile.empty() && config->kv_tile.empty() && config->schedule == KernelSchedule::none))
    return "(no tile parameters)";
  return config->describe();
}

bool on_cuda(const NaProblem& problem) { return problem.device.kind == DeviceKind::cuda; }

std::string device_text(const NaProblem& problem) {
  if (!on_cuda(problem)) return "cpu";
  if (problem.compute_capability <= 0) return device_name(problem.device);
  const int cc = problem.compute_capability;
  return device_name(problem.device) + " (" + cuda_device_name(problem.device.index) + ", compute capability " +
         std::to_string(cc / 10) + "." + std::to_string(cc % 10) + ")";
}

std::string timing_method(const NaProblem& problem) {
  if (!on_cuda(problem)) return "wall clock";
  return "wall clock, cudaDeviceSynchronize before and after each call";
}

void print_problem(std::ostream& os, const ProfileOptions& o, const NaProblem& problem) {
  std::string note, why;  // an automatic CPU choice in a CUDA build: why not the GPU
  if (!on_cuda(problem) && o.device.empty() && o.backend.empty() && cuda_built() && cuda_device_count(&why) == 0)
    note = " (no CUDA device: " + why + ")";
  os << "Problem: " << o.rank() << "-D neighborhood attention, device " << device_text(problem) << note << "\n"
     << "  input size " << tuple_string(o.input_size) << ", batch " << o.batch << ", heads " << o.heads
     << " (kv heads " << o.heads_kv << "), dim " << o.dim << " (value dim " << o.dim_value << "), dtype "
     << dtype_name(o.dtype) << "\n"
     << "  window " << tuple_string(o.window) << ", stride " << tuple_string(o.stride) << ", dilation "
     << tuple_string(o.dilation) << ", causal " << tuple_string(o.causal) << ", additional KV "
     << o.additional_kv << "\n";
  if (is_self_attention(o)) {
    os << "  note: the window covers the whole input on every axis and no axis is causal: this is\n"
          "        self-attention; it is profiled through the same NA op (NATTEN sends it to FMHA)\n";
  }
}

void print_plan(std::ostream& os, const Plan& plan) {
  const ProfileOptions& o = plan.options;
  print_problem(os, o, plan.problem);
  const char* how = plan.automatic_backend ? "automatic" : "requested";
  os << "Forward backend: " << plan.forward_backend << " (" << how << ")\n";
  if (plan.automatic_backend && !o.quiet) print_indented(os, plan.forward_explain, "  ");
  if (o.backprop) {
    os << "Backward backend: " << plan.backward_backend << " (" << how << ")\n";
    if (plan.automatic_backend && !o.quiet && plan.backward_explain != plan.forward_explain)
      print_indented(os, plan.backward_explain, "  ");
  }
  if (!o.fmha_backend.empty()) {
    os << "FMHA backend: " << o.fmha_backend << " (unused: " << kFmhaBackendUnused << ")\n";
  }
  auto origin = [&o](const std::optional<TileConfig>& requested) {
    return requested ? " (requested)" : (o.optimize ? " (default; --optimize searches below)" : " (default)");
  };
  os << "Forward config: " << config_text(plan.forward_config_used) << origin(plan.forward_config) << "\n";
  if (o.backprop) {
    os << "Backward config: " << config_text(plan.backward_config_used) << origin(plan.backward_config)
       << "\n";
  }
  if (!o.backprop && !o.backward_q_tile.empty())
    os << "Backward tiles: ignored (no --backprop)\n";
  if (!on_cuda(plan.problem)) {
    os << "Threads: "
       << (o.num_threads == 0 ? std::to_string(hardware_threads()) + " (every hardware thread)"
                              : std::to_string(o.num_threads))
       << "\n";
  }
  os << "Timing: " << o.warmup_steps << " warmup steps, median of " << o.iterations
     << " timed runs per operation (" << timing_method(plan.problem) << ")\n";
  os << "Inputs: " << (o.normal_inputs ? "standard normal" : "uniform in [-1, 1)") << "\n";
}

void write_problem_json(JsonWriter& json, const ProfileOptions& o) {
  json.key("problem").begin_object();
  json.key("rank").value(o.rank());
  json.key("input_size").value(o.input_size);
  json.key("batch").value(o.batch);
  json.key("heads").value(o.heads);
  json.key("heads_kv").value(o.heads_kv);
  json.key("dim").value(o.dim);
  json.key("dim_value").value(o.dim_value);
  json.key("window_size").value(o.window);
  json.key("stride").value(o.stride);
  json.key("dilation").value(o.dilation);
  json.key("causal").value(o.causal);
  json.key("additional_kv").value(o.additional_kv);
  json.key("dtype").value(dtype_name(o.dtype));
  json.key("inputs").value(o.normal_inputs ? "normal" : "uniform");
  json.key("backprop").value(o.backprop);
  json.key("self_attention").value(is_self_attention(o));
  json.end_object();
}

}  // namespace nattn::cli::profile
