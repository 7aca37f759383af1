"""nattn's CUDA backends side by side with PyTorch, in ONE process on the same GPU: the problems of
shared/design/anchors.md §8 (bf16, head dim 128, batch 1).

Rows: nattn `cutlass-fna` NA forward and forward+backward (through the Python package, built with
CUDA), flex_attention (compiled) with the exact neighborhood mask_mod (plain layout, 128x128
sparse blocks), and on the problems small enough for dense attention nattn `cutlass-fmha` against
PyTorch SDPA's flash and cuDNN backends. Median of N timed calls after warm-ups (CUDA events).
Effective TFLOP/s counts useful work only: forward 4*N*window*d*heads (dense: window = N),
forward+backward 3.5x that (as in anchors.md).

    python3 bench/cuda/bench_vs_torch.py [--quick] [--no-flex] [--only NAME-SUBSTRING]
    python3 bench/cuda/bench_vs_torch.py --head-dims   # hopper-fmha vs SDPA at head dims 32-256

--head-dims runs only a forward sweep of dense attention over head dims 32, 64, 128, 256 (1-D
16384 tokens, heads * head dim = 2048 so every row does the same FLOPs): hopper-fmha, SDPA flash
and SDPA cuDNN, each timed right after the others.
"""
import argparse
import math
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import nattn
from nattn import _flex

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import fwd_bwd, median_ms  # noqa: E402  (bench/cuda_timing.py)

PROBLEMS = [
    # name, spatial, window, heads, dense baselines
    ("2D 128x128 k13x13, 16 heads", (128, 128), (13, 13), 16, True),
    ("1D 32768 k2048, 16 heads", (32768,), (2048,), 16, True),
    ("2D 256x256 k32x32, 24 heads", (256, 256), (32, 32), 24, True),
    ("3D 16x44x80 k8x16x24, 16 heads", (16, 44, 80), (8, 16, 24), 16, False),
    ("3D 30x48x80 k18x24x24, 24 heads", (30, 48, 80), (18, 24, 24), 24, False),
]
NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}


def timed(fn, runs, warmup):
    return median_ms(fn, runs, warmup)


def head_dim_sweep(runs):
    n = 16384
    print("| head dim | heads | method | fwd ms | fwd TFLOP/s |")
    print("|---|---|---|---|---|")
    for d in (32, 64, 128, 256):
        heads = 2048 // d
        flops = 4 * n * n * d * heads
        g = torch.Generator(device="cuda").manual_seed(d)
        q, k, v = (torch.randn((1, n, heads, d), device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        methods = [("nattn hopper-fmha", lambda: nattn.attention(q, k, v, backend="hopper-fmha"), None)]
        for label, backend in (("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
            methods.append((label, lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt), backend))
        for label, fn, backend in methods:
            try:
                with torch.no_grad():
                    if backend is None:
                        ms = timed(fn, runs, 3)
                    else:
                        with sdpa_kernel(backend):
                            ms = timed(fn, runs, 3)
            except (RuntimeError, NotImplementedError) as e:
                print(f"| {d} | {heads} | {label} | not run: {str(e).splitlines()[0]} | |", flush=True)
                continue
            print(f"| {d} | {heads} | {label} | {ms:.3f} | {flops / (ms * 1e-3) / 1e12:.0f} |", flush=True)
        del q, k, v, qt, kt, vt
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer timed runs")
    ap.add_argument("--no-flex", action="store_true", help="skip flex_attention (its compile takes minutes)")
    ap.add_argument("--only", default="", help="run problems whose name contains this")
    ap.add_argument("--no-hopper", action="store_true", help="skip the hopper-fna rows")
    ap.add_argument("--head-dims", action="store_true", help="only the dense head-dim sweep (see above)")
    args = ap.parse_args()
    if args.head_dims:
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, nattn {nattn.__version__}")
        return head_dim_sweep(5 if args.quick else 10)
    # hopper-fna tile shapes timed per rank (each Q and KV tile of 128 tokens)
    args.hopper_tiles = {} if args.no_hopper else {1: [(128,)], 2: [(16, 8), (8, 16)],
                                                    3: [(8, 4, 4), (4, 4, 8), (2, 8, 8)]}
    runs = 5 if args.quick else 10
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, nattn {nattn.__version__}")
    print("| problem | method | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---|---|---|---|")
    flex = None
    if not args.no_flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
    for name, spatial, window, heads, dense in PROBLEMS:
        if args.only and args.only not in name:
            continue
        n = math.prod(spatial)
        d = 128
        na_flops = 4 * n * math.prod(window) * d * heads
        dense_flops = 4 * n * n * d * heads
        g = torch.Generator(device="cuda").manual_seed(0)
        shape = (1, *spatial, heads, d)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                   for _ in range(3))
        dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        slow = n * math.prod(window) * heads > 5e10  # the big 3-D problem: fewer repetitions
        r, w = (3, 1) if slow else (runs, 3)

        def row(method, f_ms, fb_ms, flops):
            fb = f"{fb_ms:.2f} | {3.5 * flops / (fb_ms * 1e-3) / 1e12:.0f}" if fb_ms else "- | -"
            print(f"| {name} | {method} | {f_ms:.2f} | {flops / (f_ms * 1e-3) / 1e12:.0f} | {fb} |", flush=True)

        na = NA[len(spatial)]
        f = lambda: na(q, k, v, window, backend="cutlass-fna")
        with torch.no_grad():
            f_ms = timed(f, r, w)
        fb_ms = timed(fwd_bwd(f, (q, k, v), dout), r, w)
        row("nattn cutlass-fna", f_ms, fb_ms, na_flops)
        # hopper-fna (sm_90a forward; direct mode on these contiguous tensors, no permutation; bwd on
        # cutlass-fna): the default config (first of the problem-ranked list), then fixed tile shapes
        hopper = [None] + args.hopper_tiles.get(len(spatial), []) if args.hopper_tiles else []
        for tile in hopper:
            kw = {} if tile is None else dict(q_tile_shape=tile, kv_tile_shape=tile)
            fh = lambda: na(q, k, v, window, backend="hopper-fna", **kw)
            try:
                with torch.no_grad():
                    f_ms = timed(fh, r, w)
                row("nattn hopper-fna default config" if tile is None else f"nattn hopper-fna tile {tile}", f_ms, None,
                    na_flops)
            except NotImplementedError as e:
                print(f"| {name} | nattn hopper-fna | not run: {str(e).splitlines()[0]} | | | |")

        if flex is not None and len(spatial) == 3:
            mask_mod = _flex.na_mask_mod(spatial, window, (1,) * len(spatial), (1,) * len(spatial),
                                         (False,) * len(spatial), n)
            bm = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
            qt, kt, vt = (t.detach().flatten(1, -3).transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
            dt = dout.flatten(1, -3).transpose(1, 2).contiguous()
            ff = lambda: flex(qt, kt, vt, block_mask=bm)
            with torch.no_grad():
                f_ms = timed(ff, r, w)
            fb_ms = timed(fwd_bwd(ff, (qt, kt, vt), dt), r, w)
            row("flex_attention NA mask (compiled)", f_ms, fb_ms, na_flops)
            del qt, kt, vt, bm

        if dense:
            qf, kf, vf = (t.detach().flatten(1, -3).requires_grad_() for t in (q, k, v))
            df = dout.flatten(1, -3)
            fa = lambda: nattn.attention(qf, kf, vf, backend="cutlass-fmha")
            with torch.no_grad():
                f_ms = timed(fa, r, w)
            fb_ms = timed(fwd_bwd(fa, (qf, kf, vf), df), r, w)
            row("nattn cutlass-fmha (dense)", f_ms, fb_ms, dense_flops)
            # hopper-fmha (sm_90a forward; its backward runs on cutlass-fmha), when built and on SM90
            fh = lambda: nattn.attention(qf, kf, vf, backend="hopper-fmha")
            try:
                with torch.no_grad():
                    f_ms = timed(fh, r, w)
                fb_ms = timed(fwd_bwd(fh, (qf, kf, vf), df), r, w)
                row("nattn hopper-fmha (dense; bwd cutlass)", f_ms, fb_ms, dense_flops)
            except NotImplementedError as e:
                print(f"| {name} | nattn hopper-fmha | not run: {str(e).splitlines()[0]} | | | |")
            qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (qf, kf, vf))
            dt = df.transpose(1, 2).contiguous()
            for label, backend in (("SDPA flash (dense)", SDPBackend.FLASH_ATTENTION),
                                   ("SDPA cuDNN (dense)", SDPBackend.CUDNN_ATTENTION)):
                with sdpa_kernel(backend):
                    fs = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
                    try:
                        with torch.no_grad():
                            f_ms = timed(fs, r, w)
                        fb_ms = timed(fwd_bwd(fs, (qt, kt, vt), dt), r, w)
                    except RuntimeError as e:
                        print(f"| {name} | {label} | failed: {str(e).splitlines()[0]} | | | |")
                        continue
                row(label, f_ms, fb_ms, dense_flops)
            del qf, kf, vf, qt, kt, vt
        del q, k, v, dout
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
