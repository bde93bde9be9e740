#!/usr/bin/env bash
# Issue 12's shipped weights, made on one CUDA machine in one call of at most ~9 minutes:
#   1. `ddpm train --preset mnist` for MINUTES (default 2.5), unconditional, then class-conditional,
#      at batch BATCH (default 128), with the project's own command;
#   2. `ddpm pack` of each (float16 EMA, ~2 MB) into $OUT/pretrained/{mnist,mnist-cond};
#   3. FID/KID of the unconditional weights: N (default 10000) samples of the 1000-step ancestral
#      sampler against the MNIST test set (Inception from $DDPM_INCEPTION_WEIGHTS: carry the float16
#      copy benchmarks/inception_fp16.py writes); the recognised share of the conditional weights
#      at guidance 0 and 2 (1000-step ancestral, NC samples, benchmarks/conditional_mnist.py's
#      classifier) and 64-sample pictures of both.
# Needs MNIST idx files in .mnist/ (`ddpm data export-mnist .mnist`). SMOKE=1 runs it tiny on a CPU.
# Copy $OUT/pretrained/* into src/ddpm/pretrained/ to ship them; $OUT/results.tgz holds the log, the
# figures (JSON) and the pictures (a GPU call brings back at most 8 files).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/pretrained}; W=${WORK:-/tmp/gpu_pre}
MINUTES=${MINUTES:-2.5}; BATCH=${BATCH:-128}; N=${N:-10000}; NC=${NC:-1000}; DEVICE=${DEVICE:-cuda}
STEPS=1000000; SAMPLER=(); EXTRA=(); CSTEPS=1000; REFN=10000
if [ -n "${SMOKE:-}" ]; then
  MINUTES=0.05; BATCH=16; N=16; NC=20; DEVICE=cpu; SAMPLER=(--sampler ddim --steps 5); EXTRA=(--ref-n 50)
  CSTEPS=5; REFN=50
fi
rm -rf "$W" && mkdir -p "$OUT/pretrained" "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
log() { echo "=== $(date +%T) $*"; }
{
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
for kind in mnist mnist-cond; do
  flag=(); [ $kind = mnist-cond ] && flag=(--class-conditional)
  log "train $kind: ddpm train --preset mnist ${flag[*]} --batch-size $BATCH --time-limit $MINUTES"
  timeout $(python3 -c "print(int($MINUTES * 60 + 90))") python3 -m ddpm train --preset mnist "${flag[@]}" \
    --data-dir .mnist --batch-size $BATCH --steps $STEPS --time-limit $MINUTES --seed 0 --quiet --device $DEVICE \
    --out $W/$kind
  tail -n 1 $W/$kind/log.csv
  step=$(tail -n 1 $W/$kind/log.csv | cut -d, -f1)
  rm -rf "$OUT/pretrained/$kind"
  python3 -m ddpm pack $W/$kind "$OUT/pretrained/$kind" --note "ddpm train --preset mnist ${flag[*]} --batch-size \
$BATCH --time-limit $MINUTES (step $step) on $(python3 -c "import torch; print(torch.cuda.get_device_name(0) if \
torch.cuda.is_available() else 'a CPU')")"
done
log "FID of pretrained mnist: $N samples, 1000-step ancestral, vs the MNIST test set"
timeout 420 python3 -m ddpm eval fid --checkpoint "$OUT/pretrained/mnist" --num-samples $N --ref mnist:test \
  --data-dir .mnist --device $DEVICE --quiet "${SAMPLER[@]}" "${EXTRA[@]}" --out $W/fid_mnist.json
log "pretrained mnist-cond: recognised share at guidance 0 and 2 ($NC samples)"
timeout 240 python3 benchmarks/conditional_mnist.py --out $W/cond --run "$OUT/pretrained/mnist-cond" \
  --phase classifier sample --data-dir .mnist --device $DEVICE --n $NC --guidance 0 2 --sampler ancestral \
  --steps $CSTEPS --eta 0 --batch-size 1000 --ref-n $REFN
mkdir -p $W/res && cp $W/cond/classes_by_guidance.png $W/cond/conditional_mnist.json $W/res/ 2>/dev/null
log "pictures: 64 samples each (1000-step ancestral)"
python3 -m ddpm sample --checkpoint "$OUT/pretrained/mnist" --num-samples 64 --device $DEVICE --quiet \
  "${SAMPLER[@]}" --out $W/res/mnist_64.png
python3 -m ddpm sample --checkpoint "$OUT/pretrained/mnist-cond" --num-samples 64 --class all --guidance 2 \
  --device $DEVICE --quiet "${SAMPLER[@]}" --out $W/res/mnist_cond_64.png
cp $W/fid_mnist.json $W/res/ 2>/dev/null
log done
} 2>&1 | tee $W/log.txt
cp $W/log.txt $W/res/ && tar czf "$OUT/results.tgz" -C $W/res .
