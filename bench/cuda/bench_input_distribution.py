"""hopper-fna on the video problem (3-D 30x48x80, window 18x24x24, 24 heads, hd 128, bf16) with
randn inputs and with uniform [-1, 1) inputs, the two alternating call by call in one process:
the kernel is power-limited, so the input distribution moves its throughput (bench/RESULTS.md).

    PYTHONPATH=<nattn package with CUDA> python3 bench/cuda/bench_input_distribution.py
"""
import os
import sys

import torch

import nattn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import once_ms as once  # noqa: E402  (bench/cuda_timing.py)


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    shape, window = (1, 30, 48, 80, 24, 128), (18, 24, 24)
    normal = [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]
    uniform = [(torch.rand(shape, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16) for _ in range(3)]
    flops = 4 * 30 * 48 * 80 * 18 * 24 * 24 * 128 * 24
    times = {"randn": [], "uniform [-1,1)": []}
    with torch.no_grad():
        for _ in range(2):  # warm-up pairs
            for t in (normal, uniform):
                nattn.na3d(*t, window, backend="hopper-fna")
        for _ in range(8):
            times["randn"].append(once(lambda: nattn.na3d(*normal, window, backend="hopper-fna")))
            times["uniform [-1,1)"].append(once(lambda: nattn.na3d(*uniform, window, backend="hopper-fna")))
    for name, t in times.items():
        t.sort()
        m = t[len(t) // 2]
        print(f"{name}: median {m:.2f} ms = {flops / m / 1e9:.1f} TFLOP/s (min {t[0]:.2f}, max {t[-1]:.2f})")


if __name__ == "__main__":
    main()
