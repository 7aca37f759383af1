#include "core/log.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <string>

namespace nattn::detail {
namespace {

LogLevel threshold() {
  static const LogLevel level = [] {
    const char* env = std::getenv("NATTN_LOG_LEVEL");
    const std::string v = env ? env : "warning";
    if (v == "debug") return LogLevel::debug;
    if (v == "info") return LogLevel::info;
    if (v == "error") return LogLevel::error;
    return LogLevel::warning;
  }();
  return level;
}

std::mutex& log_mutex() {
  static std::mutex m;
  return m;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "";
}

void write_line(const std::string& line) {
  const char* pipe = std::getenv("NATTN_LOG_PIPE");
  const std::string target = pipe ? pipe : "stderr";
  if (target == "stderr") {
    std::cerr << line << std::endl;
  } else if (target == "stdout") {
    std::cout << line << std::endl;
  } else {
    std::ofstream f(target, std::ios::app);
    if (f) f << line << "\n";
  }
}

}  // namespace

void log(LogLevel level, const std::string& message) {
  if (level < threshold()) return;
  std::lock_guard<std::mutex> lock(log_mutex());
  write_line(std::string("[nattn ") + level_name(level) + "] " + message);
}

void log_once(LogLevel level, const std::string& key, const std::string& message) {
  {
    static std::set<std::string> seen;
    std::lock_guard<std::mutex> lock(log_mutex());
    if (!seen.insert(key).second) return;
  }
  log(level, message);
}

}  // namespace nattn::detail
