"""nattn.distributed (issue 6): sub-domain NA with halos equals single-device NA on the reference
backend, simulated in one process (shard_na) and across processes (distributed_na over gloo)."""

import os
import tempfile

import numpy as np
import pytest

import nattn
from nattn import distributed as nd

torch = pytest.importorskip("torch")

NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}

# (spatial, kernel_size, stride, dilation, is_causal, splits, heads, heads_kv, extra)
CASES = [
    ((20,), 5, 1, 1, False, [[7, 7, 6]], 2, 2, 0),
    ((23,), 4, 3, 2, True, [[5, 10, 8]], 2, 1, 0),
    ((23,), 4, 2, 3, False, [[6, 6, 6, 5]], 4, 2, 3),
    ((12, 10), (3, 4), (2, 1), (1, 2), (True, False), [[4, 5, 3], None], 3, 1, 2),
    ((12, 10), (3, 4), (2, 1), (1, 2), (False, True), [[5, 7], [6, 4]], 2, 2, 0),
    ((6, 7, 5), (3, 3, 2), (1, 2, 1), (2, 1, 1), (False, True, False), [[2, 4], None, [3, 2]], 2, 1, 1),
]


def _inputs(spatial, heads, heads_kv, extra, seed=0, dim=4, dim_v=3):
    rng = np.random.default_rng(seed)
    b = 2
    q = rng.standard_normal((b, *spatial, heads, dim))
    k = rng.standard_normal((b, *spatial, heads_kv, dim))
    v = rng.standard_normal((b, *spatial, heads_kv, dim_v))
    do = rng.standard_normal((b, *spatial, heads, dim_v))
    ak = rng.standard_normal((b, extra, heads_kv, dim)) if extra else None
    av = rng.standard_normal((b, extra, heads_kv, dim_v)) if extra else None
    return q, k, v, do, ak, av


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}d-{c[0]}-splits{c[5]}")
def test_shard_na_numpy_forward_equals_single_device(case):
    spatial, ks, st, dil, causal, splits, h, hkv, extra = case
    q, k, v, _, ak, av = _inputs(spatial, h, hkv, extra)
    res = nd.shard_na(q, k, v, ks, splits, st, dil, causal, additional_keys=ak, additional_values=av)
    assert len(res["ranks"]) > 1
    assert any(r[2] != r[0] or r[3] != r[1] for r in res["ranks"])  # halos were needed
    out, lse = NA[len(spatial)](q, k, v, ks, st, dil, causal, additional_keys=ak, additional_values=av,
                                backend="reference", return_lse=True)
    # Each query row sums the same keys in the same order: bitwise equal.
    np.testing.assert_array_equal(res["out"], out)
    np.testing.assert_array_equal(res["lse"], lse)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}d-{c[0]}-splits{c[5]}")
def test_shard_na_torch_gradients_equal_single_device(case):
    spatial, ks, st, dil, causal, splits, h, hkv, extra = case
    arrays = _inputs(spatial, h, hkv, extra, seed=1)
    q, k, v, do, ak, av = (None if a is None else torch.from_numpy(a) for a in arrays)
    res = nd.shard_na(q, k, v, ks, splits, st, dil, causal, additional_keys=ak, additional_values=av, dout=do)

    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (q, k, v, ak, av)]
    out = NA[len(spatial)](leaves[0], leaves[1], leaves[2], ks, st, dil, causal, additional_keys=leaves[3],
                           additional_values=leaves[4], backend="reference")
    out.backward(do)
    assert torch.equal(res["out"], out.detach())
    assert torch.equal(res["dquery"], leaves[0].grad)
    names = ["dkey", "dvalue"] + (["dadditional_keys", "dadditional_values"] if extra else [])
    for name, leaf in zip(names, leaves[1:]):
        want = leaf.grad
        err = (res[name] - want).abs().max().item()
        assert err <= 1e-12 * want.abs().max().item(), (name, err)


def test_na_subdomain_autograd_matches_explicit_backward():
    spatial, ks = (16,), 5
    q, k, v, do, _, _ = _inputs(spatial, 2, 1, 0, seed=3)
    q_lo, q_hi = 6, 11
    (kv_lo,), (kv_hi,) = nd.halo_box((q_lo,), (q_hi,), spatial, ks, 2, 1, False)
    assert (kv_lo, kv_hi) == nd.halo_range(q_lo, q_hi, 16, ks, 2, 1, False)
    lq, lk, lv, ldo = q[:, q_lo:q_hi], k[:, kv_lo:kv_hi], v[:, kv_lo:kv_hi], do[:, q_lo:q_hi]
    args = dict(kernel_size=ks, global_shape=spatial, q_origin=(q_lo,), kv_origin=(kv_lo,), stride=2)
    out, lse = nd.na_subdomain(lq, lk, lv, return_lse=True, **args)
    dq, dk, dv, dak, dav = nd.na_subdomain_backward(lq, lk, lv, out, lse, ldo, **args)
    assert dak is None and dav is None
    tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True) for x in (lq, lk, lv))
    tout = nd.na_subdomain(tq, tk, tv, **args)
    tout.backward(torch.from_numpy(np.ascontiguousarray(ldo)))
    assert np.array_equal(tout.detach().numpy(), out)
    assert np.array_equal(tq.grad.numpy(), dq)
    assert np.array_equal(tk.grad.numpy(), dk)
    assert np.array_equal(tv.grad.numpy(), dv)


def test_errors():
    q, k, v, _, _, _ = _inputs((16,), 2, 2, 0)
    with pytest.raises(ValueError, match="the low halo is missing 1 tokens"):
        nd.na_subdomain(q[:, 6:10], k[:, 5:12], v[:, 5:12], 5, (16,), (6,), (5,))
    with pytest.raises(ValueError, match="the high halo is missing 1 tokens"):
        nd.na_subdomain(q[:, 6:10], k[:, 4:11], v[:, 4:11], 5, (16,), (6,), (4,))
    nd.na_subdomain(q[:, 6:10], k[:, 4:12], v[:, 4:12], 5, (16,), (6,), (4,))  # exact halo: fine
    with pytest.raises(NotImplementedError, match="sub-domain NA runs on the reference backend only"):
        nd.na_subdomain(q[:, 6:10].astype(np.float32), k[:, 4:12].astype(np.float32),
                        v[:, 4:12].astype(np.float32), 5, (16,), (6,), (4,), backend="cpu")
    with pytest.raises(ValueError, match="global_shape"):
        nd.na_subdomain(q, k, v, 5, (16, 3), (0,), (0,))
    with pytest.raises(ValueError, match="halo_range"):
        nd.halo_range(0, 4, 3, 5)


# ---- torch.distributed (gloo, one process per rank) ---------------------------------------------


def _worker(rank, world, init_file, out_dir, case):
    import torch.distributed as dist

    spatial, ks, st, dil, causal, axis, slab_sizes = case
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        arrays = _inputs(spatial, 2, 1, 0, seed=7)
        q, k, v, do = (torch.from_numpy(a) for a in arrays[:4])
        lo = sum(slab_sizes[:rank])
        hi = lo + slab_sizes[rank]
        sl = [slice(None)] * q.dim()
        sl[axis + 1] = slice(lo, hi)
        sl = tuple(sl)
        lq, lk, lv = (x[sl].clone().requires_grad_(True) for x in (q, k, v))
        out = nd.distributed_na(lq, lk, lv, ks, axis, slab_sizes, st, dil, causal)
        out.backward(do[sl].contiguous())
        torch.save({"out": out.detach(), "dq": lq.grad, "dk": lk.grad, "dv": lv.grad},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


DIST_CASES = [
    ((20,), 5, 1, 1, False, 0, [10, 10]),
    ((23,), 4, 3, 2, True, 0, [8, 7, 8]),
    ((22,), 7, 2, 1, False, 0, [3, 9, 2, 8]),  # slabs smaller than the halo: keys from 2 ranks away
    ((12, 9), (3, 4), (2, 1), (1, 2), (False, True), 1, [4, 5]),
]


@pytest.mark.parametrize("case", DIST_CASES, ids=lambda c: f"{c[0]}-axis{c[5]}-R{len(c[6])}")
def test_distributed_na_gloo(case):
    import torch.multiprocessing as mp

    spatial, ks, st, dil, causal, axis, slab_sizes = case
    world = len(slab_sizes)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), tmp, case), nprocs=world, join=True)
        parts = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]
    arrays = _inputs(spatial, 2, 1, 0, seed=7)
    q, k, v, do = (torch.from_numpy(a).requires_grad_(i < 3) for i, a in enumerate(arrays[:4]))
    out = NA[len(spatial)](q, k, v, ks, st, dil, causal, backend="reference")
    out.backward(do)
    got = {name: torch.cat([p[name] for p in parts], axis + 1) for name in ("out", "dq", "dk", "dv")}
    assert torch.equal(got["out"], out.detach())
    assert torch.equal(got["dq"], q.grad)
    for name, want in (("dk", k.grad), ("dv", v.grad)):
        err = (got[name] - want).abs().max().item()
        assert err <= 1e-12 * want.abs().max().item(), (name, err)
