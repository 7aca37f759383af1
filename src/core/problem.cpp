#include "nattn/problem.h"

#include <sstream>

#include "nattn/errors.h"

namespace nattn {
namespace {

template <typename T>
std::string tuple_string(const T* values, int n) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < n; ++i) os << (i ? ", " : "") << values[i];
  os << (n == 1 ? ",)" : ")");
  return os.str();
}

std::string vector_tuple(const std::vector<int64_t>& v) {
  return tuple_string(v.data(), static_cast<int>(v.size()));
}

}  // namespace

NaParams NaParams::uniform(int rank, int64_t kernel_size, int64_t stride, int64_t dilation, bool is_causal) {
  NaParams p;
  p.rank = rank;
  p.kernel_size.fill(kernel_size);
  p.stride.fill(stride);
  p.dilation.fill(dilation);
  p.is_causal.fill(is_causal);
  return p;
}

std::string NaParams::describe() const {
  const int r = rank < 0 ? 0 : (rank > 3 ? 3 : rank);
  bool causal[3];
  for (int i = 0; i < 3; ++i) causal[i] = is_causal[static_cast<size_t>(i)];
  std::ostringstream os;
  os << "kernel_size=" << tuple_string(kernel_size.data(), r) << " stride=" << tuple_string(stride.data(), r)
     << " dilation=" << tuple_string(dilation.data(), r) << " is_causal=" << std::boolalpha
     << tuple_string(causal, r);
  return os.str();
}

const char* schedule_name(KernelSchedule s) {
  switch (s) {
    case KernelSchedule::none: return "";
    case KernelSchedule::non_persistent: return "non";
    case KernelSchedule::cooperative: return "coop";
    case KernelSchedule::pingpong: return "pp";
  }
  return "";
}

KernelSchedule parse_schedule(const std::string& s) {
  if (s.empty()) return KernelSchedule::none;
  if (s == "non") return KernelSchedule::non_persistent;
  if (s == "coop") return KernelSchedule::cooperative;
  if (s == "pp") return KernelSchedule::pingpong;
  throw ValueError("kernel_schedule '" + s + "' is not valid; allowed: non, coop, pp");
}

std::string TileConfig::describe() const {
  std::string out;
  if (q_tile.empty() && kv_tile.empty()) {
    out = "(no tile parameters)";
  } else {
    out = "q_tile=" + vector_tuple(q_tile);
    if (!kv_tile.empty()) out += " kv_tile=" + vector_tuple(kv_tile);
  }
  if (schedule != KernelSchedule::none) out += std::string(" schedule=") + schedule_name(schedule);
  return out;
}

int64_t NaProblem::tokens() const {
  int64_t n = 1;
  for (int64_t s : spatial) n *= s;
  return n;
}

std::string NaProblem::describe() const {
  std::ostringstream os;
  os << "NA " << rank() << "-D batch=" << batch << " spatial=" << vector_tuple(spatial) << " heads=" << heads
     << " heads_kv=" << heads_kv << " head_dim=" << head_dim << " head_dim_v=" << head_dim_v << " "
     << params.describe() << " additional_kv=" << additional_kv << " dtype=" << dtype_name(dtype)
     << " device=" << device_name(device);
  return os.str();
}

std::string FmhaProblem::describe() const {
  std::ostringstream os;
  os << "FMHA batch=" << batch << " seqlen_q=" << seqlen_q << " seqlen_kv=" << seqlen_kv << " heads=" << heads
     << " heads_kv=" << heads_kv << " head_dim=" << head_dim << " head_dim_v=" << head_dim_v
     << " is_causal=" << std::boolalpha << is_causal << " varlen=" << is_varlen
     << " dtype=" << dtype_name(dtype) << " device=" << device_name(device);
  return os.str();
}

}  // namespace nattn
