// The cpu forward on problems shaped like the benchmark's (test_cpu_sweep.cpp keeps to small ones):
// heads-interleaved fp32 tensors of head dim 64, with enough units and lines that the packed
// workspace is a huge-page-sized buffer and the next task's memory is requested while a task
// computes (driver.cpp: list_task_memory, Prefetcher), including the cap on that request for very
// long key lines (FMHA). Checked against the reference backend for every tile config of the finder,
// and bit for bit between 1 and 2 threads, on every kernel ISA of this machine.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cpu/na/cpu_test_util.h"
#include "nattn/backends.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

constexpr double kTol = 2e-5;  // fp32 out and lse, as in test_cpu_sweep.cpp

// Inputs (random, fixed seed) and NaN-poisoned outputs of one problem.
struct Problem {
  HostTensor q, k, v, out, lse;
  Problem(std::vector<int64_t> tokens, int64_t heads, int64_t heads_kv, int64_t kv_tokens_factor = 1) {
    std::mt19937_64 rng(1234);
    std::vector<int64_t> q_shape = tokens, kv_shape = tokens, lse_shape = tokens;
    kv_shape[1] *= kv_tokens_factor;  // FMHA: [B, Skv, H, D]
    q_shape.insert(q_shape.end(), {heads, 64});
    kv_shape.insert(kv_shape.end(), {heads_kv, 64});
    lse_shape.push_back(heads);
    q = test::random_tensor(DType::f32, q_shape, rng);
    k = test::random_tensor(DType::f32, kv_shape, rng);
    v = test::random_tensor(DType::f32, kv_shape, rng);
    out = test::poisoned_tensor(DType::f32, q_shape);
    lse = test::poisoned_tensor(DType::f32, lse_shape);
  }
  template <class Args>
  Args args() {
    Args a;
    a.query = q.view;
    a.key = k.view;
    a.value = v.view;
    a.out = out.view;
    a.lse = lse.view;
    return a;
  }
  void poison() {
    out = test::poisoned_tensor(DType::f32, out.view.shape);
    lse = test::poisoned_tensor(DType::f32, lse.view.shape);
  }
};

RunOptions options(const std::string& backend, int threads, const std::optional<TileConfig>& config) {
  RunOptions o;
  o.backend = backend;
  o.num_threads = threads;
  if (config) o.config = *config;
  return o;
}

bool same_bits(const HostTensor& a, const HostTensor& b) {
  const std::vector<float> x = a.to_float(), y = b.to_float();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// `run(options)` computes into p.out / p.lse; compared with the reference, then 1 against 2 threads.
template <class Run>
void check(Problem& p, const std::vector<TileConfig>& configs, Run run) {
  run(options("reference", 1, std::nullopt));
  const HostTensor ref_out = p.out, ref_lse = p.lse;
  std::vector<std::optional<TileConfig>> all{std::nullopt};
  all.insert(all.end(), configs.begin(), configs.end());
  for (const std::string& isa : test::cpu_isas()) {
    test::IsaScope scope(isa);
    for (const auto& config : all) {
      const std::string what = isa + " " + (config ? config->describe() : std::string("default"));
      p.poison();
      run(options("cpu", 1, config));
      EXPECT_LE(test::scaled_error(p.out.to_float(), ref_out.to_float()), kTol) << what;
      EXPECT_LE(test::scaled_error(p.lse.to_float(), ref_lse.to_float()), kTol) << what;
      const HostTensor one_out = p.out, one_lse = p.lse;
      p.poison();
      run(options("cpu", 2, config));
      EXPECT_TRUE(same_bits(one_out, p.out)) << what << ": out differs between 1 and 2 threads";
      EXPECT_TRUE(same_bits(one_lse, p.lse)) << what << ": lse differs between 1 and 2 threads";
    }
  }
}

void check_na(const std::vector<int64_t>& spatial, const std::vector<int64_t>& window, int64_t heads,
              int64_t heads_kv) {
  std::vector<int64_t> tokens{1};
  tokens.insert(tokens.end(), spatial.begin(), spatial.end());
  Problem p(tokens, heads, heads_kv);
  NaForwardArgs a = p.args<NaForwardArgs>();
  a.params.rank = static_cast<int>(spatial.size());
  for (size_t i = 0; i < window.size(); ++i) a.params.kernel_size[i] = window[i];
  check(p, get_configs("cpu", describe(a)), [&](const RunOptions& o) {
    NaForwardArgs b = a;
    b.out = p.out.view;
    b.lse = p.lse.view;
    na_forward(b, o);
  });
}

TEST(CpuForwardLarge, TwoDimensional) { check_na({28, 40}, {7, 7}, 4, 4); }

TEST(CpuForwardLarge, ThreeDimensionalWithGqa) { check_na({4, 8, 16}, {3, 5, 5}, 4, 2); }

TEST(CpuForwardLarge, OneDimensionalLongWindow) { check_na({1200}, {255}, 2, 2); }

// Keys much longer than the cap on the memory requested ahead (half a typical L2): only the first
// part of the line is requested; the results must not depend on it.
TEST(CpuForwardLarge, StandardAttentionLongKeys) {
  Problem p({1, 96}, 2, 1, /*kv_tokens_factor=*/40);  // 96 queries, 3840 keys
  FmhaForwardArgs a = p.args<FmhaForwardArgs>();
  check(p, get_configs("cpu", describe(a)), [&](const RunOptions& o) {
    FmhaForwardArgs b = a;
    b.out = p.out.view;
    b.lse = p.lse.view;
    fmha_forward(b, o);
  });
}

}  // namespace
}  // namespace nattn
