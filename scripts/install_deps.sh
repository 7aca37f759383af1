#!/usr/bin/env bash
# Installs what nattn needs to build and test, from Debian packages (and, for CUDA builds, PyPI).
# Idempotent: installs only what is missing. Usage: scripts/install_deps.sh [--cuda]
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "[nattn] installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

if [ "${1:-}" = "--cuda" ]; then
  # CUTLASS/CuTe headers come from the PyPI wheel nvidia-cutlass==4.2.0.0; never vendored. Into
  # python3's environment when pip may write there, else into a private venv (Debian's system
  # Python refuses pip installs, PEP 668). scripts/cutlass_include.sh prints where they are.
  root="$(cd "$(dirname "$0")/.." && pwd)"
  if ! "$root/scripts/cutlass_include.sh" > /dev/null 2>&1; then
    if ! python3 -m pip install -q "nvidia-cutlass==4.2.0.0" 2> /dev/null; then
      echo "[nattn] installing nvidia-cutlass==4.2.0.0 into build-deps/venv"
      [ -x "$root/build-deps/venv/bin/python" ] || python3 -m venv "$root/build-deps/venv"
      "$root/build-deps/venv/bin/python" -m pip install -q "nvidia-cutlass==4.2.0.0"
    fi
  fi
  "$root/scripts/cutlass_include.sh" > /dev/null
fi
