// Planning for the cpu backend: which queries are computed together, which keys each of them sees,
// and the runs the kernels execute. One description ("Geometry") serves neighborhood attention and
// standard attention (FMHA, varlen included), so a single set of kernels computes both.
//
// Work is split into units (one batch entry or varlen sequence, and one KV head), each with its own
// packed lines; a unit's tasks (one q_tile of queries, or of keys for dK/dV) are independent and run
// in parallel. A task lists its blocks (BlockSpec, up to 16 lanes each) and the segments of lines
// each block reads (SegSpec); build_runs() groups up to four blocks whose lanes index lines the same
// way and turns their segments into runs shared by the group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/na/isa.h"
#include "nattn/semantics.h"

namespace nattn::detail::cpu {

// Tokens of a line: position p has spatial coordinates `coord` with the last one increased by
// p * step (step = the dilation of the last axis; 1 for FMHA and additional keys).
struct LineOrigin {
  int64_t batch = 0;
  int64_t coord[3] = {0, 0, 0};
  int64_t step = 1;
};

// A tensor laid out [batch, spatial..., head, channel] (channel contiguous), or [batch, spatial...,
// head] for the LSE.
struct TensorDesc {
  const void* data = nullptr;
  void* mutable_data = nullptr;
  int32_t elem = elem_f32;
  int rank = 1;  // spatial axes
  int64_t batch_stride = 0;
  int64_t spatial_stride[3] = {0, 0, 0};
  int64_t head_stride = 0;

  // Element offset of the token at `pos0` on a line, for head `head`, and the step between tokens.
  int64_t offset(const LineOrigin& o, int64_t head, int64_t pos0) const;
  int64_t step(const LineOrigin& o) const { return o.step * spatial_stride[rank - 1]; }
  Rows rows(const LineOrigin& o, int64_t head, int64_t pos0) const;
  OutRows out_rows(const LineOrigin& o, int64_t head, int64_t pos0) const;
};

struct SegSpec {
  int32_t src = 0;   // 0: the main lines, 1: additional keys
  int64_t line = 0;  // line index in the unit's buffer of that source
  int64_t base = 0;  // position of key offset t = 0 for lane 0
  int32_t len = 0;   // key offsets t in [0, len)
};

struct BlockSpec {
  int64_t line = 0;       // the lanes' own line (query line, or key line in dK/dV)
  int64_t pos0 = 0;       // first lane's position on it
  int32_t n = 0;          // lanes
  int32_t head = 0;       // query head within the KV head's group (query-side blocks)
  bool additional = false;  // dK/dV block of additional keys
  Pattern pat[2] = {};
  int32_t seg_begin = 0;  // [seg_begin, seg_end) in the task's segment list
  int32_t seg_end = 0;
};

class Geometry {
 public:
  virtual ~Geometry() = default;

  int rank = 1;            // spatial rank of the token layout (1 for FMHA)
  int64_t units = 0;
  int64_t heads_kv = 1;
  int64_t group = 1;       // query heads per KV head
  int64_t q_lines = 0;     // lines per unit and query head
  int64_t k_lines = 0;     // key lines per unit
  int64_t ld_q = 16;       // row stride of packed query lines
  int64_t ld_k = 16;       // row stride of packed key lines
  int64_t additional = 0;  // additional keys (NA only)
  int64_t ld_add = 16;

  int64_t kv_head(int64_t unit) const { return unit % heads_kv; }
  virtual int64_t q_line_len(int64_t unit, int64_t line) const = 0;
  virtual int64_t k_line_len(int64_t unit, int64_t line) const = 0;
  virtual LineOrigin q_origin(int64_t unit, int64_t line) const = 0;
  virtual LineOrigin k_origin(int64_t unit, int64_t line) const = 0;
  virtual LineOrigin add_origin(int64_t unit) const;
  // Tasks per unit over queries (forward, dQ) and over keys (dK/dV, additional keys included).
  virtual int64_t q_tasks() const = 0;
  virtual int64_t k_tasks() const = 0;
  virtual void q_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
                      std::vector<SegSpec>& segs) const = 0;
  virtual void k_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
                      std::vector<SegSpec>& segs) const = 0;
  // The query rows of a query task, as (line, first position, count), without planning it: what
  // the task will read and write, for prefetching.
  struct RowRange {
    int64_t line;
    int64_t first;
    int64_t count;
  };
  virtual void q_task_rows(int64_t unit, int64_t task, std::vector<RowRange>& rows) const = 0;

 protected:
  // dK/dV blocks of additional keys [first, first + count): every query line of every head, all
  // lanes reading the same query (broadcast).
  void additional_k_task(int64_t unit, int64_t first, int64_t count, std::vector<BlockSpec>& blocks,
                         std::vector<SegSpec>& segs) const;
};

// Lane pattern from per-lane window starts and widths (n lanes, starts non-decreasing and within
// 32 of the first); lanes beyond n copy a valid lane.
Pattern make_pattern(const int64_t* start, const int64_t* width, int n);
Pattern broadcast_pattern(int64_t len);

// Split `count` consecutive lanes whose window starts are start(i) (non-decreasing) into blocks of
// at most 16 lanes whose starts lie within 32 of each other; calls emit(first, n).
template <class StartFn, class Emit>
void split_lanes(int64_t count, StartFn start, Emit emit) {
  int64_t i = 0;
  while (i < count) {
    const int64_t s0 = start(i);
    int64_t n = 1;
    while (n < kLanes && i + n < count && start(i + n) - s0 < 2 * kLanes) ++n;
    emit(i, n);
    i += n;
  }
}

struct NaShape {
  int64_t batch = 0;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t additional = 0;
  int rank = 1;
  sem::Axis axis[3];
};

class NaGeometry final : public Geometry {
 public:
  NaGeometry(const NaShape& shape, const std::vector<int64_t>& tile);
  int64_t q_line_len(int64_t unit, int64_t line) const override;
  int64_t k_line_len(int64_t unit, int64_t line) const override { return q_line_len(unit, line); }
  LineOrigin q_origin(int64_t unit, int64_t line) const override;
  LineOrigin k_origin(int64_t unit, int64_t line) const override { return q_origin(unit, line); }
  int64_t q_tasks() const override { return spatial_tasks_; }
  int64_t k_tasks() const override;
  void q_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
              std::vector<SegSpec>& segs) const override;
  void k_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
              std::vector<SegSpec>& segs) const override;
  void q_task_rows(int64_t unit, int64_t task, std::vector<RowRange>& rows) const override;

 private:
  struct AxisTile {
    int64_t group;
    int64_t first;  // in-group index
    int64_t len;
  };
  // Per-axis tiles of a task, and the line index of leading coordinates (original indices).
  void task_tiles(int64_t task, AxisTile* tiles) const;
  int64_t line_of(const int64_t* lead, int64_t group) const;

  NaShape shape_;
  int64_t lead_extent_ = 1;  // product of the leading extents
  std::vector<AxisTile> tiles_[3];
  int64_t spatial_tasks_ = 0;
  int64_t add_tile_ = 64;
};

struct FmhaShape {
  int64_t batch = 0;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t seqlen_q = 0;
  int64_t seqlen_kv = 0;
  bool causal = false;
  // varlen: cumulative offsets (nseq + 1 entries each); empty when not varlen
  std::vector<int64_t> cu_q, cu_kv;
};

class FmhaGeometry final : public Geometry {
 public:
  FmhaGeometry(const FmhaShape& shape, int64_t tile);
  int64_t q_line_len(int64_t unit, int64_t line) const override;
  int64_t k_line_len(int64_t unit, int64_t line) const override;
  LineOrigin q_origin(int64_t unit, int64_t line) const override;
  LineOrigin k_origin(int64_t unit, int64_t line) const override;
  int64_t q_tasks() const override { return q_tasks_; }
  int64_t k_tasks() const override { return k_tasks_; }
  void q_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
              std::vector<SegSpec>& segs) const override;
  void k_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
              std::vector<SegSpec>& segs) const override;
  void q_task_rows(int64_t unit, int64_t task, std::vector<RowRange>& rows) const override;

 private:
  int64_t seq_of(int64_t unit) const { return unit / heads_kv; }
  FmhaShape shape_;
  int64_t tile_ = 64;
  int64_t q_tasks_ = 0, k_tasks_ = 0;
};

// Where the runs of a group read: line `line` of source s is at a[s] + line * a_stride[s] (and the
// same for b and stats).
struct LineBases {
  const float* a[2] = {nullptr, nullptr};
  const float* b[2] = {nullptr, nullptr};
  const float* stats[2] = {nullptr, nullptr};
  int64_t a_stride[2] = {0, 0};
  int64_t b_stride[2] = {0, 0};
  int64_t stats_stride[2] = {0, 0};
};

// Partition a task's blocks into groups of up to kMaxGroup consecutive blocks whose lanes index
// lines identically; calls emit(first, count) per group.
template <class Emit>
void group_blocks(const std::vector<BlockSpec>& blocks, Emit emit) {
  auto same_indexing = [](const BlockSpec& x, const BlockSpec& y) {
    for (int s = 0; s < 2; ++s) {
      if (x.pat[s].mode != y.pat[s].mode) return false;
      for (int i = 0; i < kLanes; ++i) {
        if (x.pat[s].delta[i] != y.pat[s].delta[i]) return false;
      }
    }
    return true;
  };
  std::size_t i = 0;
  while (i < blocks.size()) {
    std::size_t n = 1;
    while (n < static_cast<std::size_t>(kMaxGroup) && i + n < blocks.size() &&
           same_indexing(blocks[i], blocks[i + n])) {
      ++n;
    }
    emit(i, n);
    i += n;
  }
}

// The runs of blocks [first, first + count): positions of every line any of them reads, each run
// shared by the blocks active on it, chunked so that no block holds more than kChunk scores.
void build_runs(const std::vector<BlockSpec>& blocks, std::size_t first, std::size_t count,
                const std::vector<SegSpec>& segs, const LineBases& bases, std::vector<Run>& runs);

}  // namespace nattn::detail::cpu
