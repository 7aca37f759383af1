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
  # CUTLASS/CuTe headers come from the PyPI wheel; never vendored.
  python3 -m pip install -q "nvidia-cutlass==4.2.0.0"
fi
