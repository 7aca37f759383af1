"""Neighborhood attention on sub-domains: multi-device NA, exact in global coordinates (issue 6).

Multi-device NA splits the token grid into slabs. A rank holds the queries of its slab and the
keys/values of its slab plus halos from its neighbours; windows (border shift, stride groups,
dilation groups, causality) are those of the WHOLE grid, so the sharded result equals the
single-device one: out / lse / dquery of a rank are exactly the rows of the global result, and the
global dkey / dvalue are the sums of the ranks' contributions at their global positions.

- ``halo_range`` / ``halo_box``: the key range the queries of a slab attend (the C++
  ``sem::halo_range``; no window math is repeated here).
- ``na_subdomain`` / ``na_subdomain_backward``: forward / backward of one rank (NumPy arrays or CPU
  torch tensors; torch tensors that require grad get autograd). Reference backend only (for now).
- ``shard_na``: simulates the ranks in one process (slice, run, assemble), for tests and examples.
- ``distributed_na``: the torch.distributed version (one rank per process; the key/value halos are
  exchanged with point-to-point send/recv, and their gradients are sent back to their owners).
"""

import itertools

import numpy as np

from . import _args, _core
from ._lib import require_lib

__all__ = ["halo_range", "halo_box", "slabs", "na_subdomain", "na_subdomain_backward", "shard_na",
           "distributed_na"]


# ---- halos ---------------------------------------------------------------------------------------


def halo_range(q_lo, q_hi, extent, kernel_size, stride=1, dilation=1, is_causal=False):
    """(kv_lo, kv_hi): the smallest global key range holding every window of the global queries
    [q_lo, q_hi) of one axis of extent `extent` (all dilation groups)."""
    lo, hi = require_lib().halo_range(int(q_lo), int(q_hi), int(extent), int(kernel_size), int(stride),
                                      int(dilation), bool(is_causal))
    return int(lo), int(hi)


def halo_box(q_lo, q_hi, global_shape, kernel_size, stride=1, dilation=1, is_causal=False):
    """Per-axis halo_range of the query box [q_lo, q_hi): returns (kv_lo, kv_hi) tuples."""
    n = len(global_shape)
    ks, st, dil, causal = _args.normalize_na_params(n, kernel_size, stride, dilation, is_causal)
    ranges = [halo_range(q_lo[i], q_hi[i], global_shape[i], ks[i], st[i], dil[i], causal[i]) for i in range(n)]
    return tuple(r[0] for r in ranges), tuple(r[1] for r in ranges)


def slabs(sizes):
    """[(lo, hi), ...] of consecutive slabs of the given sizes."""
    out, at = [], 0
    for s in sizes:
        if int(s) < 0:
            raise ValueError(f"slab sizes must be >= 0 (got {list(sizes)})")
        out.append((at, at + int(s)))
        at += int(s)
    return out


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


def _forward(q, k, v, ak, av, params, scale, sub, backend):
    q, k, v, ak, av = (_core.head_contiguous(x) for x in (q, k, v, ak, av))
    out = _empty(q, q.shape[:-1] + (v.shape[-1],))
    lse = _empty(q, q.shape[:-1], _lse_dtype(q))
    _core.na_forward(q, k, v, out, lse, ak, av, params, scale, backend, sub_domain=sub)
    return out, lse


def _backward(q, k, v, ak, av, out, lse, dout, params, scale, sub, backend):
    q, k, v, ak, av, out, dout = (_core.head_contiguous(x) for x in (q, k, v, ak, av, out, dout))
    dq, dk, dv = _empty(q, q.shape), _empty(k, k.shape), _empty(v, v.shape)
    dak = _empty(ak, ak.shape) if ak is not None else None
    dav = _empty(av, av.shape) if av is not None else None
    _core.na_backward(q, k, v, out, lse, dout, dq, dk, dv, ak, av, dak, dav, params, scale, backend,
                      sub_domain=sub)
    return dq, dk, dv, dak, dav


_autograd_fn = None


def _autograd():
    global _autograd_fn
    if _autograd_fn is None:
        import torch

        class SubDomainNA(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, ak, av, params, scale, sub, backend):
                out, lse = _forward(q.detach(), k.detach(), v.detach(),
                                    None if ak is None else ak.detach(), None if av is None else av.detach(),
                                    params, scale, sub, backend)
                ctx.save_for_backward(q, k, v, ak, av, out, lse)
                ctx.args = (params, scale, sub, backend)
                ctx.mark_non_differentiable(lse)
                return out, lse

            @staticmethod
            def backward(ctx, dout, _dlse):
                q, k, v, ak, av, out, lse = ctx.saved_tensors
                if dout is None:
                    dout = torch.zeros_like(out)
                dq, dk, dv, dak, dav = _backward(q.detach(), k.detach(), v.detach(),
                                                 None if ak is None else ak.detach(),
                                                 None if av is None else av.detach(), out, lse, dout.contiguous(),
                                                 *ctx.args)
                return dq, dk, dv, dak, dav, None, None, None, None

        _autograd_fn = SubDomainNA
    return _autograd_fn


def na_subdomain(query, key, value, kernel_size, global_shape, q_origin, kv_origin, stride=1, dilation=1,
                 is_causal=False, scale=None, additional_keys=None, additional_values=None, return_lse=False,
                 backend="reference"):
    """NA of one rank. query [B, *Sq, H, D] holds the global queries q_origin + [0, Sq) per axis,
    key/value [B, *Skv, Hkv, D/Dv] the global keys kv_origin + [0, Skv) (the slab plus its halos:
    see halo_box); windows are those of the global grid `global_shape`. Returns out [B, *Sq, H, Dv]
    (and lse [B, *Sq, H] with return_lse). NumPy arrays or CPU torch tensors (with autograd: the
    key/value gradients are those of the LOCAL queries; add halo gradients into their owners)."""
    params, sub = _normalize(query, kernel_size, stride, dilation, is_causal, global_shape, q_origin, kv_origin)
    scale = _args.check_scale(scale, query.shape[-1])
    if _args.is_torch(query):
        import torch

        tensors = [t for t in (query, key, value, additional_keys, additional_values) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            out, lse = _autograd().apply(query, key, value, additional_keys, additional_values, params, scale, sub,
                                         backend)
            return (out, lse) if return_lse else out
    out, lse = _forward(query, key, value, additional_keys, additional_values, params, scale, sub, backend)
    return (out, lse) if return_lse else out


def na_subdomain_backward(query, key, value, out, lse, dout, kernel_size, global_shape, q_origin, kv_origin,
                          stride=1, dilation=1, is_causal=False, scale=None, additional_keys=None,
                          additional_values=None, backend="reference"):
    """Backward of na_subdomain: (dquery, dkey, dvalue, dadditional_keys, dadditional_values); the last
    two are None without additional keys. dkey/dvalue hold the contributions of the local queries."""
    params, sub = _normalize(query, kernel_size, stride, dilation, is_causal, global_shape, q_origin, kv_origin)
    scale = _args.check_scale(scale, query.shape[-1])
    return _backward(query, key, value, additional_keys, additional_values, out, lse, dout, params, scale, sub,
                     backend)


# ---- ranks simulated in one process ------------------------------------------------------------------


def _box(lo, hi):
    return (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))


def _zeros_like(x):
    if _args.is_torch(x):
        import torch

        return torch.zeros_like(x)
    return np.zeros_like(x)


def shard_na(query, key, value, kernel_size, splits, stride=1, dilation=1, is_causal=False, scale=None,
             additional_keys=None, additional_values=None, dout=None, backend="reference"):
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


def _exchange_plan(slab_bounds, halos):
    """For each (src, dst) pair with src != dst: the global range of src's slab that dst needs."""
    plan = []
    for dst, (kv_lo, kv_hi) in enumerate(halos):
        for src, (lo, hi) in enumerate(slab_bounds):
            a, b = max(lo, kv_lo), min(hi, kv_hi)
            if src != dst and a < b:
                plan.append((src, dst, a, b))
    return plan


def _halo_plan(slab_sizes, axis, global_shape, kernel_size, stride, dilation, is_causal):
    na_dim = len(global_shape)
    ks, st, dil, causal = _args.normalize_na_params(na_dim, kernel_size, stride, dilation, is_causal)
    bounds = slabs(slab_sizes)
    halos = [halo_range(lo, hi, global_shape[axis], ks[axis], st[axis], dil[axis], causal[axis]) if hi > lo
             else (lo, lo) for lo, hi in bounds]
    return bounds, halos, _exchange_plan(bounds, halos)


def _gather_halo(local, axis, rank, bounds, halos, plan, group):
    """Local slab -> slab plus halo along `axis` (spatial axis; tensor dim axis + 1)."""
    import torch
    import torch.distributed as dist

    dim = axis + 1
    lo, _ = bounds[rank]
    kv_lo, kv_hi = halos[rank]
    ops, received = [], {}
    for src, dst, a, b in plan:
        if src == rank:
            piece = local.narrow(dim, a - lo, b - a).contiguous()
            ops.append(dist.P2POp(dist.isend, piece, dst, group))
        elif dst == rank:
            shape = list(local.shape)
            shape[dim] = b - a
            buf = torch.empty(shape, dtype=local.dtype, device=local.device)
            received[a] = buf
            ops.append(dist.P2POp(dist.irecv, buf, src, group))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    pieces = dict(received)
    if bounds[rank][1] > lo:
        own_a, own_b = max(lo, kv_lo), min(bounds[rank][1], kv_hi)
        if own_a < own_b:
            pieces[own_a] = local.narrow(dim, own_a - lo, own_b - own_a)
    ordered = [pieces[a] for a in sorted(pieces)]
    return torch.cat(ordered, dim) if len(ordered) > 1 else ordered[0]


def _scatter_halo_grad(grad, axis, rank, bounds, halos, plan, group):
    """Gradient of slab plus halo -> gradient of the local slab (halo parts sent to their owners and
    summed there)."""
    import torch
    import torch.distributed as dist

    dim = axis + 1
    lo, hi = bounds[rank]
    kv_lo, _ = halos[rank]
    shape = list(grad.shape)
    shape[dim] = hi - lo
    local = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
    own_a, own_b = max(lo, kv_lo), min(hi, halos[rank][1])
    if own_a < own_b:
        local.narrow(dim, own_a - lo, own_b - own_a).add_(grad.narrow(dim, own_a - kv_lo, own_b - own_a))
    ops, received = [], []
    for src, dst, a, b in plan:  # reversed roles: dst sends back the gradient of src's keys
        if dst == rank:
            ops.append(dist.P2POp(dist.isend, grad.narrow(dim, a - kv_lo, b - a).contiguous(), src, group))
        elif src == rank:
            s = list(grad.shape)
            s[dim] = b - a
            buf = torch.empty(s, dtype=grad.dtype, device=grad.device)
            received.append((a, b, buf))
            ops.append(dist.P2POp(dist.irecv, buf, dst, group))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    for a, b, buf in sorted(received, key=lambda r: r[0]):
        local.narrow(dim, a - lo, b - a).add_(buf)
    return local


def distributed_na(query, key, value, kernel_size, axis, slab_sizes, stride=1, dilation=1, is_causal=False,
                   scale=None, additional_keys=None, additional_values=None, group=None, backend="reference"):
    """NA over a grid split into slabs along spatial `axis`, one slab per rank of `group` (rank r owns
    the slab of size slab_sizes[r]); query/key/value are the rank's own slab [B, *S_local, H, D]
    (the other axes whole). The key/value halos are exchanged with point-to-point send/recv, so
    ranks may be any distance apart; with autograd, halo gradients are sent back to their owners
    and summed there. Additional keys/values (if any) are replicated on every rank: their
    gradient is this rank's contribution (all-reduce it, or use it through a replicated
    parameter). Returns the rank's out slab (reference backend only, for now)."""
    import torch
    import torch.distributed as dist

    rank = dist.get_rank(group)
    na_dim = query.ndim - 3
    if len(slab_sizes) != dist.get_world_size(group):
        raise ValueError(f"slab_sizes={list(slab_sizes)} must have one entry per rank "
                         f"({dist.get_world_size(group)})")
    if not 0 <= axis < na_dim:
        raise ValueError(f"axis={axis} is not valid (allowed: 0 to {na_dim - 1})")
    if any(int(s) < 1 for s in slab_sizes):
        raise ValueError(f"slab_sizes={list(slab_sizes)} must all be >= 1 (every rank owns a slab)")
    if query.shape[axis + 1] != slab_sizes[rank]:
        raise ValueError(f"rank {rank}: query has {query.shape[axis + 1]} tokens on axis {axis} but "
                         f"slab_sizes[{rank}] = {slab_sizes[rank]}")
    global_shape = list(query.shape[1:1 + na_dim])
    global_shape[axis] = int(sum(slab_sizes))
    bounds, halos, plan = _halo_plan(slab_sizes, axis, global_shape, kernel_size, stride, dilation, is_causal)
    ctx_args = (axis, rank, bounds, halos, plan, group)

    class Halo(torch.autograd.Function):
        @staticmethod
        def forward(ctx, local):
            return _gather_halo(local.detach(), *ctx_args)

        @staticmethod
        def backward(ctx, grad):
            return _scatter_halo_grad(grad.contiguous(), *ctx_args)

    k_full, v_full = Halo.apply(key), Halo.apply(value)
    q_origin = [0] * na_dim
    kv_origin = [0] * na_dim
    q_origin[axis] = bounds[rank][0]
    kv_origin[axis] = halos[rank][0]
    return na_subdomain(query, k_full, v_full, kernel_size, global_shape, q_origin, kv_origin, stride, dilation,
                        is_causal, scale, additional_keys, additional_values, backend=backend)
