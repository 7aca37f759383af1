// The halo plan of multi-GPU NA (src/dist/halo_plan.cpp), on the CPU: slabs, halos, pieces and the
// interior / boundary split on 1 to 3 split axes with stride, dilation and causality, against a
// brute force over every query's window (sem::window_of); known values; argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nattn/distributed.h"
#include "nattn/errors.h"
#include "nattn/semantics.h"

namespace {

using nattn::NaParams;
using nattn::dist::Box;
using nattn::dist::HaloPiece;
using nattn::dist::HaloPlan;
using nattn::dist::ProcessGrid;
using nattn::dist::RankPlan;

struct Case {
  std::string name;
  std::vector<int64_t> extent;
  NaParams params;
  ProcessGrid grid;
};

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

nattn::sem::Axis axis_of(const HaloPlan& plan, int i) {
  const size_t a = static_cast<size_t>(i);
  nattn::sem::Axis ax;
  ax.extent = plan.global_extent[a];
  ax.kernel = plan.params.kernel_size[a];
  ax.stride = plan.params.stride[a];
  ax.dilation = plan.params.dilation[a];
  ax.causal = plan.params.is_causal[a];
  return ax;
}

// Calls f(x) for every point of the box (3 coordinates; axes beyond the rank fixed at 0).
template <class F>
void for_each_point(const Box& b, int rank, F&& f) {
  if (b.empty(rank)) return;
  std::array<int64_t, 3> x = b.lo;
  while (true) {
    f(x);
    int i = rank - 1;
    for (; i >= 0; --i) {
      const size_t a = static_cast<size_t>(i);
      if (++x[a] < b.hi[a]) break;
      x[a] = b.lo[a];
    }
    if (i < 0) return;
  }
}

// Per axis, the keys query coordinate x attends (sem::window_of).
std::vector<std::vector<int64_t>> keys_of(const HaloPlan& plan, const std::array<int64_t, 3>& x) {
  std::vector<std::vector<int64_t>> out(3, std::vector<int64_t>{0});
  for (int i = 0; i < plan.rank; ++i) {
    const nattn::sem::Strided w = nattn::sem::window_of(x[static_cast<size_t>(i)], axis_of(plan, i));
    out[static_cast<size_t>(i)].clear();
    for (int64_t j = 0; j < w.count; ++j) out[static_cast<size_t>(i)].push_back(w.first + w.step * j);
  }
  return out;
}

int owner_of(const HaloPlan& plan, const std::array<int64_t, 3>& y) {
  for (const RankPlan& r : plan.ranks) {
    Box point;
    point.lo = y;
    point.hi = {y[0] + 1, y[1] + 1, y[2] + 1};
    if (r.slab.contains(point, plan.rank)) return r.rank;
  }
  return -1;
}

bool box_has(const Box& b, const std::array<int64_t, 3>& y, int rank) {
  for (size_t i = 0; i < static_cast<size_t>(rank); ++i)
    if (y[i] < b.lo[i] || y[i] >= b.hi[i]) return false;
  return true;
}

void check_plan(const Case& c) {
  SCOPED_TRACE(c.name);
  const HaloPlan plan = nattn::dist::make_halo_plan(c.extent, c.params, c.grid);
  const int nd = plan.rank;
  Box whole;
  for (int i = 0; i < nd; ++i) whole.hi[static_cast<size_t>(i)] = c.extent[static_cast<size_t>(i)];
  // The slabs partition the grid.
  std::map<std::array<int64_t, 3>, int> seen;
  for (const RankPlan& r : plan.ranks) for_each_point(r.slab, nd, [&](const std::array<int64_t, 3>& x) { ++seen[x]; });
  ASSERT_EQ(static_cast<int64_t>(seen.size()), whole.volume(nd));
  for (const auto& kv : seen) ASSERT_EQ(kv.second, 1);

  for (const RankPlan& r : plan.ranks) {
    SCOPED_TRACE("rank " + std::to_string(r.rank) + " slab " + r.slab.describe(nd));
    // Halo = exact hull of the attended keys; every attended key is local or in a received piece
    // from its owner.
    std::array<int64_t, 3> lo{INT64_MAX, INT64_MAX, INT64_MAX}, hi{INT64_MIN, INT64_MIN, INT64_MIN};
    int64_t checked = 0;
    for_each_point(r.slab, nd, [&](const std::array<int64_t, 3>& x) {
      const auto keys = keys_of(plan, x);
      for (size_t i = 0; i < 3; ++i) {
        lo[i] = std::min(lo[i], keys[i].front());
        hi[i] = std::max(hi[i], keys[i].back() + 1);
      }
      for (int64_t y0 : keys[0])
        for (int64_t y1 : keys[1])
          for (int64_t y2 : keys[2]) {
            const std::array<int64_t, 3> y{y0, y1, y2};
            ASSERT_TRUE(box_has(r.halo, y, nd));
            const int owner = owner_of(plan, y);
            if (owner == r.rank) continue;
            bool found = false;
            for (int p : r.recv) {
              const HaloPiece& hp = plan.pieces[static_cast<size_t>(p)];
              found = found || (hp.src == owner && box_has(hp.box, y, nd));
            }
            ASSERT_TRUE(found) << "key (" << y0 << ", " << y1 << ", " << y2 << ") of owner " << owner;
            ++checked;
          }
      // Interior queries attend only their own slab.
      if (box_has(r.interior, x, nd)) {
        for (size_t i = 0; i < static_cast<size_t>(nd); ++i) {
          ASSERT_TRUE(r.slab.lo[i] <= keys[i].front() && keys[i].back() < r.slab.hi[i]) << "interior query axis " << i;
        }
      }
    });
    for (size_t i = 0; i < static_cast<size_t>(nd); ++i) {
      EXPECT_EQ(r.halo.lo[i], lo[i]) << "axis " << i;
      EXPECT_EQ(r.halo.hi[i], hi[i]) << "axis " << i;
    }
    // Pieces: src's slab cut by the halo, disjoint; together with the own part they tile the halo.
    int64_t covered = intersect(r.slab, r.halo, nd).volume(nd);
    for (int p : r.recv) {
      const HaloPiece& hp = plan.pieces[static_cast<size_t>(p)];
      EXPECT_EQ(hp.dst, r.rank);
      EXPECT_NE(hp.src, r.rank);
      EXPECT_TRUE(hp.box == intersect(plan.ranks[static_cast<size_t>(hp.src)].slab, r.halo, nd));
      covered += hp.box.volume(nd);
    }
    EXPECT_EQ(covered, r.halo.volume(nd));
    for (int p : r.send) EXPECT_EQ(plan.pieces[static_cast<size_t>(p)].src, r.rank);
    // Interior and boundary boxes partition the slab.
    std::map<std::array<int64_t, 3>, int> cover;
    for_each_point(r.interior, nd, [&](const std::array<int64_t, 3>& x) { ++cover[x]; });
    EXPECT_TRUE(r.slab.contains(r.interior, nd));
    for (const Box& b : r.boundary) {
      EXPECT_FALSE(b.empty(nd));
      EXPECT_TRUE(r.slab.contains(b, nd));
      for_each_point(b, nd, [&](const std::array<int64_t, 3>& x) { ++cover[x]; });
    }
    EXPECT_EQ(static_cast<int64_t>(cover.size()), r.slab.volume(nd));
    for (const auto& kv : cover) EXPECT_EQ(kv.second, 1);
    // No halo needed <=> nothing received <=> the whole slab is interior.
    EXPECT_EQ(r.recv.empty(), r.slab.contains(r.halo, nd));
    if (r.recv.empty()) {
      EXPECT_TRUE(r.interior == r.slab);
    }
  }
  // Pieces ordered by (dst, src).
  for (size_t i = 1; i < plan.pieces.size(); ++i) {
    const HaloPiece &a = plan.pieces[i - 1], &b = plan.pieces[i];
    EXPECT_TRUE(a.dst < b.dst || (a.dst == b.dst && a.src < b.src));
  }
  EXPECT_FALSE(plan.describe().empty());
}

std::vector<Case> cases() {
  std::vector<Case> out;
  // 1-D: even and uneven slabs, windows wider than a slab (pieces from non-neighbours).
  for (bool causal : {false, true})
    for (int64_t s : {1, 3})
      for (int64_t d : {1, 2}) {
        const NaParams p = make_params({7}, {s}, {d}, {causal});
        const std::string tag = " s" + std::to_string(s) + " d" + std::to_string(d) + (causal ? " causal" : "");
        out.push_back({"1d even 4" + tag, {40}, p, ProcessGrid::even({40}, {4})});
        out.push_back({"1d uneven" + tag, {37}, p, ProcessGrid{{{5, 20, 3, 9}}}});
        out.push_back({"1d slabs of 2" + tag, {16}, p, ProcessGrid::even({16}, {8})});
      }
  // 2-D: one and two split axes.
  out.push_back({"2d axis0", {24, 20}, make_params({5, 7}, {1, 2}, {1, 1}, {false, false}), ProcessGrid{{{12, 12}, {}}}});
  out.push_back({"2d axis1 causal", {16, 21}, make_params({5, 7}, {1, 1}, {2, 1}, {false, true}),
                 ProcessGrid{{{}, {7, 7, 7}}}});
  out.push_back({"2d both", {20, 18}, make_params({5, 3}, {2, 1}, {1, 3}, {false, false}),
                 ProcessGrid::even({20, 18}, {2, 3})});
  out.push_back({"2d both causal", {14, 15}, make_params({4, 6}, {3, 2}, {2, 1}, {true, true}),
                 ProcessGrid{{{3, 5, 6}, {8, 7}}}});
  // 3-D: one, two and three split axes.
  out.push_back({"3d axis0", {12, 8, 10}, make_params({3, 5, 7}, {1, 1, 1}, {1, 1, 1}, {false, false, false}),
                 ProcessGrid::even({12, 8, 10}, {3, 1, 1})});
  out.push_back({"3d axes 0,2", {10, 6, 12}, make_params({3, 3, 5}, {2, 1, 3}, {2, 1, 1}, {true, false, false}),
                 ProcessGrid::even({10, 6, 12}, {2, 1, 2})});
  out.push_back({"3d all", {9, 8, 10}, make_params({3, 4, 5}, {1, 2, 1}, {1, 2, 1}, {false, false, true}),
                 ProcessGrid::even({9, 8, 10}, {2, 2, 2})});
  out.push_back({"3d all uneven", {8, 9, 7}, make_params({3, 3, 3}, {3, 1, 2}, {2, 1, 2}, {false, true, false}),
                 ProcessGrid{{{2, 6}, {4, 1, 4}, {3, 4}}}});
  return out;
}

TEST(HaloPlan, MatchesBruteForce) {
  for (const Case& c : cases()) check_plan(c);
}

TEST(HaloPlan, Exhaustive1D) {
  // Every window rule on small 1-D grids, split into 2, 3 and 5 slabs (even) and one uneven split.
  int64_t cases = 0;
  for (int64_t L = 5; L <= 18; ++L)
    for (int64_t d = 1; d <= 3; ++d)
      for (int64_t k = 2; k * d <= L; ++k)
        for (int64_t s = 1; s <= k; ++s)
          for (bool causal : {false, true}) {
            const NaParams p = make_params({k}, {s}, {d}, {causal});
            const std::string tag = "L=" + std::to_string(L) + " k=" + std::to_string(k) + " s=" + std::to_string(s) +
                                    " d=" + std::to_string(d) + (causal ? " causal" : "");
            for (int n : {2, 3, 5}) check_plan({tag + " even " + std::to_string(n), {L}, p, ProcessGrid::even({L}, {n})});
            check_plan({tag + " uneven", {L}, p, ProcessGrid{{{1, L - 3, 2}}}});
            ++cases;
            if (::testing::Test::HasFailure()) return;
          }
  EXPECT_GT(cases, 500);
}

TEST(HaloPlan, KnownValues1D) {
  // L=20, k=5, two slabs of 10: rank 0 needs keys [0, 12), rank 1 [8, 20).
  const HaloPlan plan = nattn::dist::make_halo_plan({20}, NaParams::uniform(1, 5), ProcessGrid{{{10, 10}}});
  ASSERT_EQ(plan.num_ranks, 2);
  EXPECT_EQ(plan.ranks[0].halo.lo[0], 0);
  EXPECT_EQ(plan.ranks[0].halo.hi[0], 12);
  EXPECT_EQ(plan.ranks[1].halo.lo[0], 8);
  EXPECT_EQ(plan.ranks[1].halo.hi[0], 20);
  ASSERT_EQ(plan.pieces.size(), 2u);
  EXPECT_EQ(plan.pieces[0].src, 1);  // (dst 0, src 1): keys [10, 12)
  EXPECT_EQ(plan.pieces[0].box.lo[0], 10);
  EXPECT_EQ(plan.pieces[0].box.hi[0], 12);
  EXPECT_EQ(plan.pieces[1].src, 0);  // (dst 1, src 0): keys [8, 10)
  EXPECT_EQ(plan.pieces[1].box.lo[0], 8);
  EXPECT_EQ(plan.pieces[1].box.hi[0], 10);
  // Interior: queries whose windows stay in the slab: [0, 8) and [12, 20).
  EXPECT_EQ(plan.ranks[0].interior.lo[0], 0);
  EXPECT_EQ(plan.ranks[0].interior.hi[0], 8);
  EXPECT_EQ(plan.ranks[1].interior.lo[0], 12);
  EXPECT_EQ(plan.ranks[1].interior.hi[0], 20);
  ASSERT_EQ(plan.ranks[0].boundary.size(), 1u);
  EXPECT_EQ(plan.ranks[0].boundary[0].lo[0], 8);
  // Causal: rank 0 needs nothing from rank 1.
  NaParams causal = NaParams::uniform(1, 5, 1, 1, true);
  const HaloPlan cp = nattn::dist::make_halo_plan({20}, causal, ProcessGrid{{{10, 10}}});
  ASSERT_EQ(cp.pieces.size(), 1u);
  EXPECT_EQ(cp.pieces[0].src, 0);
  EXPECT_TRUE(cp.ranks[0].recv.empty());
  EXPECT_EQ(cp.pieces[0].box.lo[0], 6);
}

TEST(HaloPlan, GridCoordinatesAreRowMajor) {
  const HaloPlan plan = nattn::dist::make_halo_plan({8, 9, 10}, NaParams::uniform(3, 3),
                                                    ProcessGrid::even({8, 9, 10}, {2, 3, 2}));
  ASSERT_EQ(plan.num_ranks, 12);
  EXPECT_EQ(plan.dims, (std::array<int, 3>{2, 3, 2}));
  const RankPlan& r = plan.ranks[7];  // (1, 0, 1)
  EXPECT_EQ(r.coord, (std::array<int, 3>{1, 0, 1}));
  EXPECT_EQ(r.slab.lo, (std::array<int64_t, 3>{4, 0, 5}));
  EXPECT_EQ(r.slab.hi, (std::array<int64_t, 3>{8, 3, 10}));
  // A corner rank of a 2x3x2 grid receives from its face, edge and corner neighbours.
  EXPECT_EQ(r.recv.size(), 7u);
}

TEST(HaloPlan, EvenSplitsAndShapes) {
  const ProcessGrid g = ProcessGrid::even({10, 7}, {3, 1});
  ASSERT_EQ(g.slabs.size(), 2u);
  EXPECT_EQ(g.slabs[0], (std::vector<int64_t>{4, 3, 3}));
  EXPECT_EQ(g.slabs[1], (std::vector<int64_t>{7}));
  EXPECT_EQ(g.describe(), "slabs=([4, 3, 3], -)");
  const HaloPlan plan = nattn::dist::make_halo_plan({10, 7}, NaParams::uniform(2, 3), g);
  int64_t dummy = 0;
  const nattn::TensorView local(&dummy, nattn::DType::bf16, {2, 3, 7, 4, 32});  // rank 1: slab [4, 7) x [0, 7)
  EXPECT_EQ(nattn::dist::halo_shape(plan, 1, local), (std::vector<int64_t>{2, 5, 7, 4, 32}));
  EXPECT_THROW(nattn::dist::halo_shape(plan, 0, local), nattn::ValueError);  // rank 0's slab is 4 tall
  EXPECT_THROW(nattn::dist::halo_shape(plan, 3, local), nattn::ValueError);
}

std::string error_of(const std::vector<int64_t>& extent, const NaParams& p, const ProcessGrid& g) {
  try {
    nattn::dist::make_halo_plan(extent, p, g);
  } catch (const nattn::ValueError& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nexpected to contain: " << part;
}

TEST(HaloPlan, Errors) {
  const NaParams p1 = NaParams::uniform(1, 5);
  expect_contains(error_of({20}, p1, ProcessGrid{{{10, 9}}}),
                  "make_halo_plan: grid.slabs[0]=[10, 9] sums to 19 but global_extent[0]=20");
  expect_contains(error_of({20}, p1, ProcessGrid{{{20, 0}}}), "grid.slabs[0]=[20, 0] is not valid (allowed: slab sizes >= 1)");
  expect_contains(error_of({20}, p1, ProcessGrid{{{10, 10}, {1}}}),
                  "grid.slabs has 2 entries but the problem has 1 spatial axes");
  expect_contains(error_of({20, 4}, p1, ProcessGrid{}), "global_extent=[20, 4] must have params.rank=1 entries");
  expect_contains(error_of({4}, p1, ProcessGrid{}), "make_halo_plan");  // k=5 > extent 4
  expect_contains(error_of({0}, p1, ProcessGrid{}), "must be >= 1 on every axis");
  EXPECT_THROW(ProcessGrid::even({10}, {11}), nattn::ValueError);
  EXPECT_THROW(ProcessGrid::even({10}, {2, 2}), nattn::ValueError);
  EXPECT_EQ(error_of({20}, p1, ProcessGrid{}), "");  // unsplit: one rank
}

TEST(HaloPlan, ShardedOpsWithoutNcclSayWhy) {
  if (nattn::dist::nccl_enabled()) GTEST_SKIP() << "built with NCCL: test_nccl_sharded covers the ops";
  const HaloPlan plan = nattn::dist::make_halo_plan({20}, NaParams::uniform(1, 5), ProcessGrid{{{10, 10}}});
  try {
    nattn::dist::na_forward_sharded(nattn::NaForwardArgs{}, plan, 0, nullptr, nullptr);
    FAIL() << "expected RuntimeError";
  } catch (const nattn::RuntimeError& e) {
    expect_contains(e.what(), "built without NCCL");
  }
}

}  // namespace
