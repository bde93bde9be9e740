"""A sampler step's own time, ours against diffusers' schedulers, with a network that costs nothing.

Issue 13 asks that the CPU sampler's overhead per step come down to diffusers'. This measures it
directly: the same (B, C, H, W) batch, a "network" that returns one precomputed ε, and for each
sampler the time of a whole loop divided by its steps. Rows are interleaved (ours, theirs, ours,
…) and each figure is the median of the repeats, so a noisy shared machine moves both alike;
the last column is ours / theirs.

    python benchmarks/sampler_overhead.py                    # 16 x 1 x 28 x 28, 100 steps, 7 repeats
    python benchmarks/sampler_overhead.py --batch 256 --threads 2

Rows: Algorithm 2 (ancestral) with Philox counter noise (the default), with 0.1's per-image
generators and with one shared generator (the noise diffusers draws), against DDPMScheduler
with one generator; DDIM η = 0 against DDIMScheduler; and the noise draw alone.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--shape", default="1,28,28", help="C,H,W of one sample")
    p.add_argument("--steps", type=int, default=100, help="steps of each loop (of the T = 1000 process)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import DDIMScheduler, DDPMScheduler

    from ddpm.diffusion import PredictionConfig
    from ddpm.rng import per_sample_generators, randn, sample_noise
    from ddpm.samplers import SamplerSpec
    from ddpm.schedules import NoiseSchedule

    shape = (args.batch, *map(int, args.shape.split(",")))
    schedule = NoiseSchedule.from_name("linear", 1000)
    eps = torch.randn(shape) * 0.5
    free = lambda x, t: eps  # noqa: E731
    x_T = torch.randn(shape)
    n = args.steps
    ts = tuple(range(1000, 1000 - n + 1, -1)) + (1,)  # n steps; the respaced chain ends at t = 1
    pc = PredictionConfig()

    def ours(spec, noise):
        return lambda: spec.sample(free, schedule, x_T, pc, noise() if callable(noise) else noise)

    def diffusers(kind):
        sched = (DDPMScheduler if kind == "ddpm" else DDIMScheduler)(
            num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
            clip_sample=True, timestep_spacing="trailing", **({"variance_type": "fixed_small"} if kind == "ddpm" else {}))
        sched.set_timesteps(timesteps=[t - 1 for t in ts]) if kind == "ddpm" else sched.set_timesteps(n)

        def run():
            g, x = torch.Generator().manual_seed(0), x_T
            for t in sched.timesteps:
                x = (sched.step(eps, t, x, generator=g) if kind == "ddpm" else sched.step(eps, t, x)).prev_sample
            return x
        return run

    rows = {
        "ancestral, Philox noise (default)": (ours(SamplerSpec(timesteps=ts), lambda: sample_noise(0, 0, shape[0])),
                                              diffusers("ddpm")),
        "ancestral, per-image generators (0.1)": (ours(SamplerSpec(timesteps=ts, noise="generators"),
                                                       lambda: per_sample_generators(0, 0, shape[0])), None),
        "ancestral, one generator": (ours(SamplerSpec(timesteps=ts), lambda: torch.Generator().manual_seed(0)), None),
        "DDIM eta = 0": (ours(SamplerSpec("ddim", n), None), diffusers("ddim")),
    }
    counter = sample_noise(0, 0, shape[0])
    noise_rows = {
        "noise draw alone, Philox": lambda: randn(shape, counter),
        "noise draw alone, torch.randn": lambda: torch.randn(shape),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for name, (mine, theirs) in rows.items():
            for who, fn in (("ours", mine), ("diffusers", theirs)):
                if fn is not None:
                    t0 = time.perf_counter()
                    fn()
                    times.setdefault((name, who), []).append((time.perf_counter() - t0) / n)
        for name, fn in noise_rows.items():
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            times.setdefault((name, "ours"), []).append((time.perf_counter() - t0) / 20)

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {shape}, {n} steps, median of {args.repeats}")
    print("| a step's own time | ours µs | diffusers µs | ours / diffusers |")
    print("|---|---:|---:|---:|")
    for name in list(rows) + list(noise_rows):
        mine = statistics.median(times[(name, "ours")]) * 1e6
        theirs = times.get((name, "diffusers"))
        if theirs:
            theirs = statistics.median(theirs) * 1e6
            print(f"| {name} | {mine:.0f} | {theirs:.0f} | {mine / theirs:.2f}× |")
        else:
            print(f"| {name} | {mine:.0f} | | |")


if __name__ == "__main__":
    main()
