// Token permutation kernels (see token_permute.h). Pure data movement: every token row (H head
// rows of D elements) is read once and written once, so the floor is (bytes read + bytes written)
// / DRAM bandwidth. A group of `lanes` threads owns one token at a time: it decodes the token's
// position once (64-bit index math, shared by the group) and copies the row in the widest vector
// width that the row size, base pointers and strides allow (16 bytes for contiguous fp16 rows with
// D % 8 == 0), eight vectors in flight per thread (four when head rows have their own strides).
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
  int64_t groups = 1, seq = 0, tokens = 0;
  // byte strides of the unpermuted [B, *S, H, D] and permuted [B * G, P, H, D] views
  int64_t u_batch = 0, u_axis[sem::kMaxRank] = {0, 0, 0}, u_head = 0;
  int64_t p_batch = 0, p_seq = 0, p_head = 0;
  int rows = 1;            // head rows per token (1 when the heads of a token are contiguous on both sides)
  int chunks = 0;          // vectors per head row (of the destination row when padding)
  int lanes = 32;          // threads per token (a power of two <= 32)
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

template <int V, bool kInverse, bool kPad>
__global__ void __launch_bounds__(256) token_permute_kernel(const PermuteArgs a) {
  using Vec = typename VecOf<V>::type;
  const int lane = static_cast<int>(threadIdx.x) & (a.lanes - 1);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x / a.lanes;
  const int work = a.rows * a.chunks;
  const int64_t row_src_stride = kInverse ? a.p_head : a.u_head;
  const int64_t row_dst_stride = kInverse ? a.u_head : a.p_head;
  for (int64_t item = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / a.lanes; item < a.items;
       item += stride) {
    int64_t x[sem::kMaxRank] = {0, 0, 0};
    int64_t src = 0, dst = 0;
    bool valid = true;
    if (!kInverse) {
      const int64_t pb = item / a.seq, pos = item - pb * a.seq;
      const int64_t b = pb / a.groups, group = pb - b * a.groups;
      valid = a.perm.inverse(group, pos, x);
      src = b * a.u_batch;
      for (int i = 0; i < a.perm.rank; ++i) src += x[i] * a.u_axis[i];
      dst = pb * a.p_batch + pos * a.p_seq;
    } else {
      const int64_t b = item / a.tokens;
      int64_t rest = item - b * a.tokens;
      for (int i = a.perm.rank - 1; i >= 0; --i) {
        x[i] = rest % a.perm.extent[i];
        rest /= a.perm.extent[i];
      }
      int64_t group = 0, pos = 0;
      a.perm.forward(x, &group, &pos);
      src = (b * a.groups + group) * a.p_batch + pos * a.p_seq;
      dst = b * a.u_batch;
      for (int i = 0; i < a.perm.rank; ++i) dst += x[i] * a.u_axis[i];
    }
    const unsigned char* __restrict__ from = a.src + src;
    unsigned char* __restrict__ to = a.dst + dst;
    int c = lane;
    if constexpr (kPad) {
      // Head rows of different lengths: destination vector j of row r is source vector j of row r
      // when j < src_chunks (else zero). Four independent vectors per thread per step.
      for (; c < work; c += 4 * a.lanes) {
        Vec v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int cc = c + u * a.lanes;
          const int r = cc / a.chunks, j = cc - r * a.chunks;
          const bool load = cc < work && valid && j < a.src_chunks;
          v[u] = load ? *reinterpret_cast<const Vec*>(from + static_cast<int64_t>(r) * row_src_stride +
                                                      static_cast<int64_t>(j) * V)
                      : Vec{};
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int cc = c + u * a.lanes;
          const int r = cc / a.chunks, j = cc - r * a.chunks;
          if (cc < work)
            *reinterpret_cast<Vec*>(to + static_cast<int64_t>(r) * row_dst_stride + static_cast<int64_t>(j) * V) = v[u];
        }
      }
      continue;
    }
    if (a.rows == 1) {
      // One contiguous run per token on both sides (the common case): vector c is at c * V.
      // Eight independent vectors per thread per step: loads first, then stores.
      for (; c + 7 * a.lanes < work; c += 8 * a.lanes) {
        Vec v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u)
          v[u] = valid ? *reinterpret_cast<const Vec*>(from + static_cast<int64_t>(c + u * a.lanes) * V) : Vec{};
#pragma unroll
        for (int u = 0; u < 8; ++u) *reinterpret_cast<Vec*>(to + static_cast<int64_t>(c + u * a.lanes) * V) = v[u];
      }
      for (; c < work; c += a.lanes) {
        const Vec v = valid ? *reinterpret_cast<const Vec*>(from + static_cast<int64_t>(c) * V) : Vec{};
        *reinterpret_cast<Vec*>(to + static_cast<int64_t>(c) * V) = v;
      }
      continue;
    }
    auto at = [&](int cc, int64_t row_stride) {
      const int r = cc / a.chunks;
      return static_cast<int64_t>(r) * row_stride + static_cast<int64_t>(cc - r * a.chunks) * V;
    };
    // Head rows with their own strides: four independent vectors per thread per step.
    for (; c + 3 * a.lanes < work; c += 4 * a.lanes) {
      Vec v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u)
        v[u] = valid ? *reinterpret_cast<const Vec*>(from + at(c + u * a.lanes, row_src_stride)) : Vec{};
#pragma unroll
      for (int u = 0; u < 4; ++u) *reinterpret_cast<Vec*>(to + at(c + u * a.lanes, row_dst_stride)) = v[u];
    }
    for (; c < work; c += a.lanes) {
      const Vec v = valid ? *reinterpret_cast<const Vec*>(from + at(c, row_src_stride)) : Vec{};
      *reinterpret_cast<Vec*>(to + at(c, row_dst_stride)) = v;
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
  const int64_t wanted = (a.items * a.lanes + threads - 1) / threads;
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
  if (*pad) {  // head rows of different lengths: per-row copy, the destination row's vectors
    const int64_t src_row = inverse ? p_row_bytes : row_bytes, dst_row = inverse ? row_bytes : p_row_bytes;
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
    if (heads * chunks > (int64_t{1} << 30))
      throw ValueError(std::string(op) + ": a token row of " + std::to_string(heads * dst_row) +
                       " bytes is too large for the CUDA kernel (at most 2^30 vectors)");
    a.rows = static_cast<int>(heads);
    a.chunks = static_cast<int>(chunks);
    a.src_chunks = static_cast<int>(std::min<int64_t>(src_row / vec, chunks));
    int lanes = 1;
    while (lanes < 32 && lanes < heads * chunks) lanes *= 2;
    a.lanes = lanes;
    return vec;
  }
  if (row_bytes == 0 || heads == 0) return 0;
  // The heads of a token form one contiguous run on both sides: copy it as one row.
  int64_t rows = heads, row = row_bytes;
  if (heads == 1 || (a.u_head == row_bytes && a.p_head == row_bytes)) {
    rows = 1;
    row = heads * row_bytes;
  }
  int vec = 16;
  auto fits = [&](int64_t v) {
    if (row % v != 0) return false;
    if (reinterpret_cast<uintptr_t>(u.data) % v != 0 || reinterpret_cast<uintptr_t>(p.data) % v != 0) return false;
    for (int64_t s : {a.u_batch, a.u_head, a.p_batch, a.p_seq, a.p_head})
      if (s % v != 0) return false;
    for (int i = 0; i < rank; ++i)
      if (a.u_axis[i] % v != 0) return false;
    return true;
  };
  while (vec > 2 && !fits(vec)) vec /= 2;
  if (!fits(vec))
    throw ValueError(std::string(op) + ": the tensors are not aligned to their element size");
  const int64_t chunks = row / vec;
  if (rows * chunks > (int64_t{1} << 30))
    throw ValueError(std::string(op) + ": a token row of " + std::to_string(rows * row) +
                     " bytes is too large for the CUDA kernel (at most 2^30 vectors)");
  a.rows = static_cast<int>(rows);
  a.chunks = static_cast<int>(chunks);
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
