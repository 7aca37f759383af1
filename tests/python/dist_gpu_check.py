"""Multi-GPU check of nattn.distributed.distributed_na (issue 6): on N ranks (NCCL, one GPU each) the
sharded forward and backward equal the single-GPU result.

    torchrun --nproc-per-node=N tests/python/dist_gpu_check.py            # NCCL, N GPUs
    torchrun --nproc-per-node=2 tests/python/dist_gpu_check.py --cpu      # gloo on the CPU (reference)
    python tests/python/dist_gpu_check.py --dry-run --world 8             # list the cases and plans

Every rank builds the full problem from the same seed, runs nattn's na1d/na2d/na3d on it (the
single-GPU result, automatic backend), then runs distributed_na on its own slab in every overlap
mode (True = head chunks where there are >= 2 key/value heads, 'interior', none) and compares
out, lse, dquery, dkey, dvalue (and the all-reduced additional-KV gradients) with the rows of the
single-GPU result. Errors are max |sharded - single| / max |single| over all ranks;
tolerances: fp32 1e-5, bf16 2e-2 (fp64 on the CPU: 1e-12). Rank 0 prints one PASS/FAIL line per
case; the exit status is non-zero if any case fails. NCCL settings (NCCL_NVLS_ENABLE, ...) are left as
the environment sets them.
"""

import argparse
import datetime
import math
import os
import sys
import traceback

import torch
import torch.distributed as dist

import nattn
from nattn import distributed as nd

NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def two_factors(n):
    """(a, b) with a * b = n, both >= 2 when n allows (most square), else (n, 1)."""
    best = (n, 1)
    for a in range(2, int(math.isqrt(n)) + 1):
        if n % a == 0:
            best = (n // a, a)
    return best


def cases(world):
    """Problems sized for `world` ranks: (name, spatial, kernel, stride, dilation, causal, axis, slab sizes,
    heads, heads_kv, head_dim, extra KV tokens, with LSE gradient)."""
    n = world
    ga, gb = two_factors(n)
    out = []

    def add(name, spatial, ks, st, dil, causal, axis, parts, h=4, hkv=2, d=64, extra=0, lse=False):
        axes = (axis,) if isinstance(axis, int) else axis
        parts = (parts,) if isinstance(parts, int) else parts
        sizes = [nd.even_slabs(spatial[a], p) for a, p in zip(axes, parts)]
        out.append(dict(name=name, spatial=spatial, ks=ks, st=st, dil=dil, causal=causal,
                        axis=axis if isinstance(axis, int) else tuple(axis),
                        sizes=sizes[0] if isinstance(axis, int) else sizes, h=h, hkv=hkv, d=d, extra=extra, lse=lse))

    add("1d-k7-d2", (8 * n + 6,), 7, 1, 2, False, 0, n)
    add("1d-k9-s3-causal-lse", (13 * n,), 9, 3, 1, True, 0, n, h=4, hkv=1, lse=True)
    add("1d-k15-small-slabs", (max(5 * n + 1, 17),), 15, 2, 1, False, 0, n, extra=3)  # halos from ranks away
    add("2d-axis0-interior", (16 * n, 24), (5, 5), 1, 1, False, 0, n, extra=1)  # interior + boundary boxes
    add("2d-axis0", (6 * n + 2, 20), (5, 7), (1, 2), (1, 2), (True, False), 0, n)
    add("2d-axis1-lse", (12, 7 * n + 1), (3, 5), (3, 1), (2, 1), (False, True), 1, n, h=2, hkv=2, d=32, lse=True)
    add(f"2d-grid{ga}x{gb}", (5 * ga + 4, 6 * gb + 5), (5, 5), (2, 1), (1, 2), (False, False), (0, 1), (ga, gb),
        extra=2)
    add(f"2d-grid{gb}x{ga}-causal", (6 * gb + 1, 5 * ga + 2), (4, 6), (1, 3), (1, 1), (True, True), (0, 1),
        (gb, ga), lse=True)
    add("3d-axis0", (max(4 * n + 1, 7), 12, 16), (3, 5, 5), (1, 1, 2), (2, 1, 1), (False, False, True), 0, n)
    add(f"3d-grid{ga}x{gb}-axes02", (3 * ga + 3, 10, 4 * gb + 6), (3, 3, 5), (1, 2, 1), (1, 1, 2),
        (True, False, False), (0, 2), (ga, gb), extra=2, lse=True)
    add(f"3d-grid{ga}x{gb}-axes12", (6, max(4 * ga + 4, 10), 5 * gb + 3), (3, 5, 5), (2, 1, 1), (1, 2, 1),
        (False, True, False), (1, 2), (ga, gb), h=6, hkv=3)
    add(f"3d-grid{ga}x{gb}-interior", (8 * ga, 6, 8 * gb), (3, 3, 3), 1, (1, 2, 1), False, (0, 2), (ga, gb),
        lse=True)  # interior plus onion boxes along both axes
    return out


def inputs(c, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    b = 2

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)

    q = rnd(b, *c["spatial"], c["h"], c["d"])
    k = rnd(b, *c["spatial"], c["hkv"], c["d"])
    v = rnd(b, *c["spatial"], c["hkv"], c["d"])
    do = rnd(b, *c["spatial"], c["h"], c["d"])
    dl = rnd(b, *c["spatial"], c["h"]).float() if c["lse"] else None
    if dl is not None and dtype == torch.float64:
        dl = dl.double()
    ak = rnd(b, c["extra"], c["hkv"], c["d"]) if c["extra"] else None
    av = rnd(b, c["extra"], c["hkv"], c["d"]) if c["extra"] else None
    return q, k, v, do, dl, ak, av


def run_case(c, dtype, device, seed, ref_backend, backend):
    """{quantity: relative error} on this rank (max over the overlap modes), normalised by the global
    max |single| (so the all-reduced max is the global relative error)."""
    q, k, v, do, dl, ak, av = inputs(c, dtype, device, seed)
    na = NA[len(c["spatial"])]
    leaves = [None if x is None else x.clone().requires_grad_(True) for x in (q, k, v, ak, av)]
    out, lse = na(leaves[0], leaves[1], leaves[2], c["ks"], c["st"], c["dil"], c["causal"],
                  additional_keys=leaves[3], additional_values=leaves[4], backend=ref_backend, return_lse=True)
    torch.autograd.backward([out, lse] if dl is not None else [out], [do, dl] if dl is not None else [do])
    ref = dict(out=out.detach(), lse=lse.detach(), dq=leaves[0].grad, dk=leaves[1].grad, dv=leaves[2].grad,
               dak=None if ak is None else leaves[3].grad, dav=None if av is None else leaves[4].grad)
    rank = dist.get_rank()
    sl = nd.rank_slices(rank, len(c["spatial"]), c["axis"], c["sizes"])
    errs = {}
    for overlap in (True, "interior", False):
        lq, lk, lv = (x[sl].clone().requires_grad_(True) for x in (q, k, v))
        lak, lav = (None if x is None else x.clone().requires_grad_(True) for x in (ak, av))
        o, ls = nd.distributed_na(lq, lk, lv, c["ks"], c["axis"], c["sizes"], c["st"], c["dil"], c["causal"],
                                 additional_keys=lak, additional_values=lav, overlap=overlap, return_lse=True,
                                 backend=backend)
        torch.autograd.backward([o, ls] if dl is not None else [o],
                                [do[sl], dl[sl]] if dl is not None else [do[sl]])
        got = dict(out=o.detach(), lse=ls.detach(), dq=lq.grad, dk=lk.grad, dv=lv.grad)
        if ak is not None:
            for name, leaf in (("dak", lak), ("dav", lav)):
                g = leaf.grad.to(torch.promote_types(leaf.grad.dtype, torch.float32))
                dist.all_reduce(g)
                got[name] = g
        for name, x in got.items():
            want = ref[name] if name in ("dak", "dav") else ref[name][sl]
            scale = ref[name].double().abs().max().item() or 1.0
            e = (x.double() - want.double()).abs().max().item() / scale
            if not math.isfinite(e):
                e = float("inf")
            errs[name] = max(errs.get(name, 0.0), e)
    return errs


def plan_line(c, world):
    params = nd._args.normalize_na_params(len(c["spatial"]), c["ks"], c["st"], c["dil"], c["causal"])
    axes = (c["axis"],) if isinstance(c["axis"], int) else c["axis"]
    sizes = (tuple(c["sizes"]),) if isinstance(c["axis"], int) else tuple(tuple(s) for s in c["sizes"])
    info = []
    for r in range(world):
        p = nd._make_plan(tuple(c["spatial"]), tuple(axes), sizes, r, params, True)
        info.append(f"r{r}:{len(p.recvs)}recv/{len(p.boundary)}bnd{'+int' if p.interior else ''}")
    return " ".join(info)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="gloo on the CPU with the reference backend")
    ap.add_argument("--dtypes", default=None, help="comma list (default: bf16,fp32 on GPU; fp64,fp32 on CPU)")
    ap.add_argument("--cases", default="", help="only cases whose name contains one of these (comma list)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="distributed_na backend (default: automatic / reference on CPU)")
    ap.add_argument("--ref-backend", default=None, help="single-GPU backend (default: automatic)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and rank plans; no process group")
    ap.add_argument("--world", type=int, default=None, help="world size for --dry-run (default: WORLD_SIZE or 2)")
    args = ap.parse_args()
    dtypes = [DTYPES[x] for x in (args.dtypes or ("fp64,fp32" if args.cpu else "bf16,fp32")).split(",")]
    wanted = [x for x in args.cases.split(",") if x]

    def selected(world):
        return [c for c in cases(world) if not wanted or any(w in c["name"] for w in wanted)]

    if args.dry_run:
        world = args.world or int(os.environ.get("WORLD_SIZE", 2))
        for c in selected(world):
            print(f"{c['name']}: spatial={c['spatial']} kernel={c['ks']} stride={c['st']} dilation={c['dil']} "
                  f"causal={c['causal']} axis={c['axis']} slabs={c['sizes']} heads={c['h']}/{c['hkv']} "
                  f"d={c['d']} extra={c['extra']} lse_grad={c['lse']}\n    {plan_line(c, world)}")
        return 0

    local = int(os.environ.get("LOCAL_RANK", 0))
    timeout = datetime.timedelta(seconds=300)
    if args.cpu:
        device, ref_backend = torch.device("cpu"), args.ref_backend or "reference"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", 1))))
        dist.init_process_group("gloo", timeout=timeout)
    else:
        device, ref_backend = torch.device("cuda", local), args.ref_backend
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    dist.barrier()  # the first collective involves every rank (batch_isend_irecv's NCCL rule)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"dist_gpu_check: world={world} device={device.type} "
              f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) "
              f"NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE', '(unset)')} torch={torch.__version__}",
              flush=True)
    failures = 0
    for ci, c in enumerate(selected(world)):
        for dtype in dtypes:
            name = f"{c['name']} {str(dtype).replace('torch.', '')}"
            tol = TOL[dtype]
            try:
                errs = run_case(c, dtype, device, args.seed + 100 * ci, ref_backend, args.backend)
                error = ""
            except Exception as e:  # reported, then the next case (all ranks fail alike on argument errors)
                errs, error = {}, f"{type(e).__name__}: {e}"
                if rank == 0:
                    traceback.print_exc()
            keys = ["out", "lse", "dq", "dk", "dv", "dak", "dav"]
            vals = torch.tensor([errs.get(k, -1.0) for k in keys] + [1.0 if error else 0.0], dtype=torch.float64,
                                device=device)
            dist.all_reduce(vals, op=dist.ReduceOp.MAX)
            vals = vals.tolist()
            ok = vals[-1] == 0 and all(x <= tol for x in vals[:-1])
            failures += not ok
            if rank == 0:
                detail = " ".join(f"{k}={x:.2e}" for k, x in zip(keys, vals) if x >= 0)
                print(f"{'PASS' if ok else 'FAIL'} {name:34s} tol={tol:.0e} {detail}"
                      f"{' ERROR ' + error if error else ''}", flush=True)
    if rank == 0:
        print(f"dist_gpu_check: {'all passed' if not failures else f'{failures} FAILED'}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
