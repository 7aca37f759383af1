// Tests of sem::Permutation (include/nattn/semantics.h) against an independent construction of the
// permuted sequence from shared/spec/semantics.md and natten-reference.md §5: visit the groups,
// then the tiles, then the in-tile offsets, each in row-major order (flip = false) or with axis 0
// fastest (flip = true), numbering the slots as they come; a slot is padding when its coordinate
// x = (r T + t) d + g falls outside the extent on some axis.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "nattn/semantics.h"

namespace {

using nattn::sem::Permutation;
using Coord = std::vector<int64_t>;

Permutation make_perm(const Coord& extent, const Coord& tile, const Coord& dilation, bool flip) {
  Permutation p;
  p.rank = static_cast<int>(extent.size());
  for (int i = 0; i < p.rank; ++i) {
    p.extent[i] = extent[static_cast<size_t>(i)];
    p.tile[i] = tile[static_cast<size_t>(i)];
    p.dilation[i] = dilation[static_cast<size_t>(i)];
  }
  p.flip = flip;
  return p;
}

std::string describe(const Coord& extent, const Coord& tile, const Coord& dilation, bool flip) {
  auto list = [](const Coord& c) {
    std::string s = "(";
    for (size_t i = 0; i < c.size(); ++i) s += (i ? "," : "") + std::to_string(c[i]);
    return s + ")";
  };
  return "X=" + list(extent) + " T=" + list(tile) + " d=" + list(dilation) +
         (flip ? " flip" : " no-flip");
}

// All coordinates of a box of the given sizes, in row-major order (flip = false: the last axis
// varies fastest) or colexicographic order (flip = true: axis 0 varies fastest).
std::vector<Coord> ordered_coords(const Coord& sizes, bool flip) {
  std::vector<Coord> out;
  const int rank = static_cast<int>(sizes.size());
  for (int64_t s : sizes)
    if (s == 0) return out;
  Coord c(sizes.size(), 0);
  while (true) {
    out.push_back(c);
    int step = 0;
    for (; step < rank; ++step) {
      const size_t i = static_cast<size_t>(flip ? step : rank - 1 - step);
      if (++c[i] < sizes[i]) break;
      c[i] = 0;
    }
    if (step == rank) return out;
  }
}

struct Slot {
  bool padding = true;
  Coord x;
};

// The permuted sequence of every group, built by enumeration: slots[group][pos].
std::vector<std::vector<Slot>> build_slots(const Coord& extent, const Coord& tile,
                                           const Coord& dilation, bool flip) {
  const size_t rank = extent.size();
  Coord tiles(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t padded = (extent[i] + tile[i] * dilation[i] - 1) / (tile[i] * dilation[i]) *
                           tile[i] * dilation[i];  // step 1: pad to a multiple of T d
    tiles[i] = padded / (tile[i] * dilation[i]);
  }
  std::vector<std::vector<Slot>> slots;
  for (const Coord& g : ordered_coords(dilation, flip)) {
    std::vector<Slot> seq;
    for (const Coord& r : ordered_coords(tiles, flip))
      for (const Coord& t : ordered_coords(tile, flip)) {
        Slot s;
        s.padding = false;
        s.x.resize(rank);
        for (size_t i = 0; i < rank; ++i) {
          s.x[i] = (r[i] * tile[i] + t[i]) * dilation[i] + g[i];
          if (s.x[i] >= extent[i]) s.padding = true;
        }
        seq.push_back(s);
      }
    slots.push_back(seq);
  }
  return slots;
}

void check_permutation(const Coord& extent, const Coord& tile, const Coord& dilation, bool flip) {
  SCOPED_TRACE(describe(extent, tile, dilation, flip));
  const Permutation perm = make_perm(extent, tile, dilation, flip);
  const auto slots = build_slots(extent, tile, dilation, flip);
  const size_t rank = extent.size();

  int64_t groups = 1, tile_volume = 1, seq_len = 1, tokens = 1;
  for (size_t i = 0; i < rank; ++i) {
    const int64_t padded_group = (extent[i] + tile[i] * dilation[i] - 1) / (tile[i] * dilation[i]) * tile[i];
    ASSERT_EQ(perm.group_padded(static_cast<int>(i)), padded_group) << "axis " << i;
    ASSERT_EQ(perm.tiles(static_cast<int>(i)), padded_group / tile[i]) << "axis " << i;
    groups *= dilation[i];
    tile_volume *= tile[i];
    seq_len *= padded_group;
    tokens *= extent[i];
  }
  ASSERT_EQ(perm.num_groups(), groups);
  ASSERT_EQ(perm.tile_volume(), tile_volume);
  ASSERT_EQ(perm.seq_len(), seq_len);
  ASSERT_EQ(static_cast<int64_t>(slots.size()), groups);

  // inverse(): every slot decodes to the enumerated coordinate, or is reported as padding.
  std::map<Coord, std::pair<int64_t, int64_t>> slot_of;
  for (int64_t g = 0; g < groups; ++g) {
    const auto& seq = slots[static_cast<size_t>(g)];
    ASSERT_EQ(static_cast<int64_t>(seq.size()), seq_len);
    for (int64_t pos = 0; pos < seq_len; ++pos) {
      const Slot& s = seq[static_cast<size_t>(pos)];
      int64_t x[3] = {-1, -1, -1};
      const bool valid = perm.inverse(g, pos, x);
      ASSERT_EQ(valid, !s.padding) << "group " << g << " pos " << pos;
      if (!valid) continue;
      for (size_t i = 0; i < rank; ++i) ASSERT_EQ(x[i], s.x[i]) << "group " << g << " pos " << pos;
      ASSERT_TRUE(slot_of.emplace(s.x, std::make_pair(g, pos)).second) << "coordinate in two slots";
    }
  }
  // forward(): a bijection from the valid coordinates onto the non-padding slots.
  ASSERT_EQ(static_cast<int64_t>(slot_of.size()), tokens);
  for (const Coord& x : ordered_coords(extent, false)) {
    int64_t group = -1, pos = -1;
    perm.forward(x.data(), &group, &pos);
    const auto it = slot_of.find(x);
    ASSERT_NE(it, slot_of.end());
    ASSERT_EQ(group, it->second.first);
    ASSERT_EQ(pos, it->second.second);
  }
  // Each tile is a contiguous run of prod(T) slots: the slots of a run share the tile index.
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t pos = 0; pos < seq_len; ++pos) {
      const Slot& s = slots[static_cast<size_t>(g)][static_cast<size_t>(pos)];
      const Slot& first = slots[static_cast<size_t>(g)][static_cast<size_t>(pos / tile_volume * tile_volume)];
      for (size_t i = 0; i < rank; ++i)
        ASSERT_EQ(s.x[i] / dilation[i] / tile[i], first.x[i] / dilation[i] / tile[i]);
    }
}

TEST(PermutationMath, SpecExample2D) {
  // natten-reference.md §5 step 4: X = (5, 6), T = (2, 4), d = (1, 2).
  for (bool flip : {false, true}) {
    const Permutation p = make_perm({5, 6}, {2, 4}, {1, 2}, flip);
    EXPECT_EQ(p.group_padded(0), 6);
    EXPECT_EQ(p.group_padded(1), 4);
    EXPECT_EQ(p.tiles(0), 3);
    EXPECT_EQ(p.tiles(1), 1);
    EXPECT_EQ(p.num_groups(), 2);
    EXPECT_EQ(p.seq_len(), 24);
    const int64_t x[2] = {3, 5};
    int64_t group = -1, pos = -1;
    p.forward(x, &group, &pos);
    EXPECT_EQ(group, 1);                   // g = (0, 1): batch 2b + 1
    EXPECT_EQ(pos, flip ? 13 : 14);        // 1*8 + (1*4 + 2) = 14; ((0*3+1)*4 + 2)*2 + 1 = 13
    int64_t back[2] = {-1, -1};
    EXPECT_TRUE(p.inverse(group, pos, back));
    EXPECT_EQ(back[0], 3);
    EXPECT_EQ(back[1], 5);
  }
}

TEST(PermutationMath, SpecExample1D) {
  // L = 10, T = 4, d = 2: groups [0,2,4,6,8,p,p,p] and [1,3,5,7,9,p,p,p].
  const int64_t expected[2][8] = {{0, 2, 4, 6, 8, -1, -1, -1}, {1, 3, 5, 7, 9, -1, -1, -1}};
  for (bool flip : {false, true}) {
    const Permutation p = make_perm({10}, {4}, {2}, flip);
    ASSERT_EQ(p.num_groups(), 2);
    ASSERT_EQ(p.seq_len(), 8);
    for (int64_t g = 0; g < 2; ++g)
      for (int64_t pos = 0; pos < 8; ++pos) {
        int64_t x = -1;
        const bool valid = p.inverse(g, pos, &x);
        EXPECT_EQ(valid, expected[g][pos] >= 0) << g << "," << pos;
        if (valid) {
          EXPECT_EQ(x, expected[g][pos]) << g << "," << pos;
        }
      }
  }
}

TEST(PermutationMath, Exhaustive1D) {
  for (int64_t X = 1; X <= 30; ++X)
    for (int64_t T = 1; T <= 8; ++T)
      for (int64_t d = 1; d <= 4; ++d)
        for (bool flip : {false, true}) {
          check_permutation({X}, {T}, {d}, flip);
          if (HasFatalFailure()) return;
        }
}

TEST(PermutationMath, Random2DAnd3D) {
  std::mt19937_64 rng(7);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int rank = 2; rank <= 3; ++rank)
    for (int iter = 0; iter < 400; ++iter) {
      Coord X, T, d;
      for (int i = 0; i < rank; ++i) {
        X.push_back(pick(1, rank == 2 ? 17 : 9));  // odd and even extents, some below T d
        T.push_back(pick(1, 5));
        d.push_back(pick(1, 3));
      }
      check_permutation(X, T, d, iter % 2 == 1);
      if (HasFatalFailure()) return;
    }
}

TEST(PermutationMath, LiteralLinearisations3D) {
  // X = (7, 5, 6), T = (2, 3, 4), d = (2, 1, 3): per-group padded (4, 6, 4), tiles R = (2, 2, 1),
  // tile volume 24. Row-major (flip false) vs axis-0-fastest (flip true), written out by hand.
  const Permutation row = make_perm({7, 5, 6}, {2, 3, 4}, {2, 1, 3}, false);
  const Permutation col = make_perm({7, 5, 6}, {2, 3, 4}, {2, 1, 3}, true);
  ASSERT_EQ(row.seq_len(), 96);
  ASSERT_EQ(col.seq_len(), 96);
  for (const Coord& x : ordered_coords({7, 5, 6}, false)) {
    const int64_t g0 = x[0] % 2, g2 = x[2] % 3;
    const int64_t j0 = x[0] / 2, j1 = x[1], j2 = x[2] / 3;
    const int64_t r0 = j0 / 2, r1 = j1 / 3, r2 = j2 / 4;
    const int64_t t0 = j0 % 2, t1 = j1 % 3, t2 = j2 % 4;
    int64_t group = -1, pos = -1;
    row.forward(x.data(), &group, &pos);
    EXPECT_EQ(group, g0 * 3 + g2);
    EXPECT_EQ(pos, ((r0 * 2 + r1) * 1 + r2) * 24 + (t0 * 3 + t1) * 4 + t2);
    col.forward(x.data(), &group, &pos);
    EXPECT_EQ(group, g0 + 2 * g2);
    EXPECT_EQ(pos, (r0 + 2 * (r1 + 2 * r2)) * 24 + t0 + 2 * (t1 + 3 * t2));
  }
}

}  // namespace
