// Multi-GPU neighborhood attention (issue 6): context parallelism with a key/value halo exchange.
//
// The token grid is split into slabs by a Cartesian process grid (one or more spatial axes split).
// A rank owns the queries, keys and values of its slab; its queries attend the keys of its HALO
// box (per axis sem::halo_range of the slab, in global coordinates), which may intersect the
// slabs of several other ranks (neighbours, diagonal neighbours, or ranks further away when the
// window is wider than a slab). Windows are those of the whole grid (NaArgs::sub_domain), so the
// sharded results equal the single-device ones.
//
// make_halo_plan (host-only, no NCCL, no CUDA) describes who sends what to whom. The NCCL functions
// run one rank: one call per rank, each from its own host thread or process, with the rank's
// communicator and stream (never inside an ncclGroupStart/End of the caller: the exchange and the
// kernels after it must be enqueued in order). The header needs neither nccl.h nor cuda_runtime.h:
// pass an ncclComm_t and a cudaStream_t (pointers to the types declared below).
// See src/dist/README.md for the algorithm, the invariants and the limits.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nattn/ops.h"
#include "nattn/problem.h"
#include "nattn/tensor.h"

struct ncclComm;     // ncclComm_t is ncclComm*
struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace nattn::dist {

// A box of global token coordinates, half-open per axis. Axes at or beyond the NA rank hold [0, 1).
struct Box {
  std::array<int64_t, 3> lo{0, 0, 0};
  std::array<int64_t, 3> hi{1, 1, 1};

  int64_t size(int axis) const { return hi[static_cast<size_t>(axis)] - lo[static_cast<size_t>(axis)]; }
  bool empty(int rank) const;
  int64_t volume(int rank) const;                  // 0 when empty
  bool contains(const Box& inner, int rank) const; // an empty `inner` is contained in anything
  bool operator==(const Box& o) const { return lo == o.lo && hi == o.hi; }
  std::string describe(int rank) const;            // "[4, 8) x [0, 16)"
};

Box intersect(const Box& a, const Box& b, int rank);  // may be empty

// A Cartesian process grid: slabs[i] holds the slab sizes along spatial axis i, one per grid
// position (an empty list or a single entry = the axis is not split). Every size is >= 1 and the
// sizes of an axis sum to its extent. Rank r has grid coordinate c, row-major (the last axis
// fastest): r = (c0 * n1 + c1) * n2 + c2.
struct ProcessGrid {
  std::vector<std::vector<int64_t>> slabs;

  // `ranks[i]` slabs along axis i, as even as possible (the first ones one token larger).
  static ProcessGrid even(const std::vector<int64_t>& global_extent, const std::vector<int>& ranks);
  std::string describe() const;  // "slabs=([16, 16], -)"
};

// The global box of src's keys/values that dst needs (src != dst; src's slab cut by dst's halo).
struct HaloPiece {
  int src = 0;
  int dst = 0;
  Box box;
};

struct RankPlan {
  int rank = 0;
  std::array<int, 3> coord{0, 0, 0};  // grid coordinate
  Box slab;                           // the rank's queries = its own keys/values
  Box halo;                           // every key its queries attend (per-axis sem::halo_range)
  Box interior;                       // queries whose halo lies inside the slab (may be empty)
  std::vector<Box> boundary;          // disjoint boxes covering slab minus interior
  std::vector<int> recv;              // indices into HaloPlan::pieces with dst == rank (plan order)
  std::vector<int> send;              // indices into HaloPlan::pieces with src == rank (plan order)
};

struct HaloPlan {
  int rank = 1;                             // NA rank: the number of spatial axes
  std::array<int64_t, 3> global_extent{1, 1, 1};
  NaParams params;
  ProcessGrid grid;
  std::array<int, 3> dims{1, 1, 1};         // ranks along each axis
  int num_ranks = 1;
  std::vector<RankPlan> ranks;              // indexed by rank
  std::vector<HaloPiece> pieces;            // ordered by (dst, src): the order of every exchange

  SubDomain sub_domain(int r, const Box& queries, const Box& keys) const;
  std::string describe() const;  // one line per rank: slab, halo, interior, pieces
};

// Throws ValueError naming the argument, its value and what is allowed (extent / params / grid
// mismatch, a slab < 1, an axis split beyond the NA rank, an invalid window).
HaloPlan make_halo_plan(const std::vector<int64_t>& global_extent, const NaParams& params,
                        const ProcessGrid& grid);

// [B, *halo extent, H, D] for a rank's local tensor [B, *slab extent, H, D].
std::vector<int64_t> halo_shape(const HaloPlan& plan, int rank, const TensorView& local);

// ---- NCCL (built with NATTN_ENABLE_NCCL; otherwise these throw RuntimeError) ---------------------

// True when the library was built with NCCL.
bool nccl_enabled();

// How a rank overlaps the halo exchange (and, in the backward, the return of halo gradients) with
// its compute; the transfers run on a second, high-priority stream (src/dist/README.md).
enum class Overlap : int {
  none = 0,       // wait for the halos, then the slab in one call; gradients returned at the end
  automatic = 1,  // heads with >= 2 key/value heads, else interior
  heads = 2,      // the exchange in up to 4 chunks of key/value heads; each chunk's queries run over the
                  // whole slab once its halo is in, the backward returns each chunk's halo gradients
                  // while the next chunk computes (ValueError with a single key/value head)
  interior = 3,   // the interior queries on the local K/V during the exchange, then the boundary boxes
};

struct ShardedOptions {
  RunOptions run;             // backend ("" = automatic: hopper-fna forwards on SM90 where its direct
                              // mode applies, else cutlass-fna), config, deterministic; run.stream is
                              // ignored (the `stream` argument is used)
  Overlap overlap = Overlap::automatic;
  CUstream_st* comm_stream = nullptr;  // the exchange stream (same device); nullptr: created per call
  // Caller-owned K/V over the rank's halo box (shape halo_shape(plan, rank, key/value)).
  // Forward: the exchange writes into them (keep them for the backward).
  // Backward: taken as already gathered; no K/V exchange is done. Give them on every rank or none.
  std::optional<TensorView> key_halo, value_halo;
};

// Forward of one rank. args: the rank's slabs (query/key/value/out/lse [B, *slab, ...]); args.sub_domain
// must be unset (set from the plan). Outputs equal the rows of the single-device result.
void na_forward_sharded(const NaForwardArgs& args, const HaloPlan& plan, int rank, ncclComm* comm,
                        CUstream_st* stream, const ShardedOptions& options = {});

// Backward of one rank: dquery of its queries, dkey/dvalue of its own keys summed over every
// rank's queries (halo gradients are sent to their owners and summed there in fp32, rounded once
// to the tensor dtype). dadditional_* are this rank's contribution (all-reduce them).
void na_backward_sharded(const NaBackwardArgs& args, const HaloPlan& plan, int rank, ncclComm* comm,
                         CUstream_st* stream, const ShardedOptions& options = {});

// The halo exchange alone: key/value [B, *slab, Hkv, D*] -> key_halo/value_halo over the halo box
// (own part copied, the rest received), enqueued on `stream`.
void gather_halo(const TensorView& key, const TensorView& value, const TensorView& key_halo,
                 const TensorView& value_halo, const HaloPlan& plan, int rank, ncclComm* comm,
                 CUstream_st* stream);

}  // namespace nattn::dist
