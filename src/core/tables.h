// The capability and tile-config tables of every planned backend: one source of truth for the
// dispatcher, the config finders, the CLI and the docs.
#pragma once

#include <memory>

#include <string>
#include <vector>

#include "nattn/backends.h"
#include "nattn/problem.h"

namespace nattn::detail {

struct BackendSpec {
  const char* name;
  bool supports_na;
  bool supports_fmha;
  DeviceKind device;   // the device the backend runs on
  bool python_only;    // provided by the Python package, never by the C++ library
  const char* description;
};

// Every planned backend, in automatic-selection preference order.
const std::vector<BackendSpec>& backend_specs();
const BackendSpec* find_spec(const std::string& name);

// Capability checks of the table (device, compute capability, dtype, head dims, features).
// "" when the backend, as designed, can run the problem. Does not look at whether it is built.
std::string capability_reject(const BackendSpec& spec, const NaProblem& problem, Pass pass);
std::string capability_reject(const BackendSpec& spec, const FmhaProblem& problem, Pass pass);

// Tile configurations, default first. Only meaningful when capability_reject(...) is "". Shared and
// immutable: a list may be cached (hopper-fna ranks its pairs per problem) and every forward call
// resolves its config from it without copying it.
using ConfigList = std::shared_ptr<const std::vector<TileConfig>>;
ConfigList config_table(const BackendSpec& spec, const NaProblem& problem, Pass pass);
ConfigList config_table(const BackendSpec& spec, const FmhaProblem& problem, Pass pass);

}  // namespace nattn::detail
