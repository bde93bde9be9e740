"""U-Net training and forward throughput on a GPU: fp32, bf16 autocast, and torch.compile.

    python benchmarks/gpu_train_speed.py --presets cifar10 mnist --batch 128 [--compile]

Prints images/s per preset and mode, and projects the paper's 800k CIFAR-10 steps at batch 128.
"""

from __future__ import annotations

import argparse
import time

import torch

from ddpm.models.unet import UNet
from ddpm.presets import UNET_PRESETS


def bench(model, x, t, bf16: bool, reps: int, train: bool) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            if train:
                opt.zero_grad(set_to_none=True)
                loss = (model(x, t).float() - x).pow(2).mean()
            else:
                with torch.no_grad():
                    model(x, t)
        if train:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return reps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="*", default=["cifar10", "mnist"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="measure bf16 + torch.compile only")
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, batch {args.batch}")
    for name in args.presets:
        cfg = UNET_PRESETS[name]()
        model = UNet(cfg).cuda().train()
        x = torch.randn(args.batch, cfg.in_channels, cfg.image_size, cfg.image_size, device="cuda")
        t = torch.randint(1, 1001, (args.batch,), device="cuda")
        modes = [("fp32", model, False), ("bf16 autocast", model, True)]
        if args.compile:
            modes = [("bf16 + compile", torch.compile(model), True)]
        for label, net, bf16 in modes:
            if args.compile:
                start = time.perf_counter()
                bench(net, x, t, True, 1, True)
                bench(net, x, t, True, 1, False)
                print(f"  {name}: compiling (train and forward graphs) took {time.perf_counter() - start:.0f} s")
            tr = bench(net, x, t, bf16, args.reps, True)
            fw = bench(net, x, t, bf16, args.reps, False)
            line = f"{name:8s} {label:15s} train {tr:8.0f} img/s   forward {fw:8.0f} img/s"
            if name == "cifar10":
                line += f"   800k steps of {args.batch}: {800_000 * args.batch / tr / 3600:.1f} h"
            print(line, flush=True)


if __name__ == "__main__":
    main()
