"""What a checkpoint of a network costs to write and read, and the share its SHA-256 digests take;
and what keeping one finished batch of a sampling run costs (``OUT.partial``, ddpm.pieces).

Builds the network of a preset with Adam's state after one step, writes it as one checkpoint
(model, EMA, optimizer, RNG, state.json) and reads it back, `--repeats` times; prints the
median times and, timed apart on the same files, hashing every file (what writing adds) and
hashing the bytes read (what reading adds). Then the median time to keep (write) and read back
one batch of samples at the GPU's default batch: 1024 MNIST digits, 256 CIFAR-10 images.

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
    kept_batches(args.dir)


def kept_batches(folder: str | None, repeats: int = 20) -> None:
    """Median time of Pieces.put / Pieces.get for one batch of uint8 samples (what `ddpm sample`
    adds per batch so that a stopped run can resume)."""
    from ddpm.pieces import Pieces

    print("| one kept batch of samples | keep (ms) | read back (ms) |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        pieces = Pieces(f"{tmp}/s.npz.partial", {"benchmark": True}).open()
        for name, shape in (("1024 MNIST digits", (1024, 1, 28, 28)), ("256 CIFAR-10 images", (256, 3, 32, 32))):
            x = torch.randint(0, 256, shape, dtype=torch.uint8)
            put, get = [], []
            for i in range(repeats):
                start = time.perf_counter()
                pieces.put(i * shape[0], shape[0], {"data": x})
                put.append(time.perf_counter() - start)
            for i in range(repeats):
                start = time.perf_counter()
                pieces.get(i * shape[0], shape[0])
                get.append(time.perf_counter() - start)
            print(f"| {name} ({x.numel() / 2**20:.2f} MiB) | {statistics.median(put) * 1e3:.2f} | "
                  f"{statistics.median(get) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
