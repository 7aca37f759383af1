// Host-only check (no GPU needed) of the fragment-layout assumptions of fmha_fwd_kernel.cuh: for
// every consumer thread, S and the P A-fragment hold the same (row, col) element by element, element
// i lies in row half (i >> 1) & 1 and column 8 (i >> 2) + 2 (t % 4) + (i & 1), and O elements 2k,
// 2k+1 are adjacent columns; and that the Q / K /
// V shared-memory layouts equal the image the direct NA mode's TMA boxes write. Not built by CMake;
// run: nvcc -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -I include
//        -I src -I "$(scripts/cutlass_include.sh)" src/cuda/sm90/fmha_fwd/layout_check.cu -o /tmp/lc && /tmp/lc
#include "cuda/sm90/fmha_fwd/fmha_fwd_kernel.cuh"
#include <cstdio>
using namespace cute;
template <class T, int D> int check() {
  using C = nattn::cuda::sm90::FmhaFwdConfig<T, D>;
  constexpr int N = C::kBlockN, BD = C::kBlockD;  // keys per KV tile (64 at D = 256), head dims per box
  typename C::MmaQK mma_qk; typename C::MmaPV mma_pv;
  int bad = 0;
  for (int t = 0; t < 256; ++t) {
    auto thr_qk = mma_qk.get_thread_slice(t);
    auto thr_pv = mma_pv.get_thread_slice(t);
    Tensor cS = thr_qk.partition_C(make_identity_tensor(Shape<Int<128>, Int<N>>{}));
    Tensor cP = thr_pv.partition_A(make_identity_tensor(Shape<Int<128>, Int<N>>{}));
    Tensor cO = thr_pv.partition_C(make_identity_tensor(Shape<Int<128>, Int<D>>{}));
    Tensor tOrP = make_tensor<T>(partition_shape_A(mma_pv, Shape<Int<128>, Int<N>>{}));
    if (size(cP) != size(cS) || size(tOrP) != size(cS)) { printf("size mismatch\n"); return 1; }
    // tOrP is compact col-major over its shape: flat index i <-> coordinate cP(i) must hold, i.e.
    // cP must be indexed by the same flat index in the same order (shape equality).
    if (!(shape(tOrP) == shape(cP))) { printf("shape mismatch\n"); return 1; }
    const int row0 = get<0>(cS(0));
    if (row0 != (t / 128) * 64 + (t % 128) / 32 * 16 + (t % 32) / 4) ++bad;
    for (int i = 0; i < size(cS); ++i) {
      if (get<0>(cS(i)) != row0 + 8 * ((i >> 1) & 1)) ++bad;
      if (!(cS(i) == cP(i))) ++bad;
      // The NA mask's column formula (fmha_fwd_kernel.cuh, apply_mask).
      if (get<1>(cS(i)) != 8 * (i >> 2) + 2 * (t & 3) + (i & 1)) ++bad;
    }
    const int orow0 = get<0>(cO(0));
    if (orow0 != row0) ++bad;
    for (int i = 0; i < size(cO); ++i) {
      if (get<0>(cO(i)) != orow0 + 8 * ((i >> 1) & 1)) ++bad;
      if ((i & 1) == 0 && (get<1>(cO(i + 1)) != get<1>(cO(i)) + 1 || get<1>(cO(i)) % 2 != 0)) ++bad;
    }
  }
  // The TMA image of the direct NA mode (one box of BD head-dim elements x `rows` tokens per block):
  // element (token r, head-dim d) of stage s at element s * rows * D + (d / BD) * rows * BD + r * BD +
  // d % BD before the 128-byte (64-byte at D = 32) swizzle, which TMA and wgmma both apply to the
  // byte address (bases 1024-aligned), so the layouts' unswizzled parts (layout_b) must equal it.
  // Q (128 tokens) / K (N tokens) (token, d), V (d, token).
  auto tma_image = [](int rows, int s, int r, int d) { return s * rows * D + (d / BD) * rows * BD + r * BD + d % BD; };
  auto lq = typename C::SmemLayoutQ{}.layout_b();
  auto lk = typename C::SmemLayoutK{}.layout_b();
  auto lv = typename C::SmemLayoutV{}.layout_b();
  int bad_image = 0;
  for (int r = 0; r < 128; ++r)
    for (int d = 0; d < D; ++d) {
      if (int(lq(r, d)) != tma_image(128, 0, r, d)) ++bad_image;
      for (int s = 0; r < N && s < C::kStages; ++s) {
        if (int(lk(r, d, s)) != tma_image(N, s, r, d)) ++bad_image;
        if (int(lv(d, r, s)) != tma_image(N, s, r, d)) ++bad_image;
      }
    }
  printf("  TMA box image of Q/K/V: %d mismatches\n", bad_image);
  bad += bad_image;
  printf("D=%d sizeof T=%d: %d mismatches; smem %d bytes, stages %d\n", D, int(sizeof(T)), bad, C::kSmemBytes, C::kStages);
  if (D == 128) { print(shape(partition_shape_A(mma_pv, Shape<Int<128>, Int<128>>{}))); printf("\n"); }
  return bad;
}
int main() {
  int bad = check<cutlass::bfloat16_t, 128>() + check<cutlass::half_t, 128>() + check<cutlass::bfloat16_t, 64>() +
            check<cutlass::half_t, 64>() + check<cutlass::bfloat16_t, 32>() + check<cutlass::bfloat16_t, 256>() +
            check<cutlass::half_t, 256>();
  printf(bad ? "FAIL\n" : "OK\n");
  return bad != 0;
}
