// Minimal logging. NATTN_LOG_LEVEL = debug | info | warning | error (default warning);
// NATTN_LOG_PIPE = stderr (default) | stdout | a file path.
#pragma once

#include <string>

namespace nattn::detail {

enum class LogLevel : int { debug = 0, info = 1, warning = 2, error = 3 };

void log(LogLevel level, const std::string& message);
// Logs `message` the first time `key` is seen in this process (e.g. fallback notices).
void log_once(LogLevel level, const std::string& key, const std::string& message);

}  // namespace nattn::detail
