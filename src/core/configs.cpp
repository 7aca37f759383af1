// Tile-configuration tables of every backend (shared/spec/natten-reference.md §4.3 for the CUDA
// and flex families; the CPU backend's "tiles" are the query blocks one task processes). Every
// list starts with the backend's default. The cutlass-* and hopper-* lists hold only the shapes this
// build's kernels run (cutlass: NATTEN's entries that they take, plus 128-query tiles on SM90+);
// the blackwell tables are NATTEN's lists until our own kernels land, the flex ones are NATTEN's.
#include <algorithm>
#include <functional>
#include <map>
#include <mutex>

#include "core/tables.h"
#include "cuda/sm90/fmha_fwd/params.h"  // the Hopper kernels' tile sizes (plain constants, no CUDA)
#include "nattn/semantics.h"

namespace nattn::detail {
namespace {

using Shape = std::vector<int64_t>;
using Configs = std::vector<TileConfig>;

// All shapes of `rank` axes, each a power of two >= 2, with the given volume (a power of two).
std::vector<Shape> pow2_shapes(int rank, int64_t volume) {
  std::vector<Shape> out;
  Shape cur;
  std::function<void(int64_t)> rec = [&](int64_t rest) {
    if (static_cast<int>(cur.size()) == rank - 1) {
      if (rest >= 2) {
        cur.push_back(rest);
        out.push_back(cur);
        cur.pop_back();
      }
      return;
    }
    for (int64_t t = 2; t <= rest; t *= 2) {
      if (rest % t) continue;
      cur.push_back(t);
      rec(rest / t);
      cur.pop_back();
    }
  };
  rec(volume);
  return out;
}

// Shapes with every axis a power-of-two multiplier (>= 1) of `base` and total multiplier `factor`.
std::vector<Shape> scaled_shapes(const Shape& base, int64_t factor) {
  std::vector<Shape> out;
  Shape cur;
  std::function<void(size_t, int64_t)> rec = [&](size_t axis, int64_t rest) {
    if (axis + 1 == base.size()) {
      cur.push_back(base[axis] * rest);
      out.push_back(cur);
      cur.pop_back();
      return;
    }
    for (int64_t m = 1; m <= rest; m *= 2) {
      cur.push_back(base[axis] * m);
      rec(axis + 1, rest / m);
      cur.pop_back();
    }
  };
  rec(0, factor);
  return out;
}

bool desc(const TileConfig& a, const TileConfig& b) {
  if (a.q_tile != b.q_tile) return a.q_tile > b.q_tile;
  return a.kv_tile > b.kv_tile;
}

void sort_desc_append(Configs& out, Configs group) {
  std::sort(group.begin(), group.end(), desc);
  out.insert(out.end(), group.begin(), group.end());
}

// Move `def` to the front (it must be in the list).
Configs default_first(Configs list, const TileConfig& def) {
  auto it = std::find(list.begin(), list.end(), def);
  if (it != list.end()) {
    list.erase(it);
    list.insert(list.begin(), def);
  }
  return list;
}

TileConfig pair(Shape q, Shape kv, KernelSchedule s = KernelSchedule::none) {
  return TileConfig{std::move(q), std::move(kv), s};
}

// Along one axis: the KV tiles of size kt a kernel walks for all Q tiles of size qt, summed over
// the Q tiles and dilation groups, and how many of them lie inside the keys every query of their Q
// tile sees (no mask work on this axis). Direct: the KV box of the Q tile's windows tiled from its
// first key (the cutlass kernels, fna_common.cuh make_ctx, and hopper-fna's direct mode); otherwise
// the global tile grid of the group (hopper-fna's permuted mode, na_tiles.cuh make_ctx). The Q
// tiles form a product grid, so a config's walked tiles are the product of the per-axis sums.
struct AxisTiles {
  int64_t walked = 0, inside = 0;
};
// A sub-domain (direct mode, dilation 1) tiles its local queries q_origin + [0, spatial) with the
// windows of the global grid.
AxisTiles axis_tiles_walked(const NaProblem& p, int axis, int64_t qt, int64_t kt, bool direct) {
  const size_t i = static_cast<size_t>(axis);
  const bool sub = p.sub_domain.has_value();
  const sem::Axis a{sub ? p.sub_domain->global_extent[i] : p.spatial[i], p.params.kernel_size[i], p.params.stride[i],
                    p.params.dilation[i], p.params.is_causal[i]};
  const int64_t q_lo = sub ? p.sub_domain->q_origin[i] : 0;
  AxisTiles n;
  for (int64_t g = 0; g < a.dilation; ++g) {
    const int64_t lg = sem::group_extent(a.extent, a.dilation, g);
    const int64_t q_end = sub ? q_lo + p.spatial[i] : lg;
    for (int64_t q0 = q_lo; q0 < q_end; q0 += qt) {
      const int64_t q1 = std::min(q0 + qt, q_end);
      const sem::Range first = sem::window(q0, lg, a), last = sem::window(q1 - 1, lg, a);
      const int64_t kvo = direct ? first.start : first.start / kt * kt;
      n.walked += direct ? sem::ceil_div(last.end - first.start, kt) : sem::ceil_div(last.end, kt) - first.start / kt;
      n.inside += std::max<int64_t>(0, (first.end - kvo) / kt - sem::ceil_div(last.start - kvo, kt));
    }
  }
  return n;
}

// Whether the tile-walk model can be evaluated (otherwise validation reports the parameters and the
// lists keep their fixed order).
bool tile_model_known(const NaProblem& p) {
  const int rank = p.rank();
  bool known = rank >= 1 && rank <= 3;
  for (int i = 0; known && i < rank; ++i) {
    const size_t s = static_cast<size_t>(i);
    const int64_t extent = p.sub_domain ? p.sub_domain->global_extent[s] : p.spatial[s];
    known = p.spatial[s] >= 1 && p.params.kernel_size[s] >= 1 && p.params.stride[s] >= 1 &&
            p.params.stride[s] <= p.params.kernel_size[s] && p.params.dilation[s] >= 1 &&
            p.params.kernel_size[s] * p.params.dilation[s] <= extent &&
            (!p.sub_domain || p.sub_domain->q_origin[s] + p.spatial[s] <= extent);
  }
  return known;
}

// Problem-ranked lists: every forward call resolves its config, so the lists of the last problems
// seen are kept per backend, keyed by what the ranking depends on (`key` + the problem's axes).
ConfigList cached_list(const std::string& backend, std::vector<int64_t> key, const NaProblem& p,
                       const std::function<Configs()>& compute) {
  key.insert(key.begin(), {p.rank(), p.sub_domain ? 1 : 0});
  for (int i = 0; i < p.rank(); ++i) {
    const size_t s = static_cast<size_t>(i);
    key.insert(key.end(), {p.spatial[s], p.params.kernel_size[s], p.params.stride[s], p.params.dilation[s],
                           p.params.is_causal[s] ? 1 : 0});
    if (p.sub_domain) key.insert(key.end(), {p.sub_domain->global_extent[s], p.sub_domain->q_origin[s]});
  }
  static std::mutex mu;
  static std::map<std::pair<std::string, std::vector<int64_t>>, ConfigList> cache;
  auto full_key = std::make_pair(backend, std::move(key));
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(full_key);
    if (it != cache.end()) return it->second;
  }
  ConfigList list = std::make_shared<const Configs>(compute());
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 64) cache.clear();
  cache.emplace(std::move(full_key), list);
  return list;
}

// ---- cutlass-fna / cutlass-fmha (src/cuda/sm80) -------------------------------------------------
// NATTEN's lists are built first, so that users moving from NATTEN find the familiar shapes in the
// familiar order; the finders then offer only the entries this build's kernels run (runnable()).

TileConfig cutlass_default(int rank) {
  if (rank == 1) return pair({64}, {64});
  if (rank == 2) return pair({8, 8}, {8, 8});
  return pair({4, 4, 4}, {4, 4, 4});
}

// The one statement here of which tile shapes the SM80 kernels take: it mirrors check_config in
// src/cuda/sm80/fna_fwd/fna_fwd_dispatch.cpp (forward) and src/cuda/sm80/fna_bwd/fna_bwd_dispatch.cpp
// (backward), which throw NotImplementedError for anything else; change them together.
//  - both shapes have `rank` axes, each a power of two;
//  - forward: Q tile volume 64 or 128 (128 runs on a 128-query kernel or as two 64-query halves),
//    KV tile volume 64 or 128 (128 is walked as two 64-key halves);
//  - backward: Q and KV tile volume 64.
bool cutlass_kernels_take(const TileConfig& c, int rank, Pass pass) {
  auto volume = [rank](const Shape& s) -> int64_t {
    if (static_cast<int>(s.size()) != rank) return 0;
    int64_t v = 1;
    for (int64_t t : s) {
      if (t < 1 || (t & (t - 1)) != 0) return 0;
      v *= t;
    }
    return v;
  };
  if (c.schedule != KernelSchedule::none) return false;
  const int64_t qv = volume(c.q_tile), kv = volume(c.kv_tile);
  if (pass == Pass::backward) return qv == 64 && kv == 64;
  return (qv == 64 || qv == 128) && (kv == 64 || kv == 128);
}

// Keep the entries the kernels take, in order (the default stays first).
Configs runnable(Configs list, int rank, Pass pass) {
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const TileConfig& c) { return !cutlass_kernels_take(c, rank, pass); }),
             list.end());
  return list;
}

// Our 128-query forward tiles (tensor-core kernel): q of volume 128, kv = q with one axis halved
// (volume 64). Not in NATTEN's table; offered on SM90+ only, where they are the 16-bit default
// (below SM90 the lists hold NATTEN's entries only).
Configs cutlass_forward_q128(int rank) {
  Configs g;
  for (const auto& q : pow2_shapes(rank, 128))
    for (int axis = 0; axis < rank; ++axis) {
      if (q[static_cast<size_t>(axis)] < 4 && rank > 1) continue;
      Shape kv = q;
      kv[static_cast<size_t>(axis)] /= 2;
      g.push_back(pair(q, kv));
    }
  return g;
}

TileConfig cutlass_default_q128(int rank) {
  if (rank == 1) return pair({128}, {64});
  if (rank == 2) return pair({16, 8}, {8, 8});
  return pair({4, 4, 8}, {2, 4, 8});
}

// NATTEN's forward list (natten-reference.md §4.3): 32x128, 64x64, 64x128 (not on cc 86/89), each
// group in descending order. The kernels run the 64x64 and 64x128 groups, not the 32-query one.
Configs cutlass_forward(int rank, int cc, DType dtype, const TileConfig* chosen_default = nullptr) {
  Configs out, g32, g64, g64x128;
  for (const auto& q : pow2_shapes(rank, 32))
    for (const auto& kv : scaled_shapes(q, 4)) g32.push_back(pair(q, kv));
  for (const auto& q : pow2_shapes(rank, 64)) {
    g64.push_back(pair(q, q));
    for (int axis = 0; axis < rank; ++axis) {
      Shape kv = q;
      kv[static_cast<size_t>(axis)] *= 2;
      g64x128.push_back(pair(q, kv));
    }
  }
  sort_desc_append(out, g32);
  sort_desc_append(out, g64);
  if (cc != 86 && cc != 89) sort_desc_append(out, g64x128);
  TileConfig def = cutlass_default(rank);
  if (cc >= 90) {
    sort_desc_append(out, cutlass_forward_q128(rank));
    if (dtype == DType::f16 || dtype == DType::bf16) def = cutlass_default_q128(rank);
  }
  return runnable(default_first(out, chosen_default ? *chosen_default : def), rank, Pass::forward);
}

// The forward default of a problem on SM90+ in fp16/bf16 (rank >= 2): the 128-query entry of the
// list whose walk visits the fewest KV tiles (the kernel tiles each Q tile's exact KV box from its
// first key: axis_tiles_walked, direct). The forward's time follows that count within ~1% across
// configs (bench/RESULTS.md, "Forward default by the tile-walk count"); ties keep the fixed default
// (cutlass_default_q128). Below SM90 and in fp32 the fixed default stays (not measured there).
Configs cutlass_forward_ranked(const NaProblem& p) {
  const int rank = p.rank();
  Configs list = cutlass_forward(rank, p.compute_capability, p.dtype);
  const bool sixteen_bit = p.dtype == DType::f16 || p.dtype == DType::bf16;
  if (p.compute_capability < 90 || !sixteen_bit || rank < 2 || list.empty() || !tile_model_known(p)) return list;
  auto walked = [&](const TileConfig& c) {
    double total = 1.0;
    for (int i = 0; i < rank; ++i) {
      const size_t s = static_cast<size_t>(i);
      total *= static_cast<double>(axis_tiles_walked(p, i, c.q_tile[s], c.kv_tile[s], true).walked);
    }
    return total;
  };
  auto q_volume = [](const TileConfig& c) {
    int64_t v = 1;
    for (int64_t t : c.q_tile) v *= t;
    return v;
  };
  TileConfig best = list.front();
  double best_cost = walked(best);
  for (const TileConfig& c : list) {
    if (q_volume(c) != 128) continue;
    const double cost = walked(c);
    if (cost < best_cost) {
      best = c;
      best_cost = cost;
    }
  }
  return cutlass_forward(rank, p.compute_capability, p.dtype, &best);  // only the default moves
}

Configs all_pairs(int rank, int64_t q_volume, int64_t kv_volume) {
  Configs g;
  for (const auto& q : pow2_shapes(rank, q_volume))
    for (const auto& kv : pow2_shapes(rank, kv_volume)) g.push_back(pair(q, kv));
  return g;
}

// NATTEN's backward pools (natten-reference.md §4.3): 64x64 always, plus 128x64 or 128x128 by
// dtype, cc and head dim. The kernels run the 64x64 pool only.
Configs cutlass_backward(int rank, int cc, DType dtype, int64_t max_head_dim) {
  Configs out;
  sort_desc_append(out, all_pairs(rank, 64, 64));
  const bool big_smem = cc == 80 || cc == 90 || cc == 100 || cc == 103;
  if (dtype == DType::f32) {
    if (big_smem) sort_desc_append(out, all_pairs(rank, 128, 64));
  } else if (big_smem) {
    sort_desc_append(out, all_pairs(rank, 128, max_head_dim <= 128 ? 128 : 64));
  }
  return runnable(default_first(out, cutlass_default(rank)), rank, Pass::backward);
}

// hopper-fna (src/cuda/sm90/fmha_fwd, na_fwd_sm90.h): Q tiles of 128 tokens, KV tiles of 128 tokens
// (64 when max(D, Dv) > 128 needs the head dim 256 kernel: cuda::sm90::fmha_block_n), any
// power-of-two shape of the rank (sizes 1 allowed, Q and KV shapes independent), two consumer
// warpgroups on one Q tile (cooperative), head dims 32, 64, 128 and 256.

// Keys per KV tile of the kernel that runs the problem (its head dim: the smallest of 32 / 64 / 128
// / 256 >= max(D, Dv); only 256 changes the tile).
int64_t hopper_fna_kv_volume(const NaProblem& p) {
  return cuda::sm90::fmha_block_n(std::max(p.head_dim, p.head_dim_v) > 128 ? 256 : 128);
}

// All shapes of `rank` axes, each a power of two >= 1, with the given volume.
std::vector<Shape> pow2_shapes_from_1(int rank, int64_t volume) {
  std::vector<Shape> out;
  if (rank == 1) return {Shape{volume}};
  for (int64_t t = 1; t <= volume; t *= 2)
    for (Shape rest : pow2_shapes_from_1(rank - 1, volume / t)) {
      rest.insert(rest.begin(), t);
      out.push_back(rest);
    }
  return out;
}

// Whether na_forward runs this problem in direct mode (mirrors the problem-level part of
// direct_blocker in na_fwd_sm90.cpp; the tensors' strides can still send it to the permuted path).
bool hopper_fna_direct(const NaProblem& p) {
  for (int i = 0; i < p.rank(); ++i)
    if (p.params.dilation[static_cast<size_t>(i)] != 1) return false;
  // Additional KV runs the NA part in the direct mode too (the dense part does not depend on tiles).
  return p.head_dim == p.head_dim_v &&
         (p.head_dim == 32 || p.head_dim == 64 || p.head_dim == 128 || p.head_dim == 256);
}

// Relative extra cost of a tile that needs the element mask (measured on the H100: masked tiles ran
// at ~0.75x the rate of unmasked ones, bench/RESULTS.md).
constexpr double kMaskedTileExtra = 0.3;

// The list holds the same pairs for every problem of a rank and KV tile volume (so that a config
// listed for one problem is accepted for another, as NATTEN users pass them around): Q tile = every
// shape with axes >= 2 (NATTEN's Hopper shapes), KV tile = every shape with axes >= 1 (volume 128:
// 1-D 1 pair, 2-D 48, 3-D 540; volume 64: 1, 42, 420), each with the ping-pong schedule. The order
// of those depends on the problem: the least work first (KV tiles walked, the masked ones weighted;
// the first is the default); ties keep NATTEN's order (its default pair first, then q == kv pairs,
// then the rest). After them, in the same order, the cooperative schedule of the pairs NATTEN lists
// with it (volume 128: q == kv; volume 64: KV tile (64), (8, 8), (4, 4, 4)), so that NATTEN's
// (tiles, schedule) entries are accepted and the search of `nattn profile --optimize` stays short.
Configs hopper_fna_forward_uncached(const NaProblem& p) {
  const int rank = p.rank();
  const auto pp = KernelSchedule::pingpong;
  const int64_t kv_volume = hopper_fna_kv_volume(p);
  std::vector<Shape> q_shapes = pow2_shapes(rank, 128);
  std::sort(q_shapes.begin(), q_shapes.end(), std::greater<Shape>());
  const Shape natten_def = rank == 1 ? Shape{128} : rank == 2 ? Shape{16, 8} : Shape{4, 4, 8};
  auto it = std::find(q_shapes.begin(), q_shapes.end(), natten_def);
  if (it != q_shapes.end()) std::rotate(q_shapes.begin(), it, it + 1);
  std::vector<Shape> kv_shapes = pow2_shapes_from_1(rank, kv_volume);
  std::sort(kv_shapes.begin(), kv_shapes.end(), std::greater<Shape>());
  // NATTEN's default KV tile at head dim 256 (64 keys): (64), (8, 8), (4, 4, 4).
  const Shape natten_kv64 = rank == 1 ? Shape{64} : rank == 2 ? Shape{8, 8} : Shape{4, 4, 4};
  Configs out;
  if (kv_volume == 128) {
    for (const Shape& q : q_shapes) out.push_back(pair(q, q, pp));
  } else {
    out.push_back(pair(natten_def, natten_kv64, pp));
  }
  for (const Shape& q : q_shapes)
    for (const Shape& kv : kv_shapes)
      if (kv_volume == 128 ? kv != q : !(q == natten_def && kv == natten_kv64)) out.push_back(pair(q, kv, pp));
  // The ping-pong list, then the cooperative entries (see above).
  auto with_coop = [&](Configs list) {
    const size_t n = list.size();
    for (size_t i = 0; i < n; ++i) {
      const TileConfig& c = list[i];
      if (kv_volume == 128 ? c.q_tile == c.kv_tile : c.kv_tile == natten_kv64)
        list.push_back(pair(c.q_tile, c.kv_tile, KernelSchedule::cooperative));
    }
    return list;
  };
  if (!tile_model_known(p)) return with_coop(out);  // invalid parameters (validation reports them): NATTEN's order
  const bool direct = hopper_fna_direct(p);
  // Per axis, Q tile size and KV tile size (powers of two up to 128, indexed by log2): tiles walked.
  std::vector<std::vector<std::vector<AxisTiles>>> axis_tiles(
      static_cast<size_t>(rank), std::vector<std::vector<AxisTiles>>(8, std::vector<AxisTiles>(8, AxisTiles{-1, -1})));
  auto lg2 = [](int64_t x) {
    size_t l = 0;
    while ((int64_t{1} << l) < x) ++l;
    return l;
  };
  // Tiles walked, masked ones weighted: the Q tiles are a product grid, so the walked tiles and the
  // unmasked ones (inside on every axis) are products of per-axis sums.
  auto cost = [&](const TileConfig& c) {
    double total = 1.0, unmasked = 1.0;
    for (int i = 0; i < rank; ++i) {
      const size_t s = static_cast<size_t>(i);
      AxisTiles& n = axis_tiles[s][lg2(c.q_tile[s])][lg2(c.kv_tile[s])];
      if (n.walked < 0) n = axis_tiles_walked(p, i, c.q_tile[s], c.kv_tile[s], direct);
      total *= static_cast<double>(n.walked);
      unmasked *= static_cast<double>(n.inside);
    }
    return total + kMaskedTileExtra * (total - unmasked);
  };
  std::vector<std::pair<double, size_t>> order;
  for (size_t i = 0; i < out.size(); ++i) order.push_back({cost(out[i]), i});
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  Configs ranked;
  for (const auto& o : order) ranked.push_back(out[o.second]);
  return with_coop(ranked);
}

// The ranking costs ~0.2 ms (540 pairs in 3-D): cached (cached_list).
ConfigList hopper_fna_forward(const NaProblem& p) {
  return cached_list("hopper-fna", {hopper_fna_direct(p) ? 1 : 0, hopper_fna_kv_volume(p)}, p,
                     [&] { return hopper_fna_forward_uncached(p); });
}

// hopper-fmha (src/cuda/sm90/fmha_fwd): what the compiled kernel runs, 128 queries x 128 keys per
// tile (64 keys at head dim 256, cuda::sm90::fmha_block_n), two consumer warpgroups on one Q tile,
// taking turns (ping-pong, the default) or not (cooperative).
Configs hopper_fmha_forward(int64_t head_dim) {
  const Shape kv{cuda::sm90::fmha_block_n(static_cast<int>(head_dim))};
  return {pair({128}, kv, KernelSchedule::pingpong), pair({128}, kv, KernelSchedule::cooperative)};
}

Configs blackwell_forward(int rank) {
  if (rank == 1) return {pair({256}, {128})};
  if (rank == 2)
    return {pair({16, 16}, {16, 8}), pair({16, 16}, {8, 16}), pair({8, 32}, {8, 16}), pair({8, 32}, {4, 32})};
  return {pair({8, 4, 8}, {4, 4, 8}),  pair({8, 4, 8}, {2, 8, 8}),  pair({2, 8, 16}, {4, 4, 8}),
          pair({2, 8, 16}, {2, 8, 8}), pair({4, 4, 16}, {2, 4, 16}), pair({2, 16, 8}, {2, 8, 8}),
          pair({4, 8, 8}, {2, 8, 8})};
}

Configs blackwell_backward(int rank) {
  if (rank == 1) return {pair({128}, {128})};
  if (rank == 2)
    return {pair({16, 8}, {16, 8}), pair({16, 8}, {8, 16}), pair({8, 16}, {16, 8}), pair({8, 16}, {8, 16})};
  return {pair({4, 4, 8}, {4, 4, 8}),  pair({4, 4, 8}, {2, 8, 8}),  pair({1, 8, 16}, {4, 4, 8}),
          pair({2, 8, 8}, {4, 4, 8}),  pair({1, 8, 16}, {2, 8, 8}), pair({2, 4, 16}, {2, 4, 16}),
          pair({4, 2, 16}, {2, 4, 16}), pair({4, 4, 8}, {2, 4, 16}), pair({2, 8, 8}, {2, 8, 8})};
}

Configs flex_forward(int rank) {
  if (rank == 1) return {pair({64}, {64})};
  if (rank == 2) return {pair({8, 8}, {8, 8}), pair({4, 16}, {4, 16}), pair({4, 16}, {8, 8})};
  return {pair({4, 4, 4}, {4, 4, 4}), pair({2, 4, 8}, {2, 4, 8}), pair({2, 4, 8}, {4, 4, 4})};
}

// CPU: the block of queries one task processes (consecutive along the last axis first, where
// windows overlap most). No KV tile: the kernels visit the exact window.
Configs cpu_blocks(int rank) {
  if (rank == 1) return {pair({64}, {}), pair({16}, {}), pair({32}, {}), pair({128}, {})};
  if (rank == 2) return {pair({2, 32}, {}), pair({1, 16}, {}), pair({4, 16}, {}), pair({8, 8}, {})};
  return {pair({1, 4, 16}, {}), pair({1, 2, 32}, {}), pair({1, 1, 16}, {}), pair({2, 2, 16}, {}), pair({2, 4, 8}, {})};
}

}  // namespace

namespace {

std::vector<TileConfig> config_list(const BackendSpec& spec, const NaProblem& p, Pass pass) {
  const std::string name = spec.name;
  const int rank = p.rank();
  const bool fwd = pass == Pass::forward;
  if (name == "reference") return {TileConfig{}};
  if (name == "cpu") return cpu_blocks(rank);
  if (name == "cutlass-fna")
    return fwd ? cutlass_forward_ranked(p)
               : cutlass_backward(rank, p.compute_capability, p.dtype, std::max(p.head_dim, p.head_dim_v));
  if (name == "hopper-fna") return Configs{};  // forward: config_table (cached ranking)
  if (name == "blackwell-fna") return fwd ? blackwell_forward(rank) : blackwell_backward(rank);
  if (name == "flex-fna") return fwd ? flex_forward(rank) : Configs{TileConfig{}};
  return {};
}

// FMHA lists are the 1-D NA lists (tile sizes as 1-element shapes).
std::vector<TileConfig> config_list(const BackendSpec& spec, const FmhaProblem& p, Pass pass) {
  const std::string name = spec.name;
  const bool fwd = pass == Pass::forward;
  if (name == "reference") return {TileConfig{}};
  if (name == "cpu") return cpu_blocks(1);
  if (name == "cutlass-fmha")
    return fwd ? cutlass_forward(1, p.compute_capability, p.dtype)
               : cutlass_backward(1, p.compute_capability, p.dtype, std::max(p.head_dim, p.head_dim_v));
  if (name == "hopper-fmha") return fwd ? hopper_fmha_forward(p.head_dim) : Configs{};
  if (name == "blackwell-fmha") return fwd ? blackwell_forward(1) : blackwell_backward(1);
  if (name == "flex-fmha") return fwd ? flex_forward(1) : Configs{TileConfig{}};
  return {};
}

}  // namespace

ConfigList config_table(const BackendSpec& spec, const NaProblem& p, Pass pass) {
  if (std::string(spec.name) == "hopper-fna" && pass == Pass::forward) return hopper_fna_forward(p);
  if (std::string(spec.name) == "cutlass-fna" && pass == Pass::forward)
    return cached_list("cutlass-fna", {p.compute_capability, static_cast<int64_t>(p.dtype)}, p,
                       [&] { return config_list(spec, p, pass); });
  return std::make_shared<const Configs>(config_list(spec, p, pass));
}

ConfigList config_table(const BackendSpec& spec, const FmhaProblem& p, Pass pass) {
  return std::make_shared<const Configs>(config_list(spec, p, pass));
}

}  // namespace nattn::detail
