// Element masks of 64-row tiles for the portable (mma.sync) kernels, forward and backward.
//
// A walked tile is a box of power-of-two extents (log2 per axis: shift[3], axis 2 fastest, volume
// 64), so "which of its 64 rows does one stationary row see" is one 64-bit word: per axis the
// visible coordinates form one interval [lo, hi) (a query's window; for a key, the queries whose
// window holds it), i.e. a bit range along that axis, and the word is the AND over the axes of
// those ranges replicated across the other axes (tile_visibility).
//
// mma.sync's accumulator layout gives thread (gq = lane / 4, t4 = lane % 4) of a warp the columns
// 8 j + 2 t4 + e (j = 0..7, e = 0..1) of rows gq and gq + 8. quad_transpose + quad_row_bits move a
// row word, built by one lane per row, to the four threads of its row so that each thread holds
// its 16 columns as contiguous bits (bit 2 j + e).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nattn::cuda::tile_mask {

// bit_range, repunits, tile_visibility and quad_transpose are host-callable too, so that
// tests/cuda/test_tile_mask.cpp checks them against a brute force on the CPU (CI has no GPU).

// Bits [lo, hi) of a 64-bit word (0 <= lo, hi <= 64; empty if hi <= lo).
__host__ __device__ __forceinline__ uint64_t bit_range(int lo, int hi) {
  if (hi <= lo) return 0;
  const uint64_t h = hi >= 64 ? ~uint64_t{0} : ((uint64_t{1} << hi) - 1);
  return h & ~((uint64_t{1} << lo) - 1);
}

// Repunits that copy an axis-2 pattern (rep1: every 2^shift[2] bits, 2^shift[1] times) and an
// axis-1,2 pattern (rep0: every 2^(shift[1] + shift[2]) bits, 2^shift[0] times) across the tile.
struct Repunits {
  uint64_t rep1 = 0, rep0 = 0;
};

__host__ __device__ inline Repunits repunits(const int* shift) {
  const int t2 = 1 << shift[2], t1 = 1 << shift[1], t0 = 1 << shift[0];
  Repunits r;
  for (int k = 0; k < t1; ++k) r.rep1 |= uint64_t{1} << (k * t2);
  for (int k = 0; k < t0; ++k) r.rep0 |= uint64_t{1} << (k * t1 * t2);
  return r;
}

// Bit kk set iff the tile row kk (coordinates origin[i] + its in-tile offsets) lies in [lo[i],
// hi[i]) on every axis. Products cannot carry: each pattern fits the stride it is copied with.
__host__ __device__ __forceinline__ uint64_t tile_visibility(const int* lo, const int* hi, const int* origin,
                                                             const int* shift, uint64_t rep1, uint64_t rep0) {
  const int t2 = 1 << shift[2], t1 = 1 << shift[1], t0 = 1 << shift[0];
  const int sh2 = shift[2], sh12 = shift[1] + shift[2];
  auto cl = [](int v, int top) { return v < 0 ? 0 : (v > top ? top : v); };
  uint64_t vis = bit_range(cl(lo[2] - origin[2], t2), cl(hi[2] - origin[2], t2));
  vis *= rep1;
  vis &= bit_range(cl(lo[1] - origin[1], t1) << sh2, cl(hi[1] - origin[1], t1) << sh2);
  vis *= rep0;
  vis &= bit_range(cl(lo[0] - origin[0], t0) << sh12, cl(hi[0] - origin[0], t0) << sh12);
  return vis;
}

// Transpose the 2-bit units of a row's 64-bit visibility word so that the 16 bits of column
// quad t (keys 8j + 2t + e, j = 0..7, e = 0..1; bit 2j + e) are contiguous: word 0 holds quads 0
// (bits 0-15) and 1 (16-31), word 1 quads 2 and 3.
__host__ __device__ __forceinline__ void quad_transpose(uint64_t vis, uint32_t& w0, uint32_t& w1) {
  uint32_t lo = static_cast<uint32_t>(vis), hi = static_cast<uint32_t>(vis >> 32);
  // Bit index (j1 j0 t1 t0 e) -> (t1 t0 j1 j0 e) inside each 32-bit half: two delta swaps.
  auto swap = [](uint32_t x, int d, uint32_t m) {
    const uint32_t t = ((x >> d) ^ x) & m;
    return x ^ t ^ (t << d);
  };
  lo = swap(swap(lo, 6, 0x00CC00CCu), 12, 0x0000F0F0u);
  hi = swap(swap(hi, 6, 0x00CC00CCu), 12, 0x0000F0F0u);
  // Byte t of lo / hi: quad t, keys j = 0..3 / 4..7.
#ifdef __CUDA_ARCH__
  w0 = __byte_perm(lo, hi, 0x5140);
  w1 = __byte_perm(lo, hi, 0x7362);
#else
  // The same byte selection on the host: w0 = (lo.b0, hi.b0, lo.b1, hi.b1), w1 = (lo.b2, hi.b2,
  // lo.b3, hi.b3), byte 0 lowest.
  auto byte = [](uint32_t x, int b) { return (x >> (8 * b)) & 0xffu; };
  w0 = byte(lo, 0) | byte(hi, 0) << 8 | byte(lo, 1) << 16 | byte(hi, 1) << 24;
  w1 = byte(lo, 2) | byte(hi, 2) << 8 | byte(lo, 3) << 16 | byte(hi, 3) << 24;
#endif
}

#ifdef __CUDACC__  // warp shuffles: device code only (the host test includes this header with a C++ compiler)
// This thread's 16 columns of rows `row` and `row + 8` (bits 0-15 and 16-31) from the transposed
// words (w0, w1) of the lane that built each row (lane `row`, `row + 8`: the warp's rows must be
// built by lanes 0..15 = their row index in the m16 tile, base + lane).
__device__ __forceinline__ uint32_t quad_row_bits(uint32_t w0, uint32_t w1, int src_row, int t4) {
  uint32_t m = 0;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int src = src_row + 8 * r;
    const uint32_t a0 = __shfl_sync(0xffffffffu, w0, src), a1 = __shfl_sync(0xffffffffu, w1, src);
    const uint32_t w = (t4 & 2) ? a1 : a0;
    m |= ((t4 & 1) ? (w >> 16) : (w & 0xffffu)) << (16 * r);
  }
  return m;
}
#endif

}  // namespace nattn::cuda::tile_mask
