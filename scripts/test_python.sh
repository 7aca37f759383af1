#!/usr/bin/env bash
# Builds and installs the Python package (pip install ., scikit-build-core + nanobind) into a
# virtual environment and runs its tests (tests/python, pytest). Works on a fresh Debian machine
# that reaches Debian's packages and PyPI only.
#
#   NATTN_PY_DIR    where the venv and the CMake build go (default: build-python/, git-ignored)
#   NATTN_PY_TORCH  1 (default) installs torch from PyPI so the torch tests run; 0 skips them
#   extra arguments are passed to pytest (e.g. scripts/test_python.sh -k golden)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${NATTN_PY_DIR:-$root/build-python}"
venv="$dir/venv"

"$root/scripts/install_deps.sh"
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "[nattn] installing python3-venv"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-dev
fi

mkdir -p "$dir"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.2" ninja numpy pytest
if [ "${NATTN_PY_TORCH:-1}" = "1" ]; then
  "$py" -c "import torch" >/dev/null 2>&1 || "$py" -m pip install -q torch
fi

# The build directory is kept between runs, so a second run rebuilds only what changed.
CMAKE_BUILD_PARALLEL_LEVEL="${NATTN_JOBS:-$(nproc)}" \
  "$py" -m pip install -q --no-build-isolation -C build-dir="$dir/skbuild" "$root"

cd "$root"
"$py" -m pytest tests/python -q -p no:cacheprovider "$@"
