import json
import os
import sys

# The tests run many tiny problems, often on a loaded machine: OpenMP threads that spin-wait at
# every barrier then cost ~25 ms a call. Passive waiting keeps tiny calls in microseconds.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN_DIR = os.path.join(ROOT, "testdata", "golden")


def golden_cases():
    if not os.path.isdir(GOLDEN_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(GOLDEN_DIR) if f.startswith("case_") and f.endswith(".json"))


def load_golden(name):
    with open(os.path.join(GOLDEN_DIR, name + ".json")) as f:
        meta = json.load(f)
    raw = np.fromfile(os.path.join(GOLDEN_DIR, name + ".bin"), dtype="<f4")
    arrays = {}
    for key, a in meta["arrays"].items():
        n = int(np.prod(a["shape"]))
        off = a["offset"] // 4
        arrays[key] = raw[off:off + n].reshape(a["shape"]).copy()
    return meta, arrays


_working = {}


def backend_works(name):
    """Whether `name` runs a tiny NA problem in this build (the cpu backend may still be a stub)."""
    if name not in _working:
        import nattn

        x = np.random.default_rng(0).standard_normal((1, 4, 1, 8)).astype(np.float32)
        try:
            nattn.na1d(x, x, x, kernel_size=2, backend=name)
            _working[name] = True
        except NotImplementedError:
            _working[name] = False
    return _working[name]


CPU_BACKENDS = ["reference", "cpu"]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    if not backend_works(request.param):
        pytest.skip(f"backend {request.param} does not run NA in this build yet")
    return request.param
