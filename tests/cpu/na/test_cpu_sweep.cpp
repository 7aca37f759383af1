// Randomised sweeps of the cpu backend against the reference backend (fp64), through the public ops:
//   - thousands of NA problems (ranks 1-3, random kernel/stride/dilation/causal, GQA/MQA, Dv != D,
//     additional keys, batch 0-2, strided inputs and outputs, 1-2 threads, every tile config of the
//     finder, every kernel ISA, fp32/fp16/bf16), forward and backward;
//   - FMHA problems: causal and not, Sq != Skv, varlen with empty sequences and uncovered rows;
//   - determinism: bit-identical results for 1, 2 and 3 threads;
//   - argument errors of the backend itself (tile configs).
// Every output is poisoned with NaN, and storage outside a strided output view must stay NaN.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <sstream>

#include "cpu/na/cpu_test_util.h"
#include "nattn/backends.h"
#include "nattn/errors.h"

namespace nattn {
namespace {

using test::HostTensor;
using test::StridedTensor;

// fp32: both sides accumulate exactly enough that the differences are rounding noise (observed
// below 1e-6 of the magnitude); the bounds leave room for long windows. fp16/bf16: the outputs are
// rounded to the storage type, half an ulp relative to the element (4.9e-4 / 3.9e-3), and the
// inputs of the backward (out, dout) are 16-bit too; the bounds are 2e-3 / 1e-2 of max |reference|.
struct Tolerance {
  double out, lse, grad;
};
Tolerance tolerance_for(DType dtype) {
  if (dtype == DType::f16) return {2e-3, 1e-4, 2e-3};
  if (dtype == DType::bf16) return {1e-2, 1e-4, 1e-2};
  return {2e-5, 2e-5, 1e-4};
}

std::string tuple(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << ")";
  return s.str();
}

int64_t pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // uniform in [lo, hi]
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}
bool chance(std::mt19937_64& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

// Run options shared by both sweeps.
struct Execution {
  DType dtype = DType::f32;
  bool strided = false;
  int threads = 1;
  std::string isa;                  // "" = the backend's choice
  std::optional<TileConfig> config; // forward config; backward uses the same shape when valid
  std::optional<double> scale;

  std::string describe() const {
    std::ostringstream s;
    s << dtype_name(dtype) << (strided ? " strided" : "") << " threads=" << threads
      << " isa=" << (isa.empty() ? "auto" : isa)
      << (config ? " " + config->describe() : std::string(" default-config"));
    if (scale) s << " scale=" << *scale;
    return s.str();
  }
};

Execution random_execution(std::mt19937_64& rng) {
  Execution e;
  const int64_t d = pick(rng, 0, 9);
  e.dtype = d == 0 ? DType::f16 : d == 1 ? DType::bf16 : DType::f32;
  e.strided = chance(rng, 0.5);
  e.threads = static_cast<int>(pick(rng, 1, 2));
  if (chance(rng, 0.3)) {
    const std::vector<std::string> isas = test::cpu_isas();
    e.isa = isas[static_cast<size_t>(pick(rng, 0, static_cast<int64_t>(isas.size()) - 1))];
  }
  if (chance(rng, 0.25)) e.scale = chance(rng, 0.1) ? 0.0 : std::uniform_real_distribution<double>(-0.5, 1.0)(rng);
  return e;
}

std::optional<TileConfig> random_config(std::mt19937_64& rng, const std::vector<TileConfig>& configs) {
  if (configs.empty() || chance(rng, 0.4)) return std::nullopt;
  return configs[static_cast<size_t>(pick(rng, 0, static_cast<int64_t>(configs.size()) - 1))];
}

// The reference runs on one thread: it is the oracle, and idle threads spinning in its barriers
// only slow a loaded machine down.
RunOptions options_for(const Execution& e, bool cpu) {
  RunOptions o;
  o.backend = cpu ? "cpu" : "reference";
  o.num_threads = cpu ? e.threads : 1;
  if (cpu && e.config) o.config = *e.config;
  return o;
}

// An input: the strided tensor the cpu backend reads and a contiguous copy for the reference.
struct Input {
  StridedTensor cpu;
  HostTensor ref;
  Input(DType dtype, const std::vector<int64_t>& shape, std::mt19937_64& rng, bool strided)
      : cpu(dtype, shape, &rng, strided) {
    cpu.fill_random(rng);
    ref = cpu.contiguous();
  }
};

StridedTensor poisoned(DType dtype, const std::vector<int64_t>& shape, std::mt19937_64& rng, bool strided) {
  StridedTensor t(dtype, shape, &rng, strided);
  t.poison();
  return t;
}

// Largest scaled error seen per dtype (printed by the sweeps, for the record).
double g_worst[3] = {0, 0, 0};

// Compare one output; `label` names it in failures. Returns false on failure.
bool check(const std::string& label, const StridedTensor& got, const HostTensor& want, double tol,
           std::string* report) {
  const double err = test::scaled_error(got.values(), want.to_float());
  const int64_t stray = got.touched_padding();
  const int slot = want.view.dtype == DType::f16 ? 1 : want.view.dtype == DType::bf16 ? 2 : 0;
  if (label != "lse" && err > g_worst[slot]) g_worst[slot] = err;
  if (err <= tol && stray == 0) return true;
  std::ostringstream s;
  s << label << ": scaled error " << err << " (allowed " << tol << "), " << stray
    << " elements written outside the view; ";
  *report += s.str();
  return false;
}

// ---- neighborhood attention ----------------------------------------------------------------------

struct NaCase {
  int64_t batch = 1;
  std::vector<int64_t> spatial;
  int64_t heads = 1, heads_kv = 1, dim = 8, dim_v = 8, extra = 0;
  NaParams params;
  bool with_lse = true;

  std::string describe() const {
    std::ostringstream s;
    s << "batch " << batch << " spatial " << tuple(spatial) << " heads " << heads << "/" << heads_kv
      << " dim " << dim << "/" << dim_v << " extra " << extra << " " << params.describe()
      << (with_lse ? "" : " no-lse");
    return s.str();
  }
  NaProblem problem(DType dtype) const {
    NaProblem p;
    p.batch = batch;
    p.spatial = spatial;
    p.heads = heads;
    p.heads_kv = heads_kv;
    p.head_dim = dim;
    p.head_dim_v = dim_v;
    p.additional_kv = extra;
    p.dtype = dtype;
    p.params = params;
    return p;
  }
};

// Small problems (most of the sweep) run on one thread; `medium` ones are big enough (several
// MFLOP) for the backend to use every thread it is given.
NaCase random_na_case(std::mt19937_64& rng, bool medium = false) {
  NaCase c;
  const int rank = static_cast<int>(pick(rng, 1, 3));
  c.params.rank = rank;
  const int64_t max_extent = rank == 1 ? 48 : rank == 2 ? 12 : 7;
  const int64_t min_extent = medium ? (rank == 1 ? 150 : rank == 2 ? 14 : 6) : 2;
  for (int a = 0; a < rank; ++a) {
    const int64_t L = pick(rng, min_extent, medium ? 2 * min_extent : max_extent);
    const int64_t d = chance(rng, 0.6) ? 1 : pick(rng, 1, L / 2);
    const int64_t k_max = medium ? std::min<int64_t>(L / d, rank == 1 ? 80 : rank == 2 ? 9 : 5) : L / d;
    const int64_t k = pick(rng, 2, k_max);
    const int64_t s = chance(rng, 0.5) ? 1 : pick(rng, 1, k);
    c.spatial.push_back(L);
    c.params.kernel_size[static_cast<size_t>(a)] = k;
    c.params.stride[static_cast<size_t>(a)] = s;
    c.params.dilation[static_cast<size_t>(a)] = d;
    c.params.is_causal[static_cast<size_t>(a)] = chance(rng, 0.3);
  }
  c.batch = chance(rng, 0.03) && !medium ? 0 : pick(rng, 1, 2);
  c.heads_kv = pick(rng, 1, 2);
  c.heads = c.heads_kv * pick(rng, 1, 3);
  c.dim = medium ? pick(rng, 24, 64) : chance(rng, 0.3) ? 16 * pick(rng, 1, 2) : pick(rng, 1, 40);
  c.dim_v = chance(rng, 0.6) ? c.dim : pick(rng, medium ? 24 : 1, medium ? 64 : 40);
  c.extra = chance(rng, 0.3) ? pick(rng, 1, 20) : 0;
  c.with_lse = chance(rng, 0.8);
  return c;
}

// Forward flops (2 per multiply-add), as the backend estimates them to pick a thread count.
double na_flops(const NaCase& c) {
  double tokens = static_cast<double>(c.batch), window = 1;
  for (int a = 0; a < c.params.rank; ++a) {
    tokens *= static_cast<double>(c.spatial[static_cast<size_t>(a)]);
    window *= static_cast<double>(c.params.kernel_size[static_cast<size_t>(a)]);
  }
  return 2 * tokens * static_cast<double>(c.heads) * (window + static_cast<double>(c.extra)) *
         static_cast<double>(c.dim + c.dim_v);
}

std::vector<int64_t> na_shape(const NaCase& c, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{c.batch};
  s.insert(s.end(), c.spatial.begin(), c.spatial.end());
  s.push_back(heads);
  s.push_back(dim);
  return s;
}

// Forward and backward of one NA problem on cpu and reference; "" when they agree.
std::string run_na(const NaCase& c, const Execution& e, std::mt19937_64& rng) {
  const DType dt = e.dtype;
  const Tolerance tol = tolerance_for(dt);
  std::vector<int64_t> lse_shape = na_shape(c, c.heads, 1);
  lse_shape.pop_back();
  Input q(dt, na_shape(c, c.heads, c.dim), rng, e.strided);
  Input k(dt, na_shape(c, c.heads_kv, c.dim), rng, e.strided);
  Input v(dt, na_shape(c, c.heads_kv, c.dim_v), rng, e.strided);
  Input dout(dt, na_shape(c, c.heads, c.dim_v), rng, e.strided);
  std::optional<Input> xk, xv;
  if (c.extra > 0) {
    xk.emplace(dt, std::vector<int64_t>{c.batch, c.extra, c.heads_kv, c.dim}, rng, e.strided);
    xv.emplace(dt, std::vector<int64_t>{c.batch, c.extra, c.heads_kv, c.dim_v}, rng, e.strided);
  }
  test::IsaScope isa(e.isa);

  // forward
  HostTensor ref_out = test::poisoned_tensor(dt, na_shape(c, c.heads, c.dim_v));
  HostTensor ref_lse = test::poisoned_tensor(DType::f32, lse_shape);
  StridedTensor out = poisoned(dt, na_shape(c, c.heads, c.dim_v), rng, e.strided);
  StridedTensor lse = poisoned(DType::f32, lse_shape, rng, e.strided);
  NaForwardArgs f;
  f.params = c.params;
  f.scale = e.scale;
  f.query = q.ref.view;
  f.key = k.ref.view;
  f.value = v.ref.view;
  f.out = ref_out.view;
  f.lse = ref_lse.view;
  if (c.extra > 0) {
    f.additional_keys = xk->ref.view;
    f.additional_values = xv->ref.view;
  }
  na_forward(f, options_for(e, false));
  f.query = q.cpu.view;
  f.key = k.cpu.view;
  f.value = v.cpu.view;
  f.out = out.view;
  f.lse = c.with_lse ? std::optional<TensorView>(lse.view) : std::nullopt;
  if (c.extra > 0) {
    f.additional_keys = xk->cpu.view;
    f.additional_values = xv->cpu.view;
  }
  na_forward(f, options_for(e, true));
  std::string report;
  check("out", out, ref_out, tol.out, &report);
  if (c.with_lse) check("lse", lse, ref_lse, tol.lse, &report);

  // backward, both from the reference's out/lse
  StridedTensor given_out(dt, ref_out.view.shape, &rng, e.strided);
  StridedTensor given_lse(DType::f32, lse_shape, &rng, e.strided);
  for (int64_t i = 0; i < given_out.numel(); ++i) given_out.set(i, ref_out.get(i));
  for (int64_t i = 0; i < given_lse.numel(); ++i) given_lse.set(i, ref_lse.get(i));
  HostTensor rdq = test::poisoned_tensor(dt, q.ref.view.shape), rdk = test::poisoned_tensor(dt, k.ref.view.shape),
             rdv = test::poisoned_tensor(dt, v.ref.view.shape);
  StridedTensor dq = poisoned(dt, q.ref.view.shape, rng, e.strided), dk = poisoned(dt, k.ref.view.shape, rng, e.strided),
                dv = poisoned(dt, v.ref.view.shape, rng, e.strided);
  HostTensor rdxk, rdxv;
  StridedTensor dxk, dxv;
  NaBackwardArgs b;
  b.params = c.params;
  b.scale = e.scale;
  b.query = q.ref.view;
  b.key = k.ref.view;
  b.value = v.ref.view;
  b.out = ref_out.view;
  b.lse = ref_lse.view;
  b.dout = dout.ref.view;
  b.dquery = rdq.view;
  b.dkey = rdk.view;
  b.dvalue = rdv.view;
  if (c.extra > 0) {
    rdxk = test::poisoned_tensor(dt, xk->ref.view.shape);
    rdxv = test::poisoned_tensor(dt, xv->ref.view.shape);
    dxk = poisoned(dt, xk->ref.view.shape, rng, e.strided);
    dxv = poisoned(dt, xv->ref.view.shape, rng, e.strided);
    b.additional_keys = xk->ref.view;
    b.additional_values = xv->ref.view;
    b.dadditional_keys = rdxk.view;
    b.dadditional_values = rdxv.view;
  }
  na_backward(b, options_for(e, false));
  b.query = q.cpu.view;
  b.key = k.cpu.view;
  b.value = v.cpu.view;
  b.out = given_out.view;
  b.lse = given_lse.view;
  b.dout = dout.cpu.view;
  b.dquery = dq.view;
  b.dkey = dk.view;
  b.dvalue = dv.view;
  if (c.extra > 0) {
    b.additional_keys = xk->cpu.view;
    b.additional_values = xv->cpu.view;
    b.dadditional_keys = dxk.view;
    b.dadditional_values = dxv.view;
  }
  RunOptions bo = options_for(e, true);
  if (e.config) {  // the backward list may differ; use the shape only when valid there
    const std::vector<TileConfig> bwd = get_bwd_configs("cpu", c.problem(dt));
    if (std::find(bwd.begin(), bwd.end(), *e.config) == bwd.end()) bo.config.reset();
  }
  na_backward(b, bo);
  check("dq", dq, rdq, tol.grad, &report);
  check("dk", dk, rdk, tol.grad, &report);
  check("dv", dv, rdv, tol.grad, &report);
  if (c.extra > 0) {
    check("d_additional_keys", dxk, rdxk, tol.grad, &report);
    check("d_additional_values", dxv, rdxv, tol.grad, &report);
  }
  return report;
}

void na_sweep(uint64_t seed, int problems, bool medium) {
  std::mt19937_64 rng(seed);
  const int kProblems = problems;
  int failures = 0, with_extra = 0, causal = 0, gqa = 0, strided = 0, rank3 = 0;
  for (int i = 0; i < kProblems; ++i) {
    NaCase c = random_na_case(rng, medium);
    while (medium && na_flops(c) < 8e6) c = random_na_case(rng, medium);  // two threads or more
    Execution e = random_execution(rng);
    if (medium) e.threads = 2;
    e.config = random_config(rng, get_configs("cpu", c.problem(e.dtype)));
    with_extra += c.extra > 0;
    causal += c.params.is_causal[0] || c.params.is_causal[1] || c.params.is_causal[2];
    gqa += c.heads != c.heads_kv;
    strided += e.strided;
    rank3 += c.params.rank == 3;
    std::string report;
    try {
      report = run_na(c, e, rng);
    } catch (const std::exception& ex) {
      report = std::string("threw: ") + ex.what();
    }
    if (!report.empty()) {
      ADD_FAILURE() << "problem " << i << ": " << c.describe() << " | " << e.describe() << "\n  " << report;
      if (++failures >= 10) break;
    }
  }
  std::printf("largest scaled error: fp32 %.2e, fp16 %.2e, bf16 %.2e\n", g_worst[0], g_worst[1], g_worst[2]);
  // the generator covers what it should
  EXPECT_GT(with_extra, kProblems / 5);
  EXPECT_GT(causal, kProblems / 5);
  EXPECT_GT(gqa, kProblems / 4);
  EXPECT_GT(strided, kProblems / 3);
  EXPECT_GT(rank3, kProblems / 5);
}

TEST(CpuSweep, NeighborhoodAttentionAgainstReference) { na_sweep(20261124, 5000, false); }

// Problems large enough to run on two threads (the small ones above use one).
TEST(CpuSweep, MediumNeighborhoodAttentionOnTwoThreads) { na_sweep(424242, 60, true); }

// ---- standard attention --------------------------------------------------------------------------

struct FmhaCase {
  int64_t batch = 1, seqlen_q = 1, seqlen_kv = 1, heads = 1, heads_kv = 1, dim = 8, dim_v = 8;
  bool causal = false, with_lse = true;
  std::vector<int32_t> cu_q, cu_kv;  // varlen when not empty

  std::string describe() const {
    std::ostringstream s;
    s << "batch " << batch << " seqlen " << seqlen_q << "/" << seqlen_kv << " heads " << heads << "/"
      << heads_kv << " dim " << dim << "/" << dim_v << (causal ? " causal" : "") << (with_lse ? "" : " no-lse");
    if (!cu_q.empty()) {
      s << " cu_q (";
      for (int32_t x : cu_q) s << x << " ";
      s << ") cu_kv (";
      for (int32_t x : cu_kv) s << x << " ";
      s << ")";
    }
    return s.str();
  }
  FmhaProblem problem(DType dtype) const {
    FmhaProblem p;
    p.batch = batch;
    p.seqlen_q = seqlen_q;
    p.seqlen_kv = seqlen_kv;
    p.heads = heads;
    p.heads_kv = heads_kv;
    p.head_dim = dim;
    p.head_dim_v = dim_v;
    p.dtype = dtype;
    p.is_causal = causal;
    p.is_varlen = !cu_q.empty();
    return p;
  }
};

FmhaCase random_fmha_case(std::mt19937_64& rng, bool medium = false) {
  FmhaCase c;
  c.heads_kv = pick(rng, 1, 2);
  c.heads = c.heads_kv * pick(rng, 1, 3);
  c.dim = pick(rng, medium ? 24 : 1, medium ? 64 : 40);
  c.dim_v = chance(rng, 0.6) ? c.dim : pick(rng, medium ? 24 : 1, medium ? 64 : 40);
  c.causal = chance(rng, 0.5);
  c.with_lse = chance(rng, 0.8);
  if (chance(rng, 0.35)) {  // varlen: packed sequences, some empty, some rows after the last
    c.batch = 1;
    const int64_t nseq = pick(rng, 1, 4);
    c.cu_q = {0};
    c.cu_kv = {0};
    for (int64_t s = 0; s < nseq; ++s) {
      const int64_t longest = medium ? 150 : 20;
      c.cu_q.push_back(c.cu_q.back() + static_cast<int32_t>(chance(rng, 0.15) ? 0 : pick(rng, 1, longest)));
      c.cu_kv.push_back(c.cu_kv.back() + static_cast<int32_t>(chance(rng, 0.15) ? 0 : pick(rng, 1, longest)));
    }
    c.seqlen_q = c.cu_q.back() + pick(rng, 0, 3);
    c.seqlen_kv = c.cu_kv.back() + pick(rng, 0, 3);
    if (c.seqlen_q == 0) c.seqlen_q = 1;
    if (c.seqlen_kv == 0) c.seqlen_kv = 1;
  } else {
    c.batch = chance(rng, 0.05) && !medium ? 0 : pick(rng, 1, 2);
    c.seqlen_q = pick(rng, medium ? 150 : 1, medium ? 300 : 70);
    c.seqlen_kv = chance(rng, 0.3) ? c.seqlen_q : pick(rng, medium ? 150 : 1, medium ? 300 : 70);
  }
  return c;
}

std::string run_fmha(const FmhaCase& c, const Execution& e, std::mt19937_64& rng) {
  const DType dt = e.dtype;
  const Tolerance tol = tolerance_for(dt);
  Input q(dt, {c.batch, c.seqlen_q, c.heads, c.dim}, rng, e.strided);
  Input k(dt, {c.batch, c.seqlen_kv, c.heads_kv, c.dim}, rng, e.strided);
  Input v(dt, {c.batch, c.seqlen_kv, c.heads_kv, c.dim_v}, rng, e.strided);
  Input dout(dt, {c.batch, c.seqlen_q, c.heads, c.dim_v}, rng, e.strided);
  std::vector<int32_t> cu_q = c.cu_q, cu_kv = c.cu_kv;
  const bool varlen = !cu_q.empty();
  const std::vector<int64_t> cu_shape{static_cast<int64_t>(cu_q.size())};
  test::IsaScope isa(e.isa);
  const std::vector<int64_t> out_shape{c.batch, c.seqlen_q, c.heads, c.dim_v};
  const std::vector<int64_t> lse_shape{c.batch, c.seqlen_q, c.heads};

  HostTensor ref_out = test::poisoned_tensor(dt, out_shape), ref_lse = test::poisoned_tensor(DType::f32, lse_shape);
  StridedTensor out = poisoned(dt, out_shape, rng, e.strided), lse = poisoned(DType::f32, lse_shape, rng, e.strided);
  FmhaForwardArgs f;
  f.is_causal = c.causal;
  f.scale = e.scale;
  if (varlen) {
    f.cu_seqlens_q = TensorView(cu_q.data(), DType::i32, cu_shape);
    f.cu_seqlens_kv = TensorView(cu_kv.data(), DType::i32, cu_shape);
  }
  f.query = q.ref.view;
  f.key = k.ref.view;
  f.value = v.ref.view;
  f.out = ref_out.view;
  f.lse = ref_lse.view;
  fmha_forward(f, options_for(e, false));
  f.query = q.cpu.view;
  f.key = k.cpu.view;
  f.value = v.cpu.view;
  f.out = out.view;
  f.lse = c.with_lse ? std::optional<TensorView>(lse.view) : std::nullopt;
  fmha_forward(f, options_for(e, true));
  std::string report;
  check("out", out, ref_out, tol.out, &report);
  if (c.with_lse) check("lse", lse, ref_lse, tol.lse, &report);

  StridedTensor given_out(dt, out_shape, &rng, e.strided), given_lse(DType::f32, lse_shape, &rng, e.strided);
  for (int64_t i = 0; i < given_out.numel(); ++i) given_out.set(i, ref_out.get(i));
  for (int64_t i = 0; i < given_lse.numel(); ++i) given_lse.set(i, ref_lse.get(i));
  HostTensor rdq = test::poisoned_tensor(dt, q.ref.view.shape), rdk = test::poisoned_tensor(dt, k.ref.view.shape),
             rdv = test::poisoned_tensor(dt, v.ref.view.shape);
  StridedTensor dq = poisoned(dt, q.ref.view.shape, rng, e.strided), dk = poisoned(dt, k.ref.view.shape, rng, e.strided),
                dv = poisoned(dt, v.ref.view.shape, rng, e.strided);
  FmhaBackwardArgs b;
  b.is_causal = c.causal;
  b.scale = e.scale;
  b.cu_seqlens_q = f.cu_seqlens_q;
  b.cu_seqlens_kv = f.cu_seqlens_kv;
  b.query = q.ref.view;
  b.key = k.ref.view;
  b.value = v.ref.view;
  b.out = ref_out.view;
  b.lse = ref_lse.view;
  b.dout = dout.ref.view;
  b.dquery = rdq.view;
  b.dkey = rdk.view;
  b.dvalue = rdv.view;
  fmha_backward(b, options_for(e, false));
  b.query = q.cpu.view;
  b.key = k.cpu.view;
  b.value = v.cpu.view;
  b.out = given_out.view;
  b.lse = given_lse.view;
  b.dout = dout.cpu.view;
  b.dquery = dq.view;
  b.dkey = dk.view;
  b.dvalue = dv.view;
  RunOptions bo = options_for(e, true);
  if (e.config) {
    const std::vector<TileConfig> bwd = get_bwd_configs("cpu", c.problem(dt));
    if (std::find(bwd.begin(), bwd.end(), *e.config) == bwd.end()) bo.config.reset();
  }
  fmha_backward(b, bo);
  check("dq", dq, rdq, tol.grad, &report);
  check("dk", dk, rdk, tol.grad, &report);
  check("dv", dv, rdv, tol.grad, &report);
  return report;
}

void fmha_sweep(uint64_t seed, int problems, bool medium) {
  std::mt19937_64 rng(seed);
  const int kProblems = problems;
  int failures = 0, varlen = 0, causal = 0;
  for (int i = 0; i < kProblems; ++i) {
    const FmhaCase c = random_fmha_case(rng, medium);
    Execution e = random_execution(rng);
    if (medium) e.threads = 2;
    e.config = random_config(rng, get_configs("cpu", c.problem(e.dtype)));
    varlen += !c.cu_q.empty();
    causal += c.causal;
    std::string report;
    try {
      report = run_fmha(c, e, rng);
    } catch (const std::exception& ex) {
      report = std::string("threw: ") + ex.what();
    }
    if (!report.empty()) {
      ADD_FAILURE() << "problem " << i << ": " << c.describe() << " | " << e.describe() << "\n  " << report;
      if (++failures >= 10) break;
    }
  }
  std::printf("largest scaled error: fp32 %.2e, fp16 %.2e, bf16 %.2e\n", g_worst[0], g_worst[1], g_worst[2]);
  EXPECT_GT(varlen, kProblems / 5);
  EXPECT_GT(causal, kProblems / 4);
}

TEST(CpuSweep, StandardAttentionAgainstReference) { fmha_sweep(7, 1500, false); }

TEST(CpuSweep, MediumStandardAttentionOnTwoThreads) { fmha_sweep(77, 40, true); }

// ---- determinism ---------------------------------------------------------------------------------

std::vector<unsigned char> bytes_of(const HostTensor& t) {
  return std::vector<unsigned char>(t.bytes.begin(), t.bytes.end());
}

// Forward and backward of an NA problem; every output's bytes, in a fixed order.
std::vector<std::vector<unsigned char>> na_outputs(const NaCase& c, DType dt, int threads, const std::string& isa) {
  std::mt19937_64 rng(99);  // same inputs for every call
  std::vector<int64_t> lse_shape = na_shape(c, c.heads, 1);
  lse_shape.pop_back();
  const HostTensor q = test::random_tensor(dt, na_shape(c, c.heads, c.dim), rng);
  const HostTensor k = test::random_tensor(dt, na_shape(c, c.heads_kv, c.dim), rng);
  const HostTensor v = test::random_tensor(dt, na_shape(c, c.heads_kv, c.dim_v), rng);
  const HostTensor dout = test::random_tensor(dt, na_shape(c, c.heads, c.dim_v), rng);
  const HostTensor xk = test::random_tensor(dt, {c.batch, c.extra, c.heads_kv, c.dim}, rng);
  const HostTensor xv = test::random_tensor(dt, {c.batch, c.extra, c.heads_kv, c.dim_v}, rng);
  HostTensor out = test::poisoned_tensor(dt, na_shape(c, c.heads, c.dim_v));
  HostTensor lse = test::poisoned_tensor(DType::f32, lse_shape);
  HostTensor dq = test::poisoned_tensor(dt, q.view.shape), dk = test::poisoned_tensor(dt, k.view.shape),
             dv = test::poisoned_tensor(dt, v.view.shape), dxk = test::poisoned_tensor(dt, xk.view.shape),
             dxv = test::poisoned_tensor(dt, xv.view.shape);
  test::IsaScope scope(isa);
  RunOptions o;
  o.backend = "cpu";
  o.num_threads = threads;
  NaForwardArgs f;
  f.params = c.params;
  f.query = q.view;
  f.key = k.view;
  f.value = v.view;
  f.out = out.view;
  f.lse = lse.view;
  f.additional_keys = xk.view;
  f.additional_values = xv.view;
  na_forward(f, o);
  NaBackwardArgs b;
  b.params = c.params;
  b.query = q.view;
  b.key = k.view;
  b.value = v.view;
  b.out = out.view;
  b.lse = lse.view;
  b.dout = dout.view;
  b.dquery = dq.view;
  b.dkey = dk.view;
  b.dvalue = dv.view;
  b.additional_keys = xk.view;
  b.additional_values = xv.view;
  b.dadditional_keys = dxk.view;
  b.dadditional_values = dxv.view;
  na_backward(b, o);
  return {bytes_of(out), bytes_of(lse), bytes_of(dq), bytes_of(dk), bytes_of(dv), bytes_of(dxk), bytes_of(dxv)};
}

TEST(CpuDeterminism, NaBitIdenticalForAnyThreadCount) {
  std::vector<NaCase> cases(3);
  cases[0].batch = 2;
  cases[0].spatial = {300};
  cases[0].heads = 4;
  cases[0].heads_kv = 2;
  cases[0].dim = 32;
  cases[0].dim_v = 24;
  cases[0].extra = 9;
  cases[0].params = NaParams::uniform(1, 65, 3, 2, true);
  cases[1].spatial = {40, 48};
  cases[1].heads = 3;
  cases[1].heads_kv = 3;
  cases[1].dim = 32;
  cases[1].dim_v = 32;
  cases[1].extra = 5;
  cases[1].params = NaParams::uniform(2, 5);
  cases[1].params.stride = {1, 2, 1};
  cases[1].params.dilation = {2, 1, 1};
  cases[1].params.is_causal = {false, true, false};
  cases[2].spatial = {10, 12, 14};
  cases[2].heads = 2;
  cases[2].heads_kv = 1;
  cases[2].dim = 16;
  cases[2].dim_v = 24;
  cases[2].extra = 1;
  cases[2].params = NaParams::uniform(3, 3);
  cases[2].params.kernel_size = {3, 4, 5};
  for (const NaCase& c : cases) {
    for (DType dt : {DType::f32, DType::bf16}) {
      for (const std::string& isa : test::cpu_isas()) {
        SCOPED_TRACE(c.describe() + " " + dtype_name(dt) + " isa " + isa);
        const auto one = na_outputs(c, dt, 1, isa);
        for (int threads : {2, 3}) {
          const auto many = na_outputs(c, dt, threads, isa);
          for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(one[i] == many[i]) << "output " << i << " threads " << threads;
        }
      }
    }
  }
}

TEST(CpuDeterminism, FmhaBitIdenticalForAnyThreadCount) {
  for (bool varlen : {false, true}) {
    for (bool causal : {false, true}) {
      std::vector<std::vector<unsigned char>> first;
      for (int threads : {1, 2, 3}) {
        std::mt19937_64 rng(5);
        const int64_t sq = 230, skv = 190;
        std::vector<int32_t> cu_q{0, 100, 100, 220}, cu_kv{0, 60, 150, 190};
        const std::vector<int64_t> cu_shape{4};
        const int64_t batch = varlen ? 1 : 2;
        const HostTensor q = test::random_tensor(DType::f32, {batch, sq, 4, 24}, rng);
        const HostTensor k = test::random_tensor(DType::f32, {batch, skv, 2, 24}, rng);
        const HostTensor v = test::random_tensor(DType::f32, {batch, skv, 2, 16}, rng);
        const HostTensor dout = test::random_tensor(DType::f32, {batch, sq, 4, 16}, rng);
        HostTensor out = test::poisoned_tensor(DType::f32, {batch, sq, 4, 16});
        HostTensor lse = test::poisoned_tensor(DType::f32, {batch, sq, 4});
        HostTensor dq = test::poisoned_tensor(DType::f32, q.view.shape), dk = test::poisoned_tensor(DType::f32, k.view.shape),
                   dv = test::poisoned_tensor(DType::f32, v.view.shape);
        RunOptions o;
        o.backend = "cpu";
        o.num_threads = threads;
        FmhaForwardArgs f;
        f.query = q.view;
        f.key = k.view;
        f.value = v.view;
        f.out = out.view;
        f.lse = lse.view;
        f.is_causal = causal;
        if (varlen) {
          f.cu_seqlens_q = TensorView(cu_q.data(), DType::i32, cu_shape);
          f.cu_seqlens_kv = TensorView(cu_kv.data(), DType::i32, cu_shape);
        }
        fmha_forward(f, o);
        FmhaBackwardArgs b;
        b.query = q.view;
        b.key = k.view;
        b.value = v.view;
        b.out = out.view;
        b.lse = lse.view;
        b.dout = dout.view;
        b.dquery = dq.view;
        b.dkey = dk.view;
        b.dvalue = dv.view;
        b.is_causal = causal;
        b.cu_seqlens_q = f.cu_seqlens_q;
        b.cu_seqlens_kv = f.cu_seqlens_kv;
        fmha_backward(b, o);
        const std::vector<std::vector<unsigned char>> all{bytes_of(out), bytes_of(lse), bytes_of(dq), bytes_of(dk), bytes_of(dv)};
        if (threads == 1) {
          first = all;
        } else {
          for (size_t i = 0; i < all.size(); ++i)
            EXPECT_TRUE(all[i] == first[i]) << "varlen " << varlen << " causal " << causal << " output " << i;
        }
      }
    }
  }
}

// ---- edge cases ------------------------------------------------------------------------------------

// An unknown or unavailable NATTN_CPU_ISA falls back to the widest kernels (with a warning), and
// the results stay correct.
TEST(CpuEdge, UnknownIsaRequestFallsBack) {
  std::mt19937_64 rng(3);
  NaCase c;
  c.spatial = {9, 11};
  c.heads = 2;
  c.heads_kv = 1;
  c.dim = 12;
  c.dim_v = 12;
  c.params = NaParams::uniform(2, 3);
  Execution e;
  e.isa = "no-such-isa";
  EXPECT_EQ(run_na(c, e, rng), "");
}

// Zero-size batch: nothing to compute, nothing thrown.
TEST(CpuEdge, ZeroBatch) {
  std::mt19937_64 rng(4);
  NaCase c;
  c.batch = 0;
  c.spatial = {5, 6, 7};
  c.heads = 4;
  c.heads_kv = 2;
  c.dim = 8;
  c.dim_v = 4;
  c.extra = 3;
  c.params = NaParams::uniform(3, 3);
  EXPECT_EQ(run_na(c, Execution{}, rng), "");
  FmhaCase f;
  f.batch = 0;
  f.seqlen_q = 7;
  f.seqlen_kv = 5;
  f.causal = true;
  EXPECT_EQ(run_fmha(f, Execution{}, rng), "");
}

// Varlen rows outside every sequence come back as zeros (output, LSE and gradients), and a
// sequence with queries but no keys gives zero output and LSE -inf (both also compared with the
// reference by the sweep).
TEST(CpuEdge, VarlenUncoveredRowsAndEmptyKeys) {
  std::mt19937_64 rng(6);
  FmhaCase f;
  f.batch = 1;
  f.cu_q = {0, 4, 9};
  f.cu_kv = {0, 6, 6};  // the second sequence has no keys
  f.seqlen_q = 12;      // rows 9..11 belong to no sequence
  f.seqlen_kv = 8;
  f.heads = 2;
  f.heads_kv = 1;
  f.dim = 8;
  f.dim_v = 8;
  EXPECT_EQ(run_fmha(f, Execution{}, rng), "");
  const HostTensor q = test::random_tensor(DType::f32, {1, 12, 2, 8}, rng);
  const HostTensor k = test::random_tensor(DType::f32, {1, 8, 1, 8}, rng);
  const HostTensor v = test::random_tensor(DType::f32, {1, 8, 1, 8}, rng);
  HostTensor out = test::poisoned_tensor(DType::f32, {1, 12, 2, 8});
  HostTensor lse = test::poisoned_tensor(DType::f32, {1, 12, 2});
  std::vector<int32_t> cu_q = f.cu_q, cu_kv = f.cu_kv;
  FmhaForwardArgs a;
  a.query = q.view;
  a.key = k.view;
  a.value = v.view;
  a.out = out.view;
  a.lse = lse.view;
  a.cu_seqlens_q = TensorView(cu_q.data(), DType::i32, {3});
  a.cu_seqlens_kv = TensorView(cu_kv.data(), DType::i32, {3});
  RunOptions o;
  o.backend = "cpu";
  fmha_forward(a, o);
  for (int64_t row = 4; row < 12; ++row) {
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_EQ(lse.get(row * 2 + h), row < 9 ? -std::numeric_limits<float>::infinity() : 0.f) << "row " << row;
      for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(out.get((row * 2 + h) * 8 + c), 0.f) << "row " << row;
    }
  }
}

}  // namespace
}  // namespace nattn
