// GPU tests of the Hopper (sm_90a) FMHA forward kernel (src/cuda/sm90/fmha_fwd) against the CPU
// `reference` backend on host copies: random inputs (never zero), outputs poisoned with NaN,
// Sq / Skv in {1, 77, 128, 1000, 4096}, causal and not, GQA, padded (strided) layouts, fp16 / bf16,
// head dims 32 / 64 / 128 / 256, variable-length batches; plus the argument checks (NotImplementedError / ValueError, never an abort).
// Skipped without a compute capability 9.0 GPU; instantiations not compiled into this build are
// reported and skipped.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cuda/cuda_test_util.h"
#include "cuda/sm90/fmha_fwd/fmha_fwd_sm90.h"
#include "cuda/sm90/fmha_fwd/params.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::Dual;
using test::gather;
using test::HostTensor;

class HopperFmha : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_gpu()) GTEST_SKIP() << "no CUDA device";
    if (test::gpu_cc() != 90) GTEST_SKIP() << "needs compute capability 9.0, found " << test::gpu_cc();
  }
};

double out_tol(DType t) { return t == DType::f16 ? 2e-3 : 1.2e-2; }
constexpr double kLseTol = 2e-2;

struct Case {
  int64_t batch = 2, sq = 128, skv = 128, heads = 2, heads_kv = 2, d = 64, pad = 0;
  bool causal = false, with_lse = true;
  bool pingpong = true;  // the consumer schedule (false: "coop")
  std::optional<double> scale;
  std::string name() const {
    return "b" + std::to_string(batch) + "_sq" + std::to_string(sq) + "_skv" + std::to_string(skv) + "_h" +
           std::to_string(heads) + "/" + std::to_string(heads_kv) + "_d" + std::to_string(d) +
           (causal ? "_causal" : "") + (pad ? "_pad" + std::to_string(pad) : "") + (with_lse ? "" : "_nolse") +
           (scale ? "_scale" : "") + (pingpong ? "" : "_coop");
  }
};

using test::compare;
using test::Errors;

// Runs one case on the GPU and on the reference; returns false (and reports) when the kernel of
// this (dtype, head dim) is not compiled into this build.
bool run_case(const Case& c, DType dtype, uint64_t seed) {
  if (!cuda::sm90::fmha_forward_compiled(dtype, static_cast<int>(c.d))) {
    std::printf("  [not compiled] %s %s\n", c.name().c_str(), dtype_name(dtype));
    return false;
  }
  std::mt19937_64 rng(seed);
  Dual q, k, v, o, lse;
  q.init(dtype, {c.batch, c.sq, c.heads, c.d}, c.pad, &rng, false);
  k.init(dtype, {c.batch, c.skv, c.heads_kv, c.d}, c.pad, &rng, false);
  v.init(dtype, {c.batch, c.skv, c.heads_kv, c.d}, c.pad, &rng, false);
  o.init(dtype, {c.batch, c.sq, c.heads, c.d}, c.pad, nullptr, true);
  lse.init(DType::f32, {c.batch, c.sq, c.heads}, 0, nullptr, true);
  FmhaForwardArgs da, ha;
  da.is_causal = ha.is_causal = c.causal;
  da.scale = ha.scale = c.scale;
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview;
  if (c.with_lse) da.lse = lse.dview;
  HostTensor ref_o = o.host, ref_l = lse.host;
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview;
  ha.out = TensorView(ref_o.view.data, dtype, o.hview.shape, o.hview.strides);
  ha.lse = TensorView(ref_l.view.data, DType::f32, lse.hview.shape, lse.hview.strides);

  cudaStream_t stream = nullptr;
  test::check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  cuda::sm90::fmha_forward(da, stream, c.pingpong);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  test::check_cuda(sync, "fmha_forward (kernel)");

  RunOptions ropt;
  ropt.backend = "reference";
  fmha_forward(ha, ropt);
  const HostTensor go = o.fetch(), gl = lse.fetch();
  const std::vector<double> g_lse = c.with_lse ? gather(gl, lse.hview) : gather(ref_l, lse.hview);
  const Errors e = compare(gather(go, o.hview), gather(ref_o, o.hview), g_lse, gather(ref_l, lse.hview));
  std::printf("  %-42s %-5s out rel L2 %.3g  lse max abs %.3g\n", c.name().c_str(), dtype_name(dtype), e.out_rel_l2,
              e.lse_max_abs);
  EXPECT_EQ(e.nan, 0) << c.name() << " " << dtype_name(dtype) << ": non-finite outputs";
  EXPECT_LE(e.out_rel_l2, out_tol(dtype)) << c.name() << " " << dtype_name(dtype);
  EXPECT_LE(e.lse_max_abs, kLseTol) << c.name() << " " << dtype_name(dtype);
  if (!c.with_lse) {  // the LSE buffer was not passed: it must still be all NaN
    const std::vector<double> untouched = gather(gl, lse.hview);
    for (double x : untouched)
      if (!std::isnan(x)) {
        ADD_FAILURE() << c.name() << ": lse written although not requested";
        break;
      }
  }
  // Padding elements of the output storage (pad > 0) must be untouched (still NaN).
  if (c.pad > 0) {
    int64_t touched = 0;
    const std::vector<double> all = gather(go, TensorView(go.view.data, dtype, go.view.shape, go.view.strides));
    const std::vector<double> inside = gather(go, o.hview);
    int64_t finite_all = 0;
    for (double x : all) finite_all += std::isfinite(x) ? 1 : 0;
    for (double x : inside) touched += std::isfinite(x) ? 1 : 0;
    EXPECT_EQ(finite_all, touched) << c.name() << ": wrote outside the output view";
  }
  return true;
}

// The (Sq, Skv, causal) grid over {1, 77, 128, 1000, 4096}.
std::vector<Case> sequence_cases(int64_t d) {
  struct Sz { int64_t sq, skv; bool causal; };
  const std::vector<Sz> sizes = {
      {1, 1, false},       {1, 77, true},        {1, 4096, false},    {77, 77, false},    {77, 77, true},
      {77, 1000, false},   {77, 1000, true},     {128, 128, true},    {128, 77, false},   {128, 4096, true},
      {1000, 1000, false}, {1000, 1000, true},   {1000, 77, true},    {1000, 128, false}, {4096, 1, false},
      {4096, 4096, false}, {4096, 4096, true},   {128, 1, true},      {1000, 4096, true}};
  std::vector<Case> cases;
  for (const Sz& s : sizes) {
    Case c;
    c.sq = s.sq; c.skv = s.skv; c.causal = s.causal; c.d = d;
    cases.push_back(c);
  }
  return cases;
}

void run_all(const std::vector<Case>& cases, uint64_t seed) {
  int ran = 0, skipped = 0;
  for (const Case& c : cases)
    for (DType t : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name() + " " + dtype_name(t));
      try {
        (run_case(c, t, seed++) ? ran : skipped)++;
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name() << " " << dtype_name(t) << ": " << e.what();
      }
    }
  std::printf("  %d cases run, %d not compiled in this build\n", ran, skipped);
  if (ran == 0) GTEST_SKIP() << "no instantiation of these cases is compiled into this build";
}

TEST_F(HopperFmha, SequenceLengthsHd32) { run_all(sequence_cases(32), 500); }
TEST_F(HopperFmha, SequenceLengthsHd64) { run_all(sequence_cases(64), 1000); }
TEST_F(HopperFmha, SequenceLengthsHd128) { run_all(sequence_cases(128), 2000); }
TEST_F(HopperFmha, SequenceLengthsHd256) { run_all(sequence_cases(256), 2500); }

TEST_F(HopperFmha, GqaPaddedScaleNoLse) {
  std::vector<Case> cases;
  for (int64_t d : {32, 64, 128, 256}) {
    { Case c; c.d = d; c.heads = 8; c.heads_kv = 2; c.sq = 1000; c.skv = 1000; c.causal = true; cases.push_back(c); }
    { Case c; c.d = d; c.heads = 4; c.heads_kv = 1; c.sq = 300; c.skv = 777; cases.push_back(c); }
    { Case c; c.d = d; c.heads = 3; c.heads_kv = 3; c.sq = 200; c.skv = 333; c.pad = 8; c.causal = true;
      cases.push_back(c); }
    { Case c; c.d = d; c.batch = 1; c.heads = 2; c.heads_kv = 1; c.sq = 257; c.skv = 129; c.with_lse = false;
      c.scale = 0.3; cases.push_back(c); }
    { Case c; c.d = d; c.batch = 3; c.heads = 1; c.heads_kv = 1; c.sq = 129; c.skv = 4096; c.scale = 1.0;
      cases.push_back(c); }
  }
  run_all(cases, 3000);
}

// Variable length: packed sequences of assorted lengths (0, 1, < 128, not multiples of 128, more
// queries than keys and the reverse, sequences without keys), rows past the last sequence, GQA,
// causal and not, with and without the max_seqlen_q hint. Per sequence against the reference:
// relative L2 of its output rows and the LSE; rows without keys give O = 0 and LSE = -inf, rows
// outside every sequence O = 0 and LSE = 0, exactly.
struct VarlenCase {
  std::vector<int> q_lens, kv_lens;
  int64_t extra_q = 0, extra_kv = 0, heads = 4, heads_kv = 2, d = 64;
  bool causal = false, hint = false, with_lse = true;
};

void run_varlen(const VarlenCase& c, DType dtype, uint64_t seed) {
  const std::string name = std::string(c.causal ? "causal" : "full") + (c.hint ? "_hint" : "") + "_d" +
                           std::to_string(c.d) + "_" + dtype_name(dtype);
  if (!cuda::sm90::fmha_forward_compiled(dtype, static_cast<int>(c.d))) {
    std::printf("  [not compiled] varlen %s\n", name.c_str());
    return;
  }
  const size_t n = c.q_lens.size();
  std::vector<int32_t> cu_q(n + 1, 0), cu_kv(n + 1, 0);
  int max_q = 0;
  for (size_t s = 0; s < n; ++s) {
    cu_q[s + 1] = cu_q[s] + c.q_lens[s];
    cu_kv[s + 1] = cu_kv[s] + c.kv_lens[s];
    max_q = std::max(max_q, c.q_lens[s]);
  }
  const int64_t tq = cu_q[n] + c.extra_q, tkv = cu_kv[n] + c.extra_kv;
  std::mt19937_64 rng(seed);
  Dual q, k, v, o, lse;
  q.init(dtype, {1, tq, c.heads, c.d}, 0, &rng, false);
  k.init(dtype, {1, tkv, c.heads_kv, c.d}, 0, &rng, false);
  v.init(dtype, {1, tkv, c.heads_kv, c.d}, 0, &rng, false);
  o.init(dtype, {1, tq, c.heads, c.d}, 0, nullptr, true);
  lse.init(DType::f32, {1, tq, c.heads}, 0, nullptr, true);
  void* dcu = nullptr;
  test::check_cuda(cudaMalloc(&dcu, 2 * (n + 1) * sizeof(int32_t)), "cudaMalloc");
  test::check_cuda(cudaMemcpy(dcu, cu_q.data(), (n + 1) * sizeof(int32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  test::check_cuda(cudaMemcpy(static_cast<int32_t*>(dcu) + n + 1, cu_kv.data(), (n + 1) * sizeof(int32_t),
                              cudaMemcpyHostToDevice),
                   "cudaMemcpy");
  const std::vector<int64_t> cu_shape = {static_cast<int64_t>(n + 1)};
  const Device gpu{DeviceKind::cuda, 0};
  FmhaForwardArgs da, ha;
  da.is_causal = ha.is_causal = c.causal;
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview;
  if (c.with_lse) da.lse = lse.dview;
  da.cu_seqlens_q = TensorView(dcu, DType::i32, cu_shape, gpu);
  da.cu_seqlens_kv = TensorView(static_cast<int32_t*>(dcu) + n + 1, DType::i32, cu_shape, gpu);
  if (c.hint) da.max_seqlen_q = max_q;
  HostTensor ref_o = o.host, ref_l = lse.host;
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview;
  ha.out = TensorView(ref_o.view.data, dtype, o.hview.shape, o.hview.strides);
  ha.lse = TensorView(ref_l.view.data, DType::f32, lse.hview.shape, lse.hview.strides);
  ha.cu_seqlens_q = TensorView(cu_q.data(), DType::i32, cu_shape);
  ha.cu_seqlens_kv = TensorView(cu_kv.data(), DType::i32, cu_shape);

  cuda::sm90::fmha_forward(da, nullptr);
  const cudaError_t sync = cudaDeviceSynchronize();
  cudaFree(dcu);
  test::check_cuda(sync, "fmha_forward varlen (kernel)");
  RunOptions ropt;
  ropt.backend = "reference";
  fmha_forward(ha, ropt);
  const std::vector<double> go = gather(o.fetch(), o.hview), gl = gather(lse.fetch(), lse.hview);
  const std::vector<double> ro = gather(ref_o, o.hview), rl = gather(ref_l, lse.hview);
  const int64_t row = c.heads * c.d;  // elements of one token's output
  double worst = 0, worst_lse = 0;
  int64_t bad_exact = 0;
  // Query rows [r0, r1): relative L2 of their outputs (exact match where the reference is 0 on a
  // row without keys or outside every sequence) and the LSE difference.
  auto check_rows = [&](int64_t r0, int64_t r1, bool exact) {
    double num = 0, den = 0;
    for (int64_t i = r0 * row; i < r1 * row; ++i) {
      const double d = go[static_cast<size_t>(i)] - ro[static_cast<size_t>(i)];
      if (exact && go[static_cast<size_t>(i)] != ro[static_cast<size_t>(i)]) ++bad_exact;
      if (!std::isfinite(go[static_cast<size_t>(i)])) ++bad_exact;
      num += d * d;
      den += ro[static_cast<size_t>(i)] * ro[static_cast<size_t>(i)];
    }
    if (r1 > r0 && !exact) worst = std::max(worst, std::sqrt(num / (den > 0 ? den : 1)));
    if (!c.with_lse) return;
    for (int64_t i = r0 * c.heads; i < r1 * c.heads; ++i) {
      const double g = gl[static_cast<size_t>(i)], r = rl[static_cast<size_t>(i)];
      if (exact || std::isinf(r)) {
        if (!(g == r)) ++bad_exact;
      } else {
        worst_lse = std::max(worst_lse, std::isfinite(g) ? std::fabs(g - r) : 1e30);
      }
    }
  };
  for (size_t s = 0; s < n; ++s) check_rows(cu_q[s], cu_q[s + 1], c.kv_lens[s] == 0);
  check_rows(cu_q[n], tq, true);
  std::printf("  varlen %-22s worst sequence rel L2 %.3g  lse max abs %.3g\n", name.c_str(), worst, worst_lse);
  EXPECT_EQ(bad_exact, 0) << name << ": non-finite outputs, or rows without keys / outside every sequence not exact";
  EXPECT_LE(worst, out_tol(dtype)) << name;
  EXPECT_LE(worst_lse, kLseTol) << name;
  if (!c.with_lse) {
    for (double x : gather(lse.fetch(), lse.hview))
      if (!std::isnan(x)) {
        ADD_FAILURE() << name << ": lse written although not requested";
        break;
      }
  }
}

TEST_F(HopperFmha, Varlen) {
  std::vector<VarlenCase> cases;
  for (int64_t d : {32, 64, 128, 256}) {
    for (bool causal : {false, true}) {
      VarlenCase c;
      c.q_lens = {1, 77, 128, 300, 0, 1000, 5};
      c.kv_lens = {5, 77, 0, 129, 10, 1000, 700};
      c.extra_q = 7;
      c.extra_kv = 3;
      c.d = d;
      c.causal = causal;
      cases.push_back(c);
    }
    VarlenCase h;  // with the hint, MQA, no LSE, one long sequence
    h.q_lens = {513, 128, 1, 2049};
    h.kv_lens = {100, 4000, 256, 2049};
    h.heads = 3;
    h.heads_kv = 1;
    h.d = d;
    h.causal = true;
    h.hint = true;
    h.with_lse = false;
    cases.push_back(h);
  }
  uint64_t seed = 5000;
  for (const VarlenCase& c : cases)
    for (DType t : {DType::f16, DType::bf16}) {
      try {
        run_varlen(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "varlen: " << e.what();
      }
    }
}

// Problems with several (head, sequence) pairs per Q tile, for the pair-loop and persistent tests:
// GQA, causal, padded layouts, no LSE, head dims 32-256.
std::vector<Case> multi_pair_cases() {
  std::vector<Case> cases;
  for (int64_t d : {32, 64, 128, 256}) {
    { Case c; c.d = d; c.batch = 3; c.heads = 8; c.heads_kv = 2; c.sq = 1000; c.skv = 1000; c.causal = true;
      cases.push_back(c); }
    { Case c; c.d = d; c.batch = 2; c.heads = 3; c.heads_kv = 3; c.sq = 200; c.skv = 333; c.pad = 8;
      c.with_lse = false; cases.push_back(c); }
  }
  return cases;
}

// A causal varlen batch with empty sequences, sequences that some Q tiles do not reach and extra
// uncovered query rows, at head dims 64 and 256 in fp16 and bf16.
void run_skipping_varlen(int seed) {
  VarlenCase v;
  v.q_lens = {1, 77, 128, 300, 0, 1000, 5};
  v.kv_lens = {5, 77, 0, 129, 10, 1000, 700};
  v.extra_q = 7;
  v.causal = true;
  for (int64_t d : {64, 256}) {
    v.d = d;
    for (DType t : {DType::f16, DType::bf16}) {
      try {
        run_varlen(v, t, seed);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "varlen: " << e.what();
      }
    }
  }
}

// Several (head, sequence) pairs per CTA (NATTN_HOPPER_PAIRS_PER_CTA; the automatic choice keeps
// one on these small problems): counts that do not divide the pairs, GQA, causal, padded layouts,
// no LSE, and varlen batches whose sequences are skipped by some pairs' Q tiles.
TEST_F(HopperFmha, PairsPerCta) {
  const std::vector<Case> cases = multi_pair_cases();
  for (const char* k : {"2", "5", "16"}) {
    setenv("NATTN_HOPPER_PAIRS_PER_CTA", k, 1);
    std::printf("  NATTN_HOPPER_PAIRS_PER_CTA=%s\n", k);
    run_all(cases, 7000);
    run_skipping_varlen(7100);
  }
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// Persistent scheduling (NATTN_HOPPER_PERSISTENT=n: at most n CTAs walk the units): causal (Q tiles
// heaviest first, their units spread over the CTAs), GQA, padded layouts, no LSE, varlen batches
// whose sequences some Q tiles skip, with one and several pairs per CTA.
TEST_F(HopperFmha, Persistent) {
  const std::vector<Case> cases = multi_pair_cases();
  for (const char* n : {"5", "1"})
    for (const char* k : {"1", "3"}) {
      setenv("NATTN_HOPPER_PERSISTENT", n, 1);
      setenv("NATTN_HOPPER_PAIRS_PER_CTA", k, 1);
      std::printf("  NATTN_HOPPER_PERSISTENT=%s NATTN_HOPPER_PAIRS_PER_CTA=%s\n", n, k);
      run_all(cases, 7200);
      run_skipping_varlen(7300);
    }
  unsetenv("NATTN_HOPPER_PERSISTENT");
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// The cooperative schedule (config "coop"; every other test runs the default "pp"): the sequence
// grid at head dims 64 and 256 and the multi-pair cases (GQA, causal, padding, no LSE), also with
// several pairs per CTA and persistent.
TEST_F(HopperFmha, CooperativeSchedule) {
  std::vector<Case> cases = sequence_cases(64);
  for (const Case& c : sequence_cases(256)) cases.push_back(c);
  for (const Case& c : multi_pair_cases()) cases.push_back(c);
  for (Case& c : cases) c.pingpong = false;
  run_all(cases, 7400);
  setenv("NATTN_HOPPER_PAIRS_PER_CTA", "3", 1);
  setenv("NATTN_HOPPER_PERSISTENT", "5", 1);
  std::vector<Case> coop = multi_pair_cases();
  for (Case& c : coop) c.pingpong = false;
  run_all(coop, 7600);
  unsetenv("NATTN_HOPPER_PERSISTENT");
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// Host only: the CTAs of a persistent launch. A requested value wins over NATTN_HOPPER_PERSISTENT;
// 1 = one CTA per SM, n > 1 = at most n (and at most the SMs), 0 or unset = not persistent.
TEST(HopperPersistent, Ctas) {
  using cuda::sm90::persistent_ctas;
  unsetenv("NATTN_HOPPER_PERSISTENT");
  EXPECT_EQ(persistent_ctas(-1, 132), 0);
  EXPECT_EQ(persistent_ctas(0, 132), 0);
  EXPECT_EQ(persistent_ctas(1, 132), 132);
  EXPECT_EQ(persistent_ctas(5, 132), 5);
  EXPECT_EQ(persistent_ctas(500, 132), 132);
  setenv("NATTN_HOPPER_PERSISTENT", "7", 1);
  EXPECT_EQ(persistent_ctas(-1, 132), 7);
  EXPECT_EQ(persistent_ctas(0, 132), 0);  // requested off wins
  setenv("NATTN_HOPPER_PERSISTENT", "1", 1);
  EXPECT_EQ(persistent_ctas(-1, 114), 114);
  setenv("NATTN_HOPPER_PERSISTENT", "0", 1);
  EXPECT_EQ(persistent_ctas(-1, 132), 0);
  unsetenv("NATTN_HOPPER_PERSISTENT");
}

// Host only (no GPU on these paths): the pairs-per-CTA choice. A requested count wins over
// NATTN_HOPPER_PAIRS_PER_CTA, which wins over the automatic rule; long walks (> 16 KV tiles) get
// one pair; the result is at least ceil(pairs / 65535) (grid y) and at most the pairs.
TEST(HopperPairsPerCta, Choice) {
  using cuda::sm90::choose_pairs_per_cta;
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 4, 7), 7);
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 1000, 7), 7);   // requested: even for long walks
  EXPECT_EQ(choose_pairs_per_cta(10, 5, 4, 7), 5);        // at most the pairs
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 17, 0), 1);     // automatic, long walk
  EXPECT_EQ(choose_pairs_per_cta(1, 200000, 17, 0), 4);   // grid y <= 65535 forces 4
  EXPECT_EQ(choose_pairs_per_cta(1, 200000, 17, 2), 4);
  setenv("NATTN_HOPPER_PAIRS_PER_CTA", "3", 1);
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 1000, 0), 3);   // the environment over the automatic rule
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 1000, 9), 9);   // a requested count over the environment
  setenv("NATTN_HOPPER_PAIRS_PER_CTA", "0", 1);
  EXPECT_EQ(choose_pairs_per_cta(10, 100, 1000, 0), 1);   // 0: automatic
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// Unsupported or invalid arguments raise; nothing aborts.
TEST_F(HopperFmha, RejectsUnsupported) {
  std::mt19937_64 rng(7);
  auto make = [&](Dual& q, Dual& k, Dual& v, Dual& o, DType t, int64_t d, int64_t pad) {
    q.init(t, {1, 64, 2, d}, pad, &rng, false);
    k.init(t, {1, 64, 2, d}, pad, &rng, false);
    v.init(t, {1, 64, 2, d}, pad, &rng, false);
    o.init(t, {1, 64, 2, d}, pad, nullptr, true);
  };
  auto args = [](Dual& q, Dual& k, Dual& v, Dual& o) {
    FmhaForwardArgs a;
    a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview;
    return a;
  };
  {  // fp32
    Dual q, k, v, o;
    make(q, k, v, o, DType::f32, 64, 0);
    EXPECT_THROW(cuda::sm90::fmha_forward(args(q, k, v, o), nullptr), NotImplementedError);
    EXPECT_FALSE(cuda::sm90::fmha_forward_unsupported_reason(args(q, k, v, o)).empty());
  }
  {  // head dim 48 (32, 64, 128, 256 only)
    Dual q, k, v, o;
    make(q, k, v, o, DType::bf16, 48, 0);
    EXPECT_THROW(cuda::sm90::fmha_forward(args(q, k, v, o), nullptr), NotImplementedError);
  }
  {  // strides not multiples of 16 bytes (pad 5 elements)
    Dual q, k, v, o;
    make(q, k, v, o, DType::f16, 64, 5);
    EXPECT_THROW(cuda::sm90::fmha_forward(args(q, k, v, o), nullptr), NotImplementedError);
  }
  {  // negative scale, varlen, heads not a multiple of kv heads
    Dual q, k, v, o;
    make(q, k, v, o, DType::bf16, 64, 0);
    FmhaForwardArgs a = args(q, k, v, o);
    a.scale = -1.0;
    EXPECT_THROW(cuda::sm90::fmha_forward(a, nullptr), NotImplementedError);
    a = args(q, k, v, o);
    a.cu_seqlens_q = q.dview;  // without cu_seqlens_kv
    EXPECT_THROW(cuda::sm90::fmha_forward(a, nullptr), ValueError);
    a.cu_seqlens_kv = q.dview;  // not int32
    EXPECT_THROW(cuda::sm90::fmha_forward(a, nullptr), ValueError);
    Dual k3, v3;
    k3.init(DType::bf16, {1, 64, 3, 64}, 0, &rng, false);
    v3.init(DType::bf16, {1, 64, 3, 64}, 0, &rng, false);
    a = args(q, k3, v3, o);
    EXPECT_THROW(cuda::sm90::fmha_forward(a, nullptr), ValueError);
  }
  {  // misaligned base address
    Dual q, k, v, o;
    make(q, k, v, o, DType::f16, 64, 0);
    FmhaForwardArgs a = args(q, k, v, o);
    a.query.data = static_cast<char*>(a.query.data) + 2;
    EXPECT_THROW(cuda::sm90::fmha_forward(a, nullptr), NotImplementedError);
  }
}

}  // namespace
}  // namespace nattn
