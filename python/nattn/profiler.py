"""python -m nattn.profiler: the options and output of `nattn profile`, run through the Python
package (PyTorch tensors), plus PyTorch baselines on the same problem so one command compares
nattn with them:

* ``sdpa``: torch.nn.functional.scaled_dot_product_attention over the whole token layout (the
  dense self-attention that NA replaces; on CUDA torch picks flash / cuDNN / efficient kernels);
* ``flex-fna``: nattn's flex backend (torch flex_attention with the exact NA mask).

Timing is wall clock around each call (CUDA calls are synchronised); the reported runtime is the
median of --iterations timed calls after --warmup-steps untimed ones."""

import argparse
import json
import math
import statistics
import sys
import time

from . import __version__, _args, configs, context
from .functional import neighborhood_attention_generic


def _ints(text_list, name):
    out = []
    for t in text_list:
        for part in str(t).split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise ValueError(f"{name}: {part!r} is not an integer") from None
    return out


def _bools(text_list):
    out = []
    for t in text_list:
        for part in str(t).split(","):
            p = part.strip().lower()
            if not p:
                continue
            if p in ("true", "1", "yes"):
                out.append(True)
            elif p in ("false", "0", "no"):
                out.append(False)
            else:  # NATTEN's -c parses any word as True; ours rejects it
                raise ValueError(f"--causal: {part!r} is not a boolean (allowed: true/false, 1/0, yes/no)")
    return out


def _per_axis(values, rank, name, default):
    if not values:
        return list(default)
    if len(values) == 1:
        return values * rank
    if len(values) != rank:
        raise ValueError(f"{name} needs 1 or {rank} values (got {len(values)})")
    return values


def build_parser():
    p = argparse.ArgumentParser(prog="python -m nattn.profiler", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("problem size")
    g.add_argument("-i", "--input-size", nargs="+", required=True, help="token layout S, 1 to 3 integers")
    g.add_argument("-b", "--batch-size", type=int, default=1)
    g.add_argument("-n", "--heads", type=int, default=1)
    g.add_argument("--heads-kv", type=int, default=None)
    g.add_argument("-d", "--dim", type=int, default=64)
    g.add_argument("--dim-value", type=int, default=None)
    g = p.add_argument_group("NA parameters (one value for every axis, or one per axis)")
    g.add_argument("-w", "--window-size", nargs="+", default=[])
    g.add_argument("-s", "--stride", nargs="+", default=[])
    g.add_argument("--dilation", nargs="+", default=[])
    g.add_argument("-c", "--causal", nargs="+", default=[])
    g = p.add_argument_group("run mode")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    g.add_argument("--backprop", action="store_true")
    g.add_argument("--add-kv", type=int, default=0)
    g.add_argument("--device", default=None,
                   help="cpu or cuda[:N] [cuda if available and the backend is not cpu/reference, else cpu]")
    g = p.add_argument_group("backends and configurations")
    g.add_argument("--backend", default=None)
    g.add_argument("--fmha-backend", default=None)
    g.add_argument("--q-tile", nargs="+", default=[])
    g.add_argument("--kv-tile", nargs="+", default=[])
    g.add_argument("--backward-q-tile", nargs="+", default=[])
    g.add_argument("--backward-kv-tile", nargs="+", default=[])
    g.add_argument("--schedule", choices=["non", "coop", "pp"], default=None)
    g.add_argument("--no-baselines", action="store_true", help="time nattn only")
    g = p.add_argument_group("timing")
    g.add_argument("--warmup-steps", type=int, default=10)
    g.add_argument("--iterations", type=int, default=10)
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch, 0 = torch's default")
    g = p.add_argument_group("exploration")
    g.add_argument("--dry-run", action="store_true")
    g.add_argument("--max-configs", type=int, default=10)
    g.add_argument("--optimize", action="store_true")
    g.add_argument("--optimize-warmup-steps", type=int, default=5)
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None)
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--no-progress", action="store_true", help="accepted for compatibility with nattn profile")
    return p


class Options:
    def __init__(self, a):
        self.input_size = _ints(a.input_size, "--input-size")
        rank = len(self.input_size)
        if rank < 1 or rank > 3:
            raise ValueError(f"--input-size needs 1 to 3 integers (got {len(self.input_size)})")
        self.rank = rank
        self.window = _per_axis(_ints(a.window_size, "--window-size"), rank, "--window-size", self.input_size)
        self.stride = _per_axis(_ints(a.stride, "--stride"), rank, "--stride", [1] * rank)
        self.dilation = _per_axis(_ints(a.dilation, "--dilation"), rank, "--dilation", [1] * rank)
        self.causal = _per_axis(_bools(a.causal), rank, "--causal", [False] * rank)
        for name in ("batch_size", "heads", "dim", "warmup_steps", "iterations", "max_configs",
                     "optimize_warmup_steps", "add_kv", "threads"):
            v = getattr(a, name)
            if v < (1 if name in ("batch_size", "heads", "dim", "iterations") else 0):
                raise ValueError(f"--{name.replace('_', '-')} must be >= "
                                 f"{1 if name in ('batch_size', 'heads', 'dim', 'iterations') else 0} (got {v})")
        self.batch, self.heads, self.dim = a.batch_size, a.heads, a.dim
        self.heads_kv = a.heads_kv if a.heads_kv is not None else a.heads
        self.dim_value = a.dim_value if a.dim_value is not None else a.dim
        self.dtype, self.backprop, self.add_kv = a.dtype, a.backprop, a.add_kv
        self.backend, self.fmha_backend = a.backend, a.fmha_backend
        self.q_tile, self.kv_tile = _ints(a.q_tile, "--q-tile") or None, _ints(a.kv_tile, "--kv-tile") or None
        self.bq_tile = _ints(a.backward_q_tile, "--backward-q-tile") or None
        self.bkv_tile = _ints(a.backward_kv_tile, "--backward-kv-tile") or None
        for x, y, n in ((self.q_tile, self.kv_tile, "--q-tile/--kv-tile"),
                        (self.bq_tile, self.bkv_tile, "--backward-q-tile/--backward-kv-tile")):
            if (x is None) != (y is None) and self.backend != "cpu":
                raise ValueError(f"{n}: give both or neither")
        if a.dry_run and a.optimize:
            raise ValueError("--dry-run and --optimize cannot be used together")
        self.schedule = a.schedule
        self.a = a


def _fmt_time(seconds):
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def _table(header, rows, footers=(), right=(), titles=()):
    widths = [len(h) for h in header]
    for r in list(rows) + list(footers):
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(r, is_header=False):
        cells = []
        for i, w in enumerate(widths):
            c = r[i] if i < len(r) else ""
            cells.append(" " + (c.rjust(w) if (i in right and not is_header) else c.ljust(w)) + " ")
        return "|" + "|".join(cells) + "|"

    out = list(titles) + [rule, line(header, True), rule] + [line(r) for r in rows]
    if footers:
        out += [rule] + [line(r) for r in footers]
    out.append(rule)
    return "\n".join(out)


def _tensors(o, device):
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[o.dtype]
    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype).requires_grad_(o.backprop)

    q = r(o.batch, *o.input_size, o.heads, o.dim)
    k = r(o.batch, *o.input_size, o.heads_kv, o.dim)
    v = r(o.batch, *o.input_size, o.heads_kv, o.dim_value)
    extra = (r(o.batch, o.add_kv, o.heads_kv, o.dim), r(o.batch, o.add_kv, o.heads_kv, o.dim_value)) \
        if o.add_kv else (None, None)
    return q, k, v, extra


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, warmup, iterations):
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t)
    return samples


def _na_call(o, q, k, v, extra, backend, q_tile=None, kv_tile=None, bq_tile=None, bkv_tile=None,
             torch_compile=False):
    akw = {"backend": o.fmha_backend} if o.fmha_backend else None
    return lambda: neighborhood_attention_generic(
        q, k, v, o.window, o.stride, o.dilation, o.causal, additional_keys=extra[0], additional_values=extra[1],
        attention_kwargs=akw, backend=backend, q_tile_shape=q_tile, kv_tile_shape=kv_tile,
        backward_q_tile_shape=bq_tile, backward_kv_tile_shape=bkv_tile, kernel_schedule=o.schedule,
        torch_compile=torch_compile)


def _profile_op(name, backend_label, fwd, o, device, q, k, v, extra):
    """[(backend, operation, samples)] for forward (and backward) of one callable."""
    rows = [(backend_label, name + "Forward", _time(fwd, device, o.a.warmup_steps, o.a.iterations))]
    if o.backprop:
        import torch

        out = fwd()
        grad = torch.randn_like(out)
        leaves = [t for t in (q, k, v) + tuple(x for x in extra if x is not None)]

        def bwd():
            torch.autograd.grad(out, leaves, grad, retain_graph=True)

        rows.append((backend_label, name + "Backward", _time(bwd, device, o.a.warmup_steps, o.a.iterations)))
    return rows


def _baselines(o, device, q, k, v, extra):
    import torch

    rows = []
    b, n = o.batch, int(math.prod(o.input_size))

    def flat(t):
        return t.reshape(b, n, t.shape[-2], t.shape[-1]).transpose(1, 2)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(
            flat(q), flat(k), flat(v), is_causal=False, enable_gqa=o.heads != o.heads_kv)

    # On CUDA, SDPA's flash and cuDNN kernels separately (the anchors of our GPU backends); on the
    # CPU, whatever SDPA picks.
    sdpa_variants = [("sdpa (dense self-attention)", None)]
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend

        sdpa_variants = [("sdpa flash (dense self-attention)", SDPBackend.FLASH_ATTENTION),
                         ("sdpa cudnn (dense self-attention)", SDPBackend.CUDNN_ATTENTION)]
    for label, kernel in sdpa_variants:
        try:
            if kernel is None:
                rows += _profile_op("Sdpa", label, sdpa, o, device, q, k, v, (None, None))
            else:
                from torch.nn.attention import sdpa_kernel

                with sdpa_kernel(kernel):
                    rows += _profile_op("Sdpa", label, sdpa, o, device, q, k, v, (None, None))
        except Exception as e:  # a baseline that cannot run is reported, not fatal
            rows.append((label, f"unavailable: {type(e).__name__}: {e}"[:80], []))
    import warnings

    # flex_attention with the exact NA mask: compiled on CUDA (its real speed), eager on the CPU.
    compiled = device.type == "cuda"
    label = "flex-fna (compiled)" if compiled else "flex-fna (eager)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = (context.is_flex_compile_allowed(), context.is_flex_compile_backprop_allowed())
        try:
            if o.backprop and device.type == "cpu":
                raise NotImplementedError("no backward on CPU")
            if compiled:
                context.allow_flex_compile(True, o.backprop)
            rows += _profile_op("Na", label, _na_call(o, q, k, v, extra, "flex-fna", torch_compile=compiled), o,
                                device, q, k, v, extra)
        except Exception as e:
            rows.append((label, f"unavailable: {e}"[:80], []))
        finally:
            if saved[0]:
                context.allow_flex_compile(True, saved[1])
            else:
                context.disable_flex_compile()
    return rows


def _describe(o, device):
    t = lambda xs: "(" + ", ".join(str(x).lower() if isinstance(x, bool) else str(x) for x in xs) + ")"  # noqa: E731
    return (f"Problem: {o.rank}-D neighborhood attention\n"
            f"  input size {t(o.input_size)}, batch {o.batch}, heads {o.heads} (kv heads {o.heads_kv}), dim {o.dim} "
            f"(value dim {o.dim_value}), dtype {o.dtype}, device {device}\n"
            f"  window {t(o.window)}, stride {t(o.stride)}, dilation {t(o.dilation)}, causal {t(o.causal)}, "
            f"additional KV {o.add_kv}")


def _dry_run(o, q, k, v):
    lines = []
    backends = [o.backend] if o.backend else [b["name"] for b in configs.list_backends() if b["supports_na"]]
    any_ok = False
    for name in backends:
        fwd = configs.get_configs(name, q, k, v) if name != "flex-fna" else []
        if name == "flex-fna":
            lines.append("Use case is compatible with backend flex-fna (Python package; no tile configurations).")
            any_ok = True
            continue
        if not fwd:
            continue
        any_ok = True
        lines.append(f"Use case is compatible with backend {name}.")
        for title, cs in (("Forward", fwd), ("Backward", configs.get_bwd_configs(name, q, k, v))):
            shown = cs if o.a.max_configs == 0 else cs[:o.a.max_configs]
            rows = [[str(i), str(c[0]), str(c[1])] + ([c[2]] if any(x[2] for x in cs) else []) for i, c in
                    enumerate(shown)]
            if len(shown) < len(cs):
                rows.append(["...", "", ""])
            header = ["#", "q_tile", "kv_tile"] + (["kernel_schedule"] if any(x[2] for x in cs) else [])
            lines.append(_table(header, rows, right=(0,), titles=(f"Backend: {name} / {title} pass configurations",)))
    if not any_ok:
        raise RuntimeError("no backend can run this problem")
    return "\n".join(lines)


def main(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("python -m nattn.profiler needs PyTorch (pip install torch)", file=sys.stderr)
        return 1
    try:
        o = Options(a)
        # Default device: the GPU when there is one, unless a CPU-only backend was asked for.
        cpu_only = a.backend in ("cpu", "reference")
        device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not cpu_only else "cpu"))
        if a.threads:
            torch.set_num_threads(a.threads)
        context.use_kv_parallelism_in_fused_na(True)
        context.set_memory_usage_preference("unrestricted")
        q, k, v, extra = _tensors(o, device)
        _args.check_params_vs_input(o.input_size, o.window, o.stride, o.dilation)
        print(_describe(o, device))
        chosen, text = configs.choose_backend(q, k, v, o.window, o.stride, o.dilation, tuple(o.causal))
        if not a.quiet:
            print(f"Forward backend: {o.backend or chosen} ({'named' if o.backend else 'automatic'})")
            if not o.backend:
                print("\n".join("  " + line for line in text.splitlines()))
        if a.dry_run:
            print(_dry_run(o, q, k, v))
            return 0
        backend = o.backend or chosen
        qt, kvt, bqt, bkvt = o.q_tile, o.kv_tile, o.bq_tile, o.bkv_tile
        search = None
        if a.optimize and backend != "flex-fna":
            search = []
            fwd_cfgs = [(c[0] or None, c[1] or None) for c in configs.get_configs(backend, q, k, v)]
            if qt or kvt:
                fwd_cfgs = [(qt, kvt)]
            best = None
            print(f"Searching {len(fwd_cfgs)} forward pass configs")
            for cq, ckv in fwd_cfgs:
                s = _time(_na_call(o, q, k, v, extra, backend, cq, ckv), device, a.optimize_warmup_steps, 3)
                med = statistics.median(s)
                search.append({"pass": "forward", "q_tile": cq, "kv_tile": ckv, "seconds": med})
                if best is None or med < best[0]:
                    best = (med, cq, ckv)
            qt, kvt = best[1], best[2]
            print(_table(["Parameter", "Value"], [["backend", backend], ["q_tile_shape", str(qt)],
                                                   ["kv_tile_shape", str(kvt)]], titles=("Best configuration",)))
        rows = _profile_op("Na", backend, _na_call(o, q, k, v, extra, backend, qt, kvt, bqt, bkvt), o, device, q, k,
                           v, extra)
        if not a.no_baselines:
            rows += _baselines(o, device, q, k, v, extra)
        table_rows, total, calls = [], 0.0, 0
        for b, op, s in rows:
            if s:
                med = statistics.median(s)
                table_rows.append([b, op, str(len(s)), _fmt_time(med)])
                if not b.startswith(("sdpa", "flex")) or b == backend:
                    total += med
                    calls += len(s)
            else:
                table_rows.append([b, op, "0", "n/a"])
        print(_table(["Backend", "Operation", "# calls", "Runtime"], table_rows,
                     footers=[["", "Total (nattn)", str(calls), _fmt_time(total)]], right=(2, 3),
                     titles=("", "Profiler results")))
        print("Runtime: median of the timed calls of each operation (wall clock); Total: sum of nattn's medians.")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"tool": "python -m nattn.profiler", "version": __version__,
                           "mode": "optimize" if a.optimize else "profile",
                           "problem": {"rank": o.rank, "input_size": o.input_size, "batch": o.batch, "heads": o.heads,
                                       "heads_kv": o.heads_kv, "dim": o.dim, "dim_value": o.dim_value,
                                       "window_size": o.window, "stride": o.stride, "dilation": o.dilation,
                                       "causal": o.causal, "additional_kv": o.add_kv, "dtype": o.dtype,
                                       "device": str(device)},
                           "results": [{"backend": b, "operation": op, "calls": len(s),
                                        "median_seconds": statistics.median(s) if s else None} for b, op, s in rows],
                           "search": search}, f, indent=1)
        return 0
    except (ValueError, NotImplementedError, RuntimeError) as e:
        print(f"python -m nattn.profiler: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
