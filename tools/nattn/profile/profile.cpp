// `nattn profile`: entry point. Parses the options, runs the chosen mode, and maps errors onto exit
// codes: 2 for invalid usage or arguments (nattn::ValueError), 1 for anything else.
#include <exception>
#include <iostream>
#include <new>

#include "nattn/commands.h"
#include "nattn/errors.h"
#include "nattn/profile/options.h"
#include "nattn/profile/session.h"

namespace nattn::cli {
namespace {

int profile_main(int argc, char** argv) {
  const profile::ProfileOptions options = profile::parse_options(argc, argv);
  if (options.help) {
    std::cout << profile::help_text();
    return 0;
  }
  if (options.dry_run) return profile::run_dry_run(options);

  profile::Plan plan = profile::make_plan(options);
  profile::print_plan(std::cout, plan);
  std::cout.flush();
  profile::Progress progress(options.show_progress);
  std::optional<profile::SearchResult> search;
  if (options.optimize) search = profile::run_optimize(plan, progress);
  const std::vector<profile::OperationResult> results = profile::run_timed(plan, progress);
  profile::print_results(std::cout, plan, results);
  if (!options.json_path.empty()) {
    profile::write_json(options.json_path, plan, results, search);
    std::cout << "Results written to " << options.json_path << "\n";
  }
  return 0;
}

}  // namespace

int run_profile(int argc, char** argv) {
  try {
    return profile_main(argc, argv);
  } catch (const ValueError& e) {
    std::cout.flush();
    std::cerr << "nattn profile: error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cout.flush();
    std::cerr << "nattn profile: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "nattn profile: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace nattn::cli
