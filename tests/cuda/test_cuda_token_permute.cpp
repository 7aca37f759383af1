// GPU token permutation (src/cuda/common/token_permute.cu) against the CPU implementation, which
// tests/cpu/ops checks against the spec: bit-identical results for random shapes, tiles,
// dilations, both linearisation orders, every dtype, padded (strided) and misaligned views,
// poisoned outputs; exact round trips; errors for bad views. Head-dim padding of the internal
// cuda::token_permute / token_unpermute (hopper-fna): rows zero-filled or truncated, bit-exact
// round trips, nothing written outside the views.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cuda/common/token_permute.h"
#include "cuda/cuda_test_util.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

using test::HostTensor;

using test::have_gpu;
constexpr auto check = test::check_cuda;

// Host bytes + a device mirror; the view may skip `offset` elements at the start (misalignment)
// and use padded strides (an extra head and `pad` extra channels per row).
struct Buffer {
  std::vector<unsigned char> host;
  void* dev = nullptr;
  TensorView hview, dview;
  Buffer(const Buffer&) = delete;
  Buffer() = default;
  ~Buffer() {
    if (dev) cudaFree(dev);
  }
  void init(DType dtype, const std::vector<int64_t>& shape, int64_t pad, int64_t offset, std::mt19937_64& rng,
            bool poison) {
    std::vector<int64_t> storage = shape;
    storage.back() += pad;
    if (pad > 0) storage[storage.size() - 2] += 1;
    int64_t count = 1;
    for (int64_t s : storage) count *= s;
    const int64_t esize = dtype_size(dtype);
    host.assign(static_cast<size_t>((count + offset) * esize), 0);
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : host) b = poison ? 0xff : static_cast<unsigned char>(byte(rng));
    if (dtype == DType::f32 || dtype == DType::f64) {  // keep the random bits, but no NaN/inf values
      for (int64_t i = 0; i < count + offset; ++i) {
        if (poison) break;
        if (dtype == DType::f32) {
          float v = static_cast<float>(byte(rng)) - 100.f;
          std::memcpy(&host[static_cast<size_t>(i * 4)], &v, 4);
        } else {
          double v = static_cast<double>(byte(rng)) - 100.0;
          std::memcpy(&host[static_cast<size_t>(i * 8)], &v, 8);
        }
      }
    }
    check(cudaMalloc(&dev, host.size() + 16), "cudaMalloc");
    check(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
    const std::vector<int64_t> strides = contiguous_strides(storage);
    hview = TensorView(host.data() + offset * esize, dtype, shape, strides);
    dview = TensorView(static_cast<unsigned char*>(dev) + offset * esize, dtype, shape, strides,
                       Device{DeviceKind::cuda, 0});
  }
  std::vector<unsigned char> fetch() const {
    std::vector<unsigned char> out(host.size());
    check(cudaMemcpy(out.data(), dev, out.size(), cudaMemcpyDeviceToHost), "cudaMemcpy back");
    return out;
  }
};

struct Case {
  std::vector<int64_t> shape, tile, dilation;
  DType dtype;
  bool flip;
  int64_t pad, offset;
};

std::string describe(const Case& c) {
  std::string s = "shape " + shape_string(c.shape) + " tile " + shape_string(c.tile) + " dilation " +
                  shape_string(c.dilation) + " " + dtype_name(c.dtype) + (c.flip ? " flip" : "") +
                  " pad " + std::to_string(c.pad) + " offset " + std::to_string(c.offset);
  return s;
}

// GPU permute and unpermute equal the CPU ones byte for byte (padding rows included), and the
// GPU round trip restores the input.
void run_case(const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c));
  const std::vector<int64_t> pshape = token_permute_shape(c.shape, c.tile, c.dilation);
  Buffer in, out_gpu, out_cpu, back_gpu, back_cpu;
  in.init(c.dtype, c.shape, c.pad, c.offset, rng, false);
  out_gpu.init(c.dtype, pshape, c.pad, c.offset, rng, true);
  out_cpu.init(c.dtype, pshape, c.pad, c.offset, rng, true);
  token_permute(in.hview, out_cpu.hview, c.tile, c.dilation, c.flip);
  token_permute(in.dview, out_gpu.dview, c.tile, c.dilation, c.flip);
  check(cudaDeviceSynchronize(), "sync");
  ASSERT_EQ(out_gpu.fetch(), out_cpu.host) << "permute";
  back_gpu.init(c.dtype, c.shape, c.pad, c.offset, rng, true);
  back_cpu.init(c.dtype, c.shape, c.pad, c.offset, rng, true);
  token_unpermute(out_cpu.hview, back_cpu.hview, c.tile, c.dilation, c.flip);
  token_unpermute(out_gpu.dview, back_gpu.dview, c.tile, c.dilation, c.flip);
  check(cudaDeviceSynchronize(), "sync");
  const std::vector<unsigned char> got = back_gpu.fetch();
  ASSERT_EQ(got, back_cpu.host) << "unpermute";
  // Round trip: every element of the logical view equals the input.
  const int64_t esize = dtype_size(c.dtype);
  int64_t tokens = 1;
  for (size_t i = 0; i + 2 < c.shape.size(); ++i) tokens *= c.shape[i];
  const int64_t heads = c.shape[c.shape.size() - 2], dim = c.shape.back();
  const int64_t head_stride = in.hview.strides[in.hview.strides.size() - 2];
  const int64_t token_stride = in.hview.strides[in.hview.strides.size() - 3];
  const auto* base_in = static_cast<const unsigned char*>(in.hview.data);
  const unsigned char* base_back = got.data() + c.offset * esize;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t at = (t * token_stride + h * head_stride) * esize;
      ASSERT_EQ(std::memcmp(base_in + at, base_back + at, static_cast<size_t>(dim * esize)), 0)
          << "round trip token " << t << " head " << h;
    }
}

TEST(CudaTokenPermute, MatchesCpuRandom) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(42);
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16, DType::f64};
  int ran = 0;
  for (int trial = 0; trial < 120; ++trial) {
    std::uniform_int_distribution<int> pick(0, 1000);
    const int rank = 1 + pick(rng) % 3;
    Case c;
    c.shape.push_back(1 + pick(rng) % 2);
    for (int i = 0; i < rank; ++i) {
      const int64_t t = int64_t{1} << (pick(rng) % (rank == 1 ? 7 : 4));
      const int64_t d = 1 + pick(rng) % 3;
      c.tile.push_back(t);
      c.dilation.push_back(d);
      c.shape.push_back(1 + pick(rng) % (rank == 1 ? 300 : rank == 2 ? 40 : 14));
    }
    c.shape.push_back(1 + pick(rng) % 4);                      // heads
    c.shape.push_back((1 + pick(rng) % 16) * (pick(rng) % 2 ? 8 : 1));  // head dim, often a multiple of 8
    c.dtype = dtypes[trial % 4];
    c.flip = pick(rng) % 2;
    c.pad = (trial % 5 == 1) ? 3 : 0;
    c.offset = (trial % 7 == 2) ? 1 : 0;
    run_case(c, rng);
    if (HasFatalFailure()) return;
    ++ran;
  }
  EXPECT_EQ(ran, 120);
}

TEST(CudaTokenPermute, SpecExampleAndLargeRows) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(7);
  run_case({{2, 5, 6, 3, 16}, {2, 4}, {1, 2}, DType::f16, false, 0, 0}, rng);  // semantics.md example
  run_case({{2, 5, 6, 3, 16}, {2, 4}, {1, 2}, DType::f16, true, 0, 0}, rng);
  run_case({{1, 6, 10, 12, 24, 128}, {2, 4, 8}, {1, 1, 1}, DType::bf16, true, 0, 0}, rng);  // 6 KB rows
  run_case({{1, 3, 7, 9, 5, 40}, {1, 8, 16}, {3, 1, 2}, DType::f32, false, 2, 1}, rng);
  run_case({{3, 0, 4, 2, 8}, {2, 2}, {1, 1}, DType::f16, false, 0, 0}, rng);  // empty axis
}

// ---- head-dim padding (internal API) ---------------------------------------------------------------

// The head rows of a view over `storage` (view data at element `offset`): their bytes, row after
// row in logical order, and a mask of every storage byte the view covers.
std::vector<std::vector<unsigned char>> head_rows(const std::vector<unsigned char>& storage, int64_t offset,
                                                  const TensorView& v, std::vector<bool>* covered) {
  const int64_t es = dtype_size(v.dtype);
  const int nd = v.dim();
  std::vector<std::vector<unsigned char>> rows;
  std::vector<int64_t> idx(static_cast<size_t>(nd - 1), 0);
  int64_t n = 1;
  for (int d = 0; d + 1 < nd; ++d) n *= v.shape[static_cast<size_t>(d)];
  const int64_t row_bytes = v.shape.back() * es;
  for (int64_t r = 0; r < n; ++r) {
    int64_t at = offset;
    for (int d = 0; d + 1 < nd; ++d) at += idx[static_cast<size_t>(d)] * v.strides[static_cast<size_t>(d)];
    at *= es;
    rows.emplace_back(storage.begin() + at, storage.begin() + at + row_bytes);
    if (covered)
      for (int64_t b = 0; b < row_bytes; ++b) (*covered)[static_cast<size_t>(at + b)] = true;
    for (int d = nd - 2; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < v.shape[static_cast<size_t>(d)]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return rows;
}

// Bytes of a poisoned (0xff) storage outside the view that were overwritten.
int64_t written_outside(const std::vector<unsigned char>& storage, const std::vector<bool>& covered) {
  int64_t bad = 0;
  for (size_t i = 0; i < storage.size(); ++i) bad += (!covered[i] && storage[i] != 0xff) ? 1 : 0;
  return bad;
}

// Permute [B, *S, H, D] into [B * G, P, H, d_out] (d_out > D: zero-filled; d_out < D: truncated)
// on the GPU; each head row equals the CPU permutation's (same D) on its first min(D, d_out)
// elements and is zero past D; then unpermute back into [B, *S, H, D]: the first min(D, d_out)
// elements of every row are the input's bit for bit, the rest zeros. Nothing outside the views.
void run_padded_case(const Case& c, int64_t d_out, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c) + " d_out " + std::to_string(d_out));
  const int64_t D = c.shape.back(), es = dtype_size(c.dtype), keep = std::min(D, d_out);
  const std::vector<int64_t> pshape = token_permute_shape(c.shape, c.tile, c.dilation);
  std::vector<int64_t> pshape_out = pshape;
  pshape_out.back() = d_out;
  sem::Permutation perm;
  perm.rank = static_cast<int>(c.tile.size());
  perm.flip = c.flip;
  for (int i = 0; i < perm.rank; ++i) {
    perm.extent[i] = c.shape[static_cast<size_t>(i + 1)];
    perm.tile[i] = c.tile[static_cast<size_t>(i)];
    perm.dilation[i] = c.dilation[static_cast<size_t>(i)];
  }
  Buffer in, ref, out, back;
  in.init(c.dtype, c.shape, c.pad, c.offset, rng, false);
  ref.init(c.dtype, pshape, 0, 0, rng, true);
  token_permute(in.hview, ref.hview, c.tile, c.dilation, c.flip);  // CPU, same head dim
  out.init(c.dtype, pshape_out, c.pad, c.offset, rng, true);
  cuda::token_permute(in.dview, out.dview, perm, nullptr);
  check(cudaDeviceSynchronize(), "sync");
  const std::vector<unsigned char> got = out.fetch();
  std::vector<bool> covered(got.size(), false);
  const auto got_rows = head_rows(got, c.offset, out.hview, &covered);
  const auto ref_rows = head_rows(ref.host, 0, ref.hview, nullptr);
  ASSERT_EQ(got_rows.size(), ref_rows.size());
  for (size_t r = 0; r < got_rows.size(); ++r) {
    ASSERT_EQ(std::memcmp(got_rows[r].data(), ref_rows[r].data(), static_cast<size_t>(keep * es)), 0)
        << "permute: head row " << r;
    for (int64_t b = keep * es; b < d_out * es; ++b)
      ASSERT_EQ(got_rows[r][static_cast<size_t>(b)], 0) << "permute: head row " << r << " byte " << b << " not zero";
  }
  EXPECT_EQ(written_outside(got, covered), 0) << "permute wrote outside the output view";

  back.init(c.dtype, c.shape, c.pad, c.offset, rng, true);
  cuda::token_unpermute(out.dview, back.dview, perm, nullptr);
  check(cudaDeviceSynchronize(), "sync");
  const std::vector<unsigned char> got_back = back.fetch();
  std::vector<bool> covered_back(got_back.size(), false);
  const auto back_rows = head_rows(got_back, c.offset, back.hview, &covered_back);
  const auto in_rows = head_rows(in.host, c.offset, in.hview, nullptr);
  ASSERT_EQ(back_rows.size(), in_rows.size());
  for (size_t r = 0; r < back_rows.size(); ++r) {
    ASSERT_EQ(std::memcmp(back_rows[r].data(), in_rows[r].data(), static_cast<size_t>(keep * es)), 0)
        << "round trip: head row " << r;
    for (int64_t b = keep * es; b < D * es; ++b)
      ASSERT_EQ(back_rows[r][static_cast<size_t>(b)], 0) << "unpermute: head row " << r << " byte " << b << " not zero";
  }
  EXPECT_EQ(written_outside(got_back, covered_back), 0) << "unpermute wrote outside the output view";
}

TEST(CudaTokenPermute, PaddedHeadDimRandom) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(4242);
  const DType dtypes[] = {DType::f16, DType::bf16, DType::f32, DType::f64};
  int ran = 0;
  for (int trial = 0; trial < 80; ++trial) {
    std::uniform_int_distribution<int> pick(0, 1000);
    const int rank = 1 + pick(rng) % 3;
    Case c;
    c.shape.push_back(1 + pick(rng) % 2);
    for (int i = 0; i < rank; ++i) {
      c.tile.push_back(int64_t{1} << (pick(rng) % (rank == 1 ? 7 : 4)));
      c.dilation.push_back(1 + pick(rng) % 3);
      c.shape.push_back(1 + pick(rng) % (rank == 1 ? 200 : rank == 2 ? 30 : 10));
    }
    c.shape.push_back(1 + pick(rng) % 4);  // heads
    // hopper-fna's cases (multiples of 8 padded to 64 / 128) most of the time, else any sizes
    const bool hopper = trial % 3 != 2;
    const int64_t D = hopper ? 8 * (1 + pick(rng) % 16) : 1 + pick(rng) % 40;
    c.shape.push_back(D);
    int64_t d_out = hopper ? (D <= 64 && pick(rng) % 2 ? 64 : 128) : 1 + pick(rng) % 48;
    if (d_out == D) d_out = D + 8;
    if (hopper && trial % 5 == 0) d_out = 8 * (1 + pick(rng) % 16);  // also truncation
    c.dtype = dtypes[trial % 4];
    c.flip = hopper || pick(rng) % 2;
    c.pad = (trial % 5 == 1) ? 3 : 0;
    c.offset = (trial % 7 == 2) ? 1 : 0;
    run_padded_case(c, d_out, rng);
    if (HasFatalFailure()) return;
    ++ran;
  }
  EXPECT_EQ(ran, 80);
}

TEST(CudaTokenPermute, PaddedHeadDimHopperShapes) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(11);
  // golden-like problems padded to 64 (16-byte vectors), Dv < D and D > 64 padded to 128
  run_padded_case({{1, 10, 1, 8}, {128}, {1}, DType::f16, true, 0, 0}, 64, rng);
  run_padded_case({{2, 8, 13, 2, 32}, {16, 8}, {1, 2}, DType::bf16, true, 0, 0}, 64, rng);
  run_padded_case({{1, 6, 3, 7, 2, 16}, {4, 4, 8}, {2, 1, 1}, DType::f16, true, 8, 0}, 64, rng);
  run_padded_case({{2, 37, 45, 3, 96}, {16, 8}, {1, 1}, DType::bf16, true, 0, 0}, 128, rng);
  run_padded_case({{2, 37, 45, 3, 128}, {16, 8}, {1, 1}, DType::bf16, true, 0, 0}, 40, rng);  // truncate
  run_padded_case({{1, 300, 1, 64}, {128}, {3}, DType::f16, true, 0, 1}, 128, rng);  // misaligned: 2-byte vectors
  run_padded_case({{2, 9, 4, 1}, {1}, {1}, DType::f32, false, 0, 0}, 4, rng);       // LSE-like rows
}

TEST(CudaTokenPermute, Errors) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  std::mt19937_64 rng(9);
  Buffer in, out;
  in.init(DType::f16, {1, 8, 2, 8}, 0, 0, rng, false);
  out.init(DType::f16, {1, 8, 2, 8}, 0, 0, rng, true);
  // one tensor on the host, the other on the GPU
  EXPECT_THROW(token_permute(in.dview, out.hview, {4}, {1}, false), ValueError);
  // wrong permuted shape
  Buffer bad;
  bad.init(DType::f16, {1, 6, 2, 8}, 0, 0, rng, true);
  EXPECT_THROW(token_permute(in.dview, bad.dview, {4}, {1}, false), ValueError);
}

}  // namespace
}  // namespace nattn
