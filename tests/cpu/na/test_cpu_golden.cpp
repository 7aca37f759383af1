// The cpu backend on all 72 golden cases (computed by NATTEN), forward and backward:
//   - fp32 against the golden values with the golden README's tolerances (out/lse 1e-4, grads 1e-3
//     absolute), on every kernel ISA this machine has (the cases are small enough that the backend
//     runs them on one thread; test_cpu_sweep covers multithreading);
//   - fp16 and bf16 against the reference backend run on the same rounded inputs (see
//     kRel16 below for the tolerances).
// Outputs are poisoned with NaN first so every element must be written.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cpu/na/cpu_test_util.h"
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

struct Inputs {
  HostTensor q, k, v, dout, extra_k, extra_v;
  Inputs(const golden::Case& gc, DType dtype)
      : q(from_array(gc.array("q"), dtype)),
        k(from_array(gc.array("k"), dtype)),
        v(from_array(gc.array("v"), dtype)),
        dout(from_array(gc.array("dout"), dtype)) {
    if (gc.additional_kv > 0) {
      extra_k = from_array(gc.array("additional_keys"), dtype);
      extra_v = from_array(gc.array("additional_values"), dtype);
    }
  }
};

struct Forward {
  HostTensor out, lse;
};
struct Backward {
  HostTensor dq, dk, dv, dextra_k, dextra_v;
};

Forward run_forward(const golden::Case& gc, const Inputs& in, DType dtype, const RunOptions& options) {
  Forward f;
  f.out = test::poisoned_tensor(dtype, gc.array("out").shape);
  f.lse = test::poisoned_tensor(DType::f32, gc.array("lse").shape);
  NaForwardArgs fwd;
  fwd.query = in.q.view;
  fwd.key = in.k.view;
  fwd.value = in.v.view;
  fwd.out = f.out.view;
  fwd.lse = f.lse.view;
  if (gc.additional_kv > 0) {
    fwd.additional_keys = in.extra_k.view;
    fwd.additional_values = in.extra_v.view;
  }
  fwd.params = gc.na_params();
  fwd.scale = gc.scale;
  na_forward(fwd, options);
  return f;
}

// Backward from the given out/lse (golden, or the reference's), so that it is checked on its own.
Backward run_backward(const golden::Case& gc, const Inputs& in, DType dtype, const RunOptions& options,
                      const Forward& given) {
  Backward b;
  b.dq = test::poisoned_tensor(dtype, in.q.view.shape);
  b.dk = test::poisoned_tensor(dtype, in.k.view.shape);
  b.dv = test::poisoned_tensor(dtype, in.v.view.shape);
  NaBackwardArgs bwd;
  bwd.query = in.q.view;
  bwd.key = in.k.view;
  bwd.value = in.v.view;
  bwd.out = given.out.view;
  bwd.lse = given.lse.view;
  bwd.dout = in.dout.view;
  bwd.dquery = b.dq.view;
  bwd.dkey = b.dk.view;
  bwd.dvalue = b.dv.view;
  if (gc.additional_kv > 0) {
    b.dextra_k = test::poisoned_tensor(dtype, in.extra_k.view.shape);
    b.dextra_v = test::poisoned_tensor(dtype, in.extra_v.view.shape);
    bwd.additional_keys = in.extra_k.view;
    bwd.additional_values = in.extra_v.view;
    bwd.dadditional_keys = b.dextra_k.view;
    bwd.dadditional_values = b.dextra_v.view;
  }
  bwd.params = gc.na_params();
  bwd.scale = gc.scale;
  na_backward(bwd, options);
  return b;
}

RunOptions cpu_options(int threads) {
  RunOptions o;
  o.backend = "cpu";
  o.num_threads = threads;
  return o;
}

void expect_golden(const std::string& what, const HostTensor& got, const golden::Array& expected,
                   const golden::Tolerance& tolerance) {
  const golden::Comparison c = golden::compare(got.to_float(), expected, tolerance);
  EXPECT_TRUE(c.passed()) << what << ": max err " << c.max_error << " > allowed " << c.allowed;
}

TEST(CpuGolden, Fp32AllCasesEveryIsa) {
  const std::vector<std::string> paths = golden::list_cases(NATTN_GOLDEN_DIR);
  ASSERT_EQ(paths.size(), 72u) << "golden directory " << NATTN_GOLDEN_DIR;
  const golden::Tolerances tol = golden::tolerances_for(DType::f32);
  for (const std::string& isa : test::cpu_isas()) {
    test::IsaScope scope(isa);
    for (const std::string& path : paths) {
      const golden::Case gc = golden::load_case(path);
      SCOPED_TRACE(gc.name + " " + gc.na_params().describe() + " isa " + isa);
      const Inputs in(gc, DType::f32);
      Forward golden_fwd;
      golden_fwd.out = from_array(gc.array("out"), DType::f32);
      golden_fwd.lse = from_array(gc.array("lse"), DType::f32);
      Forward f;
      Backward b;
      ASSERT_NO_THROW(f = run_forward(gc, in, DType::f32, cpu_options(2)));
      ASSERT_NO_THROW(b = run_backward(gc, in, DType::f32, cpu_options(2), golden_fwd));
      expect_golden("out", f.out, gc.array("out"), tol.out);
      expect_golden("lse", f.lse, gc.array("lse"), tol.lse);
      expect_golden("dq", b.dq, gc.array("dq"), tol.grad);
      expect_golden("dk", b.dk, gc.array("dk"), tol.grad);
      expect_golden("dv", b.dv, gc.array("dv"), tol.grad);
      if (gc.additional_kv > 0) {
        expect_golden("d_additional_keys", b.dextra_k, gc.array("d_additional_keys"), tol.grad);
        expect_golden("d_additional_values", b.dextra_v, gc.array("d_additional_values"), tol.grad);
      }
    }
  }
}

// 16-bit storage: inputs rounded to the type, the reference backend (fp64 math) run on the same
// rounded inputs, and the cpu result compared relative to the tensor's magnitude. The cpu backend
// accumulates in fp32, so the difference is dominated by the final rounding of the output to the
// storage type: half an ulp is 2^-11 ~ 4.9e-4 (fp16) and 2^-8 ~ 3.9e-3 (bf16) relative to the
// element, plus one ulp when the two results sit on either side of a rounding boundary. The
// allowed error is 2e-3 (fp16) and 1e-2 (bf16) times max |reference| (the LSE is fp32: 1e-4
// relative).
double relative_error(const HostTensor& got, const HostTensor& want) {
  return test::max_rel_diff(got, want, 1e-6);
}

class CpuGolden16 : public ::testing::TestWithParam<DType> {};

TEST_P(CpuGolden16, AllCasesAgainstReference) {
  const DType dtype = GetParam();
  const double rel = dtype == DType::f16 ? 2e-3 : 1e-2;
  RunOptions reference;
  reference.backend = "reference";
  for (const std::string& path : golden::list_cases(NATTN_GOLDEN_DIR)) {
    const golden::Case gc = golden::load_case(path);
    SCOPED_TRACE(gc.name + " " + gc.na_params().describe() + " " + dtype_name(dtype));
    const Inputs in(gc, dtype);
    Forward want_fwd, got_fwd;
    Backward want, got;
    ASSERT_NO_THROW(want_fwd = run_forward(gc, in, dtype, reference));
    ASSERT_NO_THROW(got_fwd = run_forward(gc, in, dtype, cpu_options(2)));
    // both backward passes start from the reference's out/lse
    ASSERT_NO_THROW(want = run_backward(gc, in, dtype, reference, want_fwd));
    ASSERT_NO_THROW(got = run_backward(gc, in, dtype, cpu_options(2), want_fwd));
    EXPECT_LE(relative_error(got_fwd.out, want_fwd.out), rel) << "out";
    EXPECT_LE(relative_error(got_fwd.lse, want_fwd.lse), 1e-4) << "lse";
    EXPECT_LE(relative_error(got.dq, want.dq), rel) << "dq";
    EXPECT_LE(relative_error(got.dk, want.dk), rel) << "dk";
    EXPECT_LE(relative_error(got.dv, want.dv), rel) << "dv";
    if (gc.additional_kv > 0) {
      EXPECT_LE(relative_error(got.dextra_k, want.dextra_k), rel) << "d_additional_keys";
      EXPECT_LE(relative_error(got.dextra_v, want.dextra_v), rel) << "d_additional_values";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CpuGolden16, ::testing::Values(DType::f16, DType::bf16),
                         [](const ::testing::TestParamInfo<DType>& param_info) {
                           return std::string(dtype_name(param_info.param));
                         });

}  // namespace
}  // namespace nattn
