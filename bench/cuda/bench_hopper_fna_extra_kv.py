"""hopper-fna forward with additional KV tokens (e.g. text tokens of a video DiT) through nattn.na3d:
the direct mode (the NA kernel on the caller's tensors, a dense hopper-fmha part over the query
viewed as [B, tokens, H, D], merged in place) against the permuted mode (NATTN_HOPPER_FNA_PERMUTED=1:
token permutation, the NA kernel, the dense part and the merge in permuted space, unpermutation), in
one process, alternating. Video problem 30x48x80, window 18x24x24, 24 heads, hd 128, bf16.

    PYTHONPATH=<nattn with CUDA> python3 bench/cuda/bench_hopper_fna_extra_kv.py [--extra N ...]
"""

import argparse
import os
import sys

import torch

import nattn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cuda_timing import median_ms  # noqa: E402  (bench/cuda_timing.py)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", type=int, nargs="+", default=[77, 512])
    args = ap.parse_args()
    torch.manual_seed(0)
    shape = (1, 30, 48, 80, 24, 128)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for n in args.extra:
        ak, av = (torch.randn((1, n, 24, 128), device="cuda", dtype=torch.bfloat16) for _ in range(2))

        def run():
            return nattn.na3d(q, k, v, (18, 24, 24), additional_keys=ak, additional_values=av, backend="hopper-fna")

        res = {}
        outs = {}
        for mode in ("direct", "permuted", "direct", "permuted"):
            os.environ["NATTN_HOPPER_FNA_PERMUTED"] = "1" if mode == "permuted" else "0"
            with torch.no_grad():
                res.setdefault(mode, []).append(median_ms(run, 7))
                outs[mode] = run()
        os.environ.pop("NATTN_HOPPER_FNA_PERMUTED")
        diff = (outs["direct"].float() - outs["permuted"].float()).abs().max().item()
        print("extra %4d: direct %.2f ms, permuted %.2f ms (best of two medians); max |direct - permuted| %.2e"
              % (n, min(res["direct"]), min(res["permuted"]), diff))


if __name__ == "__main__":
    main()
