// Benchmark of the `cpu` backend (not a test): forward and forward+backward time, effective
// GFLOP/s, speedup over the `reference` backend, and the fraction of the machine's FP32 FMA peak,
// which this program measures itself in the same run (bench/fma_peak.cpp).
//
//   nattn_bench_cpu [--threads N] [--quick] [--markdown PATH]
//
// Flop counting: a forward does 2 * B * N * H * window_volume * (D + Dv) flops (one multiply-add per
// Q.K and per P.V product over the window); forward+backward counts the backward as 2.5x the
// forward, i.e. 3.5x the forward in all.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fma_peak.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace {

constexpr double kBackwardFlopFactor = 2.5;

struct BenchProblem {
  std::string name;
  std::vector<int64_t> spatial;
  std::vector<int64_t> window;
  double forward_target;  // fraction of the all-core FMA peak the issue asks of the forward
};

struct Options {
  int threads = 0;  // 0 = every hardware thread
  bool quick = false;
  std::string markdown_path;
};

// One problem's tensors (fp32, contiguous, heads-last), random in [-1, 1].
struct Tensors {
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv, ref_out, ref_lse;
  nattn::NaForwardArgs forward;
  nattn::NaBackwardArgs backward;

  Tensors(const BenchProblem& p, int64_t heads, int64_t dim) {
    std::vector<int64_t> shape{1};
    shape.insert(shape.end(), p.spatial.begin(), p.spatial.end());
    std::vector<int64_t> lse_shape = shape;
    lse_shape.push_back(heads);
    shape.push_back(heads);
    shape.push_back(dim);
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    for (auto* t : {&q, &k, &v, &dout}) {
      t->resize(static_cast<size_t>(n));
      for (float& x : *t) x = dist(rng);
    }
    for (auto* t : {&out, &dq, &dk, &dv, &ref_out}) t->assign(static_cast<size_t>(n), 0.f);
    lse.assign(static_cast<size_t>(n / dim), 0.f);
    ref_lse.assign(static_cast<size_t>(n / dim), 0.f);

    nattn::NaParams params;
    params.rank = static_cast<int>(p.spatial.size());
    for (size_t a = 0; a < p.spatial.size(); ++a) params.kernel_size[a] = p.window[a];
    auto view = [](std::vector<float>& data, const std::vector<int64_t>& s) {
      return nattn::TensorView(data.data(), nattn::DType::f32, s);
    };
    forward.query = view(q, shape);
    forward.key = view(k, shape);
    forward.value = view(v, shape);
    forward.out = view(out, shape);
    forward.lse = view(lse, lse_shape);
    forward.params = params;
    backward.query = forward.query;
    backward.key = forward.key;
    backward.value = forward.value;
    backward.out = forward.out;
    backward.lse = *forward.lse;
    backward.dout = view(dout, shape);
    backward.dquery = view(dq, shape);
    backward.dkey = view(dk, shape);
    backward.dvalue = view(dv, shape);
    backward.params = params;
  }
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n == 0 ? std::nan("") : n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

struct Timing {
  double median = std::nan("");
  double min = std::nan("");
};

// Wall time of `runs` calls after `warmup` untimed ones.
Timing time_runs(const std::function<void()>& fn, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> samples;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    samples.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return Timing{median(samples), *std::min_element(samples.begin(), samples.end())};
}

std::string format_time(double seconds) {
  char text[64];
  if (!std::isfinite(seconds)) return "n/a";
  if (seconds < 1e-3) std::snprintf(text, sizeof(text), "%.3f us", seconds * 1e6);
  else if (seconds < 1.0) std::snprintf(text, sizeof(text), "%.3f ms", seconds * 1e3);
  else std::snprintf(text, sizeof(text), "%.3f s", seconds);
  return text;
}

std::string fixed(double value, int digits) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", digits, value);
  return text;
}

std::string cpu_model() {
  std::ifstream info("/proc/cpuinfo");
  std::string line;
  while (std::getline(info, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown CPU";
}

// The 1-minute load average (/proc/loadavg), or "" where unavailable: a busy machine skews every
// number here, so the results record it.
std::string load_average() {
  std::ifstream file("/proc/loadavg");
  std::string one_minute;
  if (!(file >> one_minute)) return "";
  return one_minute;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[64];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

int parse_threads(const std::string& text) {
  try {
    size_t used = 0;
    const long value = std::stol(text, &used);
    if (used == text.size() && value >= 0 && value <= 4096) return static_cast<int>(value);
  } catch (const std::exception&) {
  }
  throw nattn::ValueError("--threads: '" + text + "' is not allowed (allowed: 0 = every hardware thread, or 1 to 4096)");
}

Options parse_options(int argc, char** argv, bool* help) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      *help = true;
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--threads" || a == "--markdown") {
      if (i + 1 >= argc) throw nattn::ValueError(a + ": expects a value");
      const std::string value = argv[++i];
      if (a == "--threads") o.threads = parse_threads(value);
      else if (value.empty()) throw nattn::ValueError("--markdown: expects a file path (got an empty string)");
      else o.markdown_path = value;
    } else if (a.rfind("--threads=", 0) == 0) {
      o.threads = parse_threads(a.substr(10));
    } else if (a.rfind("--markdown=", 0) == 0) {
      o.markdown_path = a.substr(11);
      if (o.markdown_path.empty()) throw nattn::ValueError("--markdown: expects a file path (got an empty string)");
    } else {
      throw nattn::ValueError("unknown argument '" + a + "' (allowed: --threads N, --quick, --markdown PATH, --help)");
    }
  }
  return o;
}

const char* kHelp =
    "usage: nattn_bench_cpu [--threads N] [--quick] [--markdown PATH]\n"
    "\n"
    "Benchmarks the cpu backend (fp32, batch 1, 4 heads, dim 64) on three problems:\n"
    "  2-D 56x56 window 7x7; 3-D 8x16x16 window 3x5x5; 1-D 4096 window 255.\n"
    "Reports the median time of the forward and of forward+backward, effective GFLOP/s, the speedup\n"
    "over the reference backend, and the fraction of the FP32 FMA peak measured in the same run.\n"
    "\n"
    "  --threads N      threads for the backends and the peak measurement (0 = all) [0]\n"
    "  --quick          fewer timed runs (3 for cpu, 1 for reference)\n"
    "  --markdown PATH  write or update this thread count's section of PATH (e.g. bench/RESULTS.md)\n";

struct Row {
  std::string problem;
  std::string pass;  // "forward" / "forward+backward"
  double cpu_seconds = std::nan("");      // median
  double cpu_min_seconds = std::nan("");
  double gflops = std::nan("");
  double peak_fraction = std::nan("");        // of the measured all-thread peak
  double ideal_peak_fraction = std::nan("");  // of threads x the measured 1-thread peak
  double reference_seconds = std::nan("");
  double max_abs_diff = std::nan("");  // forward output, cpu against reference
  double target = std::nan("");        // forward only
  std::string error;
};

std::string markdown_table(const std::vector<Row>& rows) {
  std::ostringstream os;
  os << "| Problem | Pass | cpu time (median) | cpu time (min) | GFLOP/s | % of FP32 peak | "
        "% of threads x 1-core peak | reference time | speedup | max abs diff vs reference | target |\n"
     << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Row& r : rows) {
    if (!r.error.empty()) {
      os << "| " << r.problem << " | " << r.pass << " | error: " << r.error << " | | | | | | | | |\n";
      continue;
    }
    std::string target = "-";
    if (std::isfinite(r.target))
      target = (r.peak_fraction >= r.target ? "PASS (>= " : "MISS (>= ") + fixed(100 * r.target, 0) + "%)";
    char diff[32] = "-";
    if (std::isfinite(r.max_abs_diff)) std::snprintf(diff, sizeof(diff), "%.2e", r.max_abs_diff);
    os << "| " << r.problem << " | " << r.pass << " | " << format_time(r.cpu_seconds) << " | "
       << format_time(r.cpu_min_seconds) << " | " << fixed(r.gflops, 2)
       << " | " << fixed(100 * r.peak_fraction, 1) << "% | " << fixed(100 * r.ideal_peak_fraction, 1) << "% | "
       << format_time(r.reference_seconds) << " | "
       << fixed(r.reference_seconds / r.cpu_seconds, 1) << "x | "
       << diff << " | "
       << target << " |\n";
  }
  return os.str();
}

// Replaces the section between the markers of `key` in `path`, or appends it (creating the file).
// One section per thread count, so a 1-thread and an all-thread run can sit side by side.
void update_markdown(const std::string& path, const std::string& key, const std::string& section) {
  const std::string section_begin = "<!-- " + key + ":begin -->";
  const std::string section_end = "<!-- " + key + ":end -->";
  std::string text;
  {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
  }
  const std::string block = section_begin + "\n" + section + section_end + "\n";
  const size_t begin = text.find(section_begin);
  const size_t end = text.find(section_end);
  if (begin != std::string::npos && end != std::string::npos && end > begin) {
    size_t after = end + section_end.size();
    if (after < text.size() && text[after] == '\n') ++after;
    text = text.substr(0, begin) + block + text.substr(after);
  } else {
    if (text.empty()) text = "# Benchmark results\n\n";
    else if (text.back() != '\n') text += "\n\n";
    else text += "\n";
    text += block;
  }
  std::ofstream out(path);
  out << text;
  out.flush();
  if (!out) throw nattn::RuntimeError("--markdown: cannot write '" + path + "'");
}

int bench_main(int argc, char** argv) {
  bool help = false;
  const Options o = parse_options(argc, argv, &help);
  if (help) {
    std::cout << kHelp;
    return 0;
  }
  const int hardware = std::max(1u, std::thread::hardware_concurrency());
  const int threads = o.threads == 0 ? hardware : o.threads;
  const int64_t heads = 4, dim = 64;
  const int cpu_runs = o.quick ? 3 : 10;
  const int reference_runs = o.quick ? 1 : 3;
  const double peak_seconds = o.quick ? 0.1 : 0.3;

  std::string command = "nattn_bench_cpu";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string model = cpu_model();
  const std::string date = utc_now();
  const std::string load = load_average();
  std::cout << "nattn CPU benchmark: fp32, batch 1, " << heads << " heads, dim " << dim << "\n"
            << "Machine: " << model << ", " << hardware << " hardware threads; using " << threads << "\n"
            << "Date: " << date << (load.empty() ? "" : "; 1-minute load average at start: " + load) << "\n";

  std::vector<nattn::bench::PeakMeasurement> single_all, multi_all;
  const auto single = nattn::bench::measure_best_peak(1, peak_seconds, &single_all);
  // With one thread the all-thread peak is the per-core one; measuring it twice would only add noise.
  const auto multi = threads == 1 ? single : nattn::bench::measure_best_peak(threads, peak_seconds, &multi_all);
  if (threads == 1) multi_all = single_all;
  std::ostringstream peak_text;
  peak_text << "Measured FP32 FMA peak: " << fixed(single.gflops, 1) << " GFLOP/s per core (" << single.isa
            << "), " << fixed(multi.gflops, 1) << " GFLOP/s on " << threads << " thread" << (threads == 1 ? "" : "s")
            << " (" << multi.isa << ")";
  for (const auto& m : multi_all) {
    if (m.isa != multi.isa) peak_text << "; " << m.isa << ": " << fixed(m.gflops, 1) << " GFLOP/s";
  }
  const double ideal_peak = threads * single.gflops;
  // On a shared machine the all-thread peak can fall well short of threads x the 1-thread peak;
  // then the fractions of peak flatter the backend, so say so.
  std::string busy_note;
  if (threads > 1 && multi.gflops < 0.8 * ideal_peak) {
    busy_note = "Note: the " + std::to_string(threads) + "-thread peak is only " + fixed(multi.gflops / single.gflops, 2) +
                "x the 1-thread peak: other work is probably running on this machine.";
  }
  std::cout << peak_text.str() << "\n" << (busy_note.empty() ? "" : busy_note + "\n") << "\n";

  const std::vector<BenchProblem> problems = {
      {"2-D 56x56, window 7x7", {56, 56}, {7, 7}, 0.25},
      {"3-D 8x16x16, window 3x5x5", {8, 16, 16}, {3, 5, 5}, 0.25},
      {"1-D 4096, window 255", {4096}, {255}, 0.40},
  };
  nattn::RunOptions cpu_options, reference_options;
  cpu_options.backend = "cpu";
  cpu_options.num_threads = threads;
  reference_options.backend = "reference";
  reference_options.num_threads = threads;

  std::vector<Row> rows;
  bool any_error = false;
  for (const BenchProblem& p : problems) {
    std::cout << "[" << p.name << "]" << std::flush;
    double window_volume = 1, tokens = 1;
    for (size_t a = 0; a < p.spatial.size(); ++a) {
      window_volume *= static_cast<double>(p.window[a]);
      tokens *= static_cast<double>(p.spatial[a]);
    }
    const double forward_flops = 2.0 * tokens * static_cast<double>(heads) * window_volume * static_cast<double>(2 * dim);
    Tensors t(p, heads, dim);
    Row forward, both;
    forward.problem = both.problem = p.name;
    forward.pass = "forward";
    both.pass = "forward+backward";
    forward.target = p.forward_target;
    try {
      const Timing cpu_forward = time_runs([&] { nattn::na_forward(t.forward, cpu_options); }, 2, cpu_runs);
      forward.cpu_seconds = cpu_forward.median;
      forward.cpu_min_seconds = cpu_forward.min;
      std::cout << " cpu fwd " << format_time(forward.cpu_seconds) << std::flush;
      const Timing cpu_both = time_runs(
          [&] {
            nattn::na_forward(t.forward, cpu_options);
            nattn::na_backward(t.backward, cpu_options);
          },
          1, cpu_runs);
      both.cpu_seconds = cpu_both.median;
      both.cpu_min_seconds = cpu_both.min;
      std::cout << ", fwd+bwd " << format_time(both.cpu_seconds) << std::flush;
      const std::vector<float> cpu_out = t.out;

      forward.reference_seconds =
          time_runs([&] { nattn::na_forward(t.forward, reference_options); }, 0, reference_runs).median;
      std::cout << "; reference fwd " << format_time(forward.reference_seconds) << std::flush;
      double diff = 0;
      for (size_t i = 0; i < cpu_out.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(cpu_out[i] - t.out[i])));
      forward.max_abs_diff = diff;
      both.reference_seconds = time_runs(
          [&] {
            nattn::na_forward(t.forward, reference_options);
            nattn::na_backward(t.backward, reference_options);
          },
          0, reference_runs).median;
      std::cout << ", fwd+bwd " << format_time(both.reference_seconds) << "\n";
    } catch (const std::exception& e) {
      std::cout << "\n  error: " << e.what() << "\n";
      forward.error = both.error = e.what();
      any_error = true;
    }
    forward.gflops = forward_flops / forward.cpu_seconds * 1e-9;
    both.gflops = (1.0 + kBackwardFlopFactor) * forward_flops / both.cpu_seconds * 1e-9;
    forward.peak_fraction = forward.gflops / multi.gflops;
    both.peak_fraction = both.gflops / multi.gflops;
    forward.ideal_peak_fraction = forward.gflops / ideal_peak;
    both.ideal_peak_fraction = both.gflops / ideal_peak;
    rows.push_back(forward);
    rows.push_back(both);
  }

  const std::string table = markdown_table(rows);
  std::cout << "\n" << table << "\n";
  std::ostringstream targets;
  for (const Row& r : rows) {
    if (!std::isfinite(r.target)) continue;
    targets << (r.error.empty() && r.peak_fraction >= r.target ? "PASS" : "MISS") << ": " << r.problem
            << " forward at " << fixed(100 * r.peak_fraction, 1) << "% of the " << threads
            << "-thread FP32 FMA peak (target >= " << fixed(100 * r.target, 0) << "%)\n";
  }
  std::cout << targets.str() << "(targets are informative; they do not set the exit code)\n";

  if (!o.markdown_path.empty()) {
    std::ostringstream section;
    section << "## CPU backend (`nattn_bench_cpu`), " << threads << " thread" << (threads == 1 ? "" : "s") << "\n\n"
            << "- Command: `" << command << "`\n"
            << "- Machine: " << model << ", " << hardware << " hardware threads; " << threads << " used\n"
            << "- Date: " << date << "\n"
            << (load.empty() ? "" : "- 1-minute load average at start: " + load + "\n")
            << "- Commit: (filled in by whoever commits this file)\n"
            << "- " << peak_text.str() << "\n"
            << (busy_note.empty() ? "" : "- " + busy_note + "\n")
            << "- Problems: fp32, batch 1, " << heads << " heads, dim " << dim << ". Times are medians of "
            << cpu_runs << " runs (cpu) and " << reference_runs << " (reference).\n"
            << "- GFLOP/s: a forward counts 2 * N * H * window_volume * (D + Dv) flops; forward+backward counts "
               "the backward as 2.5x the forward (3.5x in all). % of peak is against the all-thread peak above.\n\n"
            << table << "\n```\n" << targets.str() << "```\n";
    const std::string key = "nattn_bench_cpu threads=" + std::to_string(threads);
    update_markdown(o.markdown_path, key, section.str());
    std::cout << "Wrote the '" << key << "' section of " << o.markdown_path << "\n";
  }
  return any_error ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return bench_main(argc, argv);
  } catch (const nattn::ValueError& e) {
    std::cerr << "nattn_bench_cpu: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nattn_bench_cpu: error: " << e.what() << "\n";
    return 1;
  }
}
