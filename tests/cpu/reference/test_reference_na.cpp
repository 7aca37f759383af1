// Hand-checkable properties of the reference backend on neighborhood attention: full windows are
// full attention, masked problems match a dense brute force over sem::attends (with additional
// keys in the same softmax), the additional-KV result equals the merge of NA and plain attention
// (spec §1.5), gradients match finite differences, strides, thread counts and 16-bit storage do
// not change the math.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cpu/reference/reference_test_util.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace nattn {
namespace {

using test::HostTensor;

struct NaCase {
  std::string name;
  std::vector<int64_t> spatial;
  NaParams params;
  int64_t batch = 1, heads = 2, heads_kv = 1, dim = 8, dim_v = 6, extra = 0;
  std::optional<double> scale;
};

// gtest prints test parameters; a name reads better than the bytes of the struct.
void PrintTo(const NaCase& c, std::ostream* os) { *os << c.name; }

NaParams make_params(std::vector<int64_t> k, std::vector<int64_t> s, std::vector<int64_t> d, std::vector<bool> c) {
  NaParams p;
  p.rank = static_cast<int>(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    p.kernel_size[i] = k[i];
    p.stride[i] = s[i];
    p.dilation[i] = d[i];
    p.is_causal[i] = c[i];
  }
  return p;
}

int64_t tokens_of(const NaCase& c) {
  int64_t t = 1;
  for (int64_t x : c.spatial) t *= x;
  return t;
}

std::vector<int64_t> shape_of(const NaCase& c, int64_t heads, int64_t dim) {
  std::vector<int64_t> shape{c.batch};
  shape.insert(shape.end(), c.spatial.begin(), c.spatial.end());
  shape.push_back(heads);
  shape.push_back(dim);
  return shape;
}

// Inputs and (poisoned) outputs of one NA problem.
struct NaRun {
  HostTensor q, k, v, extra_k, extra_v, dout;
  HostTensor out, lse, dq, dk, dv, dextra_k, dextra_v;
};

NaRun make_run(const NaCase& c, DType dtype, std::mt19937_64& rng) {
  NaRun r;
  r.q = test::random_tensor(dtype, shape_of(c, c.heads, c.dim), rng);
  r.k = test::random_tensor(dtype, shape_of(c, c.heads_kv, c.dim), rng);
  r.v = test::random_tensor(dtype, shape_of(c, c.heads_kv, c.dim_v), rng);
  r.dout = test::random_tensor(dtype, shape_of(c, c.heads, c.dim_v), rng);
  if (c.extra > 0) {
    r.extra_k = test::random_tensor(dtype, {c.batch, c.extra, c.heads_kv, c.dim}, rng);
    r.extra_v = test::random_tensor(dtype, {c.batch, c.extra, c.heads_kv, c.dim_v}, rng);
  }
  return r;
}

RunOptions reference(int threads = 0) {
  RunOptions o;
  o.backend = "reference";
  o.num_threads = threads;
  return o;
}

void forward(const NaCase& c, NaRun& r, int threads = 0) {
  const DType dtype = r.q.view.dtype;
  r.out = test::poisoned_tensor(dtype, shape_of(c, c.heads, c.dim_v));
  std::vector<int64_t> lse_shape = shape_of(c, c.heads, 1);
  lse_shape.pop_back();
  r.lse = test::poisoned_tensor(DType::f32, lse_shape);
  NaForwardArgs a;
  a.query = r.q.view;
  a.key = r.k.view;
  a.value = r.v.view;
  a.out = r.out.view;
  a.lse = r.lse.view;
  if (c.extra > 0) {
    a.additional_keys = r.extra_k.view;
    a.additional_values = r.extra_v.view;
  }
  a.params = c.params;
  a.scale = c.scale;
  na_forward(a, reference(threads));
}

void backward(const NaCase& c, NaRun& r, int threads = 0) {
  const DType dtype = r.q.view.dtype;
  r.dq = test::poisoned_tensor(dtype, r.q.view.shape);
  r.dk = test::poisoned_tensor(dtype, r.k.view.shape);
  r.dv = test::poisoned_tensor(dtype, r.v.view.shape);
  NaBackwardArgs a;
  a.query = r.q.view;
  a.key = r.k.view;
  a.value = r.v.view;
  a.out = r.out.view;
  a.lse = r.lse.view;
  a.dout = r.dout.view;
  a.dquery = r.dq.view;
  a.dkey = r.dk.view;
  a.dvalue = r.dv.view;
  if (c.extra > 0) {
    r.dextra_k = test::poisoned_tensor(dtype, r.extra_k.view.shape);
    r.dextra_v = test::poisoned_tensor(dtype, r.extra_v.view.shape);
    a.additional_keys = r.extra_k.view;
    a.additional_values = r.extra_v.view;
    a.dadditional_keys = r.dextra_k.view;
    a.dadditional_values = r.dextra_v.view;
  }
  a.params = c.params;
  a.scale = c.scale;
  na_backward(a, reference(threads));
}

// Key tokens of the dense problem: the NA tokens of a batch entry, then its additional tokens.
std::vector<float> concat_tokens(const NaCase& c, const HostTensor& main, const HostTensor& extra, int64_t width) {
  const int64_t t = tokens_of(c);
  std::vector<float> out;
  const std::vector<float> m = main.to_float();
  const std::vector<float> e = c.extra > 0 ? extra.to_float() : std::vector<float>{};
  for (int64_t b = 0; b < c.batch; ++b) {
    out.insert(out.end(), m.begin() + b * t * width, m.begin() + (b + 1) * t * width);
    out.insert(out.end(), e.begin() + b * c.extra * width, e.begin() + (b + 1) * c.extra * width);
  }
  return out;
}

// Splits a dense gradient over the concatenated key tokens back into (main, extra).
void split_tokens(const NaCase& c, const std::vector<double>& both, int64_t width, std::vector<double>& main,
                  std::vector<double>& extra) {
  const int64_t t = tokens_of(c);
  main.clear();
  extra.clear();
  for (int64_t b = 0; b < c.batch; ++b) {
    const auto base = both.begin() + b * (t + c.extra) * width;
    main.insert(main.end(), base, base + t * width);
    extra.insert(extra.end(), base + t * width, base + (t + c.extra) * width);
  }
}

double scale_of(const NaCase& c) { return c.scale ? *c.scale : 1.0 / std::sqrt(static_cast<double>(c.dim)); }

// Dense brute force of the case with the given mask over (query token, NA key token).
test::DenseResult dense(const NaCase& c, const NaRun& r, const std::function<bool(int64_t, int64_t)>& na_mask) {
  test::DenseShape s;
  s.batch = c.batch;
  s.q_tokens = tokens_of(c);
  s.kv_tokens = tokens_of(c) + c.extra;
  s.heads = c.heads;
  s.heads_kv = c.heads_kv;
  s.dim = c.dim;
  s.dim_v = c.dim_v;
  const int64_t t = tokens_of(c);
  return test::dense_attention(s, r.q.to_float(), concat_tokens(c, r.k, r.extra_k, c.heads_kv * c.dim),
                               concat_tokens(c, r.v, r.extra_v, c.heads_kv * c.dim_v), r.dout.to_float(), scale_of(c),
                               [&](int64_t, int64_t i, int64_t j) { return j >= t || na_mask(i, j); });
}

// The NA mask straight from the per-axis rule sem::attends (not the window enumeration the
// reference uses).
std::function<bool(int64_t, int64_t)> semantic_mask(const NaCase& c) {
  return [c](int64_t i, int64_t j) {
    for (int a = c.params.rank - 1; a >= 0; --a) {
      const int64_t extent = c.spatial[static_cast<size_t>(a)];
      sem::Axis axis;
      axis.extent = extent;
      axis.kernel = c.params.kernel_size[static_cast<size_t>(a)];
      axis.stride = c.params.stride[static_cast<size_t>(a)];
      axis.dilation = c.params.dilation[static_cast<size_t>(a)];
      axis.causal = c.params.is_causal[static_cast<size_t>(a)];
      if (!sem::attends(i % extent, j % extent, axis)) return false;
      i /= extent;
      j /= extent;
    }
    return true;
  };
}

// fp32 results of an fp64 computation: rounding only.
double tol(const std::vector<double>& expected) { return 2e-6 * std::fmax(1.0, test::max_magnitude(expected)); }

void expect_matches_dense(const NaCase& c, const NaRun& r, const test::DenseResult& d) {
  EXPECT_LE(test::max_error(r.out, d.out), tol(d.out));
  EXPECT_LE(test::max_error(r.lse, d.lse), tol(d.lse));
  std::vector<double> dk, dextra_k, dv, dextra_v;
  split_tokens(c, d.dk, c.heads_kv * c.dim, dk, dextra_k);
  split_tokens(c, d.dv, c.heads_kv * c.dim_v, dv, dextra_v);
  EXPECT_LE(test::max_error(r.dq, d.dq), tol(d.dq));
  EXPECT_LE(test::max_error(r.dk, dk), tol(dk));
  EXPECT_LE(test::max_error(r.dv, dv), tol(dv));
  if (c.extra > 0) {
    EXPECT_LE(test::max_error(r.dextra_k, dextra_k), tol(dextra_k));
    EXPECT_LE(test::max_error(r.dextra_v, dextra_v), tol(dextra_v));
  }
}

// ---- full windows -------------------------------------------------------------------------------

TEST(ReferenceNa, FullWindowIsFullAttention) {
  std::mt19937_64 rng(11);
  std::vector<NaCase> cases;
  cases.push_back({"1d", {9}, make_params({9}, {1}, {1}, {false}), 2, 4, 2, 8, 5, 0, std::nullopt});
  cases.push_back({"1d_stride", {8}, make_params({8}, {3}, {1}, {false}), 1, 2, 2, 4, 4, 0, 0.7});
  cases.push_back({"2d", {5, 4}, make_params({5, 4}, {2, 1}, {1, 1}, {false, false}), 1, 3, 1, 6, 7, 0, std::nullopt});
  cases.push_back({"3d_extra", {3, 4, 2}, make_params({3, 4, 2}, {1, 1, 1}, {1, 1, 1}, {false, false, false}), 2, 2, 1, 8, 8, 3, 0.25});
  for (const NaCase& c : cases) {
    SCOPED_TRACE(c.name);
    NaRun r = make_run(c, DType::f32, rng);
    forward(c, r);
    backward(c, r);
    expect_matches_dense(c, r, dense(c, r, [](int64_t, int64_t) { return true; }));
  }
}

TEST(ReferenceNa, FullCausalWindowIsCausalAttention) {
  std::mt19937_64 rng(12);
  const NaCase c{"1d_causal", {10}, make_params({10}, {1}, {1}, {true}), 2, 2, 1, 8, 4, 0, std::nullopt};
  NaRun r = make_run(c, DType::f32, rng);
  forward(c, r);
  backward(c, r);
  expect_matches_dense(c, r, dense(c, r, [](int64_t i, int64_t j) { return j <= i; }));
}

// ---- masked problems against the brute force -----------------------------------------------------

class ReferenceNaBruteForce : public ::testing::TestWithParam<NaCase> {};

TEST_P(ReferenceNaBruteForce, ForwardAndBackward) {
  const NaCase& c = GetParam();
  std::mt19937_64 rng(1234);
  NaRun r = make_run(c, DType::f32, rng);
  forward(c, r);
  backward(c, r);
  expect_matches_dense(c, r, dense(c, r, semantic_mask(c)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ReferenceNaBruteForce,
    ::testing::Values(
        NaCase{"k5_s2_d2", {13}, make_params({5}, {2}, {2}, {false}), 1, 4, 2, 8, 6, 0, std::nullopt},
        NaCase{"k4_causal_s3_extra", {11}, make_params({4}, {3}, {1}, {true}), 2, 2, 2, 4, 4, 3, 0.5},
        NaCase{"worked_L11_k3_d2", {11}, make_params({3}, {1}, {2}, {false}), 1, 1, 1, 8, 8, 0, std::nullopt},
        NaCase{"2d_mixed_causal_extra", {7, 6}, make_params({3, 4}, {2, 1}, {2, 1}, {true, false}), 1, 2, 1, 8, 5, 2, 0.3},
        NaCase{"2d_even_blocked", {8, 6}, make_params({4, 2}, {4, 2}, {1, 3}, {false, true}), 2, 3, 3, 4, 6, 0, std::nullopt},
        NaCase{"3d", {4, 5, 6}, make_params({2, 3, 3}, {1, 2, 3}, {2, 1, 2}, {false, true, true}), 2, 2, 1, 6, 3, 0, std::nullopt},
        NaCase{"3d_mqa_extra", {3, 4, 5}, make_params({3, 2, 5}, {3, 1, 2}, {1, 2, 1}, {true, false, false}), 1, 4, 1, 8, 8, 4, 0.2}),
    [](const ::testing::TestParamInfo<NaCase>& param_info) { return param_info.param.name; });

// ---- additional keys: merge consistency (spec §1.5) ---------------------------------------------

// NA over the neighborhood plus N additional keys equals NA alone merged with plain attention
// over the additional keys: L = log(exp L1 + exp L2), O = exp(L1 - L) O1 + exp(L2 - L) O2.
TEST(ReferenceNa, AdditionalKeysEqualMergeOfNaAndAttention) {
  std::mt19937_64 rng(21);
  const NaCase joint{"joint", {6, 5}, make_params({3, 3}, {1, 2}, {2, 1}, {false, true}), 2, 4, 2, 8, 6, 5, 0.4};
  NaRun r = make_run(joint, DType::f32, rng);
  forward(joint, r);

  NaCase alone = joint;
  alone.extra = 0;
  NaRun na_only = r;
  forward(alone, na_only);

  // Plain attention of every query token over the additional keys: Q viewed as [B, T, H, D].
  const int64_t t = tokens_of(joint);
  HostTensor attn_out = test::poisoned_tensor(DType::f32, {joint.batch, t, joint.heads, joint.dim_v});
  HostTensor attn_lse = test::poisoned_tensor(DType::f32, {joint.batch, t, joint.heads});
  FmhaForwardArgs f;
  f.query = TensorView(r.q.view.data, DType::f32, {joint.batch, t, joint.heads, joint.dim});
  f.key = r.extra_k.view;
  f.value = r.extra_v.view;
  f.out = attn_out.view;
  f.lse = attn_lse.view;
  f.scale = joint.scale;
  fmha_forward(f, reference());

  std::vector<double> merged_out(static_cast<size_t>(r.out.numel())), merged_lse(static_cast<size_t>(r.lse.numel()));
  for (int64_t row = 0; row < r.lse.numel(); ++row) {
    const double l1 = na_only.lse.get(row), l2 = attn_lse.get(row);
    const double l = std::log(std::exp(l1) + std::exp(l2));
    merged_lse[static_cast<size_t>(row)] = l;
    for (int64_t c = 0; c < joint.dim_v; ++c) {
      const int64_t i = row * joint.dim_v + c;
      merged_out[static_cast<size_t>(i)] = std::exp(l1 - l) * na_only.out.get(i) + std::exp(l2 - l) * attn_out.get(i);
    }
  }
  EXPECT_LE(test::max_error(r.out, merged_out), 1e-5);
  EXPECT_LE(test::max_error(r.lse, merged_lse), 1e-5);
  // The additional keys change the result (the test is not vacuous).
  EXPECT_GT(test::max_abs_diff(r.out, na_only.out), 1e-3);
}

// ---- gradients against finite differences ------------------------------------------------------

// loss = sum(dout * out), in double from the fp32 output of the reference.
double loss(const NaCase& c, NaRun& r) {
  forward(c, r);
  double sum = 0;
  for (int64_t i = 0; i < r.out.numel(); ++i) sum += double(r.dout.get(i)) * double(r.out.get(i));
  return sum;
}

TEST(ReferenceNa, GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(31);
  const NaCase c{"fd", {6, 5}, make_params({3, 2}, {2, 1}, {1, 2}, {true, false}), 1, 4, 2, 4, 3, 3, 0.6};
  NaRun r = make_run(c, DType::f32, rng);
  forward(c, r);
  backward(c, r);
  const float step = 1.0f / 256;  // exact in fp32
  struct Probe {
    const char* name;
    HostTensor* input;
    const HostTensor* grad;
  };
  NaRun work = r;
  const Probe probes[] = {{"q", &work.q, &r.dq}, {"k", &work.k, &r.dk}, {"v", &work.v, &r.dv},
                          {"additional_keys", &work.extra_k, &r.dextra_k},
                          {"additional_values", &work.extra_v, &r.dextra_v}};
  for (const Probe& p : probes) {
    std::uniform_int_distribution<int64_t> pick(0, p.input->numel() - 1);
    for (int n = 0; n < 12; ++n) {
      const int64_t i = pick(rng);
      const float x = p.input->get(i);
      p.input->set(i, x + step);
      const double up = loss(c, work);
      p.input->set(i, x - step);
      const double down = loss(c, work);
      p.input->set(i, x);
      const double numeric = (up - down) / (2.0 * step);
      EXPECT_NEAR(p.grad->get(i), numeric, 1e-3 * std::fmax(1.0, std::fabs(numeric))) << p.name << "[" << i << "]";
    }
  }
}

// ---- strides, threads, storage types ------------------------------------------------------------

// Q/K/V as slices of one packed [B, X, Y, 3, H, D] buffer, with the spatial axes of the output and
// gradients transposed in memory and padded heads: the same numbers as contiguous tensors.
TEST(ReferenceNa, StridedViewsGiveIdenticalResults) {
  std::mt19937_64 rng(41);
  const NaCase c{"strided", {5, 7}, make_params({3, 4}, {1, 2}, {1, 1}, {false, true}), 2, 2, 2, 4, 4, 0, std::nullopt};
  NaRun r = make_run(c, DType::f32, rng);
  forward(c, r);
  backward(c, r);

  const int64_t B = c.batch, X = 5, Y = 7, H = 2, D = 4;
  HostTensor packed(DType::f32, {B, X, Y, 3, H, D});
  const std::vector<int64_t> ps = packed.view.strides;
  auto slice = [&](int which) {
    return TensorView(static_cast<float*>(packed.view.data) + which * H * D, DType::f32, {B, X, Y, H, D},
                      {ps[0], ps[1], ps[2], ps[4], ps[5]});
  };
  const TensorView q = slice(0), k = slice(1), v = slice(2);
  test::copy_into(r.q, q);
  test::copy_into(r.k, k);
  test::copy_into(r.v, v);
  // Outputs: memory order [B, Y, X, H, D + 3] (spatial axes swapped, padded head dim).
  auto transposed = [&](HostTensor& storage) {
    storage = HostTensor(DType::f32, {B, Y, X, H, D + 3});
    const std::vector<int64_t> s = storage.view.strides;
    TensorView view(storage.view.data, DType::f32, {B, X, Y, H, D}, {s[0], s[2], s[1], s[3], 1});
    test::poison(view);
    return view;
  };
  HostTensor out_storage, dq_storage, dk_storage, dv_storage, dout_storage;
  const TensorView out = transposed(out_storage);
  HostTensor lse_storage(DType::f32, {B, Y, X, H});
  const std::vector<int64_t> ls = lse_storage.view.strides;
  const TensorView lse(lse_storage.view.data, DType::f32, {B, X, Y, H}, {ls[0], ls[2], ls[1], ls[3]});
  test::poison(lse);

  NaForwardArgs f;
  f.query = q;
  f.key = k;
  f.value = v;
  f.out = out;
  f.lse = lse;
  f.params = c.params;
  na_forward(f, reference());
  EXPECT_EQ(test::max_abs_diff(test::gather(out), r.out), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::gather(lse), r.lse), 0.0);

  const TensorView dout = transposed(dout_storage);
  test::copy_into(r.dout, dout);
  NaBackwardArgs b;
  b.query = q;
  b.key = k;
  b.value = v;
  b.out = out;
  b.lse = lse;
  b.dout = dout;
  b.dquery = transposed(dq_storage);
  b.dkey = transposed(dk_storage);
  b.dvalue = transposed(dv_storage);
  b.params = c.params;
  na_backward(b, reference());
  EXPECT_EQ(test::max_abs_diff(test::gather(b.dquery), r.dq), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::gather(b.dkey), r.dk), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::gather(b.dvalue), r.dv), 0.0);
}

TEST(ReferenceNa, ThreadCountDoesNotChangeResults) {
  std::mt19937_64 rng(51);
  const NaCase c{"threads", {9, 8}, make_params({5, 3}, {2, 1}, {1, 2}, {false, true}), 2, 4, 2, 8, 8, 2, std::nullopt};
  NaRun one = make_run(c, DType::f32, rng);
  NaRun many = one;
  forward(c, one, 1);
  backward(c, one, 1);
  forward(c, many, 3);
  backward(c, many, 3);
  EXPECT_EQ(test::max_abs_diff(one.out, many.out), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.lse, many.lse), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.dq, many.dq), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.dk, many.dk), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.dv, many.dv), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.dextra_k, many.dextra_k), 0.0);
  EXPECT_EQ(test::max_abs_diff(one.dextra_v, many.dextra_v), 0.0);
}

// 16-bit in and out: the reference computes exactly from the rounded inputs, so its output is the
// exact result rounded once to the storage type (within one unit in the last place).
TEST(ReferenceNa, SixteenBitOutputIsRoundedExactResult) {
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    std::mt19937_64 rng(61);
    const NaCase c{"16bit", {6, 6}, make_params({3, 4}, {1, 1}, {2, 1}, {false, false}), 1, 2, 1, 8, 8, 2, std::nullopt};
    NaRun r = make_run(c, dtype, rng);
    forward(c, r);
    const test::DenseResult d = dense(c, r, semantic_mask(c));
    const double unit = dtype == DType::f16 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
    for (int64_t i = 0; i < r.out.numel(); ++i) {
      const double e = d.out[static_cast<size_t>(i)];
      ASSERT_LE(std::fabs(r.out.get(i) - e), unit * std::fabs(e) + 1e-7) << "out[" << i << "]";
    }
    EXPECT_LE(test::max_error(r.lse, d.lse), 1e-5);  // LSE is fp32 whatever the input type
  }
}

TEST(ReferenceNa, LseIsOptional) {
  std::mt19937_64 rng(71);
  const NaCase c{"no_lse", {7}, make_params({3}, {1}, {1}, {false}), 1, 1, 1, 4, 4, 0, std::nullopt};
  NaRun r = make_run(c, DType::f32, rng);
  forward(c, r);
  HostTensor out = test::poisoned_tensor(DType::f32, r.out.view.shape);
  NaForwardArgs a;
  a.query = r.q.view;
  a.key = r.k.view;
  a.value = r.v.view;
  a.out = out.view;
  a.params = c.params;
  na_forward(a, reference());
  EXPECT_EQ(test::max_abs_diff(out, r.out), 0.0);
}

}  // namespace
}  // namespace nattn
