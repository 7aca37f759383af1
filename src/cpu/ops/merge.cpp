// merge_attentions on the CPU: combines attention outputs computed over disjoint key sets using
// their log-sum-exps (natten-reference.md §1.5). Per row (b, s, h):
//   m = max_i L_i,  w_i = exp(L_i - m),  L = m + log(sum_i w_i),  O = sum_i (w_i / sum_j w_j) O_i.
// Subtracting the max keeps every exponent <= 0, so nothing overflows; fp64 keeps the merged LSE
// and weights accurate to far below fp32 rounding.
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>

#include "core/half.h"
#include "cpu/ops/cpu_ops.h"
#include "nattn/errors.h"

namespace nattn::detail {
namespace {

constexpr const char* kOp = "merge_attentions";

bool is_float_dtype(DType d) { return d == DType::f32 || d == DType::f16 || d == DType::bf16; }

std::string indexed(const char* name, size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

void check_view(const TensorView& v, const std::string& name) {
  if (v.strides.size() != v.shape.size())
    throw ValueError(std::string(kOp) + ": " + name + " has " + std::to_string(v.shape.size()) +
                     " extents but " + std::to_string(v.strides.size()) + " strides");
  for (int64_t s : v.shape)
    if (s < 0)
      throw ValueError(std::string(kOp) + ": " + name + " shape " + shape_string(v.shape) +
                       " has a negative extent");
  if (v.data == nullptr && v.numel() > 0)
    throw ValueError(std::string(kOp) + ": " + name + " " + v.describe() + " has no data (null pointer)");
}

// An attention output: [B, S, H, Dv] like the reference shape/dtype (or defining them when ref is null).
void check_output(const TensorView& v, const std::string& name, const TensorView* ref) {
  check_view(v, name);
  if (v.dim() != 4)
    throw ValueError(std::string(kOp) + ": " + name + " " + v.describe() +
                     " must be 4-D [B, S, H, Dv]; got rank " + std::to_string(v.dim()));
  if (!is_float_dtype(v.dtype))
    throw ValueError(std::string(kOp) + ": " + name + " dtype " + dtype_name(v.dtype) +
                     " is not supported; allowed: fp32, fp16, bf16");
  if (v.size(3) > 1 && v.stride(3) != 1)
    throw ValueError(std::string(kOp) + ": " + name + " " + v.describe() + " has last-axis stride " +
                     std::to_string(v.stride(3)) + "; the head dim must be contiguous (stride 1)");
  if (ref == nullptr) return;
  if (v.shape != ref->shape)
    throw ValueError(std::string(kOp) + ": " + name + " shape " + shape_string(v.shape) +
                     " must equal outputs[0] shape " + shape_string(ref->shape));
  if (v.dtype != ref->dtype)
    throw ValueError(std::string(kOp) + ": " + name + " dtype " + dtype_name(v.dtype) +
                     " must equal outputs[0] dtype " + dtype_name(ref->dtype));
}

// An LSE: [B, S, H] fp32 where [B, S, H] are the first three extents of the outputs.
void check_lse(const TensorView& v, const std::string& name, const TensorView& ref) {
  check_view(v, name);
  const std::vector<int64_t> expected(ref.shape.begin(), ref.shape.begin() + 3);
  if (v.shape != expected)
    throw ValueError(std::string(kOp) + ": " + name + " shape " + shape_string(v.shape) + " must be " +
                     shape_string(expected) + " (the first three extents of the outputs [B, S, H, Dv])");
  if (v.dtype != DType::f32)
    throw ValueError(std::string(kOp) + ": " + name + " dtype " + dtype_name(v.dtype) + " must be fp32");
}

// Element access specialised per storage type, so the inner loops carry no dtype switch.
struct F32 {
  static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
};
struct F16 {
  static float load(const void* p, int64_t i) { return fp16_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = float_to_fp16(v); }
};
struct BF16 {
  static float load(const void* p, int64_t i) { return bf16_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = float_to_bf16(v); }
};

template <class Elem>
void merge_rows(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                const TensorView& out, const TensorView& lse, int threads) {
  const int64_t B = out.shape[0], S = out.shape[1], H = out.shape[2], Dv = out.shape[3];
  const int64_t rows = B * S * H;
  const size_t parts = outputs.size();
  // Per-thread scratch, allocated here so that nothing inside the parallel region can throw:
  // Dv accumulators and one weight per part.
  const size_t scratch_per_thread = static_cast<size_t>(Dv) + parts;
  std::vector<double> scratch(scratch_per_thread * static_cast<size_t>(threads));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();

#pragma omp parallel num_threads(threads)
  {
    double* acc = scratch.data() + scratch_per_thread * static_cast<size_t>(omp_get_thread_num());
    double* weight = acc + Dv;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t b = row / (S * H), s = (row / H) % S, h = row % H;
      // Read every LSE of the row before writing anything: lse may alias one of them.
      double max_lse = neg_inf;
      bool any_nan = false;
      for (size_t i = 0; i < parts; ++i) {
        const TensorView& l = lses[i];
        weight[i] = static_cast<const float*>(l.data)[b * l.strides[0] + s * l.strides[1] + h * l.strides[2]];
        any_nan = any_nan || std::isnan(weight[i]);
        if (weight[i] > max_lse) max_lse = weight[i];
      }
      double merged_lse;
      if (any_nan) {
        merged_lse = nan;
      } else if (max_lse == neg_inf) {
        merged_lse = neg_inf;  // no part saw any key
      } else {
        double total = 0;
        for (size_t i = 0; i < parts; ++i) {
          weight[i] = weight[i] == neg_inf ? 0.0 : std::exp(weight[i] - max_lse);
          total += weight[i];
        }
        for (size_t i = 0; i < parts; ++i) weight[i] /= total;
        merged_lse = max_lse + std::log(total);
      }
      // Accumulate every part before writing: out may alias one of the outputs.
      for (int64_t c = 0; c < Dv; ++c) acc[c] = any_nan ? nan : 0.0;
      if (!any_nan && max_lse != neg_inf) {
        for (size_t i = 0; i < parts; ++i) {
          if (weight[i] == 0.0) continue;  // a part with no keys (or a negligible one): O_i unread
          const TensorView& o = outputs[i];
          const int64_t base = b * o.strides[0] + s * o.strides[1] + h * o.strides[2];
          for (int64_t c = 0; c < Dv; ++c) acc[c] += weight[i] * Elem::load(o.data, base + c);
        }
      }
      const int64_t out_base = b * out.strides[0] + s * out.strides[1] + h * out.strides[2];
      for (int64_t c = 0; c < Dv; ++c) Elem::store(out.data, out_base + c, static_cast<float>(acc[c]));
      static_cast<float*>(lse.data)[b * lse.strides[0] + s * lse.strides[1] + h * lse.strides[2]] =
          static_cast<float>(merged_lse);
    }
  }
}

}  // namespace

void validate_merge(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                    const TensorView& out, const TensorView& lse) {
  if (outputs.size() < 2)
    throw ValueError(std::string(kOp) + ": outputs holds " + std::to_string(outputs.size()) +
                     " tensor(s); at least 2 are required");
  if (lses.size() != outputs.size())
    throw ValueError(std::string(kOp) + ": lses holds " + std::to_string(lses.size()) +
                     " tensor(s) but outputs holds " + std::to_string(outputs.size()) +
                     "; there must be one LSE per output");
  check_output(outputs[0], "outputs[0]", nullptr);
  for (size_t i = 1; i < outputs.size(); ++i) check_output(outputs[i], indexed("outputs", i), &outputs[0]);
  for (size_t i = 0; i < lses.size(); ++i) check_lse(lses[i], indexed("lses", i), outputs[0]);
  check_output(out, "out", &outputs[0]);
  check_lse(lse, "lse", outputs[0]);

  const Device device = outputs[0].device;
  auto check_device = [&](const TensorView& v, const std::string& name) {
    if (v.device != device)
      throw ValueError(std::string(kOp) + ": " + name + " is on " + device_name(v.device) +
                       " but outputs[0] is on " + device_name(device) + "; all tensors must share a device");
  };
  for (size_t i = 0; i < outputs.size(); ++i) check_device(outputs[i], indexed("outputs", i));
  for (size_t i = 0; i < lses.size(); ++i) check_device(lses[i], indexed("lses", i));
  check_device(out, "out");
  check_device(lse, "lse");
  if (device.kind != DeviceKind::cpu)
    throw NotImplementedError(std::string(kOp) + ": device " + device_name(device) +
                              " is not supported; this build implements merge_attentions on the CPU only");

  // Written tensors may only coincide exactly with the part they replace (read fully per row
  // before the row is written); any other overlap would let a write clobber an unread input.
  auto check_written = [&](const TensorView& written, const char* written_name,
                           const std::vector<TensorView>& same_kind, const char* kind_name,
                           const std::vector<TensorView>& other_kind, const char* other_name) {
    for (size_t i = 0; i < same_kind.size(); ++i)
      if (!same_view(written, same_kind[i]) && views_overlap(written, same_kind[i]))
        throw ValueError(std::string(kOp) + ": " + written_name + " partially overlaps " + indexed(kind_name, i) +
                         "; it may only be exactly the same view (same data, shape and strides) or disjoint");
    for (size_t i = 0; i < other_kind.size(); ++i)
      if (views_overlap(written, other_kind[i]))
        throw ValueError(std::string(kOp) + ": " + written_name + " overlaps " + indexed(other_name, i) +
                         "; they must be disjoint");
  };
  check_written(out, "out", outputs, "outputs", lses, "lses");
  check_written(lse, "lse", lses, "lses", outputs, "outputs");
  if (views_overlap(out, lse)) throw ValueError(std::string(kOp) + ": out and lse overlap; they must be disjoint");
}

void cpu_merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                          const TensorView& out, const TensorView& lse, int num_threads) {
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  switch (out.dtype) {
    case DType::f16: merge_rows<F16>(outputs, lses, out, lse, threads); break;
    case DType::bf16: merge_rows<BF16>(outputs, lses, out, lse, threads); break;
    default: merge_rows<F32>(outputs, lses, out, lse, threads); break;
  }
}

}  // namespace nattn::detail
