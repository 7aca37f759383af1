// `nattn verify DIR`: run every golden case of a directory on a backend and compare with the
// expected outputs and gradients. Prints one line per failing case and a last line
// "N passed, M failed"; exit 0 when everything passed, 1 when a case failed, 2 for bad usage.
#include <cstdlib>
#include <exception>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "core/half.h"
#include "golden/golden.h"
#include "nattn/backends.h"
#include "nattn/cuda_device.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn::cli {
namespace {

struct VerifyOptions {
  std::string dir;
  std::string backend;  // "" = automatic selection
  DType dtype = DType::f32;
  int threads = 0;
  bool quiet = false;
};

std::string help_text() {
  std::ostringstream s;
  s << "usage: nattn verify DIR [--backend NAME] [--dtype fp32|fp16|bf16] [--threads N] [--quiet]\n"
       "\n"
       "Runs every golden case (DIR/case_*.json + .bin) through na_forward and, where the backend\n"
       "has it, na_backward, and compares out, lse and the gradients with the expected values.\n"
       "Inputs are cast to --dtype; results are compared in fp32 against the fp32 golden values.\n"
       "Backward runs from the golden out/lse, so a forward error does not leak into it.\n"
       "\n"
       "options:\n"
       "  --backend NAME   a built backend (default: automatic selection)\n"
       "  --dtype T        fp32 (default), fp16 or bf16\n"
       "  --threads N      CPU threads (default 0: all hardware threads)\n"
       "  --quiet          print only failing cases and the summary line\n"
       "\n"
       "tolerances (max |got - expected| per tensor):\n";
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    s << " " << dtype_name(dtype) << ":\n" << golden::describe(golden::tolerances_for(dtype));
  }
  s << "\n"
       "Output: one line per failing case, e.g.\n"
       "  case_017 FAILED (forward): out max err 3.1e-02 > tol 1.0e-02\n"
       "then a last line 'N passed, M failed'. Exit status: 0 all passed, 1 some case failed,\n"
       "2 bad usage (unknown option, missing or nonexistent DIR, bad dtype, unknown backend).\n";
  return s.str();
}

int usage_error(const std::string& message) {
  std::cerr << "nattn verify: error: " << message << "\n"
            << "usage: nattn verify DIR [--backend NAME] [--dtype fp32|fp16|bf16] [--threads N] [--quiet]"
               " (nattn verify --help)\n";
  return 2;
}

std::string built_na_backends() {
  std::string names;
  for (const BackendInfo& info : list_backends()) {
    if (!info.built || !info.supports_na) continue;
    names += (names.empty() ? "" : ", ") + info.name;
  }
  return names;
}

// Checks --backend: empty, or a known backend that is built and runs NA. "" if fine.
std::string backend_problem(const std::string& name) {
  if (name.empty()) return {};
  for (const BackendInfo& info : list_backends()) {
    if (info.name != name) continue;
    if (!info.built) return "--backend '" + name + "' is not built into this library; built: " + built_na_backends();
    if (!info.supports_na) return "--backend '" + name + "' does not run neighborhood attention; allowed: " + built_na_backends();
    return {};
  }
  std::string known;
  for (const BackendInfo& info : list_backends()) known += (known.empty() ? "" : ", ") + info.name;
  return "unknown --backend '" + name + "'; known backends: " + known + " (built: " + built_na_backends() + ")";
}

// ---- host buffers ---------------------------------------------------------------------------------

struct Buffer {
  std::vector<unsigned char> bytes;
  TensorView view;
};

Buffer make_buffer(DType dtype, const std::vector<int64_t>& shape) {
  Buffer b;
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  b.bytes.assign(static_cast<size_t>(n * dtype_size(dtype)) + 1, 0);
  b.view = TensorView(b.bytes.data(), dtype, shape);
  return b;
}

Buffer cast(const golden::Array& a, DType dtype) {
  Buffer b = make_buffer(dtype, a.shape);
  for (int64_t i = 0; i < a.numel(); ++i) detail::store_float(b.view.data, i, dtype, a.data[static_cast<size_t>(i)]);
  return b;
}

// Outputs start as NaN so that an element a backend forgets to write fails the comparison.
Buffer poisoned(DType dtype, const std::vector<int64_t>& shape) {
  Buffer b = make_buffer(dtype, shape);
  const int64_t n = b.view.numel();
  for (int64_t i = 0; i < n; ++i) detail::store_float(b.view.data, i, dtype, std::numeric_limits<float>::quiet_NaN());
  return b;
}

std::vector<float> to_floats(const Buffer& b) {
  std::vector<float> out(static_cast<size_t>(b.view.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = detail::load_float(b.view.data, static_cast<int64_t>(i), b.view.dtype);
  return out;
}

// CUDA backends take device tensors: a Staging mirrors the host buffers of one run on GPU 0
// (inputs and poisoned outputs copied up; outputs copied back by finish()). For CPU backends it
// hands out the host views unchanged. Device memory is owned by DeviceBuffers (cuda_device.h).
class Staging {
 public:
  explicit Staging(const std::string& backend) : device_(is_cuda_backend(backend)) {
    if (device_ && !cuda_built())
      throw RuntimeError("--backend " + backend + " needs CUDA, but this nattn was built without it");
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  TensorView in(const Buffer& b) { return device_ ? upload(b) : b.view; }
  TensorView out(Buffer& b) {
    if (!device_) return b.view;
    TensorView v = upload(b);
    outputs_.push_back({&b, allocations_.size() - 1});
    return v;
  }
  // Waits for the device and copies the outputs back into their host buffers.
  void finish() {
    if (!device_) return;
    cuda_synchronize("after the run");
    for (const auto& [buffer, index] : outputs_) allocations_[index].download(buffer->bytes.data(), bytes_of(*buffer));
  }

 private:
  static int64_t bytes_of(const Buffer& b) { return b.view.numel() * dtype_size(b.view.dtype); }
  TensorView upload(const Buffer& b) {
    allocations_.emplace_back(bytes_of(b) + 16, 0);
    allocations_.back().upload(b.bytes.data(), bytes_of(b));
    return allocations_.back().view(b.view.dtype, b.view.shape, b.view.strides);
  }
  bool device_;
  std::vector<DeviceBuffer> allocations_;
  std::vector<std::pair<Buffer*, size_t>> outputs_;  // host buffer, index into allocations_
};

// ---- one case -------------------------------------------------------------------------------------

struct CaseOutcome {
  std::vector<std::string> phases;    // "forward", "backward" (the ones that failed)
  std::vector<std::string> problems;  // "out max err 3.1e-02 > tol 1.0e-02", "error: ..."
  bool backward_missing = false;      // the backend has no backward: checked forward only
  std::string backward_missing_reason;

  bool passed() const { return problems.empty(); }
  void fail(const std::string& phase, const std::string& problem) {
    if (phases.empty() || phases.back() != phase) phases.push_back(phase);
    problems.push_back(problem);
  }
};

std::string sci(double x) {
  std::ostringstream s;
  s.precision(1);
  s << std::scientific << x;
  return s.str();
}

void check(CaseOutcome& outcome, const std::string& phase, const std::string& tensor, const Buffer& got,
           const golden::Array& expected, const golden::Tolerance& tolerance) {
  const golden::Comparison c = golden::compare(to_floats(got), expected, tolerance);
  if (!c.passed()) outcome.fail(phase, tensor + " max err " + sci(c.max_error) + " > tol " + sci(c.allowed));
}

void run_forward(const golden::Case& gc, const VerifyOptions& options, const golden::Tolerances& tol,
                 CaseOutcome& outcome) {
  const DType dtype = options.dtype;
  const Buffer q = cast(gc.array("q"), dtype), k = cast(gc.array("k"), dtype), v = cast(gc.array("v"), dtype);
  Buffer out = poisoned(dtype, gc.array("out").shape);
  Buffer lse = poisoned(DType::f32, gc.array("lse").shape);
  Buffer extra_k, extra_v;
  Staging st(options.backend);
  NaForwardArgs args;
  args.query = st.in(q);
  args.key = st.in(k);
  args.value = st.in(v);
  args.out = st.out(out);
  args.lse = st.out(lse);
  if (gc.additional_kv > 0) {
    extra_k = cast(gc.array("additional_keys"), dtype);
    extra_v = cast(gc.array("additional_values"), dtype);
    args.additional_keys = st.in(extra_k);
    args.additional_values = st.in(extra_v);
  }
  args.params = gc.na_params();
  args.scale = gc.scale;
  RunOptions run;
  run.backend = options.backend;
  run.num_threads = options.threads;
  try {
    na_forward(args, run);
    st.finish();
  } catch (const std::exception& e) {
    outcome.fail("forward", std::string("error: ") + e.what());
    return;
  }
  check(outcome, "forward", "out", out, gc.array("out"), tol.out);
  check(outcome, "forward", "lse", lse, gc.array("lse"), tol.lse);
}

void run_backward(const golden::Case& gc, const VerifyOptions& options, const golden::Tolerances& tol,
                  CaseOutcome& outcome) {
  const DType dtype = options.dtype;
  const Buffer q = cast(gc.array("q"), dtype), k = cast(gc.array("k"), dtype), v = cast(gc.array("v"), dtype);
  const Buffer out = cast(gc.array("out"), dtype), dout = cast(gc.array("dout"), dtype);
  const Buffer lse = cast(gc.array("lse"), DType::f32);
  Buffer dq = poisoned(dtype, q.view.shape), dk = poisoned(dtype, k.view.shape), dv = poisoned(dtype, v.view.shape);
  Buffer extra_k, extra_v, dextra_k, dextra_v;
  Staging st(options.backend);
  NaBackwardArgs args;
  args.query = st.in(q);
  args.key = st.in(k);
  args.value = st.in(v);
  args.out = st.in(out);
  args.lse = st.in(lse);
  args.dout = st.in(dout);
  args.dquery = st.out(dq);
  args.dkey = st.out(dk);
  args.dvalue = st.out(dv);
  if (gc.additional_kv > 0) {
    extra_k = cast(gc.array("additional_keys"), dtype);
    extra_v = cast(gc.array("additional_values"), dtype);
    dextra_k = poisoned(dtype, extra_k.view.shape);
    dextra_v = poisoned(dtype, extra_v.view.shape);
    args.additional_keys = st.in(extra_k);
    args.additional_values = st.in(extra_v);
    args.dadditional_keys = st.out(dextra_k);
    args.dadditional_values = st.out(dextra_v);
  }
  args.params = gc.na_params();
  args.scale = gc.scale;
  RunOptions run;
  run.backend = options.backend;
  run.num_threads = options.threads;
  try {
    na_backward(args, run);
    st.finish();
  } catch (const NotImplementedError& e) {
    outcome.backward_missing = true;
    outcome.backward_missing_reason = e.what();
    return;
  } catch (const std::exception& e) {
    outcome.fail("backward", std::string("error: ") + e.what());
    return;
  }
  check(outcome, "backward", "dq", dq, gc.array("dq"), tol.grad);
  check(outcome, "backward", "dk", dk, gc.array("dk"), tol.grad);
  check(outcome, "backward", "dv", dv, gc.array("dv"), tol.grad);
  if (gc.additional_kv > 0) {
    check(outcome, "backward", "d_additional_keys", dextra_k, gc.array("d_additional_keys"), tol.grad);
    check(outcome, "backward", "d_additional_values", dextra_v, gc.array("d_additional_values"), tol.grad);
  }
}

std::string case_name_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string file = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = file.rfind('.');
  return dot == std::string::npos ? file : file.substr(0, dot);
}

// Parses argv; returns -1 to go on, else the exit code (help printed: 0; bad usage: 2).
int parse(int argc, char** argv, VerifyOptions& options) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_value = true;
    }
    auto take_value = [&]() -> bool {
      if (has_value) return true;
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << help_text();
      return 0;
    } else if (arg == "--quiet" || arg == "-q") {
      if (has_value) return usage_error("--quiet takes no value");
      options.quiet = true;
    } else if (arg == "--backend") {
      if (!take_value()) return usage_error("--backend needs a value");
      options.backend = value;
    } else if (arg == "--dtype") {
      if (!take_value()) return usage_error("--dtype needs a value (fp32, fp16 or bf16)");
      try {
        options.dtype = parse_dtype(value);
      } catch (const std::exception&) {
        return usage_error("--dtype '" + value + "' is not allowed; allowed: fp32, fp16, bf16");
      }
      if (options.dtype != DType::f32 && options.dtype != DType::f16 && options.dtype != DType::bf16)
        return usage_error("--dtype '" + value + "' is not allowed; allowed: fp32, fp16, bf16");
    } else if (arg == "--threads") {
      if (!take_value()) return usage_error("--threads needs a value");
      char* end = nullptr;
      const long n = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 0 || n > 4096) {
        return usage_error("--threads '" + value + "' is not allowed; give an integer from 0 (all threads) to 4096");
      }
      options.threads = static_cast<int>(n);
    } else if (arg.size() > 1 && arg[0] == '-') {
      return usage_error("unknown option '" + arg + "'; allowed: --backend, --dtype, --threads, --quiet, --help");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty()) return usage_error("missing DIR (a directory of golden cases)");
  if (positional.size() > 1) return usage_error("expected one DIR, got " + std::to_string(positional.size()) + " ('" + positional[1] + "' ...)");
  options.dir = positional[0];
  const std::string bad_backend = backend_problem(options.backend);
  if (!bad_backend.empty()) return usage_error(bad_backend);
  return -1;
}

}  // namespace

int run_verify(int argc, char** argv) {
  VerifyOptions options;
  const int parsed = parse(argc, argv, options);
  if (parsed >= 0) return parsed;

  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(options.dir);
  } catch (const std::exception& e) {
    return usage_error(e.what());
  }
  if (paths.empty()) return usage_error("no golden cases (case_*.json) in '" + options.dir + "'");

  const golden::Tolerances tolerances = golden::tolerances_for(options.dtype);
  if (!options.quiet) {
    std::cout << "verifying " << paths.size() << " cases in " << options.dir << " on backend "
              << (options.backend.empty() ? "(automatic)" : options.backend) << ", dtype "
              << dtype_name(options.dtype) << "\n";
  }
  int passed = 0, failed = 0, forward_only = 0;
  bool told_forward_only = false;
  for (const std::string& path : paths) {
    CaseOutcome outcome;
    std::string name = case_name_of(path);
    try {
      const golden::Case gc = golden::load_case(path);
      name = gc.name;
      run_forward(gc, options, tolerances, outcome);
      if (gc.has_backward()) run_backward(gc, options, tolerances, outcome);
    } catch (const std::exception& e) {
      outcome.fail("load", std::string("error: ") + e.what());
    } catch (...) {
      outcome.fail("load", "unknown error");
    }
    if (outcome.backward_missing) {
      ++forward_only;
      if (!told_forward_only) {
        std::cout << "note: backward is not available (" << outcome.backward_missing_reason
                  << "); cases are checked forward only\n";
        told_forward_only = true;
      }
    }
    if (outcome.passed()) {
      ++passed;
      continue;
    }
    ++failed;
    std::string phases, problems;
    for (const std::string& p : outcome.phases) phases += (phases.empty() ? "" : ", ") + p;
    for (const std::string& p : outcome.problems) problems += (problems.empty() ? "" : "; ") + p;
    std::cout << name << " FAILED (" << phases << "): " << problems << "\n";
  }
  if (forward_only > 0) std::cout << "note: " << forward_only << " cases checked forward only\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  std::cout.flush();
  return failed == 0 ? 0 : 1;
}

}  // namespace nattn::cli
