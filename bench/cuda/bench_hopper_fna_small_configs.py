# GPU time of hopper-fna forward kernels (torch.profiler, kernel time per call: small problems are
# host-bound, so wall time would hide the kernels) for small hd-32 NA problems under several tile
# configs: the default before 2026-11-24 23:50 (ranking that costed hd 32 as the permuted mode), the
# default after it (hd 32 costed as the direct mode it runs in), q == kv tiles, and the package's
# current default ("default"). Usage: PYTHONPATH=<nattn with CUDA> python3 <this file>
import torch, nattn
from torch.profiler import profile, ProfilerActivity
torch.manual_seed(0)
cases = [
    ("2D 56x56 k7 B8 H4", (8, 56, 56, 4, 32), 7,
     [((64, 2), (64, 2)), ((16, 8), (8, 16)), ((16, 8), (16, 8)), ((8, 16), (8, 16))]),
    ("2D 28x28 k7 B8 H8", (8, 28, 28, 8, 32), 7,
     [((32, 4), (32, 4)), ((16, 8), (16, 8)), ((16, 8), (8, 16))]),
    ("3D 8x16x16 k3 B2 H4", (2, 8, 16, 16, 4, 32), 3,
     [((8, 8, 2), (8, 16, 1)), ((8, 8, 2), (8, 4, 4)), ((4, 4, 8), (4, 4, 8))]),
]
for name, shape, k, cfgs in cases:
    q, kk, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fn = nattn.na2d if len(shape) == 5 else nattn.na3d
    res = []
    for qt, kvt in cfgs + [(None, None)]:
        kw = {} if qt is None else dict(q_tile_shape=qt, kv_tile_shape=kvt)
        with torch.no_grad():
            for _ in range(3): fn(q, kk, v, k, backend="hopper-fna", **kw)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(20): fn(q, kk, v, k, backend="hopper-fna", **kw)
                torch.cuda.synchronize()
        ev = [e for e in prof.key_averages() if "attn_fwd_sm90" in e.key]
        us = sum(e.device_time_total for e in ev) / 20 if ev else float("nan")
        res.append("%s/%s %.1f us" % (qt, kvt, us) if qt else "default %.1f us" % us)
    print(name + ": " + "; ".join(res))
