// Backend registry, automatic selection with reasons, config finders.
#include <sstream>

#include "core/backend.h"
#include "core/log.h"
#include "core/tables.h"

namespace nattn {
namespace detail {

const Backend* find_built_backend(const std::string& name) {
  if (name == "reference") return &reference_backend();
  if (name == "cpu") return &cpu_backend();
#ifdef NATTN_WITH_CUDA
  return cuda_backend(name);
#else
  return nullptr;
#endif
}

}  // namespace detail

namespace {

using detail::BackendSpec;

std::string known_names() {
  std::string s;
  for (const auto& spec : detail::backend_specs()) s += (s.empty() ? "" : ", ") + std::string(spec.name);
  return s;
}

const BackendSpec& spec_or_throw(const std::string& name) {
  const BackendSpec* spec = detail::find_spec(name);
  if (!spec) throw NotImplementedError("backend '" + name + "' is not known; known backends: " + known_names());
  return *spec;
}

template <typename Problem>
std::string reject_impl(const BackendSpec& spec, const Problem& problem, Pass pass) {
  std::string reason = detail::capability_reject(spec, problem, pass);
  if (!reason.empty()) return reason;
  const detail::Backend* built = detail::find_built_backend(spec.name);
  if (!built) {
    if (spec.python_only)
      return std::string(spec.name) + " is provided by the Python package (PyTorch), not by the C++ library";
    return std::string(spec.name) + " is not built into this library";
  }
  return built->reject(problem, pass);
}

template <typename Problem>
bool spec_matches_op(const BackendSpec& spec, const Problem&);
template <>
bool spec_matches_op(const BackendSpec& spec, const NaProblem&) { return spec.supports_na; }
template <>
bool spec_matches_op(const BackendSpec& spec, const FmhaProblem&) { return spec.supports_fmha; }

template <typename Problem>
Selection choose_impl(const Problem& problem, Pass pass) {
  Selection sel;
  for (const auto& spec : detail::backend_specs()) {
    if (!spec_matches_op(spec, problem)) continue;
    Verdict v{spec.name, reject_impl(spec, problem, pass)};
    // fp64 (NumPy's default dtype) is never picked automatically: the only backend that runs it is
    // the slow fp64 oracle, which must be asked for by name. Everything else says why it cannot.
    if (v.reason.empty() && problem.dtype == DType::f64)
      v.reason = "fp64 runs only when backend 'reference' is named (the slow fp64 oracle); cast to fp32 for the "
                 "fast backends";
    if (v.reason.empty() && sel.backend.empty()) sel.backend = spec.name;
    sel.considered.push_back(v);
  }
  return sel;
}

template <typename Problem>
std::string resolve_impl(const std::string& requested, const Problem& problem, Pass pass, const char* op) {
  const char* pass_name = pass == Pass::forward ? "forward" : "backward";
  if (!requested.empty()) {
    const BackendSpec& spec = spec_or_throw(requested);
    const std::string reason = reject_impl(spec, problem, pass);
    if (!reason.empty())
      throw NotImplementedError("backend '" + requested + "' cannot run this " + op + " " + pass_name +
                                " problem: " + reason + " [" + problem.describe() + "]");
    return requested;
  }
  const Selection sel = choose_impl(problem, pass);
  if (sel.backend.empty())
    throw NotImplementedError(std::string("no backend can run this ") + op + " " + pass_name + " problem [" +
                              problem.describe() + "]:\n" + sel.explain());
  // A faster backend for this device was rejected: say once why (fallbacks are never silent).
  std::string skipped;
  for (const auto& v : sel.considered) {
    if (v.backend == sel.backend) break;
    const BackendSpec& spec = *detail::find_spec(v.backend);
    if (spec.device == problem.device.kind && !spec.python_only) skipped += "\n  " + v.backend + ": " + v.reason;
  }
  if (!skipped.empty())
    detail::log_once(detail::LogLevel::warning, std::string(op) + pass_name + sel.backend + skipped,
                     std::string("using ") + sel.backend + " for " + op + " " + pass_name +
                         "; faster backends were rejected:" + skipped);
  return sel.backend;
}

template <typename Problem>
detail::ConfigList config_list_impl(const std::string& backend, const Problem& problem, Pass pass) {
  const BackendSpec& spec = spec_or_throw(backend);
  // A Python-only backend is never built here, but its finders serve the Python package: only its
  // capability table decides.
  const std::string reason =
      spec.python_only ? detail::capability_reject(spec, problem, pass) : reject_impl(spec, problem, pass);
  if (!reason.empty()) return std::make_shared<const std::vector<TileConfig>>();
  return detail::config_table(spec, problem, pass);
}

template <typename Problem>
std::vector<TileConfig> configs_impl(const std::string& backend, const Problem& problem, Pass pass) {
  return *config_list_impl(backend, problem, pass);
}

template <typename Problem>
TileConfig resolve_config_impl(const std::string& backend, const Problem& problem, Pass pass,
                               const std::optional<TileConfig>& requested, const char* finder) {
  const detail::ConfigList shared = config_list_impl(backend, problem, pass);
  const std::vector<TileConfig>& list = *shared;
  if (list.empty())
    throw NotImplementedError("backend '" + backend + "' has no " +
                              (pass == Pass::forward ? "forward" : "backward") + " configuration for this problem");
  if (!requested) return list.front();
  TileConfig want = *requested;
  // A schedule given alone combines with the default tile shapes (NATTEN behaviour).
  if (want.q_tile.empty() && want.kv_tile.empty() && want.schedule != KernelSchedule::none) {
    want.q_tile = list.front().q_tile;
    want.kv_tile = list.front().kv_tile;
  }
  for (const auto& c : list)
    if (c == want) return c;
  // Tile shapes given without a schedule on a backend with schedules: the first listed entry of
  // those shapes (its default schedule), as NATTEN does when kernel_schedule is left out.
  if (want.schedule == KernelSchedule::none && !want.q_tile.empty())
    for (const auto& c : list)
      if (c.q_tile == want.q_tile && c.kv_tile == want.kv_tile) return c;
  std::ostringstream os;
  os << (pass == Pass::forward ? "forward" : "backward") << " tile config " << requested->describe()
     << " is not valid for backend '" << backend << "' on this problem; use " << finder
     << " to list the valid ones, e.g.:";
  for (size_t i = 0; i < list.size() && i < 5; ++i) os << "\n  " << list[i].describe();
  if (list.size() > 5) os << "\n  ... (" << std::to_string(list.size()) << " in all)";  // no ostream numbers: see problem.cpp
  throw ValueError(os.str());
}

}  // namespace

std::string Selection::explain() const {
  std::ostringstream os;
  for (size_t i = 0; i < considered.size(); ++i) {
    const auto& v = considered[i];
    os << (i ? "\n" : "") << v.backend << ": ";
    if (v.backend == backend) os << "chosen";
    else if (v.reason.empty()) os << "compatible";
    else os << "rejected: " << v.reason;
  }
  return os.str();
}

std::vector<BackendInfo> list_backends() {
  std::vector<BackendInfo> out;
  for (const auto& spec : detail::backend_specs())
    out.push_back(BackendInfo{spec.name, spec.supports_na, spec.supports_fmha,
                              detail::find_built_backend(spec.name) != nullptr, spec.description, spec.device});
  return out;
}

bool is_known_backend(const std::string& name) { return detail::find_spec(name) != nullptr; }

std::string reject_reason(const std::string& backend, const NaProblem& problem, Pass pass) {
  return reject_impl(spec_or_throw(backend), problem, pass);
}
std::string reject_reason(const std::string& backend, const FmhaProblem& problem, Pass pass) {
  return reject_impl(spec_or_throw(backend), problem, pass);
}

Selection choose_backend(const NaProblem& problem, Pass pass) { return choose_impl(problem, pass); }
Selection choose_backend(const FmhaProblem& problem, Pass pass) { return choose_impl(problem, pass); }

std::string resolve_backend(const std::string& requested, const NaProblem& problem, Pass pass) {
  return resolve_impl(requested, problem, pass, "neighborhood attention");
}
std::string resolve_backend(const std::string& requested, const FmhaProblem& problem, Pass pass) {
  return resolve_impl(requested, problem, pass, "attention");
}

std::vector<TileConfig> get_configs(const std::string& backend, const NaProblem& problem) {
  return configs_impl(backend, problem, Pass::forward);
}
std::vector<TileConfig> get_bwd_configs(const std::string& backend, const NaProblem& problem) {
  return configs_impl(backend, problem, Pass::backward);
}
std::vector<TileConfig> get_configs(const std::string& backend, const FmhaProblem& problem) {
  return configs_impl(backend, problem, Pass::forward);
}
std::vector<TileConfig> get_bwd_configs(const std::string& backend, const FmhaProblem& problem) {
  return configs_impl(backend, problem, Pass::backward);
}

TileConfig resolve_config(const std::string& backend, const NaProblem& problem, Pass pass,
                          const std::optional<TileConfig>& requested) {
  return resolve_config_impl(backend, problem, pass, requested,
                             pass == Pass::forward ? "get_configs" : "get_bwd_configs");
}
TileConfig resolve_config(const std::string& backend, const FmhaProblem& problem, Pass pass,
                          const std::optional<TileConfig>& requested) {
  return resolve_config_impl(backend, problem, pass, requested,
                             pass == Pass::forward ? "get_configs" : "get_bwd_configs");
}

}  // namespace nattn
