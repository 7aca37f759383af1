"""The public ops: na1d / na2d / na3d, attention, merge_attentions (NATTEN 0.21 signatures).

Each accepts torch tensors (autograd, torch.compile; any device a built backend supports) or
NumPy arrays (CPU backends, no autograd), and returns the same kind."""

import math
import sys

import numpy as np

from . import _args, _core, context
from .types import parse_kernel_schedule

__all__ = ["na1d", "na2d", "na3d", "attention", "merge_attentions", "neighborhood_attention_generic"]


def _prod(xs):
    return int(math.prod(xs))


def _torch_ops():
    from . import _torch_ops

    return _torch_ops


# ---- neighborhood attention ----------------------------------------------------------------------


def _compiling():
    torch = sys.modules.get("torch")  # not imported: nothing can be compiling
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def _fmha_runs(backend, query, key, value, batch, heads, is_causal):
    """Whether FMHA backend `backend` runs the self-attention of these NA inputs (its finder lists a
    forward config for the flattened problem)."""
    from ._lib import require_lib
    from .configs import fmha_problem

    if _compiling():  # no library call while Dynamo traces (a graph break): keep the fast path
        return True
    tokens = _prod(query.shape[1:-2])
    flat = [t.reshape(batch, tokens, t.shape[-2], t.shape[-1]) for t in (query, key, value)]
    return bool(require_lib().get_configs(backend, fmha_problem(*flat, is_causal=is_causal)))


def neighborhood_attention_generic(
    query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
    additional_keys=None, additional_values=None, attention_kwargs=None, backend=None,
    q_tile_shape=None, kv_tile_shape=None, backward_q_tile_shape=None, backward_kv_tile_shape=None,
    backward_kv_splits=None, backward_use_pt_reduction=False, run_persistent_kernel=True,
    kernel_schedule=None, torch_compile=False, return_lse=False, _na_dim=None,
):
    query, key, value, additional_keys, additional_values = (
        _args.as_supported(n, x) for n, x in (("query", query), ("key", key), ("value", value),
                                              ("additional_keys", additional_keys),
                                              ("additional_values", additional_values)))
    named = [("query", query), ("key", key), ("value", value),
             ("additional_keys", additional_keys), ("additional_values", additional_values)]
    # 1. tensors
    framework = _args.check_same_framework(named)
    _args.check_layout_flags(named)
    _args.check_same_device_dtype(query, named[1:])
    _args.check_float_dtype(query)
    na_dim = _args.check_na_tensors(query, key, value, _na_dim)
    # 2. additional KV
    n_extra = _args.check_additional_kv(query, key, value, additional_keys, additional_values)
    # 3. kernel schedule, 4. arguments
    schedule = parse_kernel_schedule(kernel_schedule)
    ks, st, dil, causal = _args.normalize_na_params(na_dim, kernel_size, stride, dilation, is_causal)
    backend = _args.check_backend("backend", backend)
    q_tile, kv_tile = _args.normalize_tile_pair("q_tile_shape", "kv_tile_shape", q_tile_shape, kv_tile_shape,
                                                na_dim, backend)
    bq_tile, bkv_tile = _args.normalize_tile_pair("backward_q_tile_shape", "backward_kv_tile_shape",
                                                  backward_q_tile_shape, backward_kv_tile_shape, na_dim, backend)
    _args.check_kv_splits(backward_kv_splits, na_dim)
    for name, flag in (("backward_use_pt_reduction", backward_use_pt_reduction),
                       ("run_persistent_kernel", run_persistent_kernel), ("torch_compile", torch_compile),
                       ("return_lse", return_lse)):
        _args.check_bool(name, flag)
    if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
        raise ValueError(f"attention_kwargs={attention_kwargs!r} is not valid (allowed: None or a dict)")
    # 5. arguments versus the input
    batch = query.shape[0]
    spatial = tuple(int(x) for x in query.shape[1:-2])
    heads, head_dim = query.shape[-2], query.shape[-1]
    head_dim_v = value.shape[-1]
    _args.check_params_vs_input(spatial, ks, st, dil)
    scale = _args.check_scale(scale, head_dim)
    params = (ks, st, dil, causal)

    # 6. self-attention fast path: the window is the whole token layout (NATTEN §1.4).
    full = all(k == x for k, x in zip(ks, spatial))
    akw = dict(attention_kwargs or {})  # a copy: the caller's dict is never changed
    if "backend" not in akw and backend:
        akw["backend"] = _args.fmha_backend_for(backend)
    if full and akw.get("backend") and akw["backend"] != backend and not _fmha_runs(
            akw["backend"], query, key, value, batch, heads, causal[0]):
        full = False  # e.g. hopper-fmha lacks this head dim: the named NA backend runs the full window
    if (na_dim == 1 and n_extra == 0 and full) or (full and not any(causal)):
        akw.setdefault("torch_compile", torch_compile)
        tokens = _prod(spatial)
        qf = query.reshape(batch, tokens, heads, head_dim)
        kf = key.reshape(batch, tokens, key.shape[-2], head_dim)
        vf = value.reshape(batch, tokens, value.shape[-2], head_dim_v)
        if n_extra:
            cat = _cat_fn(framework)
            kf = cat([kf, additional_keys], 1)
            vf = cat([vf, additional_values], 1)
        res = attention(qf, kf, vf, is_causal=causal[0], scale=scale, return_lse=return_lse, **akw)
        out = (res[0] if return_lse else res).reshape(batch, *spatial, heads, head_dim_v)
        return (out, res[1].reshape(batch, *spatial, heads)) if return_lse else out

    if backend == "flex-fna":
        if framework != "torch":
            raise NotImplementedError("flex-fna runs on torch tensors only (it is built on torch flex_attention)")
        from . import _flex

        if q_tile:
            _check_flex_tiles(query, key, value, q_tile, kv_tile)
        out, lse = _flex.na(query, key, value, additional_keys, additional_values, params, scale, torch_compile,
                            need_lse=return_lse, q_tile=q_tile, kv_tile=kv_tile)
    elif framework == "torch":
        out, lse = _torch_ops().na(query, key, value, additional_keys, additional_values, params, scale, backend,
                                   q_tile, kv_tile, schedule, bq_tile, bkv_tile)
    else:
        out, lse = _numpy_na(query, key, value, additional_keys, additional_values, params, scale, backend,
                             q_tile, kv_tile, schedule)
    return (out, lse) if return_lse else out


def _check_flex_tiles(query, key, value, q_tile, kv_tile):
    from .configs import _na_pairs

    allowed = _na_pairs("flex-fna", query, key, value)
    if (tuple(q_tile), tuple(kv_tile)) not in allowed:
        listed = ", ".join(f"({a}, {b})" for a, b in allowed) or "none for this problem"
        raise ValueError(f"q_tile_shape={tuple(q_tile)}, kv_tile_shape={tuple(kv_tile)} is not a flex-fna "
                         f"configuration (allowed: {listed})")


def _cat_fn(framework):
    if framework == "torch":
        import torch

        return torch.cat
    return lambda xs, axis: np.concatenate(xs, axis=axis)


def _numpy_na(q, k, v, ak, av, params, scale, backend, q_tile, kv_tile, schedule):
    q, k, v, ak, av = (_core.head_contiguous(x) for x in (q, k, v, ak, av))
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    lse = np.empty(q.shape[:-1], dtype=_args.lse_dtype_name(q))
    _core.na_forward(q, k, v, out, lse, ak, av, params, scale, backend, q_tile, kv_tile, schedule,
                     deterministic=context.deterministic_now(), requires_grad=False)
    return out, lse


_NA_DOC = """{n}-D neighborhood attention (NATTEN 0.21 signature).

query [B, {s}, H, D], key [B, {s}, Hkv, D], value [B, {s}, Hkv, Dv] (heads-last); returns
out [B, {s}, H, Dv] and, with return_lse=True, (out, lse) with lse [B, {s}, H] float32 (natural log).
kernel_size / stride / dilation: an int or a tuple of {n} ints; is_causal: a bool or {n} bools.
scale defaults to D ** -0.5 (0.0 is a real scale). additional_keys/values [B, N, Hkv, D/Dv] are
attended by every query under the same softmax. The gradient of the returned lse is propagated
exactly (NATTEN drops it). backend: None (automatic) or a name from nattn.list_backends().
"""


def na1d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, attention_kwargs=None, backend=None,
         q_tile_shape=None, kv_tile_shape=None, backward_q_tile_shape=None, backward_kv_tile_shape=None,
         backward_kv_splits=None, backward_use_pt_reduction=False, run_persistent_kernel=True,
         kernel_schedule=None, torch_compile=False, return_lse=False):
    return neighborhood_attention_generic(
        query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys, additional_values,
        attention_kwargs, backend, q_tile_shape, kv_tile_shape, backward_q_tile_shape, backward_kv_tile_shape,
        backward_kv_splits, backward_use_pt_reduction, run_persistent_kernel, kernel_schedule, torch_compile,
        return_lse, _na_dim=1)


def na2d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, attention_kwargs=None, backend=None,
         q_tile_shape=None, kv_tile_shape=None, backward_q_tile_shape=None, backward_kv_tile_shape=None,
         backward_kv_splits=None, backward_use_pt_reduction=False, run_persistent_kernel=True,
         kernel_schedule=None, torch_compile=False, return_lse=False):
    return neighborhood_attention_generic(
        query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys, additional_values,
        attention_kwargs, backend, q_tile_shape, kv_tile_shape, backward_q_tile_shape, backward_kv_tile_shape,
        backward_kv_splits, backward_use_pt_reduction, run_persistent_kernel, kernel_schedule, torch_compile,
        return_lse, _na_dim=2)


def na3d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, attention_kwargs=None, backend=None,
         q_tile_shape=None, kv_tile_shape=None, backward_q_tile_shape=None, backward_kv_tile_shape=None,
         backward_kv_splits=None, backward_use_pt_reduction=False, run_persistent_kernel=True,
         kernel_schedule=None, torch_compile=False, return_lse=False):
    return neighborhood_attention_generic(
        query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys, additional_values,
        attention_kwargs, backend, q_tile_shape, kv_tile_shape, backward_q_tile_shape, backward_kv_tile_shape,
        backward_kv_splits, backward_use_pt_reduction, run_persistent_kernel, kernel_schedule, torch_compile,
        return_lse, _na_dim=3)


na1d.__doc__ = _NA_DOC.format(n=1, s="X")
na2d.__doc__ = _NA_DOC.format(n=2, s="X, Y")
na3d.__doc__ = _NA_DOC.format(n=3, s="X, Y, Z")


# ---- standard attention ---------------------------------------------------------------------------


def _is_int(x):
    return _args._is_int(x)


def _check_seq_tensor(name, t, query, min_len):
    if _args.framework_of(name, t) != _args.framework_of("query", query):
        raise ValueError(f"{name} must come from the same framework as query")
    if _args.dtype_name(t) != "int32":
        raise ValueError(f"{name} must be an int32 tensor (got {_args.dtype_name(t)})")
    if t.ndim != 1 or t.shape[0] < min_len:
        raise ValueError(f"{name} must be 1-D with at least {min_len} entries (got shape {tuple(t.shape)})")
    if _args.device_name(t) != _args.device_name(query):
        raise ValueError(f"{name} is on {_args.device_name(t)} but query is on {_args.device_name(query)}")


def _varlen_args(query, key, seqlens_Q, seqlens_KV, cu_Q, cu_KV, max_Q, max_KV):
    """-> (cu_q, cu_kv, max_q, max_kv) or None when the call is not variable-length."""
    framework = _args.framework_of("query", query)
    if seqlens_Q is not None or seqlens_KV is not None:
        if seqlens_Q is None or seqlens_KV is None:
            raise ValueError("seqlens_Q and seqlens_KV must be given together")
        if any(x is not None for x in (cu_Q, cu_KV, max_Q, max_KV)):
            raise ValueError(
                "give either seqlens_Q/seqlens_KV or cumulative_seqlen_Q/KV with max_seqlen_Q/KV, not both")
        _check_seq_tensor("seqlens_Q", seqlens_Q, query, 1)
        _check_seq_tensor("seqlens_KV", seqlens_KV, query, 1)
        if seqlens_Q.shape[0] != seqlens_KV.shape[0]:
            raise ValueError(f"seqlens_Q and seqlens_KV must have the same length (got {seqlens_Q.shape[0]} "
                             f"and {seqlens_KV.shape[0]})")
        if framework == "torch":
            import torch

            if torch.compiler.is_compiling():
                raise RuntimeError(
                    "attention: seqlens_Q/seqlens_KV need a host synchronisation and cannot be used inside "
                    "torch.compile; precompute cumulative_seqlen_Q/KV and max_seqlen_Q/KV "
                    "(nattn.generate_varlen_parameters) instead")
            z = seqlens_Q.new_zeros(1)
            cu_Q = torch.cat([z, torch.cumsum(seqlens_Q, 0, dtype=torch.int32)])
            cu_KV = torch.cat([z, torch.cumsum(seqlens_KV, 0, dtype=torch.int32)])
            max_Q, max_KV = int(seqlens_Q.max().item()), int(seqlens_KV.max().item())
        else:
            cu_Q = np.concatenate([[0], np.cumsum(seqlens_Q)]).astype(np.int32)
            cu_KV = np.concatenate([[0], np.cumsum(seqlens_KV)]).astype(np.int32)
            max_Q, max_KV = int(seqlens_Q.max()), int(seqlens_KV.max())
        if min(int(x) for x in (seqlens_Q.min(), seqlens_KV.min())) < 0:
            raise ValueError("seqlens_Q/seqlens_KV must be >= 0")
    elif cu_Q is not None or cu_KV is not None:
        if cu_Q is None or cu_KV is None or max_Q is None or max_KV is None:
            raise ValueError("variable-length attention needs all four of cumulative_seqlen_Q, cumulative_seqlen_KV, "
                             "max_seqlen_Q and max_seqlen_KV")
        _check_seq_tensor("cumulative_seqlen_Q", cu_Q, query, 2)
        _check_seq_tensor("cumulative_seqlen_KV", cu_KV, query, 2)
        if cu_Q.shape[0] != cu_KV.shape[0]:
            raise ValueError(f"cumulative_seqlen_Q and cumulative_seqlen_KV must have the same length (got "
                             f"{cu_Q.shape[0]} and {cu_KV.shape[0]})")
    else:
        if max_Q not in (None, 0) or max_KV not in (None, 0):
            raise ValueError(f"max_seqlen_Q/max_seqlen_KV ({max_Q!r}, {max_KV!r}) were given without "
                             "cumulative_seqlen_Q/KV")
        return None
    for name, m, total in (("max_seqlen_Q", max_Q, query.shape[1]), ("max_seqlen_KV", max_KV, key.shape[1])):
        if not _is_int(m) or m < 0 or m > total:
            raise ValueError(f"{name}={m!r} is not valid (allowed: an int in [0, {total}], the packed length)")
    if (max_Q == 0) != (max_KV == 0):
        raise ValueError(f"max_seqlen_Q and max_seqlen_KV must both be zero or both non-zero (got {max_Q}, {max_KV})")
    if query.shape[0] != 1:
        raise ValueError(f"variable-length attention needs batch == 1 (packed sequences; got batch {query.shape[0]})")
    return cu_Q, cu_KV, int(max_Q), int(max_KV)


def attention(query, key, value, is_causal=False, scale=None, seqlens_Q=None, seqlens_KV=None,
              cumulative_seqlen_Q=None, cumulative_seqlen_KV=None, max_seqlen_Q=None, max_seqlen_KV=None,
              backend=None, q_tile_size=None, kv_tile_size=None, backward_q_tile_size=None,
              backward_kv_tile_size=None, backward_kv_splits=None, backward_use_pt_reduction=False,
              run_persistent_kernel=True, kernel_schedule=None, torch_compile=False, return_lse=False):
    """Standard attention (FMHA). query [B, Sq, H, D], key [B, Skv, Hkv, D], value [B, Skv, Hkv, Dv];
    is_causal is top-left aligned; varlen takes packed sequences (B == 1) through seqlens_Q/KV or
    cumulative_seqlen_Q/KV with max_seqlen_Q/KV."""
    query, key, value = (_args.as_supported(n, x) for n, x in (("query", query), ("key", key), ("value", value)))
    named = [("query", query), ("key", key), ("value", value)]
    framework = _args.check_same_framework(named)
    _args.check_layout_flags(named)
    _args.check_same_device_dtype(query, named[1:])
    _args.check_float_dtype(query)
    _args.check_fmha_tensors(query, key, value)
    causal = _args.check_bool("is_causal", is_causal)
    scale = _args.check_scale(scale, query.shape[-1])
    backend = _args.check_backend("backend", backend)
    schedule = parse_kernel_schedule(kernel_schedule)
    q_tile, kv_tile = _args.normalize_tile_pair("q_tile_size", "kv_tile_size", q_tile_size, kv_tile_size, 1,
                                                backend)
    bq_tile, bkv_tile = _args.normalize_tile_pair("backward_q_tile_size", "backward_kv_tile_size",
                                                  backward_q_tile_size, backward_kv_tile_size, 1, backend)
    if backward_kv_splits is not None and not (_is_int(backward_kv_splits) and backward_kv_splits >= 1):
        raise ValueError(f"backward_kv_splits={backward_kv_splits!r} is not valid (allowed: None or an int >= 1)")
    for name, flag in (("backward_use_pt_reduction", backward_use_pt_reduction),
                       ("run_persistent_kernel", run_persistent_kernel), ("torch_compile", torch_compile),
                       ("return_lse", return_lse)):
        _args.check_bool(name, flag)
    varlen = _varlen_args(query, key, seqlens_Q, seqlens_KV, cumulative_seqlen_Q, cumulative_seqlen_KV,
                          max_seqlen_Q, max_seqlen_KV)
    if backend == "flex-fmha":
        if framework != "torch":
            raise NotImplementedError("flex-fmha runs on torch tensors only (it is built on torch flex_attention)")
        from . import _flex

        out, lse = _flex.fmha(query, key, value, causal, scale, varlen, torch_compile, need_lse=return_lse)
    elif framework == "torch":
        out, lse = _torch_ops().fmha(query, key, value, causal, scale, varlen, backend, q_tile, kv_tile, schedule,
                                     bq_tile, bkv_tile)
    else:
        q, k, v = (_core.head_contiguous(x) for x in (query, key, value))
        out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
        lse = np.empty(q.shape[:-1], dtype=_args.lse_dtype_name(q))
        cu_q, cu_kv, max_q, max_kv = varlen if varlen else (None, None, 0, 0)
        _core.fmha_forward(q, k, v, out, lse, causal, scale, cu_q, cu_kv, max_q, max_kv, backend, q_tile, kv_tile,
                           schedule, deterministic=context.deterministic_now(), requires_grad=False)
    return (out, lse) if return_lse else out


def generate_varlen_parameters(query, key, value, seqlens_Q, seqlens_KV):
    """(cumulative_seqlen_Q, cumulative_seqlen_KV, max_seqlen_Q, max_seqlen_KV) for attention()."""
    cu_q, cu_kv, max_q, max_kv = _varlen_args(query, key, seqlens_Q, seqlens_KV, None, None, None, None)
    return cu_q, cu_kv, max_q, max_kv


# ---- merging ---------------------------------------------------------------------------------------


def merge_attentions(outputs, lse_tensors, torch_compile=True, use_autograd_fix=True):
    """Merges attention outputs over disjoint key sets: lse = log sum_i exp(lse_i),
    out = sum_i exp(lse_i - lse) * out_i (in fp32; out is cast to outputs[0]'s dtype, lse stays fp32).
    outputs: >= 2 tensors [B, S, H, Dv] of one shape; lse_tensors: [B, S, H] float32.
    Gradients are exact through plain autograd (nattn's ops propagate the lse gradient), so
    use_autograd_fix and torch_compile are accepted for compatibility and change nothing."""
    if not isinstance(outputs, (list, tuple)) or not isinstance(lse_tensors, (list, tuple)):
        raise ValueError("merge_attentions: outputs and lse_tensors must be lists or tuples of tensors")
    if len(outputs) < 2:
        raise ValueError(f"merge_attentions needs at least 2 outputs (got {len(outputs)})")
    if len(outputs) != len(lse_tensors):
        raise ValueError(f"merge_attentions: got {len(outputs)} outputs but {len(lse_tensors)} lse tensors")
    _args.check_bool("torch_compile", torch_compile)
    _args.check_bool("use_autograd_fix", use_autograd_fix)
    outputs = [_args.as_supported(f"outputs[{i}]", o) for i, o in enumerate(outputs)]
    lse_tensors = [_args.as_supported(f"lse_tensors[{i}]", x) for i, x in enumerate(lse_tensors)]
    named = [(f"outputs[{i}]", o) for i, o in enumerate(outputs)] + \
            [(f"lse_tensors[{i}]", x) for i, x in enumerate(lse_tensors)]
    framework = _args.check_same_framework(named)
    _args.check_layout_flags(named)
    o0 = outputs[0]
    _args.check_float_dtype(o0)
    for i, (o, x) in enumerate(zip(outputs, lse_tensors)):
        if o.ndim != 4:
            raise ValueError(f"outputs[{i}] must be 4-D [batch, seqlen, heads, head_dim] (got shape {tuple(o.shape)})")
        if tuple(o.shape) != tuple(o0.shape):
            raise ValueError(f"outputs[{i}] has shape {tuple(o.shape)} but outputs[0] has {tuple(o0.shape)}")
        if _args.dtype_name(o) != _args.dtype_name(o0) or _args.device_name(o) != _args.device_name(o0):
            raise ValueError(f"outputs[{i}] ({_args.dtype_name(o)}, {_args.device_name(o)}) differs from outputs[0] "
                             f"({_args.dtype_name(o0)}, {_args.device_name(o0)}) in dtype or device")
        if tuple(x.shape) != tuple(o0.shape[:3]):
            raise ValueError(f"lse_tensors[{i}] must have shape {tuple(o0.shape[:3])} (the output's first three "
                             f"dims; got {tuple(x.shape)})")
        if _args.dtype_name(x) != _args.lse_dtype_name(o0) or _args.device_name(x) != _args.device_name(o0):
            raise ValueError(f"lse_tensors[{i}] must be {_args.lse_dtype_name(o0)} on {_args.device_name(o0)} (got "
                             f"{_args.dtype_name(x)} on {_args.device_name(x)})")
    if framework == "torch":
        return _torch_ops().merge(list(outputs), list(lse_tensors))
    outs = [_core.head_contiguous(o) for o in outputs]
    out = np.empty(o0.shape, dtype=o0.dtype)
    lse = np.empty(o0.shape[:3], dtype=np.float32)
    _core.merge_attentions(outs, list(lse_tensors), out, lse)
    return out, lse
