"""PyTorch SDPA flash (full attention) forward on the anchors.md §8 problems, bf16, d=128, batch 1.

Median of 10 timed calls after 3 warm-ups (CUDA events). Usage: python3 bench/cuda/sdpa_flash.py [--quick]
"""
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

PROBLEMS = [
    ("2D 128x128 k13x13, 16 heads", 128 * 128, 16),
    ("1D 32768 k2048, 16 heads", 32768, 16),
    ("2D 256x256 k32x32, 24 heads", 256 * 256, 24),
    ("3D 16x44x80 k8x16x24, 16 heads", 16 * 44 * 80, 16),
    ("3D 30x48x80 k18x24x24, 24 heads", 30 * 48 * 80, 24),
]


def main():
    quick = "--quick" in sys.argv
    probs = PROBLEMS[:2] if quick else PROBLEMS
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("| problem | SDPA flash fwd (full attention) | TFLOP/s |\n|---|---|---|")
    for name, n, h in probs:
        q, k, v = (torch.randn(1, h, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)
            for _ in range(3):
                f()
            torch.cuda.synchronize()
            times = []
            for _ in range(10):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                f()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
        times.sort()
        ms = (times[4] + times[5]) / 2
        print(f"| {name} | {ms:.2f} ms | {4 * n * n * 128 * h / (ms * 1e-3) / 1e12:.0f} |", flush=True)
        del q, k, v


if __name__ == "__main__":
    main()
