"""Peak memory and time of a training step of the paper's CIFAR-10 U-Net with its batch computed in
K micro-batches (`ddpm train --grad-accum K`), each K in a fresh process, side by side in one run.

    python benchmarks/grad_accum_memory.py --batch 32 --k 1 2 4 --steps 2

On a CPU the figure is the process's peak resident memory (ru_maxrss, all of it: weights, Adam,
activations); on a GPU (--device cuda) torch.cuda.max_memory_allocated. The steps' losses and the
first step's gradient are compared with the first K's: the micro-batched steps are the same steps
up to float rounding.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(batch: int, k: int, steps: int, device: str) -> dict:
    import torch

    from ddpm.allocator import keep_freed_memory
    from ddpm.config import DiffusionConfig, OptimConfig
    from ddpm.models.unet import UNet
    from ddpm.presets import cifar10_unet
    from ddpm.training.trainer import draw_batch, make_train_state, train_step

    keep_freed_memory()  # as `ddpm train` runs
    torch.manual_seed(0)
    model = UNet(cifar10_unet()).to(device)
    diffusion, optim = DiffusionConfig(clip_x0=True), OptimConfig(batch_size=batch, grad_accum=k, warmup=0)
    state, schedule = make_train_state(model, diffusion, optim), diffusion.make_schedule().to(device)
    seconds, first = [], None
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x0 = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
        start = time.perf_counter()
        train_step(state, schedule, draw_batch(state, x0, g), diffusion, optim)
        state.sync()
        seconds.append(time.perf_counter() - start)
        if first is None:  # the first step's gradient (every 97th value; the weights are still K=1's here)
            first = torch.cat([p.grad.flatten()[::97].cpu() for p in model.parameters() if p.grad is not None])
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return {"peak_mib": peak, "seconds": min(seconds), "losses": state.losses, "grads": first.tolist()}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.batch, args.child, args.steps, args.device)))
        return
    rows, base = [], None
    for k in args.k:
        out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--steps", str(args.steps),
                              "--device", args.device, "--child", str(k)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r
        g, g1 = torch.tensor(r["grads"], dtype=torch.float64), torch.tensor(base["grads"], dtype=torch.float64)
        rows.append((k, r["peak_mib"], r["seconds"], max(abs(a - b) / abs(b) for a, b in zip(r["losses"],
                                                                                           base["losses"])),
                     float((g - g1).norm() / g1.norm())))
    print(f"cifar10 U-Net (35.7M), batch {args.batch}, {args.steps} steps, {args.device}")
    k0 = args.k[0]
    print(f"| K | micro-batch | peak memory MiB | step s | losses vs K={k0} (rel.) | "
          f"step 1's gradient vs K={k0} (rel. norm) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k, peak, sec, dl, dw in rows:
        print(f"| {k} | {args.batch // k} | {peak:,.0f} | {sec:.2f} | {dl:.1e} | {dw:.1e} |")


if __name__ == "__main__":
    main()
