"""The PyTorch layer on CUDA tensors: every CUDA backend present in this build (cutlass-fna/-fmha,
hopper-*, flex-*) against the fp64 `reference` backend run on CPU copies of the same inputs, through
the public Python API: golden cases, random sweeps, autograd, streams, opcheck, torch.compile and a
small training loop. Skipped without torch, without a GPU, or when the package was built without
the CUDA backends (`pip install . -C cmake.define.NATTN_ENABLE_CUDA=ON`)."""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import nattn  # noqa: E402
from conftest import golden_cases, load_golden  # noqa: E402

NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}
DEV = torch.device("cuda")
# max |error| for outputs and LSE; gradients get GRAD_FACTOR x this, relative to their magnitude.
# fp32 matches the golden README's 1e-4 / 1e-3.
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}
GRAD_FACTOR = 10


def _runs(fn):
    try:
        fn()
        return True
    except NotImplementedError:
        return False


def _tiny(dtype=torch.float16, grad=False):
    # head dim 64: every CUDA backend family runs it (hopper-fmha takes 32, 64, 128 and 256)
    x = torch.randn(1, 16, 2, 64, device=DEV, dtype=dtype, requires_grad=grad)
    return x


_present = {}


def na_backend_present(name, backward=False):
    key = (name, backward)
    if key not in _present:
        def fwd():
            x = _tiny(grad=backward)
            out = nattn.na1d(x, x, x, 3, backend=name)
            if backward:
                out.sum().backward()
        _present[key] = _runs(fwd)
    return _present[key]


def fmha_backend_present(name, backward=False):
    key = ("fmha:" + name, backward)
    if key not in _present:
        def fwd():
            x = _tiny(grad=backward)
            out = nattn.attention(x, x, x, backend=name)
            if backward:
                out.sum().backward()
        _present[key] = _runs(fwd)
    return _present[key]


NA_BACKENDS = ["cutlass-fna", "hopper-fna", "flex-fna"]
FMHA_BACKENDS = ["cutlass-fmha", "hopper-fmha", "flex-fmha"]


@pytest.fixture(params=NA_BACKENDS)
def na_backend(request):
    if not na_backend_present(request.param):
        pytest.skip(f"{request.param} does not run on CUDA tensors in this build")
    return request.param


@pytest.fixture(params=FMHA_BACKENDS)
def fmha_backend(request):
    if not fmha_backend_present(request.param):
        pytest.skip(f"{request.param} does not run on CUDA tensors in this build")
    return request.param


def hopper_cannot(backend, head_dim, head_dim_v, extra):
    """Why a hopper-* backend does not run this problem (its declared limits), or None."""
    if backend == "hopper-fna":  # head dims zero-padded to the kernel's 32 / 64 / 128 / 256
        if any(d % 8 or not 8 <= d <= 256 for d in (head_dim, head_dim_v)):
            return f"{backend} runs head dims that are multiples of 8 up to 256 (got {head_dim}/{head_dim_v})"
        return None
    if not backend.startswith("hopper"):
        return None
    if head_dim not in (32, 64, 128, 256) or head_dim_v != head_dim:
        return f"{backend} runs head dims 32, 64, 128 and 256 with Dv == D (got {head_dim}/{head_dim_v})"
    if extra:
        return f"{backend} has no additional KV tokens"
    return None


def backward_backend(backend):
    """The backward backend after a forward on `backend` (hopper-* is forward-only)."""
    return "" if backend.startswith("hopper") else backend


def need_backward(name, fmha=False):
    present = fmha_backend_present(name, True) if fmha else na_backend_present(name, True)
    if not present:
        pytest.skip(f"{name} has no backward pass in this build")


def reference_na(rank, q, k, v, kw, dout=None, ak=None, av=None):
    """fp64-accumulated reference on CPU fp32 copies; returns out, lse and (if dout) grads."""
    leaves = [t.detach().float().cpu().requires_grad_(dout is not None) for t in (q, k, v)]
    extra = {}
    if ak is not None:
        a = [t.detach().float().cpu().requires_grad_(dout is not None) for t in (ak, av)]
        leaves += a
        extra = dict(additional_keys=a[0], additional_values=a[1])
    out, lse = NA[rank](*leaves[:3], **kw, **extra, backend="reference", return_lse=True)
    grads = None
    if dout is not None:
        out.backward(dout.detach().float().cpu())
        grads = [t.grad for t in leaves]
    return out.detach(), lse.detach(), grads


def assert_close(got, want, tol, what):
    got = got.detach().float().cpu()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


# ---- golden cases (computed by NATTEN) through the Python API on CUDA tensors ------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", golden_cases())
def test_golden_cuda(case, dtype, na_backend):
    if na_backend.startswith("hopper") and dtype == torch.float32:
        pytest.skip("hopper backends are fp16/bf16 only")
    meta, a = load_golden(case)
    t = {n: torch.from_numpy(x) for n, x in a.items()}
    why = hopper_cannot(na_backend, t["q"].shape[-1], t["v"].shape[-1], meta["additional_kv"])
    if why:
        pytest.skip(why)
    backward = na_backend_present(na_backend, True)
    q, k, v = (t[n].to(DEV, dtype).requires_grad_(backward) for n in ("q", "k", "v"))
    kw = dict(kernel_size=tuple(meta["kernel_size"]), stride=tuple(meta["stride"]),
              dilation=tuple(meta["dilation"]), is_causal=tuple(meta["is_causal"]), scale=meta["scale"])
    leaves = [q, k, v]
    if meta["additional_kv"] > 0:
        ak, av = (t[n].to(DEV, dtype).requires_grad_(backward) for n in ("additional_keys", "additional_values"))
        kw.update(additional_keys=ak, additional_values=av)
        leaves += [ak, av]
    out, lse = NA[meta["rank"]](q, k, v, **kw, backend=na_backend, return_lse=True)
    tol = TOL[dtype]
    assert out.dtype == dtype and out.device.type == "cuda"
    assert_close(out, t["out"], tol, "out")
    if "lse" in t:
        assert_close(lse, t["lse"], tol, "lse")
    if backward:
        out.backward(t["dout"].to(DEV, dtype))
        names = ["dq", "dk", "dv", "d_additional_keys", "d_additional_values"]
        for leaf, name in zip(leaves, names):
            want = t[name]
            assert_close(leaf.grad, want, GRAD_FACTOR * tol * max(1.0, want.abs().max().item()), name)


# ---- random sweep against the reference --------------------------------------------------------------


def _random_problem(rng):
    rank = rng.choice([1, 2, 3])
    spatial, ks, st, dil, causal = [], [], [], [], []
    for _ in range(rank):
        k = rng.randint(2, 7 if rank < 3 else 4)
        d = rng.choice([1, 1, 2, 3])
        L = rng.randint(k * d, k * d + (40 if rank == 1 else 9))
        spatial.append(L)
        ks.append(k)
        st.append(rng.randint(1, k))
        dil.append(d)
        causal.append(rng.random() < 0.3)
    hkv = rng.choice([1, 2])
    h = hkv * rng.choice([1, 2])
    D = rng.choice([16, 32, 40, 64, 128])
    Dv = D if rng.random() < 0.7 else rng.choice([16, 32, 64])
    extra = rng.choice([0, 0, 0, 5])
    return rank, spatial, ks, st, dil, causal, h, hkv, D, Dv, extra


@pytest.mark.parametrize("seed", range(24))
def test_random_vs_reference(seed, na_backend):
    rng = random.Random(1000 + seed)
    rank, spatial, ks, st, dil, causal, h, hkv, D, Dv, extra = _random_problem(rng)
    dtype = [torch.float32, torch.float16, torch.bfloat16][seed % 3]
    if na_backend.startswith("hopper"):  # 16-bit only
        dtype = torch.bfloat16 if dtype == torch.float32 else dtype
    g = torch.Generator().manual_seed(seed)
    B = rng.choice([1, 2])

    def r(*shape):
        return torch.randn(*shape, generator=g).to(DEV, dtype)

    backward = na_backend_present(na_backend, True)
    q, k, v = r(B, *spatial, h, D), r(B, *spatial, hkv, D), r(B, *spatial, hkv, Dv)
    ak = av = None
    if extra:
        ak, av = r(B, extra, hkv, D), r(B, extra, hkv, Dv)
    leaves = [x.requires_grad_(backward) for x in (q, k, v) + ((ak, av) if extra else ())]
    kw = dict(kernel_size=tuple(ks), stride=tuple(st), dilation=tuple(dil), is_causal=tuple(causal), scale=0.7 / D ** 0.5)
    ekw = dict(additional_keys=ak, additional_values=av) if extra else {}
    out, lse = NA[rank](q, k, v, **kw, **ekw, backend=na_backend, return_lse=True)
    dout = r(*out.shape)
    ro, rl, rg = reference_na(rank, q, k, v, kw, dout if backward else None, ak, av)
    what = f"{na_backend} {dtype} rank {rank} S={spatial} k={ks} s={st} d={dil} c={causal} h={h}/{hkv} D={D}/{Dv} +{extra}"
    assert_close(out, ro, TOL[dtype], "out " + what)
    assert_close(lse, rl, TOL[dtype], "lse " + what)
    if backward:
        out.backward(dout)
        for i, (leaf, want) in enumerate(zip(leaves, rg)):
            scale = max(1.0, want.abs().max().item())
            assert_close(leaf.grad, want, GRAD_FACTOR * TOL[dtype] * scale, f"grad {i} " + what)


@pytest.mark.parametrize("problem", [
    (3, (6, 10, 12), (3, 5, 7), (1, 2, 3), (1, 1, 1), (False, False, True), 256, 256),
    (2, (20, 23), (7, 9), (1, 1), (2, 1), (False, False), 256, 256),
    (2, (17, 19), (5, 5), (2, 1), (1, 1), (True, False), 200, 136),
    (1, (150,), (33,), (4,), (1,), (False,), 256, 256),
])
def test_large_head_dims_vs_reference(problem, na_backend):
    """Head dims 136..256 (hopper-fna: the 64-key KV tiles of its head-dim-256 kernel; padded dims
    and Dv != D through the permuted mode) against the reference, forward and LSE, bf16 and fp16."""
    rank, spatial, ks, st, dil, causal, D, Dv = problem
    if na_backend.startswith("flex"):
        pytest.skip("flex-fna: Triton's head-dim limits, not ours")
    if hopper_cannot(na_backend, D, Dv, 0):
        pytest.skip(hopper_cannot(na_backend, D, Dv, 0))
    g = torch.Generator().manual_seed(D + Dv + rank)
    for dtype in (torch.bfloat16, torch.float16):
        def r(*shape):
            return torch.randn(*shape, generator=g).to(DEV, dtype)

        q, k, v = r(2, *spatial, 4, D), r(2, *spatial, 2, D), r(2, *spatial, 2, Dv)
        kw = dict(kernel_size=ks, stride=st, dilation=dil, is_causal=causal)
        out, lse = NA[rank](q, k, v, **kw, backend=na_backend, return_lse=True)
        ro, rl, _ = reference_na(rank, q, k, v, kw)
        what = f"{na_backend} {dtype} rank {rank} S={spatial} k={ks} s={st} d={dil} c={causal} D={D}/{Dv}"
        assert torch.isfinite(out).all(), what
        assert_close(out, ro, TOL[dtype], "out " + what)
        assert_close(lse, rl, TOL[dtype], "lse " + what)


# ---- standard attention ------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_attention_cuda(causal, dtype, fmha_backend):
    if fmha_backend.startswith("flex") and causal:
        pytest.skip("flex-fmha has no causal mode")
    if fmha_backend.startswith("hopper") and dtype == torch.float32:
        pytest.skip("hopper backends are fp16/bf16 only")
    g = torch.Generator().manual_seed(20)
    q = torch.randn(2, 77, 4, 64, generator=g).to(DEV, dtype)
    k, v = (torch.randn(2, 131, 2, 64, generator=g).to(DEV, dtype) for _ in range(2))
    out, lse = nattn.attention(q, k, v, is_causal=causal, backend=fmha_backend, return_lse=True)
    ro, rl = nattn.attention(q.float().cpu(), k.float().cpu(), v.float().cpu(), is_causal=causal,
                             backend="reference", return_lse=True)
    assert_close(out, ro, TOL[dtype], "out")
    assert_close(lse, rl, TOL[dtype], "lse")


def test_attention_varlen_cuda(fmha_backend):
    if fmha_backend.startswith("flex"):
        pytest.skip(f"{fmha_backend} has no variable-length mode")
    g = torch.Generator().manual_seed(21)
    seqlens = torch.tensor([5, 0, 70, 33, 200], dtype=torch.int32)
    n = int(seqlens.sum())
    backward = fmha_backend_present(fmha_backend, True)
    head_dim = 32
    q, k, v = (torch.randn(1, n, 2, head_dim, generator=g).to(DEV, torch.bfloat16).requires_grad_(backward)
               for _ in range(3))
    dev_seqlens = seqlens.to(DEV)
    out = nattn.attention(q, k, v, is_causal=True, seqlens_Q=dev_seqlens, seqlens_KV=dev_seqlens,
                          backend=fmha_backend)
    ref_leaves = [x.detach().float().cpu().requires_grad_(backward) for x in (q, k, v)]
    ref = nattn.attention(*ref_leaves, is_causal=True, seqlens_Q=seqlens, seqlens_KV=seqlens, backend="reference")
    assert_close(out, ref.detach(), TOL[torch.bfloat16], "out")
    if backward:
        dout = torch.randn(out.shape, generator=g)
        out.backward(dout.to(DEV, torch.bfloat16))
        ref.backward(dout)
        for a, b in zip((q, k, v), ref_leaves):
            scale = max(1.0, b.grad.abs().max().item())
            assert_close(a.grad, b.grad, GRAD_FACTOR * TOL[torch.bfloat16] * scale, "grad")


# ---- streams, devices, automatic selection --------------------------------------------------------------


def test_runs_on_current_stream(na_backend):
    g = torch.Generator().manual_seed(22)
    q = torch.randn(2, 24, 20, 4, 64, generator=g).to(DEV, torch.bfloat16)
    expected = nattn.na2d(q, q, q, 5, backend=na_backend)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        q2 = q * 1  # produced on the side stream
        got = nattn.na2d(q2, q2, q2, 5, backend=na_backend)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert torch.equal(got, expected)


def test_automatic_selection_on_cuda():
    x = torch.randn(1, 16, 16, 2, 64, device=DEV, dtype=torch.float16)
    chosen, text = nattn.choose_backend(x, x, x, 3)
    assert chosen and chosen not in ("cpu", "reference"), text
    assert "cpu" in text  # the CPU backends are listed as rejected, with their reason
    out = nattn.na2d(x, x, x, 3)
    ref = nattn.na2d(x.float().cpu(), x.float().cpu(), x.float().cpu(), 3, backend="reference")
    assert_close(out, ref, TOL[torch.float16], "auto")


def test_cpu_backend_rejects_cuda_tensors():
    x = torch.randn(1, 16, 2, 32, device=DEV)
    with pytest.raises((ValueError, NotImplementedError), match="cpu"):
        nattn.na1d(x, x, x, 3, backend="cpu")


def test_mixed_devices_rejected():
    x = torch.randn(1, 16, 2, 32, device=DEV)
    with pytest.raises(ValueError):
        nattn.na1d(x, x.cpu(), x, 3)


# ---- opcheck, torch.compile, training -------------------------------------------------------------------


@pytest.mark.parametrize("extra", [False, True])
def test_opcheck_cuda(extra, na_backend):
    if na_backend.startswith("flex"):
        pytest.skip("flex backends are plain torch code, not nattn custom ops")
    why = hopper_cannot(na_backend, 64, 64, extra)
    if why:
        pytest.skip(why)
    g = torch.Generator().manual_seed(23)
    dt = torch.float16
    q, k, v = (torch.randn(1, 6, 5, 2, 64, generator=g).to(DEV, dt).requires_grad_() for _ in range(3))
    ak = av = None
    if extra:
        ak, av = (torch.randn(1, 3, 2, 64, generator=g).to(DEV, dt).requires_grad_() for _ in range(2))
    bb = backward_backend(na_backend)
    args = (q, k, v, ak, av, [3, 2], [1, 2], [1, 1], [False, True], 0.3, na_backend, [], [], "", bb, [], [],
            True, True)
    torch.library.opcheck(torch.ops.nattn.na_forward.default, args)
    if na_backend_present(na_backend, True):
        qd, kd, vd = q.detach(), k.detach(), v.detach()
        akd, avd = (x.detach() if x is not None else None for x in (ak, av))
        out, lse = torch.ops.nattn.na_forward(qd, kd, vd, akd, avd, *args[5:])
        bargs = (qd, kd, vd, out, lse, torch.randn_like(out), akd, avd, [3, 2], [1, 2], [1, 1], [False, True], 0.3,
                 bb, [], [], True)
        torch.library.opcheck(torch.ops.nattn.na_backward.default, bargs)


def test_compile_matches_eager_cuda(na_backend):
    if na_backend.startswith("flex"):
        pytest.skip("compiled flex is covered by the flex tests")
    import torch._dynamo as dynamo
    from torch._dynamo import testing as dynamo_testing

    dynamo.reset()
    backward = na_backend_present(na_backend, True)
    g = torch.Generator().manual_seed(24)

    def block(q, k, v):
        o, l = nattn.na2d(q, k, v, (3, 5), stride=(1, 2), is_causal=(False, True), backend=na_backend,
                          return_lse=True)
        return o * torch.sigmoid(l).unsqueeze(-1)

    counter = dynamo_testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(block, fullgraph=True, backend=counter)
    with dynamo.config.patch(recompile_limit=1, error_on_recompile=True):
        for _ in range(2):
            ins = [torch.randn(2, 12, 10, 2, 64, generator=g).to(DEV, torch.bfloat16).requires_grad_(backward)
                   for _ in range(3)]
            ref_ins = [x.detach().clone().requires_grad_(backward) for x in ins]
            out = compiled(*ins)
            ref = block(*ref_ins)
            torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
            if backward:
                out.float().sum().backward()
                ref.float().sum().backward()
                for a, b in zip(ins, ref_ins):
                    torch.testing.assert_close(a.grad, b.grad, atol=2e-2, rtol=2e-2)
    assert counter.frame_count == 1


def test_training_loop_cuda():
    if not na_backend_present("cutlass-fna", True):
        pytest.skip("no CUDA NA backward in this build")
    torch.manual_seed(25)
    model = torch.nn.Sequential(nattn.NeighborhoodAttention2D(64, 2, 5), torch.nn.GELU(),
                                torch.nn.Linear(64, 4)).to(DEV)
    x = torch.randn(4, 16, 16, 64, device=DEV)
    target = torch.randn(4, 16, 16, 4, device=DEV)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_deterministic_backward_cuda(na_backend):
    need_backward(na_backend)
    if na_backend.startswith("flex"):
        pytest.skip("flex determinism is torch's")
    g = torch.Generator().manual_seed(26)
    q, k, v = (torch.randn(1, 10, 12, 8, 4, 64, generator=g).to(DEV, torch.bfloat16) for _ in range(3))
    dout = torch.randn(q.shape, generator=g).to(DEV, torch.bfloat16)
    grads = []
    nattn.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            leaves = [x.clone().requires_grad_() for x in (q, k, v)]
            nattn.na3d(*leaves, (3, 5, 3), backend=na_backend).backward(dout)
            grads.append([x.grad for x in leaves])
    finally:
        nattn.use_deterministic_algorithms(False)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# ---- flex with token permutation, eager and compiled ----------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True])
def test_flex_tiled_cuda(compiled):
    """flex-fna with tile shapes (token permutation + tiled block mask) on CUDA, forward and
    backward, eager and torch.compile'd, against the reference backend."""
    if not na_backend_present("flex-fna", True):
        pytest.skip("flex-fna does not run on CUDA tensors here")
    g = torch.Generator().manual_seed(27)
    dtype = torch.bfloat16 if compiled else torch.float32
    spatial, ks, st, dil, causal, tile = (6, 9, 20), (3, 5, 7), (1, 2, 1), (2, 1, 2), (False, True, False), (2, 4, 8)
    q, k, v = (torch.randn(2, *spatial, 2, 32, generator=g).to(DEV, dtype).requires_grad_() for _ in range(3))
    kw = dict(kernel_size=ks, stride=st, dilation=dil, is_causal=causal, scale=0.2)
    if compiled:
        nattn.allow_flex_compile(True, True)
    try:
        out, lse = nattn.na3d(q, k, v, **kw, backend="flex-fna", q_tile_shape=tile, kv_tile_shape=tile,
                              torch_compile=compiled, return_lse=True)
        dout = torch.randn(out.shape, generator=g).to(DEV, dtype)
        out.backward(dout)
    finally:
        nattn.disable_flex_compile()
    ro, rl, rg = reference_na(3, q, k, v, kw, dout)
    tol = TOL[dtype]
    assert_close(out, ro, tol, "out")
    assert_close(lse, rl, tol, "lse")
    for leaf, want, name in zip((q, k, v), rg, ("dq", "dk", "dv")):
        assert_close(leaf.grad, want, GRAD_FACTOR * tol * max(1.0, want.abs().max().item()), name)


# ---- other frameworks' GPU arrays through the framework-free extension ----------------------------------


def test_cupy_and_jax_arrays_through_the_extension():
    """nattn._C takes any DLPack GPU array without a copy: CuPy inputs and outputs on CuPy's current
    stream, and JAX inputs (read-only) with CuPy outputs, against the reference backend."""
    import os

    cp = pytest.importorskip("cupy")
    from nattn._lib import lib

    if not na_backend_present("cutlass-fna"):
        pytest.skip("cutlass-fna is not built")
    rng = np.random.default_rng(28)
    host = [rng.standard_normal((1, 12, 10, 2, 32)).astype(np.float32) for _ in range(3)]
    ref_out, ref_lse = nattn.na2d(*host, (3, 5), stride=(1, 2), backend="reference", return_lse=True)

    def run(q, k, v):
        out = cp.full((1, 12, 10, 2, 32), cp.nan, dtype=cp.float32)
        lse = cp.full((1, 12, 10, 2), cp.nan, dtype=cp.float32)
        stream = cp.cuda.get_current_stream()
        lib.na_forward(q, k, v, out, lse, None, None, [3, 5], [1, 2], [1, 1], [False, False], None, "cutlass-fna",
                       stream=stream.ptr)
        stream.synchronize()
        return cp.asnumpy(out), cp.asnumpy(lse)

    out, lse = run(*(cp.asarray(x) for x in host))
    np.testing.assert_allclose(out, ref_out, atol=1e-4, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-4, rtol=0)

    import sys

    if "jax" in sys.modules and os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE") != "false":
        pytest.skip("JAX was imported before this test with GPU memory preallocation on")
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # leave the GPU memory to torch and CuPy
    jax = pytest.importorskip("jax")
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("JAX has no GPU here")
    jq, jk, jv = (jax.device_put(x, gpu) for x in host)
    for a in (jq, jk, jv):
        a.block_until_ready()
    out, lse = run(jq, jk, jv)
    np.testing.assert_allclose(out, ref_out, atol=1e-4, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-4, rtol=0)
