"""The PyTorch layer: autograd against golden gradients and an fp64 dense reference, the LSE
gradient, opcheck on every custom op, torch.compile(fullgraph=True) without recompiles, and a
small NeighborhoodAttention2D training loop. Skipped when torch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nattn  # noqa: E402
from conftest import backend_works, golden_cases, load_golden  # noqa: E402
from naive import na_mask  # noqa: E402

NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}


def dense_na(q, k, v, kernel_size, stride, dilation, is_causal, scale, add_k=None, add_v=None):
    """Differentiable fp64 dense masked attention (autograd oracle). q [B, *S, H, D]."""
    B, S, H, D = q.shape[0], tuple(q.shape[1:-2]), q.shape[-2], q.shape[-1]
    N = int(np.prod(S))
    mask = torch.from_numpy(na_mask(S, kernel_size, stride, dilation, is_causal))
    qf, kf, vf = (t.reshape(B, N, t.shape[-2], t.shape[-1]).double() for t in (q, k, v))
    if add_k is not None:
        kf = torch.cat([kf, add_k.double()], 1)
        vf = torch.cat([vf, add_v.double()], 1)
        mask = torch.cat([mask, torch.ones(N, add_k.shape[1], dtype=torch.bool)], 1)
    rep = H // kf.shape[2]
    kf, vf = kf.repeat_interleave(rep, 2), vf.repeat_interleave(rep, 2)
    s = torch.einsum("bnhd,bmhd->bhnm", qf, kf) * scale
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("bhnm,bmhd->bnhd", torch.softmax(s, -1), vf)
    return out.reshape(B, *S, H, vf.shape[-1]), lse.transpose(1, 2).reshape(B, *S, H)


def backends():
    return [b for b in ("reference", "cpu") if backend_works(b)]


@pytest.fixture(params=["reference", "cpu"])
def backend(request):
    if not backend_works(request.param):
        pytest.skip(f"{request.param} does not run NA in this build yet")
    return request.param


# ---- golden gradients through autograd ---------------------------------------------------------------


@pytest.mark.parametrize("case", golden_cases()[::3])
def test_golden_autograd(case, backend):
    meta, a = load_golden(case)
    t = {n: torch.from_numpy(x) for n, x in a.items()}
    q, k, v = (t[n].clone().requires_grad_() for n in ("q", "k", "v"))
    kw = dict(kernel_size=tuple(meta["kernel_size"]), stride=tuple(meta["stride"]),
              dilation=tuple(meta["dilation"]), is_causal=tuple(meta["is_causal"]), scale=meta["scale"],
              backend=backend)
    extra = meta["additional_kv"] > 0
    if extra:
        ak = t["additional_keys"].clone().requires_grad_()
        av = t["additional_values"].clone().requires_grad_()
        kw.update(additional_keys=ak, additional_values=av)
    out = NA[meta["rank"]](q, k, v, **kw)
    out.backward(t["dout"])
    torch.testing.assert_close(out.detach(), t["out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(q.grad, t["dq"], atol=1e-3, rtol=0)
    torch.testing.assert_close(k.grad, t["dk"], atol=1e-3, rtol=0)
    torch.testing.assert_close(v.grad, t["dv"], atol=1e-3, rtol=0)
    if extra:
        torch.testing.assert_close(ak.grad, t["d_additional_keys"], atol=1e-3, rtol=0)
        torch.testing.assert_close(av.grad, t["d_additional_values"], atol=1e-3, rtol=0)


# ---- gradients against an fp64 dense oracle, including the LSE gradient ------------------------------

CASES = [
    ((12,), (3,), (1,), (1,), (False,), 2, 2, 8, 8, 0),
    ((10,), (4,), (2,), (2,), (True,), 4, 2, 8, 16, 3),
    ((6, 7), (3, 2), (2, 1), (1, 3), (True, False), 2, 1, 8, 8, 0),
    ((5, 4, 6), (2, 3, 3), (1, 3, 2), (2, 1, 1), (False, False, True), 2, 2, 8, 4, 2),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("use_lse", [False, True])
def test_grads_vs_dense(case, use_lse, backend):
    spatial, ks, st, dil, causal, h, hkv, D, Dv, extra = case
    g = torch.Generator().manual_seed(sum(spatial))
    B = 2

    def r(*shape):
        return torch.randn(*shape, generator=g)

    q, k, v = r(B, *spatial, h, D), r(B, *spatial, hkv, D), r(B, *spatial, hkv, Dv)
    leaves = [q, k, v]
    if extra:
        leaves += [r(B, extra, hkv, D), r(B, extra, hkv, Dv)]
    w_out = r(B, *spatial, h, Dv)
    w_lse = r(B, *spatial, h)
    scale = 0.4

    def loss(fn, ts):
        kw = dict(additional_keys=ts[3], additional_values=ts[4]) if extra else {}
        if fn is dense_na:
            o, l = dense_na(*ts[:3], ks, st, dil, causal, scale, kw.get("additional_keys"),
                            kw.get("additional_values"))
        else:
            o, l = NA[len(spatial)](*ts[:3], ks, st, dil, causal, scale=scale, backend=backend, return_lse=True, **kw)
        total = (o.double() * w_out.double()).sum()
        if use_lse:
            total = total + (l.double() * w_lse.double()).sum()
        return total

    ours = [x.clone().requires_grad_() for x in leaves]
    ref = [x.clone().double().requires_grad_() for x in leaves]
    loss(None, ours).backward()
    loss(dense_na, ref).backward()
    for i, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=2e-4, rtol=1e-4, msg=lambda m: f"input {i}: {m}")


@pytest.mark.filterwarnings("ignore:Input #")
def test_gradcheck_fp32(backend):
    """torch.autograd.gradcheck in fp32 (the core takes fp32/fp16/bf16): loose eps/tolerances, with
    the LSE in the output so its gradient is checked too."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 8, generator=g, requires_grad=True) for _ in range(3))

    def f(q, k, v):
        o, l = nattn.na1d(q, k, v, 3, stride=2, is_causal=True, backend=backend, return_lse=True)
        return o, l

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-2, atol=2e-2, rtol=2e-2, fast_mode=False)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gradcheck_fp64_reference(rank):
    """torch.autograd.gradcheck in fp64 (default eps and tolerances) on the reference backend, which
    keeps fp64 end to end: NA with stride, dilation, causal axes, GQA, Dv != D, additional keys and
    the LSE as a second output."""
    g = torch.Generator().manual_seed(30 + rank)
    spatial = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}[rank]
    ks = {1: (4,), 2: (3, 2), 3: (2, 3, 3)}[rank]
    st = {1: (2,), 2: (1, 2), 3: (1, 1, 2)}[rank]
    dil = {1: (2,), 2: (1, 2), 3: (1, 1, 1)}[rank]
    causal = {1: (True,), 2: (False, True), 3: (True, False, False)}[rank]

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    q, k, v = r(1, *spatial, 2, 4), r(1, *spatial, 1, 4), r(1, *spatial, 1, 3)
    ak, av = r(1, 2, 1, 4), r(1, 2, 1, 3)

    def f(q, k, v, ak, av):
        return NA[rank](q, k, v, ks, st, dil, causal, additional_keys=ak, additional_values=av, backend="reference",
                        return_lse=True)

    out, lse = f(q, k, v, ak, av)
    assert out.dtype == torch.float64 and lse.dtype == torch.float64
    assert torch.autograd.gradcheck(f, (q, k, v, ak, av))


def test_gradcheck_fp64_attention_and_merge():
    g = torch.Generator().manual_seed(40)
    q, k, v = (torch.randn(1, 7, 2, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    seqlens = torch.tensor([3, 4], dtype=torch.int32)

    def f(q, k, v):
        o1, l1 = nattn.attention(q, k, v, is_causal=True, seqlens_Q=seqlens, seqlens_KV=seqlens, backend="reference",
                                 return_lse=True)
        o2, l2 = nattn.attention(q, k[:, :5], v[:, :5], backend="reference", return_lse=True)
        return nattn.merge_attentions([o1, o2], [l1, l2])

    assert torch.autograd.gradcheck(f, (q, k, v))
    with pytest.raises(NotImplementedError, match="fp64"):
        nattn.na1d(q, k, v, 3, backend="cpu")


def test_attention_grads_and_merge(backend):
    """Split the KV set, merge the parts: output, LSE and gradients equal full attention (exact
    because nattn's ops propagate the LSE gradient)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 7, 2, 8, generator=g), torch.randn(2, 13, 2, 8, generator=g), \
        torch.randn(2, 13, 2, 8, generator=g)
    dout = torch.randn(2, 7, 2, 8, generator=g)
    qa, ka, va = (x.clone().requires_grad_() for x in (q, k, v))
    full = nattn.attention(qa, ka, va, backend=backend)
    full.backward(dout)
    qb, kb, vb = (x.clone().requires_grad_() for x in (q, k, v))
    outs, lses = [], []
    for lo, hi in ((0, 5), (5, 9), (9, 13)):
        o, l = nattn.attention(qb, kb[:, lo:hi], vb[:, lo:hi], backend=backend, return_lse=True)
        outs.append(o)
        lses.append(l)
    merged, _ = nattn.merge_attentions(outs, lses)
    merged.backward(dout)
    torch.testing.assert_close(merged, full, atol=1e-5, rtol=0)
    for a, b in ((qa, qb), (ka, kb), (va, vb)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=0)


def test_attention_causal_and_varlen_grads(backend):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 12, 2, 8, generator=g, requires_grad=True) for _ in range(3))
    sq = torch.tensor([5, 7], dtype=torch.int32)
    out = nattn.attention(q, k, v, is_causal=True, seqlens_Q=sq, seqlens_KV=sq, backend=backend)
    out.square().sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    parts = [nattn.attention(q[:, a:b], k[:, a:b], v[:, a:b], is_causal=True, backend=backend)
             for a, b in ((0, 5), (5, 12))]
    torch.cat(parts, 1).square().sum().backward()
    for a, x in zip(grads, (q, k, v)):
        torch.testing.assert_close(a, x.grad, atol=1e-5, rtol=0)


def test_fp16_bf16(backend):
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (torch.randn(1, 8, 8, 2, 16, generator=g).to(dtype).requires_grad_() for _ in range(3))
        out = nattn.na2d(q, k, v, 3, backend=backend)
        assert out.dtype == dtype
        ref, _ = dense_na(q.detach(), k.detach(), v.detach(), (3, 3), (1, 1), (1, 1), (False, False), 16 ** -0.5)
        tol = 1e-2 if dtype == torch.float16 else 5e-2
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)
        out.sum().backward()
        assert q.grad.dtype == dtype and torch.isfinite(q.grad.float()).all()


def test_non_contiguous_torch(backend):
    g = torch.Generator().manual_seed(4)
    base = torch.randn(2, 4, 9, 10, 16, generator=g)  # [B, H, X, Y, D] -> heads-last view
    q = base.permute(0, 2, 3, 1, 4).requires_grad_()
    out = nattn.na2d(q, q, q, 3, backend=backend)
    ref, _ = dense_na(q.detach(), q.detach(), q.detach(), (3, 3), (1, 1), (1, 1), (False, False), 0.25)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_deterministic_flag_recorded(backend):
    x = torch.randn(1, 8, 2, 8, requires_grad=True)
    torch.use_deterministic_algorithms(True)
    try:
        out = nattn.na1d(x, x, x, 3, backend=backend)
    finally:
        torch.use_deterministic_algorithms(False)
    out.sum().backward()
    assert x.grad is not None


# ---- opcheck -------------------------------------------------------------------------------------------


def _opcheck_na_args(backend, extra):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 6, 5, 2, 8, generator=g, requires_grad=True) for _ in range(3))
    ak = av = None
    if extra:
        ak, av = (torch.randn(1, 3, 2, 8, generator=g, requires_grad=True) for _ in range(2))
    return (q, k, v, ak, av, [3, 2], [1, 2], [1, 1], [False, True], 0.3, backend, [], [], "", backend, [], [], True,
            True)


@pytest.mark.parametrize("extra", [False, True])
def test_opcheck_na(extra, backend):
    args = _opcheck_na_args(backend, extra)
    torch.library.opcheck(torch.ops.nattn.na_forward.default, args)
    q, k, v, ak, av = (x.detach() if x is not None else None for x in args[:5])
    out, lse = torch.ops.nattn.na_forward(q, k, v, ak, av, *args[5:])
    bargs = (q, k, v, out, lse, torch.randn_like(out), ak, av, [3, 2], [1, 2], [1, 1], [False, True], 0.3, backend,
             [], [], True)
    torch.library.opcheck(torch.ops.nattn.na_backward.default, bargs)


@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck_fmha(varlen, backend):
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 9, 2, 8, generator=g, requires_grad=True) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32) if varlen else None
    mx = 5 if varlen else 0
    args = (q, k, v, True, 0.3, cu, cu, mx, mx, backend, [], [], "", backend, [], [], True, True)
    torch.library.opcheck(torch.ops.nattn.fmha_forward.default, args)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    out, lse = torch.ops.nattn.fmha_forward(qd, kd, vd, *args[3:])
    bargs = (qd, kd, vd, out, lse, torch.randn_like(out), True, 0.3, cu, cu, mx, mx, backend, [], [], True)
    torch.library.opcheck(torch.ops.nattn.fmha_backward.default, bargs)


@pytest.mark.parametrize("extra", [False, True])
def test_eager_path_matches_custom_op(extra, backend):
    """Plain tensors in eager mode skip torch.library's dispatch (nattn._torch_ops._eager): the same
    outputs and gradients, bit for bit, as the custom op with its registered autograd."""
    from nattn import _torch_ops

    args = _opcheck_na_args(backend, extra)
    tensors = [x for x in args[:5] if x is not None]
    assert _torch_ops._eager(*args[:5])
    g = torch.Generator().manual_seed(9)
    dout = torch.randn(1, 6, 5, 2, 8, generator=g)
    dlse = torch.randn(1, 6, 5, 2, generator=g)
    results = []
    for call in (lambda: torch.ops.nattn.na_forward(*args),
                 lambda: _torch_ops._call(torch.ops.nattn.na_forward, _torch_ops._na_forward_impl,
                                          _torch_ops._NaEager, args, args[:5], True)):
        for t in tensors:
            t.grad = None
        out, lse = call()
        assert out.requires_grad and lse.requires_grad
        torch.autograd.backward((out, lse), (dout, dlse))
        results.append([out.detach(), lse.detach()] + [t.grad.clone() for t in tensors])
    for a, b in zip(*results):
        assert torch.equal(a, b)
    # Without grad: the plain forward, no autograd graph.
    with torch.no_grad():
        out, lse = _torch_ops._call(torch.ops.nattn.na_forward, _torch_ops._na_forward_impl, _torch_ops._NaEager,
                                    args, args[:5], False)
    assert not out.requires_grad and torch.equal(out, results[0][0])


def test_eager_path_not_taken_for_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from nattn import _torch_ops

    with FakeTensorMode():
        x = torch.empty(2, 3)
        assert not _torch_ops._eager(x)
    assert _torch_ops._eager(torch.empty(2, 3), None)


# ---- torch.compile -------------------------------------------------------------------------------------


def test_compile_fullgraph_no_recompile(backend):
    import torch._dynamo as dynamo

    dynamo.reset()
    g = torch.Generator().manual_seed(7)

    def block(q, k, v, ak, av, kk, vv):
        o1, l1 = nattn.na2d(q, k, v, (3, 5), stride=(1, 2), is_causal=(False, True), additional_keys=ak,
                            additional_values=av, backend=backend, return_lse=True)
        o2 = nattn.na2d(q, k, v, (8, 6), backend=backend)  # self-attention fast path
        o3, l3 = nattn.attention(q.flatten(1, 2), kk, vv, backend=backend, return_lse=True)
        m, _ = nattn.merge_attentions([o1.flatten(1, 2), o3], [l1.flatten(1, 2), l3])
        return m.unflatten(1, (8, 6)) + o2

    def make():
        q, k, v = (torch.randn(2, 8, 6, 2, 8, generator=g, requires_grad=True) for _ in range(3))
        ak, av = (torch.randn(2, 3, 2, 8, generator=g, requires_grad=True) for _ in range(2))
        kk, vv = (torch.randn(2, 5, 2, 8, generator=g, requires_grad=True) for _ in range(2))
        return [q, k, v, ak, av, kk, vv]

    from torch._dynamo import testing as dynamo_testing

    counter = dynamo_testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(block, fullgraph=True, backend=counter)
    with dynamo.config.patch(recompile_limit=1, error_on_recompile=True):
        for _ in range(2):
            ins = make()
            ref_ins = [x.detach().clone().requires_grad_() for x in ins]
            out = compiled(*ins)
            ref = block(*ref_ins)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
            out.sum().backward()
            ref.sum().backward()
            for a, b in zip(ins, ref_ins):
                torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=0)
    assert counter.frame_count == 1


def test_compile_inductor_module(auto_backend):
    from torch import _dynamo

    _dynamo.reset()
    torch.manual_seed(8)
    model = nattn.NeighborhoodAttention2D(16, 2, 3)
    x = torch.randn(2, 7, 9, 16)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.fixture
def auto_backend(monkeypatch):
    """Modules choose their backend automatically (cpu on CPU tensors). While the cpu backend is
    still a stub in this build, route automatic choices to the reference backend instead."""
    if backend_works("cpu"):
        return "cpu"
    from nattn import _torch_ops

    na, fmha = _torch_ops.na, _torch_ops.fmha
    monkeypatch.setattr(_torch_ops, "na", lambda *a: na(*a[:7], a[7] or "reference", *a[8:]))
    monkeypatch.setattr(_torch_ops, "fmha", lambda *a: fmha(*a[:6], a[6] or "reference", *a[7:]))
    return "reference"


# ---- modules -------------------------------------------------------------------------------------------


def test_module_validation(auto_backend):
    with pytest.raises(ValueError, match="divisible"):
        nattn.NeighborhoodAttention2D(10, 3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        nattn.NeighborhoodAttention2D(16, 2, 1)
    with pytest.raises(ValueError, match="is_causal"):
        nattn.NeighborhoodAttention1D(16, 2, 3, is_causal=1)
    m = nattn.NeighborhoodAttention3D(16, 2, 2)
    with pytest.raises(ValueError, match="5-D input"):
        m(torch.randn(1, 4, 4, 16))
    with pytest.raises(ValueError, match="embed_dim=16"):
        m(torch.randn(1, 4, 4, 4, 8))
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        nattn.NeighborhoodAttention1D(16, 2, 5, dilation=2)(torch.randn(1, 8, 16))
    assert "head_dim=8" in repr(m)


def test_module_matches_dense(auto_backend):
    torch.manual_seed(9)
    m = nattn.NeighborhoodAttention1D(16, 2, 5, dilation=2, is_causal=True)
    x = torch.randn(2, 13, 16)
    qkv = m.qkv(x).reshape(2, 13, 3, 2, 8)
    q, k, v = qkv.unbind(2)
    o, _ = dense_na(q, k, v, (5,), (1,), (2,), (True,), 8 ** -0.5)
    ref = m.proj(o.float().reshape(2, 13, 16))
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


def test_training_loop_loss_goes_down(auto_backend):
    torch.manual_seed(10)
    model = torch.nn.Sequential(nattn.NeighborhoodAttention2D(16, 2, 3), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x = torch.randn(4, 8, 8, 16)
    target = torch.randn(4, 8, 8, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---- flex backends -------------------------------------------------------------------------------------


FLEX_CASES = [
    ((12,), (3,), (1,), (1,), (False,), 0),
    ((6, 7), (3, 2), (2, 1), (1, 3), (True, False), 3),
    ((5, 4, 6), (2, 3, 3), (1, 3, 2), (2, 1, 1), (False, False, True), 2),
]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("case", FLEX_CASES)
def test_flex_fna_forward(case):
    spatial, ks, st, dil, causal, extra = case
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, *spatial, 4, 16, generator=g)
    k, v = (torch.randn(2, *spatial, 2, 16, generator=g) for _ in range(2))
    kw = {}
    if extra:
        kw = dict(additional_keys=torch.randn(2, extra, 2, 16, generator=g),
                  additional_values=torch.randn(2, extra, 2, 16, generator=g))
    out, lse = NA[len(spatial)](q, k, v, ks, st, dil, causal, backend="flex-fna", return_lse=True, **kw)
    ro, rl = dense_na(q, k, v, ks, st, dil, causal, 0.25, kw.get("additional_keys"), kw.get("additional_values"))
    torch.testing.assert_close(out.double(), ro, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse.double(), rl, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_fmha_and_errors():
    g = torch.Generator().manual_seed(12)
    q, k, v = torch.randn(1, 9, 2, 16, generator=g), torch.randn(1, 5, 1, 16, generator=g), \
        torch.randn(1, 5, 1, 16, generator=g)
    out, lse = nattn.attention(q, k, v, backend="flex-fmha", return_lse=True)
    ref_out, ref_lse = nattn.attention(q, k, v, backend="reference", return_lse=True)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=0)
    with pytest.raises(NotImplementedError, match="causal"):
        nattn.attention(q, k, v, is_causal=True, backend="flex-fmha")
    with pytest.raises(NotImplementedError, match="no backward pass on CPU"):
        nattn.na1d(q.requires_grad_(), q, q, 3, backend="flex-fna")
    with pytest.raises(RuntimeError, match="allow_flex_compile"):
        nattn.na1d(q.detach(), q.detach(), q.detach(), 3, backend="flex-fna", torch_compile=True)
    with pytest.raises(NotImplementedError, match="torch tensors only"):
        nattn.na1d(q.detach().numpy(), q.detach().numpy(), q.detach().numpy(), 3, backend="flex-fna")


PERMUTE_CASES = [((10,), (4,), (2,)), ((5, 6), (2, 4), (1, 2)), ((7, 9, 6), (2, 4, 2), (2, 1, 3)),
                 ((8, 8), (8, 8), (1, 1))]


@pytest.mark.parametrize("spatial,tile,dil", PERMUTE_CASES)
def test_flex_token_permutation_matches_core(spatial, tile, dil):
    """The flex backend's torch permutation equals the core's token_permute (row-major order) and
    round-trips exactly."""
    from nattn import _flex
    from nattn._lib import lib

    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, *spatial, 3, 5, generator=g)
    got = _flex.permute_tokens(x, tile, dil)
    shape = lib.token_permute_shape(list(x.shape), list(tile), list(dil))
    want = np.empty(shape, dtype=np.float32)
    lib.token_permute(x.numpy(), want, list(tile), list(dil), False)
    assert tuple(got.shape) == tuple(shape)
    assert torch.equal(got, torch.from_numpy(want))
    assert torch.equal(_flex.unpermute_tokens(got, spatial, tile, dil), x)


FLEX_TILED_CASES = [
    ((70,), (7,), (2,), (2,), (True,), 0, (64,)),
    ((13, 11), (5, 3), (2, 1), (1, 3), (False, True), 3, (8, 8)),
    ((9, 20), (3, 7), (1, 1), (2, 1), (False, False), 0, (4, 16)),
    ((6, 9, 10), (3, 3, 5), (1, 2, 1), (1, 2, 1), (False, True, False), 2, (2, 4, 8)),
    ((5, 8, 8), (3, 4, 5), (3, 1, 1), (1, 1, 1), (True, False, False), 0, (4, 4, 4)),
]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("case", FLEX_TILED_CASES)
def test_flex_fna_tiled_forward(case):
    """flex-fna with tile shapes (token permutation + one sparse block per tile) equals the fp64
    dense oracle, padding, dilation groups and additional keys included."""
    spatial, ks, st, dil, causal, extra, tile = case
    g = torch.Generator().manual_seed(15)
    q = torch.randn(2, *spatial, 4, 16, generator=g)
    k, v = (torch.randn(2, *spatial, 2, 16, generator=g) for _ in range(2))
    kw = {}
    if extra:
        kw = dict(additional_keys=torch.randn(2, extra, 2, 16, generator=g),
                  additional_values=torch.randn(2, extra, 2, 16, generator=g))
    configs = nattn.get_configs_for_flex_fna(q, k, v)
    assert (tile, tile) in configs, configs
    out, lse = NA[len(spatial)](q, k, v, ks, st, dil, causal, backend="flex-fna", return_lse=True,
                                q_tile_shape=tile, kv_tile_shape=tile, **kw)
    ro, rl = dense_na(q, k, v, ks, st, dil, causal, 0.25, kw.get("additional_keys"), kw.get("additional_values"))
    torch.testing.assert_close(out.double(), ro, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse.double(), rl, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_block_masks_are_reused():
    """The block mask of a geometry is built once; another geometry gets its own."""
    from nattn import _flex

    _flex._block_masks.clear()
    q = torch.randn(1, 9, 10, 2, 16)
    a = nattn.na2d(q, q, q, 3, backend="flex-fna")
    b = nattn.na2d(q * 2, q, q, 3, backend="flex-fna")
    assert len(_flex._block_masks) == 1
    nattn.na2d(q, q, q, 5, backend="flex-fna")
    nattn.na2d(q, q, q, 3, backend="flex-fna", q_tile_shape=(8, 8), kv_tile_shape=(8, 8))
    assert len(_flex._block_masks) == 3
    ref, _ = dense_na(q * 2, q, q, (3, 3), (1, 1), (1, 1), (False, False), 0.25)
    torch.testing.assert_close(b.double(), ref, atol=1e-5, rtol=0)
    assert not torch.equal(a, b)


def test_flex_fna_rejects_unlisted_tiles():
    q = torch.randn(1, 8, 8, 2, 16)
    with pytest.raises(ValueError, match="not a flex-fna configuration"):
        nattn.na2d(q, q, q, 3, backend="flex-fna", q_tile_shape=(2, 32), kv_tile_shape=(2, 32))


@pytest.mark.skipif(not __import__("os").environ.get("NATTN_RUN_SLOW"), reason="compiles flex kernels (~1 min); "
                    "set NATTN_RUN_SLOW=1")
def test_flex_compiled_forward():
    g = torch.Generator().manual_seed(13)
    q = torch.randn(2, 6, 7, 4, 16, generator=g)
    k, v = (torch.randn(2, 6, 7, 2, 16, generator=g) for _ in range(2))
    nattn.allow_flex_compile(True)
    try:
        out = nattn.na2d(q, k, v, (3, 2), (2, 1), (1, 3), (True, False), backend="flex-fna", torch_compile=True)
    finally:
        nattn.disable_flex_compile()
    ref, _ = dense_na(q, k, v, (3, 2), (2, 1), (1, 3), (True, False), 0.25)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


# ---- profiler ------------------------------------------------------------------------------------------


def test_profiler_runs(capsys, tmp_path):
    from nattn import profiler

    path = tmp_path / "p.json"
    assert profiler.main(["-i", "12", "10", "-w", "3", "-n", "2", "-d", "16", "--backprop", "--warmup-steps", "1",
                          "--iterations", "2", "--json", str(path), "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert "Profiler results" in out and "NaForward" in out and "NaBackward" in out and "SdpaForward" in out
    import json

    data = json.loads(path.read_text())
    assert data["problem"]["window_size"] == [3, 3] and data["results"][0]["calls"] == 2
    assert profiler.main(["-i", "12", "10", "-w", "3", "--dry-run", "--quiet"]) == 0
    assert "Forward pass configurations" in capsys.readouterr().out
    assert profiler.main(["-i", "12", "-w", "13"]) == 2
    assert "kernel_size * dilation" in capsys.readouterr().err
    assert profiler.main(["-i", "12", "-c", "False", "x"]) == 2
    assert profiler.main(["-i", "12", "--dry-run", "--optimize"]) == 2


def test_compile_dynamic_varlen(backend):
    """Compiled NA + precomputed-varlen FMHA with dynamic shapes: new sizes reuse the graph."""
    from torch import _dynamo
    from torch._dynamo import testing as dynamo_testing

    _dynamo.reset()
    counter = dynamo_testing.CompileCounterWithBackend("aot_eager")

    def f(q, cu, mq):
        o = nattn.na2d(q, q, q, 3, backend=backend)
        flat = q.flatten(1, 2)
        a = nattn.attention(flat, flat, flat, cumulative_seqlen_Q=cu, cumulative_seqlen_KV=cu, max_seqlen_Q=mq,
                            max_seqlen_KV=mq, backend=backend)
        return o.sum() + a.sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend=counter)
    for x in (8, 10, 12, 14):
        q = torch.randn(1, x, 9, 2, 8, requires_grad=True)
        n = x * 9
        cu = torch.tensor([0, 5, n], dtype=torch.int32)
        got = compiled(q, cu, n - 5)
        got.backward()
        torch.testing.assert_close(got.detach(), f(q.detach(), cu, n - 5), atol=1e-4, rtol=1e-5)
    assert counter.frame_count <= 2  # the first (static) graph, then one dynamic graph for every size
