// Multi-GPU NA over NCCL: strong and weak scaling of a 3-D video problem split along axis 0
// (bf16, batch 1, 24 heads, head dim 128, window 18x24x24). One process drives the GPUs (one host
// thread per rank). Per rank count R: forward and forward+backward with the default overlap (head
// chunks), without overlap and (forward+backward) with the interior split, and the K/V halo
// exchange alone (gather_halo); the median of the timed iterations of each rank, then
// the slowest rank. Strong: global 32x48x80 (R slabs of 32/R rows); weak: 32 rows per rank
// (global 32R x 48 x 80). Markdown on stdout.
//
// Usage: bench_nccl_na [--quick] [--ranks 1,2,4,8] [--iters N]
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/half.h"
#include "nattn/distributed.h"
#include "nattn/ops.h"

using namespace nattn;

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != gen_; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0, gen_ = 0;
};

struct Buf {
  int dev = 0;
  void* ptr = nullptr;
  TensorView view;
  Buf(int d, DType dtype, std::vector<int64_t> shape, bool random, uint64_t seed) : dev(d) {
    check(cudaSetDevice(d), "cudaSetDevice");
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const size_t bytes = static_cast<size_t>(n * dtype_size(dtype));
    check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    if (random) {
      std::vector<uint16_t> h(static_cast<size_t>(n));
      uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
      for (auto& x : h) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x = detail::float_to_bf16(static_cast<float>((s >> 40) & 0xFFFF) / 32768.f - 1.f);
      }
      check(cudaMemcpy(ptr, h.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    } else {
      check(cudaMemset(ptr, 0, bytes), "cudaMemset");
    }
    view = TensorView(ptr, dtype, std::move(shape), Device{DeviceKind::cuda, d});
  }
  ~Buf() {
    cudaSetDevice(dev);
    cudaFree(ptr);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

struct Timings {
  double fwd = 0, fwd_serial = 0, fwdbwd = 0, fwdbwd_serial = 0, fwdbwd_interior = 0, halo = 0;
};

struct Row {
  std::string mode;
  int ranks;
  std::vector<int64_t> global;
  int64_t slab_rows, halo_rows;
  Timings t;
};

// Runs the R ranks; returns the slowest rank's median of each measurement.
Timings run(const std::vector<int64_t>& global, int R, int iters) {
  const int64_t heads = 24, hd = 128;
  const NaParams params = [] {
    NaParams p;
    p.rank = 3;
    p.kernel_size = {18, 24, 24};
    return p;
  }();
  const dist::HaloPlan plan = dist::make_halo_plan(global, params, dist::ProcessGrid::even(global, {R, 1, 1}));
  std::vector<ncclComm_t> comms(static_cast<size_t>(R));
  std::vector<int> devs(static_cast<size_t>(R));
  for (int i = 0; i < R; ++i) devs[static_cast<size_t>(i)] = i;
  if (ncclCommInitAll(comms.data(), R, devs.data()) != ncclSuccess) throw std::runtime_error("ncclCommInitAll failed");
  Barrier barrier(R);
  std::vector<Timings> per_rank(static_cast<size_t>(R));
  std::vector<std::string> errors(static_cast<size_t>(R));
  std::vector<std::thread> threads;
  for (int r = 0; r < R; ++r)
    threads.emplace_back([&, r] {
      try {
        check(cudaSetDevice(r), "cudaSetDevice");
        // Keep the stream-ordered allocations of the sharded ops cached between calls.
        cudaMemPool_t pool;
        check(cudaDeviceGetDefaultMemPool(&pool, r), "cudaDeviceGetDefaultMemPool");
        uint64_t threshold = UINT64_MAX;
        check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold), "cudaMemPoolSetAttribute");
        const dist::RankPlan& rp = plan.ranks[static_cast<size_t>(r)];
        const std::vector<int64_t> shape{1, rp.slab.size(0), rp.slab.size(1), rp.slab.size(2), heads, hd};
        const std::vector<int64_t> lse_shape{1, rp.slab.size(0), rp.slab.size(1), rp.slab.size(2), heads};
        const uint64_t seed = static_cast<uint64_t>(r) * 16;
        Buf q(r, DType::bf16, shape, true, seed), k(r, DType::bf16, shape, true, seed + 1),
            v(r, DType::bf16, shape, true, seed + 2), dout(r, DType::bf16, shape, true, seed + 3),
            out(r, DType::bf16, shape, false, 0), lse(r, DType::f32, lse_shape, false, 0),
            dq(r, DType::bf16, shape, false, 0), dk(r, DType::bf16, shape, false, 0), dv(r, DType::bf16, shape, false, 0),
            kh(r, DType::bf16, dist::halo_shape(plan, r, k.view), false, 0),
            vh(r, DType::bf16, dist::halo_shape(plan, r, v.view), false, 0);
        cudaStream_t stream;
        check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        NaForwardArgs f;
        f.query = q.view;
        f.key = k.view;
        f.value = v.view;
        f.out = out.view;
        f.lse = lse.view;
        f.params = params;
        NaBackwardArgs b;
        b.query = q.view;
        b.key = k.view;
        b.value = v.view;
        b.out = out.view;
        b.lse = lse.view;
        b.dout = dout.view;
        b.dquery = dq.view;
        b.dkey = dk.view;
        b.dvalue = dv.view;
        b.params = params;
        const auto options = [&](dist::Overlap overlap) {
          dist::ShardedOptions o;
          o.overlap = overlap;
          o.run.requires_grad = true;
          return o;
        };
        const auto timed = [&](const std::function<void()>& fn) {
          cudaEvent_t a, z;
          check(cudaEventCreate(&a), "cudaEventCreate");
          check(cudaEventCreate(&z), "cudaEventCreate");
          std::vector<float> ms;
          for (int i = 0; i < iters + 2; ++i) {
            check(cudaStreamSynchronize(stream), "sync");
            barrier.wait();
            check(cudaEventRecord(a, stream), "record");
            fn();
            check(cudaEventRecord(z, stream), "record");
            check(cudaEventSynchronize(z), "sync");
            float t = 0;
            check(cudaEventElapsedTime(&t, a, z), "elapsed");
            if (i >= 2) ms.push_back(t);  // 2 warm-ups
          }
          cudaEventDestroy(a);
          cudaEventDestroy(z);
          std::sort(ms.begin(), ms.end());
          return static_cast<double>(ms[ms.size() / 2]);
        };
        ncclComm_t comm = comms[static_cast<size_t>(r)];
        Timings& t = per_rank[static_cast<size_t>(r)];
        t.halo = timed([&] { dist::gather_halo(k.view, v.view, kh.view, vh.view, plan, r, comm, stream); });
        t.fwd = timed([&] { dist::na_forward_sharded(f, plan, r, comm, stream, options(dist::Overlap::automatic)); });
        t.fwd_serial = timed([&] { dist::na_forward_sharded(f, plan, r, comm, stream, options(dist::Overlap::none)); });
        t.fwdbwd = timed([&] {
          dist::na_forward_sharded(f, plan, r, comm, stream, options(dist::Overlap::automatic));
          dist::na_backward_sharded(b, plan, r, comm, stream, options(dist::Overlap::automatic));
        });
        t.fwdbwd_serial = timed([&] {
          dist::na_forward_sharded(f, plan, r, comm, stream, options(dist::Overlap::none));
          dist::na_backward_sharded(b, plan, r, comm, stream, options(dist::Overlap::none));
        });
        t.fwdbwd_interior = timed([&] {
          dist::na_forward_sharded(f, plan, r, comm, stream, options(dist::Overlap::interior));
          dist::na_backward_sharded(b, plan, r, comm, stream, options(dist::Overlap::interior));
        });
        check(cudaStreamSynchronize(stream), "sync");
        cudaStreamDestroy(stream);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (ncclComm_t c : comms) ncclCommDestroy(c);
  for (int r = 0; r < R; ++r)
    if (!errors[static_cast<size_t>(r)].empty())
      throw std::runtime_error("rank " + std::to_string(r) + ": " + errors[static_cast<size_t>(r)]);
  Timings worst;
  for (const Timings& t : per_rank) {
    worst.fwd = std::max(worst.fwd, t.fwd);
    worst.fwd_serial = std::max(worst.fwd_serial, t.fwd_serial);
    worst.fwdbwd = std::max(worst.fwdbwd, t.fwdbwd);
    worst.fwdbwd_serial = std::max(worst.fwdbwd_serial, t.fwdbwd_serial);
    worst.fwdbwd_interior = std::max(worst.fwdbwd_interior, t.fwdbwd_interior);
    worst.halo = std::max(worst.halo, t.halo);
  }
  return worst;
}

std::vector<int> parse_ranks(const char* s) {
  std::vector<int> out;
  for (const char* p = s; *p;) {
    out.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < 1) {
    std::printf("no GPU\n");
    return 0;
  }
  int iters = 10;
  std::vector<int> ranks;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) iters = 3;
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--ranks") && i + 1 < argc) ranks = parse_ranks(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--ranks 1,2,4,8] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  if (ranks.empty())
    for (int r = 1; r <= gpus; r *= 2) ranks.push_back(r);
  std::printf("Multi-GPU NA (NCCL %s): bf16, batch 1, 24 heads, head dim 128, window 18x24x24, split along axis 0; "
              "median of %d iterations, slowest rank; %d GPUs visible.\n\n",
              [] {
                static char v[32];
                int code = 0;
                ncclGetVersion(&code);
                std::snprintf(v, sizeof v, "%d", code);
                return v;
              }(),
              iters, gpus);
  std::printf("| scaling | ranks | global | rows/rank | halo rows | halo exchange ms | fwd ms | fwd no-overlap ms | "
              "fwd+bwd ms | fwd+bwd no-overlap ms | fwd+bwd interior split ms | overlap gain fwd+bwd | efficiency fwd+bwd |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  double base_strong = 0, base_weak = 0;
  for (const char* mode : {"strong", "weak"}) {
    for (int R : ranks) {
      if (R < 1 || R > gpus) continue;
      const std::vector<int64_t> global{std::string(mode) == "strong" ? 32 : 32 * static_cast<int64_t>(R), 48, 80};
      if (global[0] / R < 1) continue;
      try {
        const Timings t = run(global, R, iters);
        const dist::HaloPlan plan = dist::make_halo_plan(global, [] {
          NaParams p;
          p.rank = 3;
          p.kernel_size = {18, 24, 24};
          return p;
        }(), dist::ProcessGrid::even(global, {R, 1, 1}));
        int64_t halo_rows = 0;
        for (const auto& rp : plan.ranks) halo_rows = std::max(halo_rows, rp.halo.size(0));
        double& base = std::string(mode) == "strong" ? base_strong : base_weak;
        if (R == ranks.front() && R == 1) base = t.fwdbwd;
        const double eff = base > 0 ? (std::string(mode) == "strong" ? base / (R * t.fwdbwd) : base / t.fwdbwd) : 0;
        std::printf("| %s | %d | %lldx48x80 | %lld | %lld | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx | %s |\n", mode,
                    R, static_cast<long long>(global[0]), static_cast<long long>(global[0] / R),
                    static_cast<long long>(halo_rows), t.halo, t.fwd, t.fwd_serial, t.fwdbwd, t.fwdbwd_serial,
                    t.fwdbwd_interior,
                    t.fwdbwd_serial / t.fwdbwd, base > 0 ? (std::to_string(static_cast<int>(eff * 100 + 0.5)) + "%").c_str() : "-");
        std::fflush(stdout);
      } catch (const std::exception& e) {
        std::printf("| %s | %d | error: %s |\n", mode, R, e.what());
      }
    }
  }
  std::printf("\nrows/rank: the slab's rows (first slab); halo rows: the largest halo box along axis 0 (own rows "
              "included). Efficiency: strong T1 / (R TR), weak T1 / TR, from the forward+backward time with overlap.\n");
  return 0;
}
