// Backend registry, automatic selection that explains itself, and the config finders.
//
// Every planned backend is known to the registry, whether or not this build contains it:
// reference, cpu, cutlass-fna, cutlass-fmha, hopper-fna, hopper-fmha, blackwell-fna,
// blackwell-fmha, flex-fna, flex-fmha. A backend that is not built reports that as its rejection
// reason; the config tables of every backend live in one place (src/core/configs.cpp).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nattn/problem.h"

namespace nattn {

enum class OpKind : int { na = 0, fmha = 1 };

struct BackendInfo {
  std::string name;
  bool supports_na = false;
  bool supports_fmha = false;
  bool built = false;       // compiled into this library
  std::string description;  // one line
  DeviceKind device = DeviceKind::cpu;  // where its tensors live (the capability table's device)
};

// All known backends, in automatic-selection preference order.
std::vector<BackendInfo> list_backends();
bool is_known_backend(const std::string& name);

// Why `backend` cannot run the problem ("" if it can).
std::string reject_reason(const std::string& backend, const NaProblem& problem, Pass pass);
std::string reject_reason(const std::string& backend, const FmhaProblem& problem, Pass pass);

struct Verdict {
  std::string backend;
  std::string reason;  // empty = accepted
};

struct Selection {
  std::string backend;             // chosen backend; empty if none can run the problem
  std::vector<Verdict> considered;  // every backend considered, in order
  std::string explain() const;      // one line per backend: "cpu: chosen" / "hopper-fna: rejected: ..."
};

// Automatic selection: the first backend in preference order that can run the problem. Never
// throws; `backend` is empty when nothing can run it.
Selection choose_backend(const NaProblem& problem, Pass pass);
Selection choose_backend(const FmhaProblem& problem, Pass pass);

// Resolve a user request: "" selects automatically; a named backend must be known (else
// NotImplementedError listing the known names) and able to run the problem (else
// NotImplementedError / ValueError with the reason). Returns the backend name.
std::string resolve_backend(const std::string& requested, const NaProblem& problem, Pass pass);
std::string resolve_backend(const std::string& requested, const FmhaProblem& problem, Pass pass);

// Config finders: the valid tile configurations of `backend` for the problem, default first, or an
// empty list when the backend cannot run it. Unknown backend names throw NotImplementedError.
// Python-only backends (flex-*) are judged by their capability table alone.
std::vector<TileConfig> get_configs(const std::string& backend, const NaProblem& problem);
std::vector<TileConfig> get_bwd_configs(const std::string& backend, const NaProblem& problem);
std::vector<TileConfig> get_configs(const std::string& backend, const FmhaProblem& problem);
std::vector<TileConfig> get_bwd_configs(const std::string& backend, const FmhaProblem& problem);

// Check a user-given config against the list (ValueError naming the config, suggesting the finder
// and listing up to 5 valid entries). Returns the config to use: the given one, or the default.
TileConfig resolve_config(const std::string& backend, const NaProblem& problem, Pass pass,
                          const std::optional<TileConfig>& requested);
TileConfig resolve_config(const std::string& backend, const FmhaProblem& problem, Pass pass,
                          const std::optional<TileConfig>& requested);

}  // namespace nattn
