"""Every validation rule of the Python API (natten-reference.md §3, minus NATTEN's quirks): the
exception type and a message naming the argument. NumPy inputs; no torch needed."""

import numpy as np
import pytest

import nattn


def arr(shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


Q2 = arr((1, 8, 8, 2, 8))
Q1 = arr((1, 10, 2, 8))


def raises(exc, match, fn, *a, **kw):
    with pytest.raises(exc, match=match):
        fn(*a, **kw)


# ---- tensors ----------------------------------------------------------------------------------------


def test_wrong_framework_type():
    raises(ValueError, "query must be a torch.Tensor or a numpy.ndarray", nattn.na1d, [[1.0]], Q1, Q1, 3)


def test_dtype_mismatch():
    raises(ValueError, "key has dtype float16 but query has float32", nattn.na2d, Q2, Q2.astype(np.float16), Q2, 3)


def test_unsupported_dtype():
    x = Q2.astype(np.float64)
    raises(NotImplementedError, "fp64 runs only when backend .reference. is named", nattn.na2d, x, x, x, 3)
    raises(NotImplementedError, "cpu does not support dtype fp64", nattn.na2d, x, x, x, 3, backend="cpu")
    assert nattn.na2d(x, x, x, 3, backend="reference").dtype == np.float64
    xi = Q2.astype(np.int32)
    raises(ValueError, "query has dtype int32", nattn.na2d, xi, xi, xi, 3)


def test_rank_checks():
    raises(ValueError, "na1d expects 4-D tensors", nattn.na1d, Q2, Q2, Q2, 3)  # NATTEN silently ran 2-D
    raises(ValueError, "na2d expects 5-D", nattn.na2d, Q1, Q1, Q1, 3)
    x7 = arr((1, 2, 2, 2, 2, 2, 8))
    raises(ValueError, "na3d expects 6-D", nattn.na3d, x7, x7, x7, 2)
    raises(ValueError, "same rank", nattn.na1d, Q1, Q1[None], Q1, 3)


def test_shape_mismatches():
    raises(ValueError, "match query in batch and token layout", nattn.na2d, Q2, arr((1, 8, 7, 2, 8)), Q2, 3)
    raises(ValueError, "match query in batch and token layout", nattn.na2d, Q2, arr((2, 8, 8, 2, 8)), Q2, 3)
    raises(ValueError, "same head_dim", nattn.na2d, Q2, arr((1, 8, 8, 2, 16)), Q2, 3)
    raises(ValueError, "key and value must have the same number of heads", nattn.na2d, Q2, Q2,
           arr((1, 8, 8, 1, 8)), 3)
    raises(ValueError, "multiple of key/value heads", nattn.na2d, arr((1, 8, 8, 3, 8)), Q2, Q2, 3)
    raises(ValueError, "multiple of key/value heads", nattn.na2d, Q2, arr((1, 8, 8, 4, 8)),
           arr((1, 8, 8, 4, 8)), 3)


def test_additional_kv_checks():
    ak = arr((1, 4, 2, 8))
    raises(ValueError, "must be given together", nattn.na2d, Q2, Q2, Q2, 3, additional_keys=ak)
    raises(ValueError, "must be given together", nattn.na2d, Q2, Q2, Q2, 3, additional_values=ak)
    raises(ValueError, "must be 4-D", nattn.na2d, Q2, Q2, Q2, 3, additional_keys=ak[None], additional_values=ak)
    raises(ValueError, "additional_keys must have shape", nattn.na2d, Q2, Q2, Q2, 3,
           additional_keys=arr((1, 4, 1, 8)), additional_values=ak)
    raises(ValueError, "additional_values must have shape", nattn.na2d, Q2, Q2, Q2, 3,
           additional_keys=ak, additional_values=arr((1, 5, 2, 8)))
    raises(ValueError, "dtype", nattn.na2d, Q2, Q2, Q2, 3, additional_keys=ak.astype(np.float16),
           additional_values=ak)


# ---- NA parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, 0, -3, True, False, (3,), (3, 3, 3), (3, True), 3.0, "3", None, (3, 1)])
def test_kernel_size(bad):
    raises(ValueError, "kernel_size", nattn.na2d, Q2, Q2, Q2, bad)


@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("bad", [0, -1, True, (1,), (1, 0), 1.0, "1"])
def test_stride_dilation(name, bad):
    raises(ValueError, name, nattn.na2d, Q2, Q2, Q2, 3, **{name: bad})


@pytest.mark.parametrize("bad", [1, 0, (1, 0), (True,), (True, True, True), "yes", (True, 1)])
def test_is_causal(bad):
    raises(ValueError, "is_causal", nattn.na2d, Q2, Q2, Q2, 3, is_causal=bad)


def test_params_vs_input():
    raises(ValueError, r"kernel_size \* dilation must not exceed the input extent on axis 1", nattn.na2d, Q2, Q2, Q2,
           (3, 9))
    raises(ValueError, r"kernel_size=3 \* dilation=3 = 9 > 8", nattn.na2d, Q2, Q2, Q2, 3, dilation=3)
    raises(ValueError, "stride must not exceed kernel_size on axis 0", nattn.na2d, Q2, Q2, Q2, 3, stride=(4, 1))


def test_numpy_bool_and_int_types_accepted():
    out = nattn.na2d(Q2, Q2, Q2, (np.int64(3), 3), is_causal=(np.bool_(True), False), backend="reference")
    assert out.shape == Q2.shape


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "0.5", [0.5]])
def test_scale(bad):
    raises(ValueError, "scale", nattn.na2d, Q2, Q2, Q2, 3, scale=bad)


def test_kernel_schedule():
    raises(ValueError, "kernel_schedule", nattn.na2d, Q2, Q2, Q2, 3, kernel_schedule="fast")
    raises(ValueError, "kernel_schedule", nattn.na2d, Q2, Q2, Q2, 3, kernel_schedule=1)


def test_tile_pairs():
    raises(ValueError, "q_tile_shape was given without kv_tile_shape", nattn.na2d, Q2, Q2, Q2, 3,
           q_tile_shape=(8, 8), backend="reference")
    raises(ValueError, "kv_tile_shape was given without q_tile_shape", nattn.na2d, Q2, Q2, Q2, 3,
           kv_tile_shape=(8, 8))
    raises(ValueError, "backward_q_tile_shape was given without", nattn.na2d, Q2, Q2, Q2, 3,
           backward_q_tile_shape=(8, 8), backend="reference")
    raises(ValueError, "q_tile_shape", nattn.na2d, Q2, Q2, Q2, 3, q_tile_shape=(8,), kv_tile_shape=(8,))
    raises(ValueError, "q_tile_size was given without kv_tile_size", nattn.attention, Q1, Q1, Q1, q_tile_size=64)


def test_tile_not_in_list():
    raises(ValueError, "not valid for backend 'reference'.*get_configs", nattn.na2d, Q2, Q2, Q2, 3,
           q_tile_shape=(8, 8), kv_tile_shape=(8, 8), backend="reference")


def test_flags_must_be_bools():
    for name in ("return_lse", "torch_compile", "run_persistent_kernel", "backward_use_pt_reduction"):
        raises(ValueError, name, nattn.na2d, Q2, Q2, Q2, 3, **{name: 1})
    raises(ValueError, "attention_kwargs", nattn.na2d, Q2, Q2, Q2, 3, attention_kwargs=[("backend", "cpu")])
    raises(ValueError, "backward_kv_splits", nattn.na2d, Q2, Q2, Q2, 3, backward_kv_splits=0)


# ---- backends ---------------------------------------------------------------------------------------


def test_unknown_backend():
    raises(NotImplementedError, "backend 'nope' is not known; known backends: .*reference", nattn.na2d, Q2, Q2, Q2,
           3, backend="nope")
    raises(ValueError, "backend", nattn.na2d, Q2, Q2, Q2, 3, backend=3)


def test_backend_that_cannot_run():
    raises(NotImplementedError, "cutlass-fna runs on CUDA tensors only", nattn.na2d, Q2, Q2, Q2, 3,
           backend="cutlass-fna")
    raises(NotImplementedError, "hopper-fmha runs on CUDA tensors only", nattn.attention, Q1, Q1, Q1,
           backend="hopper-fmha")
    raises(NotImplementedError, "runs standard attention only", nattn.na2d, Q2, Q2, Q2, 3, backend="cutlass-fmha")


# ---- attention (FMHA) -------------------------------------------------------------------------------


def test_attention_checks():
    raises(ValueError, "must be a 4-D tensor", nattn.attention, Q2, Q2, Q2)
    raises(ValueError, "same batch", nattn.attention, Q1, arr((2, 10, 2, 8)), arr((2, 10, 2, 8)))
    raises(ValueError, "same sequence length", nattn.attention, Q1, Q1, arr((1, 9, 2, 8)))
    raises(ValueError, "is_causal", nattn.attention, Q1, Q1, Q1, is_causal=1)
    raises(ValueError, "is_causal", nattn.attention, Q1, Q1, Q1, is_causal=(True,))


def test_varlen_checks():
    s = np.array([4, 6], np.int32)
    raises(ValueError, "seqlens_Q and seqlens_KV must be given together", nattn.attention, Q1, Q1, Q1, seqlens_Q=s)
    raises(ValueError, "int32", nattn.attention, Q1, Q1, Q1, seqlens_Q=s.astype(np.int64), seqlens_KV=s)
    raises(ValueError, "same length", nattn.attention, Q1, Q1, Q1, seqlens_Q=s, seqlens_KV=s[:1])
    raises(ValueError, "batch == 1", nattn.attention, arr((2, 10, 2, 8)), arr((2, 10, 2, 8)), arr((2, 10, 2, 8)),
           seqlens_Q=s, seqlens_KV=s)
    cu = np.array([0, 4, 10], np.int32)
    raises(ValueError, "all four", nattn.attention, Q1, Q1, Q1, cumulative_seqlen_Q=cu, cumulative_seqlen_KV=cu)
    raises(ValueError, "max_seqlen_Q", nattn.attention, Q1, Q1, Q1, cumulative_seqlen_Q=cu, cumulative_seqlen_KV=cu,
           max_seqlen_Q=11, max_seqlen_KV=6)
    raises(ValueError, "both be zero or both non-zero", nattn.attention, Q1, Q1, Q1, cumulative_seqlen_Q=cu,
           cumulative_seqlen_KV=cu, max_seqlen_Q=0, max_seqlen_KV=6)
    raises(ValueError, "without cumulative_seqlen", nattn.attention, Q1, Q1, Q1, max_seqlen_Q=4)
    raises(ValueError, "give either", nattn.attention, Q1, Q1, Q1, seqlens_Q=s, seqlens_KV=s,
           cumulative_seqlen_Q=cu)
    bad = np.array([1, 4, 10], np.int32)
    raises(ValueError, r"\[0\] must be 0", nattn.attention, Q1, Q1, Q1, cumulative_seqlen_Q=bad,
           cumulative_seqlen_KV=cu, max_seqlen_Q=6, max_seqlen_KV=6, backend="reference")


# ---- merge ------------------------------------------------------------------------------------------


def test_merge_checks():
    o, l = arr((1, 4, 2, 8)), arr((1, 4, 2))
    raises(ValueError, "at least 2 outputs", nattn.merge_attentions, [o], [l])
    raises(ValueError, "2 outputs but 3 lse", nattn.merge_attentions, [o, o], [l, l, l])
    raises(ValueError, "must be 4-D", nattn.merge_attentions, [o[0], o[0]], [l, l])
    raises(ValueError, "outputs\\[1\\] has shape", nattn.merge_attentions, [o, o[:, :3]], [l, l])
    raises(ValueError, "lse_tensors\\[1\\] must have shape", nattn.merge_attentions, [o, o], [l, l[:, :3]])
    raises(ValueError, "float32", nattn.merge_attentions, [o, o], [l, l.astype(np.float16)])
    raises(ValueError, "lists or tuples", nattn.merge_attentions, o, l)


# ---- context ----------------------------------------------------------------------------------------


def test_context_flags():
    raises(ValueError, "pref", nattn.set_memory_usage_preference, "lots")
    nattn.set_memory_usage_preference("strict")
    assert nattn.is_memory_usage_strict() and not nattn.is_memory_usage_default()
    nattn.set_memory_usage_preference("default")
    assert nattn.is_memory_usage_default()
    nattn.allow_flex_compile(True, True)
    assert nattn.is_flex_compile_allowed() and nattn.is_flex_compile_backprop_allowed()
    nattn.disable_flex_compile()  # NATTEN's re-enables compile; ours disables it
    assert not nattn.is_flex_compile_allowed() and not nattn.is_flex_compile_backprop_allowed()
    nattn.allow_flex_compile_backprop(True)
    nattn.disable_flex_compile_backprop()
    assert nattn.is_flex_compile_allowed() and not nattn.is_flex_compile_backprop_allowed()
    nattn.disable_flex_compile()
    nattn.use_deterministic_algorithms(True)
    assert nattn.are_deterministic_algorithms_enabled()
    raises(RuntimeError, "conflicts", nattn.use_kv_parallelism_in_fused_na, True)
    nattn.use_deterministic_algorithms(False)
    nattn.use_kv_parallelism_in_fused_na(True)
    assert nattn.is_kv_parallelism_in_fused_na_enabled()
    raises(ValueError, "mode", nattn.use_deterministic_algorithms, 1)
