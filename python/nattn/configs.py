"""Config finders (NATTEN 0.21's get_configs_for_* / get_bwd_configs_for_*) over the core's one
set of tables, plus nattn's generic ``get_configs(backend, q, k, v)``. Each returns [] when the
backend cannot run the problem."""

from . import _args
from ._lib import require_lib
from .types import CORE_TO_SCHEDULE

__all__ = [
    "get_configs", "get_bwd_configs", "list_backends", "choose_backend",
    "get_configs_for_cutlass_fmha", "get_bwd_configs_for_cutlass_fmha",
    "get_configs_for_cutlass_fna", "get_bwd_configs_for_cutlass_fna",
    "get_configs_for_cutlass_hopper_fmha", "get_bwd_configs_for_cutlass_hopper_fmha",
    "get_configs_for_cutlass_hopper_fna", "get_bwd_configs_for_cutlass_hopper_fna",
    "get_configs_for_cutlass_blackwell_fmha", "get_bwd_configs_for_cutlass_blackwell_fmha",
    "get_configs_for_cutlass_blackwell_fna", "get_bwd_configs_for_cutlass_blackwell_fna",
    "get_configs_for_flex_fmha", "get_configs_for_flex_fna",
]


def _device_fields(q):
    """(is_cuda, index, compute capability)."""
    if _args.is_torch(q) and q.device.type == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability(q.device)
        return True, q.device.index or 0, major * 10 + minor
    return False, 0, 0


def _requires_grad(*ts):
    return any(_args.is_torch(t) and t.requires_grad for t in ts)


def _dtype(q):
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}.get(_args.dtype_name(q), _args.dtype_name(q))


def na_problem(query, key, value, kernel_size=None, stride=1, dilation=1, is_causal=False, additional_kv=0):
    lib = require_lib()
    _args.check_same_framework([("query", query), ("key", key), ("value", value)])
    _args.check_same_device_dtype(query, [("key", key), ("value", value)])
    _args.check_float_dtype(query)
    na_dim = _args.check_na_tensors(query, key, value)
    p = lib.NaProblem()
    p.batch = int(query.shape[0])
    p.spatial = [int(x) for x in query.shape[1:-2]]
    p.heads, p.heads_kv = int(query.shape[-2]), int(key.shape[-2])
    p.head_dim, p.head_dim_v = int(query.shape[-1]), int(value.shape[-1])
    p.additional_kv = int(additional_kv)
    p.set_dtype(_dtype(query))
    cuda, index, cc = _device_fields(query)
    p.set_device(cuda, index)
    p.compute_capability = cc
    ks, st, dil, causal = _args.normalize_na_params(na_dim, kernel_size if kernel_size is not None else 2, stride,
                                                    dilation, is_causal)
    p.set_params(list(ks), list(st), list(dil), list(causal))
    p.requires_grad = _requires_grad(query, key, value)
    return p


def fmha_problem(query, key, value, is_causal=False, is_varlen=False):
    lib = require_lib()
    _args.check_same_framework([("query", query), ("key", key), ("value", value)])
    _args.check_same_device_dtype(query, [("key", key), ("value", value)])
    _args.check_float_dtype(query)
    _args.check_fmha_tensors(query, key, value)
    p = lib.FmhaProblem()
    p.batch, p.seqlen_q, p.seqlen_kv = int(query.shape[0]), int(query.shape[1]), int(key.shape[1])
    p.heads, p.heads_kv = int(query.shape[2]), int(key.shape[2])
    p.head_dim, p.head_dim_v = int(query.shape[3]), int(value.shape[3])
    p.set_dtype(_dtype(query))
    cuda, index, cc = _device_fields(query)
    p.set_device(cuda, index)
    p.compute_capability = cc
    p.is_causal, p.is_varlen = bool(is_causal), bool(is_varlen)
    p.requires_grad = _requires_grad(query, key, value)
    return p


def _problem(backend, query, key, value):
    lib = require_lib()
    if not lib.is_known_backend(backend):
        names = ", ".join(b["name"] for b in lib.list_backends())
        raise NotImplementedError(f"backend {backend!r} is not known; known backends: {names}")
    info = next(b for b in lib.list_backends() if b["name"] == backend)
    if info["supports_na"] and not info["supports_fmha"]:
        return na_problem(query, key, value)
    if info["supports_fmha"] and not info["supports_na"]:
        return fmha_problem(query, key, value)
    # cpu / reference run both: 4-D tensors with different Q and KV lengths are an FMHA problem.
    if query.ndim == 4 and key.shape[1] != query.shape[1]:
        return fmha_problem(query, key, value)
    return na_problem(query, key, value)


def get_configs(backend, query, key, value):
    """nattn's generic finder: [(q_tile, kv_tile, schedule name)] of `backend`, default first."""
    return [tuple(c) for c in require_lib().get_configs(backend, _problem(backend, query, key, value))]


def get_bwd_configs(backend, query, key, value):
    return [tuple(c) for c in require_lib().get_bwd_configs(backend, _problem(backend, query, key, value))]


def list_backends():
    """Every known backend (automatic-selection order) with whether this build contains it."""
    return [dict(b) for b in require_lib().list_backends()]


def choose_backend(query, key, value, kernel_size=None, stride=1, dilation=1, is_causal=False, backward=False):
    """(chosen backend or '', explanation: one line per backend) for an NA problem (or an FMHA one
    when kernel_size is None and the tensors are 4-D with different sequence lengths)."""
    lib = require_lib()
    if kernel_size is None and query.ndim == 4 and key.shape[1] != query.shape[1]:
        p = fmha_problem(query, key, value, is_causal=bool(is_causal))
    else:
        p = na_problem(query, key, value, kernel_size, stride, dilation, is_causal)
    chosen, _, text = lib.choose_backend(p, "backward" if backward else "forward")
    return chosen, text


# ---- NATTEN-named finders --------------------------------------------------------------------------


def _na_pairs(backend, q, k, v, bwd=False):
    lib = require_lib()
    p = na_problem(q, k, v)
    cs = lib.get_bwd_configs(backend, p) if bwd else lib.get_configs(backend, p)
    return [(tuple(c[0]), tuple(c[1])) for c in cs]


def _fmha_pairs(backend, q, k, v, bwd=False):
    lib = require_lib()
    p = fmha_problem(q, k, v)
    cs = lib.get_bwd_configs(backend, p) if bwd else lib.get_configs(backend, p)
    return [(int(c[0][0]), int(c[1][0])) for c in cs if c[0] and c[1]]


def get_configs_for_cutlass_fmha(query, key, value):
    return _fmha_pairs("cutlass-fmha", query, key, value)


def get_bwd_configs_for_cutlass_fmha(query, key, value):
    return _fmha_pairs("cutlass-fmha", query, key, value, bwd=True)


def get_configs_for_cutlass_fna(query, key, value):
    return _na_pairs("cutlass-fna", query, key, value)


def get_bwd_configs_for_cutlass_fna(query, key, value):
    return _na_pairs("cutlass-fna", query, key, value, bwd=True)


def get_configs_for_cutlass_hopper_fmha(query, key, value):
    cs = require_lib().get_configs("hopper-fmha", fmha_problem(query, key, value))
    return [((int(c[0][0]), int(c[1][0])), CORE_TO_SCHEDULE[c[2]]) for c in cs]


def get_bwd_configs_for_cutlass_hopper_fmha(query, key, value):
    return _fmha_pairs("hopper-fmha", query, key, value, bwd=True)


def get_configs_for_cutlass_hopper_fna(query, key, value):
    cs = require_lib().get_configs("hopper-fna", na_problem(query, key, value))
    return [((tuple(c[0]), tuple(c[1])), CORE_TO_SCHEDULE[c[2]]) for c in cs]


def get_bwd_configs_for_cutlass_hopper_fna(query, key, value):
    return _na_pairs("hopper-fna", query, key, value, bwd=True)


def get_configs_for_cutlass_blackwell_fmha(query, key, value):
    return _fmha_pairs("blackwell-fmha", query, key, value)


def get_bwd_configs_for_cutlass_blackwell_fmha(query, key, value):
    return _fmha_pairs("blackwell-fmha", query, key, value, bwd=True)


def get_configs_for_cutlass_blackwell_fna(query, key, value):
    return _na_pairs("blackwell-fna", query, key, value)


def get_bwd_configs_for_cutlass_blackwell_fna(query, key, value):
    return _na_pairs("blackwell-fna", query, key, value, bwd=True)


def get_configs_for_flex_fmha(query, key, value, torch_compile=False):
    _args.check_bool("torch_compile", torch_compile)
    return _fmha_pairs("flex-fmha", query, key, value)


def get_configs_for_flex_fna(query, key, value, torch_compile=False):
    _args.check_bool("torch_compile", torch_compile)
    return _na_pairs("flex-fna", query, key, value)
