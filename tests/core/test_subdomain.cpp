// Sub-domain NA (issue 6), the core part: sem::halo_range exhaustively against a brute force over
// every (query, key) pair, and the validation of SubDomain arguments (messages name the argument,
// the axis and the values).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace {

using nattn::sem::Axis;
using nattn::sem::Range;

Axis make_axis(int64_t L, int64_t k, int64_t s, int64_t d, bool causal) {
  Axis a;
  a.extent = L;
  a.kernel = k;
  a.stride = s;
  a.dilation = d;
  a.causal = causal;
  return a;
}

// Brute force: the smallest and largest key any query of [lo, hi) attends, over every pair.
Range brute_halo(int64_t lo, int64_t hi, const Axis& a) {
  int64_t first = -1, last = -1;
  for (int64_t x = lo; x < hi; ++x) {
    for (int64_t y = 0; y < a.extent; ++y) {
      if (!nattn::sem::attends(x, y, a)) continue;
      if (first < 0 || y < first) first = y;
      if (y > last) last = y;
    }
  }
  if (first < 0) return Range{lo, lo};
  return Range{first, last + 1};
}

TEST(HaloRange, ExhaustiveAgainstBruteForce) {
  int64_t cases = 0;
  for (int64_t L = 1; L <= 17; ++L)
    for (int64_t d = 1; d <= 4; ++d)
      for (int64_t k = 1; k * d <= L; ++k)
        for (int64_t s = 1; s <= k; ++s)
          for (bool causal : {false, true}) {
            const Axis a = make_axis(L, k, s, d, causal);
            for (int64_t lo = 0; lo <= L; ++lo)
              for (int64_t hi = lo; hi <= L; ++hi) {
                const Range want = brute_halo(lo, hi, a);
                const Range got = nattn::sem::halo_range(lo, hi, a);
                ASSERT_EQ(got.start, want.start) << "L=" << L << " k=" << k << " s=" << s << " d=" << d
                                                 << " causal=" << causal << " queries [" << lo << ", " << hi << ")";
                ASSERT_EQ(got.end, want.end) << "L=" << L << " k=" << k << " s=" << s << " d=" << d
                                             << " causal=" << causal << " queries [" << lo << ", " << hi << ")";
                const Range same = nattn::sem::halo_range(lo, hi, L, k, s, d, causal);
                ASSERT_EQ(same.start, got.start);
                ASSERT_EQ(same.end, got.end);
                ++cases;
              }
          }
  EXPECT_GT(cases, 10000);
}

TEST(HaloRange, WholeGridAndKnownValues) {
  // Non-causal k=5 on 20 tokens: queries [5, 10) need keys [3, 12); the border queries shift inward.
  EXPECT_EQ(nattn::sem::halo_range(5, 10, 20, 5, 1, 1, false).start, 3);
  EXPECT_EQ(nattn::sem::halo_range(5, 10, 20, 5, 1, 1, false).end, 12);
  EXPECT_EQ(nattn::sem::halo_range(0, 2, 20, 5, 1, 1, false).end, 5);
  // Causal: no high halo.
  EXPECT_EQ(nattn::sem::halo_range(5, 10, 20, 5, 1, 1, true).start, 1);
  EXPECT_EQ(nattn::sem::halo_range(5, 10, 20, 5, 1, 1, true).end, 10);
  // Every query of the grid needs the whole grid.
  for (int64_t d = 1; d <= 3; ++d) {
    const Range r = nattn::sem::halo_range(0, 12, 12, 3, 2, d, false);
    EXPECT_EQ(r.start, 0);
    EXPECT_EQ(r.end, 12);
  }
}

// ---- validation -------------------------------------------------------------------------------------

using nattn::DType;
using nattn::test::HostTensor;

struct Case1d {
  HostTensor q, k, v, out, lse;
  nattn::NaForwardArgs args;
};

// 1-D, k=5: local queries global [q_lo, q_lo + nq), local keys global [kv_lo, kv_lo + nkv), grid L.
Case1d setup(int64_t L, int64_t q_lo, int64_t nq, int64_t kv_lo, int64_t nkv, bool causal = false) {
  Case1d s;
  s.q = HostTensor(DType::f32, {1, nq, 2, 4});
  s.k = HostTensor(DType::f32, {1, nkv, 1, 4});
  s.v = HostTensor(DType::f32, {1, nkv, 1, 4});
  s.out = HostTensor(DType::f32, {1, nq, 2, 4});
  s.lse = HostTensor(DType::f32, {1, nq, 2});
  s.args.query = s.q.view;
  s.args.key = s.k.view;
  s.args.value = s.v.view;
  s.args.out = s.out.view;
  s.args.lse = s.lse.view;
  s.args.params = nattn::NaParams::uniform(1, 5, 1, 1, causal);
  nattn::SubDomain sd;
  sd.global_extent = {L, 1, 1};
  sd.q_origin = {q_lo, 0, 0};
  sd.kv_origin = {kv_lo, 0, 0};
  s.args.sub_domain = sd;
  return s;
}

std::string error_of(const nattn::NaForwardArgs& args) {
  try {
    nattn::describe(args);
  } catch (const nattn::ValueError& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nexpected to contain: " << part;
}

TEST(SubDomainValidation, AcceptsExactAndWiderHalos) {
  EXPECT_EQ(error_of(setup(20, 5, 5, 3, 9).args), "");   // exactly [3, 12)
  EXPECT_EQ(error_of(setup(20, 5, 5, 0, 20).args), "");  // the whole grid
  EXPECT_EQ(error_of(setup(20, 5, 5, 1, 10, true).args), "");  // causal: [1, 10)
  const nattn::NaProblem p = nattn::describe(setup(20, 5, 5, 3, 9).args);
  ASSERT_TRUE(p.sub_domain.has_value());
  EXPECT_EQ(p.spatial, std::vector<int64_t>{5});
  expect_contains(p.describe(), "sub_domain(global_extent=(20,) q_origin=(5,) kv_origin=(3,))");
}

TEST(SubDomainValidation, MissingHalos) {
  std::string m = error_of(setup(20, 5, 5, 4, 8).args);
  expect_contains(m, "na_forward: sub_domain: key/value on axis 0 hold global keys [4, 12) but the local queries "
                     "[5, 10) attend global keys [3, 12): the low halo is missing 1 tokens");
  expect_contains(m, "2 tokens before the local queries; allowed: kv_origin <= 3");
  m = error_of(setup(20, 5, 5, 3, 8).args);
  expect_contains(m, "the high halo is missing 1 tokens (it must hold the keys [10, 12), 2 tokens after the local "
                     "queries; allowed: kv_origin + key extent >= 12)");
  m = error_of(setup(20, 5, 5, 5, 5, true).args);
  expect_contains(m, "the low halo is missing 4 tokens");
  // The same checks run in backward.
  Case1d s = setup(20, 5, 5, 4, 8);
  HostTensor dq(DType::f32, {1, 5, 2, 4}), dk(DType::f32, {1, 8, 1, 4}), dv(DType::f32, {1, 8, 1, 4});
  nattn::NaBackwardArgs b;
  b.query = s.q.view;
  b.key = s.k.view;
  b.value = s.v.view;
  b.out = s.out.view;
  b.lse = s.lse.view;
  b.dout = s.out.view;
  b.dquery = dq.view;
  b.dkey = dk.view;
  b.dvalue = dv.view;
  b.params = s.args.params;
  b.sub_domain = s.args.sub_domain;
  try {
    nattn::describe(b);
    FAIL() << "na_backward accepted a missing halo";
  } catch (const nattn::ValueError& e) {
    expect_contains(e.what(), "na_backward: sub_domain: key/value on axis 0");
  }
}

TEST(SubDomainValidation, RangesAndExtents) {
  expect_contains(error_of(setup(20, 18, 5, 10, 10).args),
                  "na_forward: sub_domain: the local queries must lie inside the global grid on axis 0 (got "
                  "q_origin=18 with 5 local query tokens = global [18, 23), global_extent=20");
  expect_contains(error_of(setup(20, -1, 5, 0, 10).args), "the local queries must lie inside the global grid");
  expect_contains(error_of(setup(20, 5, 5, 12, 10).args),
                  "sub_domain: the local keys/values must lie inside the global grid on axis 0 (got kv_origin=12");
  expect_contains(error_of(setup(0, 0, 0, 0, 0).args), "sub_domain.global_extent must be >= 1 on every axis");
  // The NA parameter rules apply to the global extent (k=5 > 4), not to the local one.
  expect_contains(error_of(setup(4, 0, 2, 0, 4).args), "> extent 4");
  EXPECT_EQ(error_of(setup(20, 0, 2, 0, 5).args), "");  // 2 local queries, k=5: fine on a grid of 20
  // Key and value must agree with each other.
  Case1d s = setup(20, 5, 5, 3, 9);
  HostTensor v2(DType::f32, {1, 8, 1, 4});
  s.args.value = v2.view;
  expect_contains(error_of(s.args), "with a sub_domain, key and value must match each other in spatial extents");
}

TEST(SubDomainValidation, WithoutSubDomainMessagesUnchanged) {
  Case1d s = setup(20, 5, 5, 3, 9);
  s.args.sub_domain.reset();
  expect_contains(error_of(s.args), "key and value must match query in batch and spatial extents");
}

}  // namespace
