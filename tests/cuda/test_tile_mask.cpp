// Host checks of the element-mask bit words of the portable kernels (src/cuda/common/tile_mask.cuh),
// against a brute force: no GPU needed, so CI runs them.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "cuda/common/tile_mask.cuh"

namespace mask = nattn::cuda::tile_mask;

namespace {

// Row kk of a tile of log2 extents `shift` (axis 2 fastest): its in-tile offsets.
void offsets(int kk, const int* shift, int* a) {
  a[2] = kk & ((1 << shift[2]) - 1);
  a[1] = (kk >> shift[2]) & ((1 << shift[1]) - 1);
  a[0] = kk >> (shift[1] + shift[2]);
}

}  // namespace

TEST(TileMask, BitRange) {
  EXPECT_EQ(mask::bit_range(0, 64), ~uint64_t{0});
  EXPECT_EQ(mask::bit_range(0, 0), 0u);
  EXPECT_EQ(mask::bit_range(64, 64), 0u);
  EXPECT_EQ(mask::bit_range(5, 3), 0u);
  EXPECT_EQ(mask::bit_range(3, 5), uint64_t{0x18});
  EXPECT_EQ(mask::bit_range(63, 64), uint64_t{1} << 63);
  for (int lo = 0; lo <= 64; ++lo)
    for (int hi = 0; hi <= 64; ++hi) {
      const uint64_t w = mask::bit_range(lo, hi);
      for (int b = 0; b < 64; ++b) ASSERT_EQ((w >> b) & 1u, (lo <= b && b < hi) ? 1u : 0u) << lo << " " << hi;
    }
}

// Every tile shape of volume 64, random per-axis intervals and tile origins (intervals empty, inside,
// straddling or outside the tile): bit kk is set iff row kk's coordinates lie in every interval.
TEST(TileMask, VisibilityMatchesBruteForce) {
  std::mt19937 rng(1234);
  int checked = 0;
  for (int s0 = 0; s0 <= 6; ++s0)
    for (int s1 = 0; s0 + s1 <= 6; ++s1) {
      const int shift[3] = {s0, s1, 6 - s0 - s1};
      const mask::Repunits rep = mask::repunits(shift);
      for (int trial = 0; trial < 300; ++trial) {
        int lo[3], hi[3], origin[3];
        for (int i = 0; i < 3; ++i) {
          const int t = 1 << shift[i];
          origin[i] = static_cast<int>(rng() % 200);
          lo[i] = origin[i] - t + static_cast<int>(rng() % (3 * t + 1));
          hi[i] = lo[i] + static_cast<int>(rng() % (2 * t + 2)) - 1;  // sometimes empty (hi <= lo)
        }
        const uint64_t w = mask::tile_visibility(lo, hi, origin, shift, rep.rep1, rep.rep0);
        for (int kk = 0; kk < 64; ++kk) {
          int a[3];
          offsets(kk, shift, a);
          bool seen = true;
          for (int i = 0; i < 3; ++i) seen = seen && lo[i] <= origin[i] + a[i] && origin[i] + a[i] < hi[i];
          ASSERT_EQ((w >> kk) & 1u, seen ? 1u : 0u)
              << "shift (" << shift[0] << "," << shift[1] << "," << shift[2] << ") row " << kk;
        }
        ++checked;
      }
    }
  EXPECT_EQ(checked, 28 * 300);
}

// quad_transpose puts the 16 columns of quad t (8 j + 2 t + e, j = 0..7, e = 0..1) as contiguous
// bits 2 j + e of a 16-bit half: quad t's half is word (t & 2 ? w1 : w0), shifted by 16 (t & 1),
// the selection quad_row_bits makes after fetching the row's words.
TEST(TileMask, QuadTransposeLayout) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 2000; ++trial) {
    const uint64_t vis = trial == 0 ? ~uint64_t{0} : (trial == 1 ? 0 : rng());
    uint32_t w0 = 0, w1 = 0;
    mask::quad_transpose(vis, w0, w1);
    for (int t = 0; t < 4; ++t) {
      const uint32_t w = (t & 2) ? w1 : w0;
      const uint32_t half = (t & 1) ? (w >> 16) : (w & 0xffffu);
      for (int j = 0; j < 8; ++j)
        for (int e = 0; e < 2; ++e)
          ASSERT_EQ((half >> (2 * j + e)) & 1u, (vis >> (8 * j + 2 * t + e)) & 1u)
              << "quad " << t << " j " << j << " e " << e;
    }
  }
}
