"""The NumPy path (no torch needed): golden cases, random problems against the reference backend
and an independent brute force, FMHA, varlen, merge, finders."""

import numpy as np
import pytest

import nattn
from nattn import _core
from conftest import backend_works, golden_cases, load_golden
from naive import fmha_reference, na_reference

NA = {1: nattn.na1d, 2: nattn.na2d, 3: nattn.na3d}


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def test_import_and_version():
    assert nattn.HAS_LIBNATTEN
    assert isinstance(nattn.__version__, str) and nattn.__version__.count(".") == 2
    names = [b["name"] for b in nattn.list_backends()]
    for n in ("reference", "cpu", "cutlass-fna", "hopper-fna", "blackwell-fna", "flex-fna", "cutlass-fmha"):
        assert n in names


# ---- golden cases (computed by NATTEN) ----------------------------------------------------------


@pytest.mark.parametrize("case", golden_cases())
def test_golden_forward(case, cpu_backend):
    meta, a = load_golden(case)
    rank = meta["rank"]
    kw = dict(kernel_size=tuple(meta["kernel_size"]), stride=tuple(meta["stride"]),
              dilation=tuple(meta["dilation"]), is_causal=tuple(meta["is_causal"]), scale=meta["scale"],
              backend=cpu_backend, return_lse=True)
    if meta["additional_kv"]:
        kw.update(additional_keys=a["additional_keys"], additional_values=a["additional_values"])
    out, lse = NA[rank](a["q"], a["k"], a["v"], **kw)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    np.testing.assert_allclose(out, a["out"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(lse, a["lse"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", golden_cases())
def test_golden_backward_low_level(case, cpu_backend):
    """Gradients through nattn's array-level core call (what the torch autograd layer uses)."""
    meta, a = load_golden(case)
    params = (tuple(meta["kernel_size"]), tuple(meta["stride"]), tuple(meta["dilation"]), tuple(meta["is_causal"]))
    extra = meta["additional_kv"] > 0
    ak, av = (a["additional_keys"], a["additional_values"]) if extra else (None, None)
    dq, dk, dv = (np.empty_like(a[n]) for n in ("q", "k", "v"))
    dak, dav = (np.empty_like(ak), np.empty_like(av)) if extra else (None, None)
    _core.na_backward(a["q"], a["k"], a["v"], a["out"], a["lse"], a["dout"], dq, dk, dv, ak, av, dak, dav, params,
                      meta["scale"], backend=cpu_backend)
    for got, want in ((dq, "dq"), (dk, "dk"), (dv, "dv")) + (((dak, "d_additional_keys"),
                                                            (dav, "d_additional_values")) if extra else ()):
        np.testing.assert_allclose(got, a[want], atol=1e-3, rtol=0, err_msg=want)


def test_golden_cases_present():
    assert len(golden_cases()) == 72


# ---- random problems ---------------------------------------------------------------------------

PROBLEMS = [
    # spatial, kernel, stride, dilation, causal, heads, heads_kv, D, Dv, extra
    ((13,), 3, 1, 1, False, 2, 2, 8, 8, 0),
    ((16,), 4, 2, 2, True, 4, 2, 16, 8, 0),
    ((11,), (5,), (3,), (2,), (False,), 2, 1, 8, 12, 5),
    ((7, 9), (3, 4), (1, 2), (2, 1), (False, True), 4, 2, 8, 8, 0),
    ((6, 8), 3, 3, 1, (True, True), 1, 1, 32, 16, 3),
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), 1, (False, True, False), 2, 2, 8, 8, 0),
    ((4, 6, 8), 2, 1, (2, 3, 2), True, 4, 1, 16, 16, 4),
]


@pytest.mark.parametrize("prob", PROBLEMS)
def test_random_vs_brute_force(prob, cpu_backend):
    spatial, k, s, d, c, h, hkv, D, Dv, extra = prob
    rng = np.random.default_rng(len(spatial) * 100 + D)
    B = 2
    q = rand(rng, (B, *spatial, h, D))
    kk = rand(rng, (B, *spatial, hkv, D))
    v = rand(rng, (B, *spatial, hkv, Dv))
    kw = {}
    if extra:
        kw = dict(additional_keys=rand(rng, (B, extra, hkv, D)), additional_values=rand(rng, (B, extra, hkv, Dv)))
    out, lse = NA[len(spatial)](q, kk, v, k, s, d, c, backend=cpu_backend, return_lse=True, **kw)
    rank = len(spatial)
    norm = nattn._args.normalize_na_params(rank, k, s, d, c)
    ref_out, ref_lse = na_reference(q, kk, v, *norm, add_k=kw.get("additional_keys"),
                                    add_v=kw.get("additional_values"))
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=0)


@pytest.mark.skipif(not backend_works("cpu"), reason="cpu backend does not run NA in this build yet")
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cpu_matches_reference(dtype):
    rng = np.random.default_rng(7)
    for spatial, k, s, d, c in [((17, 9), 5, 2, 1, (False, True)), ((6, 5, 7), 3, (1, 3, 2), (2, 1, 2), False)]:
        q, kk, v = (rand(rng, (2, *spatial, 4, 16), dtype) for _ in range(3))
        a = NA[len(spatial)](q, kk, v, k, s, d, c, backend="cpu", return_lse=True)
        b = NA[len(spatial)](q, kk, v, k, s, d, c, backend="reference", return_lse=True)
        tol = 1e-5 if dtype == np.float32 else 2e-3
        np.testing.assert_allclose(a[0].astype(np.float32), b[0].astype(np.float32), atol=tol, rtol=0)
        np.testing.assert_allclose(a[1], b[1], atol=tol, rtol=0)


def test_fp16_dtype_preserved(cpu_backend):
    rng = np.random.default_rng(1)
    q = rand(rng, (1, 8, 8, 2, 16), np.float16)
    out, lse = nattn.na2d(q, q, q, 3, backend=cpu_backend, return_lse=True)
    assert out.dtype == np.float16 and lse.dtype == np.float32
    ref, _ = na_reference(q, q, q, (3, 3), (1, 1), (1, 1), (False, False))
    np.testing.assert_allclose(out.astype(np.float64), ref, atol=5e-3, rtol=0)


def test_strided_inputs(cpu_backend):
    rng = np.random.default_rng(2)
    base = rand(rng, (2, 9, 10, 3, 16))
    q = base[:, :, ::2]  # strided token axis
    k = np.ascontiguousarray(base[:, :, 1::2])
    v = np.swapaxes(np.swapaxes(base[:, :, :5], 1, 2).copy(), 1, 2)  # permuted layout
    out = nattn.na2d(q, k, v, (3, 2), backend=cpu_backend)
    ref, _ = na_reference(q, k, v, (3, 2), (1, 1), (1, 1), (False, False))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)
    # a non-contiguous head dim is made contiguous by the Python layer
    qh = np.asfortranarray(q)
    np.testing.assert_allclose(nattn.na2d(qh, k, v, (3, 2), backend=cpu_backend), ref, atol=2e-5, rtol=0)


def test_readonly_inputs(cpu_backend):
    rng = np.random.default_rng(3)
    q = rand(rng, (1, 10, 2, 8))
    q.setflags(write=False)
    out = nattn.na1d(q, q, q, 3, backend=cpu_backend)
    ref, _ = na_reference(q, q, q, (3,), (1,), (1,), (False,))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)


def test_zero_batch(cpu_backend):
    q = np.zeros((0, 8, 2, 8), np.float32)
    out, lse = nattn.na1d(q, q, q, 3, backend=cpu_backend, return_lse=True)
    assert out.shape == (0, 8, 2, 8) and lse.shape == (0, 8, 2)


@pytest.mark.parametrize("scale", [0.0, 0.37, -1.5])
def test_scale_zero_is_a_real_scale(scale, cpu_backend):
    rng = np.random.default_rng(4)
    q, k, v = (rand(rng, (1, 9, 2, 8)) for _ in range(3))
    out = nattn.na1d(q, k, v, 3, scale=scale, backend=cpu_backend)
    ref, _ = na_reference(q, k, v, (3,), (1,), (1,), (False,), scale=scale)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)


# ---- self-attention fast path --------------------------------------------------------------------


@pytest.mark.parametrize("case", [((12,), 12, True, 0), ((12,), 12, False, 3), ((4, 5), (4, 5), False, 2)])
def test_fast_path(case, cpu_backend):
    spatial, k, causal, extra = case
    rng = np.random.default_rng(5)
    q, kk, v = (rand(rng, (2, *spatial, 2, 8)) for _ in range(3))
    kw = {}
    if extra:
        kw = dict(additional_keys=rand(rng, (2, extra, 2, 8)), additional_values=rand(rng, (2, extra, 2, 8)))
    out, lse = NA[len(spatial)](q, kk, v, k, is_causal=causal, backend=cpu_backend, return_lse=True, **kw)
    norm = nattn._args.normalize_na_params(len(spatial), k, 1, 1, causal)
    ref_out, ref_lse = na_reference(q, kk, v, *norm, add_k=kw.get("additional_keys"),
                                    add_v=kw.get("additional_values"))
    np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=0)


def test_fast_path_keeps_callers_attention_kwargs(cpu_backend):
    x = np.random.default_rng(6).standard_normal((1, 6, 1, 8)).astype(np.float32)
    kwargs = {"backend": cpu_backend}
    nattn.na1d(x, x, x, 6, attention_kwargs=kwargs)
    assert kwargs == {"backend": cpu_backend}


# ---- FMHA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sq,skv,causal,h,hkv", [(10, 10, False, 2, 2), (7, 13, True, 4, 2), (13, 7, True, 2, 1)])
def test_attention(sq, skv, causal, h, hkv, cpu_backend):
    rng = np.random.default_rng(sq * skv)
    q, k, v = rand(rng, (2, sq, h, 16)), rand(rng, (2, skv, hkv, 16)), rand(rng, (2, skv, hkv, 8))
    out, lse = nattn.attention(q, k, v, is_causal=causal, backend=cpu_backend, return_lse=True)
    ro, rl = fmha_reference(q, k, v, causal)
    np.testing.assert_allclose(out, ro, atol=2e-5, rtol=0)
    np.testing.assert_allclose(lse, rl, atol=2e-5, rtol=0)


def test_attention_varlen(cpu_backend):
    rng = np.random.default_rng(8)
    sq, skv = np.array([3, 0, 5], np.int32), np.array([4, 2, 6], np.int32)
    q, k, v = rand(rng, (1, 9, 2, 8)), rand(rng, (1, 12, 2, 8)), rand(rng, (1, 12, 2, 8))
    out, lse = nattn.attention(q, k, v, seqlens_Q=sq, seqlens_KV=skv, backend=cpu_backend, return_lse=True)
    cq, ck = np.concatenate([[0], np.cumsum(sq)]), np.concatenate([[0], np.cumsum(skv)])
    for b in range(3):
        if sq[b] == 0:
            continue
        ro, rl = fmha_reference(q[:, cq[b]:cq[b + 1]], k[:, ck[b]:ck[b + 1]], v[:, ck[b]:ck[b + 1]], False)
        np.testing.assert_allclose(out[:, cq[b]:cq[b + 1]], ro, atol=2e-5, rtol=0)
        np.testing.assert_allclose(lse[:, cq[b]:cq[b + 1]], rl, atol=2e-5, rtol=0)
    # the same through precomputed parameters
    cu_q, cu_kv, mq, mkv = nattn.generate_varlen_parameters(q, k, v, sq, skv)
    assert (mq, mkv) == (5, 6) and cu_q.dtype == np.int32
    out2 = nattn.attention(q, k, v, cumulative_seqlen_Q=cu_q, cumulative_seqlen_KV=cu_kv, max_seqlen_Q=mq,
                           max_seqlen_KV=mkv, backend=cpu_backend)
    np.testing.assert_array_equal(out, out2)


# ---- merge ------------------------------------------------------------------------------------------


def test_merge_attentions():
    rng = np.random.default_rng(9)
    q, k, v = rand(rng, (2, 6, 2, 8)), rand(rng, (2, 15, 2, 8)), rand(rng, (2, 15, 2, 8))
    parts = [(0, 4), (4, 11), (11, 15)]
    outs, lses = [], []
    for a, b in parts:
        o, l = nattn.attention(q, k[:, a:b], v[:, a:b], backend="reference", return_lse=True)
        outs.append(o)
        lses.append(l)
    out, lse = nattn.merge_attentions(outs, lses)
    ro, rl = fmha_reference(q, k, v, False)
    np.testing.assert_allclose(out, ro, atol=2e-5, rtol=0)
    np.testing.assert_allclose(lse, rl, atol=2e-5, rtol=0)


def test_merge_worked_example():
    o1, o2 = np.zeros((1, 1, 1, 4), np.float32), np.ones((1, 1, 1, 4), np.float32)
    l1, l2 = np.zeros((1, 1, 1), np.float32), np.full((1, 1, 1), np.log(3.0), np.float32)
    out, lse = nattn.merge_attentions([o1, o2], [l1, l2])
    np.testing.assert_allclose(out, 0.75, atol=1e-6)
    np.testing.assert_allclose(lse, np.log(4.0), atol=1e-6)


# ---- finders and selection -------------------------------------------------------------------------


def test_finders_on_cpu_arrays():
    x = np.zeros((1, 16, 16, 2, 32), np.float32)
    f = np.zeros((1, 64, 2, 32), np.float32)
    for fn in ("cutlass_fna", "cutlass_hopper_fna", "cutlass_blackwell_fna"):
        assert getattr(nattn, "get_configs_for_" + fn)(x, x, x) == []
        assert getattr(nattn, "get_bwd_configs_for_" + fn)(x, x, x) == []
    for fn in ("cutlass_fmha", "cutlass_hopper_fmha", "cutlass_blackwell_fmha"):
        assert getattr(nattn, "get_configs_for_" + fn)(f, f, f) == []
    assert nattn.get_configs("cpu", x, x, x)[0][0] == (2, 32)
    assert nattn.get_configs("reference", x, x, x) == [((), (), "")]
    chosen, text = nattn.choose_backend(x, x, x, kernel_size=3)
    assert chosen == "cpu" and "cutlass-fna: rejected" in text
    with pytest.raises(NotImplementedError, match="not known"):
        nattn.get_configs("nope", x, x, x)


def test_cpu_tile_config(cpu_backend):
    if cpu_backend != "cpu":
        pytest.skip("tile configs are a cpu-backend feature")
    rng = np.random.default_rng(10)
    q = rand(rng, (1, 12, 12, 2, 8))
    base = nattn.na2d(q, q, q, 3, backend="cpu")
    for cfg in nattn.get_configs("cpu", q, q, q):
        out = nattn.na2d(q, q, q, 3, backend="cpu", q_tile_shape=cfg[0])
        np.testing.assert_allclose(out, base, atol=1e-6, rtol=0)


class _DLPackOnly:
    """A stand-in for another framework's CPU array (JAX, CuPy host memory): only __dlpack__."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_other_dlpack_producers(cpu_backend):
    rng = np.random.default_rng(11)
    q, k, v = (rand(rng, (1, 9, 2, 8)) for _ in range(3))
    out = nattn.na1d(_DLPackOnly(q), _DLPackOnly(k), _DLPackOnly(v), 3, backend=cpu_backend)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, nattn.na1d(q, k, v, 3, backend=cpu_backend))


def test_extension_takes_dlpack_directly():
    """nattn._C takes any DLPack array plus caller-allocated outputs (the framework-free layer)."""
    from nattn._lib import lib

    rng = np.random.default_rng(12)
    q = rand(rng, (1, 7, 2, 8))
    out, lse = np.empty_like(q), np.empty((1, 7, 2), np.float32)
    lib.na_forward(_DLPackOnly(q), _DLPackOnly(q), _DLPackOnly(q), out, lse, None, None, [3], [1], [1], [False],
                   None, "reference")
    ref, ref_lse = na_reference(q, q, q, (3,), (1,), (1,), (False,))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="kernel_size must be >= 2"):
        lib.na_forward(q, q, q, out, lse, None, None, [1], [1], [1], [False], None, "reference")
    with pytest.raises(ValueError, match="dtype"):
        lib.na_forward(q.astype(np.float64), q, q, out, lse, None, None, [3], [1], [1], [False], None, "")
