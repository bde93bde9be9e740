"""Reading an image folder: the check of every image at a run's start, and one training batch,
decoded by one thread against the pool of decoding threads (one per core).

An image-folder run (the celebahq256 and lsun256 presets, your own folder) opens every image once
when it starts, to list bad files before training, and decodes each batch's images on the host
every step. This writes a folder of photo-like JPEGs (smooth random fields with noise, so that
their files are the size real photos are) and times both, one thread against the pool, rows
interleaved, medians of the repeats.

    python benchmarks/folder_decode.py                       # 256 images of 512 px, read at 256 px
    python benchmarks/folder_decode.py --n 1024 --source 1024 --size 256 --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def write_photos(root: Path, n: int, side: int, seed: int) -> int:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
        pixels = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (side, side, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{i:06d}.jpg", quality=90)
    return sum(p.stat().st_size for p in root.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="images in the folder")
    p.add_argument("--source", type=int, default=512, help="side of the JPEG files")
    p.add_argument("--size", type=int, default=256, help="side the run reads them at")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    import ddpm.data.folder as folder

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        megabytes = write_photos(root, args.n, args.source, 0) / 2**20
        one = ThreadPoolExecutor(1)
        pool = folder._pool()
        ds = folder.ImageFolder(root, args.size, 3)
        idx = torch.randperm(args.n, generator=torch.Generator().manual_seed(0))[:args.batch].tolist()
        times = {(job, name): [] for job in ("check", "batch") for name in ("one thread", "pool")}
        results = {}
        for _ in range(args.repeats):
            for name, executor in (("one thread", one), ("pool", pool)):
                folder._POOL = executor
                t = time.perf_counter()
                report = folder.check_folder(root, args.size, 3)
                times["check", name].append(time.perf_counter() - t)
                t = time.perf_counter()
                results[name] = ds.batch(idx)
                times["batch", name].append(time.perf_counter() - t)
                assert len(report.good) == args.n and not report.bad
        folder._POOL = pool
        assert torch.equal(results["one thread"], results["pool"])

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {pool._max_workers} decoding "
          f"threads; torch {torch.__version__}; {args.n} JPEGs of {args.source} px ({megabytes:.1f} MiB) "
          f"read at {args.size} px; median of {args.repeats}")
    print("| job | one thread | pool | speed-up |")
    print("|---|---:|---:|---:|")
    for job, what in (("check", f"check all {args.n} (run start)"), ("batch", f"one batch of {args.batch}")):
        a, b = statistics.median(times[job, "one thread"]), statistics.median(times[job, "pool"])
        print(f"| {what} | {a * 1e3:.0f} ms | {b * 1e3:.0f} ms | {a / b:.2f}× |")


if __name__ == "__main__":
    main()
