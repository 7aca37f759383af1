// Host check of max_walk_positions (src/cuda/sm80/fna_fwd/walk_bound.h), the launch's choice
// between listing a CTA's whole NA walk at once and listing it by segments: against a brute force
// over every CTA of the launch, each CTA's KV box taken as the union of its queries' windows
// (query by query). No GPU needed, so CI runs it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>

#include "cuda/sm80/fna_fwd/walk_bound.h"

namespace fna = nattn::cuda::fna;
namespace sem = nattn::sem;

namespace {

// The most walk positions of one CTA, enumerating the CTAs (dilation group and Q tile per axis) as
// make_ctx numbers them.
int64_t brute_force_positions(const fna::FwdParams& p) {
  int64_t most = 0;
  const int64_t n0 = p.dilation[0] * p.q_tiles[0], n1 = p.dilation[1] * p.q_tiles[1],
                n2 = p.dilation[2] * p.q_tiles[2];
  for (int64_t c0 = 0; c0 < n0; ++c0)
    for (int64_t c1 = 0; c1 < n1; ++c1)
      for (int64_t c2 = 0; c2 < n2; ++c2) {
        const int64_t cta[3] = {c0, c1, c2};
        int64_t tiles = 1;
        for (int i = 0; i < 3 && tiles > 0; ++i) {
          const int64_t g = cta[i] / p.q_tiles[i], t = cta[i] % p.q_tiles[i];
          const sem::Axis ax{p.extent[i], p.kernel[i], p.stride[i], p.dilation[i], p.causal[i] != 0};
          const int64_t lg = sem::group_extent(p.extent[i], p.dilation[i], g);
          int64_t lo = INT64_MAX, hi = INT64_MIN;
          // The group's queries among the local ones (original coordinate g + d j in the slab).
          int64_t rank_in_group = 0;
          for (int64_t x = p.q_origin[i]; x < p.q_origin[i] + p.q_extent[i]; ++x) {
            if (x % p.dilation[i] != g) continue;
            const int64_t j = x / p.dilation[i];
            if (rank_in_group / p.q_tile[i] == t) {
              const sem::Range w = sem::window(j, lg, ax);
              lo = std::min(lo, w.start);
              hi = std::max(hi, w.end);
            }
            ++rank_in_group;
          }
          tiles = lo < hi ? tiles * sem::ceil_div(hi - lo, p.kv_tile[i]) : 0;
        }
        if (tiles > 0) most = std::max(most, tiles + sem::ceil_div(p.num_extra, fna::kBlockN));
      }
  return most;
}

}  // namespace

TEST(FwdWalkBound, MatchesEveryCtaOfRandomLaunches) {
  std::mt19937_64 rng(2026);
  auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t q_tiles_3d[][3] = {{4, 4, 8}, {2, 8, 8}, {8, 4, 4}, {1, 8, 16}, {2, 4, 8}};
  const int64_t kv_tiles_3d[][3] = {{4, 4, 4}, {2, 4, 8}, {1, 8, 8}, {4, 2, 8}};
  int checked = 0, sub_domains = 0;
  for (int iter = 0; iter < 400; ++iter) {
    fna::FwdParams p;
    const int rank = static_cast<int>(uni(1, 3));
    const int qi = static_cast<int>(uni(0, 4)), ki = static_cast<int>(uni(0, 3));
    const bool sub = uni(0, 3) == 0;
    for (int i = 3 - rank; i < 3; ++i) {
      p.dilation[i] = uni(1, 3);
      p.kernel[i] = uni(1, 9);
      p.extent[i] = p.kernel[i] * p.dilation[i] + uni(0, 30);
      p.stride[i] = uni(1, p.kernel[i]);
      p.causal[i] = static_cast<int>(uni(0, 3) == 0);
      p.q_tile[i] = rank == 3 ? q_tiles_3d[qi][i] : (rank == 2 ? (i == 1 ? 8 : 16) : 128);
      p.kv_tile[i] = rank == 3 ? kv_tiles_3d[ki][i] : (rank == 2 ? 8 : 64);
      p.q_origin[i] = sub ? uni(0, p.extent[i] - 1) : 0;
      p.q_extent[i] = sub ? uni(1, p.extent[i] - p.q_origin[i]) : p.extent[i];
      const int64_t lg_max = (p.q_extent[i] + p.dilation[i] - 1) / p.dilation[i];  // as the dispatcher
      p.q_tiles[i] = (lg_max + p.q_tile[i] - 1) / p.q_tile[i];
    }
    p.num_extra = uni(0, 2) == 0 ? uni(1, 300) : 0;
    const int64_t want = brute_force_positions(p);
    ASSERT_GT(want, 0) << "iteration " << iter << ": every launch has a CTA with queries";
    EXPECT_EQ(fna::max_walk_positions(p), want) << "iteration " << iter << " rank " << rank;
    ++checked;
    sub_domains += sub ? 1 : 0;
  }
  EXPECT_EQ(checked, 400);
  EXPECT_GT(sub_domains, 50);
}

// The two problems the issue-3 benchmark times, and a walk past the 512-entry list (a window of
// 33 x 33 x 33 over KV tiles of 4 x 4 x 4: 9 x 9 x 10 tiles per CTA).
TEST(FwdWalkBound, KnownProblems) {
  auto make = [](int64_t e0, int64_t e1, int64_t e2, int64_t k0, int64_t k1, int64_t k2) {
    fna::FwdParams p;
    const int64_t ext[3] = {e0, e1, e2}, ker[3] = {k0, k1, k2}, qt[3] = {4, 4, 8}, kt[3] = {4, 4, 4};
    for (int i = 0; i < 3; ++i) {
      p.extent[i] = p.q_extent[i] = ext[i];
      p.kernel[i] = ker[i];
      p.q_tile[i] = qt[i];
      p.kv_tile[i] = kt[i];
      p.q_tiles[i] = (ext[i] + qt[i] - 1) / qt[i];
    }
    return p;
  };
  // 16x44x80, window 8x16x24: boxes of at most 11 x 19 x 31 keys -> 3 x 5 x 8 tiles.
  EXPECT_EQ(fna::max_walk_positions(make(16, 44, 80, 8, 16, 24)), 3 * 5 * 8);
  // 30x48x80, window 18x24x24: 21 x 27 x 31 keys -> 6 x 7 x 8 tiles.
  EXPECT_EQ(fna::max_walk_positions(make(30, 48, 80, 18, 24, 24)), 6 * 7 * 8);
  EXPECT_EQ(fna::max_walk_positions(make(40, 40, 40, 33, 33, 33)), 9 * 9 * 10);
}
