// Token permutation on the CPU (shared/spec/semantics.md, last section; natten-reference.md §5):
// the shape function, argument validation, and the raw-copy permute / unpermute kernels.
#include <omp.h>

#include <cstring>
#include <string>

#include "cpu/ops/cpu_ops.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

std::string tuple_string(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

// a * b, or ValueError naming `what` when the product does not fit in int64.
int64_t checked_mul(int64_t a, int64_t b, const char* op, const std::string& what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw ValueError(std::string(op) + ": " + what + " overflows int64");
  return r;
}

// Checks a per-axis parameter list: one entry >= 1 per spatial axis.
void check_axis_list(const char* op, const char* name, const std::vector<int64_t>& values, int rank) {
  if (static_cast<int>(values.size()) != rank)
    throw ValueError(std::string(op) + ": " + name + " " + tuple_string(values) + " must have " +
                     std::to_string(rank) + " entr" + (rank == 1 ? "y" : "ies") +
                     " (one per spatial axis of the [B, *S, H, D] tensor)");
  for (int64_t v : values)
    if (v < 1)
      throw ValueError(std::string(op) + ": " + name + " " + tuple_string(values) +
                       " is invalid: every entry must be >= 1");
}

std::vector<int64_t> permute_shape(const char* op, const std::vector<int64_t>& input_shape,
                                   const std::vector<int64_t>& tile_shape,
                                   const std::vector<int64_t>& dilation) {
  const int dims = static_cast<int>(input_shape.size());
  if (dims < 4 || dims > 6)
    throw ValueError(std::string(op) + ": the unpermuted tensor shape " + shape_string(input_shape) +
                     " has rank " + std::to_string(dims) +
                     "; it must be [B, *S, H, D] with 1 to 3 spatial axes (rank 4 to 6)");
  for (int64_t s : input_shape)
    if (s < 0)
      throw ValueError(std::string(op) + ": the unpermuted tensor shape " + shape_string(input_shape) +
                       " has a negative extent");
  const int rank = dims - 3;
  check_axis_list(op, "tile_shape", tile_shape, rank);
  check_axis_list(op, "dilation", dilation, rank);
  int64_t groups = 1, tokens = 1;
  for (int i = 0; i < rank; ++i) {
    const size_t u = static_cast<size_t>(i);
    const int64_t block = checked_mul(tile_shape[u], dilation[u], op, "tile_shape * dilation");
    // ceil(X / (T d)) * T, without forming X + T d - 1 (which could overflow).
    const int64_t tiles = input_shape[u + 1] / block + (input_shape[u + 1] % block != 0);
    const int64_t padded = checked_mul(tiles, tile_shape[u], op, "the padded extent");
    groups = checked_mul(groups, dilation[u], op, "prod(dilation)");
    tokens = checked_mul(tokens, padded, op, "the permuted sequence length");
  }
  const int64_t batch = checked_mul(input_shape[0], groups, op, "B * prod(dilation)");
  const int64_t heads = input_shape[static_cast<size_t>(dims - 2)];
  const int64_t head_dim = input_shape[static_cast<size_t>(dims - 1)];
  checked_mul(checked_mul(checked_mul(batch, tokens, op, "the permuted size"), heads, op,
                          "the permuted size"),
              head_dim, op, "the permuted size");
  return {batch, tokens, heads, head_dim};
}

}  // namespace

std::vector<int64_t> token_permute_shape(const std::vector<int64_t>& input_shape,
                                         const std::vector<int64_t>& tile_shape,
                                         const std::vector<int64_t>& dilation) {
  return permute_shape("token_permute_shape", input_shape, tile_shape, dilation);
}

namespace detail {

bool views_overlap(const TensorView& a, const TensorView& b) {
  auto span = [](const TensorView& v, const unsigned char** lo, const unsigned char** hi) {
    int64_t low = 0, high = 0;  // element offsets of the first and last element
    for (int i = 0; i < v.dim(); ++i) {
      if (v.shape[static_cast<size_t>(i)] == 0) return false;
      const int64_t reach = (v.shape[static_cast<size_t>(i)] - 1) * v.strides[static_cast<size_t>(i)];
      (reach < 0 ? low : high) += reach;
    }
    const int64_t size = dtype_size(v.dtype);
    *lo = static_cast<const unsigned char*>(v.data) + low * size;
    *hi = static_cast<const unsigned char*>(v.data) + (high + 1) * size;  // exclusive
    return true;
  };
  const unsigned char *alo, *ahi, *blo, *bhi;
  if (!span(a, &alo, &ahi) || !span(b, &blo, &bhi)) return false;
  return alo < bhi && blo < ahi;
}

bool same_view(const TensorView& a, const TensorView& b) {
  return a.data == b.data && a.dtype == b.dtype && a.shape == b.shape && a.strides == b.strides;
}

void validate_token_permute(const TensorView& input, const TensorView& output,
                            const std::vector<int64_t>& tile_shape, const std::vector<int64_t>& dilation,
                            bool inverse) {
  const char* op = inverse ? "token_unpermute" : "token_permute";
  const TensorView& unpermuted = inverse ? output : input;
  const TensorView& permuted = inverse ? input : output;
  const char* unpermuted_name = inverse ? "output" : "input";
  const char* permuted_name = inverse ? "input" : "output";
  for (const TensorView* v : {&input, &output})
    if (v->strides.size() != v->shape.size())
      throw ValueError(std::string(op) + ": " + (v == &input ? "input" : "output") + " has " +
                       std::to_string(v->shape.size()) + " extents but " +
                       std::to_string(v->strides.size()) + " strides");
  if (unpermuted.dim() < 4 || unpermuted.dim() > 6)
    throw ValueError(std::string(op) + ": " + unpermuted_name + " " + unpermuted.describe() +
                     " must be [B, *S, H, D] with 1 to 3 spatial axes (rank 4 to 6)");
  const std::vector<int64_t> expected = permute_shape(op, unpermuted.shape, tile_shape, dilation);
  if (permuted.shape != expected)
    throw ValueError(std::string(op) + ": " + permuted_name + " shape " + shape_string(permuted.shape) +
                     " must be " + shape_string(expected) + " = token_permute_shape(" +
                     shape_string(unpermuted.shape) + ", tile_shape=" + tuple_string(tile_shape) +
                     ", dilation=" + tuple_string(dilation) + ")");
  if (input.dtype != output.dtype)
    throw ValueError(std::string(op) + ": output dtype " + dtype_name(output.dtype) +
                     " must equal the input dtype " + dtype_name(input.dtype));
  if (input.dtype != DType::f32 && input.dtype != DType::f16 && input.dtype != DType::bf16 && input.dtype != DType::f64)
    throw ValueError(std::string(op) + ": dtype " + dtype_name(input.dtype) +
                     " is not supported; allowed: fp32, fp16, bf16, fp64");
  if (input.device != output.device)
    throw ValueError(std::string(op) + ": input is on " + device_name(input.device) +
                     " but output is on " + device_name(output.device) + "; they must share a device");
  for (const TensorView* v : {&input, &output}) {
    const char* name = v == &input ? "input" : "output";
    if (v->size(-1) > 1 && v->stride(-1) != 1)
      throw ValueError(std::string(op) + ": " + name + " " + v->describe() + " has last-axis stride " +
                       std::to_string(v->stride(-1)) + "; the head dim must be contiguous (stride 1)");
    if (v->data == nullptr && v->numel() > 0)
      throw ValueError(std::string(op) + ": " + name + " " + v->describe() + " has no data (null pointer)");
  }
  if (views_overlap(input, output))
    throw ValueError(std::string(op) + ": output " + output.describe() +
                     " overlaps input in memory; they must be disjoint");
}

sem::Permutation make_token_permutation(const std::vector<int64_t>& unpermuted_shape,
                                        const std::vector<int64_t>& tile_shape,
                                        const std::vector<int64_t>& dilation, bool flip_tiled_dims) {
  sem::Permutation perm;
  perm.rank = static_cast<int>(unpermuted_shape.size()) - 3;
  for (int i = 0; i < perm.rank; ++i) {
    perm.extent[i] = unpermuted_shape[static_cast<size_t>(i + 1)];
    perm.tile[i] = tile_shape[static_cast<size_t>(i)];
    perm.dilation[i] = dilation[static_cast<size_t>(i)];
  }
  perm.flip = flip_tiled_dims;
  return perm;
}

namespace {

// Geometry shared by both directions: the unpermuted view u [B, *S, H, D] and permuted view p
// [B * G, P, H, D].
struct PermuteGeometry {
  int rank = 1;
  int64_t batch = 0, groups = 1, seq = 0, heads = 0, row_bytes = 0;

  PermuteGeometry(const TensorView& u, const sem::Permutation& perm) {
    rank = perm.rank;
    batch = u.shape[0];
    groups = perm.num_groups();
    seq = perm.seq_len();
    heads = u.shape[static_cast<size_t>(rank + 1)];
    row_bytes = u.shape[static_cast<size_t>(rank + 2)] * dtype_size(u.dtype);
  }
};

unsigned char* byte_ptr(const TensorView& v, int64_t element_offset) {
  return static_cast<unsigned char*>(v.data) + element_offset * dtype_size(v.dtype);
}

}  // namespace

void cpu_token_permute(const TensorView& input, const TensorView& output, const sem::Permutation& perm) {
  const PermuteGeometry g(input, perm);
  if (g.row_bytes == 0) return;
  const int64_t slots = g.batch * g.groups * g.seq;
  const int64_t head_stride_in = input.strides[static_cast<size_t>(g.rank + 1)];
  const int64_t head_stride_out = output.strides[2];
  // One (batch, group, position) slot per iteration: decode it once, then copy (or zero) H rows.
#pragma omp parallel for schedule(static)
  for (int64_t slot = 0; slot < slots; ++slot) {
    const int64_t permuted_batch = slot / g.seq, pos = slot % g.seq;
    const int64_t b = permuted_batch / g.groups, group = permuted_batch % g.groups;
    int64_t x[sem::kMaxRank] = {0, 0, 0};
    const bool valid = perm.inverse(group, pos, x);
    int64_t src = b * input.strides[0];
    for (int i = 0; i < g.rank; ++i) src += x[i] * input.strides[static_cast<size_t>(i + 1)];
    const int64_t dst = permuted_batch * output.strides[0] + pos * output.strides[1];
    for (int64_t h = 0; h < g.heads; ++h) {
      unsigned char* to = byte_ptr(output, dst + h * head_stride_out);
      if (valid)
        std::memcpy(to, byte_ptr(input, src + h * head_stride_in), static_cast<size_t>(g.row_bytes));
      else
        std::memset(to, 0, static_cast<size_t>(g.row_bytes));  // all-zero bits are +0 in every dtype
    }
  }
}

void cpu_token_unpermute(const TensorView& input, const TensorView& output, const sem::Permutation& perm) {
  const PermuteGeometry g(output, perm);
  if (g.row_bytes == 0) return;
  int64_t tokens = 1;
  for (int i = 0; i < g.rank; ++i) tokens *= perm.extent[i];
  const int64_t items = g.batch * tokens;
  const int64_t head_stride_in = input.strides[2];
  const int64_t head_stride_out = output.strides[static_cast<size_t>(g.rank + 1)];
  // One original token per iteration; every output row is written exactly once.
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t b = item / tokens;
    int64_t rest = item % tokens;
    int64_t x[sem::kMaxRank] = {0, 0, 0};
    for (int i = g.rank - 1; i >= 0; --i) {
      x[i] = rest % perm.extent[i];
      rest /= perm.extent[i];
    }
    int64_t group = 0, pos = 0;
    perm.forward(x, &group, &pos);
    const int64_t src = (b * g.groups + group) * input.strides[0] + pos * input.strides[1];
    int64_t dst = b * output.strides[0];
    for (int i = 0; i < g.rank; ++i) dst += x[i] * output.strides[static_cast<size_t>(i + 1)];
    for (int64_t h = 0; h < g.heads; ++h)
      std::memcpy(byte_ptr(output, dst + h * head_stride_out), byte_ptr(input, src + h * head_stride_in),
                  static_cast<size_t>(g.row_bytes));
  }
}

}  // namespace detail
}  // namespace nattn
