"""NeighborhoodAttention1D/2D/3D modules (NATTEN 0.21 signatures and weight layout)."""

import torch
from torch import nn

from . import _args
from .functional import neighborhood_attention_generic

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


class _NeighborhoodAttentionND(nn.Module):
    na_dim = 0

    def __init__(self, embed_dim, num_heads, kernel_size, stride=1, dilation=1, is_causal=False, qkv_bias=True,
                 qk_scale=None, proj_drop=0.0):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not _args._is_int(value) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid (allowed: a positive int)")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        (self.kernel_size, self.stride, self.dilation,
         self.is_causal) = _args.normalize_na_params(self.na_dim, kernel_size, stride, dilation, is_causal)
        self.scale = _args.check_scale(qk_scale, self.head_dim)
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=bool(qkv_bias))
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        if x.dim() != self.na_dim + 2:
            raise ValueError(
                f"{type(self).__name__} expects a {self.na_dim + 2}-D input [batch, *spatial, embed_dim] "
                f"(got shape {tuple(x.shape)})")
        if x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"{type(self).__name__}: the input's last dim must be embed_dim={self.embed_dim} "
                f"(got shape {tuple(x.shape)})")
        spatial = x.shape[1:-1]
        qkv = self.qkv(x).reshape(x.shape[0], *spatial, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=-3)
        out = neighborhood_attention_generic(q, k, v, self.kernel_size, self.stride, self.dilation, self.is_causal,
                                             self.scale)
        out = out.reshape(x.shape[0], *spatial, self.embed_dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self):
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, is_causal={self.is_causal}")


class NeighborhoodAttention1D(_NeighborhoodAttentionND):
    na_dim = 1


class NeighborhoodAttention2D(_NeighborhoodAttentionND):
    na_dim = 2


class NeighborhoodAttention3D(_NeighborhoodAttentionND):
    na_dim = 3
