// The reference backend on all 72 golden cases (computed by NATTEN), forward and backward, in
// fp32 with the golden README's tolerances and in fp16/bf16 with the tolerances `nattn verify`
// uses (tools/golden/golden.cpp). Outputs are poisoned with NaN first so every element must be
// written.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/test_util.h"
#include "golden/golden.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

HostTensor from_array(const golden::Array& a, DType dtype) {
  HostTensor t(dtype, a.shape);
  for (int64_t i = 0; i < a.numel(); ++i) t.set(i, a.data[static_cast<size_t>(i)]);
  return t;
}

void expect_close(const std::string& what, const HostTensor& got, const golden::Array& expected,
                  const golden::Tolerance& tolerance) {
  const golden::Comparison c = golden::compare(got.to_float(), expected, tolerance);
  EXPECT_TRUE(c.passed()) << what << ": max err " << c.max_error << " > allowed " << c.allowed
                          << " (max |expected| " << c.max_expected << ")";
}

RunOptions reference_options() {
  RunOptions o;
  o.backend = "reference";
  return o;
}

void run_case(const golden::Case& gc, DType dtype) {
  const golden::Tolerances tol = golden::tolerances_for(dtype);
  const HostTensor q = from_array(gc.array("q"), dtype);
  const HostTensor k = from_array(gc.array("k"), dtype);
  const HostTensor v = from_array(gc.array("v"), dtype);
  HostTensor extra_k, extra_v;
  if (gc.additional_kv > 0) {
    extra_k = from_array(gc.array("additional_keys"), dtype);
    extra_v = from_array(gc.array("additional_values"), dtype);
  }

  // Forward.
  HostTensor out = test::poisoned_tensor(dtype, gc.array("out").shape);
  HostTensor lse = test::poisoned_tensor(DType::f32, gc.array("lse").shape);
  NaForwardArgs fwd;
  fwd.query = q.view;
  fwd.key = k.view;
  fwd.value = v.view;
  fwd.out = out.view;
  fwd.lse = lse.view;
  if (gc.additional_kv > 0) {
    fwd.additional_keys = extra_k.view;
    fwd.additional_values = extra_v.view;
  }
  fwd.params = gc.na_params();
  fwd.scale = gc.scale;
  ASSERT_NO_THROW(na_forward(fwd, reference_options()));
  expect_close("out", out, gc.array("out"), tol.out);
  expect_close("lse", lse, gc.array("lse"), tol.lse);

  // Backward, from the golden out/lse so that it is checked on its own.
  ASSERT_TRUE(gc.has_backward());
  const HostTensor golden_out = from_array(gc.array("out"), dtype);
  const HostTensor golden_lse = from_array(gc.array("lse"), DType::f32);
  const HostTensor dout = from_array(gc.array("dout"), dtype);
  HostTensor dq = test::poisoned_tensor(dtype, q.view.shape);
  HostTensor dk = test::poisoned_tensor(dtype, k.view.shape);
  HostTensor dv = test::poisoned_tensor(dtype, v.view.shape);
  HostTensor dextra_k, dextra_v;
  NaBackwardArgs bwd;
  bwd.query = q.view;
  bwd.key = k.view;
  bwd.value = v.view;
  bwd.out = golden_out.view;
  bwd.lse = golden_lse.view;
  bwd.dout = dout.view;
  bwd.dquery = dq.view;
  bwd.dkey = dk.view;
  bwd.dvalue = dv.view;
  if (gc.additional_kv > 0) {
    dextra_k = test::poisoned_tensor(dtype, extra_k.view.shape);
    dextra_v = test::poisoned_tensor(dtype, extra_v.view.shape);
    bwd.additional_keys = extra_k.view;
    bwd.additional_values = extra_v.view;
    bwd.dadditional_keys = dextra_k.view;
    bwd.dadditional_values = dextra_v.view;
  }
  bwd.params = gc.na_params();
  bwd.scale = gc.scale;
  ASSERT_NO_THROW(na_backward(bwd, reference_options()));
  expect_close("dq", dq, gc.array("dq"), tol.grad);
  expect_close("dk", dk, gc.array("dk"), tol.grad);
  expect_close("dv", dv, gc.array("dv"), tol.grad);
  if (gc.additional_kv > 0) {
    expect_close("d_additional_keys", dextra_k, gc.array("d_additional_keys"), tol.grad);
    expect_close("d_additional_values", dextra_v, gc.array("d_additional_values"), tol.grad);
  }
}

class ReferenceGolden : public ::testing::TestWithParam<DType> {};

TEST_P(ReferenceGolden, AllCasesForwardAndBackward) {
  const std::vector<std::string> paths = golden::list_cases(NATTN_GOLDEN_DIR);
  ASSERT_EQ(paths.size(), 72u) << "golden directory " << NATTN_GOLDEN_DIR;
  int with_additional_kv = 0;
  for (const std::string& path : paths) {
    const golden::Case gc = golden::load_case(path);
    SCOPED_TRACE(gc.name + " " + gc.na_params().describe() + " dtype " + dtype_name(GetParam()));
    with_additional_kv += gc.additional_kv > 0;
    run_case(gc, GetParam());
  }
  EXPECT_GT(with_additional_kv, 0);  // the set exercises additional keys
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReferenceGolden, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const ::testing::TestParamInfo<DType>& param_info) { return std::string(dtype_name(param_info.param)); });

// The fp32 tolerances are the golden README's; the 16-bit ones are relative to the magnitude.
TEST(GoldenTolerances, Values) {
  const golden::Tolerances f32 = golden::tolerances_for(DType::f32);
  EXPECT_EQ(f32.out.rel, 0.0);
  EXPECT_EQ(f32.out.abs, 1e-4);
  EXPECT_EQ(f32.lse.abs, 1e-4);
  EXPECT_EQ(f32.grad.abs, 1e-3);
  EXPECT_DOUBLE_EQ(golden::tolerances_for(DType::f16).out.allowed(2.0), 2e-2 + 1e-4);
  EXPECT_THROW(golden::tolerances_for(DType::i32), ValueError);
}

}  // namespace
}  // namespace nattn
