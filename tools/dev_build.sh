#!/usr/bin/env bash
# Developer loop: build mint._C in place (python/mint/_C*.so) so `PYTHONPATH=python pytest` uses it.
# Usage: tools/dev_build.sh [build-dir]   (uses $PYTHON or .venv/bin/python or python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
bdir=${1:-build/dev}
gen=()
command -v ninja >/dev/null 2>&1 || [ -x "$(dirname "$py")/ninja" ] && gen=(-G Ninja -DCMAKE_MAKE_PROGRAM="$(command -v ninja || echo "$(cd "$(dirname "$py")" && pwd)/ninja")")
cmake -S . -B "$bdir" "${gen[@]}" -DPython_EXECUTABLE="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$bdir" -j 2
# copy then rename: a process that has the old library mapped keeps its inode instead of seeing it rewritten
for f in "$bdir"/_C*.so; do cp "$f" "python/mint/.$(basename "$f").tmp" && mv -f "python/mint/.$(basename "$f").tmp" "python/mint/$(basename "$f")"; done
cp "$bdir"/_build_info.py python/mint/_build_info.py
echo "built $(ls python/mint/_C*.so)"
