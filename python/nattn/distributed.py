"""Neighborhood attention on sub-domains: multi-device NA, exact in global coordinates (issue 6).

Multi-device NA splits the token grid into slabs. A rank holds the queries of its slab and the
keys/values of its slab plus halos from its neighbours; windows (border shift, stride groups,
dilation groups, causality) are those of the WHOLE grid, so the sharded result equals the
single-device one: out / lse / dquery of a rank are exactly the rows of the global result, and the
global dkey / dvalue are the sums of the ranks' contributions at their global positions.

- ``halo_range`` / ``halo_box``: the key range the queries of a slab attend (the C++
  ``sem::halo_range``; no window math is repeated here).
- ``na_subdomain`` / ``na_subdomain_backward``: forward / backward of one rank (NumPy arrays or
  torch tensors; torch tensors that require grad get autograd, the LSE gradient included).
  Backend: ``reference`` on the CPU, automatic on CUDA (the CUDA backends that take a sub-domain).
- ``shard_na``: simulates the ranks in one process (slice, run, assemble), for tests and examples.
- ``distributed_na``: the torch.distributed version (one rank per process, a Cartesian process grid
  over one or more spatial axes; key/value halos exchanged with point-to-point send/recv, overlapped
  with the queries that need no halo, and their gradients sent back to and summed by their owners).
"""

import itertools
import math

import numpy as np

from . import _args, _core, context
from ._halo_plan import _box_shape, _make_plan, _sl, even_slabs, halo_box, halo_range, slabs

__all__ = ["halo_range", "halo_box", "slabs", "even_slabs", "rank_slices", "na_subdomain",
           "na_subdomain_backward", "shard_na", "distributed_na"]


def _resolve_backend(backend, like):
    """None: 'reference' on the CPU (the CPU backend that takes a sub-domain), automatic selection
    ('') for CUDA tensors (the core picks a CUDA backend that runs sub-domains: hopper-fna forwards on
    SM90 where its direct mode applies, cutlass-fna otherwise)."""
    if backend is None:
        return "" if _args.is_torch(like) and like.device.type == "cuda" else "reference"
    if not isinstance(backend, str):
        raise ValueError(f"backend={backend!r} is not valid (allowed: None for the device's default, or a backend "
                         f"name such as 'reference' or 'cutlass-fna')")
    return backend


# ---- one rank ------------------------------------------------------------------------------------


def _empty(like, shape, dtype=None):
    if _args.is_torch(like):
        import torch

        return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)
    return np.empty(tuple(shape), dtype=dtype or like.dtype)


def _lse_dtype(q):
    if _args.is_torch(q):
        import torch

        return torch.float64 if q.dtype == torch.float64 else torch.float32
    return np.float64 if q.dtype == np.float64 else np.float32


def _normalize(query, kernel_size, stride, dilation, is_causal, global_shape, q_origin, kv_origin):
    na_dim = query.ndim - 3
    if na_dim < 1 or na_dim > 3:
        raise ValueError(f"query must be [batch, *spatial, heads, head_dim] with 1 to 3 spatial axes (got shape "
                         f"{tuple(query.shape)})")
    params = _args.normalize_na_params(na_dim, kernel_size, stride, dilation, is_causal)
    sub = []
    for name, v in (("global_shape", global_shape), ("q_origin", q_origin), ("kv_origin", kv_origin)):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and na_dim == 1:
            v = (v,)
        if not isinstance(v, (list, tuple)) or len(v) != na_dim:
            raise ValueError(f"{name}={v!r} is not valid (allowed: a tuple of {na_dim} ints)")
        sub.append(tuple(int(x) for x in v))
    return params, tuple(sub)


def _forward(q, k, v, ak, av, params, scale, sub, backend, requires_grad=False, deterministic=True):
    q, k, v, ak, av = (_core.head_contiguous(x) for x in (q, k, v, ak, av))
    out = _empty(q, q.shape[:-1] + (v.shape[-1],))
    lse = _empty(q, q.shape[:-1], _lse_dtype(q))
    _core.na_forward(q, k, v, out, lse, ak, av, params, scale, backend, deterministic=deterministic,
                     requires_grad=requires_grad, sub_domain=sub)
    return out, lse


def _backward(q, k, v, ak, av, out, lse, dout, params, scale, sub, backend, deterministic=True):
    q, k, v, ak, av, out, dout = (_core.head_contiguous(x) for x in (q, k, v, ak, av, out, dout))
    dq, dk, dv = _empty(q, q.shape), _empty(k, k.shape), _empty(v, v.shape)
    dak = _empty(ak, ak.shape) if ak is not None else None
    dav = _empty(av, av.shape) if av is not None else None
    _core.na_backward(q, k, v, out, lse, dout, dq, dk, dv, ak, av, dak, dav, params, scale, backend,
                      deterministic=deterministic, sub_domain=sub)
    return dq, dk, dv, dak, dav


def _value_pad(t):
    return 8 if t.device.type == "cuda" else 1  # as nattn._torch_ops (CUDA kernels want head dims % 8)


def _pad_values(t, pad):
    return None if t is None else _torch_cat([t, t.new_zeros(t.shape[:-1] + (pad,))], -1)


def _fold_lse(out, dout, dlse, pad):
    """LSE gradient through the core's backward (as nattn._torch_ops): one more value column, V: 0,
    dO: 1, O: -dlse, so delta = rowsum(dO O) - dlse and dS gains dlse * P. The values get `pad`
    zero columns (_pad_values); dV then has `pad` extra columns to drop."""
    one = dout.new_ones(dout.shape[:-1] + (1,))
    dout2 = _torch_cat([dout, one, dout.new_zeros(dout.shape[:-1] + (pad - 1,))], -1)
    neg = (-dlse).to(out.dtype).unsqueeze(-1)
    out2 = _torch_cat([out, neg, out.new_zeros(out.shape[:-1] + (pad - 1,))], -1)
    return out2, dout2


def _torch_cat(xs, dim):
    import torch

    return torch.cat(xs, dim)


_autograd_fn = None


def _autograd():
    global _autograd_fn
    if _autograd_fn is None:
        import torch

        class SubDomainNA(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, ak, av, params, scale, sub, backend):
                det = context.deterministic_now()
                out, lse = _forward(q.detach(), k.detach(), v.detach(),
                                    None if ak is None else ak.detach(), None if av is None else av.detach(),
                                    params, scale, sub, backend, requires_grad=True, deterministic=det)
                ctx.save_for_backward(q, k, v, ak, av, out, lse)
                ctx.args = (params, scale, sub, backend, det)
                ctx.set_materialize_grads(False)
                return out, lse

            @staticmethod
            def backward(ctx, dout, dlse):
                q, k, v, ak, av, out, lse = ctx.saved_tensors
                dout = torch.zeros_like(out) if dout is None else dout.contiguous()
                dv_dim = v.shape[-1]
                if dlse is not None:  # the exact LSE gradient (as nattn's na1d/na2d/na3d)
                    pad = _value_pad(v)
                    v, av = _pad_values(v, pad), _pad_values(av, pad)
                    out, dout = _fold_lse(out, dout, dlse, pad)
                dq, dk, dv, dak, dav = _backward(q.detach(), k.detach(), v.detach(),
                                                 None if ak is None else ak.detach(),
                                                 None if av is None else av.detach(), out, lse, dout, *ctx.args)
                dv = dv[..., :dv_dim]
                dav = None if dav is None else dav[..., :dv_dim]
                return dq, dk, dv, dak, dav, None, None, None, None

        _autograd_fn = SubDomainNA
    return _autograd_fn


def na_subdomain(query, key, value, kernel_size, global_shape, q_origin, kv_origin, stride=1, dilation=1,
                 is_causal=False, scale=None, additional_keys=None, additional_values=None, return_lse=False,
                 backend=None):
    """NA of one rank. query [B, *Sq, H, D] holds the global queries q_origin + [0, Sq) per axis,
    key/value [B, *Skv, Hkv, D/Dv] the global keys kv_origin + [0, Skv) (the slab plus its halos:
    see halo_box); windows are those of the global grid `global_shape`. Returns out [B, *Sq, H, Dv]
    (and lse [B, *Sq, H] with return_lse). NumPy arrays or torch tensors (with autograd: the
    key/value gradients are those of the LOCAL queries; add halo gradients into their owners).
    backend None: 'reference' on the CPU, automatic on CUDA."""
    params, sub = _normalize(query, kernel_size, stride, dilation, is_causal, global_shape, q_origin, kv_origin)
    scale = _args.check_scale(scale, query.shape[-1])
    backend = _resolve_backend(backend, query)
    if _args.is_torch(query):
        import torch

        tensors = [t for t in (query, key, value, additional_keys, additional_values) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            out, lse = _autograd().apply(query, key, value, additional_keys, additional_values, params, scale, sub,
                                         backend)
            return (out, lse) if return_lse else out
    out, lse = _forward(query, key, value, additional_keys, additional_values, params, scale, sub, backend,
                        deterministic=context.deterministic_now())
    return (out, lse) if return_lse else out


def na_subdomain_backward(query, key, value, out, lse, dout, kernel_size, global_shape, q_origin, kv_origin,
                          stride=1, dilation=1, is_causal=False, scale=None, additional_keys=None,
                          additional_values=None, backend=None):
    """Backward of na_subdomain: (dquery, dkey, dvalue, dadditional_keys, dadditional_values); the last
    two are None without additional keys. dkey/dvalue hold the contributions of the local queries."""
    params, sub = _normalize(query, kernel_size, stride, dilation, is_causal, global_shape, q_origin, kv_origin)
    scale = _args.check_scale(scale, query.shape[-1])
    return _backward(query, key, value, additional_keys, additional_values, out, lse, dout, params, scale, sub,
                     _resolve_backend(backend, query), deterministic=context.deterministic_now())


# ---- ranks simulated in one process ------------------------------------------------------------------


def _box(lo, hi):
    return (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))


def _zeros_like(x):
    if _args.is_torch(x):
        import torch

        return torch.zeros_like(x)
    return np.zeros_like(x)


def shard_na(query, key, value, kernel_size, splits, stride=1, dilation=1, is_causal=False, scale=None,
             additional_keys=None, additional_values=None, dout=None, backend=None):
    """Runs NA as ranks would, in one process. splits: per spatial axis None (not split) or a list of
    slab sizes summing to the extent; the ranks are the boxes of the product of the slabs. Each rank
    gets its slab's queries and the keys/values of halo_box(slab), runs na_subdomain (and, with
    dout, na_subdomain_backward), and the results are assembled: out / lse / dquery concatenate,
    dkey / dvalue / dadditional_* are summed. Returns a dict with 'out', 'lse', 'ranks' (the
    (q_lo, q_hi, kv_lo, kv_hi) boxes) and, with dout, 'dquery', 'dkey', 'dvalue',
    'dadditional_keys', 'dadditional_values'."""
    na_dim = query.ndim - 3
    global_shape = tuple(int(x) for x in query.shape[1:1 + na_dim])
    if len(splits) != na_dim:
        raise ValueError(f"splits={splits!r} must have one entry per spatial axis ({na_dim})")
    per_axis = []
    for i, sizes in enumerate(splits):
        sizes = [global_shape[i]] if sizes is None else list(sizes)
        if sum(sizes) != global_shape[i]:
            raise ValueError(f"splits[{i}]={sizes} must sum to the extent {global_shape[i]}")
        per_axis.append(slabs(sizes))
    has_extra = additional_keys is not None
    out = _empty(query, query.shape[:-1] + (value.shape[-1],))
    lse = _empty(query, query.shape[:-1], _lse_dtype(query))
    result = {"out": out, "lse": lse, "ranks": []}
    if dout is not None:
        result.update(dquery=_empty(query, query.shape), dkey=_zeros_like(key), dvalue=_zeros_like(value),
                      dadditional_keys=_zeros_like(additional_keys) if has_extra else None,
                      dadditional_values=_zeros_like(additional_values) if has_extra else None)
    for box in itertools.product(*per_axis):
        q_lo = tuple(b[0] for b in box)
        q_hi = tuple(b[1] for b in box)
        if any(a == b for a, b in zip(q_lo, q_hi)):
            continue  # an empty rank
        kv_lo, kv_hi = halo_box(q_lo, q_hi, global_shape, kernel_size, stride, dilation, is_causal)
        result["ranks"].append((q_lo, q_hi, kv_lo, kv_hi))
        qs, kvs = _box(q_lo, q_hi), _box(kv_lo, kv_hi)
        args = dict(kernel_size=kernel_size, global_shape=global_shape, q_origin=q_lo, kv_origin=kv_lo,
                    stride=stride, dilation=dilation, is_causal=is_causal, scale=scale,
                    additional_keys=additional_keys, additional_values=additional_values, backend=backend)
        lq, lk, lv = query[qs], key[kvs], value[kvs]
        o, l = na_subdomain(lq, lk, lv, return_lse=True, **args)
        out[qs] = o
        lse[qs] = l
        if dout is not None:
            dq, dk, dv, dak, dav = na_subdomain_backward(lq, lk, lv, o, l, dout[qs], **args)
            result["dquery"][qs] = dq
            result["dkey"][kvs] += dk
            result["dvalue"][kvs] += dv
            if has_extra:
                result["dadditional_keys"] += dak
                result["dadditional_values"] += dav
    return result


# ---- torch.distributed ---------------------------------------------------------------------------------


class _Config:
    """A distributed_na call, checked: the plan plus what the kernels and the exchange need."""

    def __init__(self, **kw):
        self.comm = True  # False: skip the exchange (halo buffers zero); benchmarks time compute alone
        self.__dict__.update(kw)

    def sub(self, box, kv_box):
        return (self.plan.global_shape, tuple(b[0] for b in box), tuple(b[0] for b in kv_box))


def _p2p(cfg, sends, recvs):
    """Posts sends [(plan peer, tensor)] and receives [(plan peer, buffer)]; returns the requests."""
    import torch.distributed as dist

    if not cfg.comm:
        return []
    ops = [dist.P2POp(dist.isend, t, cfg.peers[p], cfg.group) for p, t in sends]
    ops += [dist.P2POp(dist.irecv, t, cfg.peers[p], cfg.group) for p, t in recvs]
    return list(dist.batch_isend_irecv(ops)) if ops else []


def _wait(reqs):
    """Waits for (and forgets) the requests: a second wait on a finished gloo request may block."""
    while reqs:
        reqs.pop(0).wait()


def _start_halo(cfg, k, v):
    """Posts the key/value halo exchange (one message per peer: keys and values concatenated along
    the head dim); returns (requests, send buffers, receives)."""
    import torch

    p = cfg.plan
    sends = [(d, torch.cat([k[_sl(b, p.slab)], v[_sl(b, p.slab)]], -1)) for d, b in p.sends]
    make = torch.empty if cfg.comm else torch.zeros
    recvs = [(s, b, make((k.shape[0],) + _box_shape(b) + (k.shape[-2], k.shape[-1] + v.shape[-1]),
                         dtype=k.dtype, device=k.device)) for s, b in p.recvs]
    return _p2p(cfg, sends, [(s, buf) for s, _, buf in recvs]), sends, recvs


def _finish_halo(cfg, k, v, pending):
    """Waits for the halo exchange; returns key/value over the halo box."""
    import torch

    reqs, _, recvs = pending
    _wait(reqs)
    p = cfg.plan
    if not recvs and p.own == p.halo:
        return k[_sl(p.halo, p.slab)], v[_sl(p.halo, p.slab)]
    shape = (k.shape[0],) + _box_shape(p.halo)
    k_ext = torch.empty(shape + tuple(k.shape[-2:]), dtype=k.dtype, device=k.device)
    v_ext = torch.empty(shape + tuple(v.shape[-2:]), dtype=v.dtype, device=v.device)
    dk = k.shape[-1]
    if p.own is not None:
        k_ext[_sl(p.own, p.halo)] = k[_sl(p.own, p.slab)]
        v_ext[_sl(p.own, p.halo)] = v[_sl(p.own, p.slab)]
    for _, b, buf in recvs:
        k_ext[_sl(b, p.halo)] = buf[..., :dk]
        v_ext[_sl(b, p.halo)] = buf[..., dk:]
    return k_ext, v_ext


def _start_grad(cfg, dk_ext, dv_ext, like_k, dv_dim):
    """Posts the halo gradient exchange: the gradient of every received piece goes back to its
    owner; the owner receives the gradients of the pieces it sent."""
    import torch

    p = cfg.plan
    sends = [(s, torch.cat([dk_ext[_sl(b, p.halo)], dv_ext[_sl(b, p.halo)][..., :dv_dim]], -1)) for s, b in p.recvs]
    make = torch.empty if cfg.comm else torch.zeros
    recvs = [(d, b, make((like_k.shape[0],) + _box_shape(b) + (like_k.shape[-2], like_k.shape[-1] + dv_dim),
                         dtype=like_k.dtype, device=like_k.device)) for d, b in p.sends]
    return _p2p(cfg, sends, [(d, buf) for d, _, buf in recvs]), sends, recvs


def _finish_grad(cfg, dk, dv, pending):
    """Waits for the halo gradients and adds them into this rank's key/value gradients."""
    reqs, _, recvs = pending
    _wait(reqs)
    d = dk.shape[-1]
    for _, b, buf in recvs:
        dk[_sl(b, cfg.plan.slab)] += buf[..., :d]
        dv[_sl(b, cfg.plan.slab)] += buf[..., d:]


def _na_fwd(cfg, q, k, v, ak, av, out, lse, box, kv_box, requires_grad):
    s = _sl(box, cfg.plan.slab)
    _core.na_forward(_core.head_contiguous(q[s]), k, v, out[s], lse[s], ak, av, cfg.params, cfg.scale, cfg.backend,
                     deterministic=cfg.deterministic, requires_grad=requires_grad, sub_domain=cfg.sub(box, kv_box))


def _na_bwd(cfg, q, k, v, ak, av, out, lse, dout, dq, box, kv_box):
    """Backward of the queries `box` against key/value k/v (holding kv_box): writes dq[box]; returns
    (dk, dv, dak, dav) for k/v and the additional keys/values."""
    import torch

    s = _sl(box, cfg.plan.slab)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    dak = None if ak is None else torch.empty_like(ak)
    dav = None if av is None else torch.empty_like(av)
    _core.na_backward(_core.head_contiguous(q[s]), k, v, out[s], lse[s], dout[s], dq[s], dk, dv, ak, av, dak, dav,
                      cfg.params, cfg.scale, cfg.backend, deterministic=cfg.deterministic,
                      sub_domain=cfg.sub(box, kv_box))
    return dk, dv, dak, dav


def _heads(x, hs):
    """The heads `hs` (a slice) of a [..., H, D] tensor (a view), or None."""
    return None if x is None else x[..., hs, :]


def _forward_pass(cfg, q, k, v, ak, av, requires_grad):
    """out, lse, k_ext, v_ext. overlap 'interior': post the halo exchange, run the interior queries
    on the local keys, wait, run the boundary boxes on the halo-extended keys. 'heads': post the
    exchange of every head chunk, then per chunk wait for its halo and run the whole slab's queries
    of those heads (k_ext / v_ext are then lists, one per chunk)."""
    import torch

    p = cfg.plan
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=_lse_dtype(q), device=q.device)
    if cfg.overlap == "heads":
        pending = [_start_halo(cfg, k[..., hk, :], v[..., hk, :]) for hk, _ in cfg.chunks]
        k_ext, v_ext = [], []
        for (hk, hq), pend in zip(cfg.chunks, pending):
            kc, vc = _finish_halo(cfg, k[..., hk, :], v[..., hk, :], pend)
            _na_fwd(cfg, q[..., hq, :], kc, vc, _heads(ak, hk), _heads(av, hk), out[..., hq, :], lse[..., hq],
                    p.slab, p.halo, requires_grad)
            k_ext.append(kc)
            v_ext.append(vc)
        return out, lse, k_ext, v_ext
    pending = _start_halo(cfg, k, v)
    if p.interior is not None:
        _na_fwd(cfg, q, k, v, ak, av, out, lse, p.interior, p.slab, requires_grad)
    k_ext, v_ext = _finish_halo(cfg, k, v, pending)
    for box in p.boundary:
        _na_fwd(cfg, q, k_ext, v_ext, ak, av, out, lse, box, p.halo, requires_grad)
    return out, lse, k_ext, v_ext


def _backward_pass(cfg, q, k, v, ak, av, out, lse, k_ext, v_ext, dout, dlse):
    """dq, dk, dv, dak, dav. Overlapped: boundary boxes first, post the halo gradient exchange, run the
    interior queries, wait and add the received gradients (every rank takes part in the exchange,
    whether or not it has boundary queries)."""
    import torch

    p = cfg.plan
    dv_dim = v.shape[-1]
    dout = torch.zeros_like(out) if dout is None else _core.head_contiguous(dout)
    if dlse is not None:
        pad = _value_pad(v)
        v, av = _pad_values(v, pad), _pad_values(av, pad)
        v_ext = [_pad_values(x, pad) for x in v_ext] if isinstance(v_ext, list) else _pad_values(v_ext, pad)
        out, dout = _fold_lse(out, dout, dlse, pad)
    dq = torch.empty_like(q)
    if cfg.overlap == "heads":
        return _backward_heads(cfg, q, k, v, ak, av, out, lse, k_ext, v_ext, dout, dq, dv_dim)
    dk_ext = dv_ext = dak = dav = None

    def add_extra(a, b):
        return b if a is None else a + b

    for i, (box, kv_box) in enumerate(zip(p.boundary, p.boundary_kv)):
        if i == 0:  # the first box writes the whole halo gradient
            dk_ext, dv_ext, dak, dav = _na_bwd(cfg, q, k_ext, v_ext, ak, av, out, lse, dout, dq, box, p.halo)
            continue
        s = _sl(kv_box, p.halo)
        gk, gv, gak, gav = _na_bwd(cfg, q, k_ext[s], v_ext[s], ak, av, out, lse, dout, dq, box, kv_box)
        dk_ext[s] += gk
        dv_ext[s] += gv
        dak, dav = (dak + gak, dav + gav) if ak is not None else (None, None)
    # No boundary queries: nothing was received, so there is no halo gradient to send (p.recvs is
    # empty), but the gradients of the pieces this rank sent still come back.
    pending = _start_grad(cfg, dk_ext, dv_ext, k, dv_dim)
    if cfg.overlap == "none":
        _wait(pending[0])
    if p.interior is not None:
        dk, dv, gak, gav = _na_bwd(cfg, q, k, v, ak, av, out, lse, dout, dq, p.interior, p.slab)
        dak, dav = (add_extra(dak, gak), add_extra(dav, gav)) if ak is not None else (None, None)
    else:
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    if p.own is not None and dk_ext is not None:
        dk[_sl(p.own, p.slab)] += dk_ext[_sl(p.own, p.halo)]
        dv[_sl(p.own, p.slab)] += dv_ext[_sl(p.own, p.halo)]
    dv = dv[..., :dv_dim]
    _finish_grad(cfg, dk, dv, pending)
    if dav is not None:
        dav = dav[..., :dv_dim]
    return dq, dk, dv, dak, dav


def _backward_heads(cfg, q, k, v, ak, av, out, lse, k_ext, v_ext, dout, dq, dv_dim):
    """The 'heads' backward: per head chunk, the whole slab's backward against its halo chunk, then
    its halo gradients posted back to their owners (in flight while the next chunk computes); the
    owners add them at the end."""
    import torch

    p = cfg.plan
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    dak = None if ak is None else torch.empty_like(ak)
    dav = None if av is None else torch.empty_like(av)
    pending = []
    for (hk, hq), kc, vc in zip(cfg.chunks, k_ext, v_ext):
        gk, gv, gak, gav = _na_bwd(cfg, q[..., hq, :], kc, vc, _heads(ak, hk), _heads(av, hk), out[..., hq, :],
                                   lse[..., hq], dout[..., hq, :], dq[..., hq, :], p.slab, p.halo)
        pending.append(_start_grad(cfg, gk, gv, k[..., hk, :], dv_dim))
        if p.own is not None:
            dk[..., hk, :][_sl(p.own, p.slab)] += gk[_sl(p.own, p.halo)]
            dv[..., hk, :][_sl(p.own, p.slab)] += gv[_sl(p.own, p.halo)]
        if ak is not None:
            dak[..., hk, :] = gak
            dav[..., hk, :] = gav
    dv = dv[..., :dv_dim]
    for (hk, _), pend in zip(cfg.chunks, pending):
        _finish_grad(cfg, dk[..., hk, :], dv[..., hk, :], pend)
    return dq, dk, dv, dak, None if dav is None else dav[..., :dv_dim]


_dist_fn = None


def _dist_autograd():
    global _dist_fn
    if _dist_fn is None:
        import torch

        class DistributedNA(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, ak, av, cfg, requires_grad):
                out, lse, k_ext, v_ext = _forward_pass(cfg, q, k, v, ak, av, requires_grad)
                if cfg.overlap != "heads" and not cfg.plan.boundary:
                    k_ext = v_ext = None
                ctx.save_for_backward(q, k, v, ak, av, out, lse)
                ctx.ext = (k_ext, v_ext)  # halo buffers (lists of chunks with 'heads'): not autograd inputs
                ctx.cfg = cfg
                ctx.set_materialize_grads(False)
                return out, lse

            @staticmethod
            def backward(ctx, dout, dlse):
                q, k, v, ak, av, out, lse = ctx.saved_tensors
                k_ext, v_ext = ctx.ext
                ctx.ext = None
                grads = _backward_pass(ctx.cfg, q, k, v, ak, av, out, lse, k_ext, v_ext, dout, dlse)
                return grads + (None, None)

        _dist_fn = DistributedNA
    return _dist_fn


# ---- the public entry point --------------------------------------------------------------------------


def _split_spec(axis, slab_sizes, grid, na_dim):
    """(axes, sizes, grid) from the one-axis form (axis int, slab_sizes [ints]) or the grid form
    (axis tuple, slab_sizes [[ints] per axis]); ValueError naming the argument otherwise."""
    allowed_axis = f"an int in [0, {na_dim - 1}] or a tuple of distinct ones"
    one = _args._is_int(axis)
    axes = (axis,) if one else axis
    if not isinstance(axes, (list, tuple)) or not axes or not all(_args._is_int(a) for a in axes):
        raise ValueError(f"distributed_na: axis={axis!r} is not valid (allowed: {allowed_axis})")
    axes = tuple(int(a) for a in axes)
    if any(not 0 <= a < na_dim for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"distributed_na: axis={axis!r} is not valid for {na_dim}-D NA (allowed: {allowed_axis})")
    form = ("a list of slab sizes, one per rank" if one else
            f"a list of {len(axes)} lists of slab sizes, one list per axis in axis={axis!r}")
    per_axis = [slab_sizes] if one else slab_sizes
    if (not isinstance(per_axis, (list, tuple)) or len(per_axis) != len(axes)
            or not all(isinstance(s, (list, tuple)) and len(s) >= 1 for s in per_axis)):
        raise ValueError(f"distributed_na: slab_sizes={slab_sizes!r} is not valid for axis={axis!r} (allowed: {form})")
    for s in per_axis:
        if not all(_args._is_int(x) and x >= 1 for x in s):
            raise ValueError(f"distributed_na: slab_sizes={slab_sizes!r} is not valid (allowed: ints >= 1, "
                             f"every rank owns a slab of at least one token)")
    sizes = tuple(tuple(int(x) for x in s) for s in per_axis)
    counts = tuple(len(s) for s in sizes)
    if grid is not None:
        g = (grid,) if _args._is_int(grid) else grid
        if not isinstance(g, (list, tuple)) or not all(_args._is_int(x) and x >= 1 for x in g):
            raise ValueError(f"distributed_na: grid={grid!r} is not valid (allowed: None or a tuple of ints >= 1, "
                             f"one per axis in axis={axis!r})")
        if tuple(int(x) for x in g) != counts:
            raise ValueError(f"distributed_na: grid={grid!r} does not match slab_sizes={slab_sizes!r} along "
                             f"axis={axis!r} (allowed: grid={counts}, the number of slabs per axis)")
    return axes, sizes, counts


def _check_tensors(query, key, value, additional_keys, additional_values):
    import torch

    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"distributed_na: {name} must be a torch tensor (got {type(t).__name__})")
    if not 4 <= query.dim() <= 6:
        raise ValueError(f"distributed_na: query must be [batch, *spatial, heads, head_dim] with 1 to 3 spatial "
                         f"axes (got shape {tuple(query.shape)})")
    for name, t in (("key", key), ("value", value)):
        if t.shape[:-2] != query.shape[:-2]:
            raise ValueError(f"distributed_na: {name} must hold the tokens of the rank's slab, as query does (got "
                             f"{name} shape {tuple(t.shape)}, query shape {tuple(query.shape)}; allowed: the same "
                             f"batch and spatial extents)")
        if t.dtype != query.dtype or t.device != query.device:
            raise ValueError(f"distributed_na: {name} must have the dtype and device of query (got {t.dtype} on "
                             f"{t.device}, query {query.dtype} on {query.device})")
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("distributed_na: additional_keys and additional_values must be given together (got "
                         f"additional_keys={'None' if additional_keys is None else 'a tensor'}, additional_values="
                         f"{'None' if additional_values is None else 'a tensor'})")


def _setup(query, key, value, kernel_size, axis, slab_sizes, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, group=None, backend=None, grid=None, overlap=True):
    """Checks the arguments and builds the rank's _Config (no communication)."""
    import torch.distributed as dist

    _check_tensors(query, key, value, additional_keys, additional_values)
    na_dim = query.dim() - 3
    overlap = _overlap_mode(overlap, key.shape[-2])
    axes, sizes, counts = _split_spec(axis, slab_sizes, grid, na_dim)
    params = _args.normalize_na_params(na_dim, kernel_size, stride, dilation, is_causal)
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("distributed_na needs an initialised torch.distributed process group "
                           "(dist.init_process_group)")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("distributed_na: this process is not a member of `group`")
    world = dist.get_world_size(group)
    if math.prod(counts) != world:
        raise ValueError(f"distributed_na: slab_sizes={slab_sizes!r} make a grid of {counts} = {math.prod(counts)} "
                         f"ranks but the process group has {world} (allowed: one slab per rank; grid product == "
                         f"world size)")
    coords = np.unravel_index(rank, counts)
    for j, ax in enumerate(axes):
        want = sizes[j][int(coords[j])]
        if query.shape[ax + 1] != want:
            raise ValueError(f"distributed_na: rank {rank} (grid coordinates {tuple(int(c) for c in coords)}) owns "
                             f"slab_sizes{'' if _args._is_int(axis) else f'[{j}]'}[{int(coords[j])}] = {want} tokens "
                             f"along axis {ax}, but query has {query.shape[ax + 1]} (query shape "
                             f"{tuple(query.shape)})")
    global_shape = list(query.shape[1:1 + na_dim])
    for j, ax in enumerate(axes):
        global_shape[ax] = sum(sizes[j])
    _args.check_params_vs_input(global_shape, params[0], params[1], params[2])
    scale = _args.check_scale(scale, query.shape[-1])
    backend = _resolve_backend(backend, query)
    plan = _make_plan(tuple(global_shape), axes, sizes, rank, params, overlap == "interior")
    if group is None or group is dist.group.WORLD:
        peers = list(range(world))
    else:
        peers = [dist.get_global_rank(group, r) for r in range(world)]
    return _Config(plan=plan, params=params, scale=scale, backend=backend, group=group, peers=peers,
                   overlap=overlap, deterministic=context.deterministic_now(),
                   chunks=_head_chunks(key.shape[-2], query.shape[-2]) if overlap == "heads" else None)


_HEAD_CHUNKS = 4  # pipeline depth of overlap='heads': the first chunk's exchange stays exposed


def _overlap_mode(overlap, heads_kv):
    """'heads', 'interior' or 'none' from the overlap argument (True: 'heads' when there are at least
    two key/value heads, else 'interior')."""
    if overlap is True:
        return "heads" if heads_kv >= 2 else "interior"
    if overlap is False:
        return "none"
    if overlap in ("heads", "interior", "none"):
        if overlap == "heads" and heads_kv < 2:
            raise ValueError(f"distributed_na: overlap='heads' needs at least 2 key/value heads (got {heads_kv}; "
                             f"allowed here: True, False, 'interior' or 'none')")
        return overlap
    raise ValueError(f"distributed_na: overlap={overlap!r} is not valid (allowed: True, False, 'heads', 'interior' "
                     f"or 'none')")


def _head_chunks(heads_kv, heads):
    """[(key/value head slice, query head slice)]: up to _HEAD_CHUNKS contiguous chunks of key/value
    heads (sizes differing by at most one) and their query heads (GQA: heads // heads_kv each)."""
    n, g = min(_HEAD_CHUNKS, heads_kv), heads // heads_kv
    bounds = [heads_kv * i // n for i in range(n + 1)]
    return [(slice(a, b), slice(a * g, b * g)) for a, b in zip(bounds, bounds[1:])]


def rank_slices(rank, na_dim, axis, slab_sizes):
    """Index of rank `rank`'s slab in a global [B, *spatial, ...] tensor (the rank layout of
    distributed_na: grid coordinates in row-major order over the split axes). For tests and for
    sharding a global tensor: local = x[rank_slices(rank, x.dim() - 3, axis, slab_sizes)]."""
    axes, sizes, counts = _split_spec(axis, slab_sizes, None, na_dim)
    out = [slice(None)] * (na_dim + 1)
    for j, c in enumerate(np.unravel_index(int(rank), counts)):
        lo, hi = slabs(sizes[j])[int(c)]
        out[axes[j] + 1] = slice(lo, hi)
    return tuple(out)


def distributed_na(query, key, value, kernel_size, axis, slab_sizes, stride=1, dilation=1, is_causal=False,
                   scale=None, additional_keys=None, additional_values=None, group=None, backend=None, grid=None,
                   overlap=True, return_lse=False):
    """NA over a token grid split into slabs over a Cartesian process grid, one slab per rank of
    `group`; windows are those of the whole grid, so the result equals single-device NA.

    - One split axis: ``axis`` an int, ``slab_sizes`` a list with one size per rank (rank r owns the
      r-th slab).
    - Several split axes: ``axis`` a tuple of spatial axes, ``slab_sizes`` one list of slab sizes
      per axis; the ranks form the grid ``grid`` = (len(slab_sizes[0]), ...) (give it to have it
      checked) in row-major order: rank r has the grid coordinates np.unravel_index(r, grid) and owns
      the product of those slabs (whole along the other axes). rank_slices(r, ...) indexes it.

    query/key/value are the rank's own slab [B, *S_local, H(kv), D(v)]. Key/value halos come from
    every rank whose slab intersects the rank's halo box (diagonal and farther ranks included) by
    point-to-point send/recv (batch_isend_irecv), overlapped with compute (``overlap``):

    - ``'heads'`` (what True, the default, means with >= 2 key/value heads): the exchange is posted
      in up to 4 chunks of key/value heads; each chunk's queries run over the whole slab as soon as
      its halo has arrived, while the next chunks are in flight; the backward posts each chunk's
      halo gradients back to their owners while the next chunk computes. Only the first chunk's
      exchange is exposed, and every kernel call covers the whole slab.
    - ``'interior'`` (True with a single key/value head): the queries whose windows lie inside the
      slab (the interior) run on the local keys while the exchange is in flight, then the boundary
      boxes (thin slabs along the split axes) on the halo-extended keys; the backward mirrors it.
      Nothing overlaps when no query is interior (slabs thinner than the window).
    - False / ``'none'``: wait for the halos, then the slab in one call. Autograd gives the exact gradients, the LSE's
    included; halo gradients are summed by their owners. Additional keys/values (if any) are
    replicated on every rank: their gradient is this rank's contribution (all-reduce it, or use a
    replicated parameter). Returns out (and lse with return_lse) of the rank's slab.

    backend None: 'reference' for CPU tensors, automatic for CUDA tensors (a CUDA backend that runs
    sub-domains: hopper-fna forwards on SM90, else cutlass-fna); CUDA work runs on the current
    stream, the exchange on the process group's (NCCL) stream. Every rank of the group must call it
    with the same arguments but its own tensors (and, with autograd, run the backward too). With
    NCCL, let the first collective of the group involve every rank (e.g. a barrier) before the first
    call (torch's batch_isend_irecv rule).
    """
    cfg = _setup(query, key, value, kernel_size, axis, slab_sizes, stride, dilation, is_causal, scale,
                 additional_keys, additional_values, group, backend, grid, overlap)
    return_lse = _args.check_bool("return_lse", return_lse)
    return _apply(cfg, query, key, value, additional_keys, additional_values, return_lse)


def _apply(cfg, query, key, value, additional_keys=None, additional_values=None, return_lse=False):
    import torch

    q, k, v, ak, av = (_core.head_contiguous(x) for x in (query, key, value, additional_keys, additional_values))
    tensors = [t for t in (query, key, value, additional_keys, additional_values) if t is not None]
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out, lse = _dist_autograd().apply(q, k, v, ak, av, cfg, requires_grad)
    return (out, lse) if return_lse else out
