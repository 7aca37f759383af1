// The `nattn` command-line tool: `nattn profile ...` and `nattn verify DIR ...`.
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "nattn/errors.h"
#include "nattn/version.h"
#include "commands.h"

namespace {

const char* kUsage =
    "usage: nattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  profile   time neighborhood attention on a backend (nattn profile --help)\n"
    "  verify    run the golden cases of a directory (nattn verify --help)\n"
    "  version   print the version\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  try {
    if (command == "profile") return nattn::cli::run_profile(argc - 1, argv + 1);
    if (command == "verify") return nattn::cli::run_verify(argc - 1, argv + 1);
    if (command == "version" || command == "--version") {
      std::cout << "nattn " << NATTN_VERSION_STRING << "\n";
      return 0;
    }
    if (command == "-h" || command == "--help" || command == "help") {
      std::cout << kUsage;
      return 0;
    }
    std::cerr << "nattn: unknown command '" << command << "' (allowed: profile, verify, version)\n"
              << kUsage;
    return 2;
  } catch (const nattn::ValueError& e) {
    std::cerr << "nattn " << command << ": error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nattn " << command << ": error: " << e.what() << "\n";
    return 1;
  }
}
