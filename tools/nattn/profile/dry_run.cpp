// `nattn profile --dry-run`: which backends can run the problem, and their tile configurations.
#include <fstream>
#include <iostream>

#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/profile/report.h"
#include "nattn/profile/session.h"
#include "nattn/version.h"

namespace nattn::cli::profile {
namespace {

struct BackendListing {
  std::string name;
  std::string reason;           // "" = compatible (forward pass)
  std::string backward_reason;  // "" = the backward pass is supported too
  std::vector<TileConfig> forward_configs, backward_configs;
};

bool has_tiles(const std::vector<TileConfig>& configs) {
  for (const TileConfig& c : configs) {
    if (!c.q_tile.empty() || !c.kv_tile.empty() || c.schedule != KernelSchedule::none) return true;
  }
  return false;
}

void print_config_table(std::ostream& os, const std::string& title, const std::vector<TileConfig>& configs,
                        int64_t max_configs) {
  os << title << "\n";
  if (!has_tiles(configs)) {
    os << "  (no tile configurations: this backend has no tile parameters)\n";
    return;
  }
  bool any_schedule = false;
  for (const TileConfig& c : configs) any_schedule = any_schedule || c.schedule != KernelSchedule::none;
  std::vector<std::string> header{"#", "q_tile", "kv_tile"};
  if (any_schedule) header.push_back("schedule");
  Table table(header, {true, false, false, false});
  const size_t shown = max_configs > 0 && static_cast<int64_t>(configs.size()) > max_configs
                           ? static_cast<size_t>(max_configs)
                           : configs.size();
  for (size_t i = 0; i < shown; ++i) {
    auto tile = [](const std::vector<int64_t>& t) { return t.empty() ? std::string("-") : tuple_string(t); };
    std::vector<std::string> row{std::to_string(i), tile(configs[i].q_tile), tile(configs[i].kv_tile)};
    if (any_schedule) row.push_back(schedule_name(configs[i].schedule));
    table.add_row(row);
  }
  if (shown < configs.size()) table.add_row(std::vector<std::string>(header.size(), "..."));
  table.print(os);
  os << "  " << configs.size() << " configuration" << (configs.size() == 1 ? "" : "s") << "; #0 is the default";
  if (shown < configs.size()) os << "; " << configs.size() - shown << " not shown (--max-configs 0 lists all)";
  os << "\n";
}

void write_configs(JsonWriter& json, const std::vector<TileConfig>& configs) {
  json.begin_array();
  for (const TileConfig& c : configs) {
    json.begin_object();
    json.key("q_tile").value(c.q_tile);
    json.key("kv_tile").value(c.kv_tile);
    json.key("schedule").value(schedule_name(c.schedule));
    json.end_object();
  }
  json.end_array();
}

void write_dry_run_json(const std::string& path, const ProfileOptions& o, const NaProblem& problem,
                        const std::vector<BackendListing>& listings) {
  std::ofstream file(path);
  if (!file) throw RuntimeError("--json: cannot open '" + path + "' for writing");
  JsonWriter json(file);
  json.begin_object();
  json.key("tool").value("nattn profile");
  json.key("version").value(NATTN_VERSION_STRING);
  json.key("mode").value("dry-run");
  json.key("device").value(device_name(problem.device));
  write_problem_json(json, o);
  json.key("backends").begin_array();
  for (const BackendListing& l : listings) {
    json.begin_object();
    json.key("name").value(l.name);
    json.key("compatible").value(l.reason.empty());
    if (!l.reason.empty()) {
      json.key("reason").value(l.reason);
    } else {
      json.key("forward_configs");
      write_configs(json, l.forward_configs);
      json.key("backward_supported").value(l.backward_reason.empty());
      if (!l.backward_reason.empty()) json.key("backward_reason").value(l.backward_reason);
      json.key("backward_configs");
      write_configs(json, l.backward_configs);
    }
    json.end_object();
  }
  json.end_array();
  json.end_object();
  file.flush();
  if (!file) throw RuntimeError("--json: writing '" + path + "' failed");
}

}  // namespace

int run_dry_run(const ProfileOptions& o) {
  const NaProblem problem = make_problem(o);
  std::vector<BackendListing> listings;
  if (o.backend.empty()) {
    for (const Verdict& v : choose_backend(problem, Pass::forward).considered) listings.push_back({v.backend, v.reason, "", {}, {}});
  } else {
    listings.push_back({o.backend, reject_reason(o.backend, problem, Pass::forward), "", {}, {}});
  }

  std::ostream& os = std::cout;
  print_problem(os, o, problem);
  if (!o.fmha_backend.empty()) {
    os << "FMHA backend: " << o.fmha_backend << " (unused: " << kFmhaBackendUnused << ")\n";
  }
  os << "\nBackends (forward pass" << (o.backprop ? ", with gradients" : "") << "):\n";
  for (const BackendListing& l : listings)
    os << "  " << l.name << ": " << (l.reason.empty() ? "compatible" : "rejected: " + l.reason) << "\n";

  bool any_compatible = false;
  for (BackendListing& l : listings) {
    if (!l.reason.empty()) continue;
    any_compatible = true;
    l.forward_configs = get_configs(l.name, problem);
    l.backward_reason = reject_reason(l.name, problem, Pass::backward);
    if (l.backward_reason.empty()) l.backward_configs = get_bwd_configs(l.name, problem);

    os << "\nUse case is compatible with backend " << l.name << ".\n";
    print_config_table(os, "Backend: " + l.name + " / Forward pass configurations", l.forward_configs,
                       o.max_configs);
    if (l.backward_reason.empty()) {
      print_config_table(os, "Backend: " + l.name + " / Backward pass configurations", l.backward_configs,
                         o.max_configs);
    } else {
      os << "Backend: " << l.name << " / Backward pass: not supported: " << l.backward_reason << "\n";
    }
  }
  if (!o.json_path.empty()) write_dry_run_json(o.json_path, o, problem, listings);
  if (!any_compatible) {
    if (!o.backend.empty())
      throw NotImplementedError("backend '" + o.backend + "' cannot run this problem: " + listings.front().reason);
    const bool gpu = problem.device.kind == DeviceKind::cuda;
    throw NotImplementedError(std::string("no backend can run this problem (see the list above)") +
                              (gpu ? "; --device cpu runs it on the CPU backends" : ""));
  }
  return 0;
}

}  // namespace nattn::cli::profile
