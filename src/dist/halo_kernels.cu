// Strided box copies of the halo exchange: pack / unpack / add a box between two layouts.
// Axes contiguous in both layouts are merged on the host, so a box that is one run of memory in
// both becomes one long row; each block copies a chunk of one or more rows (short rows share a
// block). Same-dtype copies move 16/8/4/2-byte units; conversions and sums go through fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/common/cuda_check.h"
#include "dist/halo_kernels.h"
#include "nattn/errors.h"

namespace nattn::dist::detail {

namespace {

constexpr int kOuter = kMaxCopyDims - 1;
constexpr int kThreads = 256;
constexpr int kPer = 4;  // units per thread per chunk
constexpr int64_t kMaxBlocks = 8192;

struct Layout {
  int outer = 0;           // outer axes, outermost first
  int64_t n[kOuter] = {};
  int64_t ss[kOuter] = {};  // source strides (units)
  int64_t ds[kOuter] = {};  // destination strides (units)
  int64_t len = 1;         // contiguous row length (units)
  int64_t rows = 1;
  int tpr = kThreads;      // threads per row (power of two <= kThreads)
};

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ void row_offsets(const Layout& L, int64_t row, int64_t& so, int64_t& dof) {
  so = 0;
  dof = 0;
  for (int i = L.outer - 1; i >= 0; --i) {
    const int64_t c = row % L.n[i];
    row /= L.n[i];
    so += c * L.ss[i];
    dof += c * L.ds[i];
  }
}

// Visits every unit of the box: f(src offset, dst offset).
template <class F>
__device__ __forceinline__ void for_each_unit(const Layout& L, F&& f) {
  const int rpb = kThreads / L.tpr;  // rows per block
  const int64_t chunk_len = static_cast<int64_t>(L.tpr) * kPer;
  const int64_t chunks = (L.len + chunk_len - 1) / chunk_len;
  const int64_t groups = (L.rows + rpb - 1) / rpb;
  const int lane = static_cast<int>(threadIdx.x) % L.tpr;
  const int sub = static_cast<int>(threadIdx.x) / L.tpr;
  for (int64_t item = blockIdx.x; item < groups * chunks; item += gridDim.x) {
    const int64_t g = item / chunks, chunk = item - g * chunks;
    const int64_t row = g * rpb + sub;
    if (row >= L.rows) continue;
    int64_t so, dof;
    row_offsets(L, row, so, dof);
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = chunk * chunk_len + static_cast<int64_t>(k) * L.tpr + lane;
      if (j < L.len) f(so + j, dof + j);
    }
  }
}

template <class U>
__global__ void __launch_bounds__(kThreads) raw_copy_kernel(const U* __restrict__ src, U* __restrict__ dst, Layout L) {
  for_each_unit(L, [&](int64_t s, int64_t d) { dst[d] = src[s]; });
}

template <class Tin, class Tout, bool kAcc>
__global__ void __launch_bounds__(kThreads) convert_kernel(const Tin* __restrict__ src, Tout* __restrict__ dst,
                                                           Layout L) {
  for_each_unit(L, [&](int64_t s, int64_t d) {
    float v = to_f<Tin>(src[s]);
    if (kAcc) v += to_f<Tout>(dst[d]);
    dst[d] = from_f<Tout>(v);
  });
}

struct Dim {
  int64_t n, ss, ds;
};

int64_t blocks_for(const Layout& L) {
  const int rpb = kThreads / L.tpr;
  const int64_t chunk_len = static_cast<int64_t>(L.tpr) * kPer;
  const int64_t items = ((L.rows + rpb - 1) / rpb) * ((L.len + chunk_len - 1) / chunk_len);
  return std::max<int64_t>(1, std::min(items, kMaxBlocks));
}

void finish_layout(Layout& L) {
  int tpr = 1;
  while (tpr < kThreads && static_cast<int64_t>(tpr) * kPer < L.len) tpr *= 2;
  L.tpr = tpr;
}

template <class U>
void launch_raw(const BoxCopy& c, Layout L, int64_t unit_elems, cudaStream_t stream) {
  L.len /= unit_elems;
  for (int i = 0; i < L.outer; ++i) {
    L.ss[i] /= unit_elems;
    L.ds[i] /= unit_elems;
  }
  finish_layout(L);
  raw_copy_kernel<U><<<static_cast<unsigned>(blocks_for(L)), kThreads, 0, stream>>>(
      static_cast<const U*>(c.src), static_cast<U*>(c.dst), L);
  NATTN_CUDA_CHECK(cudaGetLastError());
}

template <class Tin, class Tout>
void launch_convert(const BoxCopy& c, Layout L, cudaStream_t stream) {
  finish_layout(L);
  const unsigned blocks = static_cast<unsigned>(blocks_for(L));
  if (c.accumulate) {
    convert_kernel<Tin, Tout, true><<<blocks, kThreads, 0, stream>>>(static_cast<const Tin*>(c.src),
                                                                      static_cast<Tout*>(c.dst), L);
  } else {
    convert_kernel<Tin, Tout, false><<<blocks, kThreads, 0, stream>>>(static_cast<const Tin*>(c.src),
                                                                       static_cast<Tout*>(c.dst), L);
  }
  NATTN_CUDA_CHECK(cudaGetLastError());
}

template <class Tin>
void dispatch_dst(const BoxCopy& c, const Layout& L, cudaStream_t stream) {
  switch (c.dst_dtype) {
    case DType::f32: return launch_convert<Tin, float>(c, L, stream);
    case DType::f16: return launch_convert<Tin, __half>(c, L, stream);
    default: return launch_convert<Tin, __nv_bfloat16>(c, L, stream);
  }
}

bool supported(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }

bool unit_ok(const BoxCopy& c, const Layout& L, int64_t es, int64_t unit) {
  if (unit % es != 0) return false;
  const auto misaligned = [unit](int64_t bytes) { return bytes % unit != 0; };
  if (reinterpret_cast<uintptr_t>(c.src) % static_cast<uintptr_t>(unit) != 0 ||
      reinterpret_cast<uintptr_t>(c.dst) % static_cast<uintptr_t>(unit) != 0 || misaligned(L.len * es))
    return false;
  for (int i = 0; i < L.outer; ++i)
    if (misaligned(L.ss[i] * es) || misaligned(L.ds[i] * es)) return false;
  return true;
}

}  // namespace

void launch_box_copy(const BoxCopy& c, cudaStream_t stream) {
  if (!supported(c.src_dtype) || !supported(c.dst_dtype))
    throw ValueError(std::string("halo copy: dtypes ") + dtype_name(c.src_dtype) + " -> " + dtype_name(c.dst_dtype) +
                     " are not supported (allowed: fp32, fp16, bf16)");
  if (c.dims < 1 || c.dims > kMaxCopyDims)
    throw ValueError("halo copy: " + std::to_string(c.dims) + " axes (allowed: 1 to " +
                     std::to_string(kMaxCopyDims) + ")");
  // Innermost first; size-1 axes dropped; an axis merged into the next inner one when it is
  // contiguous with it in both layouts.
  Dim d[kMaxCopyDims + 1];
  int nd = 0;
  for (int i = c.dims - 1; i >= 0; --i) {
    if (c.n[i] == 0) return;  // an empty box
    if (c.n[i] == 1) continue;
    if (nd > 0 && c.src_stride[i] == d[nd - 1].n * d[nd - 1].ss && c.dst_stride[i] == d[nd - 1].n * d[nd - 1].ds) {
      d[nd - 1].n *= c.n[i];
    } else {
      d[nd++] = Dim{c.n[i], c.src_stride[i], c.dst_stride[i]};
    }
  }
  if (nd == 0 || d[0].ss != 1 || d[0].ds != 1) {  // rows of one element
    for (int i = nd; i > 0; --i) d[i] = d[i - 1];
    d[0] = Dim{1, 1, 1};
    ++nd;
  }
  if (nd - 1 > kOuter)
    throw ValueError("halo copy: the innermost axis must have stride 1 in both layouts");
  Layout L;
  L.len = d[0].n;
  L.outer = nd - 1;
  for (int i = 0; i < L.outer; ++i) {  // outermost first
    const Dim& x = d[nd - 1 - i];
    L.n[i] = x.n;
    L.ss[i] = x.ss;
    L.ds[i] = x.ds;
    L.rows *= x.n;
  }
  if (c.src_dtype == c.dst_dtype && !c.accumulate) {
    const int64_t es = dtype_size(c.src_dtype);
    if (unit_ok(c, L, es, 16)) return launch_raw<uint4>(c, L, 16 / es, stream);
    if (unit_ok(c, L, es, 8)) return launch_raw<uint2>(c, L, 8 / es, stream);
    if (unit_ok(c, L, es, 4)) return launch_raw<uint32_t>(c, L, 4 / es, stream);
    return launch_raw<uint16_t>(c, L, 1, stream);  // 2-byte dtypes, 2-byte aligned
  }
  switch (c.src_dtype) {
    case DType::f32: return dispatch_dst<float>(c, L, stream);
    case DType::f16: return dispatch_dst<__half>(c, L, stream);
    default: return dispatch_dst<__nv_bfloat16>(c, L, stream);
  }
}

}  // namespace nattn::dist::detail
