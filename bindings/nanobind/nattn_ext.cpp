// nattn._C: the Python extension. It takes DLPack tensors (nanobind ndarray: NumPy, PyTorch,
// CuPy, JAX, ...) plus an optional CUDA stream (an int), builds framework-free TensorViews, calls
// the C++ core and maps its exceptions onto ValueError / NotImplementedError / RuntimeError.
// No framework types here: the PyTorch layer is pure Python (python/nattn/_torch_ops.py).
// Outputs are always given by the caller; nothing here allocates tensor memory.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nattn/nattn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Array = nb::ndarray<nb::ro>;        // any dtype, device, shape and strides (read-only view)
using OutArray = nb::ndarray<>;           // writable

nattn::DType to_dtype(const nb::dlpack::dtype& dt, const char* name) {
  const auto code = static_cast<nb::dlpack::dtype_code>(dt.code);
  if (dt.lanes == 1) {
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 32) return nattn::DType::f32;
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 64) return nattn::DType::f64;
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 16) return nattn::DType::f16;
    if (code == nb::dlpack::dtype_code::Bfloat && dt.bits == 16) return nattn::DType::bf16;
    if (code == nb::dlpack::dtype_code::Int && dt.bits == 32) return nattn::DType::i32;
  }
  static const char* codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  const std::string code_name = dt.code < 7 ? codes[dt.code] : "code" + std::to_string(dt.code);
  throw nattn::ValueError(std::string(name) + " has dtype " + code_name + std::to_string(dt.bits) +
                          (dt.lanes != 1 ? "x" + std::to_string(dt.lanes) : std::string()) +
                          " (allowed: float32, float16, bfloat16, float64 (reference backend); int32 for sequence offsets)");
}

nattn::Device to_device(int device_type, int device_id, const char* name) {
  // DLPack device types: 1 CPU, 2 CUDA, 3 CUDA host (pinned), 13 CUDA managed.
  if (device_type == nb::device::cpu::value || device_type == nb::device::cuda_host::value)
    return nattn::Device{nattn::DeviceKind::cpu, 0};
  if (device_type == nb::device::cuda::value || device_type == nb::device::cuda_managed::value)
    return nattn::Device{nattn::DeviceKind::cuda, device_id};
  throw nattn::ValueError(std::string(name) + " lives on DLPack device type " + std::to_string(device_type) +
                          " (allowed: CPU or CUDA)");
}

template <typename A>
nattn::TensorView view_of(const A& a, const char* name) {
  nattn::TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = to_dtype(a.dtype(), name);
  t.device = to_device(a.device_type(), a.device_id(), name);
  const size_t n = a.ndim();
  t.shape.resize(n);
  t.strides.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t.shape[i] = static_cast<int64_t>(a.shape(i));
    t.strides[i] = static_cast<int64_t>(a.stride(i));
  }
  // Producers report arbitrary strides for empty arrays (NumPy exports zeros): nothing is read.
  if (t.numel() == 0) t.strides = nattn::contiguous_strides(t.shape);
  return t;
}

std::optional<nattn::TensorView> opt_view(const std::optional<Array>& a, const char* name) {
  if (!a) return std::nullopt;
  return view_of(*a, name);
}
std::optional<nattn::TensorView> opt_out(const std::optional<OutArray>& a, const char* name) {
  if (!a) return std::nullopt;
  return view_of(*a, name);
}

nattn::NaParams make_params(const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
                            const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal) {
  const size_t rank = kernel_size.size();
  if (rank < 1 || rank > 3)
    throw nattn::ValueError("kernel_size must have 1 to 3 entries (got " + std::to_string(rank) + ")");
  if (stride.size() != rank || dilation.size() != rank || is_causal.size() != rank)
    throw nattn::ValueError("kernel_size, stride, dilation and is_causal must have one entry per axis (got " +
                            std::to_string(rank) + ", " + std::to_string(stride.size()) + ", " +
                            std::to_string(dilation.size()) + ", " + std::to_string(is_causal.size()) + ")");
  nattn::NaParams p;
  p.rank = static_cast<int>(rank);
  for (size_t i = 0; i < rank; ++i) {
    p.kernel_size[i] = kernel_size[i];
    p.stride[i] = stride[i];
    p.dilation[i] = dilation[i];
    p.is_causal[i] = is_causal[i];
  }
  return p;
}

// Sub-domain NA (issue 6): an empty global_extent means "no sub-domain".
std::optional<nattn::SubDomain> make_sub_domain(const std::vector<int64_t>& global_extent,
                                                const std::vector<int64_t>& q_origin,
                                                const std::vector<int64_t>& kv_origin, size_t rank) {
  if (global_extent.empty() && q_origin.empty() && kv_origin.empty()) return std::nullopt;
  if (global_extent.size() != rank || q_origin.size() != rank || kv_origin.size() != rank)
    throw nattn::ValueError("sub_domain global_extent, q_origin and kv_origin must have one entry per axis (" +
                            std::to_string(rank) + "; got " + std::to_string(global_extent.size()) + ", " +
                            std::to_string(q_origin.size()) + ", " + std::to_string(kv_origin.size()) + ")");
  nattn::SubDomain sd;
  for (size_t i = 0; i < rank; ++i) {
    sd.global_extent[i] = global_extent[i];
    sd.q_origin[i] = q_origin[i];
    sd.kv_origin[i] = kv_origin[i];
  }
  return sd;
}

nattn::RunOptions make_options(const std::string& backend, const std::vector<int64_t>& q_tile,
                               const std::vector<int64_t>& kv_tile, const std::string& schedule, int num_threads,
                               uintptr_t stream, bool deterministic, bool requires_grad) {
  nattn::RunOptions o;
  o.backend = backend;
  if (!q_tile.empty() || !kv_tile.empty() || !schedule.empty()) {
    nattn::TileConfig c;
    c.q_tile = q_tile;
    c.kv_tile = kv_tile;
    c.schedule = nattn::parse_schedule(schedule);
    o.config = c;
  }
  o.num_threads = num_threads;
  o.stream = reinterpret_cast<void*>(stream);
  o.deterministic = deterministic;
  o.requires_grad = requires_grad;
  return o;
}

nb::tuple config_tuple(const nattn::TileConfig& c) {
  return nb::make_tuple(nb::tuple(nb::cast(c.q_tile)), nb::tuple(nb::cast(c.kv_tile)),
                        std::string(nattn::schedule_name(c.schedule)));
}

nattn::Pass to_pass(const std::string& pass) {
  if (pass == "forward") return nattn::Pass::forward;
  if (pass == "backward") return nattn::Pass::backward;
  throw nattn::ValueError("pass must be 'forward' or 'backward' (got '" + pass + "')");
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "nattn C++ core bindings (DLPack tensors in, caller-allocated outputs)";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const nattn::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const nattn::NotImplementedError& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    } catch (const nattn::RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const nattn::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.attr("__version__") = NATTN_VERSION_STRING;
#ifdef NATTN_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif

  // ---- problem descriptions (for selection and the config finders) -----------------------------
  nb::class_<nattn::NaProblem>(m, "NaProblem")
      .def(nb::init<>())
      .def_rw("batch", &nattn::NaProblem::batch)
      .def_rw("spatial", &nattn::NaProblem::spatial)
      .def_rw("heads", &nattn::NaProblem::heads)
      .def_rw("heads_kv", &nattn::NaProblem::heads_kv)
      .def_rw("head_dim", &nattn::NaProblem::head_dim)
      .def_rw("head_dim_v", &nattn::NaProblem::head_dim_v)
      .def_rw("additional_kv", &nattn::NaProblem::additional_kv)
      .def_rw("compute_capability", &nattn::NaProblem::compute_capability)
      .def_rw("requires_grad", &nattn::NaProblem::requires_grad)
      .def_rw("deterministic", &nattn::NaProblem::deterministic)
      .def("set_dtype", [](nattn::NaProblem& p, const std::string& d) { p.dtype = nattn::parse_dtype(d); })
      .def("set_device", [](nattn::NaProblem& p, bool cuda, int index) {
        p.device = nattn::Device{cuda ? nattn::DeviceKind::cuda : nattn::DeviceKind::cpu, index};
      })
      .def("set_params", [](nattn::NaProblem& p, const std::vector<int64_t>& k, const std::vector<int64_t>& s,
                            const std::vector<int64_t>& d, const std::vector<bool>& c) {
        p.params = make_params(k, s, d, c);
      })
      .def("describe", &nattn::NaProblem::describe)
      .def("__repr__", &nattn::NaProblem::describe);

  nb::class_<nattn::FmhaProblem>(m, "FmhaProblem")
      .def(nb::init<>())
      .def_rw("batch", &nattn::FmhaProblem::batch)
      .def_rw("seqlen_q", &nattn::FmhaProblem::seqlen_q)
      .def_rw("seqlen_kv", &nattn::FmhaProblem::seqlen_kv)
      .def_rw("heads", &nattn::FmhaProblem::heads)
      .def_rw("heads_kv", &nattn::FmhaProblem::heads_kv)
      .def_rw("head_dim", &nattn::FmhaProblem::head_dim)
      .def_rw("head_dim_v", &nattn::FmhaProblem::head_dim_v)
      .def_rw("compute_capability", &nattn::FmhaProblem::compute_capability)
      .def_rw("is_causal", &nattn::FmhaProblem::is_causal)
      .def_rw("is_varlen", &nattn::FmhaProblem::is_varlen)
      .def_rw("requires_grad", &nattn::FmhaProblem::requires_grad)
      .def_rw("deterministic", &nattn::FmhaProblem::deterministic)
      .def("set_dtype", [](nattn::FmhaProblem& p, const std::string& d) { p.dtype = nattn::parse_dtype(d); })
      .def("set_device", [](nattn::FmhaProblem& p, bool cuda, int index) {
        p.device = nattn::Device{cuda ? nattn::DeviceKind::cuda : nattn::DeviceKind::cpu, index};
      })
      .def("describe", &nattn::FmhaProblem::describe)
      .def("__repr__", &nattn::FmhaProblem::describe);

  // ---- registry ----------------------------------------------------------------------------------
  m.def("list_backends", []() {
    nb::list out;
    for (const auto& b : nattn::list_backends()) {
      nb::dict d;
      d["name"] = b.name;
      d["supports_na"] = b.supports_na;
      d["supports_fmha"] = b.supports_fmha;
      d["built"] = b.built;
      d["description"] = b.description;
      out.append(d);
    }
    return out;
  });
  m.def("is_known_backend", &nattn::is_known_backend, "name"_a);

  // choose_backend(problem, pass) -> (chosen or "", [(backend, reason)], explain text)
  auto selection = [](const nattn::Selection& s) {
    std::vector<std::pair<std::string, std::string>> considered;
    for (const auto& v : s.considered) considered.emplace_back(v.backend, v.reason);
    return std::make_tuple(s.backend, considered, s.explain());
  };
  m.def("choose_backend", [selection](const nattn::NaProblem& p, const std::string& pass) {
    return selection(nattn::choose_backend(p, to_pass(pass)));
  }, "problem"_a, "pass_"_a = "forward");
  m.def("choose_backend", [selection](const nattn::FmhaProblem& p, const std::string& pass) {
    return selection(nattn::choose_backend(p, to_pass(pass)));
  }, "problem"_a, "pass_"_a = "forward");
  m.def("resolve_backend", [](const std::string& b, const nattn::NaProblem& p, const std::string& pass) {
    return nattn::resolve_backend(b, p, to_pass(pass));
  }, "backend"_a, "problem"_a, "pass_"_a = "forward");
  m.def("resolve_backend", [](const std::string& b, const nattn::FmhaProblem& p, const std::string& pass) {
    return nattn::resolve_backend(b, p, to_pass(pass));
  }, "backend"_a, "problem"_a, "pass_"_a = "forward");
  m.def("reject_reason", [](const std::string& b, const nattn::NaProblem& p, const std::string& pass) {
    return nattn::reject_reason(b, p, to_pass(pass));
  }, "backend"_a, "problem"_a, "pass_"_a = "forward");
  m.def("reject_reason", [](const std::string& b, const nattn::FmhaProblem& p, const std::string& pass) {
    return nattn::reject_reason(b, p, to_pass(pass));
  }, "backend"_a, "problem"_a, "pass_"_a = "forward");

  // Config finders: list of (q_tile tuple, kv_tile tuple, schedule name); [] when incompatible.
  m.def("get_configs", [](const std::string& b, const nattn::NaProblem& p) {
    nb::list out;
    for (const auto& c : nattn::get_configs(b, p)) out.append(config_tuple(c));
    return out;
  }, "backend"_a, "problem"_a);
  m.def("get_configs", [](const std::string& b, const nattn::FmhaProblem& p) {
    nb::list out;
    for (const auto& c : nattn::get_configs(b, p)) out.append(config_tuple(c));
    return out;
  }, "backend"_a, "problem"_a);
  m.def("get_bwd_configs", [](const std::string& b, const nattn::NaProblem& p) {
    nb::list out;
    for (const auto& c : nattn::get_bwd_configs(b, p)) out.append(config_tuple(c));
    return out;
  }, "backend"_a, "problem"_a);
  m.def("get_bwd_configs", [](const std::string& b, const nattn::FmhaProblem& p) {
    nb::list out;
    for (const auto& c : nattn::get_bwd_configs(b, p)) out.append(config_tuple(c));
    return out;
  }, "backend"_a, "problem"_a);

  // ---- ops ---------------------------------------------------------------------------------------
  m.def(
      "na_forward",
      [](Array q, Array k, Array v, OutArray out, std::optional<OutArray> lse, std::optional<Array> add_k,
         std::optional<Array> add_v, const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal, std::optional<double> scale,
         const std::string& backend, const std::vector<int64_t>& q_tile, const std::vector<int64_t>& kv_tile,
         const std::string& schedule, int num_threads, uintptr_t stream, bool deterministic, bool requires_grad,
         const std::vector<int64_t>& global_extent, const std::vector<int64_t>& q_origin,
         const std::vector<int64_t>& kv_origin) {
        nattn::NaForwardArgs a;
        a.query = view_of(q, "query");
        a.key = view_of(k, "key");
        a.value = view_of(v, "value");
        a.out = view_of(out, "out");
        a.lse = opt_out(lse, "lse");
        a.additional_keys = opt_view(add_k, "additional_keys");
        a.additional_values = opt_view(add_v, "additional_values");
        a.params = make_params(kernel_size, stride, dilation, is_causal);
        a.scale = scale;
        a.sub_domain = make_sub_domain(global_extent, q_origin, kv_origin, kernel_size.size());
        const nattn::RunOptions o =
            make_options(backend, q_tile, kv_tile, schedule, num_threads, stream, deterministic, requires_grad);
        nb::gil_scoped_release release;
        nattn::na_forward(a, o);
      },
      "query"_a, "key"_a, "value"_a, "out"_a, "lse"_a.none(), "additional_keys"_a.none(),
      "additional_values"_a.none(), "kernel_size"_a, "stride"_a, "dilation"_a, "is_causal"_a, "scale"_a.none(),
      "backend"_a = "", "q_tile"_a = std::vector<int64_t>{}, "kv_tile"_a = std::vector<int64_t>{},
      "schedule"_a = "", "num_threads"_a = 0, "stream"_a = 0, "deterministic"_a = true, "requires_grad"_a = false,
      "global_extent"_a = std::vector<int64_t>{}, "q_origin"_a = std::vector<int64_t>{},
      "kv_origin"_a = std::vector<int64_t>{});

  m.def(
      "na_backward",
      [](Array q, Array k, Array v, Array out, Array lse, Array dout, OutArray dq, OutArray dk, OutArray dv,
         std::optional<Array> add_k, std::optional<Array> add_v, std::optional<OutArray> dadd_k,
         std::optional<OutArray> dadd_v, const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal, std::optional<double> scale,
         const std::string& backend, const std::vector<int64_t>& q_tile, const std::vector<int64_t>& kv_tile,
         int num_threads, uintptr_t stream, bool deterministic, const std::vector<int64_t>& global_extent,
         const std::vector<int64_t>& q_origin, const std::vector<int64_t>& kv_origin) {
        nattn::NaBackwardArgs a;
        a.query = view_of(q, "query");
        a.key = view_of(k, "key");
        a.value = view_of(v, "value");
        a.out = view_of(out, "out");
        a.lse = view_of(lse, "lse");
        a.dout = view_of(dout, "dout");
        a.dquery = view_of(dq, "dquery");
        a.dkey = view_of(dk, "dkey");
        a.dvalue = view_of(dv, "dvalue");
        a.additional_keys = opt_view(add_k, "additional_keys");
        a.additional_values = opt_view(add_v, "additional_values");
        a.dadditional_keys = opt_out(dadd_k, "dadditional_keys");
        a.dadditional_values = opt_out(dadd_v, "dadditional_values");
        a.params = make_params(kernel_size, stride, dilation, is_causal);
        a.scale = scale;
        a.sub_domain = make_sub_domain(global_extent, q_origin, kv_origin, kernel_size.size());
        nattn::RunOptions o = make_options(backend, q_tile, kv_tile, "", num_threads, stream, deterministic, true);
        nb::gil_scoped_release release;
        nattn::na_backward(a, o);
      },
      "query"_a, "key"_a, "value"_a, "out"_a, "lse"_a, "dout"_a, "dquery"_a, "dkey"_a, "dvalue"_a,
      "additional_keys"_a.none(), "additional_values"_a.none(), "dadditional_keys"_a.none(),
      "dadditional_values"_a.none(), "kernel_size"_a, "stride"_a, "dilation"_a, "is_causal"_a, "scale"_a.none(),
      "backend"_a = "", "q_tile"_a = std::vector<int64_t>{}, "kv_tile"_a = std::vector<int64_t>{},
      "num_threads"_a = 0, "stream"_a = 0, "deterministic"_a = true, "global_extent"_a = std::vector<int64_t>{},
      "q_origin"_a = std::vector<int64_t>{}, "kv_origin"_a = std::vector<int64_t>{});

  // The key range [lo, hi) the queries [q_lo, q_hi) of an axis attend (sem::halo_range).
  m.def("halo_range", [](int64_t q_lo, int64_t q_hi, int64_t extent, int64_t kernel_size, int64_t stride,
                         int64_t dilation, bool is_causal) {
    if (q_lo < 0 || q_hi < q_lo || q_hi > extent || kernel_size < 1 || stride < 1 || stride > kernel_size ||
        dilation < 1 || kernel_size * dilation > extent)
      throw nattn::ValueError("halo_range: need 0 <= q_lo <= q_hi <= extent, 1 <= stride <= kernel_size, "
                              "dilation >= 1 and kernel_size * dilation <= extent (got q_lo=" + std::to_string(q_lo) +
                              ", q_hi=" + std::to_string(q_hi) + ", extent=" + std::to_string(extent) +
                              ", kernel_size=" + std::to_string(kernel_size) + ", stride=" + std::to_string(stride) +
                              ", dilation=" + std::to_string(dilation) + ")");
    const nattn::sem::Range r =
        nattn::sem::halo_range(q_lo, q_hi, extent, kernel_size, stride, dilation, is_causal);
    return std::make_pair(r.start, r.end);
  }, "q_lo"_a, "q_hi"_a, "extent"_a, "kernel_size"_a, "stride"_a, "dilation"_a, "is_causal"_a);

  m.def(
      "fmha_forward",
      [](Array q, Array k, Array v, OutArray out, std::optional<OutArray> lse, bool is_causal,
         std::optional<double> scale, std::optional<Array> cu_q, std::optional<Array> cu_kv, int64_t max_q,
         int64_t max_kv, const std::string& backend, const std::vector<int64_t>& q_tile,
         const std::vector<int64_t>& kv_tile, const std::string& schedule, int num_threads, uintptr_t stream,
         bool deterministic, bool requires_grad) {
        nattn::FmhaForwardArgs a;
        a.query = view_of(q, "query");
        a.key = view_of(k, "key");
        a.value = view_of(v, "value");
        a.out = view_of(out, "out");
        a.lse = opt_out(lse, "lse");
        a.is_causal = is_causal;
        a.scale = scale;
        a.cu_seqlens_q = opt_view(cu_q, "cumulative_seqlen_Q");
        a.cu_seqlens_kv = opt_view(cu_kv, "cumulative_seqlen_KV");
        a.max_seqlen_q = max_q;
        a.max_seqlen_kv = max_kv;
        const nattn::RunOptions o =
            make_options(backend, q_tile, kv_tile, schedule, num_threads, stream, deterministic, requires_grad);
        nb::gil_scoped_release release;
        nattn::fmha_forward(a, o);
      },
      "query"_a, "key"_a, "value"_a, "out"_a, "lse"_a.none(), "is_causal"_a, "scale"_a.none(),
      "cu_seqlens_q"_a.none(), "cu_seqlens_kv"_a.none(), "max_seqlen_q"_a = 0, "max_seqlen_kv"_a = 0,
      "backend"_a = "", "q_tile"_a = std::vector<int64_t>{}, "kv_tile"_a = std::vector<int64_t>{},
      "schedule"_a = "", "num_threads"_a = 0, "stream"_a = 0, "deterministic"_a = true, "requires_grad"_a = false);

  m.def(
      "fmha_backward",
      [](Array q, Array k, Array v, Array out, Array lse, Array dout, OutArray dq, OutArray dk, OutArray dv,
         bool is_causal, std::optional<double> scale, std::optional<Array> cu_q, std::optional<Array> cu_kv,
         int64_t max_q, int64_t max_kv, const std::string& backend, const std::vector<int64_t>& q_tile,
         const std::vector<int64_t>& kv_tile, int num_threads, uintptr_t stream, bool deterministic) {
        nattn::FmhaBackwardArgs a;
        a.query = view_of(q, "query");
        a.key = view_of(k, "key");
        a.value = view_of(v, "value");
        a.out = view_of(out, "out");
        a.lse = view_of(lse, "lse");
        a.dout = view_of(dout, "dout");
        a.dquery = view_of(dq, "dquery");
        a.dkey = view_of(dk, "dkey");
        a.dvalue = view_of(dv, "dvalue");
        a.is_causal = is_causal;
        a.scale = scale;
        a.cu_seqlens_q = opt_view(cu_q, "cumulative_seqlen_Q");
        a.cu_seqlens_kv = opt_view(cu_kv, "cumulative_seqlen_KV");
        a.max_seqlen_q = max_q;
        a.max_seqlen_kv = max_kv;
        nattn::RunOptions o = make_options(backend, q_tile, kv_tile, "", num_threads, stream, deterministic, true);
        nb::gil_scoped_release release;
        nattn::fmha_backward(a, o);
      },
      "query"_a, "key"_a, "value"_a, "out"_a, "lse"_a, "dout"_a, "dquery"_a, "dkey"_a, "dvalue"_a, "is_causal"_a,
      "scale"_a.none(), "cu_seqlens_q"_a.none(), "cu_seqlens_kv"_a.none(), "max_seqlen_q"_a = 0,
      "max_seqlen_kv"_a = 0, "backend"_a = "", "q_tile"_a = std::vector<int64_t>{},
      "kv_tile"_a = std::vector<int64_t>{}, "num_threads"_a = 0, "stream"_a = 0, "deterministic"_a = true);

  m.def(
      "merge_attentions",
      [](std::vector<Array> outputs, std::vector<Array> lses, OutArray out, OutArray lse, int num_threads) {
        std::vector<nattn::TensorView> o, l;
        for (size_t i = 0; i < outputs.size(); ++i) o.push_back(view_of(outputs[i], "outputs[i]"));
        for (size_t i = 0; i < lses.size(); ++i) l.push_back(view_of(lses[i], "lse_tensors[i]"));
        nattn::RunOptions opt;
        opt.num_threads = num_threads;
        const nattn::TensorView ov = view_of(out, "out"), lv = view_of(lse, "lse");
        nb::gil_scoped_release release;
        nattn::merge_attentions(o, l, ov, lv, opt);
      },
      "outputs"_a, "lse_tensors"_a, "out"_a, "lse"_a, "num_threads"_a = 0);

  m.def("token_permute_shape", &nattn::token_permute_shape, "input_shape"_a, "tile_shape"_a, "dilation"_a);
  m.def(
      "token_permute",
      [](Array input, OutArray output, const std::vector<int64_t>& tile, const std::vector<int64_t>& dilation,
         bool flip) {
        const nattn::TensorView in = view_of(input, "input"), out = view_of(output, "output");
        nb::gil_scoped_release release;
        nattn::token_permute(in, out, tile, dilation, flip);
      },
      "input"_a, "output"_a, "tile_shape"_a, "dilation"_a, "flip_tiled_dims"_a = false);
  m.def(
      "token_unpermute",
      [](Array input, OutArray output, const std::vector<int64_t>& tile, const std::vector<int64_t>& dilation,
         bool flip) {
        const nattn::TensorView in = view_of(input, "input"), out = view_of(output, "output");
        nb::gil_scoped_release release;
        nattn::token_unpermute(in, out, tile, dilation, flip);
      },
      "input"_a, "output"_a, "tile_shape"_a, "dilation"_a, "flip_tiled_dims"_a = false);
}
