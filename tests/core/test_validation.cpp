// Every validation rule of the ops raises the right exception with a message naming the argument.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>

#include "common/test_util.h"
#include "nattn/nattn.h"

namespace nattn {
namespace {

using test::HostTensor;

// Runs `fn` and checks it throws E whose message contains every fragment.
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

struct NaCase {
  std::mt19937_64 rng{7};
  HostTensor q, k, v, out, lse, dout, dq, dk, dv;
  NaForwardArgs fwd;
  NaBackwardArgs bwd;

  explicit NaCase(std::vector<int64_t> spatial, int64_t heads = 4, int64_t heads_kv = 2, int64_t dim = 8,
                  int64_t dim_v = 8, DType dtype = DType::f32) {
    std::vector<int64_t> qs = {1}, ks = {1}, vs = {1}, os = {1}, ls = {1};
    for (int64_t s : spatial) {
      qs.push_back(s), ks.push_back(s), vs.push_back(s), os.push_back(s), ls.push_back(s);
    }
    qs.insert(qs.end(), {heads, dim});
    ks.insert(ks.end(), {heads_kv, dim});
    vs.insert(vs.end(), {heads_kv, dim_v});
    os.insert(os.end(), {heads, dim_v});
    ls.push_back(heads);
    q = test::random_tensor(dtype, qs, rng);
    k = test::random_tensor(dtype, ks, rng);
    v = test::random_tensor(dtype, vs, rng);
    dout = test::random_tensor(dtype, os, rng);
    out = test::poisoned_tensor(dtype, os);
    lse = test::poisoned_tensor(DType::f32, ls);
    dq = test::poisoned_tensor(dtype, qs);
    dk = test::poisoned_tensor(dtype, ks);
    dv = test::poisoned_tensor(dtype, vs);
    fwd.query = q.view, fwd.key = k.view, fwd.value = v.view, fwd.out = out.view, fwd.lse = lse.view;
    fwd.params = NaParams::uniform(static_cast<int>(spatial.size()), 3);
    bwd.query = q.view, bwd.key = k.view, bwd.value = v.view, bwd.out = out.view, bwd.lse = lse.view;
    bwd.dout = dout.view, bwd.dquery = dq.view, bwd.dkey = dk.view, bwd.dvalue = dv.view;
    bwd.params = fwd.params;
  }
};

TEST(Validation, ValidCallsDescribeTheProblem) {
  NaCase c({6, 7});
  const NaProblem p = describe(c.fwd);
  EXPECT_EQ(p.rank(), 2);
  EXPECT_EQ(p.spatial, (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(p.heads, 4);
  EXPECT_EQ(p.heads_kv, 2);
  EXPECT_EQ(p.head_dim, 8);
  EXPECT_NO_THROW(describe(c.bwd));
}

TEST(Validation, Ranks) {
  NaCase c({6, 7});
  c.fwd.params.rank = 1;
  expect_error<ValueError>([&] { describe(c.fwd); }, {"params.rank is 1", "2-D"});
  c.fwd.params.rank = 4;
  expect_error<ValueError>([&] { describe(c.fwd); }, {"params.rank"});
  HostTensor q3(DType::f32, {1, 6, 8});
  NaCase d({6});
  d.fwd.query = q3.view;
  expect_error<ValueError>([&] { describe(d.fwd); }, {"query must be a 4-D, 5-D or 6-D", "[1, 6, 8]"});
  HostTensor q7(DType::f32, {1, 2, 2, 2, 2, 4, 8});
  d.fwd.query = q7.view;
  expect_error<ValueError>([&] { describe(d.fwd); }, {"7-D"});
}

TEST(Validation, WindowRules) {
  NaCase c({6, 7});
  c.fwd.params.kernel_size = {1, 3, 3};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"kernel_size must be >= 2", "(1, 3)"});
  c.fwd.params.kernel_size = {3, 3, 3};
  c.fwd.params.stride = {0, 1, 1};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"stride must be >= 1", "(0, 1)"});
  c.fwd.params.stride = {4, 1, 1};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"stride must not exceed kernel_size on axis 0", "stride=4"});
  c.fwd.params.stride = {1, 1, 1};
  c.fwd.params.dilation = {1, 0, 1};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"dilation must be >= 1"});
  c.fwd.params.dilation = {1, 3, 1};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"kernel_size * dilation", "axis 1", "9 > extent 7"});
  c.fwd.params.dilation = {1, 2, 1};
  EXPECT_NO_THROW(describe(c.fwd));
  c.fwd.params.kernel_size = {7, 3, 3};
  expect_error<ValueError>([&] { describe(c.fwd); }, {"axis 0", "7 > extent 6"});
}

TEST(Validation, TensorRules) {
  {
    NaCase c({6});
    HostTensor k16 = c.k.cast(DType::f16);
    c.fwd.key = k16.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"key has dtype fp16", "query has fp32"});
  }
  {
    NaCase c({6});
    c.fwd.key.device = Device{DeviceKind::cuda, 0};
    expect_error<ValueError>([&] { describe(c.fwd); }, {"key is on cuda:0", "query is on cpu"});
  }
  {
    NaCase c({6}, 3, 2);
    expect_error<ValueError>([&] { describe(c.fwd); }, {"heads=3, heads_kv=2", "heads % heads_kv == 0"});
  }
  {
    NaCase c({6});
    HostTensor k2(DType::f32, {1, 6, 2, 16});
    c.fwd.key = k2.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"query and key must have the same head_dim", "8 and 16"});
  }
  {
    NaCase c({6});
    HostTensor v2(DType::f32, {1, 6, 1, 8});
    c.fwd.value = v2.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"key and value must have the same number of heads"});
  }
  {
    NaCase c({6});
    HostTensor k2(DType::f32, {1, 5, 2, 8});
    c.fwd.key = k2.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"batch and spatial extents"});
  }
  {
    NaCase c({6}, 4, 2, 8, 16);  // Dv != D is fine
    EXPECT_NO_THROW(describe(c.fwd));
    HostTensor bad_out(DType::f32, {1, 6, 4, 8});
    c.fwd.out = bad_out.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"out must have shape [1, 6, 4, 16]", "got [1, 6, 4, 8]"});
  }
  {
    NaCase c({6});
    HostTensor lse16(DType::f16, {1, 6, 4});
    c.fwd.lse = lse16.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"lse must be fp32"});
    HostTensor lse_bad(DType::f32, {1, 6});
    c.fwd.lse = lse_bad.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"lse must have shape [1, 6, 4]"});
  }
  {
    NaCase c({6});
    c.fwd.query.strides.back() = 2;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"query must be contiguous in its last axis"});
  }
  {
    NaCase c({6});
    HostTensor qi(DType::i32, {1, 6, 4, 8});
    c.fwd.query = qi.view;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"query has dtype int32", "allowed: fp32, fp16, bf16"});
  }
  {
    NaCase c({6});
    c.fwd.query.data = nullptr;
    expect_error<ValueError>([&] { describe(c.fwd); }, {"query has no data"});
  }
}

TEST(Validation, AdditionalKeys) {
  NaCase c({6});
  HostTensor ak(DType::f32, {1, 3, 2, 8}), av(DType::f32, {1, 3, 2, 8}), bad(DType::f32, {1, 3, 4, 8});
  c.fwd.additional_keys = ak.view;
  expect_error<ValueError>([&] { describe(c.fwd); }, {"must be given together", "only additional_keys"});
  c.fwd.additional_values = av.view;
  EXPECT_EQ(describe(c.fwd).additional_kv, 3);
  c.fwd.additional_values = bad.view;
  expect_error<ValueError>([&] { describe(c.fwd); }, {"additional_values must have shape [1, 3, 2, 8]"});
  // Backward needs the gradients of the additional tensors.
  c.bwd.additional_keys = ak.view;
  c.bwd.additional_values = av.view;
  expect_error<ValueError>([&] { describe(c.bwd); }, {"dadditional_keys and dadditional_values are required"});
}

TEST(Validation, BackwardShapes) {
  NaCase c({6, 6});
  HostTensor bad(DType::f32, {1, 6, 6, 2, 4});
  c.bwd.dkey = bad.view;
  expect_error<ValueError>([&] { describe(c.bwd); }, {"dkey must have shape [1, 6, 6, 2, 8]"});
  NaCase d({6, 6});
  d.bwd.dout = bad.view;
  expect_error<ValueError>([&] { describe(d.bwd); }, {"dout must have shape"});
}

TEST(Validation, ScaleMustBeFinite) {
  NaCase c({6});
  c.fwd.scale = std::numeric_limits<double>::infinity();
  expect_error<ValueError>([&] { describe(c.fwd); }, {"scale must be finite"});
  c.fwd.scale = 0.0;  // a legitimate scale (NATTEN's quirk treats it as unset; we do not)
  EXPECT_NO_THROW(describe(c.fwd));
}

TEST(Validation, UnknownBackendAndConfig) {
  NaCase c({6, 6});
  RunOptions o;
  o.backend = "natten";
  expect_error<NotImplementedError>([&] { na_forward(c.fwd, o); }, {"backend 'natten' is not known", "cpu"});
  o.backend = "hopper-fna";
  expect_error<NotImplementedError>([&] { na_forward(c.fwd, o); }, {"hopper-fna", "CUDA tensors only"});
  o.backend = "cpu";
  o.config = TileConfig{{3, 3}, {}, KernelSchedule::none};
  expect_error<ValueError>([&] { na_forward(c.fwd, o); }, {"tile config q_tile=(3, 3)", "get_configs"});
}

TEST(Validation, ZeroSizeBatchWorks) {
  HostTensor q(DType::f32, {0, 6, 2, 8}), out(DType::f32, {0, 6, 2, 8}), lse(DType::f32, {0, 6, 2});
  NaForwardArgs a;
  a.query = a.key = a.value = q.view;
  a.out = out.view;
  a.lse = lse.view;
  a.params = NaParams::uniform(1, 3);
  for (const char* backend : {"cpu", "reference"}) {
    RunOptions o;
    o.backend = backend;
    EXPECT_NO_THROW(na_forward(a, o)) << backend;
  }
  NaBackwardArgs b;
  b.query = b.key = b.value = b.out = b.dout = q.view;
  b.lse = lse.view;
  b.dquery = b.dkey = b.dvalue = out.view;
  b.params = a.params;
  EXPECT_NO_THROW(na_backward(b));
}

TEST(Validation, Fmha) {
  std::mt19937_64 rng(3);
  HostTensor q = test::random_tensor(DType::f32, {1, 10, 2, 8}, rng);
  HostTensor k = test::random_tensor(DType::f32, {1, 12, 2, 8}, rng);
  HostTensor out(DType::f32, {1, 10, 2, 8});
  FmhaForwardArgs a;
  a.query = q.view, a.key = k.view, a.value = k.view, a.out = out.view;
  EXPECT_EQ(describe(a).seqlen_kv, 12);
  HostTensor v_short(DType::f32, {1, 11, 2, 8});
  a.value = v_short.view;
  expect_error<ValueError>([&] { describe(a); }, {"key and value must have the same sequence length", "12 and 11"});
  a.value = k.view;
  HostTensor q5(DType::f32, {1, 10, 1, 2, 8});
  FmhaForwardArgs b = a;
  b.query = q5.view;
  expect_error<ValueError>([&] { describe(b); }, {"must be 4-D"});
  // varlen
  std::vector<int32_t> cq = {0, 4, 10}, ck = {0, 5, 12}, bad = {0, 6, 5};
  TensorView cqv(cq.data(), DType::i32, {3}), ckv(ck.data(), DType::i32, {3}), badv(bad.data(), DType::i32, {3});
  a.cu_seqlens_q = cqv;
  expect_error<ValueError>([&] { describe(a); }, {"cu_seqlens_q and cu_seqlens_kv must be given together"});
  a.cu_seqlens_kv = ckv;
  EXPECT_TRUE(describe(a).is_varlen);
  a.cu_seqlens_kv = badv;
  expect_error<ValueError>([&] { describe(a); }, {"cu_seqlens_kv must be non-decreasing"});
  std::vector<int32_t> far = {0, 5, 13};
  TensorView farv(far.data(), DType::i32, {3});
  a.cu_seqlens_kv = farv;
  expect_error<ValueError>([&] { describe(a); }, {"beyond the packed length 12"});
  std::vector<int32_t> start1 = {1, 5, 12};
  TensorView s1(start1.data(), DType::i32, {3});
  a.cu_seqlens_kv = s1;
  expect_error<ValueError>([&] { describe(a); }, {"cu_seqlens_kv[0] must be 0"});
  a.cu_seqlens_kv = ckv;
  a.max_seqlen_kv = 3;
  expect_error<ValueError>([&] { describe(a); }, {"above the given maximum 3"});
  a.max_seqlen_kv = 0;
  HostTensor f(DType::f32, {3});
  a.cu_seqlens_kv = f.view;
  expect_error<ValueError>([&] { describe(a); }, {"cu_seqlens_kv must be int32"});
}

}  // namespace
}  // namespace nattn
