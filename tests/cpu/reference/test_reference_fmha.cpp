// The reference backend on standard attention: top-left causal masking with Sq != Skv against a
// dense brute force, varlen against a loop of per-sequence calls (empty sequences and rows outside
// every sequence included), and NA with a full window against FMHA.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "cpu/reference/reference_test_util.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

RunOptions reference() {
  RunOptions o;
  o.backend = "reference";
  return o;
}

struct FmhaRun {
  HostTensor q, k, v, dout, out, lse, dq, dk, dv;
};

FmhaRun make_run(int64_t batch, int64_t sq, int64_t skv, int64_t heads, int64_t heads_kv, int64_t dim, int64_t dim_v,
                 std::mt19937_64& rng) {
  FmhaRun r;
  r.q = test::random_tensor(DType::f32, {batch, sq, heads, dim}, rng);
  r.k = test::random_tensor(DType::f32, {batch, skv, heads_kv, dim}, rng);
  r.v = test::random_tensor(DType::f32, {batch, skv, heads_kv, dim_v}, rng);
  r.dout = test::random_tensor(DType::f32, {batch, sq, heads, dim_v}, rng);
  return r;
}

// Runs forward then backward (from the forward's out/lse) with the given varlen offsets.
void run(FmhaRun& r, bool causal, const std::optional<TensorView>& cu_q = std::nullopt,
         const std::optional<TensorView>& cu_kv = std::nullopt) {
  const int64_t batch = r.q.view.shape[0], sq = r.q.view.shape[1], heads = r.q.view.shape[2];
  r.out = test::poisoned_tensor(DType::f32, {batch, sq, heads, r.v.view.shape[3]});
  r.lse = test::poisoned_tensor(DType::f32, {batch, sq, heads});
  FmhaForwardArgs f;
  f.query = r.q.view;
  f.key = r.k.view;
  f.value = r.v.view;
  f.out = r.out.view;
  f.lse = r.lse.view;
  f.is_causal = causal;
  f.cu_seqlens_q = cu_q;
  f.cu_seqlens_kv = cu_kv;
  fmha_forward(f, reference());

  r.dq = test::poisoned_tensor(DType::f32, r.q.view.shape);
  r.dk = test::poisoned_tensor(DType::f32, r.k.view.shape);
  r.dv = test::poisoned_tensor(DType::f32, r.v.view.shape);
  FmhaBackwardArgs b;
  b.query = r.q.view;
  b.key = r.k.view;
  b.value = r.v.view;
  b.out = r.out.view;
  b.lse = r.lse.view;
  b.dout = r.dout.view;
  b.dquery = r.dq.view;
  b.dkey = r.dk.view;
  b.dvalue = r.dv.view;
  b.is_causal = causal;
  b.cu_seqlens_q = cu_q;
  b.cu_seqlens_kv = cu_kv;
  fmha_backward(b, reference());
}

double tol(const std::vector<double>& expected) { return 2e-6 * std::fmax(1.0, test::max_magnitude(expected)); }

struct Shape {
  int64_t sq, skv;
};
void PrintTo(const Shape& s, std::ostream* os) { *os << "Sq=" << s.sq << " Skv=" << s.skv; }

class ReferenceFmhaCausal : public ::testing::TestWithParam<std::tuple<Shape, bool>> {};

TEST_P(ReferenceFmhaCausal, MatchesDenseTopLeftMask) {
  const Shape shape = std::get<0>(GetParam());
  const bool causal = std::get<1>(GetParam());
  std::mt19937_64 rng(7);
  test::DenseShape s;
  s.batch = 2;
  s.q_tokens = shape.sq;
  s.kv_tokens = shape.skv;
  s.heads = 4;
  s.heads_kv = 2;
  s.dim = 8;
  s.dim_v = 6;
  FmhaRun r = make_run(s.batch, s.q_tokens, s.kv_tokens, s.heads, s.heads_kv, s.dim, s.dim_v, rng);
  run(r, causal);
  // Top-left: query i sees keys j <= i, so rows i >= Skv see every key.
  const test::DenseResult d =
      test::dense_attention(s, r.q.to_float(), r.k.to_float(), r.v.to_float(), r.dout.to_float(), 1.0 / std::sqrt(8.0),
                            [&](int64_t, int64_t i, int64_t j) { return !causal || j <= i; });
  EXPECT_LE(test::max_error(r.out, d.out), tol(d.out));
  EXPECT_LE(test::max_error(r.lse, d.lse), tol(d.lse));
  EXPECT_LE(test::max_error(r.dq, d.dq), tol(d.dq));
  EXPECT_LE(test::max_error(r.dk, d.dk), tol(d.dk));
  EXPECT_LE(test::max_error(r.dv, d.dv), tol(d.dv));
  if (causal && shape.sq < shape.skv) {
    // Keys past the last query are attended by nobody: zero gradients.
    for (int64_t i = shape.sq * s.heads_kv * s.dim; i < shape.skv * s.heads_kv * s.dim; ++i) EXPECT_EQ(r.dk.get(i), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceFmhaCausal,
                         ::testing::Combine(::testing::Values(Shape{5, 9}, Shape{9, 5}, Shape{7, 7}, Shape{1, 4}),
                                            ::testing::Bool()));

// A view of rows [begin, begin + count) of a packed [1, S, H, D] tensor.
TensorView rows(const HostTensor& t, int64_t begin, int64_t count) {
  std::vector<int64_t> shape = t.view.shape;
  shape[1] = count;
  return TensorView(static_cast<float*>(t.view.data) + begin * t.view.strides[1], t.view.dtype, shape, t.view.strides);
}

HostTensor int32_tensor(const std::vector<int32_t>& values) {
  HostTensor t(DType::i32, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) static_cast<int32_t*>(t.view.data)[i] = values[i];
  return t;
}

// Max |a - b| over rows [begin, begin + count) of two [1, S, H, C] tensors (b may be a view).
double rows_diff(const HostTensor& packed, int64_t begin, const TensorView& single) {
  return test::max_abs_diff(test::gather(rows(packed, begin, single.shape[1])), test::gather(single));
}

// Every element of rows [begin, end) equals `value`.
bool rows_equal(const HostTensor& t, int64_t begin, int64_t end, float value) {
  const int64_t per_row = t.view.strides[1];
  for (int64_t i = begin * per_row; i < end * per_row; ++i) {
    if (!(t.get(i) == value)) return false;
  }
  return true;
}

class ReferenceFmhaVarlen : public ::testing::TestWithParam<bool> {};

TEST_P(ReferenceFmhaVarlen, EqualsPerSequenceCalls) {
  const bool causal = GetParam();
  // Sequences (q rows, kv rows): (3, 4), (0, 5), (7, 0), (2, 6); q rows 12-13 and kv row 15 belong
  // to no sequence.
  const std::vector<int32_t> cu_q{0, 3, 3, 10, 12}, cu_kv{0, 4, 9, 9, 15};
  const int64_t total_q = 14, total_kv = 16, heads = 2, heads_kv = 1, dim = 8, dim_v = 4;
  std::mt19937_64 rng(17);
  FmhaRun packed = make_run(1, total_q, total_kv, heads, heads_kv, dim, dim_v, rng);
  const HostTensor cq = int32_tensor(cu_q), ckv = int32_tensor(cu_kv);
  run(packed, causal, cq.view, ckv.view);

  const float inf = std::numeric_limits<float>::infinity();
  for (size_t s = 0; s + 1 < cu_q.size(); ++s) {
    SCOPED_TRACE("sequence " + std::to_string(s));
    const int64_t q0 = cu_q[s], nq = cu_q[s + 1] - cu_q[s], k0 = cu_kv[s], nk = cu_kv[s + 1] - cu_kv[s];
    if (nq == 0) {  // nobody attends these keys
      EXPECT_TRUE(rows_equal(packed.dk, k0, k0 + nk, 0.0f));
      EXPECT_TRUE(rows_equal(packed.dv, k0, k0 + nk, 0.0f));
      continue;
    }
    if (nk == 0) {  // these queries attend nothing: out 0, lse -inf, no gradient
      EXPECT_TRUE(rows_equal(packed.out, q0, q0 + nq, 0.0f));
      EXPECT_TRUE(rows_equal(packed.lse, q0, q0 + nq, -inf));
      EXPECT_TRUE(rows_equal(packed.dq, q0, q0 + nq, 0.0f));
      continue;
    }
    // The same sequence as its own (non-varlen) problem, on views into the packed inputs.
    FmhaRun single;
    single.q = test::gather(rows(packed.q, q0, nq));
    single.k = test::gather(rows(packed.k, k0, nk));
    single.v = test::gather(rows(packed.v, k0, nk));
    single.dout = test::gather(rows(packed.dout, q0, nq));
    run(single, causal);
    EXPECT_EQ(rows_diff(packed.out, q0, single.out.view), 0.0);
    EXPECT_EQ(rows_diff(packed.lse, q0, single.lse.view), 0.0);
    EXPECT_EQ(rows_diff(packed.dq, q0, single.dq.view), 0.0);
    EXPECT_EQ(rows_diff(packed.dk, k0, single.dk.view), 0.0);
    EXPECT_EQ(rows_diff(packed.dv, k0, single.dv.view), 0.0);
  }
  // Rows outside every sequence: zero outputs, zero LSE, zero gradients.
  EXPECT_TRUE(rows_equal(packed.out, 12, total_q, 0.0f));
  EXPECT_TRUE(rows_equal(packed.lse, 12, total_q, 0.0f));
  EXPECT_TRUE(rows_equal(packed.dq, 12, total_q, 0.0f));
  EXPECT_TRUE(rows_equal(packed.dk, 15, total_kv, 0.0f));
  EXPECT_TRUE(rows_equal(packed.dv, 15, total_kv, 0.0f));
}

INSTANTIATE_TEST_SUITE_P(Causal, ReferenceFmhaVarlen, ::testing::Bool());

// NA whose window is the whole 1-D axis is attention over all tokens; causal NA with k = L is
// causal attention. Both visit keys in the same order, so the results are identical.
TEST(ReferenceFmha, FullWindowNaEqualsFmha) {
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    std::mt19937_64 rng(27);
    FmhaRun r = make_run(2, 11, 11, 4, 2, 8, 8, rng);
    run(r, causal);
    HostTensor out = test::poisoned_tensor(DType::f32, r.out.view.shape);
    HostTensor lse = test::poisoned_tensor(DType::f32, r.lse.view.shape);
    NaForwardArgs a;
    a.query = r.q.view;
    a.key = r.k.view;
    a.value = r.v.view;
    a.out = out.view;
    a.lse = lse.view;
    a.params = NaParams::uniform(1, 11, 1, 1, causal);
    na_forward(a, reference());
    EXPECT_EQ(test::max_abs_diff(out, r.out), 0.0);
    EXPECT_EQ(test::max_abs_diff(lse, r.lse), 0.0);
  }
}

}  // namespace
}  // namespace nattn
