#!/usr/bin/env bash
# Prints the folder holding CUTLASS's cute/ and cutlass/ headers (the PyPI wheel
# nvidia-cutlass==4.2.0.0, from python3's environment or scripts/install_deps.sh's private venv);
# exits 1 if neither has it.
root="$(cd "$(dirname "$0")/.." && pwd)"
code='import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include"))'
for py in python3 "$root/build-deps/venv/bin/python"; do
  dir="$("$py" -c "$code" 2> /dev/null)" || continue
  if [ -f "$dir/cute/arch/mma_sm80.hpp" ]; then
    echo "$dir"
    exit 0
  fi
done
echo "CUTLASS headers not found: run scripts/install_deps.sh --cuda" >&2
exit 1
