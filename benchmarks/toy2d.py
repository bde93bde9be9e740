"""Train on every built-in 2-D data set and print speed and sample quality.

For each data set: training steps/s on this machine, and the sliced Wasserstein (SW_2) and
energy distances of N samples to N fresh data points, next to the same distances between
two fresh data sets (the floor a perfect model would reach). Distances are measured on
standardised points, so the data sets are comparable.

    .venv/bin/python benchmarks/toy2d.py                 # the table in docs/benchmarks.md
    .venv/bin/python benchmarks/toy2d.py --steps 2000    # a quicker look
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from ddpm.config import DiffusionConfig, OptimConfig, PointsTrainConfig
from ddpm.api import load
from ddpm.data.points import POINT_DATASETS, load_points
from ddpm.evaluation.points import energy_distance, sliced_wasserstein
from ddpm.generation import generate
from ddpm.training.run import train


def measure(name: str, steps: int, n: int, seed: int) -> dict[str, float]:
    config = PointsTrainConfig(
        data=name, steps=steps, seed=seed,
        diffusion=DiffusionConfig(decoder="gaussian"),  # the paper's T = 1000, linear β, ε, L_simple
        optim=OptimConfig(lr=1e-3, warmup=100, batch_size=256),
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, tmp, progress=False)
        train_s = time.perf_counter() - start
        loaded = load(tmp)
    result = generate(loaded, n, seed=seed + 1)
    data = load_points(name)
    st = loaded.codec.standardizer
    fresh_a = st.forward(data.sample(n, torch.Generator().manual_seed(seed + 2)))
    fresh_b = st.forward(data.sample(n, torch.Generator().manual_seed(seed + 3)))
    samples = st.forward(result.data.double())
    proj = lambda: torch.Generator().manual_seed(seed + 4)  # noqa: E731 - the same directions each time
    return {
        "steps_per_s": steps / train_s,
        "sample_s": result.seconds,
        "sw": sliced_wasserstein(samples, fresh_a, generator=proj()),
        "sw_floor": sliced_wasserstein(fresh_b, fresh_a, generator=proj()),
        "energy": energy_distance(samples, fresh_a),
        "energy_floor": energy_distance(fresh_b, fresh_a),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=4000, help="samples and fresh points per comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="*", default=list(POINT_DATASETS))
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# MLP 128×3 blocks, batch 256, lr 1e-3, T = 1000 linear, {args.steps} steps, {args.n} samples, EMA weights")
    print("| data | train steps/s | sampling s (1000 steps) | SW₂ | SW₂ floor | energy | energy floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.data:
        r = measure(name, args.steps, args.n, args.seed)
        print(f"| {name} | {r['steps_per_s']:.0f} | {r['sample_s']:.1f} | {r['sw']:.4f} | {r['sw_floor']:.4f} "
              f"| {r['energy']:.5f} | {r['energy_floor']:.5f} |", flush=True)


if __name__ == "__main__":
    main()
