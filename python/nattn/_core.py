"""Calls into nattn._C with arrays of any supported framework and caller-allocated outputs.

NumPy arrays and CPU torch tensors go to the extension as they are (DLPack / buffer protocol).
CUDA torch tensors are exported with ``__dlpack__(stream=-1)`` (no producer-side stream sync: the
op runs on the stream passed explicitly, the current torch stream of the tensor's device)."""

import numpy as np

from ._args import is_torch
from ._lib import require_lib


def head_contiguous(x):
    """The core needs a contiguous head dim (last stride 1); everything else may be strided."""
    if x is None:
        return None
    if is_torch(x):
        if x.dim() > 0 and x.shape[-1] > 1 and x.stride(-1) != 1:
            return x.contiguous()
        return x
    if x.ndim > 0 and x.shape[-1] > 1 and x.strides[-1] != x.itemsize:
        return np.ascontiguousarray(x)
    return x


def _dl(x):
    if x is None:
        return None
    if is_torch(x):
        if x.requires_grad:  # DLPack refuses tensors that require grad (inside the ops none do)
            x = x.detach()
        if x.is_cuda:
            # torch.utils.dlpack.to_dlpack: the capsule __dlpack__(stream=-1) returns (no stream
            # synchronisation: the op runs on the stream passed explicitly) without __dlpack__'s
            # Python-level argument handling: 5.2 -> 0.6 us per tensor (H100 machine, torch 2.11).
            from torch.utils.dlpack import to_dlpack

            return to_dlpack(x)
    return x


def _stream_and_threads(x):
    """(cuda stream handle, CPU thread count) for the tensors' device."""
    if is_torch(x):
        import torch

        if x.device.type == "cuda":
            # The raw handle of the current stream without building a torch.cuda.Stream object
            # (0.2 vs 5.7 us); the public call where this torch lacks the binding.
            raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
            if raw is not None:
                return raw(x.device.index), 0
            return torch.cuda.current_stream(x.device).cuda_stream, 0
        return 0, torch.get_num_threads()
    return 0, 0


class _DeviceGuard:
    """Makes the tensor's GPU current for the call (entered only when another one is: 3.7 us)."""

    def __init__(self, x):
        self.ctx = None
        if is_torch(x) and x.device.type == "cuda":
            import torch

            if x.device.index != torch.cuda.current_device():
                self.ctx = torch.cuda.device(x.device)

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


def _sub_domain_kwargs(sub_domain):
    """sub_domain: None or (global_extent, q_origin, kv_origin), one entry per axis each."""
    if sub_domain is None:
        return {}
    global_extent, q_origin, kv_origin = sub_domain
    return dict(global_extent=[int(x) for x in global_extent], q_origin=[int(x) for x in q_origin],
                kv_origin=[int(x) for x in kv_origin])


def na_forward(q, k, v, out, lse, add_k, add_v, params, scale, backend="", q_tile=(), kv_tile=(), schedule="",
               deterministic=True, requires_grad=False, sub_domain=None):
    lib = require_lib()
    kernel_size, stride, dilation, is_causal = params
    stream, threads = _stream_and_threads(q)
    with _DeviceGuard(q):
        lib.na_forward(
            _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse), _dl(add_k), _dl(add_v),
            list(kernel_size), list(stride), list(dilation), list(is_causal), scale,
            backend, list(q_tile), list(kv_tile), schedule, threads, stream, deterministic, requires_grad,
            **_sub_domain_kwargs(sub_domain),
        )


def na_backward(q, k, v, out, lse, dout, dq, dk, dv, add_k, add_v, dadd_k, dadd_v, params, scale, backend="",
                q_tile=(), kv_tile=(), deterministic=True, sub_domain=None):
    lib = require_lib()
    kernel_size, stride, dilation, is_causal = params
    stream, threads = _stream_and_threads(q)
    with _DeviceGuard(q):
        lib.na_backward(
            _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse), _dl(dout), _dl(dq), _dl(dk), _dl(dv),
            _dl(add_k), _dl(add_v), _dl(dadd_k), _dl(dadd_v),
            list(kernel_size), list(stride), list(dilation), list(is_causal), scale,
            backend, list(q_tile), list(kv_tile), threads, stream, deterministic,
            **_sub_domain_kwargs(sub_domain),
        )


def fmha_forward(q, k, v, out, lse, is_causal, scale, cu_q=None, cu_kv=None, max_q=0, max_kv=0, backend="",
                 q_tile=(), kv_tile=(), schedule="", deterministic=True, requires_grad=False):
    lib = require_lib()
    stream, threads = _stream_and_threads(q)
    with _DeviceGuard(q):
        lib.fmha_forward(
            _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse), is_causal, scale, _dl(cu_q), _dl(cu_kv),
            int(max_q), int(max_kv), backend, list(q_tile), list(kv_tile), schedule, threads, stream,
            deterministic, requires_grad,
        )


def fmha_backward(q, k, v, out, lse, dout, dq, dk, dv, is_causal, scale, cu_q=None, cu_kv=None, max_q=0, max_kv=0,
                  backend="", q_tile=(), kv_tile=(), deterministic=True):
    lib = require_lib()
    stream, threads = _stream_and_threads(q)
    with _DeviceGuard(q):
        lib.fmha_backward(
            _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse), _dl(dout), _dl(dq), _dl(dk), _dl(dv), is_causal, scale,
            _dl(cu_q), _dl(cu_kv), int(max_q), int(max_kv), backend, list(q_tile), list(kv_tile), threads,
            stream, deterministic,
        )


def merge_attentions(outputs, lses, out, lse):
    lib = require_lib()
    _, threads = _stream_and_threads(outputs[0])
    lib.merge_attentions([_dl(o) for o in outputs], [_dl(x) for x in lses], _dl(out), _dl(lse), threads)
