"""An independent fp64 brute force of shared/spec/semantics.md, in NumPy (no nattn code): the
neighborhood mask and dense masked attention, for checking results through the Python API."""

import numpy as np


def axis_mask(L, k, s, d, causal):
    """[L, L] bool: query x attends key y on one axis."""
    m = np.zeros((L, L), dtype=bool)
    for x in range(L):
        g, j = x % d, x // d
        lg = (L - g + d - 1) // d
        left = k // 2
        if causal:
            lead = min(s * (j // s) + s - 1, lg - 1)
            start, end = max(lead - k + 1, 0), min(j + 1, lg)
        else:
            lead = min(s * (j // s) + s // 2, lg - 1)
            start = min(max(lead - left, 0), lg - k)
            end = start + k
        for p in range(start, end):
            m[x, g + d * p] = True
    return m


def na_mask(spatial, kernel_size, stride, dilation, is_causal):
    """[N, N] bool over row-major flattened tokens."""
    m = np.ones((1, 1), dtype=bool)
    for L, k, s, d, c in zip(spatial, kernel_size, stride, dilation, is_causal):
        m = np.kron(m, axis_mask(L, k, s, d, c)).astype(bool)
    return m


def dense_attention(q, k, v, mask, scale, add_k=None, add_v=None):
    """q [B, N, H, D], k [B, M, Hkv, D], v [B, M, Hkv, Dv], mask [N, M] -> out, lse (fp64)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    H, Hkv = q.shape[2], k.shape[2]
    if add_k is not None:
        k = np.concatenate([k, np.asarray(add_k, np.float64)], 1)
        v = np.concatenate([v, np.asarray(add_v, np.float64)], 1)
        mask = np.concatenate([mask, np.ones((mask.shape[0], add_k.shape[1]), bool)], 1)
    k = np.repeat(k, H // Hkv, axis=2)
    v = np.repeat(v, H // Hkv, axis=2)
    s = np.einsum("bnhd,bmhd->bhnm", q, k) * scale
    s = np.where(mask[None, None], s, -np.inf)
    mx = s.max(-1, keepdims=True)
    p = np.exp(s - mx)
    z = p.sum(-1, keepdims=True)
    out = np.einsum("bhnm,bmhd->bnhd", p / z, v)
    lse = (np.log(z) + mx)[..., 0].transpose(0, 2, 1)
    return out, lse


def na_reference(q, k, v, kernel_size, stride, dilation, is_causal, scale=None, add_k=None, add_v=None):
    """NA through the dense brute force. q [B, *S, H, D]."""
    B, S, H, D = q.shape[0], q.shape[1:-2], q.shape[-2], q.shape[-1]
    N = int(np.prod(S))
    scale = D ** -0.5 if scale is None else scale
    mask = na_mask(S, kernel_size, stride, dilation, is_causal)
    flat = lambda t: t.reshape(B, N, t.shape[-2], t.shape[-1])
    out, lse = dense_attention(flat(q), flat(k), flat(v), mask, scale, add_k, add_v)
    return out.reshape(B, *S, H, v.shape[-1]), lse.reshape(B, *S, H)


def fmha_reference(q, k, v, is_causal, scale=None):
    N, M = q.shape[1], k.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = np.ones((N, M), bool)
    if is_causal:
        mask = np.arange(M)[None, :] <= np.arange(N)[:, None]
    return dense_attention(q, k, v, mask, scale)
