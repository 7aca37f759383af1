// Tile copies global -> shared memory by cp.async, shared by the portable forward and backward
// kernels (src/cuda/sm80/fna_fwd, src/cuda/sm80/fna_bwd).
#pragma once

#include <cute/arch/copy_sm80.hpp>

#include <cstdint>

namespace nattn::cuda {

// Thread layout of the copies: each of kNT threads copies one fixed 16-byte column chunk `col`
// of the rows r0, r0 + kRS, ... of a tile of HD columns.
template <class T, int HD, int kNT>
struct RowChunks {
  static constexpr int kElems = 16 / static_cast<int>(sizeof(T));  // elements per chunk
  static constexpr int kPerRow = HD / kElems;                       // chunks per row
  static_assert(kNT % kPerRow == 0, "a thread keeps one column chunk");
  static constexpr int kRowStep = kNT / kPerRow;                    // rows between a thread's rows
};

// Rows [0, kRows) into shared memory at dst0 = smem + r0 * LD + col (this thread's first chunk; row
// stride LD elements) by cp.async, the loop unrolled kUnroll times so that the row offsets become
// adds. Row r comes from g + off (off_fn(r, off) false, or col_ok false: zero-filled). Every row
// must be 16-byte aligned (the callers check it per call and otherwise load elements). off_fn must
// not read shared memory that holds values the loop could keep in registers: the cp.async
// statements clobber memory, so such a read is repeated per row.
template <class T, int HD, int LD, int kRows, int kNT, int kUnroll, class OffFn>
__device__ __forceinline__ void cp_async_rows(T* dst0, const T* g, int col, int r0, bool col_ok, OffFn off_fn) {
  constexpr int kRS = RowChunks<T, HD, kNT>::kRowStep;
  static_assert(kRows % kRS == 0, "tile must split evenly over the threads");
#pragma unroll(kUnroll)
  for (int it = 0; it < kRows / kRS; ++it) {
    int64_t off = 0;
    const bool ok = off_fn(r0 + it * kRS, off) && col_ok;
    const T* src = ok ? g + off + col : g;
    cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
        *reinterpret_cast<const cute::uint128_t*>(src), *reinterpret_cast<cute::uint128_t*>(dst0 + it * kRS * LD), ok);
  }
}

}  // namespace nattn::cuda
