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
           (scale ? "_scale" : "");
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
    c.schedule = KernelSchedule::cooperative;
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

// Several (head, batch) pairs per CTA (NATTN_HOPPER_PAIRS_PER_CTA; automatic keeps one on these
// small problems): the direct mode (pairs sharing the CTA's context), the permuted mode without
// dilation, and dilation (the launcher keeps one pair per CTA there: the context depends on the
// group), GQA, batch 2-3, counts that do not divide the pairs, head dims 32-256.
TEST_F(HopperFna, PairsPerCta) {
  std::vector<Case> cs;
  { Case c = mk({777}, {129}, {128}); c.stride = {16}; c.causal = {true}; c.batch = 3; c.heads = 6; c.heads_kv = 2;
    cs.push_back(c); }
  { Case c = mk({37, 45}, {13, 9}, {16, 8}, {8, 16}); c.stride = {2, 3}; c.batch = 2; c.heads = 5; c.heads_kv = 5;
    cs.push_back(c); }
  { Case c = mk({10, 12, 14}, {5, 7, 9}, {4, 4, 8}, {2, 8, 8}); c.batch = 2; c.heads = 4; c.heads_kv = 1;
    c.with_lse = false; cs.push_back(c); }
  { Case c = mk({47, 38}, {7, 9}, {16, 8}); c.dilation = {3, 2}; c.batch = 2; c.heads = 3; c.heads_kv = 3;
    cs.push_back(c); }
  { Case c = mk({20, 24}, {5, 7}, {128, 1}); c.pad = 8; c.batch = 2; c.heads = 4; c.heads_kv = 2; c.extra = 9;
    cs.push_back(c); }
  std::vector<Case> cs256 = cs;
  for (Case& c : cs256) {
    std::vector<int64_t> kv = c.kv_tile.empty() ? c.q_tile : c.kv_tile;
    kv[0] /= 2;  // 64-token KV tiles at head dim 256
    c.kv_tile = kv;
  }
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

// ---- host self-check of the kernel's tile walk (no GPU): for every CTA (group, Q tile), run
// make_ctx / fill_tables / the cursor walk (tile_of, advance) and the kernel's element-mask formula on the CPU and check that
// each real query sees exactly the keys of sem::attends (every axis), each once, and never a
// padding key; also that tiles marked unmasked have every key visible to every real query.
// direct: the direct mode's geometry (no dilation): rows and keys are grid coordinates decoded from
// the tile origins as the TMA boxes lay them out, keys past the grid end are out-of-grid zeros.
// sd (direct mode): a sub-domain, extent the query box's and kv_extent the K/V box's; rows and keys
// are then local box coordinates, checked against the spec at global = origin + local.
int walk_check(const NaParams& params, const V& extent, const TileConfig& cfg, std::string* why, bool direct = false,
               const SubDomain* sd = nullptr, const V& kv_extent = {}) {
  using namespace cuda::sm90;
  const int rank = params.rank;
  const NaGeom g = na_geometry(params, extent, cfg, direct, sd, kv_extent);
  const sem::Permutation& qp = g.qp;
  const sem::Permutation& kvp = g.kvp;
  sem::Axis ax[3];
  for (int i = 0; i < 3; ++i) ax[i] = g.ax[i];
  auto* sh = new na::Shared;
  int bad = 0;
  auto err = [&](const std::string& m) {
    if (bad++ == 0) *why = m;
  };
  const int64_t G = qp.num_groups();
  const int64_t mq = qp.seq_len() / 128;
  const int kv_volume = static_cast<int>(kvp.tile[0] * kvp.tile[1] * kvp.tile[2]);  // 128, or 64 (head dim 256)
  std::vector<int64_t> seen_count;
  for (int64_t pb = 0; pb < G; ++pb)
    for (int64_t mb = 0; mb < mq; ++mb) {
      sh->ctx = na::Ctx{};
      na::make_ctx(g, static_cast<int>(mb), static_cast<int>(pb), sh->ctx);
      // The kernel's 32-bit context math (every extent here is small) equals the 64-bit one.
      if (!g.narrow) err("expected 32-bit context math (NaGeom::narrow) for extents below 2^30");
      NaGeom wide_geom = g;
      wide_geom.narrow = 0;
      na::Ctx wide{};
      na::make_ctx(wide_geom, static_cast<int>(mb), static_cast<int>(pb), wide);
      if (std::memcmp(&wide, &sh->ctx, sizeof wide) != 0) err("32-bit context differs from the 64-bit one");
      std::vector<std::set<std::vector<int64_t>>> seen(128);
      std::vector<bool> real(128);
      std::vector<std::vector<int64_t>> xq(128, std::vector<int64_t>(3, 0));
      bool any_real = false;
      for (int r = 0; r < 128; ++r) {
        int64_t x[3] = {0, 0, 0};
        if (direct) {
          bool in = true;
          for (int i = 0; i < 3; ++i) {
            x[i] = sh->ctx.q0[i] + ((r >> g.q_shift[i]) & g.q_mask[i]);
            in = in && x[i] < g.qp.extent[i];
            x[i] += g.q_org[i];  // global
          }
          real[static_cast<size_t>(r)] = in && sh->ctx.valid;
        } else {
          real[static_cast<size_t>(r)] = qp.inverse(pb, mb * 128 + r, x);
        }
        any_real = any_real || real[static_cast<size_t>(r)];
        for (int i = 0; i < 3; ++i) xq[static_cast<size_t>(r)][static_cast<size_t>(i)] = x[i];
      }
      if (!sh->ctx.valid) {
        if (any_real) err("CTA skipped although it has real queries");
        continue;
      }
      na::fill_tables(g, *sh, 0, 1);
      na::KvTile tile;
      na::Cursor cursor;  // the kernel's walk: the cursor advanced once per tile
      for (int t = 0; t < sh->ctx.n_tiles; ++t, na::advance(sh->ctx, cursor)) {
        na::tile_of(g, sh->ctx, cursor, tile);
        for (int r = 0; r < 128; ++r) {
          if (!real[static_cast<size_t>(r)]) continue;
          for (int col = 0; col < kv_volume; ++col) {
            bool vis = true;
            if (tile.masked) {  // the kernel's mask: na::row_mask of the row's windows
              int lo[3], hi[3];
              for (int i = 0; i < 3; ++i) {
                const int e = na::win_index(g, i, r);
                lo[i] = sh->win_lo[e];
                hi[i] = sh->win_hi[e];
              }
              uint32_t w[4], w2[2];  // the kernel's mask words: 4 for 128-key tiles, 2 for 64
              if (kv_volume == 64) {
                na::row_mask(g, tile, lo, hi, w2);
                w[0] = w2[0];
                w[1] = w2[1];
              } else {
                na::row_mask(g, tile, lo, hi, w);
              }
              vis = ((w[col >> 5] >> (col & 31)) & 1u) != 0;
            }
            int64_t y[3] = {0, 0, 0};
            bool key_real = true;
            if (direct) {
              for (int i = 0; i < 3; ++i) {
                y[i] = tile.org[i] + ((col >> g.kv_shift[i]) & g.kv_mask[i]);
                key_real = key_real && y[i] >= 0 && y[i] < g.kvp.extent[i];
                y[i] += g.kv_org[i];  // global
              }
            } else {
              key_real = kvp.inverse(pb, static_cast<int64_t>(tile.index) * kv_volume + col, y);
            }
            if (!vis) continue;
            if (!key_real) {
              err("padding key visible (tile " + std::to_string(tile.index) + (tile.masked ? " masked" : " unmasked") + ")");
              continue;
            }
            bool ok = true;
            for (int i = 0; i < rank; ++i) ok = ok && sem::attends(xq[static_cast<size_t>(r)][static_cast<size_t>(i)], y[i], ax[i]);
            if (!ok) err(std::string("key outside the window visible (") + (tile.masked ? "masked" : "unmasked") + " tile)");
            if (!seen[static_cast<size_t>(r)].insert({y[0], y[1], y[2]}).second) err("key visited twice");
          }
        }
      }
      for (int r = 0; r < 128; ++r) {
        if (!real[static_cast<size_t>(r)]) continue;
        int64_t want = 1;
        for (int i = 0; i < rank; ++i) want *= sem::window_of(xq[static_cast<size_t>(r)][static_cast<size_t>(i)], ax[i]).count;
        if (static_cast<int64_t>(seen[static_cast<size_t>(r)].size()) != want)
          err("query sees " + std::to_string(seen[static_cast<size_t>(r)].size()) + " keys, expected " + std::to_string(want));
      }
    }
  delete sh;
  return bad;
}

// A random cooperative config from the tile shapes `ts` (128 tokens): the KV tile the Q tile's or
// another shape, or one of the 64-token shapes `kv64` (the KV tiles of the head dim 256 kernel).
TileConfig random_config(const std::vector<V>& ts, const std::vector<V>& kv64, std::mt19937_64& rng) {
  TileConfig cfg;
  cfg.q_tile = ts[rng() % ts.size()];
  const uint64_t pick = rng() % 3;
  cfg.kv_tile = pick == 0 ? cfg.q_tile : (pick == 1 ? ts[rng() % ts.size()] : kv64[rng() % kv64.size()]);
  cfg.schedule = KernelSchedule::cooperative;
  return cfg;
}

// KV tile shapes of 64 tokens per rank (head dim 256).
const std::vector<std::vector<V>> kKvTiles64 = {
    {{64}}, {{8, 8}, {16, 4}, {4, 16}, {64, 1}, {1, 64}}, {{4, 4, 4}, {2, 4, 8}, {1, 8, 8}, {4, 16, 1}, {1, 2, 32}}};

TEST(HopperFnaWalk, MatchesBruteForce) {
  std::mt19937_64 rng(12345);
  const std::vector<std::vector<V>> tiles = {
      {{128}},
      {{16, 8}, {8, 16}, {128, 1}, {1, 128}, {32, 4}, {4, 32}},
      {{4, 4, 8}, {2, 8, 8}, {8, 4, 4}, {1, 16, 8}, {8, 8, 2}, {1, 4, 32}, {1, 2, 64}, {2, 2, 32}}};
  int runs = 0, runs_direct = 0;
  for (int it = 0; it < 600; ++it) {
    const int rank = 1 + it % 3;
    V extent;
    NaParams p;
    p.rank = rank;
    for (int i = 0; i < rank; ++i) {
      const int64_t L = rank == 1 ? 2 + static_cast<int64_t>(rng() % 400) : (rank == 2 ? 2 + static_cast<int64_t>(rng() % 40) : 2 + static_cast<int64_t>(rng() % 14));
      const int64_t d = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(4, L / 2));
      const int64_t k = 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(L / d - 1));
      const int64_t s = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(k));
      extent.push_back(L);
      p.kernel_size[static_cast<size_t>(i)] = k;
      p.stride[static_cast<size_t>(i)] = s;
      p.dilation[static_cast<size_t>(i)] = d;
      p.is_causal[static_cast<size_t>(i)] = rng() % 3 == 0;
    }
    const TileConfig cfg = random_config(tiles[static_cast<size_t>(rank - 1)], kKvTiles64[static_cast<size_t>(rank - 1)], rng);
    std::string why;
    const int bad = walk_check(p, extent, cfg, &why);
    EXPECT_EQ(bad, 0) << "extent " << shape_string(extent) << " " << p.describe() << " " << cfg.describe() << ": "
                      << why;
    ++runs;
    // The direct mode's walk on the same problem without dilation.
    for (int i = 0; i < rank; ++i) p.dilation[static_cast<size_t>(i)] = 1;
    const int bad_direct = walk_check(p, extent, cfg, &why, true);
    EXPECT_EQ(bad_direct, 0) << "direct: extent " << shape_string(extent) << " " << p.describe() << " "
                             << cfg.describe() << ": " << why;
    ++runs_direct;
  }
  std::printf("  %d random problems checked (permuted mode), %d without dilation in direct mode\n", runs, runs_direct);
}

// The direct mode on sub-domains (multi-GPU halos): random global grids without dilation, a random
// query box and a K/V box holding its halo (exact or up to 3 more keys each side); every real query
// of the box sees exactly its global window, through local tile coordinates.
TEST(HopperFnaWalk, SubDomainMatchesBruteForce) {
  std::mt19937_64 rng(777);
  const std::vector<std::vector<V>> tiles = {
      {{128}}, {{16, 8}, {8, 16}, {128, 1}, {32, 4}}, {{4, 4, 8}, {2, 8, 8}, {8, 4, 4}, {1, 16, 8}, {2, 2, 32}}};
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int runs = 0;
  for (int it = 0; it < 400; ++it) {
    const int rank = 1 + it % 3;
    NaParams p;
    p.rank = rank;
    V q_extent, kv_extent;
    SubDomain sd;
    for (int i = 0; i < rank; ++i) {
      const size_t u = static_cast<size_t>(i);
      const int64_t L = rank == 1 ? pick(2, 500) : (rank == 2 ? pick(2, 48) : pick(2, 16));
      const int64_t k = pick(2, L);
      p.kernel_size[u] = k;
      p.stride[u] = pick(1, k);
      p.dilation[u] = 1;
      p.is_causal[u] = pick(0, 2) == 0;
      const int64_t a = pick(0, L - 1), b = pick(a + 1, L);
      const sem::Range h = sem::halo_range(a, b, L, k, p.stride[u], 1, p.is_causal[u]);
      const int64_t klo = std::max<int64_t>(0, h.start - pick(0, 3)), khi = std::min<int64_t>(L, h.end + pick(0, 3));
      sd.global_extent[u] = L;
      sd.q_origin[u] = a;
      sd.kv_origin[u] = klo;
      q_extent.push_back(b - a);
      kv_extent.push_back(khi - klo);
    }
    const TileConfig cfg = random_config(tiles[static_cast<size_t>(rank - 1)], kKvTiles64[static_cast<size_t>(rank - 1)], rng);
    std::string why;
    const int bad = walk_check(p, q_extent, cfg, &why, true, &sd, kv_extent);
    EXPECT_EQ(bad, 0) << "sub-domain " << sd.describe(rank) << " query box " << shape_string(q_extent) << " K/V box "
                      << shape_string(kv_extent) << " " << p.describe() << " " << cfg.describe() << ": " << why;
    ++runs;
  }
  std::printf("  %d random sub-domain problems checked (direct mode)\n", runs);
}

// Host only (no GPU): the kernel's context math runs in 32 bits only where every value fits
// (NaGeom::narrow); a huge dilation makes the Q tile span (tile x dilation) exceed 2^30.
TEST(HopperFnaHost, NarrowContextOnlyWhereItFits) {
  NaParams p;
  p.rank = 1;
  p.kernel_size[0] = 2;
  p.stride[0] = 1;
  p.dilation[0] = 1;
  TileConfig cfg{{128}, {128}, KernelSchedule::cooperative};
  EXPECT_EQ(cuda::sm90::na_geometry(p, {1000}, cfg, false).narrow, 1);
  EXPECT_EQ(cuda::sm90::na_geometry(p, {(int64_t{1} << 30) - 1}, cfg, false).narrow, 1);
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 30}, cfg, false).narrow, 0);
  p.dilation[0] = int64_t{1} << 24;  // 128 x 2^24 = 2^31
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 26}, cfg, false).narrow, 0);
  p.dilation[0] = int64_t{1} << 22;  // 128 x 2^22 = 2^29
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 26}, cfg, false).narrow, 1);
}

// Host only (no GPU): every golden case, as an fp16 / bf16 problem on an SM90 device, is accepted by
// the registry for hopper-fna (what `nattn verify --backend hopper-fna` needs), has forward configs,
// and the kernel's tile walk with the default config matches the brute force on its geometry.
TEST(HopperFnaHost, GoldenCasesAccepted) {
  bool built = false;
  for (const BackendInfo& b : list_backends()) built = built || (b.name == "hopper-fna" && b.built);
  if (!built) GTEST_SKIP() << "hopper-fna is not built into this library";
  const char* env = std::getenv("NATTN_GOLDEN_DIR");
  const std::string dir = env != nullptr ? env : NATTN_GOLDEN_DIR;
  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(dir);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no golden cases: " << e.what();
  }
  int accepted = 0;
  for (const std::string& path : paths) {
    const golden::Case gc = golden::load_case(path);
    for (DType dtype : {DType::f16, DType::bf16}) {
      NaProblem p;
      p.batch = gc.batch;
      p.spatial = gc.spatial;
      p.heads = gc.heads;
      p.heads_kv = gc.heads_kv;
      p.head_dim = gc.head_dim;
      p.head_dim_v = gc.head_dim_v;
      p.additional_kv = gc.additional_kv;
      p.dtype = dtype;
      p.device = Device{DeviceKind::cuda, 0};
      p.compute_capability = 90;
      p.params = gc.na_params();
      const std::string why = reject_reason("hopper-fna", p, Pass::forward);
      EXPECT_EQ(why, "") << gc.name << " " << dtype_name(dtype);
      const std::vector<TileConfig> cfgs = get_configs("hopper-fna", p);
      ASSERT_FALSE(cfgs.empty()) << gc.name;
      if (dtype == DType::f16) {
        std::string walk_why;
        EXPECT_EQ(walk_check(p.params, gc.spatial, cfgs.front(), &walk_why), 0) << gc.name << ": " << walk_why;
        bool undilated = true;
        for (int i = 0; i < p.rank(); ++i) undilated = undilated && p.params.dilation[static_cast<size_t>(i)] == 1;
        if (undilated) {
          EXPECT_EQ(walk_check(p.params, gc.spatial, cfgs.front(), &walk_why, true), 0)
              << gc.name << " (direct): " << walk_why;
        }
      }
      accepted += why.empty() ? 1 : 0;
    }
  }
  std::printf("  %d of %d golden case x dtype problems accepted by hopper-fna\n", accepted,
              2 * static_cast<int>(paths.size()));
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
    c.schedule = KernelSchedule::pingpong;
    EXPECT_THROW(cuda::sm90::na_forward(a, c, nullptr), NotImplementedError);
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
