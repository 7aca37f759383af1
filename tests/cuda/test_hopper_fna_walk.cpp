// Host self-checks of the Hopper NA kernel's tile walk (no GPU; part of the test_hopper_fna
// executable): the context, windows, cursor walk and element-mask words of every CTA, run on the
// CPU against a brute force of the spec, for random problems in the permuted and direct modes (KV
// tiles of 128 and of 64 tokens), on sub-domains, and for the golden cases' default configs; and
// the 32-bit context rule.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"
#include "cuda/sm90/fmha_fwd/na_tiles.cuh"
#include "golden/golden.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace nattn {
namespace {

using V = std::vector<int64_t>;

// ---- host self-check of the kernel's tile walk (no GPU): for every CTA (group, Q tile), run
// make_ctx / fill_tables / the cursor walk (tile_of, advance) and the kernel's element-mask formula on the CPU and check that
// each real query sees exactly the keys of sem::attends (every axis), each once, and never a
// padding key; also that tiles marked unmasked have every key visible to every real query.
// direct: the direct mode's geometry (no dilation): rows and keys are grid coordinates decoded from
// the tile origins as the TMA boxes lay them out, keys past the grid end are out-of-grid zeros.
// sd (direct mode): a sub-domain, extent the query box's and kv_extent the K/V box's; rows and keys
// are then local box coordinates, checked against the spec at global = origin + local.
// skipped (optional): incremented per (tile, row) that the row's warpgroup skips.
int walk_check(const NaParams& params, const V& extent, const TileConfig& cfg, std::string* why, bool direct = false,
               const SubDomain* sd = nullptr, const V& kv_extent = {}, int64_t* skipped = nullptr) {
  using namespace cuda::sm90;
  const int rank = params.rank;
  const NaGeom g = na_geometry(params, extent, cfg, direct, sd, kv_extent);
  const sem::Permutation& qp = g.qp;
  const sem::Permutation& kvp = g.kvp;
  sem::Axis ax[3];
  for (int i = 0; i < 3; ++i) ax[i] = g.ax[i];
  auto* sh = new na::Shared;
  int bad = 0;
  auto err = [&](const std::string& m) {
    if (bad++ == 0) *why = m;
  };
  const int64_t G = qp.num_groups();
  const int64_t mq = qp.seq_len() / 128;
  const int kv_volume = static_cast<int>(kvp.tile[0] * kvp.tile[1] * kvp.tile[2]);  // 128, or 64 (head dim 256)
  std::vector<int64_t> seen_count;
  for (int64_t pb = 0; pb < G; ++pb)
    for (int64_t mb = 0; mb < mq; ++mb) {
      sh->ctx = na::Ctx{};
      na::make_ctx(g, static_cast<int>(mb), static_cast<int>(pb), sh->ctx);
      // The kernel's 32-bit context math (every extent here is small) equals the 64-bit one.
      if (!g.narrow) err("expected 32-bit context math (NaGeom::narrow) for extents below 2^30");
      NaGeom wide_geom = g;
      wide_geom.narrow = 0;
      na::Ctx wide{};
      na::make_ctx(wide_geom, static_cast<int>(mb), static_cast<int>(pb), wide);
      if (std::memcmp(&wide, &sh->ctx, sizeof wide) != 0) err("32-bit context differs from the 64-bit one");
      std::vector<std::set<std::vector<int64_t>>> seen(128);
      std::vector<bool> real(128);
      std::vector<std::vector<int64_t>> xq(128, std::vector<int64_t>(3, 0));
      bool any_real = false;
      for (int r = 0; r < 128; ++r) {
        int64_t x[3] = {0, 0, 0};
        if (direct) {
          bool in = true;
          for (int i = 0; i < 3; ++i) {
            x[i] = sh->ctx.q0[i] + ((r >> g.q_shift[i]) & g.q_mask[i]);
            in = in && x[i] < g.qp.extent[i];
            x[i] += g.q_org[i];  // global
          }
          real[static_cast<size_t>(r)] = in && sh->ctx.valid;
        } else {
          real[static_cast<size_t>(r)] = qp.inverse(pb, mb * 128 + r, x);
        }
        any_real = any_real || real[static_cast<size_t>(r)];
        for (int i = 0; i < 3; ++i) xq[static_cast<size_t>(r)][static_cast<size_t>(i)] = x[i];
      }
      if (!sh->ctx.valid) {
        if (any_real) err("CTA skipped although it has real queries");
        continue;
      }
      na::fill_tables(g, *sh, 0, 1);
      for (int w = 0; w < 2; ++w) {
        na::wg_walk(g, *sh, w);
        // The cursor at wg_first is wg_lo (the consumers start there).
        na::Cursor u;
        for (int t = 0; t < sh->wg_first[w]; ++t) na::advance(sh->ctx, u);
        for (int i = 0; i < 3; ++i)
          if (sh->wg_first[w] < sh->wg_end[w] && u.m[i] != sh->wg_lo[w][i]) err("warpgroup start cursor differs");
      }
      na::KvTile tile;
      na::Cursor cursor;  // the kernel's walk: the cursor advanced once per tile
      for (int t = 0; t < sh->ctx.n_tiles; ++t, na::advance(sh->ctx, cursor)) {
        na::tile_of(g, sh->ctx, cursor, tile);
        for (int r = 0; r < 128; ++r) {
          // A position outside the part of the walk of the row's consumer warpgroup is skipped by
          // it: the row sees none of its keys (the count check below finds any key lost that way).
          if (t < sh->wg_first[r / 64] || t >= sh->wg_end[r / 64]) {
            if (skipped != nullptr) ++*skipped;
            continue;
          }
          if (!real[static_cast<size_t>(r)]) continue;
          for (int col = 0; col < kv_volume; ++col) {
            bool vis = true;
            if (tile.masked) {  // the kernel's mask: na::row_mask of the row's windows
              int lo[3], hi[3];
              for (int i = 0; i < 3; ++i) {
                const int e = na::win_index(g, i, r);
                lo[i] = sh->win_lo[e];
                hi[i] = sh->win_hi[e];
              }
              uint32_t w[4], w2[2];  // the kernel's mask words: 4 for 128-key tiles, 2 for 64
              if (kv_volume == 64) {
                na::row_mask(g, tile, lo, hi, w2);
                w[0] = w2[0];
                w[1] = w2[1];
              } else {
                na::row_mask(g, tile, lo, hi, w);
              }
              vis = ((w[col >> 5] >> (col & 31)) & 1u) != 0;
            }
            int64_t y[3] = {0, 0, 0};
            bool key_real = true;
            if (direct) {
              for (int i = 0; i < 3; ++i) {
                y[i] = tile.org[i] + ((col >> g.kv_shift[i]) & g.kv_mask[i]);
                key_real = key_real && y[i] >= 0 && y[i] < g.kvp.extent[i];
                y[i] += g.kv_org[i];  // global
              }
            } else {
              key_real = kvp.inverse(pb, static_cast<int64_t>(tile.index) * kv_volume + col, y);
            }
            if (!vis) continue;
            if (!key_real) {
              err("padding key visible (tile " + std::to_string(tile.index) + (tile.masked ? " masked" : " unmasked") + ")");
              continue;
            }
            bool ok = true;
            for (int i = 0; i < rank; ++i) ok = ok && sem::attends(xq[static_cast<size_t>(r)][static_cast<size_t>(i)], y[i], ax[i]);
            if (!ok) err(std::string("key outside the window visible (") + (tile.masked ? "masked" : "unmasked") + " tile)");
            if (!seen[static_cast<size_t>(r)].insert({y[0], y[1], y[2]}).second) err("key visited twice");
          }
        }
      }
      for (int r = 0; r < 128; ++r) {
        if (!real[static_cast<size_t>(r)]) continue;
        int64_t want = 1;
        for (int i = 0; i < rank; ++i) want *= sem::window_of(xq[static_cast<size_t>(r)][static_cast<size_t>(i)], ax[i]).count;
        if (static_cast<int64_t>(seen[static_cast<size_t>(r)].size()) != want)
          err("query sees " + std::to_string(seen[static_cast<size_t>(r)].size()) + " keys, expected " + std::to_string(want));
      }
    }
  delete sh;
  return bad;
}

// A random cooperative config from the tile shapes `ts` (128 tokens): the KV tile the Q tile's or
// another shape, or one of the 64-token shapes `kv64` (the KV tiles of the head dim 256 kernel).
TileConfig random_config(const std::vector<V>& ts, const std::vector<V>& kv64, std::mt19937_64& rng) {
  TileConfig cfg;
  cfg.q_tile = ts[rng() % ts.size()];
  const uint64_t pick = rng() % 3;
  cfg.kv_tile = pick == 0 ? cfg.q_tile : (pick == 1 ? ts[rng() % ts.size()] : kv64[rng() % kv64.size()]);
  cfg.schedule = KernelSchedule::cooperative;
  return cfg;
}

// KV tile shapes of 64 tokens per rank (head dim 256).
const std::vector<std::vector<V>> kKvTiles64 = {
    {{64}}, {{8, 8}, {16, 4}, {4, 16}, {64, 1}, {1, 64}}, {{4, 4, 4}, {2, 4, 8}, {1, 8, 8}, {4, 16, 1}, {1, 2, 32}}};

TEST(HopperFnaWalk, MatchesBruteForce) {
  std::mt19937_64 rng(12345);
  const std::vector<std::vector<V>> tiles = {
      {{128}},
      {{16, 8}, {8, 16}, {128, 1}, {1, 128}, {32, 4}, {4, 32}},
      {{4, 4, 8}, {2, 8, 8}, {8, 4, 4}, {1, 16, 8}, {8, 8, 2}, {1, 4, 32}, {1, 2, 64}, {2, 2, 32}}};
  int runs = 0, runs_direct = 0;
  int64_t skipped = 0;  // (tile, row) pairs skipped by the row's warpgroup, over all problems
  for (int it = 0; it < 600; ++it) {
    const int rank = 1 + it % 3;
    V extent;
    NaParams p;
    p.rank = rank;
    for (int i = 0; i < rank; ++i) {
      const int64_t L = rank == 1 ? 2 + static_cast<int64_t>(rng() % 400) : (rank == 2 ? 2 + static_cast<int64_t>(rng() % 40) : 2 + static_cast<int64_t>(rng() % 14));
      const int64_t d = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(4, L / 2));
      const int64_t k = 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(L / d - 1));
      const int64_t s = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(k));
      extent.push_back(L);
      p.kernel_size[static_cast<size_t>(i)] = k;
      p.stride[static_cast<size_t>(i)] = s;
      p.dilation[static_cast<size_t>(i)] = d;
      p.is_causal[static_cast<size_t>(i)] = rng() % 3 == 0;
    }
    const TileConfig cfg = random_config(tiles[static_cast<size_t>(rank - 1)], kKvTiles64[static_cast<size_t>(rank - 1)], rng);
    std::string why;
    const int bad = walk_check(p, extent, cfg, &why, false, nullptr, {}, &skipped);
    EXPECT_EQ(bad, 0) << "extent " << shape_string(extent) << " " << p.describe() << " " << cfg.describe() << ": "
                      << why;
    ++runs;
    // The direct mode's walk on the same problem without dilation.
    for (int i = 0; i < rank; ++i) p.dilation[static_cast<size_t>(i)] = 1;
    const int bad_direct = walk_check(p, extent, cfg, &why, true, nullptr, {}, &skipped);
    EXPECT_EQ(bad_direct, 0) << "direct: extent " << shape_string(extent) << " " << p.describe() << " "
                             << cfg.describe() << ": " << why;
    ++runs_direct;
  }
  std::printf("  %d random problems checked (permuted mode), %d without dilation in direct mode; %lld (tile, row) "
              "pairs skipped by warpgroups\n",
              runs, runs_direct, static_cast<long long>(skipped));
  EXPECT_GT(skipped, 0) << "no warpgroup ever skipped a tile: the skip is not exercised";
}

// A 3-D problem whose windows are much larger than the tiles along the warpgroup split: the direct
// mode numbers a Q tile's rows with the innermost axis fastest, so the two consumer warpgroups split
// the outermost axis; with q/kv tiles (8, 4, 4) and a window of 12 there, a warpgroup's rows (4 of
// the 8 rows along that axis) see 15 keys of the CTA's 19: the last KV tile for the first half, the
// first for the second, which the skip must remove (and every row must still see its window).
TEST(HopperFnaWalk, WarpgroupSkipOnLargeWindows) {
  NaParams p;
  p.rank = 3;
  p.kernel_size = {12, 5, 5};
  TileConfig cfg;
  cfg.q_tile = {8, 4, 4};
  cfg.kv_tile = {8, 4, 4};
  cfg.schedule = KernelSchedule::cooperative;
  std::string why;
  int64_t skipped = 0;
  EXPECT_EQ(walk_check(p, {40, 16, 16}, cfg, &why, true, nullptr, {}, &skipped), 0) << why;
  EXPECT_GT(skipped, 0);
}

// The direct mode on sub-domains (multi-GPU halos): random global grids without dilation, a random
// query box and a K/V box holding its halo (exact or up to 3 more keys each side); every real query
// of the box sees exactly its global window, through local tile coordinates.
TEST(HopperFnaWalk, SubDomainMatchesBruteForce) {
  std::mt19937_64 rng(777);
  const std::vector<std::vector<V>> tiles = {
      {{128}}, {{16, 8}, {8, 16}, {128, 1}, {32, 4}}, {{4, 4, 8}, {2, 8, 8}, {8, 4, 4}, {1, 16, 8}, {2, 2, 32}}};
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int runs = 0;
  for (int it = 0; it < 400; ++it) {
    const int rank = 1 + it % 3;
    NaParams p;
    p.rank = rank;
    V q_extent, kv_extent;
    SubDomain sd;
    for (int i = 0; i < rank; ++i) {
      const size_t u = static_cast<size_t>(i);
      const int64_t L = rank == 1 ? pick(2, 500) : (rank == 2 ? pick(2, 48) : pick(2, 16));
      const int64_t k = pick(2, L);
      p.kernel_size[u] = k;
      p.stride[u] = pick(1, k);
      p.dilation[u] = 1;
      p.is_causal[u] = pick(0, 2) == 0;
      const int64_t a = pick(0, L - 1), b = pick(a + 1, L);
      const sem::Range h = sem::halo_range(a, b, L, k, p.stride[u], 1, p.is_causal[u]);
      const int64_t klo = std::max<int64_t>(0, h.start - pick(0, 3)), khi = std::min<int64_t>(L, h.end + pick(0, 3));
      sd.global_extent[u] = L;
      sd.q_origin[u] = a;
      sd.kv_origin[u] = klo;
      q_extent.push_back(b - a);
      kv_extent.push_back(khi - klo);
    }
    const TileConfig cfg = random_config(tiles[static_cast<size_t>(rank - 1)], kKvTiles64[static_cast<size_t>(rank - 1)], rng);
    std::string why;
    const int bad = walk_check(p, q_extent, cfg, &why, true, &sd, kv_extent);
    EXPECT_EQ(bad, 0) << "sub-domain " << sd.describe(rank) << " query box " << shape_string(q_extent) << " K/V box "
                      << shape_string(kv_extent) << " " << p.describe() << " " << cfg.describe() << ": " << why;
    ++runs;
  }
  std::printf("  %d random sub-domain problems checked (direct mode)\n", runs);
}

// Host only (no GPU): the kernel's context math runs in 32 bits only where every value fits
// (NaGeom::narrow); a huge dilation makes the Q tile span (tile x dilation) exceed 2^30.
TEST(HopperFnaHost, NarrowContextOnlyWhereItFits) {
  NaParams p;
  p.rank = 1;
  p.kernel_size[0] = 2;
  p.stride[0] = 1;
  p.dilation[0] = 1;
  TileConfig cfg{{128}, {128}, KernelSchedule::cooperative};
  EXPECT_EQ(cuda::sm90::na_geometry(p, {1000}, cfg, false).narrow, 1);
  EXPECT_EQ(cuda::sm90::na_geometry(p, {(int64_t{1} << 30) - 1}, cfg, false).narrow, 1);
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 30}, cfg, false).narrow, 0);
  p.dilation[0] = int64_t{1} << 24;  // 128 x 2^24 = 2^31
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 26}, cfg, false).narrow, 0);
  p.dilation[0] = int64_t{1} << 22;  // 128 x 2^22 = 2^29
  EXPECT_EQ(cuda::sm90::na_geometry(p, {int64_t{1} << 26}, cfg, false).narrow, 1);
}

// Host only (no GPU): every golden case, as an fp16 / bf16 problem on an SM90 device, is accepted by
// the registry for hopper-fna (what `nattn verify --backend hopper-fna` needs), has forward configs,
// and the kernel's tile walk with the default config matches the brute force on its geometry.
TEST(HopperFnaHost, GoldenCasesAccepted) {
  bool built = false;
  for (const BackendInfo& b : list_backends()) built = built || (b.name == "hopper-fna" && b.built);
  if (!built) GTEST_SKIP() << "hopper-fna is not built into this library";
  const char* env = std::getenv("NATTN_GOLDEN_DIR");
  const std::string dir = env != nullptr ? env : NATTN_GOLDEN_DIR;
  std::vector<std::string> paths;
  try {
    paths = golden::list_cases(dir);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no golden cases: " << e.what();
  }
  int accepted = 0;
  for (const std::string& path : paths) {
    const golden::Case gc = golden::load_case(path);
    for (DType dtype : {DType::f16, DType::bf16}) {
      NaProblem p;
      p.batch = gc.batch;
      p.spatial = gc.spatial;
      p.heads = gc.heads;
      p.heads_kv = gc.heads_kv;
      p.head_dim = gc.head_dim;
      p.head_dim_v = gc.head_dim_v;
      p.additional_kv = gc.additional_kv;
      p.dtype = dtype;
      p.device = Device{DeviceKind::cuda, 0};
      p.compute_capability = 90;
      p.params = gc.na_params();
      const std::string why = reject_reason("hopper-fna", p, Pass::forward);
      EXPECT_EQ(why, "") << gc.name << " " << dtype_name(dtype);
      const std::vector<TileConfig> cfgs = get_configs("hopper-fna", p);
      ASSERT_FALSE(cfgs.empty()) << gc.name;
      if (dtype == DType::f16) {
        std::string walk_why;
        EXPECT_EQ(walk_check(p.params, gc.spatial, cfgs.front(), &walk_why), 0) << gc.name << ": " << walk_why;
        bool undilated = true;
        for (int i = 0; i < p.rank(); ++i) undilated = undilated && p.params.dilation[static_cast<size_t>(i)] == 1;
        if (undilated) {
          EXPECT_EQ(walk_check(p.params, gc.spatial, cfgs.front(), &walk_why, true), 0)
              << gc.name << " (direct): " << walk_why;
        }
      }
      accepted += why.empty() ? 1 : 0;
    }
  }
  std::printf("  %d of %d golden case x dtype problems accepted by hopper-fna\n", accepted,
              2 * static_cast<int>(paths.size()));
}

}  // namespace
}  // namespace nattn
