// Timing of the Hopper (sm_90a) NA forward (hopper-fna, src/cuda/sm90/fmha_fwd/na_fwd_sm90.cpp),
// called directly: the direct mode (no permutation) with the first four configs the finder lists
// for the problem (the first is the default), and the permuted mode (NATTN_HOPPER_FNA_PERMUTED=1,
// NATTEN's default tiles: (4,4,8) / (4,4,8), at head dim 256 (4,4,8) / (4,4,4)) as the whole op and as the kernel alone on pre-permuted tensors; compared with
// cutlass-fna (registry) and, for the stride-16x8x8 case, a dense hopper-fmha run, in the same
// process. Median of 10 timed calls after 3 warm-ups, CUDA events. The stride-16x8x8 ratio is also
// measured with the two kernels alternating call by call (same clocks and temperature).
// Default: 3-D 30x48x80, window 18x24x24, B=1, 24 heads, D=128, bf16, stride 1 and 16x8x8.
// Effective FLOPs = 4 * tokens * prod(window) * D * heads.
// Usage: bench_hopper_fna [--fp16] [--hd 32|64|128|256] [--heads N] [--no-compare] [--diag]
// --diag adds dense attention on 10240 tokens three ways (hopper-fmha, hopper-fna 1-D and 3-D with
// full windows) to separate the NA code's cost from the 3-D boxes'.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/half.h"
#include "cuda/common/token_permute.h"
#include "cuda/sm90/fmha_fwd/na_fwd_sm90.h"
#include "nattn/backends.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

using namespace nattn;

#define CHECK(call) NATTN_BENCH_CHECK(call)

namespace {




std::string tup(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + ")";
}

}  // namespace

int main(int argc, char** argv) {
  int64_t H = 24, D = 128;
  DType dtype = DType::bf16;
  bool compare = true, diag = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--heads" && i + 1 < argc) H = std::atoll(argv[++i]);
    else if (a == "--hd" && i + 1 < argc) D = std::atoll(argv[++i]);
    else if (a == "--fp16") dtype = DType::f16;
    else if (a == "--no-compare") compare = false;
    else if (a == "--diag") diag = true;
    else {
      std::fprintf(stderr, "usage: %s [--fp16] [--hd 32|64|128|256] [--heads N] [--no-compare] [--diag]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<int64_t> S = {30, 48, 80}, window = {18, 24, 24};
  const int64_t tokens = S[0] * S[1] * S[2];
  const int64_t n = tokens * H * D;
  const Device gpu{DeviceKind::cuda, 0};
  void* q = bench::random_device(n, dtype, 1);
  void* k = bench::random_device(n, dtype, 2);
  void* v = bench::random_device(n, dtype, 3);
  void* o = bench::device_buffer(n * 2);
  float* lse = static_cast<float*>(bench::device_buffer(tokens * H * 4));
  NaForwardArgs args;
  args.query = TensorView(q, dtype, {1, S[0], S[1], S[2], H, D}, gpu);
  args.key = TensorView(k, dtype, {1, S[0], S[1], S[2], H, D}, gpu);
  args.value = TensorView(v, dtype, {1, S[0], S[1], S[2], H, D}, gpu);
  args.out = TensorView(o, dtype, {1, S[0], S[1], S[2], H, D}, gpu);
  args.lse = TensorView(lse, DType::f32, {1, S[0], S[1], S[2], H}, gpu);
  const double flops = 4.0 * static_cast<double>(tokens) * static_cast<double>(window[0] * window[1] * window[2]) *
                       static_cast<double>(D) * static_cast<double>(H);
  auto tf = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
  int rc = 0;
  // hopper-fmha on dense problems of the same heads and head dim: 16384 queries x 16384 keys (the
  // throughput the stride-16x8x8 case is compared with), and x 10368 keys (81 KV tiles per CTA, as
  // the stride-16x8x8 NA walks: the same per-CTA work, to separate the per-CTA fixed costs).
  double fmha_tf = 0.0;
  FmhaForwardArgs dense_fmha;  // the 16384 x 16384 problem, kept for the interleaved comparison below
  const double dense_flops = 4.0 * 16384.0 * 16384.0 * double(D) * double(H);
  for (const int64_t Lkv : {int64_t{16384}, int64_t{10368}}) {
    const int64_t L = 16384, nq = L * H * D, nkv = Lkv * H * D;
    void* fq = bench::random_device(nq, dtype, 4);
    void* fk = bench::random_device(nkv, dtype, 5);
    void* fv = bench::random_device(nkv, dtype, 6);
    void* fo = bench::device_buffer(nq * 2);
    FmhaForwardArgs fa;
    fa.query = TensorView(fq, dtype, {1, L, H, D}, gpu);
    fa.key = TensorView(fk, dtype, {1, Lkv, H, D}, gpu);
    fa.value = TensorView(fv, dtype, {1, Lkv, H, D}, gpu);
    fa.out = TensorView(fo, dtype, {1, L, H, D}, gpu);
    try {
      RunOptions opt;
      opt.backend = "hopper-fmha";
      const double ms = bench::median_ms([&] { fmha_forward(fa, opt); });
      const double t = 4.0 * double(L) * double(Lkv) * double(D) * double(H) / (ms * 1e-3) / 1e12;
      if (Lkv == L) fmha_tf = t;
      std::printf("hopper-fmha dense B=1 Sq=%lld Skv=%lld H=%lld D=%lld: %8.3f ms %7.1f TFLOP/s\n",
                  static_cast<long long>(L), static_cast<long long>(Lkv), static_cast<long long>(H),
                  static_cast<long long>(D), ms, t);
    } catch (const std::exception& e) {
      std::printf("hopper-fmha dense not run: %s\n", e.what());
    }
    if (Lkv == L) {
      dense_fmha = fa;
      continue;
    }
    for (void* p : {fq, fk, fv, fo}) CHECK(cudaFree(p));
  }
  if (diag) {
    // Dense attention three ways on 10240 tokens (24 heads, D 128): hopper-fmha, hopper-fna 1-D
    // with a full window (the NA kernel on 1-D boxes), hopper-fna 3-D 16x16x40 with a full window
    // (3-D boxes (2,8,8)): the same 128x128 tiles, so differences are the NA code and the boxes.
    const int64_t L = 10240, nd = L * H * D;
    void* dq = bench::random_device(nd, dtype, 7);
    void* dk = bench::random_device(nd, dtype, 8);
    void* dv = bench::random_device(nd, dtype, 9);
    void* dout = bench::device_buffer(nd * 2);
    const double dense = 4.0 * double(L) * double(L) * double(D) * double(H);
    auto report = [&](const char* what, double ms) {
      std::printf("diag %-44s %8.3f ms %7.1f TFLOP/s\n", what, ms, dense / (ms * 1e-3) / 1e12);
    };
    FmhaForwardArgs fa;
    fa.query = TensorView(dq, dtype, {1, L, H, D}, gpu);
    fa.key = TensorView(dk, dtype, {1, L, H, D}, gpu);
    fa.value = TensorView(dv, dtype, {1, L, H, D}, gpu);
    fa.out = TensorView(dout, dtype, {1, L, H, D}, gpu);
    RunOptions opt;
    opt.backend = "hopper-fmha";
    report("hopper-fmha 10240", bench::median_ms([&] { fmha_forward(fa, opt); }));
    for (const std::vector<int64_t>& grid : {std::vector<int64_t>{L}, std::vector<int64_t>{16, 16, 40}}) {
      NaForwardArgs na;
      std::vector<int64_t> shape = {1};
      shape.insert(shape.end(), grid.begin(), grid.end());
      shape.push_back(H);
      shape.push_back(D);
      na.query = TensorView(dq, dtype, shape, gpu);
      na.key = TensorView(dk, dtype, shape, gpu);
      na.value = TensorView(dv, dtype, shape, gpu);
      na.out = TensorView(dout, dtype, shape, gpu);
      na.params.rank = static_cast<int>(grid.size());
      for (size_t i = 0; i < grid.size(); ++i) na.params.kernel_size[i] = grid[i];
      TileConfig cfg;
      cfg.q_tile = cfg.kv_tile = grid.size() == 1 ? std::vector<int64_t>{128} : std::vector<int64_t>{2, 8, 8};
      cfg.schedule = KernelSchedule::pingpong;
      const double ms = bench::median_ms([&] { cuda::sm90::na_forward(na, cfg, nullptr); });
      report(grid.size() == 1 ? "hopper-fna 1-D 10240 full window" : "hopper-fna 3-D 16x16x40 full window (2,8,8)", ms);
    }
    for (void* p : {dq, dk, dv, dout}) CHECK(cudaFree(p));
  }
  for (const std::vector<int64_t>& stride : {std::vector<int64_t>{1, 1, 1}, std::vector<int64_t>{16, 8, 8}}) {
    args.params.rank = 3;
    for (int i = 0; i < 3; ++i) {
      args.params.kernel_size[static_cast<size_t>(i)] = window[static_cast<size_t>(i)];
      args.params.stride[static_cast<size_t>(i)] = stride[static_cast<size_t>(i)];
      args.params.dilation[static_cast<size_t>(i)] = 1;
      args.params.is_causal[static_cast<size_t>(i)] = false;
    }
    std::printf("NA forward 3-D B=1 S=%s window=%s stride=%s H=%lld D=%lld %s (effective FLOPs %.3g)\n",
                tup(S).c_str(), tup(window).c_str(), tup(stride).c_str(), static_cast<long long>(H),
                static_cast<long long>(D), dtype_name(dtype), flops);
    NaProblem prob;
    prob.batch = 1;
    prob.spatial = S;
    prob.heads = prob.heads_kv = H;
    prob.head_dim = prob.head_dim_v = D;
    prob.dtype = dtype;
    prob.device = gpu;
    prob.compute_capability = 90;
    prob.params = args.params;
    const std::vector<TileConfig> listed = get_configs("hopper-fna", prob);
    // Direct mode: the first four listed configs (the first is the default); then the permuted mode
    // (NATTN_HOPPER_FNA_PERMUTED=1) with NATTN's default shape, op and kernel alone.
    std::vector<std::pair<TileConfig, bool>> runs;
    for (size_t i = 0; i < listed.size() && i < 4; ++i) runs.push_back({listed[i], true});
    TileConfig natten_def;
    natten_def.q_tile = {4, 4, 8};
    natten_def.kv_tile = D > 128 ? std::vector<int64_t>{4, 4, 4} : std::vector<int64_t>{4, 4, 8};
    natten_def.schedule = KernelSchedule::pingpong;
    runs.push_back({natten_def, false});
    for (const auto& [cfg, direct] : runs) {
      const std::string name = "q" + tup(cfg.q_tile) + " kv" + tup(cfg.kv_tile);
      try {
        if (!direct) setenv("NATTN_HOPPER_FNA_PERMUTED", "1", 1);
        const std::string blocker = cuda::sm90::na_forward_direct_blocker(args);
        const double ms = bench::median_ms([&] { cuda::sm90::na_forward(args, cfg, nullptr); });
        CHECK(cudaGetLastError());
        unsetenv("NATTN_HOPPER_FNA_PERMUTED");
        std::printf("  hopper-fna %-8s %-26s op %8.3f ms %7.1f TFLOP/s", blocker.empty() ? "direct" : "permuted",
                    name.c_str(), ms, tf(ms));
        if (stride[0] > 1 && fmha_tf > 0) std::printf(" (%.2fx hopper-fmha)", tf(ms) / fmha_tf);
        if (!direct) {
          // The kernel alone on permuted copies (the same permutation the op uses).
          sem::Permutation perm, kv_perm;
          perm.rank = kv_perm.rank = 3;
          perm.flip = kv_perm.flip = true;
          for (int i = 0; i < 3; ++i) {
            perm.extent[i] = kv_perm.extent[i] = S[static_cast<size_t>(i)];
            perm.tile[i] = cfg.q_tile[static_cast<size_t>(i)];
            kv_perm.tile[i] = cfg.kv_tile[static_cast<size_t>(i)];
          }
          const int64_t P = perm.seq_len(), Pkv = kv_perm.seq_len();
          void* qp = bench::device_buffer(P * H * D * 2);
          void* kp = bench::device_buffer(Pkv * H * D * 2);
          void* vp = bench::device_buffer(Pkv * H * D * 2);
          void* op = bench::device_buffer(P * H * D * 2);
          float* lp = static_cast<float*>(bench::device_buffer(P * H * 4));
          cuda::token_permute(args.query, TensorView(qp, dtype, {1, P, H, D}, gpu), perm, nullptr);
          cuda::token_permute(args.key, TensorView(kp, dtype, {1, Pkv, H, D}, gpu), kv_perm, nullptr);
          cuda::token_permute(args.value, TensorView(vp, dtype, {1, Pkv, H, D}, gpu), kv_perm, nullptr);
          CHECK(cudaDeviceSynchronize());
          const double kms =
              bench::median_ms([&] { cuda::sm90::na_forward_permuted(args, cfg, qp, kp, vp, op, lp, nullptr); });
          CHECK(cudaGetLastError());
          std::printf(" | kernel %8.3f ms %7.1f TFLOP/s | permutes %.1f%%", kms, tf(kms), 100.0 * (ms - kms) / ms);
          for (void* p : {qp, kp, vp, op, static_cast<void*>(lp)}) CHECK(cudaFree(p));
        }
        std::printf("\n");
      } catch (const std::exception& e) {
        unsetenv("NATTN_HOPPER_FNA_PERMUTED");
        std::printf("  hopper-fna %-26s failed: %s\n", name.c_str(), e.what());
        rc = 1;
      }
    }
    if (stride[0] > 1 && dense_fmha.query.data != nullptr) {
      // The ratio again with the default config and the dense hopper-fmha run alternately (the
      // sequential numbers above compare a cool GPU's FMHA with an NA run that comes seconds later).
      RunOptions fopt;
      fopt.backend = "hopper-fmha";
      const auto [na_ms, fmha_ms] = bench::interleaved_median_ms(
          [&] { cuda::sm90::na_forward(args, listed.front(), nullptr); }, [&] { fmha_forward(dense_fmha, fopt); });
      const double na_tf = tf(na_ms), f_tf = dense_flops / (fmha_ms * 1e-3) / 1e12;
      std::printf("  interleaved: hopper-fna %s %8.3f ms %7.1f TFLOP/s | hopper-fmha dense %8.3f ms %7.1f TFLOP/s | "
                  "%.3fx\n",
                  ("q" + tup(listed.front().q_tile) + " kv" + tup(listed.front().kv_tile)).c_str(), na_ms, na_tf,
                  fmha_ms, f_tf, na_tf / f_tf);
    }
    if (compare) {
      try {
        RunOptions opt;
        opt.backend = "cutlass-fna";
        const double ms = bench::median_ms([&] { na_forward(args, opt); });
        std::printf("  cutlass-fna (default config)  %8.3f ms %7.1f TFLOP/s\n", ms, tf(ms));
      } catch (const std::exception& e) {
        std::printf("  cutlass-fna  not run: %s\n", e.what());
      }
    }
  }
  CHECK(cudaDeviceSynchronize());
  for (void* p : {q, k, v, o, static_cast<void*>(lse)}) CHECK(cudaFree(p));
  for (void* p : {dense_fmha.query.data, dense_fmha.key.data, dense_fmha.value.data, dense_fmha.out.data})
    if (p != nullptr) CHECK(cudaFree(p));
  return rc;
}
