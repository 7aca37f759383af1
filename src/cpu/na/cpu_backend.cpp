// The `cpu` backend: fast multithreaded neighborhood attention and standard attention on the CPU.
// This file translates the (already validated) op arguments into a Geometry and tensor descriptions;
// plan.h / driver.h / kernels.inc do the work (README.md describes the algorithm).
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/half.h"
#include "cpu/na/driver.h"
#include "cpu/na/plan.h"

namespace nattn::detail {

namespace {

using cpu::FmhaGeometry;
using cpu::FmhaShape;
using cpu::NaGeometry;
using cpu::NaShape;
using cpu::OpConfig;
using cpu::OpTensors;
using cpu::TensorDesc;

int32_t elem_of(DType dtype) {
  switch (dtype) {
    case DType::f32: return cpu::elem_f32;
    case DType::f16: return cpu::elem_f16;
    case DType::bf16: return cpu::elem_bf16;
    default: break;
  }
  throw NotImplementedError(std::string("cpu backend: dtype ") + dtype_name(dtype) +
                            " is not supported (allowed: fp32, fp16, bf16)");
}

// [batch, spatial (rank axes), head, (channel)]; the channel axis is contiguous (validated).
TensorDesc describe_tensor(const TensorView& v, int rank) {
  TensorDesc d;
  d.data = v.data;
  d.mutable_data = v.data;
  d.elem = elem_of(v.dtype);
  d.rank = rank;
  d.batch_stride = v.stride(0);
  for (int a = 0; a < rank; ++a) d.spatial_stride[a] = v.stride(1 + a);
  d.head_stride = v.stride(1 + rank);
  return d;
}

// Threads for a problem of `flops` (multiply-adds x 2): at most the requested number, and no more
// than one per ~2 MFLOP of work, since a parallel region costs more than a tiny problem (and much
// more on a loaded machine, where a waiting thread may lose its time slice). Results do not depend
// on the thread count.
int thread_count(const RunOptions& options, double flops) {
  const int requested = options.num_threads > 0 ? options.num_threads : omp_get_max_threads();
  const double useful = std::max(1.0, flops / 2e6);
  return useful < requested ? static_cast<int>(useful) : requested;
}

double na_flops(const NaShape& s, int64_t dim, int64_t dim_v) {
  double tokens = static_cast<double>(s.batch), window = 1.0;
  for (int a = 0; a < s.rank; ++a) {
    tokens *= static_cast<double>(s.axis[a].extent);
    window *= static_cast<double>(s.axis[a].kernel);
  }
  return 2.0 * tokens * static_cast<double>(s.heads) * (window + static_cast<double>(s.additional)) *
         static_cast<double>(dim + dim_v);
}

double fmha_flops(const FmhaShape& s, int64_t dim, int64_t dim_v) {
  return 2.0 * static_cast<double>(s.batch) * static_cast<double>(s.seqlen_q) * static_cast<double>(s.seqlen_kv) *
         static_cast<double>(s.heads) * static_cast<double>(dim + dim_v);
}

// The block of queries one task computes (in-group coordinates per axis; README.md).
std::vector<int64_t> default_tile(int rank) {
  if (rank == 1) return {64};
  if (rank == 2) return {4, 16};
  return {1, 4, 16};
}

std::vector<int64_t> tile_of(const TileConfig& config, int rank, const char* what) {
  if (config.q_tile.empty()) return default_tile(rank);
  bool valid = static_cast<int>(config.q_tile.size()) == rank;
  for (int64_t t : config.q_tile) valid = valid && t >= 1 && t <= (int64_t{1} << 20);
  if (!valid) {
    throw ValueError(std::string("cpu backend: ") + what + " q_tile " + config.describe() +
                     " is not allowed (allowed: " + std::to_string(rank) +
                     " positive extents, e.g. the defaults of get_configs(\"cpu\", ...))");
  }
  return config.q_tile;
}

NaShape na_shape(const TensorView& query, const TensorView& key,
                 const std::optional<TensorView>& additional_keys, const NaParams& params) {
  NaShape s;
  s.rank = params.rank;
  s.batch = query.size(0);
  s.heads = query.size(s.rank + 1);
  s.heads_kv = key.size(s.rank + 1);
  s.additional = additional_keys ? additional_keys->size(1) : 0;
  for (int a = 0; a < s.rank; ++a) {
    s.axis[a] = sem::Axis{query.size(1 + a), params.kernel_size[static_cast<size_t>(a)],
                          params.stride[static_cast<size_t>(a)], params.dilation[static_cast<size_t>(a)],
                          params.is_causal[static_cast<size_t>(a)]};
  }
  return s;
}

// Cumulative offsets (int32 on the CPU) as int64, checked so that no sequence reads out of bounds.
std::vector<int64_t> read_offsets(const TensorView& cu, int64_t rows, const char* name) {
  std::vector<int64_t> out(static_cast<size_t>(cu.numel()));
  const int32_t* data = static_cast<const int32_t*>(cu.data);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = data[static_cast<int64_t>(i) * cu.stride(0)];
    const bool ok = out[i] >= 0 && out[i] <= rows && (i == 0 ? out[i] == 0 : out[i] >= out[i - 1]);
    if (!ok) {
      throw ValueError(std::string("cpu backend: ") + name + "[" + std::to_string(i) + "] = " +
                       std::to_string(out[i]) + " is not allowed (allowed: non-decreasing offsets from 0 to " +
                       std::to_string(rows) + ")");
    }
  }
  return out;
}

// Zero the rows [cu.back(), rows) of t (every head): rows outside every varlen sequence.
void zero_uncovered(const TensorView& t, int64_t covered, bool has_channel) {
  const int64_t rows = t.size(1), heads = t.size(2);
  const int64_t cols = has_channel ? t.size(3) : 1;
  for (int64_t r = covered; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t c = 0; c < cols; ++c) {
        store_float(t.data, r * t.stride(1) + h * t.stride(2) + (has_channel ? c * t.stride(3) : 0), t.dtype, 0.f);
      }
    }
  }
}

FmhaShape fmha_shape(const TensorView& query, const TensorView& key, bool is_causal,
                     const std::optional<TensorView>& cu_q, const std::optional<TensorView>& cu_kv) {
  FmhaShape s;
  s.batch = query.size(0);
  s.seqlen_q = query.size(1);
  s.seqlen_kv = key.size(1);
  s.heads = query.size(2);
  s.heads_kv = key.size(2);
  s.causal = is_causal;
  if (cu_q && cu_kv) {
    s.cu_q = read_offsets(*cu_q, s.seqlen_q, "cu_seqlens_q");
    s.cu_kv = read_offsets(*cu_kv, s.seqlen_kv, "cu_seqlens_kv");
    if (s.cu_q.size() != s.cu_kv.size() || s.cu_q.size() < 2 || s.batch != 1) {
      throw ValueError("cpu backend: varlen needs batch 1 and cu_seqlens_q / cu_seqlens_kv of one size >= 2 (got batch " +
                       std::to_string(s.batch) + ", sizes " + std::to_string(s.cu_q.size()) + " and " +
                       std::to_string(s.cu_kv.size()) + ")");
    }
  }
  return s;
}

int64_t fmha_tile(const TileConfig& config) { return tile_of(config, 1, "fmha")[0]; }

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  std::string reject(const NaProblem& p, Pass) const override { return reject_common(p.device, p.dtype); }
  std::string reject(const FmhaProblem& p, Pass) const override { return reject_common(p.device, p.dtype); }

  void na_forward(const NaForwardArgs& a, const TileConfig& config, const RunOptions& options) const override {
    const NaShape shape = na_shape(a.query, a.key, a.additional_keys, a.params);
    const NaGeometry geo(shape, tile_of(config, shape.rank, "na"));
    OpTensors t;
    t.q = describe_tensor(a.query, shape.rank);
    t.k = describe_tensor(a.key, shape.rank);
    t.v = describe_tensor(a.value, shape.rank);
    t.out = describe_tensor(a.out, shape.rank);
    if (a.lse) {
      t.lse = describe_tensor(*a.lse, shape.rank);
      t.has_lse = true;
    }
    if (shape.additional > 0) {
      t.add_k = describe_tensor(*a.additional_keys, 1);
      t.add_v = describe_tensor(*a.additional_values, 1);
    }
    const double flops = na_flops(shape, a.query.size(-1), a.value.size(-1));
    cpu::run_forward(geo, t, config_of(a.query, a.value, *a.scale, options, flops));
  }

  void na_backward(const NaBackwardArgs& a, const TileConfig& config, const RunOptions& options) const override {
    const NaShape shape = na_shape(a.query, a.key, a.additional_keys, a.params);
    const NaGeometry geo(shape, tile_of(config, shape.rank, "na backward"));
    OpTensors t;
    t.q = describe_tensor(a.query, shape.rank);
    t.k = describe_tensor(a.key, shape.rank);
    t.v = describe_tensor(a.value, shape.rank);
    t.out = describe_tensor(a.out, shape.rank);
    t.lse = describe_tensor(a.lse, shape.rank);
    t.dout = describe_tensor(a.dout, shape.rank);
    t.dq = describe_tensor(a.dquery, shape.rank);
    t.dk = describe_tensor(a.dkey, shape.rank);
    t.dv = describe_tensor(a.dvalue, shape.rank);
    if (shape.additional > 0) {
      t.add_k = describe_tensor(*a.additional_keys, 1);
      t.add_v = describe_tensor(*a.additional_values, 1);
      t.dadd_k = describe_tensor(*a.dadditional_keys, 1);
      t.dadd_v = describe_tensor(*a.dadditional_values, 1);
    }
    const double flops = 2.5 * na_flops(shape, a.query.size(-1), a.value.size(-1));
    cpu::run_backward(geo, t, config_of(a.query, a.value, *a.scale, options, flops));
  }

  void fmha_forward(const FmhaForwardArgs& a, const TileConfig& config, const RunOptions& options) const override {
    const FmhaShape shape = fmha_shape(a.query, a.key, a.is_causal, a.cu_seqlens_q, a.cu_seqlens_kv);
    const FmhaGeometry geo(shape, fmha_tile(config));
    OpTensors t;
    t.q = describe_tensor(a.query, 1);
    t.k = describe_tensor(a.key, 1);
    t.v = describe_tensor(a.value, 1);
    t.out = describe_tensor(a.out, 1);
    if (a.lse) {
      t.lse = describe_tensor(*a.lse, 1);
      t.has_lse = true;
    }
    const double flops = fmha_flops(shape, a.query.size(-1), a.value.size(-1));
    cpu::run_forward(geo, t, config_of(a.query, a.value, *a.scale, options, flops));
    if (!shape.cu_q.empty()) {
      zero_uncovered(a.out, shape.cu_q.back(), true);
      if (a.lse) zero_uncovered(*a.lse, shape.cu_q.back(), false);
    }
  }

  void fmha_backward(const FmhaBackwardArgs& a, const TileConfig& config, const RunOptions& options) const override {
    const FmhaShape shape = fmha_shape(a.query, a.key, a.is_causal, a.cu_seqlens_q, a.cu_seqlens_kv);
    const FmhaGeometry geo(shape, fmha_tile(config));
    OpTensors t;
    t.q = describe_tensor(a.query, 1);
    t.k = describe_tensor(a.key, 1);
    t.v = describe_tensor(a.value, 1);
    t.out = describe_tensor(a.out, 1);
    t.lse = describe_tensor(a.lse, 1);
    t.dout = describe_tensor(a.dout, 1);
    t.dq = describe_tensor(a.dquery, 1);
    t.dk = describe_tensor(a.dkey, 1);
    t.dv = describe_tensor(a.dvalue, 1);
    const double flops = 2.5 * fmha_flops(shape, a.query.size(-1), a.value.size(-1));
    cpu::run_backward(geo, t, config_of(a.query, a.value, *a.scale, options, flops));
    if (!shape.cu_q.empty()) {
      zero_uncovered(a.dquery, shape.cu_q.back(), true);
      zero_uncovered(a.dkey, shape.cu_kv.back(), true);
      zero_uncovered(a.dvalue, shape.cu_kv.back(), true);
    }
  }

 private:
  static std::string reject_common(const Device& device, DType dtype) {
    if (device.kind != DeviceKind::cpu) return "runs on the CPU only (got " + device_name(device) + ")";
    if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16) {
      return std::string("dtype ") + dtype_name(dtype) + " is not supported (allowed: fp32, fp16, bf16)";
    }
    return {};
  }

  static OpConfig config_of(const TensorView& query, const TensorView& value, double scale,
                            const RunOptions& options, double flops) {
    OpConfig c;
    c.threads = thread_count(options, flops);
    c.scale = static_cast<float>(scale);
    c.dim = query.size(-1);
    c.dim_v = value.size(-1);
    return c;
  }
};

}  // namespace

const Backend& cpu_backend() {
  static const CpuBackend backend;
  return backend;
}

}  // namespace nattn::detail
