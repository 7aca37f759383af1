// fp64 tensors: the reference backend keeps their precision end to end (used by
// torch.autograd.gradcheck through the Python package); every other backend rejects them with a
// reason, automatic selection never picks the slow oracle, and the LSE is fp64 next to fp64 inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

template <typename E>
void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception containing '" << *fragments.begin() << "'";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

HostTensor random_f64(std::vector<int64_t> shape, uint32_t seed) {
  HostTensor t(DType::f64, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  auto* p = static_cast<double*>(t.view.data);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

HostTensor poisoned(DType dtype, std::vector<int64_t> shape) {
  HostTensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std::nanf(""));
  return t;
}

const double* f64(const HostTensor& t) { return static_cast<const double*>(t.view.data); }

RunOptions on(const std::string& backend) {
  RunOptions o;
  o.backend = backend;
  return o;
}

NaParams params_2d() {
  NaParams p;
  p.rank = 2;
  p.kernel_size = {3, 5};
  p.stride = {1, 2};
  p.dilation = {2, 1};
  p.is_causal = {false, true};
  return p;
}

// Runs forward + backward on fp64 inputs and on the same values stored as fp32 (the fp32 copy
// rounds the inputs; the reference computes in double either way).
struct Pair {
  HostTensor out, lse, dq, dk, dv;
};

Pair run(const HostTensor& q, const HostTensor& k, const HostTensor& v, const HostTensor& dout, DType dtype) {
  const HostTensor qc = q.cast(dtype), kc = k.cast(dtype), vc = v.cast(dtype), dc = dout.cast(dtype);
  Pair r{poisoned(dtype, dout.view.shape), poisoned(dtype == DType::f64 ? DType::f64 : DType::f32, {1, 7, 10, 2}),
         poisoned(dtype, q.view.shape), poisoned(dtype, k.view.shape), poisoned(dtype, v.view.shape)};
  NaForwardArgs f;
  f.query = qc.view;
  f.key = kc.view;
  f.value = vc.view;
  f.out = r.out.view;
  f.lse = r.lse.view;
  f.params = params_2d();
  na_forward(f, on("reference"));
  NaBackwardArgs b;
  b.query = qc.view;
  b.key = kc.view;
  b.value = vc.view;
  b.out = r.out.view;
  b.lse = r.lse.view;
  b.dout = dc.view;
  b.dquery = r.dq.view;
  b.dkey = r.dk.view;
  b.dvalue = r.dv.view;
  b.params = params_2d();
  na_backward(b, on("reference"));
  return r;
}

TEST(ReferenceFp64, KeepsDoublePrecisionAndMatchesFp32) {
  const HostTensor q = random_f64({1, 7, 10, 2, 8}, 1), k = random_f64({1, 7, 10, 2, 8}, 2),
                   v = random_f64({1, 7, 10, 2, 8}, 3), dout = random_f64({1, 7, 10, 2, 8}, 4);
  // fp32-representable inputs, so the fp32 run sees exactly the same values.
  const HostTensor q32 = q.cast(DType::f32).cast(DType::f64), k32 = k.cast(DType::f32).cast(DType::f64),
                   v32 = v.cast(DType::f32).cast(DType::f64), d32 = dout.cast(DType::f32).cast(DType::f64);
  const Pair a = run(q32, k32, v32, d32, DType::f64);
  const Pair b = run(q32, k32, v32, d32, DType::f32);
  int not_float = 0;
  auto compare = [&](const HostTensor& x64, const HostTensor& x32, const char* what) {
    ASSERT_EQ(x64.view.dtype, DType::f64) << what;
    for (int64_t i = 0; i < x64.numel(); ++i) {
      const double got = f64(x64)[i];
      ASSERT_TRUE(std::isfinite(got)) << what << " [" << i << "]";
      // fp32 output = the same double result rounded to float
      ASSERT_NEAR(got, static_cast<double>(x32.get(i)), 1e-6 * (1.0 + std::fabs(got))) << what << " [" << i << "]";
      if (static_cast<double>(static_cast<float>(got)) != got) ++not_float;
    }
  };
  compare(a.out, b.out, "out");
  compare(a.lse, b.lse, "lse");
  compare(a.dq, b.dq, "dq");
  compare(a.dk, b.dk, "dk");
  compare(a.dv, b.dv, "dv");
  // The fp64 results are not float values rounded back: the precision is kept.
  EXPECT_GT(not_float, 1000);
}

TEST(ReferenceFp64, FmhaForward) {
  const HostTensor q = random_f64({2, 9, 2, 8}, 5), k = random_f64({2, 13, 1, 8}, 6), v = random_f64({2, 13, 1, 4}, 7);
  HostTensor out = poisoned(DType::f64, {2, 9, 2, 4}), lse = poisoned(DType::f64, {2, 9, 2});
  FmhaForwardArgs f;
  f.query = q.view;
  f.key = k.view;
  f.value = v.view;
  f.out = out.view;
  f.lse = lse.view;
  f.is_causal = true;
  fmha_forward(f, on("reference"));
  // Query 0 sees key 0 only (top-left causal): out = v[0], lse = scale * q0.k0.
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t c = 0; c < 4; ++c) EXPECT_DOUBLE_EQ(f64(out)[((b * 9) * 2 + h) * 4 + c], f64(v)[(b * 13) * 4 + c]);
      double dot = 0;
      for (int64_t c = 0; c < 8; ++c) dot += f64(q)[((b * 9) * 2 + h) * 8 + c] * f64(k)[(b * 13) * 8 + c];
      EXPECT_NEAR(f64(lse)[(b * 9) * 2 + h], dot / std::sqrt(8.0), 1e-12);
    }
  }
}

TEST(ReferenceFp64, OnlyTheNamedReferenceRunsIt) {
  const HostTensor q = random_f64({1, 7, 10, 2, 8}, 8);
  HostTensor out = poisoned(DType::f64, {1, 7, 10, 2, 8}), lse = poisoned(DType::f64, {1, 7, 10, 2});
  NaForwardArgs f;
  f.query = f.key = f.value = q.view;
  f.out = out.view;
  f.lse = lse.view;
  f.params = params_2d();
  const NaProblem p = describe(f);
  EXPECT_EQ(p.dtype, DType::f64);
  EXPECT_NE(reject_reason("cpu", p, Pass::forward).find("only the 'reference' backend runs fp64"), std::string::npos);
  EXPECT_EQ(reject_reason("reference", p, Pass::forward), "");
  EXPECT_EQ(reject_reason("reference", p, Pass::backward), "");
  // Never chosen automatically (NumPy's default dtype must not land on the slow oracle silently).
  const Selection s = choose_backend(p, Pass::forward);
  EXPECT_EQ(s.backend, "") << s.explain();
  EXPECT_NE(s.explain().find("reference: rejected: fp64 runs only when backend 'reference' is named"),
            std::string::npos)
      << s.explain();
  expect_error<NotImplementedError>([&] { na_forward(f, on("")); }, {"no backend can run", "cast to fp32"});
  expect_error<NotImplementedError>([&] { na_forward(f, on("cpu")); }, {"cpu", "fp64"});
  // The LSE of fp64 inputs is fp64.
  HostTensor lse32 = poisoned(DType::f32, {1, 7, 10, 2});
  f.lse = lse32.view;
  expect_error<ValueError>([&] { na_forward(f, on("reference")); }, {"lse must be fp64 for fp64 inputs"});
  // ... and fp32 next to anything else.
  const HostTensor q16 = q.cast(DType::f16);
  HostTensor out16 = poisoned(DType::f16, {1, 7, 10, 2, 8});
  f.query = f.key = f.value = q16.view;
  f.out = out16.view;
  f.lse = lse.view;
  expect_error<ValueError>([&] { na_forward(f, on("reference")); }, {"lse must be fp32 for fp16 inputs"});
}

}  // namespace
}  // namespace nattn
