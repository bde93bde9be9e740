"""What a checkpoint of a network costs to write and read, and the share its SHA-256 digests take.

Builds the network of a preset with Adam's state after one step, writes it as one checkpoint
(model, EMA, optimizer, RNG, state.json) and reads it back, `--repeats` times; prints the
median times and, timed apart on the same files, hashing every file (what writing adds) and
hashing the bytes read (what reading adds).

    .venv/bin/python benchmarks/checkpoint_cost.py                    # cifar10: the paper's 35.7M parameters
    .venv/bin/python benchmarks/checkpoint_cost.py --preset mnist --dir /tmp
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from ddpm.checkpoint import Checkpoint
from ddpm.files import digest_bytes, digest_file
from ddpm.presets import TRAIN_PRESETS
from ddpm.rng import global_rng_state
from ddpm.training.trainer import make_optimizer, optimizer_tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10", choices=list(TRAIN_PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    from ddpm.models.unet import UNet

    config = TRAIN_PRESETS[args.preset]()
    model = UNet(config.model)
    opt = make_optimizer(model.parameters(), 1e-4)
    model(torch.randn(2, *(config.model.in_channels, config.model.image_size, config.model.image_size)),
          torch.tensor([1, 2])).square().mean().backward()
    opt.step()
    tensors, groups = optimizer_tensors(opt)
    weights = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    rows = {"write": [], "hash files": [], "read": [], "hash bytes read": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeats):
            ckpt = Checkpoint("image", 1, config, weights, {k: v.float() for k, v in weights.items()}, 1, tensors,
                              groups, global_rng_state())
            start = time.perf_counter()
            path = ckpt.write(tmp)
            rows["write"].append(time.perf_counter() - start)
            files = sorted(path.glob("*.safetensors"))
            start = time.perf_counter()
            for f in files:
                digest_file(f)
            rows["hash files"].append(time.perf_counter() - start)
            start = time.perf_counter()
            Checkpoint.read(path)
            rows["read"].append(time.perf_counter() - start)
            data = [f.read_bytes() for f in files]
            start = time.perf_counter()
            for d in data:
                digest_bytes(d)
            rows["hash bytes read"].append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in files)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.preset}: "
          f"{params:,} parameters, one checkpoint {size / 2**20:.0f} MiB, median of {args.repeats}")
    print("| step | seconds | share |\n|---|---:|---:|")
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"| write a checkpoint (digests included) | {med['write']:.2f} | |")
    print(f"| of which hashing its files | {med['hash files']:.2f} | {med['hash files'] / med['write']:.0%} |")
    print(f"| read it (digests checked) | {med['read']:.2f} | |")
    print(f"| of which hashing the bytes read | {med['hash bytes read']:.2f} | "
          f"{med['hash bytes read'] / med['read']:.0%} |")
    print(f"# SHA-256 at {size / 2**20 / med['hash bytes read']:.0f} MiB/s")


if __name__ == "__main__":
    main()
