"""Issue 3's targets with the two sides called alternately, call by call, so that both see the same
clocks and temperature (bench_vs_torch.py runs its rows one after the other, and the H100 slows
down as it heats): nattn `cutlass-fna` against compiled flex_attention with the exact neighborhood
mask on the two 3-D problems of anchors.md §8 (forward, and forward+backward), and `cutlass-fmha`
against PyTorch SDPA's flash backend (FlashAttention-2) on the dense problems (forward). bf16,
head dim 128, batch 1, torch.randn inputs; medians of the timed pairs.

Two timing methods (--calls): 1 (default) times every call on its own, synchronised, so each
side's host time per call (Python argument handling, launch) is in its number; N > 1 times N
back-to-back calls per sample (the host work of a call overlaps the GPU work queued before it, as
in a model's step): the throughput of repeated calls.

    PYTHONPATH=<nattn package with CUDA> python3 bench/cuda/bench_cutlass_interleaved.py [--pairs 10] [--calls 1] [--only SUBSTR]
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
from cuda_timing import calls_ms, fwd_bwd, median  # noqa: E402  (bench/cuda_timing.py)

NA_PROBLEMS = [("3D 16x44x80 k8x16x24, 16 heads", (16, 44, 80), (8, 16, 24), 16),
               ("3D 30x48x80 k18x24x24, 24 heads", (30, 48, 80), (18, 24, 24), 24)]
DENSE_PROBLEMS = [("dense 16384 tokens, 16 heads", 16384, 16), ("dense 32768 tokens, 16 heads", 32768, 16),
                  ("dense 65536 tokens, 24 heads", 65536, 24)]


def alternate(a, b, pairs, warmup, calls):
    """Medians of a() and b() timed alternately, `calls` calls per sample (warmup untimed pairs first)."""
    ta, tb = [], []
    for i in range(warmup + pairs):
        x, y = calls_ms(a, calls), calls_ms(b, calls)
        if i >= warmup:
            ta.append(x)
            tb.append(y)
    return median(ta), median(tb)



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10, help="timed pairs per row")
    ap.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    ap.add_argument("--only", default="", help="problems whose name contains this")
    ap.add_argument("--calls", type=int, default=1,
                    help="calls per timed sample: 1 = each call synchronised on its own; N > 1 = N back-to-back calls")
    args = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention, dynamic=False)
    d = 128
    if args.calls < 1:
        ap.error(f"--calls {args.calls}: must be >= 1")
    method = "each call synchronised" if args.calls == 1 else f"{args.calls} back-to-back calls per sample"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, nattn {nattn.__version__}; {method}")
    print("| problem | pass | nattn ms | other ms | other | ratio (other / nattn) |")
    print("|---|---|---|---|---|---|")
    for name, spatial, window, heads in NA_PROBLEMS:
        if args.only not in name:
            continue
        n = math.prod(spatial)
        g = torch.Generator(device="cuda").manual_seed(0)
        shape = (1, *spatial, heads, d)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                   for _ in range(3))
        dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        mask_mod = _flex.na_mask_mod(spatial, window, (1,) * 3, (1,) * 3, (False,) * 3, n)
        bm = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
        qt, kt, vt = (t.detach().flatten(1, -3).transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        dt = dout.flatten(1, -3).transpose(1, 2).contiguous()
        ours = lambda: nattn.na3d(q, k, v, window, backend="cutlass-fna")
        theirs = lambda: flex(qt, kt, vt, block_mask=bm)
        with torch.no_grad():
            a, b = alternate(ours, theirs, args.pairs, args.warmup, args.calls)
        print(f"| {name} | fwd | {a:.2f} | {b:.2f} | flex | {b / a:.2f}x |", flush=True)
        a, b = alternate(fwd_bwd(ours, (q, k, v), dout), fwd_bwd(theirs, (qt, kt, vt), dt), args.pairs, args.warmup,
                         args.calls)
        print(f"| {name} | fwd+bwd | {a:.2f} | {b:.2f} | flex | {b / a:.2f}x |", flush=True)
        del q, k, v, dout, qt, kt, vt, dt, bm
        torch.cuda.empty_cache()
    for name, n, heads in DENSE_PROBLEMS:
        if args.only not in name:
            continue
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn((1, n, heads, d), device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # SDPA's [B, H, S, D]
        ours = lambda: nattn.attention(q, k, v, backend="cutlass-fmha")
        theirs = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
        with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            a, b = alternate(ours, theirs, args.pairs, args.warmup, args.calls)
        print(f"| {name} | fwd | {a:.2f} | {b:.2f} | SDPA flash | {b / a:.2f}x |", flush=True)
        del q, k, v, qt, kt, vt
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
