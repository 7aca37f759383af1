"""Counts the KV tile visits of hopper-fna's CTAs and consumer warpgroups on a 3-D NA problem (no
GPU): per CTA the KV tile box over its Q tile's windows (direct mode: tiles from the box's first key;
--permuted: on the global tile grid), per warpgroup (Q tile rows 64 w .. 64 w + 63: the direct mode halves the first axis, the permuted mode the last) the tiles its rows see
(the kernel's per-warpgroup skip, src/cuda/sm90/fmha_fwd/README.md). Prints the visits and the useful
share (window query-key pairs / computed pairs) per config. Non-causal, stride 1, dilation 1.

    python3 bench/cuda/na_tile_visits.py [--extent 30 48 80] [--window 18 24 24] [--permuted]
"""
import argparse
import itertools
import math


def window_start(i, n, w):
    return min(max(i - w // 2, 0), n - w)


def visits(extent, window, q_tile, kv_tile, direct):
    cta = wg = 0
    for tq in itertools.product(*[range(math.ceil(n / t)) for n, t in zip(extent, q_tile)]):
        # KV tiles: permuted mode on the global tile grid; direct mode from the CTA's first key
        origin = [0] * 3
        if direct:
            origin = [window_start(tq[a] * q_tile[a], extent[a], window[a]) for a in range(3)]
        # Rows are numbered with the direct mode's innermost axis fastest (the permuted mode's first):
        # the warpgroups split the other end's axis.
        split = 0 if direct else 2
        halves = []
        for w in range(2):
            rng = []
            for a in range(3):
                lo = tq[a] * q_tile[a]
                hi = min(lo + q_tile[a], extent[a])
                if a == split:  # the warpgroups' halves of the Q tile
                    half = q_tile[a] // 2
                    lo, hi = lo + w * half, min(lo + (w + 1) * half, extent[a])
                if lo >= hi:
                    rng = None
                    break
                k_lo = window_start(lo, extent[a], window[a])
                k_hi = window_start(hi - 1, extent[a], window[a]) + window[a]
                rng.append(((k_lo - origin[a]) // kv_tile[a], (k_hi - 1 - origin[a]) // kv_tile[a]))
            halves.append(rng)
        real = [h for h in halves if h]
        box = [(min(h[a][0] for h in real), max(h[a][1] for h in real)) for a in range(3)]
        cta += 2 * math.prod(b - a + 1 for a, b in box)
        wg += sum(math.prod(h[a][1] - h[a][0] + 1 for a in range(3)) for h in real)
    useful = math.prod(extent) * math.prod(window)
    per_visit = 64 * math.prod(kv_tile)  # query-key pairs of one warpgroup and one tile
    return cta, wg, useful / (cta * per_visit), useful / (wg * per_visit)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extent", type=int, nargs=3, default=[30, 48, 80])
    ap.add_argument("--window", type=int, nargs=3, default=[18, 24, 24])
    ap.add_argument("--permuted", action="store_true", help="KV tiles on the global grid (else the direct mode's)")
    args = ap.parse_args()
    configs = [((4, 4, 8), (4, 4, 8)), ((2, 8, 8), (2, 8, 8)), ((4, 8, 4), (4, 8, 4)), ((8, 4, 4), (8, 4, 4)),
               ((8, 2, 8), (8, 2, 8)), ((8, 8, 2), (8, 8, 2)), ((16, 2, 4), (16, 2, 4)), ((8, 4, 4), (4, 4, 8)),
               ((8, 4, 4), (2, 8, 8)), ((16, 4, 2), (16, 4, 2)), ((4, 4, 8), (4, 4, 4)), ((8, 4, 4), (4, 4, 4))]
    print("| q tile | kv tile | warpgroup visits, CTA box | with the skip | skipped | useful share (box -> skip) |")
    print("|---|---|---|---|---|---|")
    for q, kv in configs:
        cta, wg, e0, e1 = visits(args.extent, args.window, q, kv, not args.permuted)
        print(f"| {q} | {kv} | {cta} | {wg} | {1 - wg / cta:.1%} | {e0:.3f} -> {e1:.3f} |")


if __name__ == "__main__":
    main()
