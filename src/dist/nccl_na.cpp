// Multi-GPU NA over NCCL (issue 6): the K/V halo exchange, forward / backward of one rank with the
// exchange overlapped with the interior queries, and the return of halo gradients to their owners.
// Algorithm, invariants and limits: README.md.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "dist/halo_kernels.h"
#include "nattn/backends.h"
#include "nattn/distributed.h"
#include "nattn/errors.h"

namespace nattn::dist {

namespace {

// ---- errors, device, memory, streams ------------------------------------------------------------

void nccl_check(ncclResult_t r, ncclComm_t comm, const char* call, int line) {
  if (r == ncclSuccess) return;
  std::string msg = std::string("NCCL error in ") + call + " (src/dist/nccl_na.cpp:" + std::to_string(line) +
                    "): " + ncclGetErrorString(r);
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= 21300
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') msg += " (" + std::string(last) + ")";
#else
  (void)comm;
#endif
  throw RuntimeError(msg);
}
#define NATTN_NCCL_CHECK(comm, call) nccl_check((call), (comm), #call, __LINE__)

// Device buffers, stream-ordered (cudaMallocAsync); all freed on `main` when destroyed, which
// happens after the StreamPair below has joined the streams.
class Buffers {
 public:
  explicit Buffers(cudaStream_t main) : main_(main) {}
  ~Buffers() {
    for (void* p : async_) cudaFreeAsync(p, main_);  // best effort in a destructor
    if (!sync_.empty()) {
      cudaStreamSynchronize(main_);
      for (void* p : sync_) cudaFree(p);
    }
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  void* alloc(size_t bytes, cudaStream_t stream) {
    void* p = nullptr;
    const cudaError_t e = cudaMallocAsync(&p, bytes > 0 ? bytes : 16, stream);
    if (e == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      NATTN_CUDA_CHECK(cudaStreamSynchronize(stream));
      NATTN_CUDA_CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 16));
      sync_.push_back(p);
    } else {
      NATTN_CUDA_CHECK(e);
      async_.push_back(p);
    }
    return p;
  }

 private:
  cudaStream_t main_;
  std::vector<void*> async_, sync_;
};

// The compute stream and the exchange stream (the same one without overlap). fork(): the exchange
// stream waits for the work enqueued so far on the compute stream; join(): the reverse. The
// destructor joins (so buffers freed on the compute stream afterwards are no longer in use).
class StreamPair {
 public:
  StreamPair(cudaStream_t compute, bool overlap, cudaStream_t given) : main(compute), comm(compute) {
    if (!overlap) return;
    if (given != nullptr) {
      comm = given;
    } else {
      int lo = 0, hi = 0;
      NATTN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
      NATTN_CUDA_CHECK(cudaStreamCreateWithPriority(&owned_, cudaStreamNonBlocking, hi));
      comm = owned_;
    }
    NATTN_CUDA_CHECK(cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming));
    NATTN_CUDA_CHECK(cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming));
  }
  ~StreamPair() {
    if (comm != main) {  // best effort in a destructor
      if (cudaEventRecord(joined_, comm) == cudaSuccess) cudaStreamWaitEvent(main, joined_, 0);
    }
    if (forked_) cudaEventDestroy(forked_);
    if (joined_) cudaEventDestroy(joined_);
    if (owned_) cudaStreamDestroy(owned_);
  }
  StreamPair(const StreamPair&) = delete;
  StreamPair& operator=(const StreamPair&) = delete;
  void fork() {
    if (comm == main) return;
    NATTN_CUDA_CHECK(cudaEventRecord(forked_, main));
    NATTN_CUDA_CHECK(cudaStreamWaitEvent(comm, forked_, 0));
  }
  void join() {
    if (comm == main) return;
    NATTN_CUDA_CHECK(cudaEventRecord(joined_, comm));
    NATTN_CUDA_CHECK(cudaStreamWaitEvent(main, joined_, 0));
  }

  cudaStream_t main;
  cudaStream_t comm;

 private:
  cudaStream_t owned_ = nullptr;
  cudaEvent_t forked_ = nullptr, joined_ = nullptr;
};

// ---- views --------------------------------------------------------------------------------------

// The part `box` of a tensor [B, *frame, ...] whose spatial axes cover the global box `frame`.
TensorView sub(const TensorView& t, int rank, const Box& box, const Box& frame) {
  TensorView v = t;
  int64_t offset = 0;
  for (int i = 0; i < rank; ++i) {
    const size_t a = static_cast<size_t>(i);
    v.shape[a + 1] = box.size(i);
    offset += (box.lo[a] - frame.lo[a]) * t.strides[a + 1];
  }
  v.data = static_cast<char*>(t.data) + offset * dtype_size(t.dtype);
  return v;
}

// A contiguous view of `like`'s shape with the spatial axes of `box`.
TensorView dense(void* ptr, DType dtype, const TensorView& like, int rank, const Box& box) {
  std::vector<int64_t> shape = like.shape;
  for (int i = 0; i < rank; ++i) shape[static_cast<size_t>(i + 1)] = box.size(i);
  return TensorView(ptr, dtype, shape, like.device);
}

size_t bytes_of(const TensorView& t) { return static_cast<size_t>(t.numel() * dtype_size(t.dtype)); }
size_t bytes_as(const TensorView& t, DType d) { return static_cast<size_t>(t.numel() * dtype_size(d)); }

// One run of memory (size-1 axes ignored).
bool is_dense(const TensorView& v) {
  int64_t expect = 1;
  for (int i = v.dim() - 1; i >= 0; --i) {
    if (v.shape[static_cast<size_t>(i)] == 1) continue;
    if (v.strides[static_cast<size_t>(i)] != expect) return false;
    expect *= v.shape[static_cast<size_t>(i)];
  }
  return true;
}

void copy_view(const TensorView& src, const TensorView& dst, bool accumulate, cudaStream_t stream) {
  detail::BoxCopy c;
  c.src = src.data;
  c.dst = dst.data;
  c.src_dtype = src.dtype;
  c.dst_dtype = dst.dtype;
  c.dims = src.dim();
  c.accumulate = accumulate;
  for (int i = 0; i < src.dim(); ++i) {
    const size_t a = static_cast<size_t>(i);
    if (src.shape[a] != dst.shape[a])
      throw RuntimeError("halo copy: shapes " + shape_string(src.shape) + " and " + shape_string(dst.shape) + " differ");
    c.n[i] = src.shape[a];
    c.src_stride[i] = src.strides[a];
    c.dst_stride[i] = dst.strides[a];
  }
  detail::launch_box_copy(c, stream);
}

void zero(const TensorView& dense_view, cudaStream_t stream) {
  NATTN_CUDA_CHECK(cudaMemsetAsync(dense_view.data, 0, bytes_of(dense_view), stream));
}

// Elements [lo, lo + n) of dimension `axis` (a view).
TensorView slice_dim(const TensorView& t, int axis, int64_t lo, int64_t n) {
  TensorView v = t;
  const size_t a = static_cast<size_t>(axis);
  v.shape[a] = n;
  v.data = static_cast<char*>(t.data) + lo * t.strides[a] * dtype_size(t.dtype);
  return v;
}

// ---- head chunks (Overlap::heads) -----------------------------------------------------------------

constexpr int64_t kHeadChunks = 4;  // pipeline depth: the first chunk's transfer stays exposed

// A chunk of key/value heads [kv0, kv0 + kvn) and its query heads [q0, q0 + qn) (GQA groups).
struct HeadChunk {
  int64_t kv0, kvn, q0, qn;
  // [.., H*, D*] tensors: the chunk's heads; LSE [B, *S, H]: its query heads.
  TensorView kv(const TensorView& t) const { return slice_dim(t, t.dim() - 2, kv0, kvn); }
  TensorView q(const TensorView& t) const { return slice_dim(t, t.dim() - 2, q0, qn); }
  TensorView lse(const TensorView& t) const { return slice_dim(t, t.dim() - 1, q0, qn); }
};

// Up to kHeadChunks contiguous chunks, sizes differing by at most one.
std::vector<HeadChunk> head_chunks(int64_t heads_kv, int64_t heads) {
  const int64_t n = std::min(kHeadChunks, heads_kv), g = heads / heads_kv;
  std::vector<HeadChunk> out;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = heads_kv * i / n, b = heads_kv * (i + 1) / n;
    out.push_back(HeadChunk{a, b - a, a * g, (b - a) * g});
  }
  return out;
}

// automatic -> heads with >= 2 key/value heads, else interior (heads itself was checked: check_overlap).
Overlap resolve_overlap(Overlap o, int64_t heads_kv) {
  if (o == Overlap::automatic) return heads_kv >= 2 ? Overlap::heads : Overlap::interior;
  return o;
}

// One event per chunk: recorded on the stream that produced the chunk, waited for by the other.
class ChunkEvents {
 public:
  explicit ChunkEvents(size_t n) : ev_(n, nullptr) {
    for (cudaEvent_t& e : ev_) NATTN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~ChunkEvents() {
    for (cudaEvent_t e : ev_)
      if (e) cudaEventDestroy(e);
  }
  ChunkEvents(const ChunkEvents&) = delete;
  ChunkEvents& operator=(const ChunkEvents&) = delete;
  void record(size_t i, cudaStream_t s) { NATTN_CUDA_CHECK(cudaEventRecord(ev_[i], s)); }
  void wait(size_t i, cudaStream_t s) { NATTN_CUDA_CHECK(cudaStreamWaitEvent(s, ev_[i], 0)); }

 private:
  std::vector<cudaEvent_t> ev_;
};

// ---- the exchange ---------------------------------------------------------------------------------

// One message: send `region` to `peer`, or receive it from `peer` into `region` (added to it with
// `accumulate`). Non-contiguous regions go through a contiguous staging buffer; `wire` is the
// dtype of the message (the region's unless stated).
struct Transfer {
  int peer = 0;
  bool send = false;
  TensorView region;
  bool accumulate = false;
};

class GroupGuard {
 public:
  explicit GroupGuard(ncclComm_t comm) : comm_(comm) { NATTN_NCCL_CHECK(comm_, ncclGroupStart()); }
  ~GroupGuard() {
    if (open_) ncclGroupEnd();  // best effort after an error: close the group
  }
  void end() {
    open_ = false;
    ncclResult_t r = ncclGroupEnd();
    if (r == ncclInProgress) {  // a non-blocking communicator: wait for the enqueue to finish
      do {
        NATTN_NCCL_CHECK(comm_, ncclCommGetAsyncError(comm_, &r));
      } while (r == ncclInProgress);
    }
    NATTN_NCCL_CHECK(comm_, r);
  }
  GroupGuard(const GroupGuard&) = delete;
  GroupGuard& operator=(const GroupGuard&) = delete;

 private:
  ncclComm_t comm_;
  bool open_ = true;
};

// Both ends list their messages in plan order, so the k-th message between two ranks matches.
void exchange(const std::vector<Transfer>& list, ncclComm_t comm, cudaStream_t stream, Buffers& bufs) {
  if (list.empty()) return;
  std::vector<TensorView> staged(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const Transfer& t = list[i];
    const bool direct = is_dense(t.region) && !t.accumulate;
    if (direct || t.region.numel() == 0) continue;
    staged[i] = TensorView(bufs.alloc(bytes_of(t.region), stream), t.region.dtype, t.region.shape, t.region.device);
    if (t.send) copy_view(t.region, staged[i], false, stream);
  }
  {
    GroupGuard group(comm);
    for (size_t i = 0; i < list.size(); ++i) {
      const Transfer& t = list[i];
      const size_t bytes = bytes_of(t.region);
      if (bytes == 0) continue;
      void* ptr = staged[i].data != nullptr ? staged[i].data : t.region.data;
      if (t.send) {
        NATTN_NCCL_CHECK(comm, ncclSend(ptr, bytes, ncclUint8, t.peer, comm, stream));
      } else {
        NATTN_NCCL_CHECK(comm, ncclRecv(ptr, bytes, ncclUint8, t.peer, comm, stream));
      }
    }
    group.end();
  }
  for (size_t i = 0; i < list.size(); ++i)
    if (!list[i].send && staged[i].data != nullptr) copy_view(staged[i], list[i].region, list[i].accumulate, stream);
}

struct Rank {
  const HaloPlan& plan;
  int r;
  const RankPlan& rp;
  int nd;  // NA rank
  Rank(const HaloPlan& p, int rank) : plan(p), r(rank), rp(p.ranks[static_cast<size_t>(rank)]), nd(p.rank) {}
};

// key/value (slab) -> key_halo/value_halo (halo box; undefined when this rank receives nothing and
// keeps no halo copy): the own part copied, the pieces of the others received, ours sent.
void gather_impl(const Rank& R, const TensorView& key, const TensorView& value, const TensorView* kh,
                 const TensorView* vh, ncclComm_t comm, cudaStream_t stream, Buffers& bufs) {
  if (kh != nullptr) {
    const Box own = intersect(R.rp.slab, R.rp.halo, R.nd);
    if (!own.empty(R.nd)) {
      copy_view(sub(key, R.nd, own, R.rp.slab), sub(*kh, R.nd, own, R.rp.halo), false, stream);
      copy_view(sub(value, R.nd, own, R.rp.slab), sub(*vh, R.nd, own, R.rp.halo), false, stream);
    }
  }
  std::vector<Transfer> list;
  for (const HaloPiece& p : R.plan.pieces) {
    if (p.src == R.r) {
      list.push_back(Transfer{p.dst, true, sub(key, R.nd, p.box, R.rp.slab), false});
      list.push_back(Transfer{p.dst, true, sub(value, R.nd, p.box, R.rp.slab), false});
    } else if (p.dst == R.r) {
      if (kh == nullptr) throw RuntimeError("gather_halo: rank " + std::to_string(R.r) + " receives but has no halo buffer");
      list.push_back(Transfer{p.src, false, sub(*kh, R.nd, p.box, R.rp.halo), false});
      list.push_back(Transfer{p.src, false, sub(*vh, R.nd, p.box, R.rp.halo), false});
    }
  }
  exchange(list, comm, stream, bufs);
}

// gather_impl per head chunk (Overlap::heads), each followed by its event in `arrived`; kh/vh (the
// halo buffers) only when the rank receives.
void gather_chunks(const Rank& R, const std::vector<HeadChunk>& chunks, const TensorView& key, const TensorView& value,
                   bool need_halo, const TensorView& kh, const TensorView& vh, ncclComm_t comm, cudaStream_t stream,
                   Buffers& bufs, ChunkEvents& arrived) {
  for (size_t c = 0; c < chunks.size(); ++c) {
    const HeadChunk& h = chunks[c];
    const TensorView khc = need_halo ? h.kv(kh) : TensorView(), vhc = need_halo ? h.kv(vh) : TensorView();
    gather_impl(R, h.kv(key), h.kv(value), need_halo ? &khc : nullptr, need_halo ? &vhc : nullptr, comm, stream, bufs);
    arrived.record(c, stream);
  }
}

// ---- validation ---------------------------------------------------------------------------------

struct Named {
  const char* name;
  const TensorView* t;
  const TensorView* like;
};

[[noreturn]] void fail(const char* op, int rank, const std::string& what) {
  throw ValueError(std::string(op) + " (rank " + std::to_string(rank) + "): " + what);
}

bool same_params(const NaParams& a, const NaParams& b) {
  if (a.rank != b.rank) return false;
  for (size_t i = 0; i < static_cast<size_t>(a.rank); ++i)
    if (a.kernel_size[i] != b.kernel_size[i] || a.stride[i] != b.stride[i] || a.dilation[i] != b.dilation[i] ||
        a.is_causal[i] != b.is_causal[i])
      return false;
  return true;
}

void check_rank_args(const char* op, const HaloPlan& plan, int rank, const NaParams& params, const TensorView& q,
                     const TensorView& k, const TensorView& v, bool has_sub_domain, const char* qname = "query") {
  if (rank < 0 || rank >= plan.num_ranks)
    fail(op, rank, "rank=" + std::to_string(rank) + " is not valid (allowed: 0 to " + std::to_string(plan.num_ranks - 1) +
                       " for the plan's " + std::to_string(plan.num_ranks) + " ranks)");
  if (!same_params(params, plan.params))
    fail(op, rank, "args.params (" + params.describe() + ") differ from the plan's (" + plan.params.describe() + ")");
  if (has_sub_domain)
    fail(op, rank, "args.sub_domain must be unset (it is set from the plan; got one)");
  const RankPlan& rp = plan.ranks[static_cast<size_t>(rank)];
  const Named inputs[] = {{qname, &q, nullptr}, {"key", &k, nullptr}, {"value", &v, nullptr}};
  for (const Named& in : inputs) {
    const char* name = in.name;
    const TensorView* t = in.t;
    if (t->device.kind != DeviceKind::cuda)
      fail(op, rank, std::string(name) + " is on " + device_name(t->device) + " (allowed: a CUDA device)");
    if (t->dtype != DType::f32 && t->dtype != DType::f16 && t->dtype != DType::bf16)
      fail(op, rank, std::string(name) + " has dtype " + dtype_name(t->dtype) + " (allowed: fp32, fp16, bf16)");
    if (t->dim() != plan.rank + 3)
      fail(op, rank, std::string(name) + " " + t->describe() + " must be [B, *slab (" + std::to_string(plan.rank) +
                         " axes), heads, head_dim]");
    for (int i = 0; i < plan.rank; ++i)
      if (t->size(1 + i) != rp.slab.size(i))
        fail(op, rank, std::string(name) + " " + t->describe() + " has " + std::to_string(t->size(1 + i)) +
                           " tokens on axis " + std::to_string(i) + " but the rank's slab " + rp.slab.describe(plan.rank) +
                           " has " + std::to_string(rp.slab.size(i)) + " (allowed: the slab's extent)");
  }
}

void check_halo_buffers(const char* op, const HaloPlan& plan, int rank, const ShardedOptions& opt, const TensorView& k,
                        const TensorView& v) {
  if (opt.key_halo.has_value() != opt.value_halo.has_value())
    fail(op, rank, "options.key_halo and options.value_halo must be given together");
  if (!opt.key_halo) return;
  const Named buffers[] = {{"options.key_halo", &*opt.key_halo, &k}, {"options.value_halo", &*opt.value_halo, &v}};
  for (const Named& b : buffers) {
    const char* name = b.name;
    const TensorView* t = b.t;
    const TensorView* like = b.like;
    const std::vector<int64_t> want = halo_shape(plan, rank, *like);
    if (t->shape != want || t->dtype != like->dtype || t->device != like->device)
      fail(op, rank, std::string(name) + " is " + t->describe() + " (allowed: " + dtype_name(like->dtype) + " " +
                         device_name(like->device) + " " + shape_string(want) + ", the halo box " +
                         plan.ranks[static_cast<size_t>(rank)].halo.describe(plan.rank) + ")");
    if (t->dim() > 0 && t->strides.back() != 1)
      fail(op, rank, std::string(name) + " must have a contiguous head dim (stride 1; got strides " +
                         shape_string(t->strides) + ")");
  }
}

void check_overlap(const char* op, int rank, const ShardedOptions& opt, const TensorView& key) {
  const int64_t heads_kv = key.dim() >= 2 ? key.size(key.dim() - 2) : 0;
  if (opt.overlap == Overlap::heads && heads_kv < 2)
    fail(op, rank, "options.overlap=heads needs at least 2 key/value heads to chunk (got " + std::to_string(heads_kv) +
                       "; allowed here: automatic, interior or none)");
}

void check_comm(const char* op, const HaloPlan& plan, int rank, ncclComm_t comm, const Device& device) {
  if (comm == nullptr) fail(op, rank, "comm is null (allowed: an initialised ncclComm_t)");
  int count = 0, user_rank = 0, dev = 0;
  NATTN_NCCL_CHECK(comm, ncclCommCount(comm, &count));
  NATTN_NCCL_CHECK(comm, ncclCommUserRank(comm, &user_rank));
  NATTN_NCCL_CHECK(comm, ncclCommCuDevice(comm, &dev));
  if (count != plan.num_ranks)
    fail(op, rank, "the communicator has " + std::to_string(count) + " ranks but the plan has " +
                       std::to_string(plan.num_ranks) + " (grid " + plan.grid.describe() + ")");
  if (user_rank != rank)
    fail(op, rank, "rank=" + std::to_string(rank) + " but the communicator's rank is " + std::to_string(user_rank));
  if (dev != device.index)
    fail(op, rank, "the tensors are on " + device_name(device) + " but the communicator's device is cuda:" +
                       std::to_string(dev));
}

// Runs nattn's own validation and backend resolution on the whole slab (K/V of the halo box), so
// that every argument error is raised before any communication starts.
template <typename Args>
void check_whole(const char* op, int rank, const Args& whole, const RunOptions& run, Pass pass) {
  try {
    NaProblem problem = nattn::describe(whole);
    problem.compute_capability = nattn::detail::cuda_compute_capability(problem.device);
    problem.requires_grad = pass == Pass::backward || run.requires_grad;
    problem.deterministic = run.deterministic;
    const std::string backend = resolve_backend(run.backend, problem, pass);
    (void)resolve_config(backend, problem, pass, run.config);
  } catch (const ValueError& e) {
    fail(op, rank, e.what());
  }
}

TensorView shaped_like(const TensorView& t, const std::vector<int64_t>& shape) {
  return TensorView(t.data, t.dtype, shape, t.device);
}

}  // namespace

bool nccl_enabled() { return true; }

void gather_halo(const TensorView& key, const TensorView& value, const TensorView& key_halo,
                 const TensorView& value_halo, const HaloPlan& plan, int rank, ncclComm* comm, CUstream_st* stream) {
  const char* op = "gather_halo";
  check_rank_args(op, plan, rank, plan.params, key, key, value, false, "key");
  ShardedOptions opt;
  opt.key_halo = key_halo;
  opt.value_halo = value_halo;
  check_halo_buffers(op, plan, rank, opt, key, value);
  check_comm(op, plan, rank, comm, key.device);
  cuda::DeviceGuard guard(key.device.index);
  Buffers bufs(stream);
  gather_impl(Rank(plan, rank), key, value, &key_halo, &value_halo, comm, stream, bufs);
}

void na_forward_sharded(const NaForwardArgs& args, const HaloPlan& plan, int rank, ncclComm* comm,
                        CUstream_st* stream, const ShardedOptions& opt) {
  const char* op = "na_forward_sharded";
  check_rank_args(op, plan, rank, args.params, args.query, args.key, args.value, args.sub_domain.has_value());
  check_halo_buffers(op, plan, rank, opt, args.key, args.value);
  check_overlap(op, rank, opt, args.key);
  const Rank R(plan, rank);
  const RankPlan& rp = R.rp;
  NaForwardArgs whole = args;
  whole.key = shaped_like(args.key, halo_shape(plan, rank, args.key));
  whole.value = shaped_like(args.value, halo_shape(plan, rank, args.value));
  whole.sub_domain = plan.sub_domain(rank, rp.slab, rp.halo);
  check_whole(op, rank, whole, opt.run, Pass::forward);
  check_comm(op, plan, rank, comm, args.query.device);

  cuda::DeviceGuard guard(args.query.device.index);
  Buffers bufs(stream);
  const bool need_halo = opt.key_halo.has_value() || !rp.recv.empty();
  const bool communicates = !rp.recv.empty() || !rp.send.empty();
  TensorView kh, vh;
  if (opt.key_halo) {
    kh = *opt.key_halo;
    vh = *opt.value_halo;
  } else if (need_halo) {
    kh = dense(bufs.alloc(bytes_of(whole.key), stream), args.key.dtype, args.key, R.nd, rp.halo);
    vh = dense(bufs.alloc(bytes_of(whole.value), stream), args.value.dtype, args.value, R.nd, rp.halo);
  }
  const Overlap mode = resolve_overlap(opt.overlap, args.key.size(args.key.dim() - 2));
  const bool split = mode == Overlap::interior && need_halo && !rp.interior.empty(R.nd) && !(rp.interior == rp.slab);
  // Head chunks: the messages of every communicating rank are chunked alike (both ends must match);
  // a rank that receives nothing computes its slab in one call while its chunks go out.
  const bool chunked = mode == Overlap::heads && communicates;
  const std::vector<HeadChunk> chunks =
      chunked ? head_chunks(args.key.size(args.key.dim() - 2), args.query.size(args.query.dim() - 2))
              : std::vector<HeadChunk>{};
  ChunkEvents arrived(chunks.size());
  StreamPair streams(stream, mode != Overlap::none && communicates, opt.comm_stream);
  streams.fork();
  if (chunked) {
    gather_chunks(R, chunks, args.key, args.value, need_halo, kh, vh, comm, streams.comm, bufs, arrived);
  } else if (need_halo || communicates) {
    gather_impl(R, args.key, args.value, need_halo ? &kh : nullptr, need_halo ? &vh : nullptr, comm, streams.comm, bufs);
  }

  RunOptions run = opt.run;
  run.stream = stream;
  // The queries `q` (a box of the slab) against the local K/V or the halo; `h`: one head chunk only.
  const auto call = [&](const Box& q, bool halo, const HeadChunk* h = nullptr) {
    NaForwardArgs a = args;
    a.query = sub(args.query, R.nd, q, rp.slab);
    a.out = sub(args.out, R.nd, q, rp.slab);
    if (args.lse) a.lse = sub(*args.lse, R.nd, q, rp.slab);
    a.key = halo ? kh : args.key;
    a.value = halo ? vh : args.value;
    if (h != nullptr) {
      a.query = h->q(a.query);
      a.out = h->q(a.out);
      if (a.lse) a.lse = h->lse(*a.lse);
      a.key = h->kv(a.key);
      a.value = h->kv(a.value);
      if (a.additional_keys) {
        a.additional_keys = h->kv(*a.additional_keys);
        a.additional_values = h->kv(*a.additional_values);
      }
    }
    a.sub_domain = plan.sub_domain(rank, q, halo ? rp.halo : rp.slab);
    na_forward(a, run);
  };
  if (chunked && need_halo) {
    for (size_t c = 0; c < chunks.size(); ++c) {  // chunk c computes while chunks c+1.. are in flight
      arrived.wait(c, stream);
      call(rp.slab, true, &chunks[c]);
    }
  } else if (split) {
    call(rp.interior, false);  // overlaps the exchange
    streams.join();
    for (const Box& b : rp.boundary) call(b, true);
  } else {
    if (need_halo) streams.join();
    call(rp.slab, need_halo);
  }
  streams.join();
}

namespace {

// The own slab's fp32 K/V gradient: a view of the accumulators over the K/V box when the box covers
// the slab, else zeroed buffers of their own (the caller adds the own part of the box in).
struct SlabGrad {
  TensorView k, v;
  bool is_view;
};
SlabGrad slab_grad(const TensorView& acc_k, const TensorView& acc_v, const Box& kvbox, const RankPlan& rp, int nd,
                   const NaBackwardArgs& args, Buffers& bufs, cudaStream_t stream) {
  if (kvbox.contains(rp.slab, nd)) return {sub(acc_k, nd, rp.slab, kvbox), sub(acc_v, nd, rp.slab, kvbox), true};
  SlabGrad g{dense(bufs.alloc(bytes_as(args.key, DType::f32), stream), DType::f32, args.key, nd, rp.slab),
             dense(bufs.alloc(bytes_as(args.value, DType::f32), stream), DType::f32, args.value, nd, rp.slab), false};
  zero(g.k, stream);
  zero(g.v, stream);
  return g;
}

// The halo-gradient messages of `rank` (fp32 on the wire), in plan order: the pieces of its K/V-box
// accumulators that belong to other slabs go to their owners; the pieces of its own slab that other
// ranks used come back and are added into `slab`.
std::vector<Transfer> grad_messages(const HaloPlan& plan, int rank, int nd, const TensorView& acc_k,
                                    const TensorView& acc_v, const Box& kvbox, const SlabGrad& slab, const Box& slab_box) {
  std::vector<Transfer> list;
  for (const HaloPiece& p : plan.pieces) {
    if (p.dst == rank) {
      list.push_back(Transfer{p.src, true, sub(acc_k, nd, p.box, kvbox), false});
      list.push_back(Transfer{p.src, true, sub(acc_v, nd, p.box, kvbox), false});
    } else if (p.src == rank) {
      list.push_back(Transfer{p.dst, false, sub(slab.k, nd, p.box, slab_box), true});
      list.push_back(Transfer{p.dst, false, sub(slab.v, nd, p.box, slab_box), true});
    }
  }
  return list;
}

// Overlap::heads backward of a rank that communicates (every such rank takes it, so that the
// messages of both ends are chunked alike): per chunk of key/value heads, (its halo K/V gathered
// when `gather`,) the whole slab's backward against the K/V frame (the halo buffer kh/vh over the
// halo box when need_halo, else the local K/V), its dK/dV added into fp32 accumulators over that
// box, and its halo gradients sent to their owners on the exchange stream while the next chunk
// computes; the owners add what they receive (fp32) into their slab's accumulator. The sum order
// (own contribution, then pieces in plan order) is that of the one-call path, so results are
// identical. dQ and the additional-KV gradients are written per chunk (disjoint heads).
void backward_heads(const NaBackwardArgs& args, const HaloPlan& plan, const Rank& R, ncclComm* comm,
                    cudaStream_t stream, const ShardedOptions& opt, bool gather, bool need_halo,
                    const TensorView& kh, const TensorView& vh, Buffers& bufs) {
  const RankPlan& rp = R.rp;
  const int nd = R.nd;
  const Box kvbox = need_halo ? rp.halo : rp.slab;
  const TensorView key_frame = need_halo ? kh : args.key, value_frame = need_halo ? vh : args.value;
  const std::vector<HeadChunk> chunks =
      head_chunks(args.key.size(args.key.dim() - 2), args.query.size(args.query.dim() - 2));
  ChunkEvents arrived(chunks.size()), computed(chunks.size());
  StreamPair streams(stream, true, opt.comm_stream);
  streams.fork();
  if (gather) gather_chunks(R, chunks, args.key, args.value, need_halo, kh, vh, comm, streams.comm, bufs, arrived);
  // fp32 accumulators over the K/V box (all heads) and the slab's (a view when the box covers it).
  const TensorView acc_k =
      dense(bufs.alloc(bytes_as(key_frame, DType::f32), stream), DType::f32, key_frame, nd, kvbox);
  const TensorView acc_v =
      dense(bufs.alloc(bytes_as(value_frame, DType::f32), stream), DType::f32, value_frame, nd, kvbox);
  zero(acc_k, stream);
  zero(acc_v, stream);
  const SlabGrad slab = slab_grad(acc_k, acc_v, kvbox, rp, nd, args, bufs, stream);
  const Box own = intersect(rp.slab, kvbox, nd);
  // One dtype scratch of the largest chunk, reused (stream order: its copy-out precedes the next use).
  int64_t most = 0;
  for (const HeadChunk& h : chunks) most = std::max(most, h.kvn);
  const auto scratch_of = [&](const TensorView& frame) {
    std::vector<int64_t> shape = frame.shape;
    shape[shape.size() - 2] = most;
    return bufs.alloc(bytes_of(TensorView(nullptr, frame.dtype, shape, frame.device)), stream);
  };
  void* scratch_k = scratch_of(key_frame);
  void* scratch_v = scratch_of(value_frame);

  RunOptions run = opt.run;
  run.stream = stream;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const HeadChunk& h = chunks[c];
    if (gather) arrived.wait(c, stream);
    std::vector<int64_t> kcs = key_frame.shape, vcs = value_frame.shape;
    kcs[kcs.size() - 2] = vcs[vcs.size() - 2] = h.kvn;
    const TensorView dk_c(scratch_k, key_frame.dtype, kcs, key_frame.device);
    const TensorView dv_c(scratch_v, value_frame.dtype, vcs, value_frame.device);
    NaBackwardArgs a = args;
    a.query = h.q(args.query);
    a.out = h.q(args.out);
    a.lse = h.lse(args.lse);
    a.dout = h.q(args.dout);
    a.dquery = h.q(args.dquery);
    a.key = h.kv(key_frame);
    a.value = h.kv(value_frame);
    a.dkey = dk_c;
    a.dvalue = dv_c;
    if (args.additional_keys) {
      a.additional_keys = h.kv(*args.additional_keys);
      a.additional_values = h.kv(*args.additional_values);
      a.dadditional_keys = h.kv(*args.dadditional_keys);
      a.dadditional_values = h.kv(*args.dadditional_values);
    }
    a.sub_domain = plan.sub_domain(R.r, rp.slab, kvbox);
    na_backward(a, run);
    const TensorView ak = h.kv(acc_k), av = h.kv(acc_v);
    copy_view(dk_c, ak, false, stream);
    copy_view(dv_c, av, false, stream);
    const SlabGrad sc{h.kv(slab.k), h.kv(slab.v), slab.is_view};
    if (!slab.is_view && !own.empty(nd)) {
      copy_view(sub(ak, nd, own, kvbox), sub(sc.k, nd, own, rp.slab), true, stream);
      copy_view(sub(av, nd, own, kvbox), sub(sc.v, nd, own, rp.slab), true, stream);
    }
    // This chunk's halo gradients to their owners, on the exchange stream.
    computed.record(c, stream);
    computed.wait(c, streams.comm);
    exchange(grad_messages(plan, R.r, nd, ak, av, kvbox, sc, rp.slab), comm, streams.comm, bufs);
  }
  streams.join();
  copy_view(slab.k, args.dkey, false, stream);
  copy_view(slab.v, args.dvalue, false, stream);
}

}  // namespace

void na_backward_sharded(const NaBackwardArgs& args, const HaloPlan& plan, int rank, ncclComm* comm,
                         CUstream_st* stream, const ShardedOptions& opt) {
  const char* op = "na_backward_sharded";
  check_rank_args(op, plan, rank, args.params, args.query, args.key, args.value, args.sub_domain.has_value());
  check_halo_buffers(op, plan, rank, opt, args.key, args.value);
  check_overlap(op, rank, opt, args.key);
  const Rank R(plan, rank);
  const RankPlan& rp = R.rp;
  const int nd = R.nd;
  NaBackwardArgs whole = args;
  whole.key = shaped_like(args.key, halo_shape(plan, rank, args.key));
  whole.value = shaped_like(args.value, halo_shape(plan, rank, args.value));
  whole.dkey = shaped_like(args.dkey, whole.key.shape);
  whole.dvalue = shaped_like(args.dvalue, whole.value.shape);
  const Named grads[] = {{"dkey", &args.dkey, &args.key}, {"dvalue", &args.dvalue, &args.value}};
  for (const Named& g : grads)
    if (g.t->shape != g.like->shape)
      fail(op, rank, std::string(g.name) + " " + g.t->describe() + " must have the shape of the local " +
                         (std::string(g.name) == "dkey" ? "key " : "value ") + shape_string(g.like->shape));
  whole.sub_domain = plan.sub_domain(rank, rp.slab, rp.halo);
  check_whole(op, rank, whole, opt.run, Pass::backward);
  check_comm(op, plan, rank, comm, args.query.device);

  cuda::DeviceGuard guard(args.query.device.index);
  Buffers bufs(stream);
  const bool given_halo = opt.key_halo.has_value();
  const bool gather = !given_halo && (!rp.recv.empty() || !rp.send.empty());
  const bool need_halo = given_halo || !rp.recv.empty();
  const Box kvbox = need_halo ? rp.halo : rp.slab;
  TensorView kh, vh;
  if (given_halo) {
    kh = *opt.key_halo;
    vh = *opt.value_halo;
  } else if (need_halo) {
    kh = dense(bufs.alloc(bytes_of(whole.key), stream), args.key.dtype, args.key, nd, rp.halo);
    vh = dense(bufs.alloc(bytes_of(whole.value), stream), args.value.dtype, args.value, nd, rp.halo);
  }
  const bool grads_move = !rp.recv.empty() || !rp.send.empty();
  const Overlap mode = resolve_overlap(opt.overlap, args.key.size(args.key.dim() - 2));
  if (mode == Overlap::heads && grads_move) {  // every communicating rank: the messages must match
    backward_heads(args, plan, R, comm, stream, opt, gather, need_halo, kh, vh, bufs);
    return;
  }
  // The query boxes: the interior on the local K/V while the exchange runs, then the boundary.
  struct Call {
    Box q;
    bool halo;
  };
  std::vector<Call> calls;
  if (mode == Overlap::interior && gather && need_halo && !rp.interior.empty(nd) && !(rp.interior == rp.slab)) {
    calls.push_back(Call{rp.interior, false});
    for (const Box& b : rp.boundary) calls.push_back(Call{b, true});
  } else {
    calls.push_back(Call{rp.slab, need_halo});
  }
  const bool direct = calls.size() == 1 && !grads_move && kvbox == rp.slab;
  const bool extra = args.additional_keys.has_value();
  const bool extra_direct = calls.size() == 1;

  StreamPair streams(stream, mode != Overlap::none && gather, opt.comm_stream);
  streams.fork();
  if (gather) gather_impl(R, args.key, args.value, need_halo ? &kh : nullptr, need_halo ? &vh : nullptr, comm,
                          streams.comm, bufs);

  // fp32 accumulators: the gradient of the K/V box this rank used, and of the extra keys.
  const TensorView key_frame = need_halo ? kh : args.key, value_frame = need_halo ? vh : args.value;
  TensorView acc_k, acc_v, scratch_k, scratch_v, acc_ek, acc_ev, scratch_ek, scratch_ev;
  if (!direct) {
    acc_k = dense(bufs.alloc(bytes_as(key_frame, DType::f32), stream), DType::f32, key_frame, nd, kvbox);
    acc_v = dense(bufs.alloc(bytes_as(value_frame, DType::f32), stream), DType::f32, value_frame, nd, kvbox);
    zero(acc_k, stream);
    zero(acc_v, stream);
    if (need_halo) {
      scratch_k = dense(bufs.alloc(bytes_of(kh), stream), kh.dtype, kh, nd, kvbox);
      scratch_v = dense(bufs.alloc(bytes_of(vh), stream), vh.dtype, vh, nd, kvbox);
    }
  }
  if (extra && !extra_direct) {
    const TensorView& ek = *args.additional_keys;
    const TensorView& ev = *args.additional_values;
    acc_ek = TensorView(bufs.alloc(bytes_as(ek, DType::f32), stream), DType::f32, ek.shape, ek.device);
    acc_ev = TensorView(bufs.alloc(bytes_as(ev, DType::f32), stream), DType::f32, ev.shape, ev.device);
    scratch_ek = TensorView(bufs.alloc(bytes_of(ek), stream), ek.dtype, ek.shape, ek.device);
    scratch_ev = TensorView(bufs.alloc(bytes_of(ev), stream), ev.dtype, ev.shape, ev.device);
    zero(acc_ek, stream);
    zero(acc_ev, stream);
  }

  RunOptions run = opt.run;
  run.stream = stream;
  bool joined = false;
  for (const Call& c : calls) {
    if (c.halo && !joined) {
      streams.join();
      joined = true;
    }
    NaBackwardArgs a = args;
    a.query = sub(args.query, nd, c.q, rp.slab);
    a.out = sub(args.out, nd, c.q, rp.slab);
    a.lse = sub(args.lse, nd, c.q, rp.slab);
    a.dout = sub(args.dout, nd, c.q, rp.slab);
    a.dquery = sub(args.dquery, nd, c.q, rp.slab);
    a.key = c.halo ? kh : args.key;
    a.value = c.halo ? vh : args.value;
    // Outputs: the user's dkey/dvalue directly, or as scratch (slab-sized), or the halo scratch.
    a.dkey = c.halo && !direct ? scratch_k : args.dkey;
    a.dvalue = c.halo && !direct ? scratch_v : args.dvalue;
    if (extra && !extra_direct) {
      a.dadditional_keys = scratch_ek;
      a.dadditional_values = scratch_ev;
    }
    const Box kv = c.halo ? rp.halo : rp.slab;
    a.sub_domain = plan.sub_domain(rank, c.q, kv);
    na_backward(a, run);
    if (!direct) {  // add this call's key gradients into the accumulators
      const Box region = intersect(kv, kvbox, nd);
      copy_view(sub(a.dkey, nd, region, kv), sub(acc_k, nd, region, kvbox), true, stream);
      copy_view(sub(a.dvalue, nd, region, kv), sub(acc_v, nd, region, kvbox), true, stream);
    }
    if (extra && !extra_direct) {
      copy_view(scratch_ek, acc_ek, true, stream);
      copy_view(scratch_ev, acc_ev, true, stream);
    }
  }
  streams.join();
  if (extra && !extra_direct) {
    copy_view(acc_ek, *args.dadditional_keys, false, stream);
    copy_view(acc_ev, *args.dadditional_values, false, stream);
  }
  if (direct) return;

  // The gradient of the own slab in fp32 (own part added when it is not a view), then the halo
  // gradients back to their owners, summed there in plan order.
  const SlabGrad slab = slab_grad(acc_k, acc_v, kvbox, rp, nd, args, bufs, stream);
  const Box own = intersect(rp.slab, kvbox, nd);
  if (!slab.is_view && !own.empty(nd)) {
    copy_view(sub(acc_k, nd, own, kvbox), sub(slab.k, nd, own, rp.slab), true, stream);
    copy_view(sub(acc_v, nd, own, kvbox), sub(slab.v, nd, own, rp.slab), true, stream);
  }
  exchange(grad_messages(plan, rank, nd, acc_k, acc_v, kvbox, slab, rp.slab), comm, stream, bufs);
  copy_view(slab.k, args.dkey, false, stream);
  copy_view(slab.v, args.dvalue, false, stream);
}

}  // namespace nattn::dist
