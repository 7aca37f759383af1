"""Per-rank compute of multi-GPU NA on ONE GPU (issue 6): the 2-way strong split of the video problem
(30x48x80, window 18x24x24, 24 heads, hd 128, bf16), rank 0's half slab against its halo box with
nattn.distributed.na_subdomain: hopper-fna vs cutlass-fna forward (and both against the rows of the
single-domain na3d), automatic forward+backward, and the cost of running it as 1/2/4/8 head chunks
(overlap='heads'). No communication: what a rank computes, measured where only one GPU is lent.

    PYTHONPATH=<nattn with CUDA> python3 bench/dist/bench_rank_compute.py
"""
import torch, nattn
from nattn import distributed as nd
torch.manual_seed(0)
G = (30, 48, 80); W = (18, 24, 24); H = 24; D = 128
dev = "cuda"
def t(shape): return torch.randn(shape, device=dev, dtype=torch.bfloat16)
def timeit(fn, n=5):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2]
q = t((1,) + G + (H, D)); k = t((1,) + G + (H, D)); v = t((1,) + G + (H, D))
print("single-domain na3d fwd %.2f ms" % timeit(lambda: nattn.na3d(q, k, v, W)))
for axis in (0, 2):
    n = G[axis]; lo, hi = 0, n // 2
    qlo = [0, 0, 0]; qhi = list(G); qlo[axis], qhi[axis] = lo, hi
    hlo, hhi = nd.halo_box(qlo, qhi, G, W)
    sl_q = tuple(slice(a, b) for a, b in zip(qlo, qhi)); sl_k = tuple(slice(a, b) for a, b in zip(hlo, hhi))
    qs = q[(slice(None),) + sl_q].contiguous(); ks = k[(slice(None),) + sl_k].contiguous(); vs = v[(slice(None),) + sl_k].contiguous()
    res = {}
    for be in ("hopper-fna", "cutlass-fna"):
        f = lambda: nd.na_subdomain(qs, ks, vs, W, G, qlo, hlo, backend=be)
        res[be] = f()
        print("axis %d slab %s halo %s %-11s fwd %.2f ms" % (axis, tuple(b - a for a, b in zip(qlo, qhi)), tuple(b - a for a, b in zip(hlo, hhi)), be, timeit(f)))
    ref = nattn.na3d(q, k, v, W)[(slice(None),) + sl_q]
    for be, o in res.items():
        print("   %s max|o - na3d| / max|na3d| = %.2e" % (be, ((o.float() - ref.float()).abs().max() / ref.float().abs().max()).item()))
    qs.requires_grad_(); ks.requires_grad_(); vs.requires_grad_()
    def fb():
        o = nd.na_subdomain(qs, ks, vs, W, G, qlo, hlo)
        o.backward(torch.ones_like(o))
    print("   automatic fwd+bwd %.2f ms" % timeit(fb, 3))

# Head-chunk pipeline cost: the same half-slab forward / forward+backward as 4 chunks of 6 heads.
print("--- head chunks (axis 0 half slab)")
axis = 0
qlo = [0, 0, 0]; qhi = list(G); qhi[0] = G[0] // 2
hlo, hhi = nd.halo_box(qlo, qhi, G, W)
sl_q = tuple(slice(a, b) for a, b in zip(qlo, qhi)); sl_k = tuple(slice(a, b) for a, b in zip(hlo, hhi))
qs = q[(slice(None),) + sl_q].contiguous(); ks = k[(slice(None),) + sl_k].contiguous(); vs = v[(slice(None),) + sl_k].contiguous()
for n in (1, 2, 4, 8):
    c = H // n
    kc = [ks[..., i * c:(i + 1) * c, :].contiguous() for i in range(n)]
    vc = [vs[..., i * c:(i + 1) * c, :].contiguous() for i in range(n)]
    out = torch.empty_like(qs)
    def f():
        for i in range(n):
            out[..., i * c:(i + 1) * c, :] = nd.na_subdomain(qs[..., i * c:(i + 1) * c, :], kc[i], vc[i], W, G, qlo, hlo)
    def fb():
        for i in range(n):
            qq = qs[..., i * c:(i + 1) * c, :].detach().requires_grad_()
            kk = kc[i].detach().requires_grad_(); vv = vc[i].detach().requires_grad_()
            o = nd.na_subdomain(qq, kk, vv, W, G, qlo, hlo)
            o.backward(torch.ones_like(o))
    print("chunks %d: fwd %.2f ms, fwd+bwd %.2f ms" % (n, timeit(f), timeit(fb, 3)))
