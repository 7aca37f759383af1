"""PyTorch ops: every kernel entry point is a ``torch.library.custom_op`` with a fake (meta)
implementation and registered autograd, so torch.compile(fullgraph=True) traces them without graph
breaks. Pure Python over nattn._C: no torch in the C++ core.

Ops (namespace ``nattn``): na_forward, na_backward, fmha_forward, fmha_backward.

The gradient of the returned LSE is propagated exactly: the LSE term adds ``P * dlse`` to dS,
which the core's backward computes when it is given V, dO and O with one more value column
(0, 1 and -dlse): delta = rowsum(dO O) - dlse and dO V^T unchanged. merge_attentions is therefore
plain differentiable torch math, with no in-place tricks."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _core, context

_LIB = "nattn"


def _empty(shape, like, dtype=None):
    return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)


def _hc(x):
    return _core.head_contiguous(x)


# ---- NA ------------------------------------------------------------------------------------------


def _lse_dtype(query):
    return torch.float64 if query.dtype == torch.float64 else torch.float32


def _na_forward_impl(query, key, value, additional_keys, additional_values, kernel_size, stride, dilation,
                     is_causal, scale, backend, q_tile, kv_tile, schedule, backward_backend, backward_q_tile,
                     backward_kv_tile, deterministic, requires_grad):
    out = _empty(query.shape[:-1] + (value.shape[-1],), query)
    lse = _empty(query.shape[:-1], query, _lse_dtype(query))
    _core.na_forward(_hc(query), _hc(key), _hc(value), out, lse, _hc(additional_keys), _hc(additional_values),
                     (kernel_size, stride, dilation, is_causal), scale, backend, q_tile, kv_tile, schedule,
                     deterministic, requires_grad)
    return out, lse


@torch.library.custom_op(f"{_LIB}::na_forward", mutates_args=())
def na_forward(
    query: Tensor, key: Tensor, value: Tensor, additional_keys: Optional[Tensor],
    additional_values: Optional[Tensor], kernel_size: List[int], stride: List[int], dilation: List[int],
    is_causal: List[bool], scale: float, backend: str, q_tile: List[int], kv_tile: List[int], schedule: str,
    backward_backend: str, backward_q_tile: List[int], backward_kv_tile: List[int], deterministic: bool,
    requires_grad: bool,
) -> Tuple[Tensor, Tensor]:
    return _na_forward_impl(query, key, value, additional_keys, additional_values, kernel_size, stride, dilation,
                            is_causal, scale, backend, q_tile, kv_tile, schedule, backward_backend,
                            backward_q_tile, backward_kv_tile, deterministic, requires_grad)


@na_forward.register_fake
def _na_forward_fake(query, key, value, additional_keys, additional_values, kernel_size, stride, dilation,
                     is_causal, scale, backend, q_tile, kv_tile, schedule, backward_backend, backward_q_tile,
                     backward_kv_tile, deterministic, requires_grad):
    out = _empty(query.shape[:-1] + (value.shape[-1],), query)
    lse = _empty(query.shape[:-1], query, _lse_dtype(query))
    return out, lse


def _na_backward_impl(query, key, value, out, lse, dout, additional_keys, additional_values, kernel_size, stride,
                      dilation, is_causal, scale, backend, q_tile, kv_tile, deterministic):
    dq, dk, dv = _empty(query.shape, query), _empty(key.shape, key), _empty(value.shape, value)
    if additional_keys is not None:
        dak, dav = _empty(additional_keys.shape, query), _empty(additional_values.shape, query)
    else:
        dak, dav = _empty((0,), query), _empty((0,), query)
    _core.na_backward(_hc(query), _hc(key), _hc(value), _hc(out), lse, _hc(dout), dq, dk, dv,
                      _hc(additional_keys), _hc(additional_values),
                      dak if additional_keys is not None else None, dav if additional_keys is not None else None,
                      (kernel_size, stride, dilation, is_causal), scale, backend, q_tile, kv_tile, deterministic)
    return dq, dk, dv, dak, dav


@torch.library.custom_op(f"{_LIB}::na_backward", mutates_args=())
def na_backward(
    query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, dout: Tensor,
    additional_keys: Optional[Tensor], additional_values: Optional[Tensor], kernel_size: List[int],
    stride: List[int], dilation: List[int], is_causal: List[bool], scale: float, backend: str,
    q_tile: List[int], kv_tile: List[int], deterministic: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _na_backward_impl(query, key, value, out, lse, dout, additional_keys, additional_values, kernel_size,
                             stride, dilation, is_causal, scale, backend, q_tile, kv_tile, deterministic)


@na_backward.register_fake
def _na_backward_fake(query, key, value, out, lse, dout, additional_keys, additional_values, kernel_size, stride,
                      dilation, is_causal, scale, backend, q_tile, kv_tile, deterministic):
    dq, dk, dv = _empty(query.shape, query), _empty(key.shape, key), _empty(value.shape, value)
    if additional_keys is not None:
        return dq, dk, dv, _empty(additional_keys.shape, query), _empty(additional_values.shape, query)
    return dq, dk, dv, _empty((0,), query), _empty((0,), query)


def _value_pad(t):
    return 8 if t.device.type == "cuda" else 1


def _fold_lse_grad(value, additional_values, out, dout, grad_lse):
    """Extra value column (V: 0, dO: 1, O: -dlse) so that the core's backward adds dlse * P to dS."""
    pad = _value_pad(value)

    def zeros_col(t):
        return t.new_zeros(t.shape[:-1] + (pad,))

    v2 = torch.cat([value, zeros_col(value)], -1)
    av2 = torch.cat([additional_values, zeros_col(additional_values)], -1) if additional_values is not None else None
    one = dout.new_ones(dout.shape[:-1] + (1,))
    dout2 = torch.cat([dout, one, dout.new_zeros(dout.shape[:-1] + (pad - 1,))], -1)
    neg = (-grad_lse).to(out.dtype).unsqueeze(-1)
    out2 = torch.cat([out, neg, out.new_zeros(out.shape[:-1] + (pad - 1,))], -1)
    return v2, av2, out2, dout2


def _na_setup_context(ctx, inputs, output):
    (q, k, v, ak, av, ks, st, dil, causal, scale, _backend, _qt, _kvt, _sched, bbackend, bqt, bkvt, det, _rg) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, ak, av, out, lse)
    ctx.cfg = (ks, st, dil, causal, scale, bbackend, bqt, bkvt, det)
    ctx.set_materialize_grads(False)


def _na_backward_fn(ctx, grad_out, grad_lse):
    q, k, v, ak, av, out, lse = ctx.saved_tensors
    ks, st, dil, causal, scale, bbackend, bqt, bkvt, det = ctx.cfg
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    grad_out = _hc(grad_out)
    dv_dim = v.shape[-1]
    vv, avv, oo, dd = v, av, out, grad_out
    if grad_lse is not None:
        vv, avv, oo, dd = _fold_lse_grad(v, av, out, grad_out, grad_lse)
    backward = _na_backward_impl if _eager(q, k, vv, oo, lse, dd, ak, avv) else torch.ops.nattn.na_backward
    dq, dk, dv, dak, dav = backward(q, k, vv, oo, lse, dd, ak, avv, ks, st, dil, causal, scale, bbackend, bqt, bkvt,
                                    det)
    if grad_lse is not None:
        dv = dv[..., :dv_dim]
        if ak is not None:
            dav = dav[..., :dv_dim]
    if ak is None:
        dak = dav = None
    return (dq, dk, dv, dak, dav) + (None,) * 14


def _autograd(op_name, forward_impl, setup, backward_fn):
    """Registers the autograd formulas of custom op `op_name` and returns the same formulas as a
    torch.autograd.Function, for eager calls that skip torch.library's dispatch (_call)."""
    torch.library.register_autograd(f"{_LIB}::{op_name}", backward_fn, setup_context=setup)

    class Eager(torch.autograd.Function):
        forward = staticmethod(forward_impl)
        setup_context = staticmethod(setup)
        backward = staticmethod(backward_fn)

    Eager.__name__ = Eager.__qualname__ = f"_{op_name}_eager"
    return Eager


_NaEager = _autograd("na_forward", _na_forward_impl, _na_setup_context, _na_backward_fn)


# ---- FMHA ----------------------------------------------------------------------------------------


def _fmha_forward_impl(query, key, value, is_causal, scale, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv,
                       backend, q_tile, kv_tile, schedule, backward_backend, backward_q_tile, backward_kv_tile,
                       deterministic, requires_grad):
    out = _empty(query.shape[:-1] + (value.shape[-1],), query)
    lse = _empty(query.shape[:-1], query, _lse_dtype(query))
    _core.fmha_forward(_hc(query), _hc(key), _hc(value), out, lse, is_causal, scale, cu_seqlens_q, cu_seqlens_kv,
                       max_seqlen_q, max_seqlen_kv, backend, q_tile, kv_tile, schedule, deterministic, requires_grad)
    return out, lse


@torch.library.custom_op(f"{_LIB}::fmha_forward", mutates_args=())
def fmha_forward(
    query: Tensor, key: Tensor, value: Tensor, is_causal: bool, scale: float, cu_seqlens_q: Optional[Tensor],
    cu_seqlens_kv: Optional[Tensor], max_seqlen_q: int, max_seqlen_kv: int, backend: str, q_tile: List[int],
    kv_tile: List[int], schedule: str, backward_backend: str, backward_q_tile: List[int],
    backward_kv_tile: List[int], deterministic: bool, requires_grad: bool,
) -> Tuple[Tensor, Tensor]:
    return _fmha_forward_impl(query, key, value, is_causal, scale, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q,
                              max_seqlen_kv, backend, q_tile, kv_tile, schedule, backward_backend, backward_q_tile,
                              backward_kv_tile, deterministic, requires_grad)


@fmha_forward.register_fake
def _fmha_forward_fake(query, key, value, is_causal, scale, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q,
                       max_seqlen_kv, backend, q_tile, kv_tile, schedule, backward_backend, backward_q_tile,
                       backward_kv_tile, deterministic, requires_grad):
    out = _empty(query.shape[:-1] + (value.shape[-1],), query)
    lse = _empty(query.shape[:-1], query, _lse_dtype(query))
    return out, lse


def _fmha_backward_impl(query, key, value, out, lse, dout, is_causal, scale, cu_seqlens_q, cu_seqlens_kv,
                        max_seqlen_q, max_seqlen_kv, backend, q_tile, kv_tile, deterministic):
    dq, dk, dv = _empty(query.shape, query), _empty(key.shape, key), _empty(value.shape, value)
    _core.fmha_backward(_hc(query), _hc(key), _hc(value), _hc(out), lse, _hc(dout), dq, dk, dv, is_causal, scale,
                        cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv, backend, q_tile, kv_tile,
                        deterministic)
    return dq, dk, dv


@torch.library.custom_op(f"{_LIB}::fmha_backward", mutates_args=())
def fmha_backward(
    query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, dout: Tensor, is_causal: bool,
    scale: float, cu_seqlens_q: Optional[Tensor], cu_seqlens_kv: Optional[Tensor], max_seqlen_q: int,
    max_seqlen_kv: int, backend: str, q_tile: List[int], kv_tile: List[int], deterministic: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    return _fmha_backward_impl(query, key, value, out, lse, dout, is_causal, scale, cu_seqlens_q, cu_seqlens_kv,
                               max_seqlen_q, max_seqlen_kv, backend, q_tile, kv_tile, deterministic)


@fmha_backward.register_fake
def _fmha_backward_fake(query, key, value, out, lse, dout, is_causal, scale, cu_seqlens_q, cu_seqlens_kv,
                        max_seqlen_q, max_seqlen_kv, backend, q_tile, kv_tile, deterministic):
    return _empty(query.shape, query), _empty(key.shape, key), _empty(value.shape, value)


def _fmha_setup_context(ctx, inputs, output):
    (q, k, v, causal, scale, cu_q, cu_kv, max_q, max_kv, _b, _qt, _kvt, _s, bbackend, bqt, bkvt, det, _rg) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_kv)
    ctx.cfg = (causal, scale, max_q, max_kv, bbackend, bqt, bkvt, det)
    ctx.set_materialize_grads(False)


def _fmha_backward_fn(ctx, grad_out, grad_lse):
    q, k, v, out, lse, cu_q, cu_kv = ctx.saved_tensors
    causal, scale, max_q, max_kv, bbackend, bqt, bkvt, det = ctx.cfg
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    grad_out = _hc(grad_out)
    dv_dim = v.shape[-1]
    vv, oo, dd = v, out, grad_out
    if grad_lse is not None:
        vv, _, oo, dd = _fold_lse_grad(v, None, out, grad_out, grad_lse)
    backward = _fmha_backward_impl if _eager(q, k, vv, oo, lse, dd, cu_q, cu_kv) else torch.ops.nattn.fmha_backward
    dq, dk, dv = backward(q, k, vv, oo, lse, dd, causal, scale, cu_q, cu_kv, max_q, max_kv, bbackend, bqt, bkvt, det)
    if grad_lse is not None:
        dv = dv[..., :dv_dim]
    return (dq, dk, dv) + (None,) * 15


_FmhaEager = _autograd("fmha_forward", _fmha_forward_impl, _fmha_setup_context, _fmha_backward_fn)


# ---- eager calls ---------------------------------------------------------------------------------


def _functorch_active():
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


def _eager(*ts):
    """Whether a call can skip torch.library's dispatch (~110 us of host time per call on the H100
    machine, more than the whole kernel of a small problem): plain tensors only (no FakeTensor,
    subclass or torch.compile / export tracing, no torch.func transform). Otherwise the custom ops
    run, which carry the fake implementations and the registered autograd for those."""
    if torch.compiler.is_compiling() or _functorch_active():
        return False
    return all(t is None or type(t) is torch.Tensor for t in ts)


def _call(op, eager_fn, eager_autograd, args, tensors, requires_grad):
    if not _eager(*tensors):
        return op(*args)
    return eager_autograd.apply(*args) if requires_grad else eager_fn(*args)


# ---- entry points used by nattn.functional -------------------------------------------------------


def _requires_grad(*ts):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _backward_backend(backend, bq_tile, bkv_tile):
    """The backend (and tiles) of the backward pass. The hopper-* backends are forward-only: a
    backward after a forward on them runs on the automatic choice (cutlass-*, from the forward's
    output and LSE) unless backward tiles were asked for, which name the hopper backend's own."""
    if backend.startswith("hopper-") and not bq_tile and not bkv_tile:
        return ""
    return backend


def na(q, k, v, ak, av, params, scale, backend, q_tile, kv_tile, schedule, bq_tile, bkv_tile):
    ks, st, dil, causal = params
    requires_grad = _requires_grad(q, k, v, ak, av)
    args = (q, k, v, ak, av, list(ks), list(st), list(dil), list(causal), float(scale), backend, list(q_tile),
            list(kv_tile), schedule, _backward_backend(backend, bq_tile, bkv_tile), list(bq_tile), list(bkv_tile),
            context.deterministic_now(), requires_grad)
    return _call(torch.ops.nattn.na_forward, _na_forward_impl, _NaEager, args, (q, k, v, ak, av), requires_grad)


def fmha(q, k, v, causal, scale, varlen, backend, q_tile, kv_tile, schedule, bq_tile, bkv_tile):
    cu_q, cu_kv, max_q, max_kv = varlen if varlen else (None, None, 0, 0)
    requires_grad = _requires_grad(q, k, v)
    args = (q, k, v, causal, float(scale), cu_q, cu_kv, max_q, max_kv, backend, list(q_tile), list(kv_tile), schedule,
            _backward_backend(backend, bq_tile, bkv_tile), list(bq_tile), list(bkv_tile), context.deterministic_now(),
            requires_grad)
    return _call(torch.ops.nattn.fmha_forward, _fmha_forward_impl, _FmhaEager, args, (q, k, v, cu_q, cu_kv),
                 requires_grad)


def merge(outputs, lses):
    """lse = logsumexp_i lse_i; out = sum_i exp(lse_i - lse) out_i, in fp32 or wider (differentiable)."""
    stacked = torch.stack(lses, 0)
    lse = torch.logsumexp(stacked, 0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = None
    for o, x in zip(outputs, lses):
        term = torch.exp(x - safe).unsqueeze(-1) * o.to(torch.promote_types(o.dtype, torch.float32))
        out = term if out is None else out + term
    return out.to(outputs[0].dtype), lse
