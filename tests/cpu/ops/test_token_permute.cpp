// token_permute / token_unpermute / token_permute_shape through the public API (include/nattn/ops.h):
// bit-exact round trips for ranks 1-3, odd extents, tiles, dilations, both flips and every dtype;
// every permuted slot against sem::Permutation (padding zero); strided views; the literal examples
// of natten-reference.md §5; and the validation rules.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace {

using nattn::DType;
using nattn::TensorView;
using nattn::test::HostTensor;
using Shape = std::vector<int64_t>;

// Random raw bits (NaN payloads, signed zeros and denormals included): permutation copies bits.
HostTensor random_bits(DType dtype, const Shape& shape, std::mt19937_64& rng) {
  HostTensor t(dtype, shape);
  for (auto& byte : t.bytes) byte = static_cast<unsigned char>(rng());
  return t;
}

// Fill with a byte pattern no permuted slot holds (0xA5), so unwritten elements are detectable
// even for raw-bit inputs (poisoned_tensor's NaN could coincide with random bits).
HostTensor poisoned_bytes(DType dtype, const Shape& shape) {
  HostTensor t(dtype, shape);
  std::memset(t.bytes.data(), 0xA5, t.bytes.size());
  return t;
}

nattn::sem::Permutation perm_of(const Shape& shape, const Shape& tile, const Shape& dilation, bool flip) {
  nattn::sem::Permutation p;
  p.rank = static_cast<int>(shape.size()) - 3;
  for (int i = 0; i < p.rank; ++i) {
    p.extent[i] = shape[static_cast<size_t>(i + 1)];
    p.tile[i] = tile[static_cast<size_t>(i)];
    p.dilation[i] = dilation[static_cast<size_t>(i)];
  }
  p.flip = flip;
  return p;
}

std::string describe(const Shape& shape, const Shape& tile, const Shape& dilation, bool flip, DType dtype) {
  auto list = [](const Shape& v) {
    std::string s;
    for (int64_t x : v) s += std::to_string(x) + " ";
    return s;
  };
  return "shape " + list(shape) + "tile " + list(tile) + "dilation " + list(dilation) +
         (flip ? "flip " : "no-flip ") + nattn::dtype_name(dtype);
}

const unsigned char* element(const TensorView& v, const Shape& index) {
  int64_t offset = 0;
  for (size_t i = 0; i < index.size(); ++i) offset += index[i] * v.strides[i];
  return static_cast<const unsigned char*>(v.data) + offset * nattn::dtype_size(v.dtype);
}

// Permutes `input` (any strides), checks every slot of the result against sem::Permutation, then
// unpermutes into `restored` and checks that it holds exactly the input bits.
void check_round_trip(const TensorView& input, const TensorView& permuted, const TensorView& restored,
                      const Shape& tile, const Shape& dilation, bool flip) {
  const Shape& shape = input.shape;
  const int rank = static_cast<int>(shape.size()) - 3;
  const int64_t H = shape[static_cast<size_t>(rank + 1)], D = shape[static_cast<size_t>(rank + 2)];
  const int64_t row_bytes = D * nattn::dtype_size(input.dtype);
  nattn::token_permute(input, permuted, tile, dilation, flip);

  const nattn::sem::Permutation perm = perm_of(shape, tile, dilation, flip);
  const int64_t groups = perm.num_groups(), seq = perm.seq_len();
  int64_t valid_slots = 0;
  const std::vector<unsigned char> zeros(static_cast<size_t>(row_bytes), 0);
  for (int64_t bo = 0; bo < permuted.shape[0]; ++bo)
    for (int64_t pos = 0; pos < seq; ++pos) {
      int64_t x[3] = {0, 0, 0};
      const bool valid = perm.inverse(bo % groups, pos, x);
      valid_slots += valid;
      for (int64_t h = 0; h < H; ++h) {
        const unsigned char* got = element(permuted, {bo, pos, h, 0});
        if (!valid) {
          ASSERT_EQ(std::memcmp(got, zeros.data(), static_cast<size_t>(row_bytes)), 0)
              << "padding slot " << bo << "," << pos << " is not zero";
          continue;
        }
        Shape index = {bo / groups};
        for (int i = 0; i < rank; ++i) index.push_back(x[i]);
        index.push_back(h);
        index.push_back(0);
        ASSERT_EQ(std::memcmp(got, element(input, index), static_cast<size_t>(row_bytes)), 0)
            << "slot " << bo << "," << pos << " head " << h;
      }
    }
  int64_t tokens = shape[0];
  for (int i = 0; i < rank; ++i) tokens *= shape[static_cast<size_t>(i + 1)];
  ASSERT_EQ(valid_slots, tokens);  // every token exactly once (forward is tested in core)

  nattn::token_unpermute(permuted, restored, tile, dilation, flip);
  Shape index(shape.size(), 0);
  // Compare row by row (the views may be strided).
  std::function<void(size_t)> walk = [&](size_t axis) {
    if (axis + 1 == shape.size()) {
      ASSERT_EQ(std::memcmp(element(restored, index), element(input, index), static_cast<size_t>(row_bytes)), 0);
      return;
    }
    for (index[axis] = 0; index[axis] < shape[axis]; ++index[axis]) {
      walk(axis + 1);
      if (::testing::Test::HasFatalFailure()) return;
    }
    index[axis] = 0;
  };
  walk(0);
}

void check_contiguous(const Shape& shape, const Shape& tile, const Shape& dilation, bool flip, DType dtype,
                      std::mt19937_64& rng) {
  SCOPED_TRACE(describe(shape, tile, dilation, flip, dtype));
  const Shape permuted_shape = nattn::token_permute_shape(shape, tile, dilation);
  // The shape, computed here from the spec: [B * prod(d), prod(ceil(X / (T d)) * T), H, D].
  const int rank = static_cast<int>(shape.size()) - 3;
  int64_t groups = 1, seq = 1;
  for (int i = 0; i < rank; ++i) {
    const int64_t X = shape[static_cast<size_t>(i + 1)], T = tile[static_cast<size_t>(i)];
    const int64_t d = dilation[static_cast<size_t>(i)];
    groups *= d;
    seq *= (X + T * d - 1) / (T * d) * T;
  }
  ASSERT_EQ(permuted_shape, (Shape{shape[0] * groups, seq, shape[static_cast<size_t>(rank + 1)],
                                   shape[static_cast<size_t>(rank + 2)]}));
  const HostTensor input = random_bits(dtype, shape, rng);
  HostTensor permuted = poisoned_bytes(dtype, permuted_shape);
  HostTensor restored = poisoned_bytes(dtype, shape);
  check_round_trip(input.view, permuted.view, restored.view, tile, dilation, flip);
}

TEST(TokenPermute, RoundTripsAllRanksDtypesAndFlips) {
  std::mt19937_64 rng(21);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16};
  for (int rank = 1; rank <= 3; ++rank)
    for (int iter = 0; iter < 60; ++iter) {
      Shape shape = {pick(1, 2)}, tile, dilation;
      for (int i = 0; i < rank; ++i) {
        shape.push_back(pick(1, rank == 1 ? 37 : rank == 2 ? 13 : 7));  // odd, even, below T d
        tile.push_back(pick(1, rank == 1 ? 16 : 4));
        dilation.push_back(pick(1, 3));
      }
      shape.push_back(pick(1, 3));  // H
      shape.push_back(pick(1, 9));  // D
      check_contiguous(shape, tile, dilation, iter % 2 == 1, dtypes[iter % 3], rng);
      if (HasFatalFailure()) return;
    }
}

TEST(TokenPermute, LseShapedTensorsWithUnitHeadDim) {
  // LSE [B, *S, H] is unpermuted as [B, *S, H, 1].
  std::mt19937_64 rng(22);
  check_contiguous({2, 9, 7, 4, 1}, {4, 2}, {2, 3}, true, DType::f32, rng);
  check_contiguous({1, 11, 3, 1}, {8}, {1}, false, DType::f32, rng);
}

TEST(TokenPermute, StridedViews) {
  std::mt19937_64 rng(23);
  // Input [B=2, X=6, Y=5, H=3, D=4] living in [2, 5, 7, 3, 6] storage (Y outside X, X and D
  // padded); output and restored tensors with padded head dims.
  const Shape shape = {2, 6, 5, 3, 4};
  const Shape tile = {2, 4}, dilation = {1, 2};
  HostTensor in_storage = random_bits(DType::bf16, {2, 5, 7, 3, 6}, rng);
  const TensorView input(in_storage.view.data, DType::bf16, shape, {5 * 7 * 3 * 6, 3 * 6, 7 * 3 * 6, 6, 1});
  const Shape permuted_shape = nattn::token_permute_shape(shape, tile, dilation);
  ASSERT_EQ(permuted_shape, (Shape{4, 6 * 4, 3, 4}));  // per group (6, 4) tokens
  HostTensor out_storage = poisoned_bytes(DType::bf16, {4, 24, 3, 5});
  const TensorView permuted(out_storage.view.data, DType::bf16, permuted_shape, {24 * 15, 15, 5, 1});
  HostTensor back_storage = poisoned_bytes(DType::bf16, {2, 6, 5, 3, 9});
  const TensorView restored(back_storage.view.data, DType::bf16, shape, {6 * 5 * 3 * 9, 5 * 3 * 9, 3 * 9, 9, 1});
  for (bool flip : {false, true}) {
    SCOPED_TRACE(flip ? "flip" : "no flip");
    check_round_trip(input, permuted, restored, tile, dilation, flip);
  }
  // The gaps between the strided rows were never written.
  for (int64_t row = 0; row < 4 * 24 * 3; ++row)
    for (int64_t c = 4; c < 5; ++c)
      EXPECT_EQ(out_storage.bytes[static_cast<size_t>((row * 5 + c) * 2)], 0xA5);
}

TEST(TokenPermute, SpecExample1D) {
  // L = 10, T = 4, d = 2: group sequences [0,2,4,6,8,p,p,p] and [1,3,5,7,9,p,p,p], p = 0.
  HostTensor input(DType::f32, {1, 10, 1, 1});
  for (int64_t x = 0; x < 10; ++x) input.set(x, static_cast<float>(100 + x));
  for (bool flip : {false, true}) {
    HostTensor out = nattn::test::poisoned_tensor(DType::f32, {2, 8, 1, 1});
    nattn::token_permute(input.view, out.view, {4}, {2}, flip);
    const float expected[16] = {100, 102, 104, 106, 108, 0, 0, 0, 101, 103, 105, 107, 109, 0, 0, 0};
    for (int i = 0; i < 16; ++i) EXPECT_EQ(out.get(i), expected[i]) << "slot " << i;
  }
}

TEST(TokenPermute, SpecExample2D) {
  // X = (5, 6), T = (2, 4), d = (1, 2): token (3, 5) of batch b lands in batch 2b + 1 at position
  // 14 (row-major) or 13 (flip).
  const Shape shape = {2, 5, 6, 1, 1};
  EXPECT_EQ(nattn::token_permute_shape(shape, {2, 4}, {1, 2}), (Shape{4, 24, 1, 1}));
  HostTensor input(DType::f32, shape);
  for (int64_t i = 0; i < input.numel(); ++i) input.set(i, static_cast<float>(i + 1));
  for (bool flip : {false, true}) {
    HostTensor out = nattn::test::poisoned_tensor(DType::f32, {4, 24, 1, 1});
    nattn::token_permute(input.view, out.view, {2, 4}, {1, 2}, flip);
    for (int64_t b = 0; b < 2; ++b) {
      const float token = input.get((b * 5 + 3) * 6 + 5);
      EXPECT_EQ(out.get((2 * b + 1) * 24 + (flip ? 13 : 14)), token) << "batch " << b;
    }
  }
}

// ---- validation --------------------------------------------------------------------------------

template <class E>
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(TokenPermute, ShapeValidation) {
  using nattn::ValueError;
  auto shape_of = [](Shape s, Shape t, Shape d) { return [=] { nattn::token_permute_shape(s, t, d); }; };
  expect_error<ValueError>(shape_of({2, 8, 4}, {2}, {1}), "rank 4 to 6");
  expect_error<ValueError>(shape_of({1, 2, 2, 2, 2, 2, 2}, {1, 1, 1, 1}, {1, 1, 1, 1}), "rank 4 to 6");
  expect_error<ValueError>(shape_of({2, 8, 8, 4, 16}, {4}, {1, 1}), "tile_shape (4,) must have 2 entries");
  expect_error<ValueError>(shape_of({2, 8, 4, 16}, {0}, {1}), "tile_shape (0,) is invalid");
  expect_error<ValueError>(shape_of({2, 8, 4, 16}, {4}, {-1}), "dilation (-1,) is invalid");
  expect_error<ValueError>(shape_of({2, 8, 8, 4, 16}, {4, 4}, {1}), "dilation (1,) must have 2 entries");
  expect_error<ValueError>(shape_of({2, -8, 4, 16}, {4}, {1}), "negative");
  expect_error<ValueError>(shape_of({1, int64_t(1) << 40, int64_t(1) << 40, 1, 1}, {1, 1}, {1, 1}), "overflows");
  // Valid edge cases: tiles larger than the extent, dilation equal to it.
  EXPECT_EQ(nattn::token_permute_shape({3, 5, 2, 8}, {16}, {5}), (Shape{15, 16, 2, 8}));
  EXPECT_EQ(nattn::token_permute_shape({1, 7, 9, 5, 1, 1}, {2, 4, 1}, {3, 1, 2}), (Shape{6, 4 * 12 * 3, 1, 1}));
}

TEST(TokenPermute, OpValidation) {
  using nattn::ValueError;
  std::mt19937_64 rng(24);
  const Shape shape = {2, 9, 3, 8};
  const Shape tile = {4}, dilation = {2};
  const HostTensor input = nattn::test::random_tensor(DType::f16, shape, rng);
  HostTensor permuted(DType::f16, {4, 8, 3, 8});
  auto permute = [&](TensorView in, TensorView out, Shape t = {4}, Shape d = {2}) {
    return [=] { nattn::token_permute(in, out, t, d, false); };
  };
  auto unpermute = [&](TensorView in, TensorView out) {
    return [=] { nattn::token_unpermute(in, out, tile, dilation, true); };
  };
  EXPECT_NO_THROW(permute(input.view, permuted.view)());

  HostTensor wrong(DType::f16, {4, 12, 3, 8});
  expect_error<ValueError>(permute(input.view, wrong.view), "output shape [4, 12, 3, 8] must be [4, 8, 3, 8]");
  HostTensor flat(DType::f16, {2, 27, 8});
  expect_error<ValueError>(permute(flat.view, permuted.view), "input");
  expect_error<ValueError>(permute(input.view, permuted.view, {4, 4}, {2}), "tile_shape");
  expect_error<ValueError>(permute(input.view, permuted.view, {4}, {0}), "dilation");
  HostTensor other_dtype(DType::f32, {4, 8, 3, 8});
  expect_error<ValueError>(permute(input.view, other_dtype.view), "dtype");
  HostTensor ints_in(DType::i32, shape), ints_out(DType::i32, {4, 8, 3, 8});
  expect_error<ValueError>(permute(ints_in.view, ints_out.view), "allowed: fp32, fp16, bf16");

  TensorView gpu_out = permuted.view;
  gpu_out.device = nattn::Device{nattn::DeviceKind::cuda, 0};
  expect_error<ValueError>(permute(input.view, gpu_out), "share a device");
  TensorView gpu_in = input.view;
  gpu_in.device = gpu_out.device;
  // A CPU-only build says it has no CUDA (NotImplementedError); a CUDA build on a machine without a
  // usable GPU says why it cannot use cuda:0 (RuntimeError). Both name the device.
  expect_error<nattn::Error>(permute(gpu_in, gpu_out), "cuda:0");

  HostTensor wide(DType::f16, {2, 9, 3, 16});
  const TensorView every_other(wide.view.data, DType::f16, shape, {9 * 3 * 16, 3 * 16, 16, 2});
  expect_error<ValueError>(permute(every_other, permuted.view), "stride");
  TensorView null_out = permuted.view;
  null_out.data = nullptr;
  expect_error<ValueError>(permute(input.view, null_out), "null");
  // Output overlapping the input.
  HostTensor both(DType::f16, {2 * 9 * 3 * 8 + 4 * 8 * 3 * 8});
  const TensorView in_part(both.view.data, DType::f16, shape);
  const TensorView out_part(static_cast<uint16_t*>(both.view.data) + 100, DType::f16, {4, 8, 3, 8});
  expect_error<ValueError>(permute(in_part, out_part), "overlaps");
  const TensorView out_after(static_cast<uint16_t*>(both.view.data) + 2 * 9 * 3 * 8, DType::f16, {4, 8, 3, 8});
  EXPECT_NO_THROW(permute(in_part, out_after)());

  // Unpermute: the roles swap; the permuted input must match the unpermuted output's shape.
  HostTensor restored(DType::f16, shape);
  EXPECT_NO_THROW(unpermute(permuted.view, restored.view)());
  expect_error<ValueError>(unpermute(wrong.view, restored.view), "token_unpermute: input shape [4, 12, 3, 8]");
  expect_error<ValueError>(unpermute(permuted.view, flat.view), "token_unpermute: output");
}

}  // namespace
