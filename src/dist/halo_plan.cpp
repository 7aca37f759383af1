// The halo plan of multi-GPU NA (host-only; no NCCL, no CUDA): slabs of a Cartesian process grid,
// their halos (sem::halo_range per axis), the pieces each rank sends, and the interior / boundary
// split of each slab used to overlap the exchange with compute. See README.md.
#include <algorithm>
#include <string>
#include <vector>

#include "core/validation.h"
#include "nattn/distributed.h"
#include "nattn/errors.h"
#include "nattn/semantics.h"

namespace nattn::dist {

namespace {

constexpr const char* kOp = "make_halo_plan";

[[noreturn]] void fail(const std::string& what) { throw ValueError(std::string(kOp) + ": " + what); }

std::string list_string(const std::vector<int64_t>& v) { return shape_string(v); }

std::string ints_string(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Interior of one axis: [a, b) inside [lo, hi) such that the halo of [a, b) lies inside [lo, hi).
// a is the first query from which every later query of the slab needs no key below lo; b the end of
// the longest run from a whose keys stay below hi. Both searches are over monotone predicates
// (the halo of a sub-range is contained in the halo of the range).
sem::Range interior_range(int64_t lo, int64_t hi, int64_t extent, int64_t k, int64_t s, int64_t d, bool causal) {
  int64_t l = lo, h = hi;  // first a in [lo, hi] with start(a, hi) >= lo (a == hi always qualifies)
  while (l < h) {
    const int64_t m = l + (h - l) / 2;
    if (sem::halo_range(m, hi, extent, k, s, d, causal).start >= lo) h = m; else l = m + 1;
  }
  const int64_t a = l;
  l = a;
  h = hi;  // last b in [a, hi] with end(a, b) <= hi (b == a always qualifies)
  while (l < h) {
    const int64_t m = l + (h - l + 1) / 2;
    if (sem::halo_range(a, m, extent, k, s, d, causal).end <= hi) l = m; else h = m - 1;
  }
  return sem::Range{a, l};
}

}  // namespace

// ---- Box ------------------------------------------------------------------------------------------

bool Box::empty(int rank) const {
  for (int i = 0; i < rank; ++i)
    if (size(i) <= 0) return true;
  return false;
}

int64_t Box::volume(int rank) const {
  if (empty(rank)) return 0;
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= size(i);
  return n;
}

bool Box::contains(const Box& inner, int rank) const {
  if (inner.empty(rank)) return true;
  for (size_t i = 0; i < static_cast<size_t>(rank); ++i)
    if (inner.lo[i] < lo[i] || inner.hi[i] > hi[i]) return false;
  return true;
}

std::string Box::describe(int rank) const {
  std::string s;
  for (size_t i = 0; i < static_cast<size_t>(rank); ++i)
    s += (i ? " x [" : "[") + std::to_string(lo[i]) + ", " + std::to_string(hi[i]) + ")";
  return s;
}

Box intersect(const Box& a, const Box& b, int rank) {
  Box out;
  for (size_t i = 0; i < static_cast<size_t>(rank); ++i) {
    out.lo[i] = std::max(a.lo[i], b.lo[i]);
    out.hi[i] = std::max(out.lo[i], std::min(a.hi[i], b.hi[i]));
  }
  return out;
}

// ---- ProcessGrid ------------------------------------------------------------------------------------

ProcessGrid ProcessGrid::even(const std::vector<int64_t>& global_extent, const std::vector<int>& ranks) {
  if (ranks.size() != global_extent.size())
    throw ValueError("ProcessGrid::even: ranks=" + ints_string(ranks) + " must have one entry per axis of "
                     "global_extent=" + list_string(global_extent));
  ProcessGrid g;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int64_t n = ranks[i], L = global_extent[i];
    if (n < 1 || n > L)
      throw ValueError("ProcessGrid::even: ranks[" + std::to_string(i) + "]=" + std::to_string(n) +
                       " is not valid (allowed: 1 to the extent " + std::to_string(L) + ")");
    std::vector<int64_t> sizes;
    for (int64_t r = 0; r < n; ++r) sizes.push_back(L / n + (r < L % n ? 1 : 0));
    g.slabs.push_back(sizes);
  }
  return g;
}

std::string ProcessGrid::describe() const {
  std::string s = "slabs=(";
  for (size_t i = 0; i < slabs.size(); ++i)
    s += (i ? ", " : "") + (slabs[i].size() > 1 ? list_string(slabs[i]) : std::string("-"));
  return s + ")";
}

// ---- HaloPlan ---------------------------------------------------------------------------------------

SubDomain HaloPlan::sub_domain(int r, const Box& queries, const Box& keys) const {
  (void)r;
  SubDomain sd;
  sd.global_extent = global_extent;
  sd.q_origin = queries.lo;
  sd.kv_origin = keys.lo;
  for (size_t i = static_cast<size_t>(rank); i < 3; ++i) sd.q_origin[i] = sd.kv_origin[i] = 0;
  return sd;
}

std::string HaloPlan::describe() const {
  std::string s = std::to_string(num_ranks) + " ranks, global_extent=" +
                  list_string(std::vector<int64_t>(global_extent.begin(), global_extent.begin() + rank)) +
                  ", " + params.describe() + ", " + grid.describe() + "\n";
  for (const RankPlan& r : ranks) {
    s += "  rank " + std::to_string(r.rank) + ": slab " + r.slab.describe(rank) + ", halo " +
         r.halo.describe(rank) + ", interior " + (r.interior.empty(rank) ? "(empty)" : r.interior.describe(rank)) +
         ", " + std::to_string(r.boundary.size()) + " boundary boxes, receives";
    if (r.recv.empty()) s += " nothing";
    for (int p : r.recv) {
      const HaloPiece& hp = pieces[static_cast<size_t>(p)];
      s += " " + hp.box.describe(rank) + " from " + std::to_string(hp.src) + ";";
    }
    s += "\n";
  }
  return s;
}

HaloPlan make_halo_plan(const std::vector<int64_t>& global_extent, const NaParams& params,
                        const ProcessGrid& grid) {
  const int rank = params.rank;
  if (rank < 1 || rank > 3) fail("params.rank must be 1, 2 or 3 (got " + std::to_string(rank) + ")");
  if (static_cast<int>(global_extent.size()) != rank)
    fail("global_extent=" + list_string(global_extent) + " must have params.rank=" + std::to_string(rank) +
         " entries");
  for (size_t i = 0; i < global_extent.size(); ++i)
    if (global_extent[i] < 1)
      fail("global_extent=" + list_string(global_extent) + " must be >= 1 on every axis");
  detail::validate_na_params(params, global_extent, kOp);
  if (static_cast<int>(grid.slabs.size()) > rank)
    fail("grid.slabs has " + std::to_string(grid.slabs.size()) + " entries but the problem has " +
         std::to_string(rank) + " spatial axes (allowed: at most one list of slab sizes per axis)");

  HaloPlan plan;
  plan.rank = rank;
  plan.params = params;
  plan.grid = grid;
  plan.grid.slabs.resize(static_cast<size_t>(rank));
  std::vector<std::vector<int64_t>> bounds(3);  // slab starts per axis, with the end appended
  for (size_t i = 0; i < 3; ++i) {
    const int64_t L = i < global_extent.size() ? global_extent[i] : 1;
    plan.global_extent[i] = L;
    std::vector<int64_t> sizes = i < grid.slabs.size() && !grid.slabs[i].empty() ? grid.slabs[i]
                                                                                 : std::vector<int64_t>{L};
    int64_t at = 0;
    bounds[i].push_back(0);
    for (int64_t s : sizes) {
      if (s < 1)
        fail("grid.slabs[" + std::to_string(i) + "]=" + list_string(sizes) + " is not valid (allowed: slab sizes >= 1)");
      at += s;
      bounds[i].push_back(at);
    }
    if (at != L)
      fail("grid.slabs[" + std::to_string(i) + "]=" + list_string(sizes) + " sums to " + std::to_string(at) +
           " but global_extent[" + std::to_string(i) + "]=" + std::to_string(L) + " (allowed: sizes summing to the extent)");
    plan.dims[i] = static_cast<int>(sizes.size());
    if (static_cast<int>(i) < rank) plan.grid.slabs[i] = sizes;
  }
  plan.num_ranks = plan.dims[0] * plan.dims[1] * plan.dims[2];

  for (int r = 0; r < plan.num_ranks; ++r) {
    RankPlan rp;
    rp.rank = r;
    rp.coord = {r / (plan.dims[1] * plan.dims[2]), (r / plan.dims[2]) % plan.dims[1], r % plan.dims[2]};
    Box interior;
    for (size_t i = 0; i < 3; ++i) {
      const size_t c = static_cast<size_t>(rp.coord[i]);
      rp.slab.lo[i] = bounds[i][c];
      rp.slab.hi[i] = bounds[i][c + 1];
      if (static_cast<int>(i) >= rank) {
        rp.halo.lo[i] = interior.lo[i] = 0;
        rp.halo.hi[i] = interior.hi[i] = 1;
        continue;
      }
      const int64_t L = plan.global_extent[i], k = params.kernel_size[i], s = params.stride[i],
                    d = params.dilation[i];
      const bool causal = params.is_causal[i];
      const sem::Range h = sem::halo_range(rp.slab.lo[i], rp.slab.hi[i], L, k, s, d, causal);
      rp.halo.lo[i] = h.start;
      rp.halo.hi[i] = h.end;
      const sem::Range in = interior_range(rp.slab.lo[i], rp.slab.hi[i], L, k, s, d, causal);
      interior.lo[i] = in.start;
      interior.hi[i] = in.end;
    }
    if (interior.empty(rank)) {
      interior.lo = rp.slab.lo;
      interior.hi = rp.slab.lo;
      for (size_t i = static_cast<size_t>(rank); i < 3; ++i) interior.hi[i] = 1;
    }
    rp.interior = interior;
    // slab minus interior: per axis, the part below and above the interior, the earlier axes
    // restricted to the interior, the later ones whole.
    if (rp.interior.empty(rank)) {
      rp.boundary.push_back(rp.slab);
    } else {
      for (size_t i = 0; i < static_cast<size_t>(rank); ++i) {
        Box below = rp.slab, above = rp.slab;
        for (size_t j = 0; j < i; ++j) {
          below.lo[j] = above.lo[j] = rp.interior.lo[j];
          below.hi[j] = above.hi[j] = rp.interior.hi[j];
        }
        below.hi[i] = rp.interior.lo[i];
        above.lo[i] = rp.interior.hi[i];
        if (!below.empty(rank)) rp.boundary.push_back(below);
        if (!above.empty(rank)) rp.boundary.push_back(above);
      }
    }
    plan.ranks.push_back(rp);
  }
  // Pieces, ordered by (dst, src): src's slab cut by dst's halo.
  for (int dst = 0; dst < plan.num_ranks; ++dst) {
    for (int src = 0; src < plan.num_ranks; ++src) {
      if (src == dst) continue;
      const Box b = intersect(plan.ranks[static_cast<size_t>(src)].slab, plan.ranks[static_cast<size_t>(dst)].halo, rank);
      if (b.empty(rank)) continue;
      const int index = static_cast<int>(plan.pieces.size());
      plan.pieces.push_back(HaloPiece{src, dst, b});
      plan.ranks[static_cast<size_t>(dst)].recv.push_back(index);
      plan.ranks[static_cast<size_t>(src)].send.push_back(index);
    }
  }
  return plan;
}

std::vector<int64_t> halo_shape(const HaloPlan& plan, int rank, const TensorView& local) {
  if (rank < 0 || rank >= plan.num_ranks)
    throw ValueError("halo_shape: rank=" + std::to_string(rank) + " is not valid (allowed: 0 to " +
                     std::to_string(plan.num_ranks - 1) + ")");
  const RankPlan& rp = plan.ranks[static_cast<size_t>(rank)];
  std::vector<int64_t> shape = local.shape;
  if (local.dim() < plan.rank + 2)
    throw ValueError("halo_shape: the local tensor " + local.describe() + " must be [B, *spatial (" +
                     std::to_string(plan.rank) + " axes), ...]");
  for (int i = 0; i < plan.rank; ++i) {
    if (local.size(1 + i) != rp.slab.size(i))
      throw ValueError("halo_shape: the local tensor " + local.describe() + " has " +
                       std::to_string(local.size(1 + i)) + " tokens on axis " + std::to_string(i) +
                       " but rank " + std::to_string(rank) + "'s slab has " + std::to_string(rp.slab.size(i)));
    shape[static_cast<size_t>(1 + i)] = rp.halo.size(i);
  }
  return shape;
}

#if !defined(NATTN_WITH_NCCL)
// Built without NCCL: the distributed ops exist but say why they cannot run.
namespace {
[[noreturn]] void no_nccl(const char* op) {
  throw RuntimeError(std::string(op) + ": nattn was built without NCCL (configure with -DNATTN_ENABLE_CUDA=ON "
                     "-DNATTN_ENABLE_NCCL=ON)");
}
}  // namespace

bool nccl_enabled() { return false; }
void na_forward_sharded(const NaForwardArgs&, const HaloPlan&, int, ncclComm*, CUstream_st*, const ShardedOptions&) {
  no_nccl("na_forward_sharded");
}
void na_backward_sharded(const NaBackwardArgs&, const HaloPlan&, int, ncclComm*, CUstream_st*,
                         const ShardedOptions&) {
  no_nccl("na_backward_sharded");
}
void gather_halo(const TensorView&, const TensorView&, const TensorView&, const TensorView&, const HaloPlan&, int,
                 ncclComm*, CUstream_st*) {
  no_nccl("gather_halo");
}
#endif

}  // namespace nattn::dist
