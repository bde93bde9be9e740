#!/usr/bin/env bash
# Create .venv (once) and install ddpm with its test extras into it.
# PyTorch is pinned to the CPU build this machine carries (requirements-cpu.txt);
# the package itself only asks for torch>=2.1, so a GPU user keeps their own build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -r requirements-cpu.txt -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import torch, ddpm; print(f'ddpm {ddpm.__version__}, torch {torch.__version__}')"
