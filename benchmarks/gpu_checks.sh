#!/usr/bin/env bash
# The GPU checks of the images issue, in one short run on a CUDA machine (the project's tests
# never need one): the trainer under bf16 autocast, torch.compile and torchrun/nccl; the U-Net's
# throughput; then the `mnist` preset of the README's main job trained for LONG_MINUTES (the
# README's "what longer training gives" picture). TABLE2=1 adds the Table 2 / sampler sweeps.
# Expects MNIST idx files in .mnist/ (`ddpm data export-mnist .mnist`) and writes under
# ${OUT:-runs/gpu}. Each step is bounded so one failure leaves the rest; the whole run takes
# about 8 minutes on an H200 (one 10-minute device call), more with TABLE2=1.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
R=$OUT/r            # results that come back
W=/tmp/gpu_work     # bulky run directories
export LONG_MINUTES=${LONG_MINUTES:-2}
mkdir -p "$R" "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch, ddpm" || {  # before minutes of device time
  echo "$(command -v python3) cannot import torch and ddpm: put the right python first on the PATH" >&2; exit 1; }
log() { echo "=== $(date +%T) $*"; }
{
log env; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"

log "trainer on cuda: fp32, then bf16 autocast (300 steps each)"
timeout 40 python3 -m ddpm train --preset mnist --data-dir .mnist --steps 300 --quiet --out $W/fp32
timeout 40 python3 -m ddpm train --preset mnist --data-dir .mnist --steps 300 --precision bf16 --quiet --out $W/bf16
log "trainer: bf16 + torch.compile (200 steps), then resume it to 300"
timeout 90 python3 -m ddpm train --preset mnist --data-dir .mnist --steps 200 --precision bf16 --compile --quiet --out $W/compile
timeout 60 python3 -m ddpm train --preset mnist --data-dir .mnist --steps 300 --precision bf16 --compile --quiet --out $W/compile
log "trainer under torchrun with nccl (1 process)"
timeout 45 torchrun --nproc_per_node=1 -m ddpm train --preset mnist --data-dir .mnist --steps 50 --quiet --out $W/nccl
log "sampling and bits/dim on cuda from the bf16 run"
timeout 30 python3 -m ddpm sample --checkpoint $W/bf16 --n 16 --seed 0 --steps 100 --sampler ddim --out $W/bf16/ddim.png
timeout 30 python3 -m ddpm eval nll --checkpoint $W/bf16 --n 8 --data-dir .mnist
log "U-Net throughput: fp32 and bf16 autocast"
timeout 45 python3 benchmarks/gpu_train_speed.py --presets cifar10 mnist --batch 128
log "U-Net throughput: bf16 + torch.compile (mnist)"
timeout 120 python3 benchmarks/gpu_train_speed.py --presets mnist --batch 128 --compile

bash benchmarks/gpu_long_mnist.sh

if [ -n "${TABLE2:-}" ]; then
  log "table 2: train 4 objectives at once"
  timeout 170 python3 benchmarks/table2_mnist.py --out $W/table2 --phase train --parallel --data-dir .mnist ${T2_ARGS:-}
  log "table 2: samples (1000 steps) and bits/dim"
  timeout 70 python3 benchmarks/table2_mnist.py --out $W/table2 --phase eval ${T2_ARGS:-}
  log "samplers: 4 samplers x 5 step counts on eps_simple"
  timeout 80 python3 benchmarks/samplers.py --checkpoint $W/table2/eps_simple --out $W/samplers --phase sample ${SB_ARGS:-}
fi
log done
} 2>&1 | tee "$R/log.txt"
for d in $W/table2/*/; do
  [ -d "$d" ] || continue
  row=$(basename "$d"); c=$(ls -d "$d"checkpoints/step_* 2>/dev/null | tail -1)
  [ -n "$c" ] && tar czf "$OUT/ckpt_$row.tgz" -C "$c" ema.safetensors state.json
done
tar czf "$OUT/results.tgz" -C "$W" --exclude='checkpoints' --exclude='*.safetensors' . 2>/dev/null
tar czf "$OUT/log.tgz" -C "$R" .
