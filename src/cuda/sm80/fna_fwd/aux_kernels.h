#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace nattn::cuda::fna {

// Varlen FMHA (B == 1): zero the output rows (and LSE) that no sequence covers, i.e. rows >=
// cu_q[nseq]. os: {batch, token, head} element strides of out; ls: {batch, token, head} of lse.
// Varlen: the longest sequence of int32 device offsets cu[0..nseq] (max of cu[s + 1] - cu[s]; 0
// when nseq == 0). Reads the offsets back, so it synchronises `stream`; callers use it only when
// the caller gave no max_seqlen hint.
int64_t longest_sequence(const int* cu, int64_t nseq, cudaStream_t stream);

void zero_uncovered_rows(void* out, int64_t esize, int64_t rows, int64_t heads, int64_t dv, const int64_t* os,
                         float* lse, const int64_t* ls, const int* cu_q, int64_t nseq, cudaStream_t stream);

}  // namespace nattn::cuda::fna
