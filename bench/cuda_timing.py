"""Timing helpers shared by the PyTorch-side benchmarks (bench/cuda/*.py, bench/dist/*.py): the
median of `runs` calls after `warmup` calls, each timed with CUDA events on the current stream and
synchronised (so a call's host time up to its last kernel launch is included); calls_ms times
back-to-back calls instead (host time overlapped)."""

import torch


def once_ms(fn):
    """One call of fn, timed with CUDA events on the current stream and synchronised."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def calls_ms(fn, calls):
    """Mean time of `calls` back-to-back calls of fn (one event pair around all of them, then one
    synchronisation): each call's host work overlaps the GPU work queued before it, as in a model's
    step. calls=1 is once_ms."""
    if calls == 1:
        return once_ms(fn)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(calls):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / calls


def median(times):
    times = sorted(times)
    return times[len(times) // 2]


def median_ms(fn, runs=5, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return median([once_ms(fn) for _ in range(runs)])


def fwd_bwd(fn, leaves, dout):
    """A callable that runs fn() and its backward with gradient dout, clearing the leaves' grads first."""
    def run():
        for t in leaves:
            t.grad = None
        fn().backward(dout)
    return run
