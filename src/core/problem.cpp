#include "nattn/problem.h"

#include <string>

#include "nattn/errors.h"

namespace nattn {
namespace {

// Messages are built with std::to_string, not iostreams: inside some host processes (a PyTorch
// wheel's Python on Ubuntu 24.04) formatting numbers through an ostream in our extension crashed
// (std::ostream::_M_insert<long>; cause not established), and these strings end up in every error
// message.
std::string item(int64_t v) { return std::to_string(v); }
std::string item(int v) { return std::to_string(v); }
std::string item(bool v) { return v ? "true" : "false"; }

template <typename T>
std::string tuple_string(const T* values, int n) {
  std::string s = "(";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + item(values[i]);
  return s + (n == 1 ? ",)" : ")");
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
  return "kernel_size=" + tuple_string(kernel_size.data(), r) + " stride=" + tuple_string(stride.data(), r) +
         " dilation=" + tuple_string(dilation.data(), r) + " is_causal=" + tuple_string(causal, r);
}

std::string SubDomain::describe(int rank) const {
  const int r = rank < 0 ? 0 : (rank > 3 ? 3 : rank);
  return "global_extent=" + tuple_string(global_extent.data(), r) + " q_origin=" + tuple_string(q_origin.data(), r) +
         " kv_origin=" + tuple_string(kv_origin.data(), r);
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
  return "NA " + item(rank()) + "-D batch=" + item(batch) + " spatial=" + vector_tuple(spatial) +
         " heads=" + item(heads) + " heads_kv=" + item(heads_kv) + " head_dim=" + item(head_dim) +
         " head_dim_v=" + item(head_dim_v) + " " + params.describe() + " additional_kv=" + item(additional_kv) +
         " dtype=" + dtype_name(dtype) + " device=" + device_name(device) +
         (sub_domain ? " sub_domain(" + sub_domain->describe(rank()) + ")" : std::string());
}

std::string FmhaProblem::describe() const {
  return "FMHA batch=" + item(batch) + " seqlen_q=" + item(seqlen_q) + " seqlen_kv=" + item(seqlen_kv) +
         " heads=" + item(heads) + " heads_kv=" + item(heads_kv) + " head_dim=" + item(head_dim) +
         " head_dim_v=" + item(head_dim_v) + " is_causal=" + item(is_causal) + " varlen=" + item(is_varlen) +
         " dtype=" + dtype_name(dtype) + " device=" + device_name(device);
}

}  // namespace nattn
