"""Where the per-call time of the cutlass-fna forward goes on the 3-D video problem 16x44x80,
window 8x16x24, 16 heads (bf16, head dim 128; issue 3's hardest target): each call synchronised vs
back-to-back calls, torch.randn vs uniform inputs, `nattn.na3d` vs the bare `_core.na_forward`, the
host time of a call, the kernels alone (torch.profiler), and compiled flex_attention the same ways.

    PYTHONPATH=<nattn package with CUDA> python3 bench/cuda/bench_call_time.py
"""
import math
import os
import statistics
import sys
import time

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.profiler import ProfilerActivity, profile

import nattn
from nattn import _core, _flex

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import calls_ms  # noqa: E402  (bench/cuda_timing.py)

SPATIAL, WINDOW, HEADS, HEAD_DIM = (16, 44, 80), (8, 16, 24), 16, 128


def host_us(fn, runs=11):
    """Median host time of one call (its launches), each call followed by a synchronisation."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize()
    return statistics.median(times)


def kernels_ms(fn, calls=5):
    """The two longest kernels per call, from torch.profiler."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            total[e.name] = total.get(e.name, 0) + e.device_time_total
    top = sorted(total.items(), key=lambda kv: -kv[1])[:2]
    return "; ".join(f"{name[:50]} {us / calls / 1000:.3f} ms" for name, us in top)


def main():
    n = math.prod(SPATIAL)
    shape = (1, *SPATIAL, HEADS, HEAD_DIM)
    g = torch.Generator(device="cuda").manual_seed(0)
    qr, kr, vr = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    qu, ku, vu = (torch.rand(shape, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1 for _ in range(3))
    out = torch.empty_like(qr)
    lse = torch.empty(shape[:-1], device="cuda", dtype=torch.float32)
    params = (WINDOW, (1, 1, 1), (1, 1, 1), (False,) * 3)
    flex = torch.compile(flex_attention, dynamic=False)
    mask_mod = _flex.na_mask_mod(SPATIAL, WINDOW, (1,) * 3, (1,) * 3, (False,) * 3, n)
    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
    qt, kt, vt = (t.flatten(1, -3).transpose(1, 2).contiguous() for t in (qr, kr, vr))
    cases = [
        ("na3d randn", lambda: nattn.na3d(qr, kr, vr, WINDOW, backend="cutlass-fna")),
        ("na3d uniform", lambda: nattn.na3d(qu, ku, vu, WINDOW, backend="cutlass-fna")),
        ("_core.na_forward randn",
         lambda: _core.na_forward(qr, kr, vr, out, lse, None, None, params, HEAD_DIM ** -0.5, "cutlass-fna")),
        ("flex randn", lambda: flex(qt, kt, vt, block_mask=block_mask)),
    ]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, nattn {nattn.__version__}")
    with torch.no_grad():
        for _, fn in cases:
            for _ in range(3):
                fn()
        torch.cuda.synchronize()
        for name, fn in cases:
            synced = statistics.median([calls_ms(fn, 1) for _ in range(11)])
            back_to_back = statistics.median([calls_ms(fn, 10) for _ in range(5)])
            print(f"{name}: synchronised call {synced:.3f} ms, back-to-back {back_to_back:.3f} ms, "
                  f"host {host_us(fn):.0f} us", flush=True)
        for name, fn in cases:
            if not name.startswith("_core"):
                print(f"{name} kernels per call: {kernels_ms(fn)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
