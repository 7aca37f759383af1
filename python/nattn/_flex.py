"""The flex backends (``flex-fna``, ``flex-fmha``): PyTorch's flex_attention with the exact
neighborhood mask of shared/spec/semantics.md, on any device flex_attention supports (CPU and
CUDA), eager or compiled; backward through flex_attention's own autograd where torch has one
(CUDA; torch's flex_attention has no CPU backward).

Additional keys/values are appended to the key sequence and left unmasked, so they share the one
softmax. Tile shapes are checked for form only: the mask is applied on the flat row-major
sequence (block size 128), without token permutation."""

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


def _run(q, k, v, mask_mod, q_len, kv_len, scale, torch_compile, need_lse):
    """q [B, Nq, H, D], k/v [B, Nkv, Hkv, D] -> out [B, Nq, H, Dv], lse [B, Nq, H] float32 (None
    unless need_lse: compiled flex on CPU cannot return it)."""
    from torch.nn.attention.flex_attention import create_block_mask

    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    block_mask = None
    if mask_mod is not None:
        block_mask = create_block_mask(mask_mod, None, None, q_len, kv_len, device=q.device)
    fn = _flex_fn(torch_compile)
    gqa = q.shape[2] != k.shape[2]
    if not need_lse:
        return fn(qt, kt, vt, block_mask=block_mask, scale=scale, enable_gqa=gqa).transpose(1, 2), None
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9: the older return_lse flag
        out, lse = fn(qt, kt, vt, block_mask=block_mask, scale=scale, enable_gqa=gqa, return_lse=True)
    else:
        out, aux = fn(qt, kt, vt, block_mask=block_mask, scale=scale, enable_gqa=gqa, return_aux=AuxRequest(lse=True))
        lse = aux.lse
    return out.transpose(1, 2), lse.transpose(1, 2).float()


def na(q, k, v, ak, av, params, scale, torch_compile, need_lse=True):
    requires_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, ak, av))
    _check("flex-fna", q, torch_compile, requires_grad)
    kernel_size, stride, dilation, is_causal = params
    batch, spatial, heads = q.shape[0], tuple(q.shape[1:-2]), q.shape[-2]
    n = int(math.prod(spatial))
    qf = q.reshape(batch, n, heads, q.shape[-1])
    kf = k.reshape(batch, n, k.shape[-2], k.shape[-1])
    vf = v.reshape(batch, n, v.shape[-2], v.shape[-1])
    if ak is not None:
        kf, vf = torch.cat([kf, ak], 1), torch.cat([vf, av], 1)
    mask_mod = na_mask_mod(spatial, kernel_size, stride, dilation, is_causal, n)
    out, lse = _run(qf, kf, vf, mask_mod, n, kf.shape[1], scale, torch_compile, need_lse)
    out = out.reshape(batch, *spatial, heads, v.shape[-1])
    return out, (lse.reshape(batch, *spatial, heads) if lse is not None else None)


def fmha(q, k, v, is_causal, scale, varlen, torch_compile, need_lse=True):
    if is_causal:
        raise NotImplementedError("flex-fmha does not support causal attention (use cpu, reference or cutlass-fmha)")
    if varlen:
        raise NotImplementedError("flex-fmha does not support variable-length attention")
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    _check("flex-fmha", q, torch_compile, requires_grad)
    return _run(q, k, v, None, q.shape[1], k.shape[1], scale, torch_compile, need_lse)
