// The O store of the Hopper attention forward kernel's epilogue (fmha_fwd_kernel.cuh): one
// consumer warpgroup's 64 x D output rows, already normalized by 1 / l, in the input dtype.
#pragma once

#include <cuda_runtime.h>

#include <cute/tensor.hpp>

#include <cstdint>

#include "cuda/sm90/fmha_fwd/fmha_fwd_config.cuh"

namespace nattn::cuda::sm90::detail {

// tOrO: the thread's fp32 O fragment; tOcO: its (row, column) coordinates in the CTA tile; inv:
// 1 / l of the thread's two rows (r, r + 8); o_base: the pair's O origin; row_strides: the OR of
// O's row strides (alignment test); q_smem: shared-memory address of the Q buffer; ectid: the
// consumer thread index 0..255; erow: the CTA tile row of the thread's first O row; row_dest(lrow,
// o_off, l_off): false for padding rows, else the element offset of CTA tile row lrow's O row.
//
// kStaged (the staged-epilogue variant with 128-byte rows): O goes through this warpgroup's own
// part of the Q shared memory (rows 64 w .. of sQ, which only this warpgroup's wgmmas read, all
// completed by now), then 16-byte coalesced stores. Needs O 16-byte aligned with row strides
// multiple of 8 elements (CTA-uniform), else the direct 4-byte stores. Staging layout: 16-byte
// chunk ch (columns 8 ch..8 ch+7) of local row r (0..63) at byte
// (ch / 8) * kBM * 128 + w * 64 * 128 + r * 128 + ((ch % 8) ^ (r % 8)) * 16 of sQ. These are
// exactly the bytes of SmemLayoutQ's rows 64 w..64 w+63 (K-major 128-byte swizzle: row r at
// r * 128 bytes inside each 64-column half of kBM * 128 bytes; the swizzle only permutes 16-byte
// chunks inside a row), so the other warpgroup's Q is never touched. The XOR makes both phases
// bank-conflict free (8 rows x 4 words per 32-bit store; 8 chunks of one row per quarter-warp
// 16-byte load).
template <class T, int D, int kBM, bool kStaged, class TO, class TC, class RowDest>
__device__ __forceinline__ void store_o(const TO& tOrO, const TC& tOcO, const float (&inv)[2], T* o_base,
                                        int64_t row_strides, uint32_t q_smem, int ectid, int erow,
                                        RowDest&& row_dest) {
  using cute::get;
  using cute::size;
  const int ecwg = ectid / 128;
  bool staged = false;
  if constexpr (kStaged) {
    staged = (reinterpret_cast<uintptr_t>(o_base) & 15) == 0 && (row_strides & 7) == 0;
    if (staged) {
      const uint32_t stage = q_smem + ecwg * (64 * 128);
      auto chunk_at = [&](int r, int ch) -> uint32_t {
        return stage + (ch >> 3) * (kBM * 128) + r * 128 + (((ch & 7) ^ (r & 7)) << 4);
      };
      named_bar_sync(kBarEpi + ecwg, 128);  // all four warps past their last wgmma
      CUTE_UNROLL
      for (int i = 0; i < size(tOrO); i += 2) {
        const int r = row_half(i);
        const int lrow = get<0>(tOcO(i)) - 64 * ecwg;
        const int col = get<1>(tOcO(i));
        st_shared_b32(chunk_at(lrow, col >> 3) + (col & 7) * 2, pack2<T>(tOrO(i) * inv[r], tOrO(i + 1) * inv[r]));
      }
      named_bar_sync(kBarEpi + ecwg, 128);
      constexpr int kChunks = D / 8;  // 16-byte chunks per row
      const int wtid = ectid & 127;
      CUTE_UNROLL
      for (int it = 0; it < 64 * kChunks / 128; ++it) {
        const int idx = wtid + 128 * it;
        const int r = idx / kChunks, ch = idx % kChunks;
        const uint4 v = ld_shared_v4(chunk_at(r, ch));
        int64_t o_off, l_off;
        if (row_dest(64 * ecwg + r, o_off, l_off)) st_global_v4(o_base + o_off + ch * 8, v);
      }
    }
  }
  if (!staged) {
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); i += 2) {
      const int r = row_half(i);
      int64_t o_off, l_off;
      if (row_dest(erow + 8 * r, o_off, l_off)) {
        const int col = get<1>(tOcO(i));
        *reinterpret_cast<uint32_t*>(o_base + o_off + col) = pack2<T>(tOrO(i) * inv[r], tOrO(i + 1) * inv[r]);
      }
    }
  }
}

}  // namespace nattn::cuda::sm90::detail
