// Token permutation kernels (see token_permute.h). Pure data movement: every token row (H head
// rows of D elements) is read once and written once, so the floor is (bytes read + bytes written)
// / DRAM bandwidth. Each lane of a warp decodes one token's position (32-bit index math when every
// index fits, else 64-bit), and the warp copies its tokens' rows in the widest vector width that
// the row size, base pointers and strides allow (16 bytes for contiguous fp16 rows with D % 8 ==
// 0), eight vectors in flight per thread (token_permute_kernel).
// Head-dim padding (the two sides' head dims differ) has its own instantiation (kPad): per head
// row, destination vectors past the source row are zeros and source vectors past the destination
// row are skipped; the unpadded paths are unchanged.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/token_permute.h"
#include "nattn/errors.h"

namespace nattn::cuda {
namespace {

struct PermuteArgs {
  sem::Permutation perm;
  const unsigned char* src = nullptr;
  unsigned char* dst = nullptr;
  int64_t items = 0;       // tokens to move: B * G * P (permute) or B * prod(S) (unpermute)
  int64_t batch = 0, groups = 1, seq = 0, tokens = 0;
  // byte strides of the unpermuted [B, *S, H, D] and permuted [B * G, P, H, D] views
  int64_t u_batch = 0, u_axis[sem::kMaxRank] = {0, 0, 0}, u_head = 0;
  int64_t p_batch = 0, p_seq = 0, p_head = 0;
  int rows = 1;            // head rows per token (1 when the heads of a token are contiguous on both sides)
  int chunks = 0;          // vectors per head row (of the destination row when padding)
  int lanes = 32;          // threads per token (a power of two <= 32)
  int warp_tokens = 32;    // tokens a warp decodes and copies per step (a power of two <= 32)
  bool narrow = false;     // every index of the decoding (token, position, coordinate) is < 2^31
  int src_chunks = 0;      // padding only: vectors of the source head row to copy (<= chunks)
};

template <int V>
struct VecOf;
template <>
struct VecOf<16> { using type = uint4; };
template <>
struct VecOf<8> { using type = uint2; };
template <>
struct VecOf<4> { using type = uint32_t; };
template <>
struct VecOf<2> { using type = uint16_t; };

// Byte offsets of one token on the source and destination side, and whether it is a real token
// (false: a padding row of the permuted tensor, written as zeros). The index math runs in I:
// uint32_t when every token index fits in 31 bits (PermuteArgs::narrow), else int64_t; the byte
// offsets are always 64-bit. Each lane of a warp decodes its own token (see the kernel).
template <class I, bool kInverse>
__device__ void decode_token_as(const PermuteArgs& a, int64_t item64, int64_t* src, int64_t* dst, bool* valid) {
  const I item = static_cast<I>(item64);
  I x[sem::kMaxRank] = {0, 0, 0};
  if (!kInverse) {
    const I seq = static_cast<I>(a.seq), groups = static_cast<I>(a.groups);
    const I pb = item / seq, pos = item - pb * seq;
    const I b = pb / groups, group = pb - b * groups;
    *valid = a.perm.inverse(group, pos, x);
    int64_t s = static_cast<int64_t>(b) * a.u_batch;
    for (int i = 0; i < a.perm.rank; ++i) s += static_cast<int64_t>(x[i]) * a.u_axis[i];
    *src = s;
    *dst = static_cast<int64_t>(pb) * a.p_batch + static_cast<int64_t>(pos) * a.p_seq;
  } else {
    const I tokens = static_cast<I>(a.tokens);
    const I b = item / tokens;
    I rest = item - b * tokens;
    for (int i = a.perm.rank - 1; i >= 0; --i) {
      const I e = static_cast<I>(a.perm.extent[i]);
      x[i] = rest % e;
      rest /= e;
    }
    I group = 0, pos = 0;
    a.perm.forward(x, &group, &pos);
    *src = (static_cast<int64_t>(b) * a.groups + static_cast<int64_t>(group)) * a.p_batch +
           static_cast<int64_t>(pos) * a.p_seq;
    int64_t d = static_cast<int64_t>(b) * a.u_batch;
    for (int i = 0; i < a.perm.rank; ++i) d += static_cast<int64_t>(x[i]) * a.u_axis[i];
    *dst = d;
    *valid = true;
  }
}

template <bool kInverse>
__device__ void decode_token(const PermuteArgs& a, int64_t item, int64_t* src, int64_t* dst, bool* valid) {
  if (a.narrow)
    decode_token_as<uint32_t, kInverse>(a, item, src, dst, valid);
  else
    decode_token_as<int64_t, kInverse>(a, item, src, dst, valid);
}

// Byte offset of vector cc of a token (head rows of a.chunks vectors, `row_stride` bytes apart).
template <int V>
__device__ __forceinline__ int64_t vector_offset(const PermuteArgs& a, int cc, int64_t row_stride) {
  if (a.rows == 1) return static_cast<int64_t>(cc) * V;
  const int r = cc / a.chunks;
  return static_cast<int64_t>(r) * row_stride + static_cast<int64_t>(cc - r * a.chunks) * V;
}

// Whether destination vector cc has a source vector (head-dim padding: vector j of a row exists on
// the source side when j < src_chunks; otherwise it is written as zero).
template <bool kPad>
__device__ __forceinline__ bool has_source(const PermuteArgs& a, int cc) {
  if constexpr (!kPad) return true;
  return cc % a.chunks < a.src_chunks;
}

constexpr int kBatch = 8;  // vectors each thread loads before it stores them (bytes in flight)

// Copies one token of more vectors than its group has threads; `lane` is the thread's index in the
// group.
template <int V, bool kInverse, bool kPad>
__device__ __forceinline__ void copy_token(const PermuteArgs& a, const unsigned char* __restrict__ from,
                                           unsigned char* __restrict__ to, bool valid, int lane) {
  using Vec = typename VecOf<V>::type;
  const int work = a.rows * a.chunks;
  const int64_t src_stride = kInverse ? a.p_head : a.u_head, dst_stride = kInverse ? a.u_head : a.p_head;
  for (int c = lane; c < work; c += kBatch * a.lanes) {
    Vec v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int cc = c + u * a.lanes;
      v[u] = cc < work && valid && has_source<kPad>(a, cc)
                 ? *reinterpret_cast<const Vec*>(from + vector_offset<V>(a, cc, src_stride))
                 : Vec{};
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int cc = c + u * a.lanes;
      if (cc < work) *reinterpret_cast<Vec*>(to + vector_offset<V>(a, cc, dst_stride)) = v[u];
    }
  }
}

// A warp takes a.warp_tokens (8-32) consecutive tokens at a time: lane i decodes token i (the index
// math runs once per token, not once per copying thread), and the warp reads the decoded offsets
// with shuffles. Large tokens (more vectors than a.lanes = 32 threads) are copied one after another
// by the whole warp. Small tokens (at most one vector per thread, a.lanes <= 32 threads per token,
// 32 / a.lanes tokens per step) are copied kBatch steps at a time, so a thread still has kBatch
// loads in flight.
template <int V, bool kInverse, bool kPad>
__global__ void __launch_bounds__(256) token_permute_kernel(const PermuteArgs a) {
  using Vec = typename VecOf<V>::type;
  const int lane32 = static_cast<int>(threadIdx.x) & 31;
  const int lane = lane32 & (a.lanes - 1);
  const int slot = lane32 / a.lanes;  // which token of a step this thread's group copies
  const int per_step = 32 / a.lanes;
  const int work = a.rows * a.chunks;
  const int64_t src_stride = kInverse ? a.p_head : a.u_head, dst_stride = kInverse ? a.u_head : a.p_head;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  const int step = a.warp_tokens;
  for (int64_t base = warp * step; base < a.items; base += warps * step) {
    int64_t src = 0, dst = 0;
    bool valid = false;
    if (lane32 < step && base + lane32 < a.items) decode_token<kInverse>(a, base + lane32, &src, &dst, &valid);
    const int n = static_cast<int>(min(int64_t{step}, a.items - base));
    if (work > a.lanes) {
      for (int t = 0; t < n; ++t) {
        const int64_t s = __shfl_sync(0xffffffffu, src, t), d = __shfl_sync(0xffffffffu, dst, t);
        const bool ok = __shfl_sync(0xffffffffu, valid ? 1 : 0, t) != 0;
        copy_token<V, kInverse, kPad>(a, a.src + s, a.dst + d, ok, lane);
      }
      continue;
    }
    const bool has_vector = lane < work;
    const int64_t src_at = vector_offset<V>(a, lane, src_stride), dst_at = vector_offset<V>(a, lane, dst_stride);
    const bool copies = has_vector && has_source<kPad>(a, lane);
    for (int t0 = 0; t0 < n; t0 += kBatch * per_step) {
      Vec v[kBatch];
      int64_t to[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int t = t0 + u * per_step + slot, tc = min(t, step - 1);  // every lane shuffles
        const int64_t s = __shfl_sync(0xffffffffu, src, tc);
        to[u] = __shfl_sync(0xffffffffu, dst, tc);
        const bool ok = __shfl_sync(0xffffffffu, valid ? 1 : 0, tc) != 0;
        v[u] = t < n && ok && copies ? *reinterpret_cast<const Vec*>(a.src + s + src_at) : Vec{};
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (t0 + u * per_step + slot < n && has_vector) *reinterpret_cast<Vec*>(a.dst + to[u] + dst_at) = v[u];
    }
  }
}

template <bool kInverse, bool kPad>
void launch_as(const PermuteArgs& a, int vec, dim3 grid, dim3 block, cudaStream_t stream) {
  switch (vec) {
    case 16: token_permute_kernel<16, kInverse, kPad><<<grid, block, 0, stream>>>(a); break;
    case 8: token_permute_kernel<8, kInverse, kPad><<<grid, block, 0, stream>>>(a); break;
    case 4: token_permute_kernel<4, kInverse, kPad><<<grid, block, 0, stream>>>(a); break;
    default: token_permute_kernel<2, kInverse, kPad><<<grid, block, 0, stream>>>(a); break;
  }
}

template <bool kInverse>
void launch(PermuteArgs& a, int vec, bool pad, cudaStream_t stream, int device) {
  const DeviceProps& props = device_props(device);
  const int64_t threads = 256;
  // Tokens per warp step: 32 (each lane decodes one) unless that leaves fewer than ~64 warps of work
  // per SM, then down to 8, so that enough warps have loads in flight. Measured on the H100
  // (bench/RESULTS.md): 8-32 tokens are within noise on the large 3-D/2-D tensors, 8 is up to 15%
  // faster than 32 where the warps are few, and 2-4 are slower again (the decode is not amortised).
  const int64_t warps_wanted = int64_t{props.sm_count} * 64;
  a.warp_tokens = 32;
  while (a.warp_tokens > 8 && a.items / a.warp_tokens < warps_wanted) a.warp_tokens /= 2;
  // 32-bit index math when the largest token index (either side) and every axis' tile span fit.
  const int64_t limit = int64_t{1} << 31;
  a.narrow = a.batch * a.groups * a.seq < limit && a.batch * a.tokens < limit;
  for (int i = 0; i < a.perm.rank; ++i)
    a.narrow = a.narrow && a.perm.extent[i] + a.perm.tile[i] * a.perm.dilation[i] < limit;
  const int64_t warps = (a.items + a.warp_tokens - 1) / a.warp_tokens;
  const int64_t wanted = (warps * 32 + threads - 1) / threads;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t{props.sm_count} * 16));
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(threads));
  if (pad)
    launch_as<kInverse, true>(a, vec, grid, block, stream);
  else
    launch_as<kInverse, false>(a, vec, grid, block, stream);
  NATTN_CUDA_CHECK_LAUNCH("token_permute_kernel");
}

// Fills the geometry shared by both directions; `u` is the unpermuted view, `p` the permuted one,
// `inverse` says which one is the source. Returns the vector width in bytes (0: nothing to copy)
// and sets *pad when the head dims of the two sides differ (the kPad kernels).
int plan(PermuteArgs& a, const TensorView& u, const TensorView& p, const sem::Permutation& perm, bool inverse,
         const char* op, bool* pad) {
  const int64_t esize = dtype_size(u.dtype);
  const int rank = perm.rank;
  if (u.dim() != rank + 3 || p.dim() != 4 || p.dtype != u.dtype)
    throw ValueError(std::string(op) + ": expected [B, *S, H, D] and [B * G, P, H, D'] views of one dtype, got " +
                     u.describe() + " and " + p.describe());
  const int64_t heads = u.shape[static_cast<size_t>(rank + 1)];
  if (p.shape[2] != heads)
    throw ValueError(std::string(op) + ": the heads of the two sides differ: " + u.describe() + " and " + p.describe());
  const int64_t row_bytes = u.shape[static_cast<size_t>(rank + 2)] * esize;
  const int64_t p_row_bytes = p.shape[3] * esize;
  *pad = p_row_bytes != row_bytes;
  a.perm = perm;
  a.batch = u.shape[0];
  a.groups = perm.num_groups();
  a.seq = perm.seq_len();
  a.tokens = 1;
  for (int i = 0; i < rank; ++i) a.tokens *= perm.extent[i];
  a.u_batch = u.strides[0] * esize;
  for (int i = 0; i < rank; ++i) a.u_axis[i] = u.strides[static_cast<size_t>(i + 1)] * esize;
  a.u_head = u.strides[static_cast<size_t>(rank + 1)] * esize;
  a.p_batch = p.strides[0] * esize;
  a.p_seq = p.strides[1] * esize;
  a.p_head = p.strides[2] * esize;
  // Bytes per copied row on each side: with padding, head rows of different lengths (per-row copy
  // of the destination row's vectors); else the heads of a token as one contiguous row when they
  // are on both sides, or head row by head row.
  int64_t rows = heads, src_row = row_bytes, dst_row = row_bytes;
  if (*pad) {
    src_row = inverse ? p_row_bytes : row_bytes;
    dst_row = inverse ? row_bytes : p_row_bytes;
  } else if (heads == 1 || (a.u_head == row_bytes && a.p_head == row_bytes)) {
    rows = 1;
    src_row = dst_row = heads * row_bytes;
  }
  if (dst_row == 0 || heads == 0) return 0;
  int vec = 16;
  auto fits = [&](int64_t v) {
    if (src_row % v != 0 || dst_row % v != 0) return false;
    if (reinterpret_cast<uintptr_t>(u.data) % v != 0 || reinterpret_cast<uintptr_t>(p.data) % v != 0) return false;
    for (int64_t s : {a.u_batch, a.u_head, a.p_batch, a.p_seq, a.p_head})
      if (s % v != 0) return false;
    for (int i = 0; i < rank; ++i)
      if (a.u_axis[i] % v != 0) return false;
    return true;
  };
  while (vec > 2 && !fits(vec)) vec /= 2;
  if (!fits(vec)) throw ValueError(std::string(op) + ": the tensors are not aligned to their element size");
  const int64_t chunks = dst_row / vec;
  if (rows * chunks > (int64_t{1} << 30))
    throw ValueError(std::string(op) + ": a token row of " + std::to_string(rows * dst_row) +
                     " bytes is too large for the CUDA kernel (at most 2^30 vectors)");
  a.rows = static_cast<int>(rows);
  a.chunks = static_cast<int>(chunks);
  a.src_chunks = static_cast<int>(std::min<int64_t>(src_row / vec, chunks));
  int lanes = 1;
  while (lanes < 32 && lanes < rows * chunks) lanes *= 2;
  a.lanes = lanes;
  return vec;
}

int device_of(const TensorView& t) {
  const int dev = t.device.index;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    throw RuntimeError("token_permute: cannot use " + device_name(t.device) + ": " + cudaGetErrorName(err) + " (" +
                       cudaGetErrorString(err) + ")");
  if (dev < 0 || dev >= count)
    throw ValueError("token_permute: device " + device_name(t.device) + " does not exist (" + std::to_string(count) +
                     " CUDA devices)");
  return dev;
}

}  // namespace

void token_permute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream) {
  PermuteArgs a;
  bool pad = false;
  const int vec = plan(a, input, output, perm, /*inverse=*/false, "token_permute", &pad);
  a.items = input.shape[0] * a.groups * a.seq;
  if (vec == 0 || a.items == 0) return;
  a.src = static_cast<const unsigned char*>(input.data);
  a.dst = static_cast<unsigned char*>(output.data);
  const int dev = device_of(input);
  DeviceGuard guard(dev);
  launch<false>(a, vec, pad, static_cast<cudaStream_t>(stream), dev);
}

void token_unpermute(const TensorView& input, const TensorView& output, const sem::Permutation& perm, void* stream) {
  PermuteArgs a;
  bool pad = false;
  const int vec = plan(a, output, input, perm, /*inverse=*/true, "token_unpermute", &pad);
  a.items = output.shape[0] * a.tokens;
  if (vec == 0 || a.items == 0) return;
  a.src = static_cast<const unsigned char*>(input.data);
  a.dst = static_cast<unsigned char*>(output.data);
  const int dev = device_of(input);
  DeviceGuard guard(dev);
  launch<true>(a, vec, pad, static_cast<cudaStream_t>(stream), dev);
}

}  // namespace nattn::cuda
