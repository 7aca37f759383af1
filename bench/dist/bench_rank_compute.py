"""Per-rank compute of multi-GPU NA on ONE GPU (issue 6): the 2-way strong split of the video problem
(30x48x80, window 18x24x24, 24 heads, hd 128, bf16), rank 0's half slab against its halo box with
nattn.distributed.na_subdomain: hopper-fna vs cutlass-fna forward (and both against the rows of the
single-domain na3d), automatic forward+backward, and the cost of running it as 1/2/4/8 head chunks
(overlap='heads'). No communication: what a rank computes, measured where only one GPU is lent.

    PYTHONPATH=<nattn with CUDA> python3 bench/dist/bench_rank_compute.py
"""

import os
import sys

import torch

import nattn
from nattn import distributed as nd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import median_ms  # noqa: E402  (bench/cuda_timing.py)

GLOBAL = (30, 48, 80)
WINDOW = (18, 24, 24)
HEADS, HEAD_DIM = 24, 128


def randn(shape):
    return torch.randn(shape, device="cuda", dtype=torch.bfloat16)


def half_slab(axis):
    """Rank 0 of a 2-way split along `axis`: query box [lo, hi) and its halo box."""
    lo, hi = [0, 0, 0], list(GLOBAL)
    hi[axis] = GLOBAL[axis] // 2
    h_lo, h_hi = nd.halo_box(lo, hi, GLOBAL, WINDOW)
    return lo, hi, list(h_lo), list(h_hi)


def box(t, lo, hi):
    return t[(slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))].contiguous()


def main():
    torch.manual_seed(0)
    q, k, v = (randn((1,) + GLOBAL + (HEADS, HEAD_DIM)) for _ in range(3))
    print("single-domain na3d fwd %.2f ms" % median_ms(lambda: nattn.na3d(q, k, v, WINDOW)))
    whole = nattn.na3d(q, k, v, WINDOW)
    for axis in (0, 2):
        lo, hi, h_lo, h_hi = half_slab(axis)
        qs, ks, vs = box(q, lo, hi), box(k, h_lo, h_hi), box(v, h_lo, h_hi)
        ref = box(whole, lo, hi).float()
        for backend in ("hopper-fna", "cutlass-fna"):
            def fwd(backend=backend):
                return nd.na_subdomain(qs, ks, vs, WINDOW, GLOBAL, lo, h_lo, backend=backend)
            err = ((fwd().float() - ref).abs().max() / ref.abs().max()).item()
            print("axis %d slab %s halo %s %-11s fwd %.2f ms (max|o - na3d| / max|na3d| = %.2e)"
                  % (axis, tuple(b - a for a, b in zip(lo, hi)), tuple(b - a for a, b in zip(h_lo, h_hi)),
                     backend, median_ms(fwd), err))
        leaves = [x.detach().requires_grad_() for x in (qs, ks, vs)]

        def fwd_bwd():
            o = nd.na_subdomain(*leaves, WINDOW, GLOBAL, lo, h_lo)
            o.backward(torch.ones_like(o))

        print("   automatic fwd+bwd %.2f ms" % median_ms(fwd_bwd, 3))

    # The head-chunk pipeline's cost: the axis-0 half slab as n chunks of HEADS / n heads.
    lo, hi, h_lo, h_hi = half_slab(0)
    qs, ks, vs = box(q, lo, hi), box(k, h_lo, h_hi), box(v, h_lo, h_hi)
    for n in (1, 2, 4, 8):
        c = HEADS // n
        chunks = [slice(i * c, (i + 1) * c) for i in range(n)]
        kc = [ks[..., h, :].contiguous() for h in chunks]
        vc = [vs[..., h, :].contiguous() for h in chunks]
        out = torch.empty_like(qs)

        def fwd():
            for i, h in enumerate(chunks):
                out[..., h, :] = nd.na_subdomain(qs[..., h, :], kc[i], vc[i], WINDOW, GLOBAL, lo, h_lo)

        def fwd_bwd():
            for i, h in enumerate(chunks):
                qq, kk, vv = (x.detach().requires_grad_() for x in (qs[..., h, :], kc[i], vc[i]))
                o = nd.na_subdomain(qq, kk, vv, WINDOW, GLOBAL, lo, h_lo)
                o.backward(torch.ones_like(o))

        print("head chunks %d: fwd %.2f ms, fwd+bwd %.2f ms" % (n, median_ms(fwd), median_ms(fwd_bwd, 3)))


if __name__ == "__main__":
    main()
