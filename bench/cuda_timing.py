"""Timing helper shared by the PyTorch-side benchmarks (bench/cuda/*.py, bench/dist/*.py): the
median of `runs` calls after `warmup` calls, each timed with CUDA events on the current stream and
synchronised (so a call's host time up to its last kernel launch is included)."""

import torch


def median_ms(fn, runs=5, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]
