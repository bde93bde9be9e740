#!/usr/bin/env bash
# Set up and run the default test suite (slow checks are marked and excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -n 2 -m "not slow" "$@"
