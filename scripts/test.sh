#!/usr/bin/env bash
# Builds nattn (if needed) and runs every CPU test with ctest. CI calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${NATTN_BUILD_DIR:-$root/build}"
jobs="${NATTN_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900
