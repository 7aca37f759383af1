// GPU tests of cutlass-fna / cutlass-fmha backward against the CPU `reference` backend on host
// copies: random inputs (never zero), the forward output and LSE of the reference given to both,
// gradients poisoned (NaN) before the run, every feature; determinism; the golden cases.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
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

using test::check_cuda;
using test::Dual;
using test::gather;
using test::gpu_cc;
using test::have_gpu;

// Relative L2 error; NaN anywhere in `got` makes it infinite.
double rel_l2(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(got[i]) || std::isinf(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

// Gradients: relative L2 against the fp64 reference (rounded to the dtype on store).
double grad_tol(DType t) { return t == DType::f32 ? 2e-5 : t == DType::f16 ? 2e-3 : 1.2e-2; }

struct GradCheck {
  std::string name;
  const Dual* dev;
  const HostTensor* ref;
};

void check_grads(const std::string& label, DType dtype, const std::vector<GradCheck>& grads) {
  std::string line;
  for (const GradCheck& g : grads) {
    const HostTensor got = g.dev->fetch();
    const double e = rel_l2(gather(got, g.dev->hview), gather(*g.ref, g.dev->hview));
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s %.3g", g.name.c_str(), e);
    line += buf;
    EXPECT_LE(e, grad_tol(dtype)) << label << " " << dtype_name(dtype) << " " << g.name << " (inf = NaN/unwritten)";
  }
  std::printf("  %-34s %-5s rel L2:%s\n", label.c_str(), dtype_name(dtype), line.c_str());
}

struct NaCase {
  std::string name;
  std::vector<int64_t> spatial;
  std::vector<int64_t> kernel, stride, dilation;
  std::vector<bool> causal;
  int64_t batch = 2, heads = 2, heads_kv = 2, d = 32, dv = 32, extra = 0, pad = 0;
  std::optional<TileConfig> config;
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

// One NA backward on the GPU and on the reference. `repeat` > 0: run the GPU backward again and
// require bit-identical gradients.
void run_na_case(const NaCase& c, DType dtype, uint64_t seed, bool repeat = false, bool deterministic = true) {
  std::mt19937_64 rng(seed);
  auto shape = [&](int64_t heads, int64_t dim) {
    std::vector<int64_t> s = {c.batch};
    s.insert(s.end(), c.spatial.begin(), c.spatial.end());
    s.push_back(heads);
    if (dim > 0) s.push_back(dim);
    return s;
  };
  Dual q, k, v, dout, o, lse, dq, dk, dv, ek, ev, dek, dev;
  q.init(dtype, shape(c.heads, c.d), c.pad, &rng, false);
  k.init(dtype, shape(c.heads_kv, c.d), c.pad, &rng, false);
  v.init(dtype, shape(c.heads_kv, c.dv), c.pad, &rng, false);
  dout.init(dtype, shape(c.heads, c.dv), c.pad, &rng, false);
  o.init(dtype, shape(c.heads, c.dv), c.pad, nullptr, true);
  lse.init(DType::f32, shape(c.heads, 0), 0, nullptr, true);
  dq.init(dtype, shape(c.heads, c.d), c.pad, nullptr, true);
  dk.init(dtype, shape(c.heads_kv, c.d), c.pad, nullptr, true);
  dv.init(dtype, shape(c.heads_kv, c.dv), c.pad, nullptr, true);
  if (c.extra > 0) {
    ek.init(dtype, {c.batch, c.extra, c.heads_kv, c.d}, c.pad, &rng, false);
    ev.init(dtype, {c.batch, c.extra, c.heads_kv, c.dv}, c.pad, &rng, false);
    dek.init(dtype, {c.batch, c.extra, c.heads_kv, c.d}, c.pad, nullptr, true);
    dev.init(dtype, {c.batch, c.extra, c.heads_kv, c.dv}, c.pad, nullptr, true);
  }
  // Forward on the reference; its out/lse feed both backward runs.
  NaForwardArgs fa;
  fa.params = params_of(c);
  fa.query = q.hview; fa.key = k.hview; fa.value = v.hview; fa.out = o.hview; fa.lse = lse.hview;
  if (c.extra > 0) { fa.additional_keys = ek.hview; fa.additional_values = ev.hview; }
  RunOptions ref;
  ref.backend = "reference";
  na_forward(fa, ref);
  o.upload_storage();
  lse.upload_storage();

  HostTensor rdq = dq.host, rdk = dk.host, rdv = dv.host, rdek = dek.host, rdev = dev.host;
  NaBackwardArgs ha, da;
  ha.params = da.params = params_of(c);
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview; ha.out = o.hview; ha.lse = lse.hview;
  ha.dout = dout.hview;
  ha.dquery = TensorView(rdq.view.data, dtype, dq.hview.shape, dq.hview.strides);
  ha.dkey = TensorView(rdk.view.data, dtype, dk.hview.shape, dk.hview.strides);
  ha.dvalue = TensorView(rdv.view.data, dtype, dv.hview.shape, dv.hview.strides);
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview; da.lse = lse.dview;
  da.dout = dout.dview; da.dquery = dq.dview; da.dkey = dk.dview; da.dvalue = dv.dview;
  if (c.extra > 0) {
    ha.additional_keys = ek.hview; ha.additional_values = ev.hview;
    ha.dadditional_keys = TensorView(rdek.view.data, dtype, dek.hview.shape, dek.hview.strides);
    ha.dadditional_values = TensorView(rdev.view.data, dtype, dev.hview.shape, dev.hview.strides);
    da.additional_keys = ek.dview; da.additional_values = ev.dview;
    da.dadditional_keys = dek.dview; da.dadditional_values = dev.dview;
  }
  na_backward(ha, ref);
  RunOptions gpu;
  gpu.backend = "cutlass-fna";
  gpu.config = c.config;
  gpu.deterministic = deterministic;
  na_backward(da, gpu);
  check_cuda(cudaDeviceSynchronize(), "na_backward");
  std::vector<GradCheck> grads = {{"dq", &dq, &rdq}, {"dk", &dk, &rdk}, {"dv", &dv, &rdv}};
  if (c.extra > 0) {
    grads.push_back({"dek", &dek, &rdek});
    grads.push_back({"dev", &dev, &rdev});
  }
  check_grads("na " + c.name, dtype, grads);
  if (repeat) {
    std::vector<HostTensor> first;
    for (const GradCheck& g : grads) first.push_back(g.dev->fetch());
    na_backward(da, gpu);
    check_cuda(cudaDeviceSynchronize(), "na_backward (repeat)");
    for (size_t i = 0; i < grads.size(); ++i) {
      const HostTensor again = grads[i].dev->fetch();
      EXPECT_EQ(std::memcmp(again.view.data, first[i].view.data, first[i].bytes.size()), 0)
          << c.name << " " << grads[i].name << ": two runs differ (not deterministic)";
    }
  }
}

std::vector<NaCase> na_cases() {
  std::vector<NaCase> v;
  auto add = [&](NaCase c) { v.push_back(std::move(c)); };
  { NaCase c; c.name = "1d_k7"; c.spatial = {100}; c.kernel = {7}; add(c); }
  { NaCase c; c.name = "1d_k13_s3_d2_causal"; c.spatial = {200}; c.kernel = {13}; c.stride = {3}; c.dilation = {2};
    c.causal = {true}; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "1d_k255_interior_hd128"; c.spatial = {700}; c.kernel = {255}; c.batch = 1; c.d = c.dv = 128;
    add(c); }
  { NaCase c; c.name = "1d_k8_even_s4"; c.spatial = {77}; c.kernel = {8}; c.stride = {4}; add(c); }
  { NaCase c; c.name = "2d_k5x7_s2x1_d1x2_gqa"; c.spatial = {20, 17}; c.kernel = {5, 7}; c.stride = {2, 1};
    c.dilation = {1, 2}; c.heads = 4; c.heads_kv = 2; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_mqa_causal_ft"; c.spatial = {18, 21}; c.kernel = {6, 5}; c.causal = {false, true};
    c.heads = 3; c.heads_kv = 1; add(c); }
  { NaCase c; c.name = "2d_full_window_hd128"; c.spatial = {16, 16}; c.kernel = {16, 16}; c.batch = 1;
    c.d = c.dv = 128; add(c); }
  { NaCase c; c.name = "2d_causal_tf_tile4x16"; c.spatial = {13, 30}; c.kernel = {4, 9}; c.causal = {true, false};
    c.config = TileConfig{{4, 16}, {4, 16}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "2d_tiles_q2x32_kv16x4"; c.spatial = {19, 40}; c.kernel = {7, 9}; c.stride = {1, 3};
    c.config = TileConfig{{2, 32}, {16, 4}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "3d_k3x5x7_d2_causal"; c.spatial = {6, 10, 12}; c.kernel = {3, 5, 7}; c.dilation = {2, 1, 1};
    c.causal = {true, false, false}; c.batch = 1; add(c); }
  { NaCase c; c.name = "3d_tile2x4x8_s2"; c.spatial = {5, 9, 17}; c.kernel = {3, 4, 8}; c.stride = {1, 2, 4};
    c.batch = 1; c.config = TileConfig{{2, 4, 8}, {2, 4, 8}, KernelSchedule::none}; add(c); }
  { NaCase c; c.name = "3d_all_causal_d2_gqa"; c.spatial = {7, 8, 9}; c.kernel = {3, 3, 4}; c.dilation = {1, 2, 2};
    c.causal = {true, true, true}; c.batch = 1; c.heads = 4; c.heads_kv = 2; add(c); }
  { NaCase c; c.name = "2d_dv_ne_d"; c.spatial = {12, 12}; c.kernel = {5, 5}; c.d = 32; c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_d40_dv24_odd"; c.spatial = {11, 9}; c.kernel = {3, 3}; c.d = 40; c.dv = 24; add(c); }
  { NaCase c; c.name = "2d_additional_kv_mqa"; c.spatial = {9, 14}; c.kernel = {3, 5}; c.extra = 37; c.heads = 2;
    c.heads_kv = 1; add(c); }
  { NaCase c; c.name = "3d_additional_kv_130"; c.spatial = {4, 6, 7}; c.kernel = {3, 3, 3}; c.extra = 130;
    c.batch = 1; c.d = c.dv = 64; add(c); }
  { NaCase c; c.name = "2d_strided_misaligned"; c.spatial = {10, 13}; c.kernel = {3, 7}; c.dilation = {2, 1};
    c.pad = 3; c.extra = 5; add(c); }
  { NaCase c; c.name = "2d_strided_aligned"; c.spatial = {10, 13}; c.kernel = {3, 7}; c.pad = 8; c.d = c.dv = 64;
    add(c); }
  return v;
}

class CudaBackward : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaBackward, NaMatchesReference) {
  uint64_t seed = 4321;
  for (const NaCase& c : na_cases())
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      try {
        run_na_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << ": " << e.what();
      }
    }
}

// The dK/dV kernel caches the classes of 256 walked query tiles per axis (bwd_common.cuh,
// kMaxAxisTiles); a wider walk takes the uncached path for the tiles past them. A 1-D window of
// ~17K keys walks ~270 query tiles of 64 per KV tile. bf16, fused dQ only (the fp64 reference
// takes ~45 s on two cores).
TEST_F(CudaBackward, WalkPastTheClassCache) {
  NaCase c;
  c.name = "1d_k16897_walk_past_cache";
  c.spatial = {17500};
  c.kernel = {16897};
  c.batch = 1;
  c.heads = c.heads_kv = 1;
  try {
    run_na_case(c, DType::bf16, 97, false, /*deterministic=*/false);  // the walk with dQ fused into it
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": " << e.what();
  }
}

struct FmhaCase {
  std::string name;
  int64_t batch = 2, sq = 100, skv = 150, heads = 2, heads_kv = 2, d = 64, dv = 64, pad = 0;
  bool causal = false;
  std::vector<int> cu_q, cu_kv;  // varlen when non-empty (batch 1; sq/skv = row counts)
};

void run_fmha_case(const FmhaCase& c, DType dtype, uint64_t seed, bool repeat = false, bool deterministic = true) {
  std::mt19937_64 rng(seed);
  Dual q, k, v, dout, o, lse, dq, dk, dv;
  q.init(dtype, {c.batch, c.sq, c.heads, c.d}, c.pad, &rng, false);
  k.init(dtype, {c.batch, c.skv, c.heads_kv, c.d}, c.pad, &rng, false);
  v.init(dtype, {c.batch, c.skv, c.heads_kv, c.dv}, c.pad, &rng, false);
  dout.init(dtype, {c.batch, c.sq, c.heads, c.dv}, c.pad, &rng, false);
  o.init(dtype, {c.batch, c.sq, c.heads, c.dv}, c.pad, nullptr, true);
  lse.init(DType::f32, {c.batch, c.sq, c.heads}, 0, nullptr, true);
  dq.init(dtype, {c.batch, c.sq, c.heads, c.d}, c.pad, nullptr, true);
  dk.init(dtype, {c.batch, c.skv, c.heads_kv, c.d}, c.pad, nullptr, true);
  dv.init(dtype, {c.batch, c.skv, c.heads_kv, c.dv}, c.pad, nullptr, true);
  std::vector<int> hq = c.cu_q, hk = c.cu_kv;
  int* dcq = nullptr;
  int* dck = nullptr;
  std::optional<TensorView> hcuq, hcuk, dcuq, dcuk;
  if (!c.cu_q.empty()) {
    check_cuda(cudaMalloc(&dcq, hq.size() * sizeof(int)), "cudaMalloc");
    check_cuda(cudaMalloc(&dck, hk.size() * sizeof(int)), "cudaMalloc");
    check_cuda(cudaMemcpy(dcq, hq.data(), hq.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
    check_cuda(cudaMemcpy(dck, hk.data(), hk.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
    const Device gpu{DeviceKind::cuda, 0};
    dcuq = TensorView(dcq, DType::i32, {static_cast<int64_t>(hq.size())}, gpu);
    dcuk = TensorView(dck, DType::i32, {static_cast<int64_t>(hk.size())}, gpu);
    hcuq = TensorView(hq.data(), DType::i32, {static_cast<int64_t>(hq.size())});
    hcuk = TensorView(hk.data(), DType::i32, {static_cast<int64_t>(hk.size())});
  }
  struct Free {
    int* a;
    int* b;
    ~Free() {
      if (a) cudaFree(a);
      if (b) cudaFree(b);
    }
  } freer{dcq, dck};
  FmhaForwardArgs fa;
  fa.is_causal = c.causal;
  fa.query = q.hview; fa.key = k.hview; fa.value = v.hview; fa.out = o.hview; fa.lse = lse.hview;
  fa.cu_seqlens_q = hcuq; fa.cu_seqlens_kv = hcuk;
  RunOptions ref;
  ref.backend = "reference";
  fmha_forward(fa, ref);
  o.upload_storage();
  lse.upload_storage();

  HostTensor rdq = dq.host, rdk = dk.host, rdv = dv.host;
  FmhaBackwardArgs ha, da;
  ha.is_causal = da.is_causal = c.causal;
  ha.query = q.hview; ha.key = k.hview; ha.value = v.hview; ha.out = o.hview; ha.lse = lse.hview;
  ha.dout = dout.hview;
  ha.dquery = TensorView(rdq.view.data, dtype, dq.hview.shape, dq.hview.strides);
  ha.dkey = TensorView(rdk.view.data, dtype, dk.hview.shape, dk.hview.strides);
  ha.dvalue = TensorView(rdv.view.data, dtype, dv.hview.shape, dv.hview.strides);
  ha.cu_seqlens_q = hcuq; ha.cu_seqlens_kv = hcuk;
  da.query = q.dview; da.key = k.dview; da.value = v.dview; da.out = o.dview; da.lse = lse.dview;
  da.dout = dout.dview; da.dquery = dq.dview; da.dkey = dk.dview; da.dvalue = dv.dview;
  da.cu_seqlens_q = dcuq; da.cu_seqlens_kv = dcuk;
  fmha_backward(ha, ref);
  RunOptions gpu;
  gpu.backend = "cutlass-fmha";
  gpu.deterministic = deterministic;
  fmha_backward(da, gpu);
  check_cuda(cudaDeviceSynchronize(), "fmha_backward");
  const std::vector<GradCheck> grads = {{"dq", &dq, &rdq}, {"dk", &dk, &rdk}, {"dv", &dv, &rdv}};
  check_grads("fmha " + c.name, dtype, grads);
  if (repeat) {
    std::vector<HostTensor> first;
    for (const GradCheck& g : grads) first.push_back(g.dev->fetch());
    fmha_backward(da, gpu);
    check_cuda(cudaDeviceSynchronize(), "fmha_backward (repeat)");
    for (size_t i = 0; i < grads.size(); ++i) {
      const HostTensor again = grads[i].dev->fetch();
      EXPECT_EQ(std::memcmp(again.view.data, first[i].view.data, first[i].bytes.size()), 0)
          << c.name << " " << grads[i].name << ": two runs differ (not deterministic)";
    }
  }
}

std::vector<FmhaCase> fmha_cases() {
  std::vector<FmhaCase> cases;
  { FmhaCase c; c.name = "dense_100x150"; cases.push_back(c); }
  { FmhaCase c; c.name = "causal_130_hd128"; c.sq = c.skv = 130; c.causal = true; c.d = c.dv = 128; cases.push_back(c); }
  { FmhaCase c; c.name = "causal_sq200_skv70_gqa"; c.sq = 200; c.skv = 70; c.causal = true; c.heads = 4;
    c.heads_kv = 1; c.d = 32; c.dv = 64; cases.push_back(c); }
  { FmhaCase c; c.name = "causal_sq60_skv190"; c.sq = 60; c.skv = 190; c.causal = true; cases.push_back(c); }
  { FmhaCase c; c.name = "strided_misaligned"; c.sq = 77; c.skv = 91; c.pad = 5; c.d = c.dv = 32; cases.push_back(c); }
  { FmhaCase c; c.name = "varlen_empty_uncovered"; c.batch = 1; c.cu_q = {0, 5, 75, 75, 205}; c.cu_kv = {0, 9, 73, 76, 276};
    c.sq = 212; c.skv = 280; cases.push_back(c); }
  { FmhaCase c; c.name = "varlen_causal_emptykv"; c.batch = 1; c.cu_q = {0, 70, 80, 150}; c.cu_kv = {0, 70, 70, 200};
    c.sq = 150; c.skv = 210; c.causal = true; c.heads = 2; c.heads_kv = 1; cases.push_back(c); }
  return cases;
}

TEST_F(CudaBackward, FmhaMatchesReference) {
  uint64_t seed = 77;
  for (const FmhaCase& c : fmha_cases())
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      try {
        run_fmha_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << ": " << e.what();
      }
    }
}

// RunOptions::deterministic = false: the tensor-core path fuses dQ into the dK/dV kernel (fp32
// atomics, then a conversion pass); fp32 runs the SIMT kernels (not fused) either way.
TEST_F(CudaBackward, NaFusedDqMatchesReference) {
  uint64_t seed = 9876;
  for (const NaCase& c : na_cases())
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t) + " fused dQ");
      try {
        run_na_case(c, t, seed++, false, false);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << " (fused dQ): " << e.what();
      }
    }
}

TEST_F(CudaBackward, FmhaFusedDqMatchesReference) {
  uint64_t seed = 177;
  for (const FmhaCase& c : fmha_cases())
    for (DType t : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t) + " fused dQ");
      try {
        run_fmha_case(c, t, seed++, false, false);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << " (fused dQ): " << e.what();
      }
    }
}

// Two runs of the same backward give bit-identical gradients (no atomics anywhere), also with
// RunOptions::deterministic left at its default.
TEST_F(CudaBackward, Deterministic) {
  for (const NaCase& c : na_cases()) {
    if (c.name == "2d_k5x7_s2x1_d1x2_gqa") run_na_case(c, DType::bf16, 11, true);
    if (c.name == "2d_additional_kv_mqa") run_na_case(c, DType::f32, 12, true);
  }
  for (const FmhaCase& c : fmha_cases())
    if (c.name == "varlen_causal_emptykv") run_fmha_case(c, DType::f16, 13, true);
}

void upload(Dual& d, const golden::Array* a, DType dtype, const std::vector<int64_t>& shape) {
  d.init(dtype, shape, 0, nullptr, a == nullptr);
  if (a != nullptr) {
    for (int64_t i = 0; i < d.host.numel(); ++i) d.host.set(i, a->data[static_cast<size_t>(i)]);
    d.upload_storage();
  }
}

// The golden cases (computed by NATTEN) on cutlass-fna backward, from the golden out/lse.
TEST_F(CudaBackward, GoldenCases) {
  const char* env = std::getenv("NATTN_GOLDEN_DIR");
  const std::string dir = env != nullptr ? env : NATTN_GOLDEN_DIR;
  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(dir);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no golden cases: " << e.what();
  }
  int checked = 0, without = 0;
  // Deterministic (two kernels) in every dtype; fused dQ (deterministic = false) in 16-bit.
  const std::vector<std::pair<DType, bool>> runs = {
      {DType::f32, true}, {DType::f16, true}, {DType::bf16, true}, {DType::f16, false}, {DType::bf16, false}};
  for (const auto& [dtype, deterministic] : runs) {
    const golden::Tolerances tol = golden::tolerances_for(dtype);
    for (const std::string& path : paths) {
      const golden::Case gc = golden::load_case(path);
      if (!gc.has_backward()) {
        ++without;
        continue;
      }
      Dual q, k, v, o, lse, dout, dq, dk, dv, ek, ev, dek, dev;
      upload(q, &gc.array("q"), dtype, gc.array("q").shape);
      upload(k, &gc.array("k"), dtype, gc.array("k").shape);
      upload(v, &gc.array("v"), dtype, gc.array("v").shape);
      upload(o, &gc.array("out"), dtype, gc.array("out").shape);
      upload(lse, &gc.array("lse"), DType::f32, gc.array("lse").shape);
      upload(dout, &gc.array("dout"), dtype, gc.array("dout").shape);
      upload(dq, nullptr, dtype, gc.array("q").shape);
      upload(dk, nullptr, dtype, gc.array("k").shape);
      upload(dv, nullptr, dtype, gc.array("v").shape);
      NaBackwardArgs a;
      a.params = gc.na_params();
      a.scale = gc.scale;
      a.query = q.dview; a.key = k.dview; a.value = v.dview; a.out = o.dview; a.lse = lse.dview;
      a.dout = dout.dview; a.dquery = dq.dview; a.dkey = dk.dview; a.dvalue = dv.dview;
      if (gc.additional_kv > 0) {
        upload(ek, &gc.array("additional_keys"), dtype, gc.array("additional_keys").shape);
        upload(ev, &gc.array("additional_values"), dtype, gc.array("additional_values").shape);
        upload(dek, nullptr, dtype, gc.array("additional_keys").shape);
        upload(dev, nullptr, dtype, gc.array("additional_values").shape);
        a.additional_keys = ek.dview; a.additional_values = ev.dview;
        a.dadditional_keys = dek.dview; a.dadditional_values = dev.dview;
      }
      NaProblem problem = describe(a);
      problem.compute_capability = gpu_cc();
      const std::string why = reject_reason("cutlass-fna", problem, Pass::backward);
      if (!why.empty()) {
        ADD_FAILURE() << gc.name << " " << dtype_name(dtype) << ": rejected: " << why;
        continue;
      }
      RunOptions opt;
      opt.backend = "cutlass-fna";
      opt.deterministic = deterministic;
      try {
        na_backward(a, opt);
        check_cuda(cudaDeviceSynchronize(), "na_backward");
      } catch (const std::exception& e) {
        ADD_FAILURE() << gc.name << " " << dtype_name(dtype) << ": " << e.what();
        continue;
      }
      std::vector<std::pair<const char*, const Dual*>> outs = {{"dq", &dq}, {"dk", &dk}, {"dv", &dv}};
      if (gc.additional_kv > 0) {
        outs.push_back({"d_additional_keys", &dek});
        outs.push_back({"d_additional_values", &dev});
      }
      for (const auto& [name, dual] : outs) {
        const golden::Comparison cmp = golden::compare(dual->fetch().to_float(), gc.array(name), tol.grad);
        EXPECT_TRUE(cmp.passed()) << gc.name << " " << dtype_name(dtype) << (deterministic ? "" : " fused dQ") << " "
                                  << name << ": error "
                                  << cmp.max_error << " allowed " << cmp.allowed;
      }
      ++checked;
    }
  }
  std::printf("  golden backward: %d case x dtype runs checked (%d without backward data) in %s\n", checked,
              without, dir.c_str());
  EXPECT_GT(checked, 0);
}

// A small run of every path for compute-sanitizer (memcheck / racecheck).
TEST_F(CudaBackward, SmallForSanitizer) {
  for (const NaCase& c : na_cases()) {
    if (c.name == "2d_additional_kv_mqa") run_na_case(c, DType::bf16, 7);
    if (c.name == "3d_k3x5x7_d2_causal") run_na_case(c, DType::f16, 9);
    if (c.name == "1d_k255_interior_hd128") run_na_case(c, DType::bf16, 19, false, false);  // fused dQ, hd 128
    if (c.name == "2d_additional_kv_mqa") run_na_case(c, DType::f16, 20, false, false);    // fused dQ, extra KV
  }
  FmhaCase f;
  f.name = "varlen_small";
  f.batch = 1;
  f.cu_q = {0, 5, 75, 75};
  f.cu_kv = {0, 9, 80, 80};
  f.sq = 80;
  f.skv = 85;
  f.causal = true;
  run_fmha_case(f, DType::f16, 10);
  run_fmha_case(f, DType::bf16, 21, false, false);  // fused dQ
  // The SIMT kernel (fp32) last: a build without fp32 kernels fails here, after the rest ran.
  for (const NaCase& c : na_cases())
    if (c.name == "2d_strided_misaligned") run_na_case(c, DType::f32, 8);
}

// fp16/bf16 on the SIMT kernels (what SM75 runs), forced on this GPU through the testing hook.
TEST_F(CudaBackward, SimtKernelFor16Bit) {
  setenv("NATTN_CUDA_FORCE_SIMT", "1", 1);
  uint64_t seed = 555;
  for (const NaCase& c : na_cases()) {
    if (c.name != "2d_k5x7_s2x1_d1x2_gqa" && c.name != "3d_k3x5x7_d2_causal" && c.name != "2d_additional_kv_mqa" &&
        c.name != "2d_strided_misaligned" && c.name != "2d_d40_dv24_odd")
      continue;
    for (DType t : {DType::f16, DType::bf16}) {
      try {
        run_na_case(c, t, seed++);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " " << dtype_name(t) << " (simt): " << e.what();
      }
    }
  }
  for (const FmhaCase& c : fmha_cases()) {
    if (c.name != "varlen_causal_emptykv") continue;
    try {
      run_fmha_case(c, DType::bf16, seed++);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << " (simt): " << e.what();
    }
  }
  unsetenv("NATTN_CUDA_FORCE_SIMT");
}

TEST_F(CudaBackward, ClearErrors) {
  NaProblem p;
  p.spatial = {16, 16};
  p.params = NaParams::uniform(2, 3);
  p.dtype = DType::f16;
  p.head_dim = p.head_dim_v = 64;
  p.device = Device{DeviceKind::cuda, 0};
  p.compute_capability = gpu_cc();
  EXPECT_EQ(reject_reason("cutlass-fna", p, Pass::backward), "");
  p.head_dim = p.head_dim_v = 256;
  const std::string why = reject_reason("cutlass-fna", p, Pass::backward);
  EXPECT_NE(why.find("head dim"), std::string::npos) << why;
  EXPECT_NE(why.find("256"), std::string::npos) << why;
  FmhaProblem f;
  f.dtype = DType::bf16;
  f.head_dim = f.head_dim_v = 128;
  f.device = Device{DeviceKind::cuda, 0};
  f.compute_capability = gpu_cc();
  EXPECT_EQ(reject_reason("cutlass-fmha", f, Pass::backward), "");
  // A backward tile config that no kernel runs (volume 128) is not listed: ValueError naming it.
  NaCase c;
  c.name = "q128";
  c.spatial = {16, 16};
  c.kernel = {3, 3};
  c.config = TileConfig{{8, 16}, {8, 16}, KernelSchedule::none};
  try {
    run_na_case(c, DType::f16, 1);
    ADD_FAILURE() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("q_tile=(8, 16) kv_tile=(8, 16)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nattn
