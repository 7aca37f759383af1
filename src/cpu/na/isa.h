// Interface between the cpu backend's planner (plain C++, built for the baseline ISA) and its compute
// kernels, which are compiled once per instruction set (AVX-512, AVX2, baseline) and chosen at run
// time. Everything that crosses this boundary is plain data: the ISA translation units include no
// standard-library or nattn headers, so that no inline function compiled for a wider ISA can be
// picked by the linker for code that runs on a narrower one.
//
// Vocabulary (README.md has the full picture):
//   lane    one of the 16 queries (or keys, in the dK/dV pass) that a block computes together, one per
//           SIMD lane; the lanes of a block are consecutive tokens of one "line".
//   line    a run of tokens along the last spatial axis inside one dilation group, with every other
//           coordinate fixed; packed transposed ("[row][position]", fp32, zero-padded) so that
//           consecutive positions are contiguous.
//   block   up to 16 lanes; its keys on a line are positions base + delta[i] + t, t < width[i].
//   run     a range of positions on one line (or on several lines at a fixed distance) shared by up
//           to 4 blocks of a group: each loaded key vector feeds every active block, which is
//           what makes the kernels compute bound.
//
// The structs are plain aggregates (no default member initializers): the planner value-initializes
// them (`Run r{};`) and the ISA code only reads them, so no constructor is ever emitted by an ISA TU.
#pragma once

#include <cstdint>

namespace nattn::detail::cpu {

constexpr int kLanes = 16;     // SIMD lanes of a block (one AVX-512 register of fp32)
constexpr int kMaxGroup = 4;   // blocks sharing loads in one group
constexpr int kChunk = 128;    // score entries per block between two online-softmax updates
constexpr int kRunMax = 64;    // positions per run

// Element types of tensors read or written by the kernels.
enum Elem : int32_t { elem_f32 = 0, elem_f16 = 1, elem_bf16 = 2 };

// How the lanes of a block index a line at key offset t (lane i reads position p + delta[i]).
enum Mode : int32_t {
  mode_diag = 0,   // delta[i] == i: one unaligned vector load
  mode_bcast = 1,  // delta[i] == 0: one broadcast
  mode_perm = 2,   // delta[i] < 16: a load and a lane permutation
  mode_perm2 = 3,  // delta[i] < 32: two loads and a two-source permutation
};

struct Pattern {
  int32_t mode;
  int32_t uniform;          // every valid lane has width == len: no masking needed
  int32_t len;              // number of offsets t (max width)
  int32_t delta[kLanes];
  int32_t width[kLanes];
};

// Rows of a strided tensor: row p starts at element off0 + p * step of data; `cols` contiguous
// elements per row (given by the call).
struct Rows {
  const void* data;
  int32_t elem;
  int64_t off0;
  int64_t step;
};

struct OutRows {
  void* data;
  int32_t elem;
  int64_t off0;
  int64_t step;
};

// A range of `len` positions on `lines` lines (same positions on each, lines a fixed distance
// apart in the packed buffers), shared by `nact` blocks of a group. Score entries of a block:
// s_off + line * len + t.
struct Run {
  const float* a;      // line A (K in forward/dQ, Q in dK/dV) at the first position
  const float* b;      // line B (V in forward/dQ, dO in dK/dV) at the first position
  const float* stats;  // dK/dV: the query line's stats (row 0: lse*log2e, row 1: delta)
  int64_t a_step;      // floats from one line to the next, per buffer
  int64_t b_step;
  int64_t stats_step;
  int32_t src;               // source: 0 = the neighborhood, 1 = additional keys
  int32_t len;
  int32_t lines;
  int32_t nact;
  int32_t end_chunk;         // the online softmax / gradient step runs after this run
  int32_t blk[kMaxGroup];   // active blocks (indices into Group::blk)
  int32_t s_off[kMaxGroup]; // first score entry of each active block in the chunk
  int32_t t0[kMaxGroup];    // key offset t of the run's first position, per active block
};

struct Block {
  int32_t n;                 // valid lanes (1..16)
  // The lanes' own rows. Forward: x_rows (Q rows of the tensor, packed by the executor). Backward:
  // packed lines, x is Q (dQ) or K (dK/dV), x2 is dO (dQ) or V (dK/dV); row r of lane i at
  // x[r * ldx + i].
  Rows x_rows;
  const float* x;
  int64_t ldx;
  const float* x2;
  int64_t ldx2;
  const float* lane_stats;  // dQ: this block's lse*log2e (row 0) and delta (row 1)
  int64_t ld_stats;
  Pattern pat[2];                // per source
  OutRows out;                   // forward: O; dQ: dQ; dK/dV: dK
  OutRows out2;                  // dK/dV: dV
  float* lse;          // forward: LSE (f32) of lane i at lse[lse_off0 + i * lse_step]
  int64_t lse_off0;
  int64_t lse_step;
};

struct Group {
  int32_t nblk;
  Block blk[kMaxGroup];
};

struct Params {
  int64_t dim;        // D (Q/K head dim)
  int64_t dim_v;      // Dv
  float scale;      // softmax scale
  float scale_log2; // scale * log2(e): scores are kept in log2 units
  int64_t lda[2];  // row stride of line A per source
  int64_t ldb[2];  // row stride of line B per source
  int64_t ld_stats;     // row stride of the stats lines (dK/dV pass)
};

// Floats of per-thread scratch the executors need (called by the planner only).
inline int64_t scratch_floats(const Params& p) {
  // x lanes, scores, dP, two accumulators, m/l/stat vectors; +64 for alignment
  return kMaxGroup * kLanes * (2 * kChunk + 2 * (p.dim + p.dim_v) + 8) + 64;
}

struct IsaOps {
  const char* name;
  // Transposed packing of `heads` heads of a line: for head h (source rows at src + h * head_stride,
  // destination dst + h * dst_head_stride), dst[c * ld + p] = row p, column c (as fp32) for p < n,
  // c < cols, and zero for n <= p < fill. Rows are read across all heads at once, so a line of a
  // heads-interleaved tensor is streamed from memory once.
  void (*pack)(Rows src, int64_t heads, int64_t head_stride, int64_t n, int64_t cols, float* dst,
               int64_t dst_head_stride, int64_t ld, int64_t fill);
  // Stats of a query line, for `heads` heads as above (lse, out, dout advance by their own head
  // strides, dst by dst_head_stride): dst[p] = lse[p] * log2(e) (+inf when lse is -inf: a query
  // without keys gives P = 0), dst[ld + p] = sum_c dout[p][c] * out[p][c]; zero for n <= p < fill.
  void (*pack_stats)(Rows lse, Rows out, Rows dout, const int64_t* head_strides, int64_t heads,
                     int64_t n, int64_t cols, float* dst, int64_t dst_head_stride, int64_t ld,
                     int64_t fill);
  // Execute one group: forward (O, LSE), dQ, or dK/dV. `runs` are the group's runs in order.
  void (*forward)(const Params& p, const Group& g, const Run* runs, int64_t nruns, float* scratch);
  void (*backward_dq)(const Params& p, const Group& g, const Run* runs, int64_t nruns, float* scratch);
  void (*backward_dkv)(const Params& p, const Group& g, const Run* runs, int64_t nruns,
                       float* scratch);
  // Ask the caches for n rows of `cols` elements that a coming task reads (or writes).
  void (*prefetch)(Rows rows, int64_t n, int64_t cols, int32_t for_write);
};

const IsaOps& isa_avx512();
const IsaOps& isa_avx2();
const IsaOps& isa_generic();

}  // namespace nattn::detail::cpu
