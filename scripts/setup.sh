#!/usr/bin/env bash
# One command on a fresh machine: install dependencies, build nattn (CPU backends, CLI, tests,
# benchmarks) and run the main job: a `nattn profile` of a 2-D problem on the CPU backend.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${NATTN_BUILD_DIR:-$root/build}"
jobs="${NATTN_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"

echo
echo "[nattn] nattn profile: 2-D 56x56, window 7x7, 4 heads, dim 64, fp32, forward + backward on the cpu backend"
"$build/nattn" profile -i 56 56 -w 7 7 -n 4 -d 64 --dtype fp32 --backend cpu --backprop
