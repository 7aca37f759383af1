#!/usr/bin/env bash
# Builds nattn (if needed), runs every CPU test with ctest, then the Python package's tests.
# CI calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${NATTN_BUILD_DIR:-$root/build}"
jobs="${NATTN_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900

# The Python package (pip install . into a venv, then pytest). Torch tests skip unless
# NATTN_PY_TORCH=1 (which installs torch from PyPI first).
NATTN_PY_TORCH="${NATTN_PY_TORCH:-0}" "$root/scripts/test_python.sh"
