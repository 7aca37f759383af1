// Planning for the cpu backend (plan.h): lane patterns, the NA and FMHA geometries, and runs.
#include "cpu/na/plan.h"

#include <algorithm>

namespace nattn::detail::cpu {

namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Odometer over a box of per-axis counts (row-major, last axis fastest); count 0 anywhere = empty.
template <class Fn>
void for_each_in_box(int naxes, const int64_t* count, Fn fn) {
  int64_t idx[3] = {0, 0, 0};
  for (int a = 0; a < naxes; ++a) {
    if (count[a] <= 0) return;
  }
  while (true) {
    fn(idx);
    int a = naxes - 1;
    while (a >= 0) {
      if (++idx[a] < count[a]) break;
      idx[a] = 0;
      --a;
    }
    if (a < 0) return;
  }
}

}  // namespace

int64_t TensorDesc::offset(const LineOrigin& o, int64_t head, int64_t pos0) const {
  int64_t off = o.batch * batch_stride + head * head_stride;
  for (int a = 0; a < rank; ++a) off += o.coord[a] * spatial_stride[a];
  return off + pos0 * step(o);
}

Rows TensorDesc::rows(const LineOrigin& o, int64_t head, int64_t pos0) const {
  Rows r{};
  r.data = data;
  r.elem = elem;
  r.off0 = offset(o, head, pos0);
  r.step = step(o);
  return r;
}

OutRows TensorDesc::out_rows(const LineOrigin& o, int64_t head, int64_t pos0) const {
  OutRows r{};
  r.data = mutable_data;
  r.elem = elem;
  r.off0 = offset(o, head, pos0);
  r.step = step(o);
  return r;
}

Pattern make_pattern(const int64_t* start, const int64_t* width, int n) {
  Pattern p{};
  bool diag = true;
  bool bcast = true;
  int32_t len = 0;
  bool uniform = true;
  for (int i = 0; i < n; ++i) {
    const int64_t d = start[i] - start[0];
    p.delta[i] = static_cast<int32_t>(d);
    p.width[i] = static_cast<int32_t>(width[i]);
    diag = diag && d == i;
    bcast = bcast && d == 0;
    len = std::max(len, p.width[i]);
    uniform = uniform && width[i] == width[0];
  }
  p.mode = bcast ? mode_bcast : diag ? mode_diag : p.delta[n - 1] < kLanes ? mode_perm : mode_perm2;
  for (int i = n; i < kLanes; ++i) {
    p.delta[i] = p.mode == mode_diag ? i : p.delta[n - 1];
    p.width[i] = p.width[n - 1];
  }
  p.len = len;
  p.uniform = uniform ? 1 : 0;
  return p;
}

Pattern broadcast_pattern(int64_t len) {
  Pattern p{};
  p.mode = mode_bcast;
  p.uniform = 1;
  p.len = static_cast<int32_t>(len);
  for (int i = 0; i < kLanes; ++i) p.width[i] = p.len;
  return p;
}

LineOrigin Geometry::add_origin(int64_t unit) const {
  LineOrigin o;
  o.batch = unit / heads_kv;
  return o;
}

void Geometry::additional_k_task(int64_t unit, int64_t first, int64_t count,
                                 std::vector<BlockSpec>& blocks, std::vector<SegSpec>& segs) const {
  const int32_t seg_begin = static_cast<int32_t>(segs.size());
  for (int64_t j = 0; j < group; ++j) {
    for (int64_t line = 0; line < q_lines; ++line) {
      const int64_t len = q_line_len(unit, line);
      if (len > 0) segs.push_back(SegSpec{0, j * q_lines + line, 0, static_cast<int32_t>(len)});
    }
  }
  const int32_t seg_end = static_cast<int32_t>(segs.size());
  for (int64_t i = 0; i < count; i += kLanes) {
    BlockSpec b;
    b.line = 0;
    b.pos0 = first + i;
    b.n = static_cast<int32_t>(std::min<int64_t>(kLanes, count - i));
    b.additional = true;
    b.pat[0] = broadcast_pattern(0);
    b.pat[1] = broadcast_pattern(0);
    b.seg_begin = seg_begin;
    b.seg_end = seg_end;
    blocks.push_back(b);
  }
}

// ---- neighborhood attention ----------------------------------------------------------------------

NaGeometry::NaGeometry(const NaShape& shape, const std::vector<int64_t>& tile) : shape_(shape) {
  rank = shape.rank;
  heads_kv = shape.heads_kv;
  group = shape.heads / shape.heads_kv;
  units = shape.batch * shape.heads_kv;
  additional = shape.additional;
  const sem::Axis& last = shape.axis[rank - 1];
  for (int a = 0; a + 1 < rank; ++a) lead_extent_ *= shape.axis[a].extent;
  q_lines = k_lines = lead_extent_ * last.dilation;
  ld_add = round_up(additional + kLanes - 1, 8);
  spatial_tasks_ = 1;
  for (int a = 0; a < rank; ++a) {
    const sem::Axis& ax = shape.axis[a];
    for (int64_t g = 0; g < ax.dilation; ++g) {
      const int64_t lg = sem::group_extent(ax.extent, ax.dilation, g);
      for (int64_t j = 0; j < lg; j += tile[a]) tiles_[a].push_back(AxisTile{g, j, std::min(tile[a], lg - j)});
    }
    spatial_tasks_ *= static_cast<int64_t>(tiles_[a].size());
  }
  // Lines are read up to 15 positions past a block's last key, or 31 when a block's lanes need the
  // two-register permutation (window starts 16 or more apart): pad with that many zeros (rows a
  // multiple of 8 floats; packing stores whole tiles of 16, which this also covers).
  bool wide = false;
  for (const AxisTile& t : tiles_[rank - 1]) {
    const int64_t lg = sem::group_extent(last.extent, last.dilation, t.group);
    auto fwd = [&](int64_t i) { return sem::window(t.first + i, lg, last).start; };
    auto inv = [&](int64_t i) { return sem::inverse_window(t.first + i, lg, last).start; };
    split_lanes(t.len, fwd, [&](int64_t i0, int64_t n) { wide = wide || fwd(i0 + n - 1) - fwd(i0) >= kLanes; });
    split_lanes(t.len, inv, [&](int64_t i0, int64_t n) { wide = wide || inv(i0 + n - 1) - inv(i0) >= kLanes; });
  }
  // group 0 is the longest
  ld_q = ld_k = round_up(sem::group_extent(last.extent, last.dilation, 0) + (wide ? 2 : 1) * kLanes - 1, 8);
}

int64_t NaGeometry::q_line_len(int64_t, int64_t line) const {
  const sem::Axis& last = shape_.axis[rank - 1];
  return sem::group_extent(last.extent, last.dilation, line % last.dilation);
}

LineOrigin NaGeometry::q_origin(int64_t unit, int64_t line) const {
  const sem::Axis& last = shape_.axis[rank - 1];
  LineOrigin o;
  o.batch = unit / heads_kv;
  o.coord[rank - 1] = line % last.dilation;
  int64_t lead = line / last.dilation;
  for (int a = rank - 2; a >= 0; --a) {
    o.coord[a] = lead % shape_.axis[a].extent;
    lead /= shape_.axis[a].extent;
  }
  o.step = last.dilation;
  return o;
}

int64_t NaGeometry::k_tasks() const {
  return spatial_tasks_ + (additional + add_tile_ - 1) / add_tile_;
}

void NaGeometry::task_tiles(int64_t task, AxisTile* tiles) const {
  for (int a = rank - 1; a >= 0; --a) {
    const int64_t n = static_cast<int64_t>(tiles_[a].size());
    tiles[a] = tiles_[a][static_cast<size_t>(task % n)];
    task /= n;
  }
}

int64_t NaGeometry::line_of(const int64_t* lead, int64_t group_index) const {
  int64_t lin = 0;
  for (int a = 0; a + 1 < rank; ++a) lin = lin * shape_.axis[a].extent + lead[a];
  return lin * shape_.axis[rank - 1].dilation + group_index;
}

void NaGeometry::q_task(int64_t, int64_t task, std::vector<BlockSpec>& blocks,
                        std::vector<SegSpec>& segs) const {
  AxisTile t[3];
  task_tiles(task, t);
  const int nlead = rank - 1;
  const sem::Axis& la = shape_.axis[nlead];
  const AxisTile& lt = t[nlead];
  const int64_t lg = sem::group_extent(la.extent, la.dilation, lt.group);
  const Pattern add = broadcast_pattern(additional);
  int64_t lead_count[3] = {0, 0, 0};
  for (int a = 0; a < nlead; ++a) lead_count[a] = t[a].len;
  auto start = [&](int64_t i) { return sem::window(lt.first + i, lg, la).start; };
  split_lanes(lt.len, start, [&](int64_t i0, int64_t n) {
    int64_t st[kLanes], wd[kLanes];
    for (int64_t k = 0; k < n; ++k) {
      const sem::Range w = sem::window(lt.first + i0 + k, lg, la);
      st[k] = w.start;
      wd[k] = w.size();
    }
    const Pattern pat = make_pattern(st, wd, static_cast<int>(n));
    for_each_in_box(nlead, lead_count, [&](const int64_t* idx) {
      int64_t x[3] = {0, 0, 0};
      sem::Strided win[3];
      int64_t win_count[3] = {0, 0, 0};
      for (int a = 0; a < nlead; ++a) {
        x[a] = t[a].group + shape_.axis[a].dilation * (t[a].first + idx[a]);
        win[a] = sem::window_of(x[a], shape_.axis[a]);
        win_count[a] = win[a].count;
      }
      const int32_t seg_begin = static_cast<int32_t>(segs.size());
      for_each_in_box(nlead, win_count, [&](const int64_t* k) {
        int64_t y[3] = {0, 0, 0};
        for (int a = 0; a < nlead; ++a) y[a] = win[a].first + win[a].step * k[a];
        segs.push_back(SegSpec{0, line_of(y, lt.group), st[0], pat.len});
      });
      if (additional > 0) segs.push_back(SegSpec{1, 0, 0, static_cast<int32_t>(additional)});
      const int32_t seg_end = static_cast<int32_t>(segs.size());
      for (int64_t j = 0; j < group; ++j) {
        BlockSpec b;
        b.line = line_of(x, lt.group);
        b.pos0 = lt.first + i0;
        b.n = static_cast<int32_t>(n);
        b.head = static_cast<int32_t>(j);
        b.pat[0] = pat;
        b.pat[1] = add;
        b.seg_begin = seg_begin;
        b.seg_end = seg_end;
        blocks.push_back(b);
      }
    });
  });
}

void NaGeometry::q_task_rows(int64_t, int64_t task, std::vector<RowRange>& rows) const {
  AxisTile t[3];
  task_tiles(task, t);
  const int nlead = rank - 1;
  int64_t lead_count[3] = {0, 0, 0};
  for (int a = 0; a < nlead; ++a) lead_count[a] = t[a].len;
  for_each_in_box(nlead, lead_count, [&](const int64_t* idx) {
    int64_t x[3] = {0, 0, 0};
    for (int a = 0; a < nlead; ++a) x[a] = t[a].group + shape_.axis[a].dilation * (t[a].first + idx[a]);
    rows.push_back(RowRange{line_of(x, t[nlead].group), t[nlead].first, t[nlead].len});
  });
}

void NaGeometry::k_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
                        std::vector<SegSpec>& segs) const {
  if (task >= spatial_tasks_) {
    const int64_t first = (task - spatial_tasks_) * add_tile_;
    additional_k_task(unit, first, std::min(add_tile_, additional - first), blocks, segs);
    return;
  }
  AxisTile t[3];
  task_tiles(task, t);
  const int nlead = rank - 1;
  const sem::Axis& la = shape_.axis[nlead];
  const AxisTile& lt = t[nlead];
  const int64_t lg = sem::group_extent(la.extent, la.dilation, lt.group);
  int64_t lead_count[3] = {0, 0, 0};
  for (int a = 0; a < nlead; ++a) lead_count[a] = t[a].len;
  auto start = [&](int64_t i) { return sem::inverse_window(lt.first + i, lg, la).start; };
  split_lanes(lt.len, start, [&](int64_t i0, int64_t n) {
    int64_t st[kLanes], wd[kLanes];
    for (int64_t k = 0; k < n; ++k) {
      const sem::Range r = sem::inverse_window(lt.first + i0 + k, lg, la);
      st[k] = r.start;
      wd[k] = r.size();
    }
    const Pattern pat = make_pattern(st, wd, static_cast<int>(n));
    for_each_in_box(nlead, lead_count, [&](const int64_t* idx) {
      int64_t y[3] = {0, 0, 0};
      sem::Strided inv[3];
      int64_t inv_count[3] = {0, 0, 0};
      for (int a = 0; a < nlead; ++a) {
        y[a] = t[a].group + shape_.axis[a].dilation * (t[a].first + idx[a]);
        inv[a] = sem::inverse_of(y[a], shape_.axis[a]);
        inv_count[a] = inv[a].count;
      }
      const int32_t seg_begin = static_cast<int32_t>(segs.size());
      if (pat.len > 0) {
        for (int64_t j = 0; j < group; ++j) {
          for_each_in_box(nlead, inv_count, [&](const int64_t* k) {
            int64_t x[3] = {0, 0, 0};
            for (int a = 0; a < nlead; ++a) x[a] = inv[a].first + inv[a].step * k[a];
            segs.push_back(SegSpec{0, j * q_lines + line_of(x, lt.group), st[0], pat.len});
          });
        }
      }
      BlockSpec b;
      b.line = line_of(y, lt.group);
      b.pos0 = lt.first + i0;
      b.n = static_cast<int32_t>(n);
      b.pat[0] = pat;
      b.pat[1] = broadcast_pattern(0);
      b.seg_begin = seg_begin;
      b.seg_end = static_cast<int32_t>(segs.size());
      blocks.push_back(b);
    });
  });
}

// ---- standard attention --------------------------------------------------------------------------

FmhaGeometry::FmhaGeometry(const FmhaShape& shape, int64_t tile) : shape_(shape), tile_(tile) {
  rank = 1;
  heads_kv = shape.heads_kv;
  group = shape.heads / shape.heads_kv;
  const bool varlen = !shape.cu_q.empty();
  const int64_t nseq = varlen ? static_cast<int64_t>(shape.cu_q.size()) - 1 : shape.batch;
  units = nseq * heads_kv;
  q_lines = k_lines = 1;
  int64_t max_q = varlen ? 0 : shape.seqlen_q;
  int64_t max_k = varlen ? 0 : shape.seqlen_kv;
  for (int64_t s = 0; varlen && s < nseq; ++s) {
    max_q = std::max(max_q, shape.cu_q[static_cast<size_t>(s + 1)] - shape.cu_q[static_cast<size_t>(s)]);
    max_k = std::max(max_k, shape.cu_kv[static_cast<size_t>(s + 1)] - shape.cu_kv[static_cast<size_t>(s)]);
  }
  // blocks read at most 15 positions past their last key (lane starts are at most 15 apart)
  ld_q = round_up(max_q + kLanes - 1, 8);
  ld_k = round_up(max_k + kLanes - 1, 8);
  q_tasks_ = (max_q + tile_ - 1) / tile_;
  k_tasks_ = (max_k + tile_ - 1) / tile_;
}

int64_t FmhaGeometry::q_line_len(int64_t unit, int64_t) const {
  if (shape_.cu_q.empty()) return shape_.seqlen_q;
  const size_t s = static_cast<size_t>(seq_of(unit));
  return shape_.cu_q[s + 1] - shape_.cu_q[s];
}

int64_t FmhaGeometry::k_line_len(int64_t unit, int64_t) const {
  if (shape_.cu_kv.empty()) return shape_.seqlen_kv;
  const size_t s = static_cast<size_t>(seq_of(unit));
  return shape_.cu_kv[s + 1] - shape_.cu_kv[s];
}

LineOrigin FmhaGeometry::q_origin(int64_t unit, int64_t) const {
  LineOrigin o;
  if (shape_.cu_q.empty()) o.batch = seq_of(unit);
  else o.coord[0] = shape_.cu_q[static_cast<size_t>(seq_of(unit))];
  return o;
}

LineOrigin FmhaGeometry::k_origin(int64_t unit, int64_t) const {
  LineOrigin o;
  if (shape_.cu_kv.empty()) o.batch = seq_of(unit);
  else o.coord[0] = shape_.cu_kv[static_cast<size_t>(seq_of(unit))];
  return o;
}

void FmhaGeometry::q_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
                          std::vector<SegSpec>& segs) const {
  const int64_t sq = q_line_len(unit, 0), skv = k_line_len(unit, 0);
  const int64_t first = task * tile_;
  if (first >= sq) return;
  const int64_t count = std::min(tile_, sq - first);
  for (int64_t i0 = 0; i0 < count; i0 += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, count - i0));
    int64_t st[kLanes], wd[kLanes];
    for (int k = 0; k < n; ++k) {
      st[k] = 0;
      // top-left causal: query i sees keys j <= i (all keys once i >= skv)
      wd[k] = shape_.causal ? std::min(first + i0 + k + 1, skv) : skv;
    }
    const Pattern pat = make_pattern(st, wd, n);
    const int32_t seg_begin = static_cast<int32_t>(segs.size());
    if (pat.len > 0) segs.push_back(SegSpec{0, 0, 0, pat.len});
    for (int64_t j = 0; j < group; ++j) {
      BlockSpec b;
      b.line = 0;
      b.pos0 = first + i0;
      b.n = n;
      b.head = static_cast<int32_t>(j);
      b.pat[0] = pat;
      b.pat[1] = broadcast_pattern(0);
      b.seg_begin = seg_begin;
      b.seg_end = static_cast<int32_t>(segs.size());
      blocks.push_back(b);
    }
  }
}

void FmhaGeometry::q_task_rows(int64_t unit, int64_t task, std::vector<RowRange>& rows) const {
  const int64_t first = task * tile_;
  const int64_t sq = q_line_len(unit, 0);
  if (first < sq) rows.push_back(RowRange{0, first, std::min(tile_, sq - first)});
}

void FmhaGeometry::k_task(int64_t unit, int64_t task, std::vector<BlockSpec>& blocks,
                          std::vector<SegSpec>& segs) const {
  const int64_t sq = q_line_len(unit, 0), skv = k_line_len(unit, 0);
  const int64_t first = task * tile_;
  if (first >= skv) return;
  const int64_t count = std::min(tile_, skv - first);
  for (int64_t i0 = 0; i0 < count; i0 += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, count - i0));
    int64_t st[kLanes], wd[kLanes];
    for (int k = 0; k < n; ++k) {
      const int64_t key = first + i0 + k;
      // the queries that see key j: i >= j when causal, else all
      st[k] = shape_.causal ? std::min(key, sq) : 0;
      wd[k] = shape_.causal ? std::max<int64_t>(sq - key, 0) : sq;
    }
    const Pattern pat = make_pattern(st, wd, n);
    const int32_t seg_begin = static_cast<int32_t>(segs.size());
    if (pat.len > 0) {
      for (int64_t j = 0; j < group; ++j) segs.push_back(SegSpec{0, j, st[0], pat.len});
    }
    BlockSpec b;
    b.line = 0;
    b.pos0 = first + i0;
    b.n = n;
    b.pat[0] = pat;
    b.pat[1] = broadcast_pattern(0);
    b.seg_begin = seg_begin;
    b.seg_end = static_cast<int32_t>(segs.size());
    blocks.push_back(b);
  }
}

// ---- runs ------------------------------------------------------------------------------------------

void build_runs(const std::vector<BlockSpec>& blocks, std::size_t first, std::size_t count,
                const std::vector<SegSpec>& segs, const LineBases& bases, std::vector<Run>& runs) {
  struct Item {
    int32_t src;
    int64_t line;
    int64_t base;
    int32_t len;
    int32_t blk;
  };
  // One line's positions [p, p + len) and the blocks that read them.
  struct Piece {
    int32_t src;
    int64_t line;
    int64_t p;
    int32_t len;
    int32_t nact;
    int32_t blk[kMaxGroup];
    int32_t t0[kMaxGroup];
  };
  std::vector<Item> items;
  for (std::size_t k = 0; k < count; ++k) {
    const BlockSpec& b = blocks[first + k];
    for (int32_t s = b.seg_begin; s < b.seg_end; ++s) {
      const SegSpec& seg = segs[static_cast<std::size_t>(s)];
      if (seg.len > 0) items.push_back(Item{seg.src, seg.line, seg.base, seg.len, static_cast<int32_t>(k)});
    }
  }
  std::sort(items.begin(), items.end(), [](const Item& x, const Item& y) {
    if (x.src != y.src) return x.src < y.src;
    if (x.line != y.line) return x.line < y.line;
    if (x.base != y.base) return x.base < y.base;
    return x.blk < y.blk;
  });
  // Per line, cut the positions where the set of reading blocks changes.
  std::vector<Piece> pieces;
  std::vector<int64_t> cuts;
  for (std::size_t i = 0; i < items.size();) {
    std::size_t j = i;
    while (j < items.size() && items[j].src == items[i].src && items[j].line == items[i].line) ++j;
    cuts.clear();
    for (std::size_t k = i; k < j; ++k) {
      cuts.push_back(items[k].base);
      cuts.push_back(items[k].base + items[k].len);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      Piece pc{};
      pc.src = items[i].src;
      pc.line = items[i].line;
      const int64_t lo = cuts[c], hi = cuts[c + 1];
      for (std::size_t k = i; k < j && pc.nact < kMaxGroup; ++k) {
        if (items[k].base <= lo && hi <= items[k].base + items[k].len) {
          pc.blk[pc.nact] = items[k].blk;
          pc.t0[pc.nact] = static_cast<int32_t>(lo - items[k].base);
          ++pc.nact;
        }
      }
      if (pc.nact == 0) continue;
      for (int64_t p = lo; p < hi; p += kRunMax) {
        pc.p = p;
        pc.len = static_cast<int32_t>(std::min<int64_t>(kRunMax, hi - p));
        pieces.push_back(pc);
        for (int m = 0; m < pc.nact; ++m) pc.t0[m] += pc.len;
      }
    }
    i = j;
  }
  // Pieces that differ only in their line, lines a fixed distance apart, become one run: the
  // kernels then keep their accumulators in registers across all of them.
  auto same_but_line = [](const Piece& x, const Piece& y) {
    if (x.src != y.src || x.p != y.p || x.len != y.len || x.nact != y.nact) return false;
    for (int m = 0; m < x.nact; ++m) {
      if (x.blk[m] != y.blk[m] || x.t0[m] != y.t0[m]) return false;
    }
    return true;
  };
  std::stable_sort(pieces.begin(), pieces.end(), [](const Piece& x, const Piece& y) {
    if (x.src != y.src) return x.src < y.src;
    if (x.nact != y.nact) return x.nact < y.nact;
    for (int m = 0; m < x.nact; ++m) {
      if (x.blk[m] != y.blk[m]) return x.blk[m] < y.blk[m];
    }
    if (x.p != y.p) return x.p < y.p;
    if (x.len != y.len) return x.len < y.len;
    return x.line < y.line;
  });
  const std::size_t group_first_run = runs.size();
  int32_t used[kMaxGroup] = {0, 0, 0, 0};
  for (std::size_t i = 0; i < pieces.size();) {
    const Piece& pc = pieces[i];
    std::size_t j = i + 1;
    int64_t step = 0;
    while (j < pieces.size() && same_but_line(pc, pieces[j]) && static_cast<int64_t>(j - i + 1) * pc.len <= kChunk) {
      const int64_t d = pieces[j].line - pieces[j - 1].line;
      if (j == i + 1) step = d;
      if (d != step || d <= 0) break;
      ++j;
    }
    const int32_t lines = static_cast<int32_t>(j - i);
    const int32_t entries = lines * pc.len;
    bool full = false;
    for (int m = 0; m < pc.nact; ++m) full = full || used[pc.blk[m]] + entries > kChunk;
    if (full) {
      runs.back().end_chunk = 1;  // a full block implies an earlier run of this group
      for (int32_t& u : used) u = 0;
    }
    const int32_t src = pc.src;
    Run r{};
    if (bases.a[src] != nullptr) r.a = bases.a[src] + pc.line * bases.a_stride[src] + pc.p;
    if (bases.b[src] != nullptr) r.b = bases.b[src] + pc.line * bases.b_stride[src] + pc.p;
    if (bases.stats[src] != nullptr) r.stats = bases.stats[src] + pc.line * bases.stats_stride[src] + pc.p;
    r.a_step = step * bases.a_stride[src];
    r.b_step = step * bases.b_stride[src];
    r.stats_step = step * bases.stats_stride[src];
    r.src = src;
    r.len = pc.len;
    r.lines = lines;
    r.nact = pc.nact;
    for (int m = 0; m < pc.nact; ++m) {
      r.blk[m] = pc.blk[m];
      r.s_off[m] = used[pc.blk[m]];
      r.t0[m] = pc.t0[m];
      used[pc.blk[m]] += entries;
    }
    runs.push_back(r);
    i = j;
  }
  if (runs.size() > group_first_run) runs.back().end_chunk = 1;
}

}  // namespace nattn::detail::cpu
