#!/usr/bin/env bash
# Issue 13 on one CUDA machine, about 8 minutes on an H200 (one device call; the last lines are a
# table). Expects MNIST idx files in .mnist/ (`ddpm data export-mnist .mnist`) and, for the
# diffusers columns, its wheel installed first (see docs/benchmarks.md). Writes under ${OUT:-runs/gpu13}.
#  1. benchmarks/gpu_speed.py: U-Net training step / forward, ours vs diffusers (fp32, bf16,
#     bf16 + channels-last, ours compiled), the samplers on the device, the MNIST 50k projection;
#  2. the whole trainer (`ddpm train --preset mnist`, fp32 and bf16) against the bare step of its
#     network at its batch (log.csv's steps/s against gpu_speed.py --preset mnist);
#  3. `ddpm sample` under torchrun with nccl (1 process) writes the array one process writes;
#  4. if time is left before DEADLINE seconds (default 540), the samplers with the network compiled
#     (`ddpm sample --compile --precision bf16`'s path; one compilation per preset).
# SMOKE=1 runs each step tiny on a CPU (a check of the script before a device call; no figure;
# step 4 left out: compiling takes minutes there); WORK= moves the working folder from /tmp/gpu13.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu13}; W=${WORK:-/tmp/gpu13}; DEADLINE=${DEADLINE:-540}
DEV=(); TRAIN=(--steps 1000); NS=256; NANC=1024; ANC=(); NCCL=nccl
if [ -n "${SMOKE:-}" ]; then  # SMOKE=1: every step tiny on a CPU (a check of this script, not a figure)
  DEV=(--device cpu --smoke --no-compile); TRAIN=(--steps 100 --batch-size 4); NS=8; NANC=4; ANC=(--steps 5)
  NCCL=gloo; DEADLINE=${DEADLINE_SMOKE:-900}
fi
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch, ddpm" || {  # before minutes of device time
  echo "$(command -v python3) cannot import torch and ddpm: put the right python first on the PATH" >&2; exit 1; }
log() { echo "=== $(date +%T) (${SECONDS}s) $*"; }
left() { local s=$((DEADLINE - SECONDS - $1)); echo $((s > 1 ? s : 1)); }  # seconds to the deadline less a reserve
{
log "gpu_speed.py (cifar10 network)"
timeout 330 python3 benchmarks/gpu_speed.py --preset cifar10 --batch 128 --skip compiled-sample "${DEV[@]}" \
  | tee $W/speed.txt
log "bare mnist training step at the preset's batch (32) and at 128"
timeout 60 python3 benchmarks/gpu_speed.py --preset mnist --batch 32 --skip sample --no-compile "${DEV[@]}" \
  | tail -14 > $W/bare32.txt
cat $W/bare32.txt
for prec in fp32 bf16; do
  log "the whole trainer: ddpm train --preset mnist --precision $prec (bf16 with --channels-last), ${TRAIN[*]}"
  cl=(); [ $prec = bf16 ] && cl=(--channels-last)
  timeout 90 python3 -m ddpm train --preset mnist --data-dir .mnist "${TRAIN[@]}" --precision $prec "${cl[@]}" --quiet \
    --out $W/train_$prec
  tail -n 2 $W/train_$prec/log.csv
done
python3 -c "
import numpy as np
a, b = (np.loadtxt('$W/train_' + p + '/log.csv', delimiter=',', skiprows=1, ndmin=2)[:, 1] for p in ('fp32', 'bf16'))
print('loss rows fp32:', np.round(a, 4)); print('loss rows bf16:', np.round(b, 4))
print('bf16 against fp32, mean over the rows: %+.2f %%' % (100 * (b.mean() / a.mean() - 1)))"
log "torchrun ($NCCL, 1 process) against one process: ddpm sample, $NS images, DDIM 50 steps"
timeout 60 torchrun --nproc_per_node=1 -m ddpm sample --checkpoint $W/train_fp32 --num-samples $NS --sampler ddim \
  --steps 50 --quiet --out $W/tr.npz
timeout 60 python3 -m ddpm sample --checkpoint $W/train_fp32 --num-samples $NS --sampler ddim --steps 50 --quiet \
  --out $W/one.npz
python3 -c "import numpy as np; a, b = (np.load('$W/' + f)['arr_0'] for f in ('tr.npz', 'one.npz')); \
print('torchrun == one process:', a.shape, bool((a == b).all()))"
log "sampling the trained mnist model on the GPU: 1000 ancestral steps, $NANC images, fp32 then bf16"
for prec in fp32 bf16; do
  TIMEFORMAT="ddpm sample $NANC x 1000 steps $prec: %R s"  # bash's own time: /usr/bin/time may be missing there
  time timeout 120 python3 -m ddpm sample \
    --checkpoint $W/train_fp32 --num-samples $NANC "${ANC[@]}" --precision $prec --quiet --out $W/s_$prec.npz
done
if [ "$(left 15)" -gt 90 ] && [ -z "${SMOKE:-}" ]; then
  log "compiled sampling (bf16), in the $(left 15) s left"
  timeout $(left 15) python3 benchmarks/gpu_speed.py --preset cifar10 --skip train sample "${DEV[@]}" \
    | tee $W/compiled.txt
fi
log done
echo; echo "trainer steps/s (last log row) vs the bare step:"
for prec in fp32 bf16; do echo "  $prec trainer: $(tail -n 1 $W/train_$prec/log.csv | cut -d, -f4) steps/s"; done
grep "train " $W/bare32.txt | sed 's/^/  bare /'
echo; sed -n '/^| section/,$p' $W/speed.txt
[ -f $W/compiled.txt ] && sed -n '/^| section/,$p' $W/compiled.txt
} 2>&1 | tee "$OUT/log.txt"
cp $W/train_fp32/samples/*.png "$OUT/" 2>/dev/null || true
