// GPU tests of sub-domain NA (multi-device halos, issue 6) on cutlass-fna (and the hopper-fna
// forward's direct mode on SM90): random global grids,
// random local query boxes and key/value boxes (the exact halo, sometimes wider), every NA
// feature, forward (out, LSE) and backward (dQ, dK, dV) against the `reference` backend run on
// the same sub-domain (whose equality with the single-domain result is tested in
// tests/cpu/reference/test_reference_subdomain.cpp). Outputs are poisoned (NaN) before each run.
// A second test shards whole problems into slabs on the GPU and reassembles them: out/LSE/dQ
// concatenate and dK/dV sum to the single-domain cutlass-fna result.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cuda/cuda_test_util.h"
#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace nattn {
namespace {

using test::check_cuda;
using test::Dual;
using test::gather;
using test::have_gpu;
using test::HostTensor;

double tol(DType t) { return t == DType::f32 ? 2e-5 : t == DType::f16 ? 2e-3 : 1.2e-2; }
double lse_tol(DType t) { return t == DType::f32 ? 1e-4 : 2e-2; }

// Relative L2 error; NaN/inf anywhere in `got` (an unwritten output) makes it infinite.
double rel_l2(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

double max_abs(const std::vector<double>& got, const std::vector<double>& ref) {
  double e = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(got[i])) {
      if (got[i] != ref[i]) return INFINITY;
      continue;
    }
    if (std::isnan(got[i])) return INFINITY;
    e = std::max(e, std::fabs(got[i] - ref[i]));
  }
  return e;
}

struct Case {
  std::string name;
  NaParams params;
  std::vector<int64_t> global, qlo, qhi, kvlo, kvhi;
  int64_t batch = 1, heads = 2, heads_kv = 2, d = 32, dv = 32;
  DType dtype = DType::f32;
  std::optional<TileConfig> config;
};

std::vector<int64_t> shape_of(const Case& c, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi,
                              int64_t heads, int64_t dim) {
  std::vector<int64_t> s = {c.batch};
  for (size_t i = 0; i < lo.size(); ++i) s.push_back(hi[i] - lo[i]);
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}

SubDomain sub_of(const Case& c) {
  SubDomain sd;
  for (size_t i = 0; i < c.global.size(); ++i) {
    sd.global_extent[i] = c.global[i];
    sd.q_origin[i] = c.qlo[i];
    sd.kv_origin[i] = c.kvlo[i];
  }
  return sd;
}

// A random valid case: kernel * dilation <= extent on every axis, a non-empty query box, and a
// key/value box holding its halo (the exact halo or up to 2 more tokens on each side).
// hopper: a case hopper-fna's direct mode takes (fp16/bf16, no dilation, D == Dv in 32/64/128, the
// default config), on larger grids so that boxes span several 128-token tiles.
Case random_case(std::mt19937_64& rng, int index, bool hopper = false) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Case c;
  const int rank = static_cast<int>(pick(1, 3));
  c.params.rank = rank;
  const int64_t max_extent = hopper ? (rank == 1 ? 600 : rank == 2 ? 48 : 16) : (rank == 1 ? 150 : rank == 2 ? 26 : 11);
  for (int i = 0; i < rank; ++i) {
    const size_t u = static_cast<size_t>(i);
    const int64_t extent = pick(4, max_extent);
    const int64_t dil = !hopper && pick(1, 4) == 1 ? pick(2, 3) : 1;
    const int64_t d = std::min<int64_t>(dil, extent / 2);
    const int64_t k = pick(2, std::max<int64_t>(2, std::min<int64_t>(extent / d, rank == 1 ? 33 : 9)));
    c.params.kernel_size[u] = k;
    c.params.dilation[u] = d;
    c.params.stride[u] = pick(1, 3) == 1 ? pick(1, k) : 1;
    c.params.is_causal[u] = pick(0, 3) == 0;
    c.global.push_back(extent);
    const int64_t a = pick(0, extent - 1), b = pick(a + 1, extent);
    c.qlo.push_back(a);
    c.qhi.push_back(b);
    const sem::Range h = sem::halo_range(a, b, extent, k, c.params.stride[u], d, c.params.is_causal[u]);
    c.kvlo.push_back(std::max<int64_t>(0, h.start - pick(0, 2)));
    c.kvhi.push_back(std::min<int64_t>(extent, h.end + pick(0, 2)));
  }
  const DType dtypes[3] = {DType::f32, DType::f16, DType::bf16};
  c.dtype = dtypes[index % 3];
  c.batch = pick(1, 2);
  c.heads_kv = pick(1, 2);
  c.heads = c.heads_kv * pick(1, 2);
  c.d = pick(0, 3) == 0 ? 64 : 32;
  c.dv = pick(0, 4) == 0 ? 64 : c.d;
  if (index % 5 == 4 && rank == 2) c.config = TileConfig{{4, 16}, {4, 16}, KernelSchedule::none};
  if (hopper) {
    c.dtype = index % 2 ? DType::bf16 : DType::f16;
    const int64_t dims[3] = {32, 64, 128};
    c.d = c.dv = dims[index % 3];
    c.config.reset();
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "#%d rank %d %s", index, rank, c.params.describe().c_str());
  c.name = buf;
  return c;
}

// Forward and backward (backward = false: the forward only) of one case on the GPU backend and on
// the reference.
void run_case(const Case& c, uint64_t seed, const std::string& backend = "cutlass-fna", bool backward = true) {
  std::mt19937_64 rng(seed);
  const DType t = c.dtype;
  const SubDomain sd = sub_of(c);
  Dual q, k, v, dout, o, lse, go, glse, dq, dk, dv;
  q.init(t, shape_of(c, c.qlo, c.qhi, c.heads, c.d), 0, &rng, false);
  k.init(t, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.d), 0, &rng, false);
  v.init(t, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.dv), 0, &rng, false);
  dout.init(t, shape_of(c, c.qlo, c.qhi, c.heads, c.dv), 0, &rng, false);
  o.init(t, shape_of(c, c.qlo, c.qhi, c.heads, c.dv), 0, nullptr, true);
  lse.init(DType::f32, shape_of(c, c.qlo, c.qhi, c.heads, 0), 0, nullptr, true);
  go.init(t, shape_of(c, c.qlo, c.qhi, c.heads, c.dv), 0, nullptr, true);
  glse.init(DType::f32, shape_of(c, c.qlo, c.qhi, c.heads, 0), 0, nullptr, true);
  dq.init(t, shape_of(c, c.qlo, c.qhi, c.heads, c.d), 0, nullptr, true);
  dk.init(t, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.d), 0, nullptr, true);
  dv.init(t, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.dv), 0, nullptr, true);

  RunOptions ref, gpu;
  ref.backend = "reference";
  gpu.backend = backend;
  gpu.config = c.config;
  NaForwardArgs hf, df;
  hf.params = df.params = c.params;
  hf.sub_domain = df.sub_domain = sd;
  hf.query = q.hview; hf.key = k.hview; hf.value = v.hview; hf.out = o.hview; hf.lse = lse.hview;
  df.query = q.dview; df.key = k.dview; df.value = v.dview; df.out = go.dview; df.lse = glse.dview;
  na_forward(hf, ref);
  na_forward(df, gpu);
  check_cuda(cudaDeviceSynchronize(), "na_forward");
  const double eo = rel_l2(gather(go.fetch(), go.hview), gather(o.host, o.hview));
  const double el = max_abs(gather(glse.fetch(), glse.hview), gather(lse.host, lse.hview));
  EXPECT_LE(eo, tol(t)) << c.name << " " << dtype_name(t) << " out";
  EXPECT_LE(el, lse_tol(t)) << c.name << " " << dtype_name(t) << " lse";
  if (!backward) {
    std::printf("  %-70s %-5s hd %3lld out %.2g lse %.2g\n", c.name.c_str(), dtype_name(t),
                static_cast<long long>(c.d), eo, el);
    return;
  }

  // Backward: the reference forward's out/LSE feed both.
  o.upload_storage();
  lse.upload_storage();
  HostTensor rdq = dq.host, rdk = dk.host, rdv = dv.host;
  NaBackwardArgs hb, db;
  hb.params = db.params = c.params;
  hb.sub_domain = db.sub_domain = sd;
  hb.query = q.hview; hb.key = k.hview; hb.value = v.hview; hb.out = o.hview; hb.lse = lse.hview;
  hb.dout = dout.hview;
  hb.dquery = TensorView(rdq.view.data, t, dq.hview.shape, dq.hview.strides);
  hb.dkey = TensorView(rdk.view.data, t, dk.hview.shape, dk.hview.strides);
  hb.dvalue = TensorView(rdv.view.data, t, dv.hview.shape, dv.hview.strides);
  db.query = q.dview; db.key = k.dview; db.value = v.dview; db.out = o.dview; db.lse = lse.dview;
  db.dout = dout.dview; db.dquery = dq.dview; db.dkey = dk.dview; db.dvalue = dv.dview;
  na_backward(hb, ref);
  na_backward(db, gpu);
  check_cuda(cudaDeviceSynchronize(), "na_backward");
  const double eq = rel_l2(gather(dq.fetch(), dq.hview), gather(rdq, dq.hview));
  const double ek = rel_l2(gather(dk.fetch(), dk.hview), gather(rdk, dk.hview));
  const double ev = rel_l2(gather(dv.fetch(), dv.hview), gather(rdv, dv.hview));
  EXPECT_LE(eq, tol(t)) << c.name << " " << dtype_name(t) << " dq";
  EXPECT_LE(ek, tol(t)) << c.name << " " << dtype_name(t) << " dk";
  EXPECT_LE(ev, tol(t)) << c.name << " " << dtype_name(t) << " dv";
  std::printf("  %-70s %-5s out %.2g lse %.2g dq %.2g dk %.2g dv %.2g\n", c.name.c_str(), dtype_name(t), eo, el, eq,
              ek, ev);
}

TEST(CudaSubdomain, RandomBoxesMatchTheReference) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(20261124);
  for (int i = 0; i < 120; ++i) {
    const Case c = random_case(rng, i);
    try {
      run_case(c, 1000 + static_cast<uint64_t>(i));
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << " " << dtype_name(c.dtype) << ": " << e.what();
    }
  }
}

TEST(CudaSubdomain, SmallForSanitizer) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(7);
  for (int i = 0; i < 6; ++i) run_case(random_case(rng, i), 77 + static_cast<uint64_t>(i));
}

// hopper-fna takes sub-domains in its direct mode (forward): random boxes against the reference, and
// automatic selection picks it for such a forward on an SM90 device.
bool hopper_fna_runs_here() {
  bool built = false;
  for (const BackendInfo& b : list_backends()) built = built || (b.name == "hopper-fna" && b.built);
  return built && test::gpu_cc() == 90;
}

// The forward problem of a case on an SM90 device (for the registry).
NaProblem problem_of(const Case& c) {
  NaProblem p;
  p.params = c.params;
  for (size_t a = 0; a < c.global.size(); ++a) p.spatial.push_back(c.qhi[a] - c.qlo[a]);
  p.batch = c.batch;
  p.heads = c.heads;
  p.heads_kv = c.heads_kv;
  p.head_dim = c.d;
  p.head_dim_v = c.dv;
  p.dtype = c.dtype;
  p.device = Device{DeviceKind::cuda, 0};
  p.compute_capability = 90;
  p.sub_domain = sub_of(c);
  return p;
}

TEST(CudaSubdomain, HopperFnaForwardMatchesTheReference) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper_fna_runs_here()) GTEST_SKIP() << "hopper-fna not built or not an SM90 device";
  std::mt19937_64 rng(20261125);
  int ran = 0;
  for (int i = 0; i < 90; ++i) {
    const Case c = random_case(rng, i, true);
    const std::string why = reject_reason("hopper-fna", problem_of(c), Pass::forward);
    if (!why.empty()) {  // only a head dim this build leaves out may skip
      EXPECT_NE(why.find("no kernel compiled"), std::string::npos) << c.name << ": " << why;
      continue;
    }
    try {
      run_case(c, 5000 + static_cast<uint64_t>(i), "hopper-fna", false);
      ++ran;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << " " << dtype_name(c.dtype) << ": " << e.what();
    }
  }
  EXPECT_GT(ran, 30);
  // Automatic selection: hopper-fna for the forward, cutlass-fna for the backward.
  Case c = random_case(rng, 1, true);
  c.d = c.dv = 64;
  c.dtype = DType::bf16;
  const NaProblem p = problem_of(c);
  EXPECT_EQ(choose_backend(p, Pass::forward).backend, "hopper-fna");
  EXPECT_EQ(choose_backend(p, Pass::backward).backend, "cutlass-fna");
}

// A sub-domain whose tensors the direct mode cannot read (a head stride that is not the head dim)
// runs on cutlass-fna through hopper-fna (logged once), with the same result.
TEST(CudaSubdomain, HopperFnaStridedSubdomainFallsBack) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!hopper_fna_runs_here()) GTEST_SKIP() << "hopper-fna not built or not an SM90 device";
  Case c;
  c.params.rank = 1;
  c.params.kernel_size[0] = 9;
  c.global = {300};
  c.qlo = {100};
  c.qhi = {220};
  const sem::Range h = sem::halo_range(100, 220, 300, 9, 1, 1, false);
  c.kvlo = {h.start};
  c.kvhi = {h.end};
  c.dtype = DType::bf16;
  c.d = c.dv = 64;
  // The reference and hopper-fna runs share the inputs; a padded head dim gives the strided views.
  std::mt19937_64 rng(3);
  Dual q, k, v, o, lse, go, glse;
  const int64_t pad = 8;
  q.init(c.dtype, shape_of(c, c.qlo, c.qhi, c.heads, c.d), pad, &rng, false);
  k.init(c.dtype, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.d), pad, &rng, false);
  v.init(c.dtype, shape_of(c, c.kvlo, c.kvhi, c.heads_kv, c.dv), pad, &rng, false);
  o.init(c.dtype, shape_of(c, c.qlo, c.qhi, c.heads, c.dv), 0, nullptr, true);
  lse.init(DType::f32, shape_of(c, c.qlo, c.qhi, c.heads, 0), 0, nullptr, true);
  go.init(c.dtype, shape_of(c, c.qlo, c.qhi, c.heads, c.dv), 0, nullptr, true);
  glse.init(DType::f32, shape_of(c, c.qlo, c.qhi, c.heads, 0), 0, nullptr, true);
  NaForwardArgs hf, df;
  hf.params = df.params = c.params;
  hf.sub_domain = df.sub_domain = sub_of(c);
  hf.query = q.hview; hf.key = k.hview; hf.value = v.hview; hf.out = o.hview; hf.lse = lse.hview;
  df.query = q.dview; df.key = k.dview; df.value = v.dview; df.out = go.dview; df.lse = glse.dview;
  ASSERT_EQ(cuda::sm90::na_forward_direct_blocker(df), "head stride != head dim");
  RunOptions ref, gpu;
  ref.backend = "reference";
  gpu.backend = "hopper-fna";
  na_forward(hf, ref);
  na_forward(df, gpu);
  check_cuda(cudaDeviceSynchronize(), "na_forward");
  EXPECT_LE(rel_l2(gather(go.fetch(), go.hview), gather(o.host, o.hview)), tol(c.dtype));
  EXPECT_LE(max_abs(gather(glse.fetch(), glse.hview), gather(lse.host, lse.hview)), lse_tol(c.dtype));
}

// Slabs along axis 0 of a whole problem, each run with its exact halo, reassembled: equal to the
// single-domain GPU run (out/LSE/dQ rows, dK/dV summed over the slabs in fp64).
TEST(CudaSubdomain, SlabsReassembleTheWholeProblem) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Whole {
    std::vector<int64_t> extent, kernel, stride, dilation;
    std::vector<bool> causal;
    int slabs;
  };
  const std::vector<Whole> problems = {
      {{97}, {13}, {3}, {2}, {false}, 3},
      {{24, 18}, {7, 5}, {2, 1}, {1, 2}, {true, false}, 2},
      {{9, 10, 12}, {3, 5, 5}, {1, 2, 1}, {2, 1, 1}, {false, false, true}, 3},
  };
  for (const DType t : {DType::f32, DType::bf16}) {
    for (const Whole& w : problems) {
      Case whole;
      whole.dtype = t;
      whole.params.rank = static_cast<int>(w.extent.size());
      for (size_t i = 0; i < w.extent.size(); ++i) {
        whole.params.kernel_size[i] = w.kernel[i];
        whole.params.stride[i] = w.stride[i];
        whole.params.dilation[i] = w.dilation[i];
        whole.params.is_causal[i] = w.causal[i];
      }
      whole.global = whole.kvhi = whole.qhi = w.extent;
      whole.qlo = whole.kvlo = std::vector<int64_t>(w.extent.size(), 0);
      std::mt19937_64 rng(99);
      Dual q, k, v, dout, o, lse, dq, dk, dv;
      q.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads, whole.d), 0, &rng, false);
      k.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads_kv, whole.d), 0, &rng, false);
      v.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads_kv, whole.dv), 0, &rng, false);
      dout.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads, whole.dv), 0, &rng, false);
      o.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads, whole.dv), 0, nullptr, true);
      lse.init(DType::f32, shape_of(whole, whole.qlo, whole.qhi, whole.heads, 0), 0, nullptr, true);
      dq.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads, whole.d), 0, nullptr, true);
      dk.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads_kv, whole.d), 0, nullptr, true);
      dv.init(t, shape_of(whole, whole.qlo, whole.qhi, whole.heads_kv, whole.dv), 0, nullptr, true);
      RunOptions gpu;
      gpu.backend = "cutlass-fna";
      NaForwardArgs f;
      f.params = whole.params;
      f.query = q.dview; f.key = k.dview; f.value = v.dview; f.out = o.dview; f.lse = lse.dview;
      na_forward(f, gpu);
      NaBackwardArgs b;
      b.params = whole.params;
      b.query = q.dview; b.key = k.dview; b.value = v.dview; b.out = o.dview; b.lse = lse.dview;
      b.dout = dout.dview; b.dquery = dq.dview; b.dkey = dk.dview; b.dvalue = dv.dview;
      na_backward(b, gpu);
      check_cuda(cudaDeviceSynchronize(), "whole problem");
      const HostTensor ho = o.fetch(), hl = lse.fetch(), hdq = dq.fetch(), hdk = dk.fetch(), hdv = dv.fetch();

      // Per-slab runs; each local tensor is a slice of the whole one along axis 0 (batch 1, so a
      // contiguous range of rows), uploaded separately.
      const int64_t e0 = w.extent[0];
      std::vector<double> sdk(static_cast<size_t>(hdk.numel()), 0.0), sdv(static_cast<size_t>(hdv.numel()), 0.0);
      const int64_t row_q = q.host.numel() / e0, row_k = k.host.numel() / e0, row_v = v.host.numel() / e0;
      const int64_t row_o = o.host.numel() / e0, row_l = lse.host.numel() / e0;
      for (int s = 0; s < w.slabs; ++s) {
        const int64_t lo = e0 * s / w.slabs, hi = e0 * (s + 1) / w.slabs;
        const sem::Range h = sem::halo_range(lo, hi, e0, w.kernel[0], w.stride[0], w.dilation[0], w.causal[0]);
        Case loc = whole;
        loc.qlo[0] = lo;
        loc.qhi[0] = hi;
        loc.kvlo[0] = h.start;
        loc.kvhi[0] = h.end;
        auto slice = [&](Dual& dst, const HostTensor& src, int64_t row, int64_t a, int64_t n, DType dt,
                         const std::vector<int64_t>& shape) {
          dst.init(dt, shape, 0, nullptr, false);
          for (int64_t i = 0; i < n * row; ++i) dst.host.set(i, src.get(a * row + i));
          dst.upload_storage();
        };
        Dual lq, lk, lv, ld, lgo, lgl, ldq, ldk, ldv;
        slice(lq, q.host, row_q, lo, hi - lo, t, shape_of(loc, loc.qlo, loc.qhi, loc.heads, loc.d));
        slice(lk, k.host, row_k, h.start, h.size(), t, shape_of(loc, loc.kvlo, loc.kvhi, loc.heads_kv, loc.d));
        slice(lv, v.host, row_v, h.start, h.size(), t, shape_of(loc, loc.kvlo, loc.kvhi, loc.heads_kv, loc.dv));
        slice(ld, dout.host, row_o, lo, hi - lo, t, shape_of(loc, loc.qlo, loc.qhi, loc.heads, loc.dv));
        lgo.init(t, shape_of(loc, loc.qlo, loc.qhi, loc.heads, loc.dv), 0, nullptr, true);
        lgl.init(DType::f32, shape_of(loc, loc.qlo, loc.qhi, loc.heads, 0), 0, nullptr, true);
        ldq.init(t, shape_of(loc, loc.qlo, loc.qhi, loc.heads, loc.d), 0, nullptr, true);
        ldk.init(t, shape_of(loc, loc.kvlo, loc.kvhi, loc.heads_kv, loc.d), 0, nullptr, true);
        ldv.init(t, shape_of(loc, loc.kvlo, loc.kvhi, loc.heads_kv, loc.dv), 0, nullptr, true);
        NaForwardArgs lf;
        lf.params = loc.params;
        lf.sub_domain = sub_of(loc);
        lf.query = lq.dview; lf.key = lk.dview; lf.value = lv.dview; lf.out = lgo.dview; lf.lse = lgl.dview;
        na_forward(lf, gpu);
        NaBackwardArgs lb;
        lb.params = loc.params;
        lb.sub_domain = sub_of(loc);
        lb.query = lq.dview; lb.key = lk.dview; lb.value = lv.dview; lb.out = lgo.dview; lb.lse = lgl.dview;
        lb.dout = ld.dview; lb.dquery = ldq.dview; lb.dkey = ldk.dview; lb.dvalue = ldv.dview;
        na_backward(lb, gpu);
        check_cuda(cudaDeviceSynchronize(), "slab");
        const HostTensor so = lgo.fetch(), sl = lgl.fetch(), sq = ldq.fetch(), sk = ldk.fetch(), sv = ldv.fetch();
        // The forward runs the same per-query computation on the same data, so rows agree to
        // rounding of a different tile grouping only.
        std::vector<double> go_, ro_, gl_, rl_, gq_, rq_;
        for (int64_t i = 0; i < (hi - lo) * row_o; ++i) { go_.push_back(so.get(i)); ro_.push_back(ho.get(lo * row_o + i)); }
        for (int64_t i = 0; i < (hi - lo) * row_l; ++i) { gl_.push_back(sl.get(i)); rl_.push_back(hl.get(lo * row_l + i)); }
        for (int64_t i = 0; i < (hi - lo) * row_q; ++i) { gq_.push_back(sq.get(i)); rq_.push_back(hdq.get(lo * row_q + i)); }
        const std::string label = whole.params.describe() + " slab " + std::to_string(s) + " " + dtype_name(t);
        EXPECT_LE(rel_l2(go_, ro_), tol(t)) << label << " out";
        EXPECT_LE(max_abs(gl_, rl_), lse_tol(t)) << label << " lse";
        EXPECT_LE(rel_l2(gq_, rq_), tol(t)) << label << " dq";
        for (int64_t i = 0; i < h.size() * row_k; ++i) {
          ASSERT_TRUE(std::isfinite(sk.get(i))) << label << " dk unwritten";
          sdk[static_cast<size_t>(h.start * row_k + i)] += sk.get(i);
        }
        for (int64_t i = 0; i < h.size() * row_v; ++i) {
          ASSERT_TRUE(std::isfinite(sv.get(i))) << label << " dv unwritten";
          sdv[static_cast<size_t>(h.start * row_v + i)] += sv.get(i);
        }
      }
      std::vector<double> rk, rv;
      for (int64_t i = 0; i < hdk.numel(); ++i) rk.push_back(hdk.get(i));
      for (int64_t i = 0; i < hdv.numel(); ++i) rv.push_back(hdv.get(i));
      const std::string label = whole.params.describe() + " " + dtype_name(t);
      // bf16: each slab's partial dK/dV is rounded to bf16 before the sum, hence 2x the tolerance.
      const double gt = t == DType::f32 ? tol(t) : 2 * tol(t);
      EXPECT_LE(rel_l2(sdk, rk), gt) << label << " summed dk";
      EXPECT_LE(rel_l2(sdv, rv), gt) << label << " summed dv";
      std::printf("  slabs x%d %-60s %-5s dk %.2g dv %.2g\n", w.slabs, whole.params.describe().c_str(), dtype_name(t),
                  rel_l2(sdk, rk), rel_l2(sdv, rv));
    }
  }
}

}  // namespace
}  // namespace nattn
