"""Strong and weak scaling of multi-GPU neighborhood attention (nattn.distributed.distributed_na,
issue 6) on a 3-D video problem, forward and forward+backward, with the halo exchange timed alone and
the overlap it gets.

    torchrun --nproc-per-node=2 bench/dist/bench_scaling.py                  # 1 and 2 GPUs, split axis 0
    torchrun --nproc-per-node=2 bench/dist/bench_scaling.py --axes "0;2"     # axis 0, then axis 2
    torchrun --nproc-per-node=8 bench/dist/bench_scaling.py --axes 0,2       # 1, 2, 4, 8 GPUs, 2 split axes
    torchrun --nproc-per-node=2 bench/dist/bench_scaling.py --cpu --shape 8,6,8 --window 3,3,3 \\
        --weak-slab 6,6,8 --heads 2 --head-dim 8 --dtype fp32              # gloo smoke run (reference)
    python bench/dist/bench_scaling.py --dry-run --world 8                   # plans only, no GPU

One torchrun of W processes measures every GPU count in --gpus (default: the powers of two up to W)
on subgroups of the first n ranks; n = 1 is the plain single-GPU op (nattn.na3d). See
bench/dist/README.md for the definitions of the columns.
"""

import argparse
import copy
import datetime
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

import nattn
from nattn import distributed as nd

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


def ints(s):
    return tuple(int(x) for x in s.replace("x", ",").split(",") if x)


def grid_for(n, axes, fixed=None):
    """Ranks per split axis: --grid if given, else the most even factorisation of n over the axes,
    larger factors first (n=8 over two axes: (4, 2))."""
    if fixed:
        if math.prod(fixed) != n or len(fixed) != len(axes):
            raise SystemExit(f"--grid {fixed} does not give {n} ranks over axes {axes}")
        return fixed
    out, rest = [], n
    for i in range(len(axes), 1, -1):
        f = max(d for d in range(1, rest + 1) if rest % d == 0 and d ** i <= rest)
        out.append(f)
        rest //= f
    out.append(rest)
    return tuple(sorted(out, reverse=True))


def problem(kind, n, axes, args):
    """(global shape, axes, slab sizes per axis, grid) of `kind` ('strong' / 'weak') on n ranks."""
    fixed = args.grid if n == args.grid_n and args.grid and len(args.grid) == len(axes) else None
    grid = grid_for(n, axes, fixed)
    if kind == "strong":
        shape = list(args.shape)
    else:
        shape = list(args.weak_slab)
        for a, g in zip(axes, grid):
            shape[a] *= g
    sizes = [nd.even_slabs(shape[a], g) for a, g in zip(axes, grid)]
    return tuple(shape), axes, sizes, grid


class Timer:
    """Median wall time of fn over repeats: CUDA events on the current stream (GPU) or perf_counter
    (CPU), every repeat started together on the group (barrier)."""

    def __init__(self, device, group, warmup, repeats):
        self.device, self.group, self.warmup, self.repeats = device, group, warmup, repeats

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        times = []
        for i in range(self.warmup + self.repeats):
            if self.group is not False:
                dist.barrier(group=self.group)
            self.sync()
            if self.device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                t = a.elapsed_time(b)
            else:
                t0 = time.perf_counter()
                fn()
                t = (time.perf_counter() - t0) * 1e3
            if i >= self.warmup:
                times.append(t)
        return statistics.median(times)


def make_inputs(local, args, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    dt = DTYPES[args.dtype]

    def rnd(h):
        return torch.randn(args.batch, *local, h, args.head_dim, generator=g, device=device, dtype=dt)

    return rnd(args.heads), rnd(args.heads), rnd(args.heads), rnd(args.heads)


def step(fn, backward, leaves, dout):
    def run():
        for x in leaves:
            x.grad = None
        out = fn()
        if backward:
            out.backward(dout)
    return run


def bench_single(shape, args, device, timer):
    q, k, v, do = make_inputs(shape, args, device, seed=1)
    res = {}
    for mode in args.modes:
        bwd = mode == "fwdbwd"
        leaves = [x.requires_grad_(bwd) for x in (q, k, v)]
        fn = step(lambda: nattn.na3d(leaves[0], leaves[1], leaves[2], args.window, backend=args.single_backend),
                  bwd, leaves if bwd else [], do)
        res[mode] = dict(total=timer(fn), serial=None, compute=None, comm=0.0)
    return res


def bench_sharded(shape, axes, sizes, group, args, device, timer):
    rank = dist.get_rank(group)
    sl = nd.rank_slices(rank, 3, axes, sizes)
    local = [shape[i] if sl[i + 1] == slice(None) else sl[i + 1].stop - sl[i + 1].start for i in range(3)]
    q, k, v, do = make_inputs(local, args, device, seed=100 + rank)
    res = {}
    for mode in args.modes:
        bwd = mode == "fwdbwd"
        leaves = [x.requires_grad_(bwd) for x in (q, k, v)]
        cfg = {ov: nd._setup(q, k, v, args.window, axes, sizes, group=group, overlap=ov, backend=args.backend)
               for ov in (True, False, "interior")}
        quiet = copy.copy(cfg[True])
        quiet.comm = False  # same kernels and copies, no exchange (halo buffers zero)

        def run(c):
            return step(lambda: nd._apply(c, leaves[0], leaves[1], leaves[2]), bwd, leaves if bwd else [], do)

        # The exchange alone: the P2P transfers of the packed halo pieces (and, for fwdbwd, of the
        # halo gradients), without packing and unpacking (those run in "compute alone" too).
        with torch.no_grad():
            pending = nd._start_halo(quiet, k, v)
            messages = [(pending[1], [(s, buf) for s, _, buf in pending[2]])]
            if bwd:
                k_ext, v_ext = nd._finish_halo(quiet, k, v, pending)
                grads = nd._start_grad(quiet, k_ext, v_ext, k, v.shape[-1])
                messages.append((grads[1], [(s, buf) for s, _, buf in grads[2]]))

        def comm_only():
            for sends, recvs in messages:
                nd._wait(nd._p2p(cfg[True], sends, recvs))

        r = dict(total=timer(run(cfg[True])), serial=timer(run(cfg[False])), compute=timer(run(quiet)),
                 comm=timer(comm_only), split=timer(run(cfg["interior"])))
        p = cfg["interior"].plan
        volume = math.prod(s[1] - s[0] for s in p.slab)
        r["halo_ratio"] = math.prod(h[1] - h[0] for h in p.halo) / volume
        r["interior"] = -(math.prod(b[1] - b[0] for b in p.interior) / volume if p.interior else 0.0)
        keys = ("total", "serial", "compute", "comm", "split", "halo_ratio", "interior")
        vals = torch.tensor([r[x] for x in keys], dtype=torch.float64, device=device)
        dist.all_reduce(vals, op=dist.ReduceOp.MAX, group=group)  # the slowest rank sets the step time
        res[mode] = dict(zip(keys, vals.tolist()))
        res[mode]["interior"] *= -1  # the smallest interior fraction over the ranks
    return res


def overlap_of(r):
    """Fraction of the exchange hidden behind compute: 1 - exposed / comm, exposed = total - compute."""
    if not r.get("comm") or r.get("compute") is None:
        return None
    exposed = max(0.0, r["total"] - r["compute"])
    return max(0.0, min(1.0, 1.0 - exposed / r["comm"]))


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows, args):
    lines = [f"3-D NA, window {'x'.join(map(str, args.window))}, {args.heads} heads, head dim {args.head_dim}, "
             f"batch {args.batch}, {args.dtype}; strong: global {'x'.join(map(str, args.shape))}; weak: "
             f"{'x'.join(map(str, args.weak_slab))} per rank; median of {args.repeats} "
             f"(after {args.warmup} warm-up), max over ranks; times in ms.", "",
             "| scaling | split axes | GPUs | grid | global | mode | total | no overlap | compute alone "
             "| exchange alone | overlap | interior split | halo/slab | interior | speedup | efficiency |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interior = "-" if r["n"] == 1 else f"{100 * r.get('interior', 0):.0f}%"
        eff = "-" if r.get("efficiency") is None else f"{100 * r['efficiency']:.0f}%"
        ov = "-" if overlap_of(r) is None else f"{100 * overlap_of(r):.0f}%"
        grid = "x".join(map(str, r["grid"])) if r["n"] > 1 else "-"
        lines.append(f"| {r['kind']} | {','.join(map(str, r['axes']))} | {r['n']} | {grid} | "
                     f"{'x'.join(map(str, r['shape']))} | {r['mode']} | {fmt(r['total'])} | {fmt(r['serial'])} | "
                     f"{fmt(r['compute'])} | {fmt(r['comm'], 3)} | {ov} | {fmt(r.get('split'))} | "
                     f"{fmt(r.get('halo_ratio'))} | {interior} | "
                     f"{fmt(r.get('speedup'))} | {eff} |")
    return "\n".join(lines)


def dry_run(args, world):
    for kind, axes_cfg in [(k, a) for a in args.axes for k in args.kinds]:
        for n in args.gpus_for(world):
            shape, axes, sizes, grid = problem(kind, n, axes_cfg, args)
            params = nattn._args.normalize_na_params(3, args.window, 1, 1, False)
            nattn._args.check_params_vs_input(shape, *params[:3])
            info = []
            if n > 1:
                for r in range(n):
                    p = nd._make_plan(shape, axes, tuple(tuple(s) for s in sizes), r, params, True)
                    halo = math.prod(h[1] - h[0] for h in p.halo) / math.prod(s[1] - s[0] for s in p.slab)
                    info.append(f"r{r}: {len(p.recvs)} recv, halo/slab {halo:.2f}, "
                                f"{'interior ' + str(p.interior) if p.interior else 'no interior'}")
            print(f"{kind} axes={axes} n={n} grid={grid} global={shape} slabs={sizes}")
            for line in info:
                print("    " + line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=ints, default=(30, 48, 80), help="strong scaling: global token grid")
    ap.add_argument("--weak-slab", type=ints, default=(24, 48, 80), help="weak scaling: tokens per rank")
    ap.add_argument("--window", type=ints, default=(18, 24, 24))
    ap.add_argument("--axes", default="0", help="split axes, e.g. 0 or 0,2; several runs separated by ';' (0;2)")
    ap.add_argument("--grid", type=ints, default=None, help="ranks per split axis for the largest GPU count")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--gpus", type=ints, default=None, help="GPU counts (default: powers of two up to the world)")
    ap.add_argument("--kinds", default="strong,weak")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default=None, help="sharded backend (default: automatic / reference on CPU)")
    ap.add_argument("--cpu", action="store_true", help="gloo on the CPU, reference backend (a smoke run)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here (rank 0)")
    ap.add_argument("--dry-run", action="store_true", help="print the problems and rank plans; no process group")
    ap.add_argument("--world", type=int, default=None, help="world size for --dry-run")
    args = ap.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.modes = [m for m in args.modes.split(",") if m]
    args.axes = [ints(a) for a in args.axes.split(";") if a]
    args.single_backend = args.backend if args.backend else ("reference" if args.cpu else None)
    if args.cpu and args.backend is None:
        args.backend = "reference"

    def gpus_for(world):
        if args.gpus:
            return [n for n in args.gpus if n <= world]
        return [n for n in (1, 2, 4, 8, 16, 32) if n <= world]

    args.gpus_for = gpus_for
    if args.dry_run:
        world = args.world or int(os.environ.get("WORLD_SIZE", 2))
        args.grid_n = max(gpus_for(world))
        dry_run(args, world)
        return 0

    local = int(os.environ.get("LOCAL_RANK", 0))
    timeout = datetime.timedelta(seconds=600)
    if args.cpu:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timeout)
    else:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    dist.barrier()
    rank, world = dist.get_rank(), dist.get_world_size()
    counts = gpus_for(world)
    args.grid_n = max(counts)
    groups = {}
    for n in counts:  # every rank creates every subgroup (collective)
        groups[n] = None if n == world else dist.new_group(list(range(n)))
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"bench_scaling: world={world} device={name} torch={torch.__version__} "
              f"NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE', '(unset)')} counts={counts}", flush=True)
    rows = []
    for kind, axes_cfg in [(k, a) for a in args.axes for k in args.kinds]:
        base = {}
        for n in counts:
            shape, axes, sizes, grid = problem(kind, n, axes_cfg, args)
            res = None
            if rank < n:
                timer = Timer(device, groups[n] if n > 1 else False, args.warmup, args.repeats)
                if n > 1:
                    dist.barrier(group=groups[n])
                    res = bench_sharded(shape, axes, sizes, groups[n], args, device, timer)
                else:
                    res = bench_single(shape, args, device, timer)
            dist.barrier()
            if rank == 0:
                for mode in args.modes:
                    r = dict(kind=kind, axes=axes, n=n, grid=grid, shape=shape, mode=mode, **res[mode])
                    if n == 1:
                        base[mode] = r["total"]
                    if mode in base:
                        r["speedup"] = base[mode] / r["total"] if kind == "strong" else None
                        r["efficiency"] = (base[mode] / r["total"] / n if kind == "strong"
                                           else base[mode] / r["total"])
                    rows.append(r)
                    print(f"  {kind} axes={axes} n={n} {mode}: total {r['total']:.2f} ms, "
                          f"no overlap {fmt(r['serial'])}, compute {fmt(r['compute'])}, "
                          f"exchange {fmt(r['comm'], 3)}, interior split {fmt(r.get('split'))}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if rank == 0:
        print()
        print(table(rows, args), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
