"""The flex backends (``flex-fna``, ``flex-fmha``): PyTorch's flex_attention with the exact
neighborhood mask of shared/spec/semantics.md, on any device flex_attention supports (CPU and
CUDA), eager or compiled; backward through flex_attention's own autograd where torch has one
(CUDA; torch's flex_attention has no CPU backward).

Additional keys/values are appended to the key sequence and left unmasked, so they share the one
softmax. Without tile shapes the mask is applied on the flat row-major sequence. With tile shapes
(one of `get_configs("flex-fna", ...)`), Q, K and V are token-permuted first (spec/semantics.md,
last section, row-major order: each axis padded to whole tiles per dilation group, dilation groups
folded into the batch, one tile = one contiguous run of tokens), the block mask uses one sparse
block per tile, so whole KV tiles outside every window of a Q tile are skipped, and the output and
LSE are permuted back. The permutation is plain torch reshapes (differentiable, any device)."""

import math

import torch

from . import context

_compiled = {}


def _flex_fn(torch_compile):
    from torch.nn.attention.flex_attention import flex_attention

    if not torch_compile:
        return flex_attention
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(flex_attention, fullgraph=True, dynamic=False)
    return _compiled["fn"]


def _check(name, q, torch_compile, requires_grad):
    if requires_grad and q.device.type == "cpu":
        raise NotImplementedError(
            f"{name}: torch flex_attention has no backward pass on CPU; use backend 'cpu' or 'reference' for "
            "training on CPU tensors (or run under torch.no_grad())")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"{name} supports float32, float16 and bfloat16 (got {q.dtype})")
    if torch_compile:
        if not context.is_flex_compile_allowed():
            raise RuntimeError(
                f"{name} with torch_compile=True needs nattn.allow_flex_compile() first (compiled flex kernels "
                "are opt-in)")
        if requires_grad and not context.is_flex_compile_backprop_allowed():
            raise RuntimeError(
                f"{name} with torch_compile=True and autograd needs nattn.allow_flex_compile_backprop() first")


def _axis_ok(x, y, extent, k, s, d, causal):
    """Whether query coordinate x attends key coordinate y on one axis (tensor ops, vmap-safe)."""
    g, j = x % d, x // d
    lg = (extent - g + d - 1) // d
    gk, p = y % d, y // d
    if causal:
        lead = torch.minimum(s * (j // s) + s - 1, lg - 1)
        start = torch.clamp(lead - k + 1, min=0)
        end = torch.minimum(j + 1, lg)
    else:
        lead = torch.minimum(s * (j // s) + s // 2, lg - 1)
        start = torch.minimum(torch.clamp(lead - k // 2, min=0), lg - k)
        end = start + k
    return (gk == g) & (p >= start) & (p < end)


def na_mask_mod(spatial, kernel_size, stride, dilation, is_causal, n_tokens):
    axes = list(zip(spatial, kernel_size, stride, dilation, is_causal))

    def mask_mod(b, h, q_idx, kv_idx):
        ok = None
        qi, ki = q_idx, kv_idx
        for extent, k, s, d, c in reversed(axes):
            term = _axis_ok(qi % extent, ki % extent, extent, k, s, d, c)
            ok = term if ok is None else ok & term
            qi, ki = qi // extent, ki // extent
        return ok | (kv_idx >= n_tokens)

    return mask_mod


_block_masks = {}


def _cached_block_mask(key, make):
    """Block masks are built once per problem geometry (building one evaluates the mask over every
    block pair, which costs more than a compiled flex call on large problems). `key` must hold
    everything the mask depends on. A small FIFO cache; not used while torch.compile traces."""
    if torch.compiler.is_compiling():
        return make()
    mask = _block_masks.get(key)
    if mask is None:
        if len(_block_masks) >= 32:
            _block_masks.pop(next(iter(_block_masks)))
        mask = _block_masks[key] = make()
    return mask


def _run(q, k, v, mask_mod, q_len, kv_len, scale, torch_compile, need_lse, mask_key=None):
    """q [B, Nq, H, D], k/v [B, Nkv, Hkv, D] -> out [B, Nq, H, Dv], lse [B, Nq, H] float32 (None
    unless need_lse: compiled flex on CPU cannot return it)."""
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = None
    if mask_mod is not None:
        def make():
            return create_block_mask(mask_mod, None, None, q_len, kv_len, device=q.device)
        block_mask = make() if mask_key is None else _cached_block_mask(("flat", q_len, kv_len, str(q.device)) +
                                                                         mask_key, make)
    return _run_blocks(q, k, v, block_mask, scale, torch_compile, need_lse)


def _run_blocks(q, k, v, block_mask, scale, torch_compile, need_lse, kernel_options=None):
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    fn = _flex_fn(torch_compile)
    kw = dict(block_mask=block_mask, scale=scale, enable_gqa=q.shape[2] != k.shape[2])
    if kernel_options:
        kw["kernel_options"] = kernel_options
    if not need_lse:
        return fn(qt, kt, vt, **kw).transpose(1, 2), None
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9: the older return_lse flag
        out, lse = fn(qt, kt, vt, return_lse=True, **kw)
    else:
        out, aux = fn(qt, kt, vt, return_aux=AuxRequest(lse=True), **kw)
        lse = aux.lse
    return out.transpose(1, 2), lse.transpose(1, 2).float()


def na(q, k, v, ak, av, params, scale, torch_compile, need_lse=True, q_tile=(), kv_tile=()):
    requires_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, ak, av))
    _check("flex-fna", q, torch_compile, requires_grad)
    if q_tile:
        return _na_permuted(q, k, v, ak, av, params, scale, torch_compile, need_lse, tuple(q_tile), tuple(kv_tile))
    kernel_size, stride, dilation, is_causal = params
    batch, spatial, heads = q.shape[0], tuple(q.shape[1:-2]), q.shape[-2]
    n = int(math.prod(spatial))
    qf = q.reshape(batch, n, heads, q.shape[-1])
    kf = k.reshape(batch, n, k.shape[-2], k.shape[-1])
    vf = v.reshape(batch, n, v.shape[-2], v.shape[-1])
    if ak is not None:
        kf, vf = torch.cat([kf, ak], 1), torch.cat([vf, av], 1)
    mask_mod = na_mask_mod(spatial, kernel_size, stride, dilation, is_causal, n)
    out, lse = _run(qf, kf, vf, mask_mod, n, kf.shape[1], scale, torch_compile, need_lse,
                    mask_key=(spatial, tuple(map(tuple, params))))
    out = out.reshape(batch, *spatial, heads, v.shape[-1])
    return out, (lse.reshape(batch, *spatial, heads) if lse is not None else None)


# ---- token-permuted layout (tile shapes given) ------------------------------------------------------


def _group_extent(extent, tile, dil):
    """Padded extent per dilation group: whole tiles covering ceil(extent / dil) positions."""
    return -(-extent // (tile * dil)) * tile


def permute_tokens(x, tile, dilation):
    """x [B, *S, H, D] -> [B * prod(dilation), prod(padded group extents), H, D], row-major tiles.

    Coordinate x = (r*T + t)*d + g on each axis (tile r, offset t, group g); the result is ordered
    [B, g..., r..., t...] and flattened. Padding tokens are zeros."""
    batch, spatial, tail = x.shape[0], tuple(x.shape[1:-2]), tuple(x.shape[-2:])
    rank = len(spatial)
    padded = [_group_extent(e, t, d) * d for e, t, d in zip(spatial, tile, dilation)]
    pad = []
    for e, p in reversed(list(zip(spatial, padded))):
        pad += [0, p - e]
    if any(pad):
        x = torch.nn.functional.pad(x, [0, 0, 0, 0] + pad)
    split = [batch]
    for p, t, d in zip(padded, tile, dilation):
        split += [p // (t * d), t, d]
    x = x.reshape(*split, *tail)
    # axes: 0 = batch, then (r_i, t_i, g_i) at 1 + 3i, 2 + 3i, 3 + 3i
    order = [0] + [3 + 3 * i for i in range(rank)] + [1 + 3 * i for i in range(rank)] + \
        [2 + 3 * i for i in range(rank)] + [1 + 3 * rank, 2 + 3 * rank]
    x = x.permute(*order)
    groups = int(math.prod(dilation))
    return x.reshape(batch * groups, -1, *tail)


def unpermute_tokens(y, spatial, tile, dilation):
    """Inverse of permute_tokens: [B * G, N, *tail] -> [B, *spatial, *tail] (padding dropped)."""
    rank = len(spatial)
    groups = int(math.prod(dilation))
    batch = y.shape[0] // groups
    tail = tuple(y.shape[2:])
    padded = [_group_extent(e, t, d) * d for e, t, d in zip(spatial, tile, dilation)]
    tiles = [p // (t * d) for p, t, d in zip(padded, tile, dilation)]
    y = y.reshape(batch, *dilation, *tiles, *tile, *tail)
    # axes: 0 batch, 1..rank groups, rank+1..2rank tiles, 2rank+1..3rank offsets
    order = [0]
    for i in range(rank):
        order += [1 + rank + i, 1 + 2 * rank + i, 1 + i]
    order += [1 + 3 * rank + j for j in range(len(tail))]
    y = y.permute(*order).reshape(batch, *padded, *tail)
    return y[(slice(None),) + tuple(slice(0, e) for e in spatial)]


def _decode(idx, tile, tiles):
    """Row-major (tile index, offset) of a permuted sequence position -> in-group coordinates."""
    volume = int(math.prod(tile))
    t_lin, o_lin = idx // volume, idx % volume
    # Built by append (no item assignment): torch's flex_attention traces mask_mod with Dynamo.
    coords = []
    for i in reversed(range(len(tile))):
        coords.append((t_lin % tiles[i]) * tile[i] + o_lin % tile[i])
        t_lin, o_lin = t_lin // tiles[i], o_lin // tile[i]
    return coords[::-1]


def permuted_mask_mod(spatial, params, q_tile, kv_tile, n_kv):
    kernel_size, stride, dilation, is_causal = params
    rank = len(spatial)
    q_tiles = [_group_extent(e, t, d) // t for e, t, d in zip(spatial, q_tile, dilation)]
    kv_tiles = [_group_extent(e, t, d) // t for e, t, d in zip(spatial, kv_tile, dilation)]

    def mask_mod(b, h, q_idx, kv_idx):
        g_lin = b % int(math.prod(dilation))
        groups = []
        for i in reversed(range(rank)):
            groups.append(g_lin % dilation[i])
            g_lin = g_lin // dilation[i]
        groups = groups[::-1]
        qc = _decode(q_idx, q_tile, q_tiles)
        kc = _decode(kv_idx, kv_tile, kv_tiles)
        ok = None
        q_pad = None
        for i in range(rank):
            extent = (spatial[i] - groups[i] + dilation[i] - 1) // dilation[i]  # this group's true extent
            term = _axis_ok(qc[i], kc[i], extent, kernel_size[i], stride[i], 1, is_causal[i])
            ok = term if ok is None else ok & term
            outside = qc[i] >= extent
            q_pad = outside if q_pad is None else q_pad | outside
        # Padding query rows (discarded) attend the group's first key so that no row is empty.
        return ok | (kv_idx >= n_kv) | (q_pad & (kv_idx == 0))

    return mask_mod


def _na_permuted(q, k, v, ak, av, params, scale, torch_compile, need_lse, q_tile, kv_tile):
    from torch.nn.attention.flex_attention import create_block_mask

    kernel_size, stride, dilation, is_causal = params
    spatial = tuple(q.shape[1:-2])
    groups = int(math.prod(dilation))
    qp = permute_tokens(q, q_tile, dilation)
    kp, vp = permute_tokens(k, kv_tile, dilation), permute_tokens(v, kv_tile, dilation)
    n_kv = kp.shape[1]
    if ak is not None:
        kp = torch.cat([kp, ak.repeat_interleave(groups, 0)], 1)
        vp = torch.cat([vp, av.repeat_interleave(groups, 0)], 1)
    mask_mod = permuted_mask_mod(spatial, params, q_tile, kv_tile, n_kv)
    q_block, kv_block = int(math.prod(q_tile)), int(math.prod(kv_tile))
    mask_batch = qp.shape[0] if groups > 1 else None
    key = ("tiled", spatial, tuple(map(tuple, params)), q_tile, kv_tile, mask_batch, qp.shape[1], kp.shape[1], n_kv,
           str(q.device))
    block_mask = _cached_block_mask(key, lambda: create_block_mask(
        mask_mod, mask_batch, None, qp.shape[1], kp.shape[1], device=q.device, BLOCK_SIZE=(q_block, kv_block)))
    kernel_options = {"BLOCK_M": q_block, "BLOCK_N": kv_block} if torch_compile else None
    out, lse = _run_blocks(qp, kp, vp, block_mask, scale, torch_compile, need_lse, kernel_options)
    out = unpermute_tokens(out, spatial, q_tile, dilation)
    if lse is not None:
        lse = unpermute_tokens(lse.unsqueeze(-1), spatial, q_tile, dilation).squeeze(-1)
    return out, lse


def fmha(q, k, v, is_causal, scale, varlen, torch_compile, need_lse=True):
    if is_causal:
        raise NotImplementedError("flex-fmha does not support causal attention (use cpu, reference or cutlass-fmha)")
    if varlen:
        raise NotImplementedError("flex-fmha does not support variable-length attention")
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    _check("flex-fmha", q, torch_compile, requires_grad)
    return _run(q, k, v, None, q.shape[1], k.shape[1], scale, torch_compile, need_lse)
