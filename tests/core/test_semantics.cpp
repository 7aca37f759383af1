// Exhaustive tests of include/nattn/semantics.h against a brute force written from the text of
// shared/spec/semantics.md (rules 1-6), coded per query with explicit member lists rather than the
// closed-form index math of the header, plus a second, algebraically different formulation (the
// "centre clamp" form that natten-reference.md §2 quotes from NATTEN's Flex mask).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "nattn/semantics.h"

namespace {

using nattn::sem::Axis;
using nattn::sem::Range;
using nattn::sem::TileClass;
using Keys = std::vector<int64_t>;

std::string axis_name(const Axis& a) {
  return "L=" + std::to_string(a.extent) + " k=" + std::to_string(a.kernel) +
         " s=" + std::to_string(a.stride) + " d=" + std::to_string(a.dilation) +
         (a.causal ? " causal" : "");
}

Axis make_axis(int64_t L, int64_t k, int64_t s, int64_t d, bool causal) {
  Axis a;
  a.extent = L;
  a.kernel = k;
  a.stride = s;
  a.dilation = d;
  a.causal = causal;
  return a;
}

// ---- brute force, literally from the spec ------------------------------------------------------

// Keys (original coordinates, sorted) that query x sees along one axis.
Keys brute_keys(int64_t x, const Axis& a) {
  // Rule 1: the members of x's dilation group, listed explicitly; x's in-group index is its
  // position in that list.
  Keys members;
  for (int64_t y = 0; y < a.extent; ++y)
    if (y % a.dilation == x % a.dilation) members.push_back(y);
  const int64_t lg = static_cast<int64_t>(members.size());
  const int64_t j = std::find(members.begin(), members.end(), x) - members.begin();
  // The stride group of j: in-group indices sharing j div s.
  std::vector<int64_t> stride_group;
  for (int64_t i = 0; i < lg; ++i)
    if (i / a.stride == j / a.stride) stride_group.push_back(i);
  const int64_t left = a.kernel / 2;  // rule 2
  int64_t start = 0, end = 0;
  if (!a.causal) {
    // Rule 3: the leader is the centre member (index s div 2 of a full group), or the last token
    // when a trailing partial group has no such member; the k-window around it is shifted inward.
    const int64_t centre = a.stride / 2;
    const int64_t lead = centre < static_cast<int64_t>(stride_group.size())
                             ? stride_group[static_cast<size_t>(centre)]
                             : lg - 1;
    start = lead - left;
    if (start < 0) start = 0;
    if (start + a.kernel > lg) start = lg - a.kernel;
    end = start + a.kernel;
  } else {
    // Rule 4: the start comes from the last member of the stride group; the window ends at the
    // query itself.
    const int64_t leadc = stride_group.back();
    start = std::max<int64_t>(leadc - a.kernel + 1, 0);
    end = j + 1;
  }
  Keys keys;
  for (int64_t p = start; p < end; ++p) keys.push_back(members[static_cast<size_t>(p)]);
  return keys;
}

// Second formulation (Flex's mask, natten-reference.md §2): centre = clamp(lead, left, Lg-1-right),
// key in [centre-left, centre+right]; causal: key <= q and leadc - key < k.
bool flex_attends(int64_t x, int64_t y, const Axis& a) {
  const int64_t d = a.dilation;
  if (x % d != y % d) return false;
  const int64_t g = x % d;
  const int64_t lg = a.extent / d + 1 - (g + d - a.extent % d) / d;  // NATTEN's code form of Lg
  const int64_t j = x / d, p = y / d;
  const int64_t left = a.kernel / 2, right = a.kernel - 1 - left;
  if (a.causal) {
    const int64_t leadc = std::min(a.stride * (j / a.stride) + a.stride - 1, lg - 1);
    return p <= j && leadc - p < a.kernel;
  }
  const int64_t lead = std::min(a.stride * (j / a.stride) + a.stride / 2, lg - 1);
  const int64_t centre = std::clamp(lead, left, lg - 1 - right);
  return centre - left <= p && p <= centre + right;
}

Keys expand(const nattn::sem::Strided& s) {
  Keys out;
  for (int64_t i = 0; i < s.count; ++i) out.push_back(s.first + s.step * i);
  return out;
}

std::vector<Axis> all_valid_axes(int64_t max_extent) {
  std::vector<Axis> axes;
  for (int64_t L = 2; L <= max_extent; ++L)
    for (int64_t k = 2; k <= L; ++k)
      for (int64_t s = 1; s <= k; ++s)
        for (int64_t d = 1; k * d <= L; ++d)
          for (bool causal : {false, true}) axes.push_back(make_axis(L, k, s, d, causal));
  return axes;
}

// ---- the worked examples of spec/semantics.md, as literal sets ---------------------------------

struct Example {
  Axis axis;
  std::vector<std::pair<Keys, Keys>> rows;  // queries -> the keys each of them sees
};

Keys span(int64_t first, int64_t last) {  // {first..last}
  Keys out;
  for (int64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

std::vector<Example> worked_examples() {
  std::vector<Example> ex;
  {  // L=10, k=3: 0,1 -> {0,1,2}; x -> {x-1,x,x+1}; 8,9 -> {7,8,9}
    Example e{make_axis(10, 3, 1, 1, false), {}};
    e.rows.push_back({{0}, {0, 1, 2}});
    for (int64_t x = 1; x <= 8; ++x) e.rows.push_back({{x}, {x - 1, x, x + 1}});
    e.rows.push_back({{9}, {7, 8, 9}});
    ex.push_back(e);
  }
  {  // L=10, k=4: 0,1,2 -> {0..3}, 3 -> {1..4}, 4 -> {2..5}, ..., 8,9 -> {6..9}
    Example e{make_axis(10, 4, 1, 1, false), {}};
    e.rows.push_back({{0, 1, 2}, span(0, 3)});
    for (int64_t x = 3; x <= 7; ++x) e.rows.push_back({{x}, span(x - 2, x + 1)});
    e.rows.push_back({{8, 9}, span(6, 9)});
    ex.push_back(e);
  }
  ex.push_back({make_axis(10, 5, 1, 2, false),
                {{{0, 2, 4, 6, 8}, {0, 2, 4, 6, 8}}, {{1, 3, 5, 7, 9}, {1, 3, 5, 7, 9}}}});
  ex.push_back({make_axis(11, 3, 1, 2, false),
                {{{0}, {0, 2, 4}}, {{2}, {0, 2, 4}}, {{4}, {2, 4, 6}}, {{6}, {4, 6, 8}},
                 {{8}, {6, 8, 10}}, {{10}, {6, 8, 10}}, {{1}, {1, 3, 5}}, {{3}, {1, 3, 5}},
                 {{5}, {3, 5, 7}}, {{7}, {5, 7, 9}}, {{9}, {5, 7, 9}}}});
  ex.push_back({make_axis(12, 5, 2, 1, false),
                {{{0, 1}, span(0, 4)}, {{2, 3}, span(1, 5)}, {{4, 5}, span(3, 7)},
                 {{6, 7}, span(5, 9)}, {{8, 9}, span(7, 11)}, {{10, 11}, span(7, 11)}}});
  ex.push_back({make_axis(11, 5, 2, 1, false),
                {{{0, 1}, span(0, 4)}, {{2, 3}, span(1, 5)}, {{4, 5}, span(3, 7)},
                 {{6, 7}, span(5, 9)}, {{8, 9}, span(6, 10)}, {{10}, span(6, 10)}}});
  ex.push_back({make_axis(12, 6, 3, 1, false),
                {{{0, 1, 2}, span(0, 5)}, {{3, 4, 5}, span(1, 6)}, {{6, 7, 8}, span(4, 9)},
                 {{9, 10, 11}, span(6, 11)}}});
  ex.push_back({make_axis(12, 4, 4, 1, false),
                {{span(0, 3), span(0, 3)}, {span(4, 7), span(4, 7)}, {span(8, 11), span(8, 11)}}});
  ex.push_back({make_axis(10, 4, 4, 1, false),
                {{span(0, 3), span(0, 3)}, {span(4, 7), span(4, 7)}, {{8, 9}, span(6, 9)}}});
  {  // causal L=8, k=3: 0 -> {0}, 1 -> {0,1}, x -> {x-2..x}
    Example e{make_axis(8, 3, 1, 1, true), {{{0}, {0}}, {{1}, {0, 1}}}};
    for (int64_t x = 2; x < 8; ++x) e.rows.push_back({{x}, span(x - 2, x)});
    ex.push_back(e);
  }
  ex.push_back({make_axis(8, 4, 2, 1, true),
                {{{0}, {0}}, {{1}, {0, 1}}, {{2}, {0, 1, 2}}, {{3}, span(0, 3)}, {{4}, {2, 3, 4}},
                 {{5}, span(2, 5)}, {{6}, {4, 5, 6}}, {{7}, span(4, 7)}}});
  ex.push_back({make_axis(9, 3, 3, 1, true),
                {{{0}, {0}}, {{1}, {0, 1}}, {{2}, {0, 1, 2}}, {{3}, {3}}, {{4}, {3, 4}},
                 {{5}, {3, 4, 5}}, {{6}, {6}}, {{7}, {6, 7}}, {{8}, {6, 7, 8}}}});
  return ex;
}

TEST(Semantics, WorkedExamplesOfTheSpec) {
  for (const Example& e : worked_examples()) {
    std::set<int64_t> covered;
    for (const auto& [queries, keys] : e.rows) {
      for (int64_t x : queries) {
        SCOPED_TRACE(axis_name(e.axis) + " query " + std::to_string(x));
        covered.insert(x);
        EXPECT_EQ(expand(nattn::sem::window_of(x, e.axis)), keys);
        EXPECT_EQ(brute_keys(x, e.axis), keys);
        for (int64_t y = 0; y < e.axis.extent; ++y) {
          const bool expected = std::count(keys.begin(), keys.end(), y) > 0;
          EXPECT_EQ(nattn::sem::attends(x, y, e.axis), expected) << "key " << y;
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(covered.size()), e.axis.extent) << axis_name(e.axis);
  }
}

TEST(Semantics, WorkedExample2D) {
  // S = (5, 5), k = 3: query (0, 4) sees rows {0,1,2} x cols {2,3,4}.
  const Axis a = make_axis(5, 3, 1, 1, false);
  int seen = 0;
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t c = 0; c < 5; ++c) {
      const bool sees = nattn::sem::attends(0, r, a) && nattn::sem::attends(4, c, a);
      EXPECT_EQ(sees, r <= 2 && c >= 2) << r << "," << c;
      seen += sees;
    }
  EXPECT_EQ(seen, 9);
}

// ---- every valid 1-D axis up to L = 20 ---------------------------------------------------------

TEST(Semantics, WindowsMatchBruteForceExhaustively) {
  int64_t checked = 0;
  for (const Axis& a : all_valid_axes(20)) {
    SCOPED_TRACE(axis_name(a));
    const int64_t L = a.extent, d = a.dilation;
    std::vector<Keys> keys_of(static_cast<size_t>(L));
    for (int64_t x = 0; x < L; ++x) {
      const Keys keys = brute_keys(x, a);
      keys_of[static_cast<size_t>(x)] = keys;
      ASSERT_EQ(expand(nattn::sem::window_of(x, a)), keys) << "query " << x;
      // Window sizes: exactly k when not causal, 1..k when causal; a query always sees itself.
      if (a.causal) {
        ASSERT_GE(keys.size(), 1u);
        ASSERT_LE(static_cast<int64_t>(keys.size()), a.kernel);
      } else {
        ASSERT_EQ(static_cast<int64_t>(keys.size()), a.kernel);
      }
      ASSERT_TRUE(nattn::sem::attends(x, x, a)) << "query " << x;
      // The in-group window agrees with the original-coordinate one.
      const int64_t g = x % d;
      const int64_t lg = nattn::sem::group_extent(L, d, g);
      const Range w = nattn::sem::window(x / d, lg, a);
      ASSERT_EQ(g + d * w.start, keys.front());
      ASSERT_EQ(w.size(), static_cast<int64_t>(keys.size()));
      for (int64_t y = 0; y < L; ++y) {
        const bool expected = std::count(keys.begin(), keys.end(), y) > 0;
        ASSERT_EQ(nattn::sem::attends(x, y, a), expected) << "query " << x << " key " << y;
        ASSERT_EQ(flex_attends(x, y, a), expected) << "query " << x << " key " << y;
        ++checked;
      }
    }
    // Inverse neighbourhoods: the queries whose window holds key y.
    for (int64_t y = 0; y < L; ++y) {
      Keys queries;
      for (int64_t x = 0; x < L; ++x) {
        const Keys& k = keys_of[static_cast<size_t>(x)];
        if (std::count(k.begin(), k.end(), y)) queries.push_back(x);
      }
      ASSERT_EQ(expand(nattn::sem::inverse_of(y, a)), queries) << "key " << y;
      ASSERT_FALSE(queries.empty()) << "key " << y << " is seen by nobody";
      const int64_t g = y % d;
      const Range r = nattn::sem::inverse_window(y / d, nattn::sem::group_extent(L, d, g), a);
      ASSERT_EQ(r.start, (queries.front() - g) / d);
      ASSERT_EQ(r.size(), static_cast<int64_t>(queries.size()));  // interval: no holes
    }
    // Group extents and monotonicity of start/end within each group.
    for (int64_t g = 0; g < d; ++g) {
      const int64_t lg = nattn::sem::group_extent(L, d, g);
      int64_t members = 0;
      for (int64_t x = g; x < L; x += d) ++members;
      ASSERT_EQ(lg, members);
      for (int64_t j = 1; j < lg; ++j) {
        const Range prev = nattn::sem::window(j - 1, lg, a), cur = nattn::sem::window(j, lg, a);
        ASSERT_LE(prev.start, cur.start) << "j " << j;
        ASSERT_LE(prev.end, cur.end) << "j " << j;
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

// ---- 1-D tiles: kv_box, q_box, classify --------------------------------------------------------

// For one in-group extent lg, brute-force window masks (bit p = in-group key p) per query.
std::vector<uint32_t> window_masks(int64_t lg, const Axis& a) {
  std::vector<uint32_t> masks(static_cast<size_t>(lg), 0);
  const Axis flat = make_axis(lg, a.kernel, a.stride, 1, a.causal);
  for (int64_t j = 0; j < lg; ++j)
    for (int64_t key : brute_keys(j, flat)) masks[static_cast<size_t>(j)] |= 1u << key;
  return masks;
}

uint32_t range_mask(int64_t start, int64_t end) {
  uint32_t m = 0;
  for (int64_t i = start; i < end; ++i) m |= 1u << i;
  return m;
}

// The interval a non-empty mask spans; fails the test when the mask has holes.
Range mask_interval(uint32_t m) {
  EXPECT_NE(m, 0u);
  const int64_t lo = __builtin_ctz(m), hi = 32 - __builtin_clz(m);
  EXPECT_EQ(m, range_mask(lo, hi)) << "union is not an interval";
  return Range{lo, hi};
}

TEST(Semantics, TilesMatchBruteForceExhaustively) {
  constexpr int64_t kMaxTile = 8;
  int64_t pairs = 0;
  for (int64_t lg = 2; lg <= 20; ++lg)
    for (int64_t k = 2; k <= lg; ++k)
      for (int64_t s = 1; s <= k; ++s)
        for (bool causal : {false, true}) {
          const Axis a = make_axis(lg, k, s, 1, causal);
          SCOPED_TRACE(axis_name(a));
          const std::vector<uint32_t> win = window_masks(lg, a);
          // q_box of every kv tile: the queries whose window meets the tile.
          for (int64_t c0 = 0; c0 < lg; ++c0)
            for (int64_t c1 = c0 + 1; c1 <= std::min(lg, c0 + kMaxTile); ++c1) {
              const uint32_t kv_mask = range_mask(c0, c1);
              uint32_t seeing = 0;
              for (int64_t j = 0; j < lg; ++j)
                if (win[static_cast<size_t>(j)] & kv_mask) seeing |= 1u << j;
              const Range expected = mask_interval(seeing);
              const Range got = nattn::sem::q_box(Range{c0, c1}, lg, a);
              ASSERT_EQ(got.start, expected.start) << "kv [" << c0 << "," << c1 << ")";
              ASSERT_EQ(got.end, expected.end) << "kv [" << c0 << "," << c1 << ")";
            }
          for (int64_t q0 = 0; q0 < lg; ++q0)
            for (int64_t q1 = q0 + 1; q1 <= std::min(lg, q0 + kMaxTile); ++q1) {
              uint32_t seen = 0;
              for (int64_t j = q0; j < q1; ++j) seen |= win[static_cast<size_t>(j)];
              const Range expected_box = mask_interval(seen);
              const Range box = nattn::sem::kv_box(Range{q0, q1}, lg, a);
              ASSERT_EQ(box.start, expected_box.start) << "q [" << q0 << "," << q1 << ")";
              ASSERT_EQ(box.end, expected_box.end) << "q [" << q0 << "," << q1 << ")";
              for (int64_t c0 = 0; c0 < lg; ++c0)
                for (int64_t c1 = c0 + 1; c1 <= std::min(lg, c0 + kMaxTile); ++c1) {
                  const uint32_t kv_mask = range_mask(c0, c1);
                  int64_t attending = 0;
                  for (int64_t j = q0; j < q1; ++j)
                    attending += __builtin_popcount(win[static_cast<size_t>(j)] & kv_mask);
                  const TileClass expected =
                      attending == 0                          ? TileClass::empty
                      : attending == (q1 - q0) * (c1 - c0)    ? TileClass::interior
                                                              : TileClass::boundary;
                  const TileClass got = nattn::sem::classify(Range{q0, q1}, Range{c0, c1}, lg, a);
                  ASSERT_EQ(static_cast<int>(got), static_cast<int>(expected))
                      << "q [" << q0 << "," << q1 << ") kv [" << c0 << "," << c1 << ")";
                  ++pairs;
                }
            }
        }
  EXPECT_GT(pairs, 1000000);
}

TEST(Semantics, CombineTable) {
  using nattn::sem::combine;
  const TileClass E = TileClass::empty, I = TileClass::interior, B = TileClass::boundary;
  EXPECT_EQ(combine(E, E), E);
  EXPECT_EQ(combine(E, I), E);
  EXPECT_EQ(combine(B, E), E);
  EXPECT_EQ(combine(I, I), I);
  EXPECT_EQ(combine(I, B), B);
  EXPECT_EQ(combine(B, I), B);
  EXPECT_EQ(combine(B, B), B);
}

// ---- 2-D and 3-D tiles: per-axis boxes and combined classes against all pairs ----------------

struct MultiCase {
  int rank = 0;
  Axis axes[3];
  // see[i][x * L + y]: query x sees key y along axis i (brute force, original coordinates).
  std::vector<char> see[3];
};

MultiCase random_case(int rank, int64_t max_extent, std::mt19937_64& rng) {
  MultiCase c;
  c.rank = rank;
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int i = 0; i < rank; ++i) {
    const int64_t L = pick(2, max_extent);
    const int64_t k = pick(2, L);
    const int64_t s = pick(1, k);
    const int64_t d = pick(1, L / k);
    c.axes[i] = make_axis(L, k, s, d, pick(0, 1) == 1);
    c.see[i].assign(static_cast<size_t>(L * L), 0);
    for (int64_t x = 0; x < L; ++x)
      for (int64_t y : brute_keys(x, c.axes[i])) c.see[i][static_cast<size_t>(x * L + y)] = 1;
  }
  return c;
}

// Enumerates every coordinate of the box lo[i] <= x[i] < hi[i] (original coordinates, stepping by
// the axis dilation so that only the members of one group are visited).
template <class F>
void for_each_in_box(int rank, const int64_t* lo, const int64_t* hi, const int64_t* step, F f) {
  int64_t x[3] = {lo[0], rank > 1 ? lo[1] : 0, rank > 2 ? lo[2] : 0};
  for (int i = 0; i < rank; ++i)
    if (lo[i] >= hi[i]) return;
  while (true) {
    f(x);
    int i = rank - 1;
    for (; i >= 0; --i) {
      x[i] += step[i];
      if (x[i] < hi[i]) break;
      x[i] = lo[i];
    }
    if (i < 0) return;
  }
}

void check_multi_case(const MultiCase& c, std::mt19937_64& rng, int64_t* pairs_checked) {
  const int rank = c.rank;
  std::string name;
  for (int i = 0; i < rank; ++i) name += "[" + axis_name(c.axes[i]) + "] ";
  SCOPED_TRACE(name);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  int64_t group[3], lg[3], qt[3], kt[3], step[3], full_lo[3] = {0, 0, 0}, full_hi[3];
  for (int i = 0; i < rank; ++i) {
    group[i] = pick(0, c.axes[i].dilation - 1);
    lg[i] = nattn::sem::group_extent(c.axes[i].extent, c.axes[i].dilation, group[i]);
    qt[i] = pick(1, 4);
    kt[i] = pick(1, 4);
    step[i] = c.axes[i].dilation;
    full_lo[i] = group[i];
    full_hi[i] = c.axes[i].extent;
  }
  auto sees = [&](const int64_t* x, const int64_t* y) {
    for (int i = 0; i < rank; ++i) {
      const int64_t L = c.axes[i].extent;
      if (!c.see[i][static_cast<size_t>(x[i] * L + y[i])]) return false;
    }
    return true;
  };
  auto to_original = [&](int i, int64_t p) { return group[i] + c.axes[i].dilation * p; };
  // Every aligned query tile against every aligned KV tile of the group (tiles clipped at lg).
  int64_t q_tiles[3], kv_tiles[3];
  for (int i = 0; i < rank; ++i) {
    q_tiles[i] = nattn::sem::ceil_div(lg[i], qt[i]);
    kv_tiles[i] = nattn::sem::ceil_div(lg[i], kt[i]);
  }
  const int64_t zero[3] = {0, 0, 0}, one[3] = {1, 1, 1};
  for_each_in_box(rank, zero, q_tiles, one, [&](const int64_t* qi) {
    Range q[3], box[3];
    int64_t q_lo[3], q_hi[3], box_lo[3], box_hi[3];
    for (int i = 0; i < rank; ++i) {
      q[i] = Range{qi[i] * qt[i], std::min(lg[i], (qi[i] + 1) * qt[i])};
      box[i] = nattn::sem::kv_box(q[i], lg[i], c.axes[i]);
      q_lo[i] = to_original(i, q[i].start);
      q_hi[i] = to_original(i, q[i].end - 1) + 1;
      box_lo[i] = to_original(i, box[i].start);
      box_hi[i] = to_original(i, box[i].end - 1) + 1;
    }
    // The keys some query of the tile sees, over the whole grid, are exactly the KV box of the group.
    for_each_in_box(rank, zero, full_hi, one, [&](const int64_t* y) {
      bool seen = false;
      for_each_in_box(rank, q_lo, q_hi, step, [&](const int64_t* x) { seen = seen || sees(x, y); });
      bool in_box = true;
      for (int i = 0; i < rank; ++i)
        in_box = in_box && y[i] % step[i] == group[i] && box_lo[i] <= y[i] && y[i] < box_hi[i];
      ASSERT_EQ(seen, in_box) << "key (" << y[0] << "," << y[1] << "," << y[2] << ")";
    });
    for_each_in_box(rank, zero, kv_tiles, one, [&](const int64_t* ki) {
      Range kv[3];
      int64_t kv_lo[3], kv_hi[3];
      TileClass combined = TileClass::interior;
      for (int i = 0; i < rank; ++i) {
        kv[i] = Range{ki[i] * kt[i], std::min(lg[i], (ki[i] + 1) * kt[i])};
        kv_lo[i] = to_original(i, kv[i].start);
        kv_hi[i] = to_original(i, kv[i].end - 1) + 1;
        combined = nattn::sem::combine(combined, nattn::sem::classify(q[i], kv[i], lg[i], c.axes[i]));
      }
      int64_t total = 0, attending = 0;
      for_each_in_box(rank, q_lo, q_hi, step, [&](const int64_t* x) {
        for_each_in_box(rank, kv_lo, kv_hi, step, [&](const int64_t* y) {
          ++total;
          attending += sees(x, y);
        });
      });
      const TileClass expected = attending == 0       ? TileClass::empty
                                 : attending == total ? TileClass::interior
                                                      : TileClass::boundary;
      ASSERT_EQ(static_cast<int>(combined), static_cast<int>(expected))
          << "q tile (" << qi[0] << "," << qi[1] << "," << qi[2] << ") kv tile (" << ki[0] << ","
          << ki[1] << "," << ki[2] << ")";
      *pairs_checked += total;
    });
  });
  // q_box of every aligned KV tile: exactly the queries of the group that see some key of it.
  for_each_in_box(rank, zero, kv_tiles, one, [&](const int64_t* ki) {
    int64_t kv_lo[3], kv_hi[3], qb_lo[3], qb_hi[3];
    for (int i = 0; i < rank; ++i) {
      const Range kv{ki[i] * kt[i], std::min(lg[i], (ki[i] + 1) * kt[i])};
      const Range qb = nattn::sem::q_box(kv, lg[i], c.axes[i]);
      kv_lo[i] = to_original(i, kv.start);
      kv_hi[i] = to_original(i, kv.end - 1) + 1;
      qb_lo[i] = to_original(i, qb.start);
      qb_hi[i] = to_original(i, qb.end - 1) + 1;
    }
    for_each_in_box(rank, full_lo, full_hi, step, [&](const int64_t* x) {
      bool sees_tile = false;
      for_each_in_box(rank, kv_lo, kv_hi, step,
                      [&](const int64_t* y) { sees_tile = sees_tile || sees(x, y); });
      bool in_box = true;
      for (int i = 0; i < rank; ++i) in_box = in_box && qb_lo[i] <= x[i] && x[i] < qb_hi[i];
      ASSERT_EQ(sees_tile, in_box) << "query (" << x[0] << "," << x[1] << "," << x[2] << ")";
    });
  });
}

TEST(Semantics, MultiDimensionalTiles2D) {
  std::mt19937_64 rng(20240611);
  int64_t pairs = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const MultiCase c = random_case(2, 12, rng);
    check_multi_case(c, rng, &pairs);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(pairs, 100000);
}

TEST(Semantics, MultiDimensionalTiles3D) {
  std::mt19937_64 rng(987654321);
  int64_t pairs = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    const MultiCase c = random_case(3, 7, rng);
    check_multi_case(c, rng, &pairs);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(pairs, 100000);
}

// Multi-dimensional attendance is the conjunction of the per-axis rules (separability), checked on
// every pair of a few mixed 3-D grids against the brute force.
TEST(Semantics, MultiDimensionalAttendsIsPerAxis) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 20; ++iter) {
    const MultiCase c = random_case(3, 6, rng);
    const int64_t lo[3] = {0, 0, 0}, one[3] = {1, 1, 1};
    const int64_t hi[3] = {c.axes[0].extent, c.axes[1].extent, c.axes[2].extent};
    for_each_in_box(3, lo, hi, one, [&](const int64_t* x) {
      for_each_in_box(3, lo, hi, one, [&](const int64_t* y) {
        bool expected = true, got = true;
        for (int i = 0; i < 3; ++i) {
          const int64_t L = c.axes[i].extent;
          expected = expected && c.see[i][static_cast<size_t>(x[i] * L + y[i])];
          got = got && nattn::sem::attends(x[i], y[i], c.axes[i]);
        }
        ASSERT_EQ(got, expected);
      });
    });
  }
}

}  // namespace
