// GPU tests of the Hopper (sm_90a) NA forward (hopper-fna, src/cuda/sm90/fmha_fwd/na_fwd_sm90.cpp)
// against the CPU `reference` backend on host copies: random inputs (never zero), outputs poisoned
// with NaN, 1-D / 2-D / 3-D, extents not multiples of the tiles, kernel sizes up to the full
// extent, stride, dilation, per-axis causality, GQA, padded (strided) layouts, several tile shapes
// (also different Q and KV tiles), fp16 / bf16, head dims 32 / 64 / 128 / 256 and, zero-padded by
// the permutation, 16 / 32 / 40 / 136..248 / Dv != D, additional KV tokens (dense hopper-fmha part merged by LSE);
// the 72 golden cases (NATTEN) through the public nattn::na_forward with backend "hopper-fna" (head
// dims 8 / 16 / 32, additional KV); and the argument / config checks, which agree with the registry.
// Skipped without a compute capability 9.0 GPU; instantiations not compiled are reported and skipped.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/test_util.h"
#include "cuda/cuda_test_util.h"
#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"
#include "cuda/sm90/fmha_fwd/na_tiles.cuh"
#include "golden/golden.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::Dual;
using test::gather;
using test::HostTensor;

class HopperFna : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_gpu()) GTEST_SKIP() << "no CUDA device";
    if (test::gpu_cc() != 90) GTEST_SKIP() << "needs compute capability 9.0, found " << test::gpu_cc();
  }
};

double out_tol(DType t) { return t == DType::f16 ? 2e-3 : 1.2e-2; }
constexpr double kLseTol = 2e-2;

using V = std::vector<int64_t>;

struct Case {
  V extent, kernel, stride, dilation, q_tile, kv_tile;
  std::vector<bool> causal;
  int64_t batch = 1, heads = 2, heads_kv = 2, d = 64, pad = 0;
  int64_t dv = 0;     // value head dim; 0: same as d
  int64_t extra = 0;  // additional KV tokens
  bool with_lse = true;
  bool want_direct = false;  // the direct mode must run (no permutation)
  std::optional<double> scale;
  KernelSchedule schedule = KernelSchedule::pingpong;
  int rank() const { return static_cast<int>(extent.size()); }
  int64_t d_v() const { return dv ? dv : d; }
  std::string name() const {
    auto tup = [](const V& v) {
      std::string s;
      for (size_t i = 0; i < v.size(); ++i) s += (i ? "x" : "") + std::to_string(v[i]);
      return s;
    };
    std::string c;
    for (bool b : causal) c += b ? "1" : "0";
    return "L" + tup(extent) + "_k" + tup(kernel) + "_s" + tup(stride) + "_d" + tup(dilation) + "_c" + c + "_qt" +
           tup(q_tile) + "_kt" + tup(kv_tile) + "_b" + std::to_string(batch) + "_h" + std::to_string(heads) + "/" +
           std::to_string(heads_kv) + "_D" + std::to_string(d) + (dv && dv != d ? "_Dv" + std::to_string(dv) : "") +
           (extra ? "_extra" + std::to_string(extra) : "") + (pad ? "_pad" : "") + (with_lse ? "" : "_nolse") +
           (scale ? "_scale" : "") + (schedule == KernelSchedule::cooperative ? "_coop" : "");
  }
  NaParams params() const {
    NaParams p;
    p.rank = rank();
    for (int i = 0; i < rank(); ++i) {
      const size_t s = static_cast<size_t>(i);
      p.kernel_size[s] = kernel[s];
      p.stride[s] = stride.empty() ? 1 : stride[s];
      p.dilation[s] = dilation.empty() ? 1 : dilation[s];
      p.is_causal[s] = causal.empty() ? false : causal[s];
    }
    return p;
  }
  TileConfig config() const {
    TileConfig c;
    c.q_tile = q_tile;
    c.kv_tile = kv_tile.empty() ? q_tile : kv_tile;
    c.schedule = schedule;
    return c;
  }
};

V shape_of(const Case& c, int64_t heads, int64_t d) {
  V s = {c.batch};
  s.insert(s.end(), c.extent.begin(), c.extent.end());
  s.push_back(heads);
  s.push_back(d);
  return s;
}

using test::compare;
using test::Errors;

bool run_case(const Case& c, DType dtype, uint64_t seed) {
  if (cuda::sm90::na_kernel_head_dim(dtype, c.d, c.d_v()) == 0) {
    std::printf("  [not compiled] %s %s\n", c.name().c_str(), dtype_name(dtype));
    return false;
  }
  std::mt19937_64 rng(seed);
  Dual q, k, v, o, lse, ek, ev;
  q.init(dtype, shape_of(c, c.heads, c.d), c.pad, &rng, false);
  k.init(dtype, shape_of(c, c.heads_kv, c.d), c.pad, &rng, false);
  v.init(dtype, shape_of(c, c.heads_kv, c.d_v()), c.pad, &rng, false);
  o.init(dtype, shape_of(c, c.heads, c.d_v()), c.pad, nullptr, true);
  if (c.extra > 0) {
    ek.init(dtype, {c.batch, c.extra, c.heads_kv, c.d}, c.pad, &rng, false);
    ev.init(dtype, {c.batch, c.extra, c.heads_kv, c.d_v()}, c.pad, &rng, false);
  }
  V lshape = shape_of(c, c.heads, 1);
  lshape.pop_back();
  lse.init(DType::f32, lshape, 0, nullptr, true);
  NaForwardArgs da, ha;
  da.params = ha.params = c.params();
  da.scale = ha.scale = c.scale;
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview;
  if (c.with_lse) da.lse = lse.dview;
  HostTensor ref_o = o.host, ref_l = lse.host;
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview;
  ha.out = TensorView(ref_o.view.data, dtype, o.hview.shape, o.hview.strides);
  ha.lse = TensorView(ref_l.view.data, DType::f32, lse.hview.shape, lse.hview.strides);
  if (c.extra > 0) {
    da.additional_keys = ek.dview;
    da.additional_values = ev.dview;
    ha.additional_keys = ek.hview;
    ha.additional_values = ev.hview;
  }

  const std::string blocker = cuda::sm90::na_forward_direct_blocker(da);
  const char* mode = blocker.empty() ? "direct" : "permuted";
  if (c.want_direct) {
    EXPECT_EQ(blocker, "") << c.name() << ": expected the direct mode";
  }
  cudaStream_t stream = nullptr;
  test::check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  try {
    cuda::sm90::na_forward(da, c.config(), stream);
  } catch (...) {
    cudaStreamDestroy(stream);
    throw;
  }
  const cudaError_t sync = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  test::check_cuda(sync, "na_forward (kernel)");

  RunOptions ropt;
  ropt.backend = "reference";
  na_forward(ha, ropt);
  const HostTensor go = o.fetch(), gl = lse.fetch();
  const std::vector<double> g_lse = c.with_lse ? gather(gl, lse.hview) : gather(ref_l, lse.hview);
  const Errors e = compare(gather(go, o.hview), gather(ref_o, o.hview), g_lse, gather(ref_l, lse.hview));
  std::printf("  %-70s %-5s %-8s out rel L2 %.3g  lse max abs %.3g\n", c.name().c_str(), dtype_name(dtype), mode,
              e.out_rel_l2, e.lse_max_abs);
  EXPECT_EQ(e.nan, 0) << c.name() << " " << dtype_name(dtype) << ": non-finite outputs";
  EXPECT_LE(e.out_rel_l2, out_tol(dtype)) << c.name() << " " << dtype_name(dtype);
  EXPECT_LE(e.lse_max_abs, kLseTol) << c.name() << " " << dtype_name(dtype);
  if (!c.with_lse)
    for (double x : gather(gl, lse.hview))
      if (!std::isnan(x)) {
        ADD_FAILURE() << c.name() << ": lse written although not requested";
        break;
      }
  if (c.pad > 0) {  // the padding of the output storage must stay NaN
    const std::vector<double> all = gather(go, TensorView(go.view.data, dtype, go.view.shape, go.view.strides));
    int64_t finite_all = 0, finite_in = 0;
    for (double x : all) finite_all += std::isfinite(x) ? 1 : 0;
    for (double x : gather(go, o.hview)) finite_in += std::isfinite(x) ? 1 : 0;
    EXPECT_EQ(finite_all, finite_in) << c.name() << ": wrote outside the output view";
  }
  return true;
}

using Dims = std::vector<std::pair<int64_t, int64_t>>;  // (D, Dv)

void run_all(const std::vector<Case>& cases, uint64_t seed, const Dims& dims = {{32, 32}, {64, 64}, {128, 128}}) {
  int ran = 0, skipped = 0;
  for (const Case& base : cases)
    for (const auto& [d, dv] : dims)
      for (DType t : {DType::f16, DType::bf16}) {
        Case c = base;
        c.d = d;
        c.dv = dv;
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

Case mk(V extent, V kernel, V q_tile, V kv_tile = {}) {
  Case c;
  c.extent = extent;
  c.kernel = kernel;
  c.q_tile = q_tile;
  c.kv_tile = kv_tile;
  return c;
}

TEST_F(HopperFna, OneD) {
  std::vector<Case> cs;
  cs.push_back(mk({1000}, {65}, {128}));
  cs.push_back(mk({300}, {300}, {128}));  // full window
  { Case c = mk({777}, {129}, {128}); c.stride = {16}; cs.push_back(c); }
  { Case c = mk({999}, {33}, {128}); c.dilation = {3}; cs.push_back(c); }
  { Case c = mk({600}, {100}, {128}); c.causal = {true}; cs.push_back(c); }
  { Case c = mk({513}, {64}, {128}); c.stride = {8}; c.dilation = {2}; c.causal = {true}; c.heads = 4; c.heads_kv = 2;
    c.batch = 2; cs.push_back(c); }
  { Case c = mk({256}, {2}, {128}); c.with_lse = false; c.scale = 0.3; cs.push_back(c); }
  { Case c = mk({1300}, {1300}, {128}); c.causal = {true}; c.heads = 3; c.heads_kv = 1; cs.push_back(c); }
  run_all(cs, 100);
}

TEST_F(HopperFna, TwoD) {
  std::vector<Case> cs;
  cs.push_back(mk({37, 45}, {13, 9}, {16, 8}));
  cs.push_back(mk({33, 31}, {33, 31}, {8, 16}));  // full window
  { Case c = mk({40, 40}, {21, 15}, {16, 8}); c.stride = {4, 3}; cs.push_back(c); }
  { Case c = mk({47, 38}, {7, 9}, {16, 8}); c.dilation = {3, 2}; cs.push_back(c); }
  { Case c = mk({30, 50}, {11, 19}, {8, 16}); c.causal = {true, false}; c.heads = 6; c.heads_kv = 2; cs.push_back(c); }
  { Case c = mk({28, 36}, {10, 12}, {16, 8}, {8, 16}); c.stride = {5, 6}; c.dilation = {2, 3};
    c.causal = {false, true}; cs.push_back(c); }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}); c.pad = 8; c.batch = 2; cs.push_back(c); }
  { Case c = mk({64, 64}, {16, 16}, {16, 8}); c.stride = {16, 8}; cs.push_back(c); }  // block-sparse-like
  run_all(cs, 200);
}

TEST_F(HopperFna, ThreeD) {
  std::vector<Case> cs;
  cs.push_back(mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}));
  cs.push_back(mk({9, 17, 13}, {9, 17, 13}, {2, 8, 8}));  // full window
  { Case c = mk({12, 12, 20}, {7, 7, 7}, {8, 4, 4}); c.stride = {2, 3, 4}; c.dilation = {1, 1, 2};
    c.causal = {true, false, true}; cs.push_back(c); }
  { Case c = mk({15, 10, 18}, {6, 5, 7}, {4, 4, 8}, {2, 8, 8}); c.dilation = {2, 1, 2}; c.causal = {false, true, false};
    c.heads = 4; c.heads_kv = 1; cs.push_back(c); }
  { Case c = mk({8, 16, 24}, {8, 8, 8}, {4, 4, 8}); c.stride = {4, 4, 8}; c.batch = 2; c.pad = 8; cs.push_back(c); }
  run_all(cs, 300);
}

// Direct mode (no permutation; rank-5 TMA boxes of the caller's tensors, KV tiles from the KV box
// start): dilation-1 problems at head dims 32 / 64 / 128 with contiguous heads. Tile shapes with size-1
// axes, Q and KV shapes that differ, odd extents (boxes past the grid end read zeros), stride,
// causality, GQA, batch 2, no LSE. Then the same cases forced through the permuted path
// (NATTN_HOPPER_FNA_PERMUTED=1), which the other tests reach only through dilation, padding,
// additional KV or padded layouts.
TEST_F(HopperFna, DirectMode) {
  std::vector<Case> cs;
  cs.push_back(mk({1000}, {65}, {128}));
  { Case c = mk({777}, {129}, {128}); c.stride = {16}; c.causal = {true}; c.batch = 2; cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {1, 128}); c.stride = {2, 3}; cs.push_back(c); }
  { Case c = mk({30, 50}, {11, 19}, {4, 32}, {8, 16}); c.causal = {true, false}; c.heads = 6; c.heads_kv = 2;
    cs.push_back(c); }
  { Case c = mk({19, 23, 41}, {9, 11, 13}, {4, 4, 8}, {1, 4, 32}); c.batch = 2; cs.push_back(c); }
  { Case c = mk({11, 26, 35}, {6, 10, 24}, {2, 8, 8}, {1, 2, 64}); c.stride = {3, 5, 8}; c.causal = {false, true, true};
    c.heads = 4; c.heads_kv = 1; c.with_lse = false; cs.push_back(c); }
  { Case c = mk({16, 16, 32}, {16, 8, 8}, {4, 4, 8}, {2, 8, 8}); c.stride = {16, 8, 8}; cs.push_back(c); }  // block-sparse
  { Case c = mk({9, 12, 10}, {9, 12, 10}, {8, 4, 4}, {128, 1, 1}); cs.push_back(c); }  // full window
  for (Case& c : cs) c.want_direct = true;
  run_all(cs, 800);
  for (Case& c : cs) c.want_direct = false;
  setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
  run_all(cs, 900);
  unsetenv("NATTN_HOPPER_FNA_PERMUTED");
}

// Head dims below the kernel's (zero-padded to the smallest kernel head dim 32 / 64 / 128 >= max(D,
// Dv) by the permutation)
// and Dv != D: 1-D / 2-D / 3-D with stride, dilation, causality, GQA, strided layouts.
TEST_F(HopperFna, PaddedHeadDims) {
  std::vector<Case> cs;
  { Case c = mk({300}, {33}, {128}); c.dilation = {2}; cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}); c.stride = {2, 3}; c.causal = {false, true}; c.heads = 4; c.heads_kv = 2;
    cs.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}); c.dilation = {2, 1, 1}; c.pad = 8; c.batch = 2; cs.push_back(c); }
  run_all(cs, 400, {{16, 16}, {32, 32}, {40, 40}, {8, 8}});
  run_all(cs, 500, {{32, 16}, {16, 40}, {64, 32}, {48, 128}, {128, 64}});
}

// Additional KV tokens: the NA part and a dense hopper-fmha part over the additional keys, merged by
// LSE (the LSE written covers both), with and without head-dim padding.
TEST_F(HopperFna, AdditionalKv) {
  std::vector<Case> cs;
  { Case c = mk({1000}, {65}, {128}); c.extra = 7; cs.push_back(c); }
  { Case c = mk({513}, {64}, {128}); c.stride = {8}; c.dilation = {2}; c.causal = {true}; c.heads = 4; c.heads_kv = 2;
    c.batch = 2; c.extra = 200; cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 16}); c.dilation = {2, 1}; c.extra = 1; cs.push_back(c); }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}); c.pad = 8; c.batch = 2; c.extra = 130; c.heads = 3; c.heads_kv = 1;
    cs.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}); c.causal = {true, false, true}; c.extra = 9; c.with_lse = false;
    c.scale = 0.3; cs.push_back(c); }
  run_all(cs, 600);
  run_all(cs, 700, {{32, 32}, {16, 40}});
}

// Additional KV tokens in the direct mode (no permutation: the NA kernel writes `out`, a dense
// hopper-fmha part over the query viewed as [B, tokens, H, D], merged in place), with GQA, causal
// axes, no LSE requested, and extents that are not tile multiples; a padded (strided) layout stays
// in the permuted mode.
TEST_F(HopperFna, AdditionalKvDirect) {
  std::vector<Case> cs;
  { Case c = mk({1000}, {65}, {128}); c.extra = 7; c.want_direct = true; cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 16}); c.stride = {2, 3}; c.causal = {false, true}; c.heads = 4;
    c.heads_kv = 2; c.batch = 2; c.extra = 33; c.want_direct = true; cs.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}); c.causal = {true, false, true}; c.extra = 129; c.with_lse = false;
    c.want_direct = true; cs.push_back(c); }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}); c.pad = 8; c.extra = 5; cs.push_back(c); }
  run_all(cs, 800);
}

// Head dim 256 (kernel of 64-key KV tiles, windows read from shared memory by masked tiles): the
// direct mode with KV tile shapes of 64 tokens that differ from the Q tiles, stride, causality,
// GQA, no LSE, additional KV; the permuted mode through dilation and a padded layout; head dims
// 136..248 and Dv != D zero-padded to 256 (permuted); then the direct cases forced through the
// permuted path.
TEST_F(HopperFna, HeadDim256) {
  std::vector<Case> direct;
  { Case c = mk({1000}, {65}, {128}, {64}); direct.push_back(c); }
  { Case c = mk({777}, {129}, {128}, {64}); c.stride = {16}; c.causal = {true}; c.batch = 2; direct.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 8}); c.stride = {2, 3}; direct.push_back(c); }
  { Case c = mk({30, 50}, {11, 19}, {8, 16}, {1, 64}); c.causal = {true, false}; c.heads = 6; c.heads_kv = 2;
    direct.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}, {4, 4, 4}); c.batch = 2; direct.push_back(c); }
  { Case c = mk({11, 26, 35}, {6, 10, 24}, {2, 8, 8}, {1, 8, 8}); c.stride = {3, 5, 8}; c.causal = {false, true, true};
    c.heads = 4; c.heads_kv = 1; c.with_lse = false; direct.push_back(c); }
  { Case c = mk({16, 16, 32}, {16, 8, 8}, {2, 8, 8}, {4, 4, 4}); c.stride = {16, 8, 8}; direct.push_back(c); }
  { Case c = mk({9, 12, 10}, {9, 12, 10}, {8, 4, 4}, {4, 16, 1}); direct.push_back(c); }  // full window
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 8}); c.extra = 33; c.heads = 4; c.heads_kv = 2; direct.push_back(c); }
  for (Case& c : direct) c.want_direct = true;
  run_all(direct, 1000, {{256, 256}});

  std::vector<Case> permuted;
  { Case c = mk({999}, {33}, {128}, {64}); c.dilation = {3}; permuted.push_back(c); }
  { Case c = mk({47, 38}, {7, 9}, {16, 8}, {8, 8}); c.dilation = {3, 2}; c.causal = {false, true}; permuted.push_back(c); }
  { Case c = mk({15, 10, 18}, {6, 5, 7}, {4, 4, 8}, {2, 4, 8}); c.dilation = {2, 1, 2}; c.heads = 4; c.heads_kv = 1;
    permuted.push_back(c); }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}, {64, 1}); c.pad = 8; c.batch = 2; permuted.push_back(c); }
  { Case c = mk({513}, {64}, {128}, {64}); c.stride = {8}; c.dilation = {2}; c.extra = 130; permuted.push_back(c); }
  run_all(permuted, 1100, {{256, 256}});
  run_all(permuted, 1200, {{136, 136}, {256, 192}, {200, 248}});

  for (Case& c : direct) c.want_direct = false;
  setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
  run_all(direct, 1300, {{256, 256}});
  unsetenv("NATTN_HOPPER_FNA_PERMUTED");
}

// Problems with several (head, batch) pairs per Q tile, for the pair-loop and persistent tests: the
// direct mode, the permuted mode without dilation, dilation (one pair per CTA: the context depends
// on the group), GQA, batch 2-3, no LSE, padded layouts, additional KV; `padding_tiles` adds a 3-D
// dilation case whose groups of unequal extents leave Q tiles made only of padding. `cs256`: the
// same with 64-token KV tiles (head dim 256).
void multi_pair_cases(bool padding_tiles, std::vector<Case>& cs, std::vector<Case>& cs256) {
  cs.clear();
  { Case c = mk({777}, {129}, {128}); c.stride = {16}; c.causal = {true}; c.batch = 3; c.heads = 6; c.heads_kv = 2;
    cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 16}); c.stride = {2, 3}; c.batch = 2; c.heads = 5; c.heads_kv = 5;
    cs.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}, {2, 8, 8}); c.batch = 2; c.heads = 4; c.heads_kv = 1;
    c.with_lse = false; cs.push_back(c); }
  { Case c = mk({47, 38}, {7, 9}, {16, 8}); c.dilation = {3, 2}; c.batch = 2; c.heads = 3; c.heads_kv = 3;
    cs.push_back(c); }
  if (padding_tiles) {
    Case c = mk({19, 21, 9}, {3, 5, 3}, {2, 8, 8});
    c.dilation = {5, 2, 3};
    c.causal = {false, true, false};
    c.heads = 2;
    c.heads_kv = 1;
    cs.push_back(c);
  }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}); c.pad = 8; c.batch = 2; c.heads = 4; c.heads_kv = 2; c.extra = 9;
    cs.push_back(c); }
  cs256 = cs;
  for (Case& c : cs256) {
    std::vector<int64_t> kv = c.kv_tile.empty() ? c.q_tile : c.kv_tile;
    kv[0] /= 2;  // 64-token KV tiles at head dim 256
    c.kv_tile = kv;
  }
}

// Several (head, batch) pairs per CTA (NATTN_HOPPER_PAIRS_PER_CTA; automatic keeps one on these
// small problems): the direct mode (pairs sharing the CTA's context), the permuted mode without
// dilation, and dilation (the launcher keeps one pair per CTA there: the context depends on the
// group), GQA, batch 2-3, counts that do not divide the pairs, head dims 32-256.
TEST_F(HopperFna, PairsPerCta) {
  std::vector<Case> cs, cs256;
  multi_pair_cases(false, cs, cs256);
  for (const char* k : {"2", "7"}) {
    setenv("NATTN_HOPPER_PAIRS_PER_CTA", k, 1);
    std::printf("  NATTN_HOPPER_PAIRS_PER_CTA=%s\n", k);
    run_all(cs, 1400);
    run_all(cs256, 1500, {{256, 256}});
    setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
    run_all(cs, 1600, {{64, 64}});
    unsetenv("NATTN_HOPPER_FNA_PERMUTED");
  }
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// Persistent scheduling (NATTN_HOPPER_PERSISTENT): a grid of at most n CTAs walks the (Q tile, pair
// block) units, recomputing the NA context per unit. n = 3 and 7 make every CTA walk many units,
// with Q tiles, dilation groups and batches changing between them; combined with several pairs per
// CTA; the direct and permuted modes; Q tiles made only of padding (dilation) that are skipped;
// head dims 32-256; additional KV (the dense part runs persistent too).
TEST_F(HopperFna, Persistent) {
  std::vector<Case> cs, cs256;
  multi_pair_cases(true, cs, cs256);
  for (const char* n : {"3", "7"})
    for (const char* k : {"1", "3"}) {
      setenv("NATTN_HOPPER_PERSISTENT", n, 1);
      setenv("NATTN_HOPPER_PAIRS_PER_CTA", k, 1);
      std::printf("  NATTN_HOPPER_PERSISTENT=%s NATTN_HOPPER_PAIRS_PER_CTA=%s\n", n, k);
      run_all(cs, 1700);
      run_all(cs256, 1800, {{256, 256}});
      setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
      run_all(cs, 1900, {{64, 64}});
      unsetenv("NATTN_HOPPER_FNA_PERMUTED");
    }
  setenv("NATTN_HOPPER_PERSISTENT", "1", 1);  // one CTA per SM
  run_all(cs, 2000, {{128, 128}});
  unsetenv("NATTN_HOPPER_PERSISTENT");
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// The cooperative schedule (config "coop": the consumer warpgroups issue their GEMMs without taking
// turns; the default "pp" runs every other test): the multi-pair cases (1-3 D, direct and permuted,
// dilation, GQA, head dims 32-256, additional KV), with one and several pairs per CTA, and persistent.
TEST_F(HopperFna, CooperativeSchedule) {
  std::vector<Case> cs, cs256;
  multi_pair_cases(true, cs, cs256);
  for (auto* list : {&cs, &cs256})
    for (Case& c : *list) c.schedule = KernelSchedule::cooperative;
  run_all(cs, 2100);
  run_all(cs256, 2200, {{256, 256}});
  setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
  run_all(cs, 2300, {{64, 64}});
  unsetenv("NATTN_HOPPER_FNA_PERMUTED");
  setenv("NATTN_HOPPER_PAIRS_PER_CTA", "3", 1);
  run_all(cs, 2400, {{128, 128}});
  setenv("NATTN_HOPPER_PERSISTENT", "3", 1);
  run_all(cs, 2500, {{32, 32}});
  unsetenv("NATTN_HOPPER_PERSISTENT");
  unsetenv("NATTN_HOPPER_PAIRS_PER_CTA");
}

// The golden cases (NATTEN): head dims 8 / 16 / 32, 12 of 72 with additional KV, through the public
// op with backend "hopper-fna" (registry, config finder, padding and merge inside the backend), as
// `nattn verify --backend hopper-fna` runs them. None may be rejected.
TEST_F(HopperFna, GoldenCases) {
  const char* env = std::getenv("NATTN_GOLDEN_DIR");
  const std::string dir = env != nullptr ? env : NATTN_GOLDEN_DIR;
  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(dir);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no golden cases: " << e.what();
  }
  int checked = 0, with_extra = 0;
  for (DType dtype : {DType::f16, DType::bf16}) {
    if (cuda::sm90::na_kernel_head_dim(dtype, 8, 8) == 0) continue;
    const golden::Tolerances tol = golden::tolerances_for(dtype);
    for (const std::string& path : paths) {
      const golden::Case gc = golden::load_case(path);
      auto upload = [&](const golden::Array& a, Dual& dst) {
        dst.init(dtype, a.shape, 0, nullptr, false);
        for (int64_t i = 0; i < a.numel(); ++i) dst.host.set(i, a.data[static_cast<size_t>(i)]);
        dst.upload_storage();
      };
      Dual q, k, v, o, lse, ek, ev;
      upload(gc.array("q"), q);
      upload(gc.array("k"), k);
      upload(gc.array("v"), v);
      o.init(dtype, gc.array("out").shape, 0, nullptr, true);
      lse.init(DType::f32, gc.array("lse").shape, 0, nullptr, true);
      NaForwardArgs a;
      a.params = gc.na_params();
      a.scale = gc.scale;
      a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview; a.lse = lse.dview;
      if (gc.additional_kv > 0) {
        upload(gc.array("additional_keys"), ek);
        upload(gc.array("additional_values"), ev);
        a.additional_keys = ek.dview;
        a.additional_values = ev.dview;
        ++with_extra;
      }
      RunOptions ro;
      ro.backend = "hopper-fna";
      try {
        na_forward(a, ro);
      } catch (const std::exception& e) {
        ADD_FAILURE() << gc.name << " " << dtype_name(dtype) << ": " << e.what();
        continue;
      }
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const golden::Comparison co = golden::compare(o.fetch().to_float(), gc.array("out"), tol.out);
      const golden::Comparison cl = golden::compare(lse.fetch().to_float(), gc.array("lse"), tol.lse);
      EXPECT_TRUE(co.passed()) << gc.name << " " << dtype_name(dtype) << " out: error " << co.max_error << " allowed "
                               << co.allowed;
      EXPECT_TRUE(cl.passed()) << gc.name << " " << dtype_name(dtype) << " lse: error " << cl.max_error << " allowed "
                               << cl.allowed;
      ++checked;
    }
  }
  std::printf("  golden: %d case x dtype runs checked (%d with additional KV), in %s\n", checked, with_extra,
              dir.c_str());
  if (checked == 0) GTEST_SKIP() << "no fp16/bf16 kernel compiled";
}

// Unsupported or invalid arguments and configs raise; nothing aborts.
TEST_F(HopperFna, RejectsUnsupported) {
  std::mt19937_64 rng(7);
  DType dt = DType::bf16;
  int64_t d = 128;
  for (DType t : {DType::bf16, DType::f16})
    for (int64_t hd : {128, 64})
      if (cuda::sm90::na_forward_compiled(t, static_cast<int>(hd))) {
        dt = t;
        d = hd;
      }
  Dual q, k, v, o, ek, ev;
  q.init(dt, {1, 16, 16, 2, d}, 0, &rng, false);
  k.init(dt, {1, 16, 16, 2, d}, 0, &rng, false);
  v.init(dt, {1, 16, 16, 2, d}, 0, &rng, false);
  o.init(dt, {1, 16, 16, 2, d}, 0, nullptr, true);
  ek.init(dt, {1, 8, 2, d}, 0, &rng, false);
  ev.init(dt, {1, 8, 2, d}, 0, &rng, false);
  NaForwardArgs a;
  a.params = NaParams::uniform(2, 5);
  a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview;
  TileConfig good;
  good.q_tile = good.kv_tile = {16, 8};
  good.schedule = KernelSchedule::cooperative;
  {
    TileConfig c = good;
    c.q_tile = {8, 8};  // volume 64
    EXPECT_THROW(cuda::sm90::na_forward(a, c, nullptr), NotImplementedError);
    EXPECT_NE(cuda::sm90::na_forward_unsupported_reason(a, c).find("q_tile=(8, 8)"), std::string::npos)
        << cuda::sm90::na_forward_unsupported_reason(a, c);
    c = good;
    c.schedule = KernelSchedule::pingpong;  // both warp-specialized schedules are accepted
    EXPECT_EQ(cuda::sm90::na_forward_unsupported_reason(a, c), "");
    for (KernelSchedule bad : {KernelSchedule::non_persistent, KernelSchedule::none}) {
      c.schedule = bad;
      EXPECT_THROW(cuda::sm90::na_forward(a, c, nullptr), NotImplementedError);
      EXPECT_NE(cuda::sm90::na_forward_unsupported_reason(a, c).find("schedule must be pp or coop"), std::string::npos)
          << cuda::sm90::na_forward_unsupported_reason(a, c);
    }
    c = good;
    c.kv_tile = {128};  // wrong rank
    EXPECT_THROW(cuda::sm90::na_forward(a, c, nullptr), NotImplementedError);
    c = good;
    c.q_tile = {32, 4};
    c.kv_tile = {12, 12};  // not powers of two (and volume 144)
    EXPECT_THROW(cuda::sm90::na_forward(a, c, nullptr), NotImplementedError);
  }
  {
    NaForwardArgs b = a;
    b.additional_keys = ek.dview;  // supported; only one of the two, or a wrong shape, is a ValueError
    b.additional_values = ev.dview;
    EXPECT_EQ(cuda::sm90::na_forward_unsupported_reason(b, good), "");
    b.additional_values.reset();
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), ValueError);
    b.additional_values = ek.dview;
    b.additional_keys = q.dview;
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), ValueError);
    // A sub-domain runs in the direct mode only (not with dilation); an invalid one is a ValueError.
    b = a;
    b.sub_domain = SubDomain{};
    b.sub_domain->global_extent = {16, 16, 1};
    b.params.dilation = {2, 1, 1};
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), NotImplementedError);
    b.params.dilation = {1, 1, 1};
    b.sub_domain->global_extent = {1, 1, 1};  // kernel 5 > global extent 1
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), ValueError);
    b = a;
    b.scale = -1.0;
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), NotImplementedError);
    b = a;
    b.params = NaParams::uniform(2, 17);  // kernel > extent
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), ValueError);
  }
  {  // fp32, head dims that are not multiples of 8 or above 256
    Dual q32, k32, v32, o32;
    q32.init(DType::f32, {1, 16, 16, 2, 64}, 0, &rng, false);
    k32.init(DType::f32, {1, 16, 16, 2, 64}, 0, &rng, false);
    v32.init(DType::f32, {1, 16, 16, 2, 64}, 0, &rng, false);
    o32.init(DType::f32, {1, 16, 16, 2, 64}, 0, nullptr, true);
    NaForwardArgs b = a;
    b.query = q32.dview; b.key = k32.dview; b.value = v32.dview; b.out = o32.dview;
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), NotImplementedError);
    for (int64_t hd : {12, 264}) {
      Dual qh, kh, vh, oh;
      qh.init(dt, {1, 16, 16, 2, hd}, 0, &rng, false);
      kh.init(dt, {1, 16, 16, 2, hd}, 0, &rng, false);
      vh.init(dt, {1, 16, 16, 2, hd}, 0, &rng, false);
      oh.init(dt, {1, 16, 16, 2, hd}, 0, nullptr, true);
      b.query = qh.dview; b.key = kh.dview; b.value = vh.dview; b.out = oh.dview;
      EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), NotImplementedError) << "head dim " << hd;
    }
  }
  // Head dim 256 runs KV tiles of 64 tokens: a 128-token KV tile is rejected, naming the volume.
  for (DType t : {DType::bf16, DType::f16}) {
    if (!cuda::sm90::na_forward_compiled(t, 256)) continue;
    Dual q2, k2, v2, o2;
    q2.init(t, {1, 16, 16, 2, 256}, 0, &rng, false);
    k2.init(t, {1, 16, 16, 2, 256}, 0, &rng, false);
    v2.init(t, {1, 16, 16, 2, 256}, 0, &rng, false);
    o2.init(t, {1, 16, 16, 2, 256}, 0, nullptr, true);
    NaForwardArgs b = a;
    b.query = q2.dview; b.key = k2.dview; b.value = v2.dview; b.out = o2.dview;
    EXPECT_THROW(cuda::sm90::na_forward(b, good, nullptr), NotImplementedError);
    const std::string why = cuda::sm90::na_forward_unsupported_reason(b, good);
    EXPECT_NE(why.find("kv_tile volume must be 64"), std::string::npos) << why;
    TileConfig c64 = good;
    c64.kv_tile = {8, 8};
    EXPECT_EQ(cuda::sm90::na_forward_unsupported_reason(b, c64), "");
    break;
  }
  EXPECT_TRUE(cuda::sm90::na_forward_unsupported_reason(a, good).empty()) << cuda::sm90::na_forward_unsupported_reason(a, good);
}

// The registry (HopperFna::reject through reject_reason) and na_forward accept the same problems:
// head dims D / Dv in {8, 12, 16, 40, 64, 72, 96, 128, 136, 256, 264} pairs, with and without
// additional KV (the op with a config of the kernel's KV tile volume: 64 tokens at head dim 256).
TEST_F(HopperFna, RegistryAgreesWithOp) {
  std::mt19937_64 rng(8);
  int agreed = 0, accepted = 0;
  for (DType t : {DType::f16, DType::bf16})
    for (int64_t d : {8, 12, 40, 64, 96, 136, 264})
      for (int64_t dv : {8, 16, 72, 128, 256})
        for (int64_t extra : {0, 5}) {
          Dual q, k, v, o, ek, ev;
          q.init(t, {1, 16, 16, 2, d}, 0, &rng, false);
          k.init(t, {1, 16, 16, 2, d}, 0, &rng, false);
          v.init(t, {1, 16, 16, 2, dv}, 0, &rng, false);
          o.init(t, {1, 16, 16, 2, dv}, 0, nullptr, true);
          NaForwardArgs a;
          a.params = NaParams::uniform(2, 5);
          a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview;
          if (extra > 0) {
            ek.init(t, {1, extra, 2, d}, 0, &rng, false);
            ev.init(t, {1, extra, 2, dv}, 0, &rng, false);
            a.additional_keys = ek.dview;
            a.additional_values = ev.dview;
          }
          TileConfig good;
          good.q_tile = {16, 8};
          good.kv_tile = cuda::sm90::na_kernel_head_dim(t, d, dv) == 256 ? V{8, 8} : V{16, 8};
          good.schedule = KernelSchedule::cooperative;
          const std::string op = cuda::sm90::na_forward_unsupported_reason(a, good);
          NaProblem problem = describe(a);
          problem.compute_capability = test::gpu_cc();  // as the op fills it in before selection
          const std::string reg = reject_reason("hopper-fna", problem, Pass::forward);
          EXPECT_EQ(op.empty(), reg.empty()) << dtype_name(t) << " D " << d << " Dv " << dv << " extra " << extra
                                             << ": op '" << op << "', registry '" << reg << "'";
          const bool want = d % 8 == 0 && dv % 8 == 0 && d <= 256 && dv <= 256 &&
                            cuda::sm90::na_kernel_head_dim(t, d, dv) != 0;
          EXPECT_EQ(op.empty(), want) << dtype_name(t) << " D " << d << " Dv " << dv << ": " << op;
          agreed += op.empty() == reg.empty() ? 1 : 0;
          accepted += op.empty() ? 1 : 0;
        }
  std::printf("  %d problems, registry and op agree on %d, %d accepted\n", 2 * 7 * 5 * 2, agreed, accepted);
}

}  // namespace
}  // namespace nattn
