// Parsing and validation of the `nattn profile` options.
#include "nattn/profile/options.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "nattn/backends.h"
#include "nattn/cuda_device.h"
#include "nattn/errors.h"

namespace nattn::cli::profile {
namespace {

enum class Arity { flag, one, list };

struct OptionSpec {
  const char* short_name;  // "" when the option has none
  const char* long_name;
  Arity arity;
};

// Every option, in --help order. The handler in parse_options switches on long_name.
const OptionSpec kOptions[] = {
    {"-i", "--input-size", Arity::list},      {"-b", "--batch-size", Arity::one},
    {"-n", "--heads", Arity::one},            {"", "--heads-kv", Arity::one},
    {"-d", "--dim", Arity::one},              {"", "--dim-value", Arity::one},
    {"-w", "--window-size", Arity::list},     {"-s", "--stride", Arity::list},
    {"", "--dilation", Arity::list},          {"-c", "--causal", Arity::list},
    {"", "--dtype", Arity::one},              {"", "--backprop", Arity::flag},
    {"", "--inputs", Arity::one},
    {"", "--add-kv", Arity::one},             {"", "--backend", Arity::one},
    {"", "--fmha-backend", Arity::one},       {"", "--device", Arity::one},
    {"", "--q-tile", Arity::list},
    {"", "--kv-tile", Arity::list},           {"", "--backward-q-tile", Arity::list},
    {"", "--backward-kv-tile", Arity::list},  {"", "--schedule", Arity::one},
    {"", "--warmup-steps", Arity::one},       {"", "--iterations", Arity::one},
    {"", "--threads", Arity::one},            {"", "--dry-run", Arity::flag},
    {"", "--max-configs", Arity::one},        {"", "--optimize", Arity::flag},
    {"", "--optimize-warmup-steps", Arity::one}, {"", "--json", Arity::one},
    {"", "--quiet", Arity::flag},             {"", "--no-progress", Arity::flag},
};

std::string display_name(const OptionSpec& spec) {
  return spec.short_name[0] ? std::string(spec.short_name) + "/" + spec.long_name : spec.long_name;
}

const OptionSpec* find_option(const std::string& name) {
  for (const OptionSpec& spec : kOptions) {
    if (name == spec.long_name || (spec.short_name[0] && name == spec.short_name)) return &spec;
  }
  return nullptr;
}

// "-x" or "--xyz", but not a negative number such as "-3" (a value of a list option).
bool looks_like_option(const std::string& token) {
  if (token.size() < 2 || token[0] != '-') return false;
  return !(std::isdigit(static_cast<unsigned char>(token[1])) || token[1] == '.');
}

std::string join(const std::vector<std::string>& words, const char* sep = " ") {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += (i ? sep : "") + words[i];
  return out;
}

template <typename T>
std::string tuple_string(const std::vector<T>& values) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < values.size(); ++i) os << (i ? ", " : "") << values[i];
  os << ")";
  return os.str();
}

[[noreturn]] void fail(const std::string& option, const std::string& message) {
  throw ValueError(option + ": " + message);
}

int64_t parse_int(const std::string& option, const std::string& text, int64_t min_allowed,
                  const char* allowed) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || std::isspace(static_cast<unsigned char>(text[0])))
    fail(option, "'" + text + "' is not an integer (allowed: " + allowed + ")");
  if (errno == ERANGE) fail(option, "'" + text + "' is out of range (allowed: " + allowed + ")");
  if (value < min_allowed) fail(option, std::to_string(value) + " is not allowed (allowed: " + allowed + ")");
  return static_cast<int64_t>(value);
}

bool parse_bool(const std::string& option, const std::string& text) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  fail(option, "'" + text + "' is not a boolean (allowed: true/false, 1/0, yes/no)");
}

std::vector<int64_t> parse_int_list(const std::string& option, const std::vector<std::string>& words,
                                    int64_t min_allowed, const char* allowed) {
  std::vector<int64_t> out;
  for (const std::string& w : words) out.push_back(parse_int(option, w, min_allowed, allowed));
  return out;
}

// A per-axis list: one value (repeated on every axis, as the library's scalar form) or one per axis.
template <typename T>
std::vector<T> per_axis(const std::string& option, std::vector<T> values, int rank,
                        const std::vector<int64_t>& input_size, T fallback) {
  if (values.empty()) return std::vector<T>(static_cast<size_t>(rank), fallback);
  if (values.size() == 1) return std::vector<T>(static_cast<size_t>(rank), values[0]);
  if (static_cast<int>(values.size()) != rank) {
    fail(option, std::to_string(values.size()) + " values " + tuple_string(values) + " for a " +
                     std::to_string(rank) + "-D input " + tuple_string(input_size) +
                     " (allowed: 1 value for every axis, or exactly " + std::to_string(rank) + ")");
  }
  return values;
}

void check_tile(const std::string& option, const std::vector<int64_t>& tile, int rank) {
  if (!tile.empty() && static_cast<int>(tile.size()) != rank) {
    fail(option, std::to_string(tile.size()) + " values " + tuple_string(tile) + " for a " +
                     std::to_string(rank) + "-D problem (allowed: exactly " + std::to_string(rank) +
                     " positive integers)");
  }
}

void check_backend_name(const std::string& option, const std::string& name, bool want_fmha) {
  std::vector<std::string> allowed;
  bool found = false;
  for (const BackendInfo& info : list_backends()) {
    const bool kind_ok = want_fmha ? info.supports_fmha : info.supports_na;
    if (!kind_ok) continue;
    allowed.push_back(info.name);
    if (info.name == name) found = true;
  }
  if (!found) {
    const bool known = is_known_backend(name);
    fail(option, "'" + name + "' " +
                     (known ? std::string(want_fmha ? "is not an FMHA backend" : "is not an NA backend")
                            : std::string("is not a known backend")) +
                     " (allowed: " + join(allowed, ", ") + ")");
  }
}

// Checks of the NA parameters against the input size, in NATTEN's order (w > x, w*d > x, s > w).
void check_na_parameters(const ProfileOptions& o) {
  for (int axis = 0; axis < o.rank(); ++axis) {
    const size_t a = static_cast<size_t>(axis);
    const std::string where = " on axis " + std::to_string(axis);
    if (o.input_size[a] < 2) {
      fail("-i/--input-size", std::to_string(o.input_size[a]) + where +
                                  " is too small (allowed: >= 2, because the window is >= 2)");
    }
    if (o.window[a] < 2)
      fail("-w/--window-size", std::to_string(o.window[a]) + where + " is too small (allowed: >= 2)");
    if (o.window[a] > o.input_size[a]) {
      fail("-w/--window-size", std::to_string(o.window[a]) + where + " exceeds the input size " +
                                   std::to_string(o.input_size[a]) + " (allowed: 2 <= window <= input size)");
    }
    if (o.window[a] * o.dilation[a] > o.input_size[a]) {
      fail("--dilation", "window * dilation = " + std::to_string(o.window[a]) + " * " +
                             std::to_string(o.dilation[a]) + " = " +
                             std::to_string(o.window[a] * o.dilation[a]) + where +
                             " exceeds the input size " + std::to_string(o.input_size[a]) +
                             " (allowed: window * dilation <= input size)");
    }
    if (o.stride[a] > o.window[a]) {
      fail("-s/--stride", std::to_string(o.stride[a]) + where + " exceeds the window size " +
                              std::to_string(o.window[a]) + " (allowed: 1 <= stride <= window)");
    }
  }
}

}  // namespace

ProfileOptions parse_options(int argc, char** argv) {
  ProfileOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string token = argv[i];
    if (token == "-h" || token == "--help") {
      o.help = true;
      return o;
    }
  }

  // Raw values first; conversion happens once every option is known (so -w can default to -i).
  std::vector<std::string> raw_window, raw_stride, raw_dilation, raw_causal;
  for (int i = 1; i < argc; ++i) {
    std::string token = argv[i];
    std::optional<std::string> inline_value;
    if (token.rfind("--", 0) == 0) {
      const size_t eq = token.find('=');
      if (eq != std::string::npos) {
        inline_value = token.substr(eq + 1);
        token = token.substr(0, eq);
      }
    }
    if (!looks_like_option(token)) {
      throw ValueError("unexpected argument '" + token +
                       "' (options take the form -x VALUE or --name VALUE; see nattn profile --help)");
    }
    const OptionSpec* spec = find_option(token);
    if (spec == nullptr)
      throw ValueError("unknown option '" + token + "' (see nattn profile --help)");
    const std::string option = display_name(*spec);

    std::vector<std::string> values;
    auto add_words = [&values](const std::string& text) {
      // Lists may also be written with commas: -i 56,56.
      std::string word;
      std::istringstream is(text);
      while (std::getline(is, word, ',')) values.push_back(word);
      if (!text.empty() && text.back() == ',') values.push_back("");
    };
    if (spec->arity == Arity::flag) {
      if (inline_value) fail(option, "takes no value (got '" + *inline_value + "')");
    } else if (inline_value) {
      add_words(*inline_value);
    } else if (spec->arity == Arity::one) {
      if (i + 1 >= argc || looks_like_option(argv[i + 1])) fail(option, "expects a value");
      values.push_back(argv[++i]);
    } else {
      while (i + 1 < argc && !looks_like_option(argv[i + 1])) add_words(argv[++i]);
      if (values.empty()) fail(option, "expects one or more values");
    }
    if (spec->arity == Arity::one && values.size() != 1)
      fail(option, "expects exactly one value (got '" + join(values, ",") + "')");

    const std::string name = spec->long_name;
    const std::string& v = values.empty() ? std::string() : values[0];
    if (name == "--input-size") o.input_size = parse_int_list(option, values, 1, "1 to 3 integers >= 2");
    else if (name == "--batch-size") o.batch = parse_int(option, v, 1, "an integer >= 1");
    else if (name == "--heads") o.heads = parse_int(option, v, 1, "an integer >= 1");
    else if (name == "--heads-kv") o.heads_kv = parse_int(option, v, 1, "an integer >= 1 dividing --heads");
    else if (name == "--dim") o.dim = parse_int(option, v, 1, "an integer >= 1");
    else if (name == "--dim-value") o.dim_value = parse_int(option, v, 1, "an integer >= 1");
    else if (name == "--window-size") raw_window = values;
    else if (name == "--stride") raw_stride = values;
    else if (name == "--dilation") raw_dilation = values;
    else if (name == "--causal") raw_causal = values;
    else if (name == "--dtype") {
      if (v == "fp32") o.dtype = DType::f32;
      else if (v == "fp16") o.dtype = DType::f16;
      else if (v == "bf16") o.dtype = DType::bf16;
      else if (v == "e4m3" || v == "e5m2")
        fail(option, "'" + v + "' is not supported: fp8 needs a Blackwell backend, which is not built "
                     "(allowed: fp32, fp16, bf16)");
      else fail(option, "'" + v + "' is not a data type (allowed: fp32, fp16, bf16)");
    } else if (name == "--backprop") o.backprop = true;
    else if (name == "--add-kv") o.additional_kv = parse_int(option, v, 0, "an integer >= 0");
    else if (name == "--backend") { check_backend_name(option, v, false); o.backend = v; }
    else if (name == "--fmha-backend") { check_backend_name(option, v, true); o.fmha_backend = v; }
    else if (name == "--device") {
      if (v != "cpu" && v != "cuda") fail(option, "'" + v + "' is not a device (allowed: cpu, cuda)");
      o.device = v;
    }
    else if (name == "--q-tile") o.q_tile = parse_int_list(option, values, 1, "positive integers, one per axis");
    else if (name == "--kv-tile") o.kv_tile = parse_int_list(option, values, 1, "positive integers, one per axis");
    else if (name == "--backward-q-tile")
      o.backward_q_tile = parse_int_list(option, values, 1, "positive integers, one per axis");
    else if (name == "--backward-kv-tile")
      o.backward_kv_tile = parse_int_list(option, values, 1, "positive integers, one per axis");
    else if (name == "--inputs") {
      if (v == "uniform") o.normal_inputs = false;
      else if (v == "normal") o.normal_inputs = true;
      else fail(option, "'" + v + "' is not an input distribution (allowed: uniform, normal)");
    }
    else if (name == "--schedule") {
      if (v == "non") o.schedule = KernelSchedule::non_persistent;
      else if (v == "coop") o.schedule = KernelSchedule::cooperative;
      else if (v == "pp") o.schedule = KernelSchedule::pingpong;
      else fail(option, "'" + v + "' is not a kernel schedule (allowed: non, coop, pp)");
    } else if (name == "--warmup-steps") o.warmup_steps = parse_int(option, v, 0, "an integer >= 0");
    else if (name == "--iterations") o.iterations = parse_int(option, v, 1, "an integer >= 1");
    else if (name == "--threads") {
      const int64_t threads = parse_int(option, v, 0, "0 (every hardware thread) or a positive integer");
      if (threads > INT_MAX)
        fail(option, v + " is too large (allowed: 0 to " + std::to_string(INT_MAX) + ")");
      o.num_threads = static_cast<int>(threads);
    } else if (name == "--dry-run") o.dry_run = true;
    else if (name == "--max-configs") o.max_configs = parse_int(option, v, 0, "0 (all) or a positive integer");
    else if (name == "--optimize") o.optimize = true;
    else if (name == "--optimize-warmup-steps")
      o.optimize_warmup_steps = parse_int(option, v, 0, "an integer >= 0");
    else if (name == "--json") {
      if (v.empty()) fail(option, "expects a file path (got an empty string)");
      o.json_path = v;
    } else if (name == "--quiet") { o.quiet = true; o.show_progress = false; }
    else if (name == "--no-progress") o.show_progress = false;
  }

  // Whole-command rules.
  if (o.input_size.empty())
    throw ValueError("-i/--input-size is required (allowed: 1 to 3 integers >= 2, e.g. -i 56 56)");
  if (o.input_size.size() > 3) {
    fail("-i/--input-size", std::to_string(o.input_size.size()) + " values " + tuple_string(o.input_size) +
                                " (allowed: 1 to 3 integers, for 1-D, 2-D or 3-D)");
  }
  const int rank = o.rank();
  o.window = per_axis("-w/--window-size",
                      parse_int_list("-w/--window-size", raw_window, 2, "integers >= 2, at most the input size"),
                      rank, o.input_size, int64_t{0});
  if (raw_window.empty()) o.window = o.input_size;
  o.stride = per_axis("-s/--stride", parse_int_list("-s/--stride", raw_stride, 1, "integers >= 1"), rank,
                      o.input_size, int64_t{1});
  o.dilation = per_axis("--dilation", parse_int_list("--dilation", raw_dilation, 1, "integers >= 1"), rank,
                        o.input_size, int64_t{1});
  std::vector<bool> causal_values;
  for (const std::string& w : raw_causal) causal_values.push_back(parse_bool("-c/--causal", w));
  o.causal = per_axis("-c/--causal", causal_values, rank, o.input_size, false);
  check_na_parameters(o);

  if (o.heads_kv == 0) o.heads_kv = o.heads;
  if (o.heads_kv > o.heads || o.heads % o.heads_kv != 0) {
    fail("--heads-kv", std::to_string(o.heads_kv) + " does not divide --heads " + std::to_string(o.heads) +
                           " (allowed: a divisor of the number of query heads)");
  }
  if (o.dim_value == 0) o.dim_value = o.dim;

  // A KV tile never comes alone. A lone query tile is checked against the backend in make_plan:
  // the cpu backend's configurations are query blocks without a KV tile.
  if (o.q_tile.empty() && !o.kv_tile.empty())
    fail("--kv-tile", "given without --q-tile (allowed: both of the pair, --q-tile alone, or neither)");
  if (o.backward_q_tile.empty() && !o.backward_kv_tile.empty()) {
    fail("--backward-kv-tile",
         "given without --backward-q-tile (allowed: both of the pair, --backward-q-tile alone, or neither)");
  }
  check_tile("--q-tile", o.q_tile, rank);
  check_tile("--kv-tile", o.kv_tile, rank);
  check_tile("--backward-q-tile", o.backward_q_tile, rank);
  check_tile("--backward-kv-tile", o.backward_kv_tile, rank);

  if (o.dry_run && o.optimize)
    throw ValueError("--dry-run and --optimize cannot be used together (allowed: one of them, or neither)");
  // The C++ backends run on one device each (flex-* are Python-only: resolve_backend rejects them).
  const bool cuda_backend = is_cuda_backend(o.backend);
  const bool cpu_backend = is_known_backend(o.backend) && !cuda_backend;
  if ((o.device == "cpu" && cuda_backend) || (o.device == "cuda" && cpu_backend)) {
    fail("--device", "'" + o.device + "' conflicts with --backend " + o.backend + ", which runs on " +
                         (cuda_backend ? "CUDA" : "CPU") + " tensors (allowed: " + (cuda_backend ? "cuda" : "cpu") +
                         ", or leave out --device)");
  }
  return o;
}

Device resolve_device(const ProfileOptions& o) {
  const Device cpu{}, gpu{DeviceKind::cuda, 0};
  std::string option, value;  // what asks for CUDA, if anything
  if (o.device == "cpu") return cpu;
  if (o.device == "cuda") {
    option = "--device";
    value = "cuda";
  } else if (!o.backend.empty()) {
    if (!is_cuda_backend(o.backend)) return cpu;
    option = "--backend";
    value = o.backend;
  }
  std::string why;
  const bool available = cuda_device_count(&why) > 0;
  if (option.empty()) return available ? gpu : cpu;  // automatic
  if (available) return gpu;
  const std::string runs = option == "--backend" ? " runs on CUDA tensors, but" : " is not available:";
  if (!cuda_built()) {
    throw RuntimeError(option + ": '" + value + "'" + runs + " this nattn was built without CUDA (allowed here: " +
                       (option == "--backend" ? "--backend reference or cpu" : "--device cpu") +
                       "; CUDA builds take -DNATTN_ENABLE_CUDA=ON)");
  }
  throw RuntimeError(option + ": '" + value + "'" + runs + " no CUDA device was found (" + why +
                     ") (allowed here: " + (option == "--backend" ? "--backend reference or cpu" : "--device cpu") +
                     ")");
}

NaProblem make_problem(const ProfileOptions& o) {
  NaProblem p;
  p.batch = o.batch;
  p.spatial = o.input_size;
  p.heads = o.heads;
  p.heads_kv = o.heads_kv;
  p.head_dim = o.dim;
  p.head_dim_v = o.dim_value;
  p.additional_kv = o.additional_kv;
  p.dtype = o.dtype;
  p.device = resolve_device(o);
  p.compute_capability = p.device.kind == DeviceKind::cuda ? cuda_compute_capability(p.device.index) : 0;
  p.params.rank = o.rank();
  for (int a = 0; a < o.rank(); ++a) {
    const size_t i = static_cast<size_t>(a);
    p.params.kernel_size[i] = o.window[i];
    p.params.stride[i] = o.stride[i];
    p.params.dilation[i] = o.dilation[i];
    p.params.is_causal[i] = o.causal[i];
  }
  p.requires_grad = o.backprop;
  p.deterministic = false;
  return p;
}

bool is_self_attention(const ProfileOptions& o) {
  for (int a = 0; a < o.rank(); ++a) {
    const size_t i = static_cast<size_t>(a);
    if (o.window[i] != o.input_size[i] || o.causal[i]) return false;
  }
  return true;
}

namespace {

// Which backends this nattn has, and where they run.
std::string built_backends_text() {
  std::vector<std::string> cpu_names, cuda_names;
  for (const BackendInfo& info : list_backends()) {
    if (!info.built || !info.supports_na) continue;
    (is_cuda_backend(info.name) ? cuda_names : cpu_names).push_back(info.name);
  }
  std::string text = "Built in this nattn:\n  CPU (host memory): " + join(cpu_names, ", ") + "\n";
  if (cuda_built() && !cuda_names.empty()) {
    text += "  CUDA (GPU 0 memory; inputs filled on the host and copied up): " + join(cuda_names, ", ") + "\n";
  } else {
    text += "  CUDA: none (built without CUDA; -DNATTN_ENABLE_CUDA=ON adds cutlass-* and hopper-*)\n";
  }
  return text;
}

}  // namespace

std::string help_text() {
  return R"(usage: nattn profile -i X [Y [Z]] [options]

Time neighborhood attention (NA) on a backend, like NATTEN's profiler (python -m natten.profiler).
Inputs are random heads-last tensors: Q [B, *S, H, D], K [B, *S, Hkv, D], V [B, *S, Hkv, Dv],
uniform in [-1, 1) (--inputs normal: standard normal), on the device of the backend: reference
and cpu run on the CPU; cutlass-*, hopper-* and blackwell-* on GPU 0.
)" + built_backends_text() + R"(
problem size:
  -i, --input-size X [Y [Z]]   token layout S, 1 to 3 integers (required)
  -b, --batch-size B           batch size [1]
  -n, --heads H                query heads [1]
      --heads-kv HKV           key/value heads, a divisor of H (GQA/MQA) [= heads]
  -d, --dim D                  query/key head dim [64]
      --dim-value DV           value head dim [= dim]

NA parameters (one value for every axis, or one per axis):
  -w, --window-size K...       window (kernel) size, 2 <= K <= X [= input size]
  -s, --stride S...            stride, 1 <= S <= K [1]
      --dilation D...          dilation, K * D <= X [1]
  -c, --causal C...            causal per axis: true/false, 1/0, yes/no [false]

run mode:
      --dtype {fp32,fp16,bf16} element type [fp32] (the CPU backends accumulate in fp32 for
                               every dtype; hopper-fna runs fp16/bf16 only)
      --backprop               also time the backward pass (separately from the forward)
      --add-kv N               N additional key/value tokens attended by every query [0]
      --inputs {uniform,normal}  input values: uniform in [-1, 1) or standard normal (like
                               torch.randn; a GPU's clock under power limits depends on the
                               data) [uniform]

backends and configurations:
      --backend NAME           NA backend (e.g. cpu, cutlass-fna, hopper-fna) [automatic among the
                               backends of the device: explained in the output]
      --device {cpu,cuda}      where the tensors live [the device of --backend; without --backend,
                               cuda (GPU 0) when this nattn has CUDA and a GPU is present, else cpu]
      --fmha-backend NAME      FMHA backend for additional KV; validated, but unused: nattn's NA
                               backends handle additional KV inside the NA op
      --q-tile T...            forward query tile shape (with --kv-tile)
      --kv-tile T...           forward key/value tile shape (with --q-tile)
      --backward-q-tile T...   backward query tile shape (with --backward-kv-tile)
      --backward-kv-tile T...  backward key/value tile shape (with --backward-q-tile)
      --schedule {non,coop,pp} kernel schedule (Hopper-style backends only; hopper-fna and
                               hopper-fmha run pp, the default, and coop)

timing:
      --warmup-steps N         untimed runs before timing [10]
      --iterations N           timed runs per operation; the median is reported [10]. Each run is
                               timed by the wall clock; on a GPU with cudaDeviceSynchronize before
                               and after each call, so that it counts the GPU work plus the launch
      --threads N              CPU threads (CPU backends), 0 = every hardware thread [0]

exploration:
      --dry-run                list the backends that can run the problem and their
                               forward/backward tile configurations; time nothing
      --max-configs N          configurations listed per table in --dry-run, 0 = all [10]
      --optimize               time every forward (and with --backprop backward) configuration,
                               report the best, then profile with it; each configuration gets
                               --optimize-warmup-steps untimed runs and the median of 3 timed runs
      --optimize-warmup-steps N  [5]

output:
      --json PATH              also write the results as JSON to PATH
      --no-progress            no progress line on stderr (it is also off when stderr is not a terminal)
      --quiet                  no progress line and no backend-selection explanation
  -h, --help                   show this help

Lists may be written with spaces or commas (-i 56 56, -i 56,56). A problem whose window covers the
whole input on every axis with no causal axis is plain self-attention; it is still profiled through
the NA op. Effective GFLOP/s count 2 * B * N * H * (window volume + additional KV) * (D + Dv) flops
per forward (an upper bound when an axis is causal).

exit status: 0 success, 1 runtime failure, 2 invalid usage or arguments.
)";
}

}  // namespace nattn::cli::profile
