// Tile-configuration tables of every backend (shared/spec/natten-reference.md §4.3 for the CUDA
// and flex families; the CPU backend's "tiles" are the query blocks one task processes). Every
// list starts with the backend's default. The cutlass-* and hopper-* lists hold only the shapes this
// build's kernels run (cutlass: NATTEN's entries that they take, plus 128-query tiles on SM90+);
// the blackwell tables are NATTEN's lists until our own kernels land, the flex ones are NATTEN's.
#include <algorithm>
#include <functional>

#include "core/tables.h"

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
Configs cutlass_forward(int rank, int cc, DType dtype) {
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
  return runnable(default_first(out, def), rank, Pass::forward);
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

// hopper-fna (src/cuda/sm90/fmha_fwd, na_fwd_sm90.h): token-permuted Q and KV tiles of 128 tokens
// each (every power-of-two shape of the rank with axes >= 2; the same shape for Q and KV here), two
// consumer warpgroups on one Q tile (cooperative), head dims 64 and 128. Default first: NATTEN's
// Hopper default shape for the rank.
Configs hopper_fna_forward(int rank) {
  const auto coop = KernelSchedule::cooperative;
  Configs out;
  for (const auto& t : pow2_shapes(rank, 128)) out.push_back(pair(t, t, coop));
  std::sort(out.begin(), out.end(), desc);
  const TileConfig def = rank == 1 ? pair({128}, {128}, coop)
                                   : rank == 2 ? pair({16, 8}, {16, 8}, coop) : pair({4, 4, 8}, {4, 4, 8}, coop);
  return default_first(out, def);
}

// hopper-fmha (src/cuda/sm90/fmha_fwd): what the compiled kernel runs, 128 queries x 128 keys per
// tile, two consumer warpgroups on one Q tile (cooperative), head dims 64 and 128.
Configs hopper_fmha_forward() { return {pair({128}, {128}, KernelSchedule::cooperative)}; }

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

std::vector<TileConfig> config_table(const BackendSpec& spec, const NaProblem& p, Pass pass) {
  const std::string name = spec.name;
  const int rank = p.rank();
  const bool fwd = pass == Pass::forward;
  if (name == "reference") return {TileConfig{}};
  if (name == "cpu") return cpu_blocks(rank);
  if (name == "cutlass-fna")
    return fwd ? cutlass_forward(rank, p.compute_capability, p.dtype)
               : cutlass_backward(rank, p.compute_capability, p.dtype, std::max(p.head_dim, p.head_dim_v));
  if (name == "hopper-fna") return fwd ? hopper_fna_forward(rank) : Configs{};
  if (name == "blackwell-fna") return fwd ? blackwell_forward(rank) : blackwell_backward(rank);
  if (name == "flex-fna") return fwd ? flex_forward(rank) : Configs{TileConfig{}};
  return {};
}

// FMHA lists are the 1-D NA lists (tile sizes as 1-element shapes).
std::vector<TileConfig> config_table(const BackendSpec& spec, const FmhaProblem& p, Pass pass) {
  const std::string name = spec.name;
  const bool fwd = pass == Pass::forward;
  if (name == "reference") return {TileConfig{}};
  if (name == "cpu") return cpu_blocks(1);
  if (name == "cutlass-fmha")
    return fwd ? cutlass_forward(1, p.compute_capability, p.dtype)
               : cutlass_backward(1, p.compute_capability, p.dtype, std::max(p.head_dim, p.head_dim_v));
  if (name == "hopper-fmha") return fwd ? hopper_fmha_forward() : Configs{};
  if (name == "blackwell-fmha") return fwd ? blackwell_forward(1) : blackwell_backward(1);
  if (name == "flex-fmha") return fwd ? flex_forward(1) : Configs{TileConfig{}};
  return {};
}

}  // namespace nattn::detail
