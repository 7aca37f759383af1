// merge_attentions through the public API (include/nattn/ops.h): the example of natten-reference.md
// §1.5, random merges of 2..8 parts against a direct log-sum-exp in long double, parts without keys
// (-inf LSE), extreme LSEs, in-place aliasing, strided views, and every validation rule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace {

using nattn::DType;
using nattn::TensorView;
using nattn::test::HostTensor;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Parts {
  std::vector<HostTensor> outputs, lses;
  std::vector<TensorView> output_views() const {
    std::vector<TensorView> v;
    for (const auto& t : outputs) v.push_back(t.view);
    return v;
  }
  std::vector<TensorView> lse_views() const {
    std::vector<TensorView> v;
    for (const auto& t : lses) v.push_back(t.view);
    return v;
  }
};

Parts random_parts(int n, DType dtype, const std::vector<int64_t>& shape, std::mt19937_64& rng,
                   float lse_lo, float lse_hi) {
  Parts p;
  for (int i = 0; i < n; ++i) {
    p.outputs.push_back(nattn::test::random_tensor(dtype, shape, rng, -2.f, 2.f));
    p.lses.push_back(nattn::test::random_tensor(DType::f32, {shape[0], shape[1], shape[2]}, rng, lse_lo, lse_hi));
  }
  return p;
}

// Direct log-sum-exp in long double (no max subtraction: exp(1000) fits in long double), computed
// from the values actually stored in the (possibly 16-bit) inputs.
void reference_merge(const Parts& p, std::vector<long double>* out, std::vector<long double>* lse) {
  const int64_t rows = p.lses[0].numel();
  const int64_t dv = p.outputs[0].numel() / rows;
  out->assign(static_cast<size_t>(rows * dv), 0.0L);
  lse->assign(static_cast<size_t>(rows), 0.0L);
  for (int64_t r = 0; r < rows; ++r) {
    long double total = 0;
    for (const auto& l : p.lses) total += std::exp(static_cast<long double>(l.get(r)));
    (*lse)[static_cast<size_t>(r)] = std::log(total);
    for (size_t i = 0; i < p.lses.size(); ++i) {
      const long double w = std::exp(static_cast<long double>(p.lses[i].get(r))) / total;
      if (w == 0) continue;
      for (int64_t c = 0; c < dv; ++c)
        (*out)[static_cast<size_t>(r * dv + c)] += w * p.outputs[i].get(r * dv + c);
    }
  }
}

// Tolerance for O: the merge runs in fp64, so the only error is the final rounding to the output
// dtype (half an ulp); allow one ulp at |O| < 2.
double out_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f16: return 2.0 * std::ldexp(1.0, -10);   // one fp16 ulp in [1, 2)
    case DType::bf16: return 2.0 * std::ldexp(1.0, -7);   // one bf16 ulp in [1, 2)
    default: return std::ldexp(1.0, -22);               // one fp32 ulp in [1, 2)
  }
}

void expect_matches_reference(const Parts& p, const HostTensor& out, const HostTensor& lse) {
  std::vector<long double> ref_out, ref_lse;
  reference_merge(p, &ref_out, &ref_lse);
  const double tol = out_tolerance(out.view.dtype);
  for (int64_t i = 0; i < out.numel(); ++i)
    ASSERT_NEAR(out.get(i), static_cast<double>(ref_out[static_cast<size_t>(i)]), tol) << "out element " << i;
  for (int64_t r = 0; r < lse.numel(); ++r) {
    const double ref = static_cast<double>(ref_lse[static_cast<size_t>(r)]);
    // The merged LSE is computed in fp64 and rounded to fp32: allow one fp32 ulp.
    ASSERT_NEAR(lse.get(r), ref, 1e-9 + std::ldexp(std::fabs(ref), -23)) << "lse row " << r;
  }
}

TEST(Merge, SpecExampleQuarterAndThreeQuarters) {
  // L1 = 0 and L2 = ln 3 give weights 1/4 and 3/4 and L = ln 4.
  HostTensor o1(DType::f32, {1, 1, 1, 4}), o2(DType::f32, {1, 1, 1, 4});
  HostTensor l1(DType::f32, {1, 1, 1}), l2(DType::f32, {1, 1, 1});
  for (int c = 0; c < 4; ++c) {
    o1.set(c, 1.0f + c);
    o2.set(c, -3.0f + 2 * c);
  }
  l1.set(0, 0.0f);
  l2.set(0, std::log(3.0f));
  HostTensor out = nattn::test::poisoned_tensor(DType::f32, {1, 1, 1, 4});
  HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {1, 1, 1});
  nattn::merge_attentions({o1.view, o2.view}, {l1.view, l2.view}, out.view, lse.view);
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(out.get(c), 0.25 * (1.0 + c) + 0.75 * (-3.0 + 2 * c), 1e-6);
  EXPECT_NEAR(lse.get(0), std::log(4.0), 1e-6);
  EXPECT_NEAR(lse.get(0), 1.3863, 1e-4);
}

TEST(Merge, RandomPartsMatchDirectLogSumExp) {
  std::mt19937_64 rng(11);
  const std::vector<int64_t> shape = {2, 5, 3, 7};
  for (DType dtype : {DType::f32, DType::f16, DType::bf16})
    for (int n = 2; n <= 8; ++n) {
      SCOPED_TRACE(std::string(nattn::dtype_name(dtype)) + " parts " + std::to_string(n));
      const Parts p = random_parts(n, dtype, shape, rng, -6.f, 6.f);
      HostTensor out = nattn::test::poisoned_tensor(dtype, shape);
      HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {2, 5, 3});
      nattn::merge_attentions(p.output_views(), p.lse_views(), out.view, lse.view);
      expect_matches_reference(p, out, lse);
      if (HasFatalFailure()) return;
    }
}

TEST(Merge, ExtremeLseIsStable) {
  // LSEs near 1000 (exp overflows fp64) and -1000 (exp underflows): the max-subtracted form must
  // still match the long-double reference.
  std::mt19937_64 rng(12);
  for (float centre : {1000.f, -1000.f, 80.f}) {
    SCOPED_TRACE("centre " + std::to_string(centre));
    const Parts p = random_parts(5, DType::f32, {1, 8, 2, 5}, rng, centre - 10.f, centre + 10.f);
    HostTensor out = nattn::test::poisoned_tensor(DType::f32, {1, 8, 2, 5});
    HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {1, 8, 2});
    nattn::merge_attentions(p.output_views(), p.lse_views(), out.view, lse.view);
    expect_matches_reference(p, out, lse);
  }
}

TEST(Merge, PartsWithoutKeys) {
  std::mt19937_64 rng(13);
  const std::vector<int64_t> shape = {1, 4, 2, 6};
  Parts p = random_parts(4, DType::f32, shape, rng, -3.f, 3.f);
  // Part 1 saw no key anywhere; part 3 saw none on row 5. Their outputs there are garbage (NaN)
  // and must not leak into the result.
  for (int64_t r = 0; r < 8; ++r) {
    p.lses[1].set(r, kNegInf);
    for (int c = 0; c < 6; ++c) p.outputs[1].set(r * 6 + c, std::nanf(""));
  }
  p.lses[3].set(5, kNegInf);
  for (int c = 0; c < 6; ++c) p.outputs[3].set(5 * 6 + c, std::nanf(""));
  // Row 2: every part empty -> O = 0, L = -inf.
  for (auto& l : p.lses) l.set(2, kNegInf);

  HostTensor out = nattn::test::poisoned_tensor(DType::f32, shape);
  HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {1, 4, 2});
  nattn::merge_attentions(p.output_views(), p.lse_views(), out.view, lse.view);

  // Reference: merge only the parts that saw keys, row by row.
  for (int64_t r = 0; r < 8; ++r) {
    long double total = 0;
    for (const auto& l : p.lses)
      if (l.get(r) != kNegInf) total += std::exp(static_cast<long double>(l.get(r)));
    if (r == 2) {
      EXPECT_EQ(lse.get(r), kNegInf);
      for (int c = 0; c < 6; ++c) EXPECT_EQ(out.get(r * 6 + c), 0.0f) << "element " << c;
      continue;
    }
    EXPECT_NEAR(lse.get(r), static_cast<double>(std::log(total)), 2e-6) << "row " << r;
    for (int c = 0; c < 6; ++c) {
      long double expected = 0;
      for (size_t i = 0; i < p.lses.size(); ++i)
        if (p.lses[i].get(r) != kNegInf)
          expected += std::exp(static_cast<long double>(p.lses[i].get(r))) / total * p.outputs[i].get(r * 6 + c);
      EXPECT_NEAR(out.get(r * 6 + c), static_cast<double>(expected), 1e-6) << "row " << r << " element " << c;
    }
  }
}

TEST(Merge, InPlaceIntoFirstPartMatchesOutOfPlace) {
  std::mt19937_64 rng(14);
  for (DType dtype : {DType::f32, DType::bf16}) {
    const std::vector<int64_t> shape = {3, 6, 4, 9};
    const Parts p = random_parts(3, dtype, shape, rng, -4.f, 4.f);
    HostTensor out = nattn::test::poisoned_tensor(dtype, shape);
    HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {3, 6, 4});
    nattn::merge_attentions(p.output_views(), p.lse_views(), out.view, lse.view);

    Parts inplace = p;  // deep copies; out/lse are views of part 0
    nattn::merge_attentions(inplace.output_views(), inplace.lse_views(), inplace.outputs[0].view,
                            inplace.lses[0].view);
    const size_t out_bytes = static_cast<size_t>(out.numel() * nattn::dtype_size(dtype));
    EXPECT_EQ(std::memcmp(inplace.outputs[0].view.data, out.view.data, out_bytes), 0);
    EXPECT_EQ(std::memcmp(inplace.lses[0].view.data, lse.view.data, static_cast<size_t>(lse.numel() * 4)), 0);
  }
}

// A [B, S, H, Dv] view with padded rows and a transposed (S, H) layout inside a larger buffer.
struct StridedTensor {
  HostTensor storage;
  TensorView view;
};

StridedTensor strided(DType dtype, int64_t B, int64_t S, int64_t H, int64_t Dv, std::mt19937_64& rng) {
  StridedTensor t;
  const int64_t row = Dv + 3;  // padded head dim
  t.storage = nattn::test::random_tensor(dtype, {B, H, S, row}, rng);
  t.view = TensorView(t.storage.view.data, dtype, {B, S, H, Dv}, {H * S * row, row, S * row, 1});
  return t;
}

TEST(Merge, StridedViewsAndThreadCounts) {
  std::mt19937_64 rng(15);
  const int64_t B = 2, S = 7, H = 3, Dv = 5;
  std::vector<StridedTensor> outs;
  Parts dense;  // the same values, contiguous, for the reference
  for (int i = 0; i < 3; ++i) {
    outs.push_back(strided(DType::f16, B, S, H, Dv, rng));
    HostTensor d(DType::f16, {B, S, H, Dv});
    const TensorView& v = outs.back().view;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t c = 0; c < Dv; ++c)
            d.set(((b * S + s) * H + h) * Dv + c,
                  nattn::detail::load_float(
                      v.data, b * v.strides[0] + s * v.strides[1] + h * v.strides[2] + c, DType::f16));
    dense.outputs.push_back(d);
    dense.lses.push_back(nattn::test::random_tensor(DType::f32, {B, S, H}, rng, -2.f, 2.f));
  }
  std::vector<TensorView> views;
  for (const auto& o : outs) views.push_back(o.view);
  // Output written through a strided view too; the padding between rows must stay untouched.
  HostTensor out_storage = nattn::test::poisoned_tensor(DType::f16, {B, H, S, Dv + 3});
  const TensorView out_view(out_storage.view.data, DType::f16, {B, S, H, Dv},
                            {H * S * (Dv + 3), Dv + 3, S * (Dv + 3), 1});
  HostTensor lse = nattn::test::poisoned_tensor(DType::f32, {B, S, H});
  nattn::RunOptions one_thread;
  one_thread.num_threads = 1;
  nattn::merge_attentions(views, dense.lse_views(), out_view, lse.view, one_thread);

  HostTensor gathered(DType::f16, {B, S, H, Dv});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = b * out_view.strides[0] + s * out_view.strides[1] + h * out_view.strides[2];
        for (int64_t c = 0; c < Dv + 3; ++c) {
          const float v = out_storage.get(base + c);
          if (c < Dv) gathered.set(((b * S + s) * H + h) * Dv + c, v);
          else EXPECT_TRUE(std::isnan(v)) << "padding element overwritten";
        }
      }
  expect_matches_reference(dense, gathered, lse);

  // The same merge on the dense copies with every thread gives bit-identical results.
  HostTensor out2 = nattn::test::poisoned_tensor(DType::f16, {B, S, H, Dv});
  HostTensor lse2 = nattn::test::poisoned_tensor(DType::f32, {B, S, H});
  nattn::merge_attentions(dense.output_views(), dense.lse_views(), out2.view, lse2.view);
  EXPECT_EQ(std::memcmp(out2.view.data, gathered.view.data, static_cast<size_t>(out2.numel() * 2)), 0);
  EXPECT_EQ(std::memcmp(lse2.view.data, lse.view.data, static_cast<size_t>(lse.numel() * 4)), 0);
}

// ---- validation --------------------------------------------------------------------------------

template <class E>
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(Merge, ValidationRules) {
  std::mt19937_64 rng(16);
  const std::vector<int64_t> shape = {2, 3, 2, 4};
  const Parts p = random_parts(3, DType::f32, shape, rng, -1.f, 1.f);
  HostTensor out(DType::f32, shape), lse(DType::f32, {2, 3, 2});
  const auto outs = p.output_views();
  const auto lses = p.lse_views();
  using nattn::ValueError;
  auto merge = [&](std::vector<TensorView> o, std::vector<TensorView> l, TensorView ov, TensorView lv) {
    return [=] { nattn::merge_attentions(o, l, ov, lv); };
  };
  // The valid call passes.
  EXPECT_NO_THROW(merge(outs, lses, out.view, lse.view)());

  expect_error<ValueError>(merge({outs[0]}, {lses[0]}, out.view, lse.view), "at least 2");
  expect_error<ValueError>(merge({}, {}, out.view, lse.view), "at least 2");
  expect_error<ValueError>(merge(outs, {lses[0], lses[1]}, out.view, lse.view), "one LSE per output");

  HostTensor rank3(DType::f32, {2, 3, 8});
  expect_error<ValueError>(merge({outs[0], rank3.view}, {lses[0], lses[1]}, out.view, lse.view), "outputs[1]");
  HostTensor other_shape(DType::f32, {2, 3, 2, 5});
  expect_error<ValueError>(merge({outs[0], other_shape.view}, {lses[0], lses[1]}, out.view, lse.view),
                           "must equal outputs[0] shape");
  HostTensor other_dtype(DType::f16, shape);
  expect_error<ValueError>(merge({outs[0], other_dtype.view}, {lses[0], lses[1]}, out.view, lse.view),
                           "must equal outputs[0] dtype");
  HostTensor ints0(DType::i32, shape), ints1(DType::i32, shape), ints_out(DType::i32, shape);
  expect_error<ValueError>(merge({ints0.view, ints1.view}, {lses[0], lses[1]}, ints_out.view, lse.view),
                           "allowed: fp32, fp16, bf16");
  HostTensor wide(DType::f32, {2, 3, 2, 8});
  const TensorView every_other(wide.view.data, DType::f32, shape, {48, 16, 8, 2});
  expect_error<ValueError>(merge({outs[0], every_other}, {lses[0], lses[1]}, out.view, lse.view), "stride");

  HostTensor bad_lse(DType::f32, {2, 3, 3});
  expect_error<ValueError>(merge(outs, {lses[0], bad_lse.view, lses[2]}, out.view, lse.view), "lses[1] shape");
  HostTensor lse_rank4(DType::f32, {2, 3, 2, 1});
  expect_error<ValueError>(merge(outs, {lses[0], lses[1], lse_rank4.view}, out.view, lse.view), "lses[2] shape");
  HostTensor half_lse(DType::f16, {2, 3, 2});
  expect_error<ValueError>(merge(outs, {half_lse.view, lses[1], lses[2]}, out.view, lse.view), "must be fp32");

  expect_error<ValueError>(merge(outs, lses, other_shape.view, lse.view), "out shape");
  expect_error<ValueError>(merge(outs, lses, other_dtype.view, lse.view), "out dtype");
  expect_error<ValueError>(merge(outs, lses, out.view, bad_lse.view), "lse shape");
  expect_error<ValueError>(merge(outs, lses, out.view, half_lse.view), "lse dtype");

  TensorView on_gpu = outs[1];
  on_gpu.device = nattn::Device{nattn::DeviceKind::cuda, 0};
  expect_error<ValueError>(merge({outs[0], on_gpu, outs[2]}, lses, out.view, lse.view), "share a device");
  std::vector<TensorView> all_gpu = outs, all_gpu_lse = lses;
  for (auto& v : all_gpu) v.device = on_gpu.device;
  for (auto& v : all_gpu_lse) v.device = on_gpu.device;
  TensorView out_gpu = out.view, lse_gpu = lse.view;
  out_gpu.device = lse_gpu.device = on_gpu.device;
  expect_error<nattn::NotImplementedError>(merge(all_gpu, all_gpu_lse, out_gpu, lse_gpu), "cuda:0");

  TensorView null_out = out.view;
  null_out.data = nullptr;
  expect_error<ValueError>(merge(outs, lses, null_out, lse.view), "null");

  // Overlaps: out exactly equal to outputs[1] is fine; shifted by one element it is not.
  EXPECT_NO_THROW(merge(outs, lses, outs[1], lse.view)());
  HostTensor big(DType::f32, {2 * 3 * 2 * 4 + 1});
  const TensorView base(big.view.data, DType::f32, shape);
  const TensorView shifted(static_cast<float*>(big.view.data) + 1, DType::f32, shape);
  expect_error<ValueError>(merge({outs[0], base}, {lses[0], lses[1]}, shifted, lse.view), "partially overlaps");
  // out on top of an LSE, lse on top of an output, out and lse overlapping.
  HostTensor shared(DType::f32, {64});
  const TensorView lse_in_shared(shared.view.data, DType::f32, {2, 3, 2});
  const TensorView out_in_shared(shared.view.data, DType::f32, shape);
  expect_error<ValueError>(merge(outs, {lses[0], lses[1], lse_in_shared}, out_in_shared, lse.view),
                           "out overlaps lses[2]");
  expect_error<ValueError>(merge({outs[0], outs[1], out_in_shared}, lses, out.view, lse_in_shared),
                           "lse overlaps outputs[2]");
  expect_error<ValueError>(merge(outs, lses, out_in_shared, lse_in_shared), "out and lse overlap");
}

}  // namespace
