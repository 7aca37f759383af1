// GPU tests of cutlass-fna / cutlass-fmha forward against the CPU `reference` backend on host
// copies: random inputs, poisoned outputs, strided and misaligned layouts, every feature.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cuda/cuda_test_util.h"
#include "golden/golden.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

#define CK(call)                                                                      \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_);            \
  } while (0)

using test::Dual;
using test::gather;
using test::gpu_cc;
using test::have_gpu;

struct Errors {
  double out_rel_l2 = 0;
  double lse_max_abs = 0;
  bool nan = false;
};

Errors compare(const std::vector<double>& got, const std::vector<double>& ref, const std::vector<double>& glse,
               const std::vector<double>& rlse) {
  Errors e;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(got[i])) e.nan = true;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  e.out_rel_l2 = std::sqrt(num / (den > 0 ? den : 1));
  for (size_t i = 0; i < rlse.size(); ++i) {
    if (std::isnan(glse[i])) e.nan = true;
    if (std::isinf(rlse[i]) || std::isinf(glse[i])) {
      if (glse[i] != rlse[i]) e.lse_max_abs = INFINITY;
      continue;
    }
    e.lse_max_abs = std::fmax(e.lse_max_abs, std::fabs(glse[i] - rlse[i]));
  }
  return e;
}

double out_tol(DType t) { return t == DType::f32 ? 2e-5 : t == DType::f16 ? 2e-3 : 1.2e-2; }
double lse_tol(DType t) { return t == DType::f32 ? 1e-4 : 2e-2; }

struct NaCase {
  std::string name;
  std::vector<int64_t> spatial;
  std::vector<int64_t> kernel, stride, dilation;
  std::vector<bool> causal;
  int64_t batch = 2, heads = 2, heads_kv = 2, d = 32, dv = 32, extra = 0, pad = 0;
  std::optional<TileConfig> config;
  int min_cc = 0;  // the config is only listed from this compute capability on (128-query tiles: 90)
};

NaParams params_of(const NaCase& c) {
  NaParams p;
  p.rank = static_cast<int>(c.spatial.size());
  for (int i = 0; i < p.rank; ++i) {
    const size_t u = static_cast<size_t>(i);
    p.kernel_size[u] = c.kernel[u];
    p.stride[u] = c.stride.empty() ? 1 : c.stride[u];
    p.dilation[u] = c.dilation.empty() ? 1 : c.dilation[u];
    p.is_causal[u] = c.causal.empty() ? false : static_cast<bool>(c.causal[u]);
  }
  return p;
}

// got_o / got_l (optional): the device's output and LSE, as fetched.
void run_na_case(const NaCase& c, DType dtype, uint64_t seed, HostTensor* got_o_out = nullptr,
                 HostTensor* got_l_out = nullptr) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> qs = {c.batch}, ks = {c.batch}, vs = {c.batch}, os = {c.batch}, ls = {c.batch};
  for (int64_t s : c.spatial) {
    qs.push_back(s); ks.push_back(s); vs.push_back(s); os.push_back(s); ls.push_back(s);
  }
  qs.insert(qs.end(), {c.heads, c.d});
  ks.insert(ks.end(), {c.heads_kv, c.d});
  vs.insert(vs.end(), {c.heads_kv, c.dv});
  os.insert(os.end(), {c.heads, c.dv});
  ls.push_back(c.heads);
  Dual q, k, v, o, lse, ek, ev;
  q.init(dtype, qs, c.pad, &rng, false);
  k.init(dtype, ks, c.pad, &rng, false);
  v.init(dtype, vs, c.pad, &rng, false);
  o.init(dtype, os, c.pad, nullptr, true);
  lse.init(DType::f32, ls, 0, nullptr, true);
  NaForwardArgs dev_args, host_args;
  dev_args.params = host_args.params = params_of(c);
  dev_args.query = q.dview; dev_args.key = k.dview; dev_args.value = v.dview; dev_args.out = o.dview;
  dev_args.lse = lse.dview;
  host_args.query = q.hview; host_args.key = k.hview; host_args.value = v.hview;
  HostTensor ref_o_store = o.host, ref_l_store = lse.host;
  host_args.out = TensorView(ref_o_store.view.data, dtype, o.hview.shape, o.hview.strides);
  host_args.lse = TensorView(ref_l_store.view.data, DType::f32, lse.hview.shape, lse.hview.strides);
  if (c.extra > 0) {
    ek.init(dtype, {c.batch, c.extra, c.heads_kv, c.d}, c.pad, &rng, false);
    ev.init(dtype, {c.batch, c.extra, c.heads_kv, c.dv}, c.pad, &rng, false);
    dev_args.additional_keys = ek.dview; dev_args.additional_values = ev.dview;
    host_args.additional_keys = ek.hview; host_args.additional_values = ev.hview;
  }
  RunOptions dev_opts;
  dev_opts.backend = "cutlass-fna";
  dev_opts.config = c.config;
  na_forward(dev_args, dev_opts);
  CK(cudaDeviceSynchronize());
  RunOptions ref_opts;
  ref_opts.backend = "reference";
  na_forward(host_args, ref_opts);
  const HostTensor got_o = o.fetch(), got_l = lse.fetch();
  if (got_o_out != nullptr) *got_o_out = got_o;
  if (got_l_out != nullptr) *got_l_out = got_l;
  const Errors e = compare(gather(got_o, o.hview), gather(ref_o_store, o.hview), gather(got_l, lse.hview),
                           gather(ref_l_store, lse.hview));
  std::printf("  na %-28s %-5s out rel L2 %.3g  lse max abs %.3g\n", c.name.c_str(), dtype_name(dtype),
              e.out_rel_l2, e.lse_max_abs);
  EXPECT_FALSE(e.nan) << c.name << " " << dtype_name(dtype) << ": NaN (unwritten output?)";
  EXPECT_LE(e.out_rel_l2, out_tol(dtype)) << c.name << " " << dtype_name(dtype);
  EXPECT_LE(e.lse_max_abs, lse_tol(dtype)) << c.name << " " << dtype_name(dtype);
}

std::vector<NaCase> na_cases() {
  std::vector<NaCase> v;
  auto add = [&](NaCase c) { v.push_back(std::move(c)); };
  { NaCase c; c.name = "1d_k7"; c.spatial = {100}; c.kernel = {7}; add(c); }
  { NaCase c; c.name = "1d_k13_s3_d2_causal"; c.spatial = {200}; c.kernel = {13}; c.stride = {3}; c.dilation = {2};
    c.causal = {true}; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "1d_k255_interior"; c.spatial = {1000}; c.kernel = {255}; c.batch = 1; c.d = c.dv = 128; add(c); }
  { NaCase c; c.name = "2d_k5x7_s2x1_d1x2_gqa"; c.spatial = {20, 17}; c.kernel = {5, 7}; c.stride = {2, 1};
    c.dilation = {1, 2}; c.heads = 4; c.heads_kv = 2; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_full_window_hd128"; c.spatial = {16, 16}; c.kernel = {16, 16}; c.batch = 1;
    c.d = c.dv = 128; add(c); }
  { NaCase c; c.name = "2d_causal_tf_tile4x16"; c.spatial = {13, 30}; c.kernel = {4, 9}; c.causal = {true, false};
    c.config = TileConfig{{4, 16}, {4, 16}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "3d_k3x5x7_d2_causal"; c.spatial = {6, 10, 12}; c.kernel = {3, 5, 7}; c.dilation = {2, 1, 1};
    c.causal = {true, false, false}; c.batch = 1; add(c); }
  { NaCase c; c.name = "3d_tile2x4x8_s2"; c.spatial = {5, 9, 17}; c.kernel = {3, 4, 8}; c.stride = {1, 2, 4};
    c.batch = 1; c.config = TileConfig{{2, 4, 8}, {2, 4, 8}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "2d_dv_ne_d"; c.spatial = {12, 12}; c.kernel = {5, 5}; c.d = 32; c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_d40_odd_pad"; c.spatial = {11, 9}; c.kernel = {3, 3}; c.d = 40; c.dv = 40; add(c); }
  { NaCase c; c.name = "2d_additional_kv"; c.spatial = {9, 14}; c.kernel = {3, 5}; c.extra = 37; c.heads = 2;
    c.heads_kv = 1; add(c); }
  // 625 tiles of additional KV: the walk spans two segments of the per-CTA tile list (512 positions
  // at head dim <= 128), the second starting inside the additional tokens.
  { NaCase c; c.name = "2d_additional_kv_two_segments"; c.spatial = {9, 14}; c.kernel = {3, 5}; c.extra = 40000;
    c.heads = 2; c.heads_kv = 1; c.batch = 1; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_strided_misaligned"; c.spatial = {10, 13}; c.kernel = {3, 7}; c.dilation = {2, 1};
    c.pad = 3; c.extra = 5; add(c); }
  { NaCase c; c.name = "2d_strided_aligned"; c.spatial = {10, 13}; c.kernel = {3, 7}; c.pad = 8; c.d = c.dv = 64;
    add(c); }
  { NaCase c; c.name = "1d_hd256"; c.spatial = {150}; c.kernel = {33}; c.batch = 1; c.heads = 1; c.heads_kv = 1;
    c.d = c.dv = 256; add(c); }
  // Tile shapes: 128-query tiles (2-D / 3-D, with stride, dilation, causal, GQA, additional KV), a
  // 128-key KV tile (walked as two halves), a 128-query tile at head dim 256 (run as two halves).
  { NaCase c; c.name = "2d_q16x8_kv16x4_causal"; c.spatial = {21, 19}; c.kernel = {7, 5}; c.causal = {false, true};
    c.d = c.dv = 64; c.config = TileConfig{{16, 8}, {16, 4}, KernelSchedule::none}; c.min_cc = 90; add(c); }
  { NaCase c; c.name = "3d_q2x8x8_kv2x4x8_gqa_extra"; c.spatial = {5, 11, 18}; c.kernel = {3, 5, 7};
    c.stride = {1, 2, 1}; c.dilation = {1, 1, 2}; c.heads = 4; c.heads_kv = 2; c.extra = 9; c.batch = 1;
    c.d = c.dv = 128; c.config = TileConfig{{2, 8, 8}, {2, 4, 8}, KernelSchedule::none}; c.min_cc = 90; add(c); }
  { NaCase c; c.name = "3d_q4x4x8_kv4x4x4_d40"; c.spatial = {7, 9, 13}; c.kernel = {5, 3, 9}; c.causal = {false, false, true};
    c.batch = 1; c.d = 40; c.dv = 72; c.config = TileConfig{{4, 4, 8}, {4, 4, 4}, KernelSchedule::none}; c.min_cc = 90;
    add(c); }
  { NaCase c; c.name = "1d_q64_kv128"; c.spatial = {300}; c.kernel = {77}; c.stride = {5}; c.batch = 1;
    c.config = TileConfig{{64}, {128}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "1d_q128_hd256"; c.spatial = {200}; c.kernel = {45}; c.batch = 1; c.heads = 1; c.heads_kv = 1;
    c.d = c.dv = 256; c.config = TileConfig{{128}, {64}, KernelSchedule::none}; c.min_cc = 90; add(c); }
  return v;
}

class CudaForward : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaForward, NaMatchesReference) {
  uint64_t seed = 1234;
  for (const NaCase& c : na_cases())
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      if (gpu_cc() < c.min_cc) continue;
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      try {
        run_na_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << ": " << e.what();
      }
    }
}

struct FmhaCase {
  std::string name;
  int64_t batch = 2, sq = 100, skv = 150, heads = 2, heads_kv = 2, d = 64, dv = 64, pad = 0;
  bool causal = false;
  std::vector<int> cu_q, cu_kv;  // varlen when non-empty (batch must be 1; sq/skv = totals)
  std::optional<TileConfig> config;
  // When non-empty: q[..., 0] = 1 and key j gets key_ramp[j / 64] added to k[..., 0], so the row
  // maxima jump between KV tiles by chosen amounts (the kernels' lazy rescale of O).
  std::vector<float> key_ramp;
};

void run_fmha_case(const FmhaCase& c, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Dual q, k, v, o, lse;
  q.init(dtype, {c.batch, c.sq, c.heads, c.d}, c.pad, &rng, false);
  k.init(dtype, {c.batch, c.skv, c.heads_kv, c.d}, c.pad, &rng, false);
  v.init(dtype, {c.batch, c.skv, c.heads_kv, c.dv}, c.pad, &rng, false);
  o.init(dtype, {c.batch, c.sq, c.heads, c.dv}, c.pad, nullptr, true);
  lse.init(DType::f32, {c.batch, c.sq, c.heads}, 0, nullptr, true);
  if (!c.key_ramp.empty()) {
    ASSERT_EQ(c.pad, 0) << "key_ramp needs contiguous inputs";
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t i = 0; i < c.sq; ++i) q.host.set(((b * c.sq + i) * c.heads + h) * c.d, 1.f);
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads_kv; ++h)
        for (int64_t j = 0; j < c.skv; ++j) {
          const int64_t at = ((b * c.skv + j) * c.heads_kv + h) * c.d;
          k.host.set(at, k.host.get(at) + c.key_ramp[static_cast<size_t>(j / 64) % c.key_ramp.size()]);
        }
    q.upload_storage();
    k.upload_storage();
  }
  FmhaForwardArgs da, ha;
  da.is_causal = ha.is_causal = c.causal;
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview; da.lse = lse.dview;
  HostTensor ref_o = o.host, ref_l = lse.host;
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview;
  ha.out = TensorView(ref_o.view.data, dtype, o.hview.shape, o.hview.strides);
  ha.lse = TensorView(ref_l.view.data, DType::f32, lse.hview.shape, lse.hview.strides);
  std::vector<int> hq = c.cu_q, hk = c.cu_kv;
  int* dq = nullptr;
  int* dk = nullptr;
  if (!c.cu_q.empty()) {
    ASSERT_EQ(cudaMalloc(&dq, hq.size() * sizeof(int)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dk, hk.size() * sizeof(int)), cudaSuccess);
    cudaMemcpy(dq, hq.data(), hq.size() * sizeof(int), cudaMemcpyHostToDevice);
    cudaMemcpy(dk, hk.data(), hk.size() * sizeof(int), cudaMemcpyHostToDevice);
    const Device gpu{DeviceKind::cuda, 0};
    da.cu_seqlens_q = TensorView(dq, DType::i32, {static_cast<int64_t>(hq.size())}, gpu);
    da.cu_seqlens_kv = TensorView(dk, DType::i32, {static_cast<int64_t>(hk.size())}, gpu);
    ha.cu_seqlens_q = TensorView(hq.data(), DType::i32, {static_cast<int64_t>(hq.size())});
    ha.cu_seqlens_kv = TensorView(hk.data(), DType::i32, {static_cast<int64_t>(hk.size())});
  }
  RunOptions dopt;
  dopt.backend = "cutlass-fmha";
  dopt.config = c.config;
  fmha_forward(da, dopt);
  CK(cudaDeviceSynchronize());
  RunOptions ropt;
  ropt.backend = "reference";
  fmha_forward(ha, ropt);
  const HostTensor go = o.fetch(), gl = lse.fetch();
  if (dq) cudaFree(dq);
  if (dk) cudaFree(dk);
  const Errors e = compare(gather(go, o.hview), gather(ref_o, o.hview), gather(gl, lse.hview), gather(ref_l, lse.hview));
  std::printf("  fmha %-26s %-5s out rel L2 %.3g  lse max abs %.3g\n", c.name.c_str(), dtype_name(dtype),
              e.out_rel_l2, e.lse_max_abs);
  EXPECT_FALSE(e.nan) << c.name << " " << dtype_name(dtype);
  EXPECT_LE(e.out_rel_l2, out_tol(dtype)) << c.name << " " << dtype_name(dtype);
  EXPECT_LE(e.lse_max_abs, lse_tol(dtype)) << c.name << " " << dtype_name(dtype);
}

TEST_F(CudaForward, FmhaMatchesReference) {
  std::vector<FmhaCase> cases;
  { FmhaCase c; c.name = "dense_100x150"; cases.push_back(c); }
  { FmhaCase c; c.name = "causal_130_hd128"; c.sq = c.skv = 130; c.causal = true; c.d = c.dv = 128; cases.push_back(c); }
  { FmhaCase c; c.name = "causal_sq200_skv70_gqa"; c.sq = 200; c.skv = 70; c.causal = true; c.heads = 4;
    c.heads_kv = 1; c.d = 32; c.dv = 64; cases.push_back(c); }
  { FmhaCase c; c.name = "strided_misaligned"; c.sq = 77; c.skv = 91; c.pad = 5; c.d = c.dv = 32; cases.push_back(c); }
  { FmhaCase c; c.name = "varlen"; c.batch = 1; c.cu_q = {0, 5, 75, 75, 205}; c.cu_kv = {0, 9, 73, 76, 276};
    c.sq = 212; c.skv = 280; cases.push_back(c); }
  { FmhaCase c; c.name = "varlen_causal_emptykv"; c.batch = 1; c.cu_q = {0, 70, 80, 150}; c.cu_kv = {0, 70, 70, 200};
    c.sq = 150; c.skv = 200; c.causal = true; cases.push_back(c); }
  // 64-query tiles (the 16-bit default on SM90 is 128): causal and varlen.
  { FmhaCase c; c.name = "causal_q64_sq200_skv170"; c.sq = 200; c.skv = 170; c.causal = true; c.d = c.dv = 128;
    c.config = TileConfig{{64}, {64}, KernelSchedule::none}; cases.push_back(c); }
  { FmhaCase c; c.name = "varlen_causal_q64"; c.batch = 1; c.cu_q = {0, 70, 80, 150}; c.cu_kv = {0, 70, 70, 200};
    c.sq = 150; c.skv = 200; c.causal = true; c.config = TileConfig{{64}, {64}, KernelSchedule::none};
    cases.push_back(c); }
  // Row maxima that jump between KV tiles (scores ~ ramp / 8 for d = 64): +40 and +5 stay below the
  // lazy-rescale threshold of 8 in log2 units (P up to 2^7.2), +105 rescales O, then a tile far
  // below; the causal variant starts every row on a different tile.
  { FmhaCase c; c.name = "max_jumps"; c.sq = 70; c.skv = 390; c.key_ramp = {0.f, 40.f, 45.f, 150.f, 152.f, -60.f, 20.f};
    cases.push_back(c); }
  { FmhaCase c; c.name = "max_jumps_causal_hd128"; c.sq = c.skv = 390; c.causal = true; c.d = c.dv = 128;
    c.key_ramp = {0.f, 40.f, 45.f, 150.f, 152.f, -60.f, 20.f}; cases.push_back(c); }
  uint64_t seed = 99;
  for (const FmhaCase& c : cases)
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      try {
        run_fmha_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << ": " << e.what();
      }
    }
}

// Upload a float array as `dtype` (or poison) and return the Dual holding it.
void upload(Dual& d, const golden::Array* a, DType dtype, const std::vector<int64_t>& shape) {
  d.init(dtype, shape, 0, nullptr, a == nullptr);
  if (a != nullptr) {
    for (int64_t i = 0; i < d.host.numel(); ++i) d.host.set(i, a->data[static_cast<size_t>(i)]);
    cudaMemcpy(d.dev, d.host.view.data, static_cast<size_t>(d.host.numel() * dtype_size(dtype)), cudaMemcpyHostToDevice);
  }
}

// The golden cases of testdata/golden (computed by NATTEN) on cutlass-fna, forward, every dtype.
TEST_F(CudaForward, GoldenCases) {
  const char* env = std::getenv("NATTN_GOLDEN_DIR");  // the device machine has another checkout path
  const std::string dir = env != nullptr ? env : NATTN_GOLDEN_DIR;
  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(dir);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no golden cases: " << e.what();
  }
  int checked = 0;
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    const golden::Tolerances tol = golden::tolerances_for(dtype);
    for (const std::string& path : paths) {
      const golden::Case gc = golden::load_case(path);
      Dual q, k, v, o, lse, ek, ev;
      upload(q, &gc.array("q"), dtype, gc.array("q").shape);
      upload(k, &gc.array("k"), dtype, gc.array("k").shape);
      upload(v, &gc.array("v"), dtype, gc.array("v").shape);
      upload(o, nullptr, dtype, gc.array("out").shape);
      upload(lse, nullptr, DType::f32, gc.array("lse").shape);
      NaForwardArgs a;
      a.params = gc.na_params();
      a.scale = gc.scale;
      a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview; a.lse = lse.dview;
      if (gc.additional_kv > 0) {
        upload(ek, &gc.array("additional_keys"), dtype, gc.array("additional_keys").shape);
        upload(ev, &gc.array("additional_values"), dtype, gc.array("additional_values").shape);
        a.additional_keys = ek.dview;
        a.additional_values = ev.dview;
      }
      RunOptions opt;
      opt.backend = "cutlass-fna";
      NaProblem problem = describe(a);
      problem.compute_capability = gpu_cc();  // describe() leaves it to the ops
      const std::string why = reject_reason("cutlass-fna", problem, Pass::forward);
      if (!why.empty()) {
        std::printf("  golden %s %s: skipped (%s)\n", gc.name.c_str(), dtype_name(dtype), why.c_str());
        continue;
      }
      try {
        na_forward(a, opt);
      } catch (const std::exception& e) {
        ADD_FAILURE() << gc.name << " " << dtype_name(dtype) << ": " << e.what();
        continue;
      }
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const HostTensor go = o.fetch(), gl = lse.fetch();
      const golden::Comparison co = golden::compare(go.to_float(), gc.array("out"), tol.out);
      const golden::Comparison cl = golden::compare(gl.to_float(), gc.array("lse"), tol.lse);
      EXPECT_TRUE(co.passed()) << gc.name << " " << dtype_name(dtype) << " out: error " << co.max_error
                               << " allowed " << co.allowed;
      EXPECT_TRUE(cl.passed()) << gc.name << " " << dtype_name(dtype) << " lse: error " << cl.max_error
                               << " allowed " << cl.allowed;
      ++checked;
    }
  }
  std::printf("  golden: %d case x dtype runs checked in %s\n", checked, dir.c_str());
}

// A 1-D window of 16400 keys: 258 KV tiles per axis, past the per-axis class cache (256), so the
// tile list classifies its tiles without it.
TEST_F(CudaForward, WalkPastTheClassCache) {
  NaCase c;
  c.name = "1d_k16400_past_cache";
  c.spatial = {16500};
  c.kernel = {16400};
  c.batch = 1;
  c.heads = c.heads_kv = 1;
  try {
    run_na_case(c, DType::bf16, 31);
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": " << e.what();
  }
}

// The segment kernel (forced by the testing hook NATTN_CUDA_FWD_WALK_SEGMENTS=1) walks the same
// tiles in the same order as the kernel that lists the whole walk: output and LSE equal bit for bit.
TEST_F(CudaForward, SegmentKernelMatchesListedKernel) {
  int compared = 0;
  for (const NaCase& c : na_cases()) {
    if (gpu_cc() < c.min_cc) continue;
    for (DType t : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      HostTensor listed_o, listed_l, seg_o, seg_l;
      try {
        run_na_case(c, t, 4242, &listed_o, &listed_l);
        setenv("NATTN_CUDA_FWD_WALK_SEGMENTS", "1", 1);
        run_na_case(c, t, 4242, &seg_o, &seg_l);
        unsetenv("NATTN_CUDA_FWD_WALK_SEGMENTS");
      } catch (const std::exception& e) {
        unsetenv("NATTN_CUDA_FWD_WALK_SEGMENTS");
        ADD_FAILURE() << c.name << " " << dtype_name(t) << ": " << e.what();
        continue;
      }
      auto bytes = [](const HostTensor& h) { return static_cast<size_t>(h.numel() * dtype_size(h.view.dtype)); };
      ASSERT_EQ(bytes(listed_o), bytes(seg_o));
      EXPECT_EQ(std::memcmp(listed_o.view.data, seg_o.view.data, bytes(seg_o)), 0) << "output differs";
      EXPECT_EQ(std::memcmp(listed_l.view.data, seg_l.view.data, bytes(seg_l)), 0) << "LSE differs";
      ++compared;
    }
  }
  EXPECT_GE(compared, 30);
}

// A small run of every path for compute-sanitizer (memcheck / racecheck).
TEST_F(CudaForward, SmallForSanitizer) {
  for (const NaCase& c : na_cases()) {
    if (c.name == "2d_additional_kv") run_na_case(c, DType::bf16, 7);
    if (c.name == "2d_additional_kv_two_segments") run_na_case(c, DType::bf16, 12);
    if (c.name == "2d_strided_misaligned") run_na_case(c, DType::f32, 8);
    if (c.name == "3d_k3x5x7_d2_causal") run_na_case(c, DType::f16, 9);
    if (c.name == "2d_q16x8_kv16x4_causal" && gpu_cc() >= c.min_cc) run_na_case(c, DType::bf16, 11);
  }
  FmhaCase f;
  f.name = "varlen_small";
  f.batch = 1;
  f.cu_q = {0, 5, 75};
  f.cu_kv = {0, 9, 80};
  f.sq = 80;
  f.skv = 80;
  f.causal = true;
  run_fmha_case(f, DType::f16, 10);
}

// fp16/bf16 on the SIMT kernel (what SM75 runs), forced on this GPU through the testing hook.
TEST_F(CudaForward, SimtKernelFor16Bit) {
  setenv("NATTN_CUDA_FORCE_SIMT", "1", 1);
  uint64_t seed = 555;
  for (const NaCase& c : na_cases()) {
    if (c.name != "2d_k5x7_s2x1_d1x2_gqa" && c.name != "3d_k3x5x7_d2_causal" && c.name != "2d_additional_kv" &&
        c.name != "1d_hd256" && c.name != "2d_strided_misaligned" && c.name != "3d_q4x4x8_kv4x4x4_d40")
      continue;
    if (gpu_cc() < c.min_cc) continue;
    for (DType t : {DType::f16, DType::bf16}) {
      try {
        run_na_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << " (simt): " << e.what();
      }
    }
  }
  unsetenv("NATTN_CUDA_FORCE_SIMT");
}

TEST_F(CudaForward, UnlistedTileConfigIsAValueError) {
  NaCase c;
  c.name = "q32";
  c.spatial = {16, 16};
  c.kernel = {3, 3};
  // Query volume 32: no kernel runs it, so the finder does not list it (NATTEN's table does).
  c.config = TileConfig{{4, 8}, {8, 16}, KernelSchedule::none};
  try {
    run_na_case(c, DType::f16, 1);
    ADD_FAILURE() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("q_tile=(4, 8) kv_tile=(8, 16)"), std::string::npos) << e.what();
  }
}

TEST_F(CudaForward, ClearErrors) {
  NaProblem p;
  p.spatial = {16, 16};
  p.params = NaParams::uniform(2, 3);
  p.dtype = DType::f16;
  p.device = Device{DeviceKind::cuda, 0};
  p.compute_capability = gpu_cc();
  EXPECT_EQ(reject_reason("cutlass-fna", p, Pass::forward), "");
  // (The backward pass has its own kernels and tests now: tests/cuda/, src/cuda/sm80/fna_bwd.)
}

}  // namespace
}  // namespace nattn
