// Multi-GPU NA over NCCL (src/dist/nccl_na.cpp) against single-GPU cutlass-fna on GPU 0: one
// process drives every visible GPU (ncclCommInitAll, one host thread per rank). For 2..N ranks,
// 1-D/2-D/3-D problems split along one and two axes with kernel/stride/dilation/causal variety,
// fp32 and bf16, with and without overlap, contiguous and padded (strided) local tensors: the
// forward (out, lse), the halo buffers, and the backward (dq, dk, dv) equal the single-GPU result.
// Random inputs; outputs poisoned with NaN. Skips with fewer than 2 GPUs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "nattn/distributed.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace {

using nattn::Device;
using nattn::DeviceKind;
using nattn::DType;
using nattn::NaParams;
using nattn::TensorView;
using nattn::dist::Box;
using nattn::dist::HaloPlan;
using nattn::dist::ProcessGrid;
using nattn::test::HostTensor;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(r));
}

int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Communicators of R ranks on GPUs 0..R-1, created once per R, destroyed at exit.
std::map<int, std::vector<ncclComm_t>>& comm_cache() {
  static std::map<int, std::vector<ncclComm_t>> cache;
  return cache;
}
std::vector<ncclComm_t>& comms(int R) {
  auto& cache = comm_cache();
  auto it = cache.find(R);
  if (it != cache.end()) return it->second;
  std::vector<ncclComm_t> c(static_cast<size_t>(R));
  std::vector<int> devs(static_cast<size_t>(R));
  for (int i = 0; i < R; ++i) devs[static_cast<size_t>(i)] = i;
  check_nccl(ncclCommInitAll(c.data(), R, devs.data()), "ncclCommInitAll");
  return cache.emplace(R, c).first->second;
}
class CommEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    for (auto& kv : comm_cache())
      for (ncclComm_t c : kv.second) ncclCommDestroy(c);
    comm_cache().clear();
  }
};
const ::testing::Environment* const kEnv = ::testing::AddGlobalTestEnvironment(new CommEnvironment);

// ---- host and device tensors ----------------------------------------------------------------------

std::vector<int64_t> unravel(int64_t e, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    idx[static_cast<size_t>(i)] = e % shape[static_cast<size_t>(i)];
    e /= shape[static_cast<size_t>(i)];
  }
  return idx;
}
int64_t offset_of(const std::vector<int64_t>& idx, const std::vector<int64_t>& strides) {
  int64_t o = 0;
  for (size_t i = 0; i < idx.size(); ++i) o += idx[i] * strides[i];
  return o;
}

// The box of a global [B, *extent, ...] host tensor, or the reverse.
HostTensor extract(const HostTensor& g, int nd, const Box& box) {
  std::vector<int64_t> shape = g.view.shape;
  for (int i = 0; i < nd; ++i) shape[static_cast<size_t>(1 + i)] = box.size(i);
  HostTensor out(g.view.dtype, shape);
  for (int64_t e = 0; e < out.numel(); ++e) {
    std::vector<int64_t> idx = unravel(e, shape);
    for (int i = 0; i < nd; ++i) idx[static_cast<size_t>(1 + i)] += box.lo[static_cast<size_t>(i)];
    out.set(e, g.get(offset_of(idx, g.view.strides)));
  }
  return out;
}
void insert(HostTensor& g, const HostTensor& local, int nd, const Box& box) {
  for (int64_t e = 0; e < local.numel(); ++e) {
    std::vector<int64_t> idx = unravel(e, local.view.shape);
    for (int i = 0; i < nd; ++i) idx[static_cast<size_t>(1 + i)] += box.lo[static_cast<size_t>(i)];
    g.set(offset_of(idx, g.view.strides), local.get(e));
  }
}

// A device tensor; `padded` stores it with 8 extra head-dim elements and one extra head (strided).
// Poisoned with NaN (0xFF bytes) at creation.
struct DevTensor {
  int device = 0;
  void* ptr = nullptr;
  std::vector<int64_t> storage;
  TensorView view;

  DevTensor(int dev, DType dtype, const std::vector<int64_t>& shape, bool padded) : device(dev), storage(shape) {
    if (padded && storage.size() >= 3) {
      storage.back() += 8;
      storage[storage.size() - 2] += 1;
    }
    check_cuda(cudaSetDevice(dev), "cudaSetDevice");
    check_cuda(cudaMalloc(&ptr, bytes() + 16), "cudaMalloc");
    check_cuda(cudaMemset(ptr, 0xFF, bytes()), "cudaMemset");
    view = TensorView(ptr, dtype, shape, nattn::contiguous_strides(storage), Device{DeviceKind::cuda, dev});
  }
  ~DevTensor() {
    cudaSetDevice(device);
    cudaFree(ptr);
  }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;
  size_t bytes() const {
    int64_t n = 1;
    for (int64_t s : storage) n *= s;
    return static_cast<size_t>(n * nattn::dtype_size(view.dtype));
  }
  void upload(const HostTensor& h) {
    HostTensor st(view.dtype, storage);
    for (int64_t e = 0; e < st.numel(); ++e) st.set(e, std::nanf(""));
    for (int64_t e = 0; e < h.numel(); ++e) st.set(offset_of(unravel(e, view.shape), view.strides), h.get(e));
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cuda(cudaMemcpy(ptr, st.view.data, bytes(), cudaMemcpyHostToDevice), "upload");
  }
  HostTensor download() const {
    HostTensor st(view.dtype, storage);
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cuda(cudaMemcpy(st.view.data, ptr, bytes(), cudaMemcpyDeviceToHost), "download");
    HostTensor out(view.dtype, view.shape);
    for (int64_t e = 0; e < out.numel(); ++e) out.set(e, st.get(offset_of(unravel(e, view.shape), view.strides)));
    return out;
  }
};
using DevPtr = std::unique_ptr<DevTensor>;

// max |got - ref| / max |ref| (NaN anywhere: infinity).
double rel_err(const HostTensor& got, const HostTensor& ref) {
  double worst = 0, scale = 1e-6;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(got.get(i)) - ref.get(i));
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
    scale = std::max(scale, std::fabs(static_cast<double>(ref.get(i))));
  }
  return worst / scale;
}
double tol(DType t) { return t == DType::f32 ? 1e-5 : 2e-2; }

// ---- problems ------------------------------------------------------------------------------------------

struct Problem {
  std::string name;
  std::vector<int64_t> extent;
  NaParams params;
  std::vector<int> split_axes;  // 1 or 2 axes
  int64_t batch = 2, heads = 2, heads_kv = 2, head_dim = 32, extra = 0;
};

NaParams params_of(std::vector<int64_t> k, std::vector<int64_t> s, std::vector<int64_t> d, std::vector<bool> c) {
  NaParams p;
  p.rank = static_cast<int>(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    p.kernel_size[i] = k[i];
    p.stride[i] = s[i];
    p.dilation[i] = d[i];
    p.is_causal[i] = c[i];
  }
  return p;
}

// Ranks per axis: all on one split axis, or (R / b, b) on two with b the smallest divisor > 1
// (a prime R splits only the second axis).
std::vector<int> ranks_per_axis(const Problem& p, int R) {
  std::vector<int> r(p.extent.size(), 1);
  if (p.split_axes.size() == 1) {
    r[static_cast<size_t>(p.split_axes[0])] = R;
    return r;
  }
  int b = 2;
  while (R % b != 0) ++b;
  r[static_cast<size_t>(p.split_axes[0])] = R / b;
  r[static_cast<size_t>(p.split_axes[1])] = b;
  return r;
}

struct Global {  // inputs and the single-GPU result, on the host
  HostTensor q, k, v, dout, ek, ev;
  HostTensor out, lse, dq, dk, dv, dek, dev;
};

std::vector<int64_t> shape_of(const Problem& p, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{p.batch};
  s.insert(s.end(), p.extent.begin(), p.extent.end());
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}

Global reference(const Problem& p, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Global g;
  g.q = nattn::test::random_tensor(dtype, shape_of(p, p.heads, p.head_dim), rng);
  g.k = nattn::test::random_tensor(dtype, shape_of(p, p.heads_kv, p.head_dim), rng);
  g.v = nattn::test::random_tensor(dtype, shape_of(p, p.heads_kv, p.head_dim), rng);
  g.dout = nattn::test::random_tensor(dtype, shape_of(p, p.heads, p.head_dim), rng);
  const std::vector<int64_t> eshape{p.batch, p.extra, p.heads_kv, p.head_dim};
  if (p.extra > 0) {
    g.ek = nattn::test::random_tensor(dtype, eshape, rng);
    g.ev = nattn::test::random_tensor(dtype, eshape, rng);
  }
  DevTensor q(0, dtype, g.q.view.shape, false), k(0, dtype, g.k.view.shape, false), v(0, dtype, g.v.view.shape, false),
      dout(0, dtype, g.dout.view.shape, false), out(0, dtype, g.q.view.shape, false),
      lse(0, DType::f32, shape_of(p, p.heads, 0), false), dq(0, dtype, g.q.view.shape, false),
      dk(0, dtype, g.k.view.shape, false), dv(0, dtype, g.v.view.shape, false);
  q.upload(g.q);
  k.upload(g.k);
  v.upload(g.v);
  dout.upload(g.dout);
  nattn::RunOptions run;
  run.backend = "cutlass-fna";
  nattn::NaForwardArgs f;
  f.query = q.view;
  f.key = k.view;
  f.value = v.view;
  f.out = out.view;
  f.lse = lse.view;
  f.params = p.params;
  std::unique_ptr<DevTensor> ek, ev, dek, dev;
  if (p.extra > 0) {
    ek = std::make_unique<DevTensor>(0, dtype, eshape, false);
    ev = std::make_unique<DevTensor>(0, dtype, eshape, false);
    dek = std::make_unique<DevTensor>(0, dtype, eshape, false);
    dev = std::make_unique<DevTensor>(0, dtype, eshape, false);
    ek->upload(g.ek);
    ev->upload(g.ev);
    f.additional_keys = ek->view;
    f.additional_values = ev->view;
  }
  nattn::na_forward(f, run);
  nattn::NaBackwardArgs b;
  b.query = q.view;
  b.key = k.view;
  b.value = v.view;
  b.out = out.view;
  b.lse = lse.view;
  b.dout = dout.view;
  b.dquery = dq.view;
  b.dkey = dk.view;
  b.dvalue = dv.view;
  b.params = p.params;
  if (p.extra > 0) {
    b.additional_keys = ek->view;
    b.additional_values = ev->view;
    b.dadditional_keys = dek->view;
    b.dadditional_values = dev->view;
  }
  nattn::na_backward(b, run);
  check_cuda(cudaDeviceSynchronize(), "reference");
  g.out = out.download();
  g.lse = lse.download();
  g.dq = dq.download();
  g.dk = dk.download();
  g.dv = dv.download();
  if (p.extra > 0) {
    g.dek = dek->download();
    g.dev = dev->download();
  }
  return g;
}

using nattn::dist::Overlap;

const char* overlap_name(Overlap o) {
  return o == Overlap::none ? "no-overlap" : o == Overlap::heads ? "heads" : o == Overlap::interior ? "interior"
                                                                                                  : "automatic";
}

struct Variant {
  Overlap overlap = Overlap::automatic;  // automatic: head chunks here (every problem has >= 2 K/V heads)
  bool padded = false;
  bool keep_halo = false;  // forward fills caller-owned halo buffers; the backward reuses them
  // The ranks' backend: "cutlass-fna", or "" (automatic: hopper-fna's direct mode for fp16/bf16
  // forwards on SM90, cutlass-fna otherwise and for every backward).
  std::string backend = "cutlass-fna";
};

// Runs `fn(rank)` on one host thread per rank; throws with every rank's error. A run that does not
// finish in 180 s aborts the communicators (so a hang fails the test instead of blocking it).
template <class F>
void run_ranks(int R, F&& fn) {
  std::vector<std::string> errors(static_cast<size_t>(R));
  std::mutex m;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread> threads;
  for (int r = 0; r < R; ++r)
    threads.emplace_back([&, r] {
      try {
        check_cuda(cudaSetDevice(r), "cudaSetDevice");
        fn(r);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
      std::lock_guard<std::mutex> lock(m);
      ++done;
      cv.notify_all();
    });
  bool hung = false;
  {
    std::unique_lock<std::mutex> lock(m);
    hung = !cv.wait_for(lock, std::chrono::seconds(180), [&] { return done == R; });
  }
  if (hung) {
    for (ncclComm_t c : comms(R)) ncclCommAbort(c);
    comm_cache().erase(R);
  }
  for (auto& t : threads) t.join();
  std::string all;
  for (int r = 0; r < R; ++r)
    if (!errors[static_cast<size_t>(r)].empty()) all += "\n  rank " + std::to_string(r) + ": " + errors[static_cast<size_t>(r)];
  if (hung) all += "\n  (hung: communicators aborted)";
  if (!all.empty()) throw std::runtime_error("ranks failed:" + all);
}

struct RankData {
  DevPtr q, k, v, dout, out, lse, dq, dk, dv, kh, vh, ek, ev, dek, dev;
};

void run_sharded(const Problem& p, DType dtype, const Global& g, int R, const Variant& var) {
  const int nd = p.params.rank;
  const HaloPlan plan = nattn::dist::make_halo_plan(p.extent, p.params, ProcessGrid::even(p.extent, ranks_per_axis(p, R)));
  const std::string label = p.name + " " + nattn::dtype_name(dtype) + " R=" + std::to_string(R) + " " +
                            plan.grid.describe() + " " + overlap_name(var.overlap) +
                            (var.padded ? " padded" : "") + (var.keep_halo ? " keep_halo" : "");
  SCOPED_TRACE(label);
  std::vector<RankData> data(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    const Box& slab = plan.ranks[static_cast<size_t>(r)].slab;
    RankData& d = data[static_cast<size_t>(r)];
    const auto make = [&](const HostTensor& global, bool pad) {
      HostTensor local = extract(global, nd, slab);
      auto t = std::make_unique<DevTensor>(r, global.view.dtype, local.view.shape, pad);
      t->upload(local);
      return t;
    };
    const auto poisoned = [&](const HostTensor& global, DType dt, bool pad) {
      std::vector<int64_t> shape = global.view.shape;
      for (int i = 0; i < nd; ++i) shape[static_cast<size_t>(1 + i)] = slab.size(i);
      return std::make_unique<DevTensor>(r, dt, shape, pad);
    };
    d.q = make(g.q, var.padded);
    d.k = make(g.k, var.padded);
    d.v = make(g.v, var.padded);
    d.dout = make(g.dout, var.padded);
    d.out = poisoned(g.q, dtype, var.padded);
    d.lse = poisoned(g.lse, DType::f32, false);
    d.dq = poisoned(g.q, dtype, var.padded);
    d.dk = poisoned(g.k, dtype, var.padded);
    d.dv = poisoned(g.v, dtype, var.padded);
    if (var.keep_halo) {
      d.kh = std::make_unique<DevTensor>(r, dtype, nattn::dist::halo_shape(plan, r, d.k->view), var.padded);
      d.vh = std::make_unique<DevTensor>(r, dtype, nattn::dist::halo_shape(plan, r, d.v->view), var.padded);
    }
    if (p.extra > 0) {
      d.ek = std::make_unique<DevTensor>(r, dtype, g.ek.view.shape, false);
      d.ev = std::make_unique<DevTensor>(r, dtype, g.ev.view.shape, false);
      d.ek->upload(g.ek);
      d.ev->upload(g.ev);
      d.dek = std::make_unique<DevTensor>(r, dtype, g.ek.view.shape, false);
      d.dev = std::make_unique<DevTensor>(r, dtype, g.ev.view.shape, false);
    }
  }
  std::vector<ncclComm_t>& cs = comms(R);
  run_ranks(R, [&](int r) {
    RankData& d = data[static_cast<size_t>(r)];
    cudaStream_t stream;
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    nattn::dist::ShardedOptions opt;
    opt.run.backend = var.backend;
    opt.overlap = var.overlap;
    if (var.keep_halo) {
      opt.key_halo = d.kh->view;
      opt.value_halo = d.vh->view;
    }
    nattn::NaForwardArgs f;
    f.query = d.q->view;
    f.key = d.k->view;
    f.value = d.v->view;
    f.out = d.out->view;
    f.lse = d.lse->view;
    f.params = p.params;
    if (p.extra > 0) {
      f.additional_keys = d.ek->view;
      f.additional_values = d.ev->view;
    }
    nattn::dist::na_forward_sharded(f, plan, r, cs[static_cast<size_t>(r)], stream, opt);
    nattn::NaBackwardArgs b;
    b.query = d.q->view;
    b.key = d.k->view;
    b.value = d.v->view;
    b.out = d.out->view;
    b.lse = d.lse->view;
    b.dout = d.dout->view;
    b.dquery = d.dq->view;
    b.dkey = d.dk->view;
    b.dvalue = d.dv->view;
    b.params = p.params;
    if (p.extra > 0) {
      b.additional_keys = d.ek->view;
      b.additional_values = d.ev->view;
      b.dadditional_keys = d.dek->view;
      b.dadditional_values = d.dev->view;
    }
    nattn::dist::na_backward_sharded(b, plan, r, cs[static_cast<size_t>(r)], stream, opt);
    check_cuda(cudaStreamSynchronize(stream), "rank stream");
    check_cuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
  });
  // Assemble and compare.
  HostTensor out = g.out, lse = g.lse, dq = g.dq, dk = g.dk, dv = g.dv;
  std::vector<float> dek_sum, dev_sum;  // additional keys: the sum of the ranks' contributions
  if (p.extra > 0) {
    dek_sum.assign(static_cast<size_t>(g.dek.numel()), 0.f);
    dev_sum.assign(static_cast<size_t>(g.dev.numel()), 0.f);
  }
  for (int r = 0; r < R; ++r) {
    const RankData& d = data[static_cast<size_t>(r)];
    const nattn::dist::RankPlan& rp = plan.ranks[static_cast<size_t>(r)];
    insert(out, d.out->download(), nd, rp.slab);
    insert(lse, d.lse->download(), nd, rp.slab);
    insert(dq, d.dq->download(), nd, rp.slab);
    insert(dk, d.dk->download(), nd, rp.slab);
    insert(dv, d.dv->download(), nd, rp.slab);
    if (var.keep_halo) {
      EXPECT_EQ(rel_err(d.kh->download(), extract(g.k, nd, rp.halo)), 0.0) << "key halo of rank " << r;
      EXPECT_EQ(rel_err(d.vh->download(), extract(g.v, nd, rp.halo)), 0.0) << "value halo of rank " << r;
    }
    if (p.extra > 0) {  // this rank's contribution; the sum over ranks is the global gradient
      const HostTensor a = d.dek->download(), b = d.dev->download();
      for (int64_t i = 0; i < a.numel(); ++i) {
        dek_sum[static_cast<size_t>(i)] += a.get(i);
        dev_sum[static_cast<size_t>(i)] += b.get(i);
      }
    }
  }
  const double t = tol(dtype);
  EXPECT_LE(rel_err(out, g.out), t) << "out";
  EXPECT_LE(rel_err(lse, g.lse), t) << "lse";
  EXPECT_LE(rel_err(dq, g.dq), t) << "dq";
  EXPECT_LE(rel_err(dk, g.dk), t) << "dk";
  EXPECT_LE(rel_err(dv, g.dv), t) << "dv";
  if (p.extra > 0) {
    HostTensor a(DType::f32, g.dek.view.shape), b(DType::f32, g.dev.view.shape);
    for (int64_t i = 0; i < a.numel(); ++i) {
      a.set(i, dek_sum[static_cast<size_t>(i)]);
      b.set(i, dev_sum[static_cast<size_t>(i)]);
    }
    EXPECT_LE(rel_err(a, g.dek), t) << "dadditional_keys (sum over ranks)";
    EXPECT_LE(rel_err(b, g.dev), t) << "dadditional_values (sum over ranks)";
  }
}

class NcclSharded : public ::testing::Test {
 protected:
  void SetUp() override {
    if (gpu_count() < 2) GTEST_SKIP() << "needs at least 2 GPUs (found " << gpu_count() << ")";
  }
  // Every rank count 2..N, fp32 and bf16, each variant.
  static void sweep(const std::vector<Problem>& problems, const std::vector<Variant>& variants) {
    const int n = gpu_count();
    uint64_t seed = 1;
    for (const Problem& p : problems)
      for (DType dtype : {DType::f32, DType::bf16}) {
        const Global g = reference(p, dtype, seed++);
        for (int R = 2; R <= n; ++R)
          for (const Variant& v : variants) {
            try {
              run_sharded(p, dtype, g, R, v);
            } catch (const std::exception& e) {
              ADD_FAILURE() << p.name << " " << nattn::dtype_name(dtype) << " R=" << R << ": " << e.what();
            }
          }
      }
  }
};

const std::vector<Variant> kBasic = {{Overlap::automatic, false, false},
                                     {Overlap::none, false, false},
                                     {Overlap::interior, false, false},
                                     {Overlap::automatic, false, false, ""}};

TEST_F(NcclSharded, OneD) {
  sweep({{"1d k7", {64}, params_of({7}, {1}, {1}, {false}), {0}},
         {"1d k9 s3 d2", {72}, params_of({9}, {3}, {2}, {false}), {0}},
         {"1d k5 causal", {48}, params_of({5}, {1}, {1}, {true}), {0}},
         {"1d k15 (wider than slabs)", {40}, params_of({15}, {2}, {1}, {false}), {0}}},
        kBasic);
}

TEST_F(NcclSharded, TwoD) {
  Problem gqa{"2d k5x7 axis0 gqa", {24, 20}, params_of({5, 7}, {1, 1}, {1, 1}, {false, false}), {0}};
  gqa.heads = 4;
  gqa.heads_kv = 2;
  sweep({gqa,
         {"2d k3x5 s2x1 d1x2 causal-x axes 0,1", {24, 20}, params_of({3, 5}, {2, 1}, {1, 2}, {false, true}), {0, 1}},
         {"2d k7x7 axis1", {12, 32}, params_of({7, 7}, {1, 3}, {1, 1}, {false, false}), {1}}},
        kBasic);
}

TEST_F(NcclSharded, ThreeD) {
  sweep({{"3d k3x5x7 axis0", {12, 10, 16}, params_of({3, 5, 7}, {1, 1, 1}, {1, 1, 1}, {false, false, false}), {0}},
         {"3d k3x3x5 s1x2x1 d2x1x1 causal-t axes 0,2", {12, 8, 16},
          params_of({3, 3, 5}, {1, 2, 1}, {2, 1, 1}, {true, false, false}), {0, 2}}},
        kBasic);
}

TEST_F(NcclSharded, StridedTensorsAndKeptHalos) {
  sweep({{"2d k5x5 axes 0,1", {16, 16}, params_of({5, 5}, {1, 1}, {1, 1}, {false, false}), {0, 1}},
         {"3d k3x3x3 axis0", {8, 6, 10}, params_of({3, 3, 3}, {1, 1, 2}, {1, 2, 1}, {false, false, false}), {0}}},
        {{Overlap::automatic, true, false},
         {Overlap::none, true, true},
         {Overlap::automatic, false, true},
         {Overlap::interior, true, true},
         {Overlap::heads, true, true}});
}

TEST_F(NcclSharded, AdditionalKeys) {
  Problem p{"2d k5x5 axis0 + 6 additional keys", {16, 12}, params_of({5, 5}, {1, 1}, {1, 1}, {false, false}), {0}};
  p.extra = 6;
  sweep({p}, kBasic);
}

TEST_F(NcclSharded, ArgumentErrorsBeforeAnyCommunication) {
  const Problem p{"1d", {32}, params_of({5}, {1}, {1}, {false}), {0}};
  const HaloPlan plan = nattn::dist::make_halo_plan(p.extent, p.params, ProcessGrid::even(p.extent, {2}));
  std::vector<ncclComm_t>& cs = comms(2);
  DevTensor q(0, DType::f32, {1, 16, 2, 32}, false), k(0, DType::f32, {1, 16, 2, 32}, false),
      v(0, DType::f32, {1, 16, 2, 32}, false), out(0, DType::f32, {1, 16, 2, 32}, false),
      bad(0, DType::f32, {1, 15, 2, 32}, false);
  nattn::NaForwardArgs f;
  f.query = q.view;
  f.key = k.view;
  f.value = v.view;
  f.out = out.view;
  f.params = p.params;
  const auto message = [&](const nattn::NaForwardArgs& a, int rank, ncclComm_t comm) -> std::string {
    try {
      nattn::dist::na_forward_sharded(a, plan, rank, comm, nullptr);
    } catch (const nattn::ValueError& e) {
      return e.what();
    }
    return "";
  };
  nattn::NaForwardArgs a = f;
  a.key = bad.view;
  EXPECT_NE(message(a, 0, cs[0]).find("key fp32 cuda:0 [1, 15, 2, 32] has 15 tokens on axis 0"), std::string::npos);
  EXPECT_NE(message(f, 1, cs[0]).find("rank=1 but the communicator's rank is 0"), std::string::npos);
  EXPECT_NE(message(f, 2, cs[0]).find("rank=2 is not valid"), std::string::npos);
  a = f;
  a.params = params_of({7}, {1}, {1}, {false});
  EXPECT_NE(message(a, 0, cs[0]).find("differ from the plan's"), std::string::npos);
  a = f;
  a.out = bad.view;
  EXPECT_NE(message(a, 0, cs[0]).find("na_forward_sharded (rank 0): na_forward"), std::string::npos);
  a = f;
  a.sub_domain = nattn::SubDomain{};
  EXPECT_NE(message(a, 0, cs[0]).find("args.sub_domain must be unset"), std::string::npos);
  // Head chunks need at least two key/value heads.
  DevTensor k1(0, DType::f32, {1, 16, 1, 32}, false), v1(0, DType::f32, {1, 16, 1, 32}, false);
  a = f;
  a.key = k1.view;
  a.value = v1.view;
  nattn::dist::ShardedOptions heads;
  heads.overlap = Overlap::heads;
  std::string what;
  try {
    nattn::dist::na_forward_sharded(a, plan, 0, cs[0], nullptr, heads);
  } catch (const nattn::ValueError& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("options.overlap=heads needs at least 2 key/value heads"), std::string::npos) << what;
}

}  // namespace
