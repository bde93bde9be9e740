#!/usr/bin/env bash
# The README's main job, longer, on a CUDA machine: the `mnist` preset trained for LONG_MINUTES
# at LONG_BATCH (the preset's 32 unless set), resumed once for a few seconds (a resume on the
# GPU), then 64 samples with 1000 ancestral steps and the animation. Packs the run (last
# checkpoint without the optimizer) into $OUT/long.tgz. Expects MNIST idx files in .mnist/.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
W=/tmp/gpu_work
LONG_MINUTES=${LONG_MINUTES:-3.5}
BATCH=${LONG_BATCH:+--batch-size $LONG_BATCH}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
echo "=== $(date +%T) mnist preset ${LONG_BATCH:+batch $LONG_BATCH }for $LONG_MINUTES minutes"
timeout $(python3 -c "print(int($LONG_MINUTES * 60 + 60))") python3 -m ddpm train --preset mnist --data-dir .mnist \
  --steps 1000000 --time-limit "$LONG_MINUTES" --seed 0 --quiet $BATCH --out $W/long
echo "=== $(date +%T) resume on the GPU for 0.1 min"
timeout 40 python3 -m ddpm train --preset mnist --data-dir .mnist --steps 1000000 --time-limit 0.1 --seed 0 \
  --quiet $BATCH --out $W/long
tail -n 3 $W/long/log.csv
echo "=== $(date +%T) 64 samples, 1000 ancestral steps"
timeout 60 python3 -m ddpm sample --checkpoint $W/long --n 64 --batch-size 64 --seed 0 --out $W/long/samples.png --gif
c=$(ls -d $W/long/checkpoints/step_* | tail -1)
tar czf "$OUT/long.tgz" -C "$W" --exclude=long/tb --exclude=long/checkpoints long -C "$W/long" \
  --exclude=optimizer.safetensors "checkpoints/$(basename "$c")"
ls -la "$OUT"
