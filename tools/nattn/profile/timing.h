// Wall-clock timing and the progress line of `nattn profile`.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace nattn::cli::profile {

// Timed samples of one operation, in seconds.
struct Samples {
  std::vector<double> seconds;
  double median() const;  // NaN when empty
  double min() const;
  double max() const;
};

// Seconds taken by one call of `fn` (std::chrono::steady_clock). With `synchronize_cuda`, the
// current CUDA device is synchronized before the clock starts (earlier work is not counted) and
// before it stops (the GPU work `fn` queued is counted, not only its launch); a failed kernel
// surfaces there as a RuntimeError.
double time_call(const std::function<void()>& fn, bool synchronize_cuda = false);

// A progress line on stderr ("\r[warmup 3/10]", "\r[timing 5/10]"), redrawn at most every 100 ms.
// Disabled when asked, or when stderr is not a terminal (so logs and tests stay clean).
class Progress {
 public:
  explicit Progress(bool wanted);
  ~Progress() { clear(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(const std::string& phase, int64_t done, int64_t total);
  void clear();
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  bool shown_ = false;
  size_t last_width_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace nattn::cli::profile
