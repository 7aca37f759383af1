"""Argument checks shared by the NumPy and PyTorch paths (NATTEN 0.21's rules, minus its quirks:
bools are never integers, scale=0.0 is a real scale, na1d/na2d/na3d check the tensor rank).
Every error names the argument, its value and what is allowed."""

import math
import numbers
import sys

import numpy as np

# ---- arrays of either framework ----------------------------------------------------------------


_TORCH_TENSOR = None  # torch.Tensor once torch is imported (nattn never imports it itself)


def is_torch(x) -> bool:
    global _TORCH_TENSOR
    if _TORCH_TENSOR is None:  # called on every op argument: look torch up until it is loaded
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        _TORCH_TENSOR = torch.Tensor
    return isinstance(x, _TORCH_TENSOR)


def is_numpy(x) -> bool:
    return isinstance(x, np.ndarray)


def as_supported(name, x):
    """Other DLPack producers on the CPU (JAX, CuPy host arrays, ...) are viewed as NumPy arrays
    (no copy); the results then come back as NumPy arrays."""
    if x is None or is_torch(x) or is_numpy(x) or not hasattr(x, "__dlpack__"):
        return x
    try:
        return np.from_dlpack(x)
    except Exception as e:
        raise ValueError(
            f"{name} ({type(x).__module__}.{type(x).__name__}) could not be viewed as a CPU NumPy array ({e}); "
            "device arrays of other frameworks can be passed to nattn._C with caller-allocated outputs"
        ) from None


def framework_of(name, x):
    if is_torch(x):
        return "torch"
    if is_numpy(x):
        return "numpy"
    raise ValueError(
        f"{name} must be a torch.Tensor or a numpy.ndarray (got {type(x).__module__}.{type(x).__name__}); "
        "other DLPack arrays can use nattn._C directly"
    )


def dtype_name(x) -> str:
    if is_numpy(x):
        return str(x.dtype)
    return str(x.dtype).replace("torch.", "")


def device_name(x) -> str:
    if is_numpy(x):
        return "cpu"
    return str(x.device)


def check_same_framework(named):
    """named: list of (name, array or None). Returns 'torch' or 'numpy'."""
    kinds = {}
    for name, x in named:
        if x is not None:
            kinds[name] = framework_of(name, x)
    values = set(kinds.values())
    if len(values) > 1:
        desc = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise ValueError(f"all tensors must come from one framework (got {desc})")
    return values.pop() if values else "numpy"


def check_layout_flags(named):
    """Sparse and nested torch tensors are not supported (NotImplementedError)."""
    for name, x in named:
        if x is None or is_numpy(x):
            continue
        import torch  # x is a torch tensor here

        # A plain comparison (no repr/str of the layout): torch.compile must be able to trace it.
        if getattr(x, "is_sparse", False) or x.layout != torch.strided:
            raise NotImplementedError(f"{name} has layout {x.layout}; only dense (strided) tensors are supported")
        if getattr(x, "is_nested", False):
            raise NotImplementedError(f"{name} is a nested tensor; only dense tensors are supported")


def check_same_device_dtype(q, named):
    q_torch = is_torch(q)
    for name, x in named:
        if x is None:
            continue
        # torch devices and dtypes compare directly; their names are built for an error only.
        if q_torch and is_torch(x) and x.device == q.device and x.dtype == q.dtype:
            continue
        if device_name(x) != device_name(q):
            raise ValueError(
                f"{name} is on {device_name(x)} but query is on {device_name(q)} (all tensors must be on one device)"
            )
        if dtype_name(x) != dtype_name(q):
            raise ValueError(
                f"{name} has dtype {dtype_name(x)} but query has {dtype_name(q)} (query, key and value must share a dtype)"
            )


# float64 runs on the `reference` backend only (e.g. for torch.autograd.gradcheck); the core says so
# when another backend is asked for.
_FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def check_float_dtype(q):
    if dtype_name(q) not in _FLOAT_DTYPES:
        raise ValueError(f"query has dtype {dtype_name(q)} (allowed: float32, float16, bfloat16; float64 on the "
                         "reference backend)")


def lse_dtype_name(q):
    """The LSE is float32, except next to float64 inputs."""
    return "float64" if dtype_name(q) == "float64" else "float32"


# ---- NA tensors ---------------------------------------------------------------------------------


def check_na_tensors(query, key, value, na_dim=None):
    """Shapes of Q/K/V for NA: returns na_dim. na_dim given (na1d/na2d/na3d): the rank must match."""
    qd = query.ndim
    if na_dim is not None and qd != na_dim + 3:
        raise ValueError(
            f"na{na_dim}d expects {na_dim + 3}-D tensors [batch, {', '.join('XYZ'[:na_dim])}, heads, head_dim] "
            f"(got query of shape {tuple(query.shape)}, a {qd}-D tensor)"
        )
    if qd not in (4, 5, 6):
        raise ValueError(
            "query must be a 4-D, 5-D or 6-D tensor [batch, *spatial, heads, head_dim] "
            f"(got shape {tuple(query.shape)})"
        )
    if key.ndim != qd or value.ndim != qd:
        raise ValueError(
            f"query, key and value must have the same rank (got shapes {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)})"
        )
    qs, ks, vs = tuple(query.shape), tuple(key.shape), tuple(value.shape)
    if ks[:-2] != qs[:-2] or vs[:-2] != qs[:-2]:
        raise ValueError(
            f"key and value must match query in batch and token layout (got query {qs}, key {ks}, value {vs}); "
            "neighborhood attention is self-attention: use additional_keys/values for extra tokens"
        )
    _check_heads(qs, ks, vs)
    return qd - 3


def _check_heads(qs, ks, vs):
    if ks[-1] != qs[-1]:
        raise ValueError(f"query and key must have the same head_dim (got {qs[-1]} and {ks[-1]})")
    if ks[-2] != vs[-2]:
        raise ValueError(f"key and value must have the same number of heads (got {ks[-2]} and {vs[-2]})")
    h, hkv = qs[-2], ks[-2]
    if hkv < 1 or h < hkv or h % hkv != 0:
        raise ValueError(
            f"query heads must be a multiple of key/value heads (got heads={h}, heads_kv={hkv}; "
            "allowed: heads % heads_kv == 0 (GQA/MQA))"
        )


def check_fmha_tensors(query, key, value):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.ndim != 4:
            raise ValueError(
                f"{name} must be a 4-D tensor [batch, seqlen, heads, head_dim] (got shape {tuple(t.shape)})"
            )
    qs, ks, vs = tuple(query.shape), tuple(key.shape), tuple(value.shape)
    if ks[0] != qs[0] or vs[0] != qs[0]:
        raise ValueError(f"query, key and value must have the same batch (got {qs}, {ks}, {vs})")
    if ks[1] != vs[1]:
        raise ValueError(f"key and value must have the same sequence length (got {ks[1]} and {vs[1]})")
    _check_heads(qs, ks, vs)


def check_additional_kv(query, key, value, additional_keys, additional_values):
    if (additional_keys is None) != (additional_values is None):
        given = "additional_keys" if additional_keys is not None else "additional_values"
        raise ValueError(f"additional_keys and additional_values must be given together (got only {given})")
    if additional_keys is None:
        return 0
    ak, av = additional_keys, additional_values
    if ak.ndim != 4 or av.ndim != 4:
        raise ValueError(
            "additional_keys/additional_values must be 4-D [batch, tokens, heads_kv, head_dim] "
            f"(got shapes {tuple(ak.shape)} and {tuple(av.shape)})"
        )
    b, hkv, d, dv = key.shape[0], key.shape[-2], key.shape[-1], value.shape[-1]
    n = ak.shape[1]
    if tuple(ak.shape) != (b, n, hkv, d):
        raise ValueError(
            f"additional_keys must have shape [batch={b}, tokens, heads_kv={hkv}, head_dim={d}] "
            f"(got {tuple(ak.shape)})"
        )
    if tuple(av.shape) != (b, n, hkv, dv):
        raise ValueError(
            f"additional_values must have shape [batch={b}, tokens={n}, heads_kv={hkv}, head_dim_v={dv}] "
            f"(got {tuple(av.shape)})"
        )
    return n


# ---- NA parameters ------------------------------------------------------------------------------


def _is_int(x) -> bool:
    if type(x) is int:  # the common case without the ABC check (~0.5 us each, several per call)
        return True
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _is_bool(x) -> bool:
    return type(x) is bool or isinstance(x, (bool, np.bool_))


def normalize_int_tuple(name, value, na_dim, minimum, default=None):
    """An int (repeated per axis) or a list/tuple of na_dim ints, each >= minimum."""
    if value is None and default is not None:
        value = default
    if type(value) is tuple and len(value) == na_dim and all(type(v) is int and v >= minimum for v in value):
        return value  # already normalized (plain ints): every call of the ops passes through here
    allowed = f"an int >= {minimum} or a tuple of {na_dim} ints >= {minimum}"
    if _is_int(value):
        out = (int(value),) * na_dim
    elif isinstance(value, (list, tuple)):
        if len(value) != na_dim or not all(_is_int(v) for v in value):
            raise ValueError(f"{name}={value!r} is not valid for {na_dim}-D neighborhood attention (allowed: {allowed})")
        out = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{name}={value!r} is not valid (allowed: {allowed}; bools are not ints)")
    if any(v < minimum for v in out):
        raise ValueError(f"{name}={value!r} is not valid (allowed: {allowed})")
    return out


def normalize_causal(value, na_dim):
    allowed = f"a bool or a tuple of {na_dim} bools"
    if value is None:
        return (False,) * na_dim
    if _is_bool(value):
        return (bool(value),) * na_dim
    if isinstance(value, (list, tuple)) and len(value) == na_dim and all(_is_bool(v) for v in value):
        return tuple(bool(v) for v in value)
    raise ValueError(f"is_causal={value!r} is not valid (allowed: {allowed}; ints such as 0/1 are not bools)")


def normalize_na_params(na_dim, kernel_size, stride, dilation, is_causal):
    k = normalize_int_tuple("kernel_size", kernel_size, na_dim, 2)
    s = normalize_int_tuple("stride", stride, na_dim, 1, default=1)
    d = normalize_int_tuple("dilation", dilation, na_dim, 1, default=1)
    c = normalize_causal(is_causal, na_dim)
    return k, s, d, c


def check_params_vs_input(spatial, kernel_size, stride, dilation):
    for i, (x, k, s, d) in enumerate(zip(spatial, kernel_size, stride, dilation)):
        if k * d > x:
            raise ValueError(
                f"kernel_size * dilation must not exceed the input extent on axis {i} (got kernel_size={k} * "
                f"dilation={d} = {k * d} > {x}; input token layout {tuple(spatial)})"
            )
        if s > k:
            raise ValueError(
                f"stride must not exceed kernel_size on axis {i} (got stride={s} > kernel_size={k})"
            )


def check_scale(scale, head_dim):
    """None -> head_dim ** -0.5. 0.0 is a real scale (NATTEN treats it as unset)."""
    if scale is None:
        return float(head_dim) ** -0.5
    if _is_bool(scale) or not isinstance(scale, numbers.Real):
        raise ValueError(f"scale={scale!r} is not valid (allowed: None or a finite real number)")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale={scale!r} is not valid (allowed: None or a finite real number)")
    return scale


def normalize_tile(name, value, na_dim):
    """None -> (); an int or a sequence of ints >= 1 of length na_dim."""
    if value is None:
        return ()
    if _is_int(value) and na_dim == 1:
        value = (value,)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != na_dim
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise ValueError(f"{name}={value!r} is not valid (allowed: None or a tuple of {na_dim} positive ints)")
    return tuple(int(v) for v in value)


def normalize_tile_pair(q_name, kv_name, q_value, kv_value, na_dim, backend):
    """NATTEN requires both tiles of a pair or neither. The cpu backend has no KV tile, so a query
    tile alone is accepted there."""
    q = normalize_tile(q_name, q_value, na_dim)
    kv = normalize_tile(kv_name, kv_value, na_dim)
    if kv and not q:
        raise ValueError(f"{kv_name} was given without {q_name}; give both or neither")
    if q and not kv and backend != "cpu":
        raise ValueError(f"{q_name} was given without {kv_name}; give both or neither")
    return q, kv


def check_bool(name, value):
    if not _is_bool(value):
        raise ValueError(f"{name}={value!r} is not valid (allowed: True or False)")
    return bool(value)


def check_backend(name, value):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is not valid (allowed: None or a backend name string)")
    return value


def check_kv_splits(value, na_dim):
    """backward_kv_splits: accepted for compatibility (CUDA backends decide splits themselves)."""
    if value is None:
        return None
    return normalize_int_tuple("backward_kv_splits", value, na_dim, 1)


# NA backend names -> the FMHA backend of the same family (self-attention fast path).
def fmha_backend_for(na_backend: str) -> str:
    if na_backend.endswith("-fna"):
        return na_backend[: -len("-fna")] + "-fmha"
    return na_backend
