#!/usr/bin/env bash
# Issue 12's shipped weights, made on one CUDA machine in one call that ends by DEADLINE seconds
# (default 530; call it with timeout_s 570). A session has 15 minutes of device time in all, so
# this is a session's whole GPU work (benchmarks/gpu_issue13.sh is the other one; one a session):
#   1. `ddpm train --preset mnist $NET` unconditional and class-conditional, the two at once, for MINUTES
#      (default 2.5) at batch BATCH (default 128), with the project's own command; NET (default none) resizes
#      the network or changes the optimizer, e.g. NET="--num-channels 64 --num-res-blocks 2 --lr 2e-4";
#      KINDS="mnist" trains the unconditional one alone (the GPU all its own; step 4 is then skipped);
#   2. `ddpm pack` of each (float16 EMA, ~2 MB, DDIM eta 1 50 steps as the packed default sampler) into
#      $OUT/pretrained/{mnist,mnist-cond}, and
#      64-sample pictures of both (1000-step ancestral; the conditional one at guidance 2);
#   3. FID/KID of the unconditional weights: the first samples of seed 0 (1000-step ancestral), as
#      many of N (default 10000) as fit in the time left less a reserve, against the MNIST test set
#      (benchmarks/samples_within.py; the count is in the log), and the share of them a classifier reads
#      with confidence beside real test digits (benchmarks/digit_quality.py: "clean digits"; its
#      classifier is read from CLASSIFIER, default .inc/digit_classifier, or trained there for 3 epochs);
#   4. the conditional weights' recognised share at guidance 0 and 2 (NC samples each, default 300,
#      1000-step ancestral, benchmarks/conditional_mnist.py's classifier);
#   5. bf16 sampling's effect on FID, if time is left: the same first samples drawn under bf16
#      autocast against their fp32 selves, both against the test set.
# TRAIN=0 skips 1-2 and measures 3-5 on the weights that ship (pretrained:mnist, pretrained:mnist-cond),
# all the time to the FID samples; COMPILE=1 draws the FID samples with the network compiled.
# The FID samples come back as $OUT/fid_fp32.npz; a later call with RESUME=that file (carried) keeps
# them and draws on from the next index, so two sessions can make the 10,000 if one falls short.
# Inception comes from $DDPM_INCEPTION_WEIGHTS: carry the float16 copy benchmarks/inception_fp16.py
# writes. Needs MNIST idx files in .mnist/ (`ddpm data export-mnist .mnist`). SMOKE=1 runs it tiny on
# a CPU. Copy $OUT/pretrained/* into src/ddpm/pretrained/ to ship them; $OUT/results.tgz holds the
# log, the figures (JSON) and the pictures (a GPU call brings back at most 8 files).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/pretrained}; W=${WORK:-/tmp/gpu_pre}
MINUTES=${MINUTES:-2.5}; BATCH=${BATCH:-128}; N=${N:-10000}; NC=${NC:-300}; DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-530}; TRAIN=${TRAIN:-1}; NET=${NET:-}; KINDS=${KINDS:-mnist mnist-cond}; CLASSIFIER=${CLASSIFIER:-.inc/digit_classifier}; STEPS=1000000; SAMPLER=(--sampler ancestral); CSTEPS=1000; REFN=10000; FIDSTEPS=()
if [ -n "${SMOKE:-}" ]; then
  MINUTES=0.05; BATCH=16; N=40; NC=20; DEVICE=cpu; SAMPLER=(--sampler ddim --steps 5); CSTEPS=5; REFN=50
  FIDSTEPS=(--steps 5); DEADLINE=${DEADLINE_SMOKE:-400}
fi
rm -rf "$W" && mkdir -p "$OUT/pretrained" "$W/res"
CK=$OUT/pretrained/; [ "$TRAIN" = 0 ] && CK=pretrained:  # the checkpoints measured: made here, or shipped
FIDOPTS=("${FIDSTEPS[@]}"); [ -n "${COMPILE:-}" ] && FIDOPTS+=(--compile)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch, ddpm" || {  # before minutes of device time
  echo "$(command -v python3) cannot import torch and ddpm: put the right python first on the PATH" >&2; exit 1; }
log() { echo "=== $(date +%T) (${SECONDS}s) $*"; }
left() { local s=$((DEADLINE - SECONDS - $1)); echo $((s > 1 ? s : 1)); }  # seconds to the deadline less a reserve (>= 1)
fid() {  # fid NAME NPZ: FID/KID of NPZ against the first REFN MNIST test images, into $W/res/NAME.json
  timeout $(left 5) python3 -m ddpm eval fid --samples "$2" --ref mnist:test --ref-n $REFN --data-dir .mnist \
    --device $DEVICE --quiet --out $W/res/$1.json && cat $W/res/$1.json && echo
}
{
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'a CPU')")
if [ "$TRAIN" = 1 ]; then
rm -rf "$OUT/pretrained/mnist" "$OUT/pretrained/mnist-cond"  # none of an earlier call's weights is measured
log "train $KINDS at once: ddpm train --preset mnist $NET [--class-conditional] --batch-size $BATCH --time-limit $MINUTES"
for kind in $KINDS; do
  flag=(); [ $kind = mnist-cond ] && flag=(--class-conditional)
  timeout $(python3 -c "print(int($MINUTES * 60 + 90))") python3 -m ddpm train --preset mnist $NET "${flag[@]}" \
    --data-dir .mnist --batch-size $BATCH --steps $STEPS --time-limit $MINUTES --seed 0 --quiet --device $DEVICE \
    --out $W/$kind > $W/train_$kind.txt 2>&1 &
done
wait
for kind in $KINDS; do
  flag=(); [ $kind = mnist-cond ] && flag=(--class-conditional)
  cat $W/train_$kind.txt; tail -n 1 $W/$kind/log.csv
  step=$(tail -n 1 $W/$kind/log.csv | cut -d, -f1)
  python3 -m ddpm pack $W/$kind "$OUT/pretrained/$kind" --sampler ddim --steps 50 --eta 1 --note "ddpm train --preset mnist $NET ${flag[*]} --batch-size \
$BATCH --time-limit $MINUTES (step $step; trained at once: $KINDS) on $gpu"
done
log "pictures: 64 samples each (1000-step ancestral)"
python3 -m ddpm sample --checkpoint "$OUT/pretrained/mnist" --num-samples 64 --device $DEVICE --quiet \
  "${SAMPLER[@]}" --out $W/res/mnist_64.png
[ -d "$OUT/pretrained/mnist-cond" ] && python3 -m ddpm sample --checkpoint "$OUT/pretrained/mnist-cond" \
  --num-samples 64 --class all --guidance 2 --device $DEVICE --quiet "${SAMPLER[@]}" --out $W/res/mnist_cond_64.png
fi
log "FID of pretrained mnist: up to $N samples of the 1000-step sampler in $(left 185) s, vs the MNIST test set"
python3 benchmarks/samples_within.py --checkpoint "${CK}mnist" --n $N --seconds $(left 185) \
  --device $DEVICE "${FIDOPTS[@]}" ${RESUME:+--resume "$RESUME"} --out $W/fp32.npz | tee $W/res/samples_fp32.json
cp $W/fp32.npz "$OUT/fid_fp32.npz"  # for RESUME= in a later call
fid fid_mnist $W/fp32.npz
log "clean digits: how many of those samples a small MNIST classifier reads with confidence"
timeout $(left 150) python3 benchmarks/digit_quality.py --samples "1000-step ancestral=$W/fp32.npz" --data-dir .mnist \
  --classifier-dir "$CLASSIFIER" --out $W/res/digit_quality
[ "$TRAIN" = 1 ] && [ ! -d "$OUT/pretrained/mnist-cond" ] && NC=0
[ "$NC" -gt 0 ] && log "pretrained mnist-cond: recognised share at guidance 0 and 2 ($NC samples each)" &&
timeout $(left 60) python3 benchmarks/conditional_mnist.py --out $W/cond --run "${CK}mnist-cond" \
  --phase classifier sample --data-dir .mnist --device $DEVICE --n $NC --guidance 0 2 --sampler ancestral \
  --steps $CSTEPS --eta 0 --batch-size 1000 --ref-n $REFN
cp $W/cond/classes_by_guidance.png $W/cond/conditional_mnist.json $W/res/ 2>/dev/null
if [ "$(left 40)" -gt 30 ]; then
  log "bf16 sampling against fp32: the same first samples, in $(left 40) s"
  python3 benchmarks/samples_within.py --checkpoint "${CK}mnist" --n $N --seconds $(left 40) \
    --precision bf16 --device $DEVICE "${FIDOPTS[@]}" --out $W/bf16.npz | tee $W/res/samples_bf16.json
  python3 -c "
import numpy as np
b = np.load('$W/bf16.npz')['arr_0']; a = np.load('$W/fp32.npz')['arr_0'][:len(b)]
np.savez('$W/fp32_head.npz', a)
d = np.abs(a.astype(int) - b.astype(int))
print(f'{len(b)} samples: pixels that differ {(d > 0).mean():.2%}, mean |diff| {d.mean():.3f} of 255')"
  fid fid_fp32_head $W/fp32_head.npz
  fid fid_bf16 $W/bf16.npz
fi
log done
} 2>&1 | tee $W/log.txt
cp $W/log.txt $W/res/ && tar czf "$OUT/results.tgz" -C $W/res .
