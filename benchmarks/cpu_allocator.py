"""What keeping freed memory (``ddpm.allocator.keep_freed_memory``, which the CLI calls) does to
CPU work: each workload runs in a fresh process with glibc's default malloc thresholds and with
the raised ones, alternating, and prints wall time, user and system CPU time, minor page faults
per step and the process's peak memory (medians of the repeats). A noisy machine moves both
columns alike; compare the ratio.

    python benchmarks/cpu_allocator.py      # the U-Net's forward and training step, FID's Inception
    python benchmarks/cpu_allocator.py --repeats 5 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

WORKLOADS = {  # name: (preset, batch, threads, train, processes at once)
    "mnist forward, batch 50, 1 thread": ("mnist", 50, 1, False, 1),
    "mnist forward, batch 50, two 1-thread processes at once (fid_ancestral_cpu.sh)": ("mnist", 50, 1, False, 2),
    "mnist training step, batch 32, 2 threads": ("mnist", 32, 2, True, 1),
    "cifar10 forward, batch 16, 2 threads": ("cifar10", 16, 2, False, 1),
    "FID's Inception on 50 MNIST digits, 1 thread": ("inception", 50, 1, False, 1),
}


def worker(preset: str, batch: int, threads: int, train: bool, steps: int, keep: bool) -> dict:
    import torch

    from ddpm.allocator import keep_freed_memory
    from ddpm.models.unet import UNet
    from ddpm.presets import UNET_PRESETS

    kept = keep_freed_memory() if keep else 0
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if preset == "inception":  # the FID features of uint8 digits (resized to 299 inside)
        from ddpm.evaluation.fid import InceptionFeatures

        extractor, digits = InceptionFeatures("cpu", batch_size=batch), torch.randint(0, 256, (batch, 1, 28, 28),
                                                                                      dtype=torch.uint8)
    else:
        cfg = UNET_PRESETS[preset]()
        net = UNet(cfg).train(train)
        opt = torch.optim.Adam(net.parameters(), 1e-4) if train else None
        x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        t = torch.randint(1, 1001, (batch,))

    def step() -> None:
        if preset == "inception":
            extractor(digits)
        elif train:
            loss = net(x, t).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                net(x, t)

    for _ in range(3):
        step()
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return {"kept": kept, "wall_ms": (w1 - w0) / steps * 1e3, "user_ms": (r1.ru_utime - r0.ru_utime) / steps * 1e3,
            "sys_ms": (r1.ru_stime - r0.ru_stime) / steps * 1e3, "faults": (r1.ru_minflt - r0.ru_minflt) / steps,
            "peak_mb": r1.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per workload and mode")
    p.add_argument("--steps", type=int, default=20, help="timed steps per process (after 3 warm-up steps)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    import torch

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"glibc {platform.libc_ver()[1]}", flush=True)
    rows = []
    for name, (preset, batch, threads, train, procs) in WORKLOADS.items():
        runs: dict[bool, list[dict]] = {False: [], True: []}
        steps = max(2, args.steps // 5) if preset == "inception" else args.steps  # Inception: ~5 s a step
        for _ in range(args.repeats):
            for keep in (False, True):
                spec = dict(preset=preset, batch=batch, threads=threads, train=train, steps=steps, keep=keep)
                cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
                started = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
                for proc in started:  # several at once: each process's figures count as one repeat
                    out, _ = proc.communicate()
                    if proc.returncode:
                        raise SystemExit(f"{name}: a worker failed (exit status {proc.returncode})")
                    runs[keep].append(json.loads(out.strip().splitlines()[-1]))
                print(f"  {name} | {'kept' if keep else 'default'} | {runs[keep][-1]}", flush=True)
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall_ms", "user_ms", "sys_ms", "faults", "peak_mb")}
               for k, v in runs.items()}
        rows.append((name, med))
    print("\n| workload | malloc | wall ms/step | user ms | sys ms | page faults/step | peak memory MB | "
          "wall, default / kept |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, med in rows:
        for keep in (False, True):
            m = med[keep]
            ratio = f"{med[False]['wall_ms'] / med[True]['wall_ms']:.2f}×" if keep else ""
            print(f"| {name} | {'kept' if keep else 'glibc default'} | {m['wall_ms']:.1f} | {m['user_ms']:.1f} | "
                  f"{m['sys_ms']:.1f} | {m['faults']:,.0f} | {m['peak_mb']:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
