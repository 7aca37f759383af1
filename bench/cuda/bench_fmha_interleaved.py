"""hopper-fmha forward against PyTorch SDPA's cuDNN backend on issue 4's dense problems (1-D 32768
tokens, 16 heads; 2-D 256x256 = 65536 tokens, 24 heads; bf16, head dim 128, torch.randn inputs),
the two called alternately, call by call, so that both see the same clocks and temperature (the
H100 runs these kernels at its power limit; a sequential comparison favours whichever runs first
on a cooler GPU). Prints the median of each and the ratio.

    PYTHONPATH=<nattn package with CUDA> python3 bench/cuda/bench_fmha_interleaved.py [--pairs 15]
"""
import argparse
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import nattn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import median, once_ms as event_ms  # noqa: E402  (bench/cuda_timing.py)

PROBLEMS = [("1D 32768, 16 heads", 32768, 16), ("2D 256x256 (65536 tokens), 24 heads", 65536, 24)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=15, help="timed (hopper-fmha, cuDNN) pairs per problem")
    ap.add_argument("--warmup", type=int, default=3, help="untimed pairs first")
    args = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    d = 128
    print("| problem | hopper-fmha fwd | SDPA cuDNN fwd | ratio (cuDNN time / hopper time) |")
    print("|---|---|---|---|")
    for name, n, heads in PROBLEMS:
        q, k, v = (torch.randn((1, n, heads, d), device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # SDPA's [B, H, S, D]
        flops = 4 * n * n * d * heads
        hopper = lambda: nattn.attention(q, k, v, backend="hopper-fmha")
        cudnn = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
        th, tc = [], []
        with torch.no_grad(), sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            for i in range(args.warmup + args.pairs):
                a, b = event_ms(hopper), event_ms(cudnn)
                if i >= args.warmup:
                    th.append(a)
                    tc.append(b)
        mh, mc = median(th), median(tc)
        print(f"| {name} | {mh:.2f} ms = {flops / mh / 1e9:.0f} TFLOP/s | {mc:.2f} ms = {flops / mc / 1e9:.0f} TFLOP/s "
              f"| {mc / mh:.3f}x |")
        del q, k, v, qt, kt, vt
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
