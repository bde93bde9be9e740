#!/usr/bin/env bash
# Set up, train a DDPM on the S-curve (the seed note's classic demo) and sample from it, in
# about 80 seconds on 2 cores (half of it sampling 4,000 points). Writes runs/demo2d/:
# samples.npy, samples.png (samples vs data), samples_strip.png and samples.gif (the reverse process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/demo2d}
# The paper's diffusion (T=1000, linear beta 1e-4..0.02, eps, L_simple); a 2-D MLP learns
# faster with lr 1e-3 and a short warm-up than with the image defaults (2e-4, 5000 steps).
.venv/bin/ddpm train --data s_curve --steps 5000 --lr 1e-3 --warmup 100 --seed 0 --out "$OUT"
.venv/bin/ddpm sample --checkpoint "$OUT" --n 4000 --seed 0 --out "$OUT/samples.npy" --gif
