// Execution of planned problems (driver.h).
//
// There is no separate packing phase: a task packs the line segments it reads the first time any
// task needs them (one atomic flag per segment), so packing, which waits on memory, overlaps with
// the compute of other tasks, threads never wait at a barrier inside a call, and the lines a task
// packs are still in its core's cache when its kernels read them. Packed lines live in a small
// ring of unit slots (Workspace).
#include "cpu/na/driver.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "nattn/errors.h"

namespace nattn::detail::cpu {

namespace {

constexpr float kLog2e = 1.442695040888963407f;
// Packed lines of this many floats at most are held at once (units are processed in batches).
constexpr int64_t kWorkspaceBudget = int64_t{64} << 20;
// Buffers up to this many floats are kept for the next call (fresh pages cost a fault each).
constexpr size_t kKeepFloats = size_t{16} << 20;
// Lines are packed in segments of this many positions (a multiple of 16), each on first use, so
// that tasks reading different parts of a long line pack them in parallel.
constexpr int64_t kSegment = 64;

// The AVX-512 and AVX2 kernels exist when the build compiled them (sources.cmake: x86-64 with GCC or
// Clang); NATTN_CPU_X86_KERNELS is defined there.
#if defined(NATTN_CPU_X86_KERNELS)
// (F16C, which the fp16 conversions use, comes with every CPU that has AVX2, and Clang's builtin
// does not know it.)
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

// The first error raised inside a parallel region; iterations after it are skipped.
class ErrorSlot {
 public:
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void set(const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_) message_ = what;
    failed_ = true;
  }
  void rethrow() const {
    if (failed_) throw RuntimeError("cpu backend: " + message_);
  }
  template <class Fn>
  void guard(Fn fn) {
    if (failed()) return;
    try {
      fn();
    } catch (const std::exception& e) {
      set(e.what());
    } catch (...) {
      set("unknown error");
    }
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::string message_;
};

float* align64(float* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<float*>((u + 63) & ~static_cast<uintptr_t>(63));
}

// A float buffer that keeps its memory for the next call (not value-initialised).
class FloatBuffer {
 public:
  float* reserve(size_t n) {
    if (n > capacity_) {
      data_.reset(new float[n + 16]);
      capacity_ = n;
    }
    return align64(data_.get());
  }
  void trim() {
    if (capacity_ > kKeepFloats) {
      data_.reset();
      capacity_ = 0;
    }
  }

 private:
  std::unique_ptr<float[]> data_;
  size_t capacity_ = 0;
};

// The packed-line workspace: one buffer for the process, reused across calls (the calls that
// would use it at the same time allocate their own).
class WorkspacePool {
 public:
  static WorkspacePool& instance() {
    static WorkspacePool pool;
    return pool;
  }
  std::unique_ptr<FloatBuffer> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_ ? std::move(cached_) : std::make_unique<FloatBuffer>();
  }
  void give(std::unique_ptr<FloatBuffer> buffer) {
    buffer->trim();
    std::lock_guard<std::mutex> lock(mutex_);
    cached_ = std::move(buffer);
  }

 private:
  std::mutex mutex_;
  std::unique_ptr<FloatBuffer> cached_;
};

// Per-thread planning and scratch buffers, kept across tasks and calls.
struct ThreadState {
  FloatBuffer scratch;
  std::vector<BlockSpec> blocks;
  std::vector<SegSpec> segs;
  std::vector<Run> runs;
  std::vector<Geometry::RowRange> rows;
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

// Packed lines of one unit.
struct UnitLines {
  float* k = nullptr;      // k_lines x D x ld_k
  float* v = nullptr;      // k_lines x Dv x ld_k
  float* add_k = nullptr;  // D x ld_add
  float* add_v = nullptr;  // Dv x ld_add
  float* q = nullptr;      // group * q_lines x D x ld_q, head-major (backward)
  float* dout = nullptr;   // group * q_lines x Dv x ld_q (backward)
  float* stats = nullptr;  // group * q_lines x 2 x ld_q (backward)
};

// Waits for `ready()`: a few yields, then short sleeps so that, on a loaded machine, the thread
// being waited for can be scheduled on this core.
template <class Ready>
void wait_until(Ready ready) {
  for (int spin = 0; !ready(); ++spin) {
    if (spin < 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

// The packed lines of the units in flight: a ring of a few unit slots (threads work on neighbouring
// units, in order), each segment of a line packed on first use (need_*). A unit takes its slot
// once the unit before it in the slot has finished all its tasks, so the lines stay few enough to
// remain in cache and no barrier is needed.
class Workspace {
 public:
  Workspace(const Geometry& geo, const OpTensors& t, const OpConfig& cfg, const IsaOps& isa, bool backward,
            int64_t tasks_per_unit)
      : geo_(geo), t_(t), cfg_(cfg), isa_(isa) {
    const int64_t d = cfg.dim, dv = cfg.dim_v;
    k_size_ = geo.k_lines * d * geo.ld_k;
    v_size_ = geo.k_lines * dv * geo.ld_k;
    add_k_size_ = geo.additional > 0 ? d * geo.ld_add : 0;
    add_v_size_ = geo.additional > 0 ? dv * geo.ld_add : 0;
    q_size_ = backward ? geo.q_lines * d * geo.ld_q : 0;  // per query head
    dout_size_ = backward ? geo.q_lines * dv * geo.ld_q : 0;
    stats_size_ = backward ? geo.q_lines * 2 * geo.ld_q : 0;
    per_unit_ = std::max<int64_t>(
        k_size_ + v_size_ + add_k_size_ + add_v_size_ + geo.group * (q_size_ + dout_size_ + stats_size_), 1);
    k_segments_ = (geo.ld_k + kSegment - 1) / kSegment;
    q_segments_ = (geo.ld_q + kSegment - 1) / kSegment;
    flags_per_unit_ = geo.k_lines * k_segments_ + 1 + (backward ? geo.q_lines * q_segments_ : 0);
    slots_ = std::max<int64_t>(1, std::min({geo.units, int64_t{cfg.threads} + 1, kWorkspaceBudget / per_unit_}));
    buffer_ = WorkspacePool::instance().take();
    base_ = buffer_->reserve(static_cast<size_t>(slots_ * per_unit_));
    flags_.reset(new std::atomic<int32_t>[static_cast<size_t>(slots_ * flags_per_unit_)]);
    for (int64_t i = 0; i < slots_ * flags_per_unit_; ++i) flags_[i].store(kEmpty, std::memory_order_relaxed);
    owner_.reset(new std::atomic<int64_t>[static_cast<size_t>(slots_)]);
    for (int64_t s = 0; s < slots_; ++s) owner_[s].store(s, std::memory_order_relaxed);
    remaining_.reset(new std::atomic<int64_t>[static_cast<size_t>(geo.units)]);
    for (int64_t u = 0; u < geo.units; ++u) remaining_[u].store(tasks_per_unit, std::memory_order_relaxed);
  }
  ~Workspace() { WorkspacePool::instance().give(std::move(buffer_)); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Before a task of `unit`: wait for the unit's slot.
  void acquire(int64_t unit) const {
    const std::atomic<int64_t>& owner = owner_[unit % slots_];
    if (owner.load(std::memory_order_acquire) != unit) {
      wait_until([&] { return owner.load(std::memory_order_acquire) == unit; });
    }
  }
  // After a task of `unit` (whether or not it ran): the unit's last task clears the slot and hands
  // it to the next unit of the slot. Units take their tasks in order, so that unit's tasks come
  // after every task of this one and the hand-over always happens.
  void release(int64_t unit) {
    if (remaining_[unit].fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const int64_t s = unit % slots_;
    for (int64_t i = 0; i < flags_per_unit_; ++i) flags_[s * flags_per_unit_ + i].store(kEmpty, std::memory_order_relaxed);
    owner_[s].store(unit + slots_, std::memory_order_release);
  }

  UnitLines lines(int64_t unit) const {
    UnitLines u;
    u.k = base_ + (unit % slots_) * per_unit_;
    u.v = u.k + k_size_;
    u.add_k = u.v + v_size_;
    u.add_v = u.add_k + add_k_size_;
    u.q = u.add_v + add_v_size_;
    u.dout = u.q + geo_.group * q_size_;
    u.stats = u.dout + geo_.group * dout_size_;
    return u;
  }

  // Positions [lo, hi) (clamped to the row stride, padding included) of K and V line `line`.
  void need_kv(int64_t unit, int64_t line, int64_t lo, int64_t hi) {
    const int64_t n = geo_.k_line_len(unit, line);
    for (int64_t s = std::max<int64_t>(lo, 0) / kSegment; s * kSegment < std::min(hi, geo_.ld_k); ++s) {
      once(flag(unit, line * k_segments_ + s), [&] {
        const UnitLines ul = lines(unit);
        const LineOrigin o = geo_.k_origin(unit, line);
        const int64_t hkv = geo_.kv_head(unit), p0 = s * kSegment;
        const int64_t count = std::max<int64_t>(0, std::min(n - p0, kSegment));
        const int64_t fill = std::min(geo_.ld_k - p0, kSegment);
        isa_.pack(t_.k.rows(o, hkv, p0), 1, 0, count, cfg_.dim, ul.k + line * cfg_.dim * geo_.ld_k + p0, 0,
                  geo_.ld_k, fill);
        isa_.pack(t_.v.rows(o, hkv, p0), 1, 0, count, cfg_.dim_v, ul.v + line * cfg_.dim_v * geo_.ld_k + p0, 0,
                  geo_.ld_k, fill);
      });
    }
  }

  // The additional keys and values of the unit.
  void need_additional(int64_t unit) {
    once(flag(unit, geo_.k_lines * k_segments_), [&] {
      const UnitLines ul = lines(unit);
      const LineOrigin o = geo_.add_origin(unit);
      const int64_t hkv = geo_.kv_head(unit);
      isa_.pack(t_.add_k.rows(o, hkv, 0), 1, 0, geo_.additional, cfg_.dim, ul.add_k, 0, geo_.ld_add, geo_.ld_add);
      isa_.pack(t_.add_v.rows(o, hkv, 0), 1, 0, geo_.additional, cfg_.dim_v, ul.add_v, 0, geo_.ld_add, geo_.ld_add);
    });
  }

  // Backward: positions [lo, hi) of Q, dO and stats line `line` of every query head of the unit
  // (read together: a token's row usually holds the heads side by side).
  void need_queries(int64_t unit, int64_t line, int64_t lo, int64_t hi) {
    const int64_t n = geo_.q_line_len(unit, line), ld = geo_.ld_q;
    for (int64_t s = std::max<int64_t>(lo, 0) / kSegment; s * kSegment < std::min(hi, ld); ++s) {
      once(flag(unit, geo_.k_lines * k_segments_ + 1 + line * q_segments_ + s), [&] {
        const UnitLines ul = lines(unit);
        const LineOrigin o = geo_.q_origin(unit, line);
        const int64_t head0 = geo_.kv_head(unit) * geo_.group, p0 = s * kSegment;
        const int64_t count = std::max<int64_t>(0, std::min(n - p0, kSegment));
        const int64_t fill = std::min(ld - p0, kSegment);
        const int64_t d = cfg_.dim, dv = cfg_.dim_v;
        isa_.pack(t_.q.rows(o, head0, p0), geo_.group, t_.q.head_stride, count, d, ul.q + line * d * ld + p0,
                  q_size_, ld, fill);
        isa_.pack(t_.dout.rows(o, head0, p0), geo_.group, t_.dout.head_stride, count, dv,
                  ul.dout + line * dv * ld + p0, dout_size_, ld, fill);
        const int64_t head_strides[3] = {t_.lse.head_stride, t_.out.head_stride, t_.dout.head_stride};
        isa_.pack_stats(t_.lse.rows(o, head0, p0), t_.out.rows(o, head0, p0), t_.dout.rows(o, head0, p0),
                        head_strides, geo_.group, count, dv, ul.stats + line * 2 * ld + p0, stats_size_, ld, fill);
      });
    }
  }

 private:
  static constexpr int32_t kEmpty = 0, kPacking = 1, kReady = 2;

  std::atomic<int32_t>& flag(int64_t unit, int64_t index) {
    return flags_[(unit % slots_) * flags_per_unit_ + index];
  }

  // Runs `pack` if no thread has claimed the flag yet; otherwise waits until the claimer is done.
  template <class Pack>
  static void once(std::atomic<int32_t>& flag, Pack pack) {
    int32_t state = flag.load(std::memory_order_acquire);
    if (state == kReady) return;
    int32_t expected = kEmpty;
    if (state == kEmpty && flag.compare_exchange_strong(expected, kPacking, std::memory_order_acq_rel)) {
      try {
        pack();
      } catch (...) {
        flag.store(kReady, std::memory_order_release);  // let waiters go; the error is reported
        throw;
      }
      flag.store(kReady, std::memory_order_release);
      return;
    }
    wait_until([&] { return flag.load(std::memory_order_acquire) == kReady; });
  }

  const Geometry& geo_;
  const OpTensors& t_;
  const OpConfig& cfg_;
  const IsaOps& isa_;
  int64_t k_size_ = 0, v_size_ = 0, add_k_size_ = 0, add_v_size_ = 0;
  int64_t q_size_ = 0, dout_size_ = 0, stats_size_ = 0;
  int64_t per_unit_ = 1, flags_per_unit_ = 1, slots_ = 1;
  int64_t k_segments_ = 1, q_segments_ = 1;
  std::unique_ptr<FloatBuffer> buffer_;
  float* base_ = nullptr;
  std::unique_ptr<std::atomic<int32_t>[]> flags_;
  std::unique_ptr<std::atomic<int64_t>[]> owner_;      // unit holding each slot
  std::unique_ptr<std::atomic<int64_t>[]> remaining_;  // tasks of each unit not finished yet
};

// Positions a segment's runs may read: its keys plus the lanes' spread, and up to 31 positions of
// overshoot of the vector loads (isa.h: read beyond a block's last key).
int64_t segment_end(const SegSpec& s) { return s.base + s.len + 2 * kLanes; }

// Start loading the queries a forward task reads and the outputs it writes, so that the task
// after the current one does not wait on memory (its rows are strided, one per token).
void prefetch_task(const IsaOps& isa, const Geometry& geo, const OpTensors& t, const OpConfig& cfg, int64_t unit,
                   int64_t task, std::vector<Geometry::RowRange>& rows) {
  rows.clear();
  geo.q_task_rows(unit, task, rows);
  for (int64_t j = 0; j < geo.group; ++j) {
    const int64_t head = geo.kv_head(unit) * geo.group + j;
    for (const Geometry::RowRange& r : rows) {
      const LineOrigin o = geo.q_origin(unit, r.line);
      isa.prefetch(t.q.rows(o, head, r.first), r.count, cfg.dim, 0);
      isa.prefetch(t.out.rows(o, head, r.first), r.count, cfg.dim_v, 1);
    }
  }
}

Params params_of(const OpConfig& cfg) {
  Params p{};
  p.dim = cfg.dim;
  p.dim_v = cfg.dim_v;
  p.scale = cfg.scale;
  p.scale_log2 = cfg.scale * kLog2e;
  return p;
}

// Run `task(unit, index, state)` for the tasks [0, tasks_per_unit) of every unit, in parallel, in
// order of units (the workspace ring relies on it), in one parallel region.
template <class Task>
void run_tasks(const Geometry& geo, const OpConfig& cfg, Workspace& ws, int64_t tasks_per_unit, int64_t scratch,
               Task task) {
  const int64_t total = geo.units * tasks_per_unit;
  // chunks of consecutive tasks: neighbouring tasks read the same lines, so threads working on
  // different chunks rarely wait for each other's packing; small enough to balance the load
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(tasks_per_unit, total / (8 * cfg.threads)));
  ErrorSlot err;
#pragma omp parallel num_threads(cfg.threads)
  {
    ThreadState& st = thread_state();
    err.guard([&] { st.scratch.reserve(static_cast<size_t>(scratch)); });
#pragma omp for schedule(dynamic, chunk)
    for (int64_t i = 0; i < total; ++i) {
      const int64_t u = i / tasks_per_unit;
      ws.acquire(u);
      err.guard([&] { task(u, i % tasks_per_unit, i + 1 < total, st); });
      ws.release(u);
    }
  }
  err.rethrow();
}

}  // namespace

const IsaOps& select_isa() {
#if defined(NATTN_CPU_X86_KERNELS)
  const bool avx512 = has_avx512();
  const bool avx2 = has_avx2();
  const char* request = std::getenv("NATTN_CPU_ISA");
  if (request != nullptr && request[0] != '\0') {
    const std::string r = request;
    if (r == "generic") return isa_generic();
    if (r == "avx2" && avx2) return isa_avx2();
    if (r == "avx512" && avx512) return isa_avx512();
    log_once(LogLevel::warning, "cpu-isa:" + r,
             "NATTN_CPU_ISA='" + r + "' is not available on this CPU (allowed: avx512, avx2, generic); "
             "using the widest available");
  }
  if (avx512) return isa_avx512();
  if (avx2) return isa_avx2();
#endif
  return isa_generic();
}

void run_forward(const Geometry& geo, const OpTensors& t, const OpConfig& cfg) {
  if (geo.units == 0) return;
  const IsaOps& isa = select_isa();
  Params p = params_of(cfg);
  p.lda[0] = p.ldb[0] = geo.ld_k;
  p.lda[1] = p.ldb[1] = geo.ld_add;
  const int64_t tasks = geo.q_tasks();
  Workspace ws(geo, t, cfg, isa, false, tasks);
  run_tasks(geo, cfg, ws, tasks, scratch_floats(p), [&](int64_t u, int64_t task, bool more, ThreadState& st) {
    if (more) prefetch_task(isa, geo, t, cfg, u + (task + 1) / tasks, (task + 1) % tasks, st.rows);
    st.blocks.clear();
    st.segs.clear();
    geo.q_task(u, task, st.blocks, st.segs);
    for (const SegSpec& s : st.segs) {
      if (s.src == 0) ws.need_kv(u, s.line, s.base, segment_end(s));
      else ws.need_additional(u);
    }
    const UnitLines ul = ws.lines(u);
    LineBases lb;
    lb.a[0] = ul.k;
    lb.a_stride[0] = cfg.dim * geo.ld_k;
    lb.b[0] = ul.v;
    lb.b_stride[0] = cfg.dim_v * geo.ld_k;
    if (geo.additional > 0) {
      lb.a[1] = ul.add_k;
      lb.b[1] = ul.add_v;
    }
    group_blocks(st.blocks, [&](size_t first, size_t count) {
      st.runs.clear();
      build_runs(st.blocks, first, count, st.segs, lb, st.runs);
      Group g{};
      g.nblk = static_cast<int32_t>(count);
      for (size_t k = 0; k < count; ++k) {
        const BlockSpec& spec = st.blocks[first + k];
        Block& b = g.blk[k];
        const int64_t head = geo.kv_head(u) * geo.group + spec.head;
        const LineOrigin o = geo.q_origin(u, spec.line);
        b.n = spec.n;
        b.x_rows = t.q.rows(o, head, spec.pos0);
        b.out = t.out.out_rows(o, head, spec.pos0);
        if (t.has_lse) {
          b.lse = static_cast<float*>(t.lse.mutable_data);
          b.lse_off0 = t.lse.offset(o, head, spec.pos0);
          b.lse_step = t.lse.step(o);
        }
        b.pat[0] = spec.pat[0];
        b.pat[1] = spec.pat[1];
      }
      isa.forward(p, g, st.runs.data(), static_cast<int64_t>(st.runs.size()), st.scratch.reserve(0));
    });
  });
}

void run_backward(const Geometry& geo, const OpTensors& t, const OpConfig& cfg) {
  if (geo.units == 0) return;
  const IsaOps& isa = select_isa();
  Params pq = params_of(cfg);  // dQ: lines A/B are K/V (and additional K/V)
  pq.lda[0] = pq.ldb[0] = geo.ld_k;
  pq.lda[1] = pq.ldb[1] = geo.ld_add;
  Params pk = params_of(cfg);  // dK/dV: lines A/B are Q/dO of the queries that see the keys
  pk.lda[0] = pk.ldb[0] = geo.ld_q;
  pk.ld_stats = geo.ld_q;
  const int64_t qt = geo.q_tasks();
  const int64_t tasks = qt + geo.k_tasks();
  Workspace ws(geo, t, cfg, isa, true, tasks);
  run_tasks(geo, cfg, ws, tasks, scratch_floats(pq), [&](int64_t u, int64_t task, bool, ThreadState& st) {
    const bool dq = task < qt;
    const int64_t hkv = geo.kv_head(u);
    st.blocks.clear();
    st.segs.clear();
    if (dq) geo.q_task(u, task, st.blocks, st.segs);
    else geo.k_task(u, task - qt, st.blocks, st.segs);
    // lines the runs read, then the lanes' own lines
    for (const SegSpec& s : st.segs) {
      if (!dq) ws.need_queries(u, s.line % geo.q_lines, s.base, segment_end(s));
      else if (s.src == 0) ws.need_kv(u, s.line, s.base, segment_end(s));
      else ws.need_additional(u);
    }
    for (const BlockSpec& b : st.blocks) {  // the lanes read 16 positions
      if (dq) ws.need_queries(u, b.line, b.pos0, b.pos0 + kLanes);
      else if (b.additional) ws.need_additional(u);
      else ws.need_kv(u, b.line, b.pos0, b.pos0 + kLanes);
    }
    const UnitLines ul = ws.lines(u);
    LineBases lb;
    if (dq) {
      lb.a[0] = ul.k;
      lb.a_stride[0] = cfg.dim * geo.ld_k;
      lb.b[0] = ul.v;
      lb.b_stride[0] = cfg.dim_v * geo.ld_k;
      if (geo.additional > 0) {
        lb.a[1] = ul.add_k;
        lb.b[1] = ul.add_v;
      }
    } else {
      lb.a[0] = ul.q;
      lb.a_stride[0] = cfg.dim * geo.ld_q;
      lb.b[0] = ul.dout;
      lb.b_stride[0] = cfg.dim_v * geo.ld_q;
      lb.stats[0] = ul.stats;
      lb.stats_stride[0] = 2 * geo.ld_q;
    }
    group_blocks(st.blocks, [&](size_t first, size_t count) {
      st.runs.clear();
      build_runs(st.blocks, first, count, st.segs, lb, st.runs);
      Group g{};
      g.nblk = static_cast<int32_t>(count);
      for (size_t k = 0; k < count; ++k) {
        const BlockSpec& spec = st.blocks[first + k];
        Block& b = g.blk[k];
        b.n = spec.n;
        b.pat[0] = spec.pat[0];
        b.pat[1] = spec.pat[1];
        if (dq) {
          const int64_t head = hkv * geo.group + spec.head;
          const int64_t hl = spec.head * geo.q_lines + spec.line;
          b.x = ul.q + hl * cfg.dim * geo.ld_q + spec.pos0;
          b.ldx = geo.ld_q;
          b.x2 = ul.dout + hl * cfg.dim_v * geo.ld_q + spec.pos0;
          b.ldx2 = geo.ld_q;
          b.lane_stats = ul.stats + hl * 2 * geo.ld_q + spec.pos0;
          b.ld_stats = geo.ld_q;
          b.out = t.dq.out_rows(geo.q_origin(u, spec.line), head, spec.pos0);
        } else if (spec.additional) {
          const LineOrigin o = geo.add_origin(u);
          b.x = ul.add_k + spec.pos0;
          b.ldx = geo.ld_add;
          b.x2 = ul.add_v + spec.pos0;
          b.ldx2 = geo.ld_add;
          b.out = t.dadd_k.out_rows(o, hkv, spec.pos0);
          b.out2 = t.dadd_v.out_rows(o, hkv, spec.pos0);
        } else {
          const LineOrigin o = geo.k_origin(u, spec.line);
          b.x = ul.k + spec.line * cfg.dim * geo.ld_k + spec.pos0;
          b.ldx = geo.ld_k;
          b.x2 = ul.v + spec.line * cfg.dim_v * geo.ld_k + spec.pos0;
          b.ldx2 = geo.ld_k;
          b.out = t.dk.out_rows(o, hkv, spec.pos0);
          b.out2 = t.dv.out_rows(o, hkv, spec.pos0);
        }
      }
      const int64_t nruns = static_cast<int64_t>(st.runs.size());
      if (dq) isa.backward_dq(pq, g, st.runs.data(), nruns, st.scratch.reserve(0));
      else isa.backward_dkv(pk, g, st.runs.data(), nruns, st.scratch.reserve(0));
    });
  });
}

}  // namespace nattn::detail::cpu
