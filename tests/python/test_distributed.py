"""nattn.distributed (issue 6): sub-domain NA with halos equals single-device NA on the reference
backend, simulated in one process (shard_na), the rank plans of distributed_na (interior/boundary
split, halo pieces) checked for every rank in one process, and distributed_na across 4 CPU processes
over gloo (1-3 split axes, subgroups, every overlap mode, GQA, additional KV, LSE and its gradient).
tests/python/dist_gpu_check.py runs the NCCL version on several GPUs (torchrun)."""

import itertools
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}d-{c[0]}-splits{c[5]}")
def test_shard_na_cuda_equals_single_gpu(case, dtype):
    """The ranks simulated on one GPU (cutlass-fna on sub-domains, chosen automatically) against the
    single-domain run on the same GPU: forward rows and dQ, and dK/dV summed over the ranks."""
    spatial, ks, st, dil, causal, splits, h, hkv, extra = case
    dt = getattr(torch, dtype)
    arrays = _inputs(spatial, h, hkv, extra, seed=2, dim=32, dim_v=32)
    q, k, v, do, ak, av = (None if a is None else torch.from_numpy(a).to("cuda", dt) for a in arrays)
    res = nd.shard_na(q, k, v, ks, splits, st, dil, causal, additional_keys=ak, additional_values=av, dout=do)
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (q, k, v, ak, av)]
    out = NA[len(spatial)](leaves[0], leaves[1], leaves[2], ks, st, dil, causal, additional_keys=leaves[3],
                           additional_values=leaves[4])
    out.backward(do)
    # fp32: rounding of a different tile grouping; bf16: per-rank partial dK/dV are rounded before the sum
    tol = 1e-5 if dtype == "float32" else 2e-2
    names = ["out", "dquery", "dkey", "dvalue"] + (["dadditional_keys", "dadditional_values"] if extra else [])
    wants = [out.detach()] + [leaf.grad for leaf in leaves[:3]] + ([leaves[3].grad, leaves[4].grad] if extra else [])
    for name, want in zip(names, wants):
        got = res[name].float()
        assert torch.isfinite(got).all(), name
        err = (got - want.float()).abs().max().item()
        assert err <= tol * max(1.0, want.float().abs().max().item()), (name, err)


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


def test_na_subdomain_lse_gradient_equals_single_device():
    """The LSE of na_subdomain is differentiable (as na1d/na2d/na3d's): its gradient reaches q/k/v."""
    q, k, v, do = (torch.from_numpy(a) for a in _inputs((16,), 2, 1, 0, seed=6)[:4])
    dl = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 16, 2)))
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out, lse = nattn.na1d(*leaves, 5, 2, 1, True, backend="reference", return_lse=True)
    torch.autograd.backward([out, lse], [do, dl])
    # Ranks [0, 7) and [7, 16): each runs its queries on its halo box; key gradients are summed.
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for q_lo, q_hi in ((0, 7), (7, 16)):
        (kv_lo,), (kv_hi,) = nd.halo_box((q_lo,), (q_hi,), (16,), 5, 2, 1, True)
        lq, lk, lv = (x[:, a:b].clone().requires_grad_(True) for x, a, b in
                      ((q, q_lo, q_hi), (k, kv_lo, kv_hi), (v, kv_lo, kv_hi)))
        o, ls = nd.na_subdomain(lq, lk, lv, 5, (16,), (q_lo,), (kv_lo,), 2, 1, True, return_lse=True)
        torch.autograd.backward([o, ls], [do[:, q_lo:q_hi], dl[:, q_lo:q_hi]])
        assert torch.equal(o, out[:, q_lo:q_hi].detach()) and torch.equal(ls, lse[:, q_lo:q_hi].detach())
        assert torch.equal(lq.grad, leaves[0].grad[:, q_lo:q_hi])
        dk[:, kv_lo:kv_hi] += lk.grad
        dv[:, kv_lo:kv_hi] += lv.grad
    assert (dk - leaves[1].grad).abs().max() <= 1e-12 * leaves[1].grad.abs().max()
    assert (dv - leaves[2].grad).abs().max() <= 1e-12 * leaves[2].grad.abs().max()


def test_errors():
    q, k, v, _, _, _ = _inputs((16,), 2, 2, 0)
    with pytest.raises(ValueError, match="the low halo is missing 1 tokens"):
        nd.na_subdomain(q[:, 6:10], k[:, 5:12], v[:, 5:12], 5, (16,), (6,), (5,))
    with pytest.raises(ValueError, match="the high halo is missing 1 tokens"):
        nd.na_subdomain(q[:, 6:10], k[:, 4:11], v[:, 4:11], 5, (16,), (6,), (4,))
    nd.na_subdomain(q[:, 6:10], k[:, 4:12], v[:, 4:12], 5, (16,), (6,), (4,))  # exact halo: fine
    with pytest.raises(NotImplementedError, match="sub-domain NA runs on the reference and cutlass-fna backends only"):
        nd.na_subdomain(q[:, 6:10].astype(np.float32), k[:, 4:12].astype(np.float32),
                        v[:, 4:12].astype(np.float32), 5, (16,), (6,), (4,), backend="cpu")
    with pytest.raises(ValueError, match="global_shape"):
        nd.na_subdomain(q, k, v, 5, (16, 3), (0,), (0,))
    with pytest.raises(ValueError, match="halo_range"):
        nd.halo_range(0, 4, 3, 5)


# ---- distributed_na: the rank plan (no processes) ---------------------------------------------------


def _plan_cases():
    # (global_shape, axes, sizes, kernel_size, stride, dilation, is_causal)
    return [
        ((22,), (0,), ((3, 9, 2, 8),), (7,), (2,), (1,), (False,)),
        ((40,), (0,), ((10, 10, 10, 10),), (5,), (1,), (2,), (True,)),
        ((12, 10), (0, 1), ((5, 7), (6, 4)), (3, 4), (2, 1), (1, 2), (False, True)),
        ((20, 20), (0, 1), ((10, 10), (10, 10)), (5, 5), (1, 1), (1, 1), (False, False)),
        ((8, 7, 9), (0, 2), ((4, 4), (5, 4)), (3, 3, 3), (1, 1, 2), (2, 1, 1), (False, False, True)),
        ((5, 8, 8), (0, 1, 2), ((5,), (4, 4), (3, 5)), (3, 3, 3), (1, 2, 1), (1, 1, 2), (False, False, False)),
        ((30, 12, 16), (0,), ((8, 8, 7, 7),), (18, 5, 5), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ]


def _cells(box):
    return set(itertools.product(*[range(lo, hi) for lo, hi in box]))


@pytest.mark.parametrize("overlap", [True, False])
def test_plan_partitions_and_exchanges_are_consistent(overlap):
    """For every rank: the interior and boundary boxes partition the slab; the interior's windows stay
    in the slab; own part plus received pieces partition the halo box; what r sends to d is what d
    receives from r; each box's halo lies inside the halo box."""
    splits = multi_box = 0
    for shape, axes, sizes, ks, st, dil, causal in _plan_cases():
        params = (ks, st, dil, causal)
        world = int(np.prod([len(s) for s in sizes]))
        plans = [nd._make_plan(shape, axes, sizes, r, params, overlap) for r in range(world)]
        assert set().union(*[_cells(p.slab) for p in plans]) == _cells(tuple((0, x) for x in shape))
        for r, p in enumerate(plans):
            lo, hi = nd.halo_box([b[0] for b in p.slab], [b[1] for b in p.slab], shape, ks, st, dil, causal)
            assert all(p.halo[a] == ((lo[a], hi[a]) if a in axes else (0, shape[a])) for a in range(len(shape)))
            boxes = p.boundary + ([p.interior] if p.interior else [])
            cells = [_cells(b) for b in boxes]
            assert sum(len(c) for c in cells) == len(_cells(p.slab)) and set().union(*cells) == _cells(p.slab)
            if p.interior:
                lo, hi = nd.halo_box([b[0] for b in p.interior], [b[1] for b in p.interior], shape, ks, st, dil,
                                     causal)
                assert all(s[0] <= a and b <= s[1] for a, b, s in zip(lo, hi, p.slab))
                splits += bool(p.boundary)
                multi_box += len(p.boundary) > 1
            else:
                assert p.boundary == [p.slab]
            for kv in p.boundary_kv:
                assert all(h[0] <= a[0] and a[1] <= h[1] for a, h in zip(kv, p.halo))
            pieces = [_cells(b) for _, b in p.recvs] + ([_cells(p.own)] if p.own else [])
            assert sum(len(c) for c in pieces) == len(_cells(p.halo)) and set().union(*pieces) == _cells(p.halo)
            for d, box in p.sends:
                assert (r, box) in plans[d].recvs
            for s, box in p.recvs:
                assert (r, box) in plans[s].sends
    if overlap:
        assert splits > 5 and multi_box > 0  # the cases exercise the interior/boundary split


def test_even_slabs_and_rank_slices():
    assert nd.even_slabs(30, 4) == [8, 8, 7, 7]
    assert nd.even_slabs(5, 5) == [1] * 5
    with pytest.raises(ValueError, match="parts=4"):
        nd.even_slabs(3, 4)
    x = np.arange(2 * 6 * 5).reshape(1, 6, 5, 2, 1)
    sl = nd.rank_slices(3, 2, (0, 1), [[2, 4], [3, 2]])  # grid (2, 2): rank 3 = coordinates (1, 1)
    assert np.array_equal(x[sl], x[:, 2:6, 3:5])
    assert nd.rank_slices(1, 1, 0, [4, 6]) == (slice(None), slice(4, 10))


# ---- distributed_na: one process (world size 1) and every validation error ---------------------------


@pytest.fixture(scope="module")
def world1():
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            yield dist
        finally:
            dist.destroy_process_group()


@pytest.mark.parametrize("pad", [1, 8])
def test_distributed_na_one_rank_equals_single_device(world1, monkeypatch, pad):
    """One rank, no exchange: forward and backward (the LSE gradient included) equal na2d. pad=8: the
    value padding that folds the LSE gradient on CUDA, run on the CPU."""
    monkeypatch.setattr(nd, "_value_pad", lambda t: pad)
    q, k, v, do, ak, av = (torch.from_numpy(a) if a is not None else None for a in _inputs((9, 8), 2, 1, 2, seed=4))
    dl = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 9, 8, 2)))
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v, ak, av)]
    want, want_lse = nattn.na2d(*leaves[:3], (3, 5), 1, (2, 1), (False, True), additional_keys=leaves[3],
                                additional_values=leaves[4], backend="reference", return_lse=True)
    torch.autograd.backward([want, want_lse], [do, dl])
    for axis, sizes in ((1, [8]), ((0, 1), [[9], [8]])):
        for overlap in (True, False):
            mine = [x.clone().requires_grad_(True) for x in (q, k, v, ak, av)]
            out, lse = nd.distributed_na(*mine[:3], (3, 5), axis, sizes, 1, (2, 1), (False, True),
                                         additional_keys=mine[3], additional_values=mine[4], overlap=overlap,
                                         return_lse=True)
            torch.autograd.backward([out, lse], [do, dl])
            assert torch.equal(out, want) and torch.equal(lse, want_lse)
            assert torch.equal(mine[0].grad, leaves[0].grad)
            for got, ref in zip(mine[1:], leaves[1:]):
                _close(got.grad, ref.grad, 1e-12)


def test_distributed_na_errors(world1, monkeypatch):
    q, k, v, _, _, _ = (torch.from_numpy(a) if a is not None else None for a in _inputs((16, 6), 2, 1, 0))
    na = nd.distributed_na

    def bad(match, *args, **kw):
        with pytest.raises(ValueError, match=match):
            na(*args, **kw)

    bad(r"axis=2 is not valid for 2-D NA", q, k, v, 3, 2, [16])
    bad(r"axis=\(0, 0\) is not valid", q, k, v, 3, (0, 0), [[16], [6]])
    bad(r"axis=True is not valid", q, k, v, 3, True, [16])
    bad(r"axis='0' is not valid", q, k, v, 3, "0", [16])
    bad(r"slab_sizes=\[16, 6\] is not valid for axis=\(0, 1\)", q, k, v, 3, (0, 1), [16, 6])
    bad(r"slab_sizes=\[\[16\]\] is not valid for axis=\(0, 1\)", q, k, v, 3, (0, 1), [[16]])
    bad(r"slab_sizes=\[0, 16\] is not valid \(allowed: ints >= 1", q, k, v, 3, 0, [0, 16])
    bad(r"slab_sizes=\[True\] is not valid", q, k, v, 3, 0, [True])
    bad(r"slab_sizes=16 is not valid for axis=0", q, k, v, 3, 0, 16)
    bad(r"grid=\(2,\) does not match slab_sizes=\[16\] along axis=0 \(allowed: grid=\(1,\)", q, k, v, 3, 0, [16],
        grid=(2,))
    bad(r"grid=\(1, 0\) is not valid", q, k, v, 3, (0, 1), [[16], [6]], grid=(1, 0))
    bad(r"slab_sizes=\[8, 8\] make a grid of \(2,\) = 2 ranks but the process group has 1", q, k, v, 3, 0, [8, 8])
    bad(r"slab_sizes=\[\[16\], \[3, 3\]\] make a grid of \(1, 2\) = 2 ranks", q, k, v, 3, (0, 1), [[16], [3, 3]],
        grid=(1, 2))
    bad(r"rank 0 \(grid coordinates \(0,\)\) owns slab_sizes\[0\] = 12 tokens along axis 0, but query has 16", q,
        k, v, 3, 0, [12])
    bad(r"rank 0 \(grid coordinates \(0, 0\)\) owns slab_sizes\[1\]\[0\] = 5 tokens along axis 1, but query has 6",
        q, k, v, 3, (0, 1), [[16], [5]])
    bad(r"key must hold the tokens of the rank's slab", q, k[:, :8], v, 3, 0, [16])
    bad(r"value must have the dtype and device of query", q, k, v.float(), 3, 0, [16])
    bad(r"query must be a torch tensor \(got ndarray\)", q.numpy(), k, v, 3, 0, [16])
    bad(r"query must be \[batch, \*spatial, heads, head_dim\]", q[0, 0], k[0, 0], v[0, 0], 3, 0, [16])
    bad(r"additional_keys and additional_values must be given together", q, k, v, 3, 0, [16],
        additional_keys=k[:, 0])
    bad(r"overlap=1 is not valid \(allowed: True, False, 'heads', 'interior' or 'none'\)", q, k, v, 3, 0, [16],
        overlap=1)
    bad(r"return_lse=None is not valid", q, k, v, 3, 0, [16], return_lse=None)
    bad(r"backend=3 is not valid", q, k, v, 3, 0, [16], backend=3)
    bad(r"kernel_size \* dilation must not exceed the input extent on axis 1", q, k, v, 4, 0, [16], dilation=2)
    bad(r"kernel_size=1 is not valid", q, k, v, 1, 0, [16])
    bad(r"is_causal=1 is not valid", q, k, v, 3, 0, [16], is_causal=1)
    with pytest.raises(NotImplementedError, match="sub-domain NA runs on the reference"):
        na(q.float(), k.float(), v.float(), 3, 0, [16], backend="cpu")
    monkeypatch.setattr(world1, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed process group"):
        na(q, k, v, 3, 0, [16])


# ---- distributed_na over gloo: 4 CPU processes, every case in every overlap mode ----------------------------
#
# One spawn (process start-up dominates the runtime); 2- and 3-rank cases run on subgroups, which also
# checks that group ranks are mapped to global ranks for the point-to-point ops.

# (group ranks, spatial, kernel_size, stride, dilation, is_causal, axis, slab_sizes, heads, heads_kv, extra,
#  lse, dtype)
DIST_CASES = [
    ((0, 1, 2, 3), (22,), 7, 2, 1, False, 0, [3, 9, 2, 8], 2, 1, 0, False, "f64"),  # keys from 2 ranks away
    ((0, 1, 2, 3), (40,), 5, 1, 2, True, 0, [10, 10, 10, 10], 2, 2, 0, True, "f64"),
    ((0, 1, 2, 3), (12, 10), (3, 4), (2, 1), (1, 2), (False, True), (0, 1), [[5, 7], [6, 4]], 4, 2, 2, True,
     "f64"),
    ((0, 1, 2, 3), (20, 20), 5, 1, 1, False, (0, 1), [[10, 10], [10, 10]], 2, 1, 3, False, "f64"),
    ((0, 1, 2, 3), (8, 7, 9), 3, (1, 1, 2), (2, 1, 1), (False, False, True), (0, 2), [[4, 4], [5, 4]], 2, 1, 0,
     True, "f64"),
    ((0, 1, 2, 3), (5, 8, 8), 3, (1, 2, 1), (1, 1, 2), False, (0, 1, 2), [[5], [4, 4], [3, 5]], 3, 3, 1, False,
     "f64"),
    ((0, 1, 2, 3), (16, 6), (5, 3), 1, 1, (True, False), 0, [4, 4, 4, 4], 2, 1, 0, True, "f64"),
    ((0, 1, 2, 3), (12, 12), 3, 1, 1, False, (1, 0), [[6, 6], [7, 5]], 2, 2, 0, True, "f32"),
    ((2, 3), (20,), 5, 1, 1, True, 0, [10, 10], 2, 1, 0, False, "f64"),  # rank 0 of the pair: all interior
    ((2, 3), (12, 9), (3, 4), (2, 1), (1, 2), (False, True), 1, [4, 5], 2, 1, 2, True, "f64"),
    ((1, 2, 3), (23,), 4, 3, 2, True, 0, [8, 7, 8], 2, 1, 0, True, "f64"),
    ((1, 2, 3), (6, 7, 5), (3, 3, 2), (1, 2, 1), (2, 1, 1), (False, True, False), 1, [2, 3, 2], 2, 1, 1, False,
     "f64"),
]


# overlap modes every case runs: True (head chunks with >= 2 key/value heads, else the interior
# split), the interior split, none.
OVERLAPS = (True, "interior", False)


def _case_inputs(case, seed):
    spatial, h, hkv, extra, lse, dtype = case[1], case[8], case[9], case[10], case[11], case[12]
    arrays = _inputs(spatial, h, hkv, extra, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    dl = rng.standard_normal((2, *spatial, h)) if lse else None
    dt = torch.float64 if dtype == "f64" else torch.float32
    return [None if a is None else torch.from_numpy(a).to(dt) for a in arrays + (dl,)]


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        groups = {}
        for case in DIST_CASES:
            ranks = case[0]
            if ranks not in groups:
                groups[ranks] = None if len(ranks) == world else dist.new_group(list(ranks))
        results = {}
        for ci, case in enumerate(DIST_CASES):
            ranks, spatial, ks, st, dil, causal, axis, sizes = case[:8]
            if rank not in ranks:
                continue
            group, grank = groups[ranks], ranks.index(rank)
            q, k, v, do, ak, av, dl = _case_inputs(case, seed=ci)
            sl = nd.rank_slices(grank, len(spatial), axis, sizes)
            for overlap in OVERLAPS:
                lq, lk, lv = (x[sl].clone().requires_grad_(True) for x in (q, k, v))
                lak, lav = (None if x is None else x.clone().requires_grad_(True) for x in (ak, av))
                out, lse = nd.distributed_na(lq, lk, lv, ks, axis, sizes, st, dil, causal,
                                             additional_keys=lak, additional_values=lav, group=group,
                                             overlap=overlap, return_lse=True)
                loss = (out * do[sl]).sum() + ((lse * dl[sl]).sum() if dl is not None else 0)
                loss.backward()
                cfg = nd._setup(lq, lk, lv, ks, axis, sizes, st, dil, causal, group=group, overlap=overlap)
                results[(ci, overlap)] = dict(
                    out=out.detach(), lse=lse.detach(), dq=lq.grad, dk=lk.grad, dv=lv.grad,
                    dak=None if lak is None else lak.grad, dav=None if lav is None else lav.grad,
                    chunks=len(cfg.chunks) if cfg.chunks else 0, mode=cfg.overlap,
                    boxes=len(cfg.plan.boundary) + (cfg.plan.interior is not None), split=cfg.plan.interior
                    is not None and bool(cfg.plan.boundary), all_interior=not cfg.plan.boundary and
                    bool(cfg.plan.sends))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_results():
    import torch.multiprocessing as mp

    world = 4
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_dist_worker, args=(world, os.path.join(tmp, "init"), tmp), nprocs=world, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]


def _close(got, want, tol):
    err = (got - want).abs().max().item()
    assert err <= tol * want.abs().max().item(), err


@pytest.mark.parametrize("ci", range(len(DIST_CASES)),
                         ids=[f"R{len(c[0])}-{c[1]}-axis{c[6]}-{c[12]}" for c in DIST_CASES])
def test_distributed_na_gloo(gloo_results, ci):
    """Sharded forward and backward over gloo equal the single-device result: out, lse and dquery
    bitwise, dkey / dvalue / dadditional_* (summed by their owners, resp. over the ranks) within
    rounding; with and without overlap."""
    case = DIST_CASES[ci]
    ranks, spatial, ks, st, dil, causal, axis, sizes = case[:8]
    q, k, v, do, ak, av, dl = _case_inputs(case, seed=ci)
    leaves = [None if x is None else x.clone().requires_grad_(True) for x in (q, k, v, ak, av)]
    out, lse = NA[len(spatial)](leaves[0], leaves[1], leaves[2], ks, st, dil, causal, additional_keys=leaves[3],
                                additional_values=leaves[4], backend="reference", return_lse=True)
    loss = (out * do).sum() + ((lse * dl).sum() if dl is not None else 0)
    loss.backward()
    tol = 1e-12 if q.dtype == torch.float64 else 2e-6
    for overlap in OVERLAPS:
        parts = [gloo_results[r][(ci, overlap)] for r in ranks]
        got = {n: torch.empty_like(x) for n, x in (("out", out), ("lse", lse), ("dq", q), ("dk", k), ("dv", v))}
        for grank, part in enumerate(parts):
            sl = nd.rank_slices(grank, len(spatial), axis, sizes)
            for name in got:
                got[name][sl] = part[name]
        assert torch.equal(got["out"], out.detach())
        assert torch.equal(got["lse"], lse.detach())
        assert torch.equal(got["dq"], leaves[0].grad)
        _close(got["dk"], leaves[1].grad, tol)
        _close(got["dv"], leaves[2].grad, tol)
        if ak is not None:
            _close(sum(p["dak"] for p in parts), leaves[3].grad, tol)
            _close(sum(p["dav"] for p in parts), leaves[4].grad, tol)


def test_distributed_na_gloo_exercised_overlap(gloo_results):
    """The cases above really split interior and boundary queries (and onion boxes), have ranks with
    interior queries only that still send halos (and receive their gradients), pipeline head chunks
    (2 and 3 of them), and overlap=False runs one box per rank."""
    runs = [res for results in gloo_results for res in results.items()]
    interior = [r for (ci, ov), r in runs if r["mode"] == "interior"]
    assert sum(r["split"] for r in interior) >= 10
    assert any(r["boxes"] >= 4 for r in interior)
    assert any(r["all_interior"] for r in interior)
    assert all(r["boxes"] == 1 for (ci, ov), r in runs if ov is False)
    # overlap=True pipelines head chunks wherever there are >= 2 key/value heads (else the interior split)
    heads = [r for (ci, ov), r in runs if ov is True]
    assert all((r["mode"] == "heads") == (r["chunks"] >= 2) for r in heads)
    assert sum(r["mode"] == "heads" for r in heads) >= 10 and any(r["mode"] == "interior" for r in heads)
    assert any(r["chunks"] == 3 for r in heads)
