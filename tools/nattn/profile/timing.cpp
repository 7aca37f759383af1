// Wall-clock timing and the progress line.
#include "nattn/profile/timing.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "nattn/cuda_device.h"

namespace nattn::cli::profile {

double Samples::median() const {
  if (seconds.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

double Samples::min() const {
  if (seconds.empty()) return std::numeric_limits<double>::quiet_NaN();
  return *std::min_element(seconds.begin(), seconds.end());
}

double Samples::max() const {
  if (seconds.empty()) return std::numeric_limits<double>::quiet_NaN();
  return *std::max_element(seconds.begin(), seconds.end());
}

double time_call(const std::function<void()>& fn, bool synchronize_cuda) {
  if (synchronize_cuda) cuda_synchronize("before a timed call");
  const auto start = std::chrono::steady_clock::now();
  fn();
  if (synchronize_cuda) cuda_synchronize("after a timed call");
  const auto stop = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(stop - start).count();
}

Progress::Progress(bool wanted) : enabled_(wanted && isatty(STDERR_FILENO) == 1) {}

void Progress::update(const std::string& phase, int64_t done, int64_t total) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (shown_ && done != total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const std::string text = "[" + phase + " " + std::to_string(done) + "/" + std::to_string(total) + "]";
  // Pad over a longer previous line.
  const std::string pad(last_width_ > text.size() ? last_width_ - text.size() : 0, ' ');
  std::fprintf(stderr, "\r%s%s", text.c_str(), pad.c_str());
  std::fflush(stderr);
  last_width_ = text.size();
  shown_ = true;
}

void Progress::clear() {
  if (!enabled_ || !shown_) return;
  std::fprintf(stderr, "\r%s\r", std::string(last_width_, ' ').c_str());
  std::fflush(stderr);
  shown_ = false;
  last_width_ = 0;
}

}  // namespace nattn::cli::profile
