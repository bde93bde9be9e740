"""The ``ddpm`` command line: it parses, builds a config and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DDPMError

DEFAULT_OUT = "runs/s_curve"


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


def _add_diffusion_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diffusion (defaults: Ho et al. 2020)")
    g.add_argument("--T", type=int, default=1000, help="number of diffusion steps")
    g.add_argument("--schedule", default="linear", help="beta schedule: linear, seed_code, seed_formula, cosine, "
                   "sigmoid, quadratic, constant, jsd")
    g.add_argument("--schedule-param", type=_schedule_param, action="append", default=[], metavar="KEY=VALUE",
                   help="a schedule parameter, e.g. beta_end=0.02 (repeatable)")
    g.add_argument("--parameterization", default="eps", help="network output: eps, x0, v, mean")
    g.add_argument("--variance", default="fixed_small", help="fixed_small, fixed_large, learned, learned_range")
    g.add_argument("--loss", default="simple", help="simple, vlb, hybrid")
    g.add_argument("--timestep-sampler", default="uniform", help="uniform, importance")


def _add_optim_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation (defaults: Ho et al. 2020)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    g.add_argument("--warmup", type=int, default=5000, help="linear learning-rate warm-up steps")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    g.add_argument("--ema-decay", type=float, default=0.9999)
    g.add_argument("--no-ema-warmup", action="store_true", help="use the EMA decay from step 1")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="ddpm", description="Denoising Diffusion Probabilistic Models (Ho et al. 2020).",
                     formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model and write a checkpoint directory", formatter_class=fmt)
    train.add_argument("--data", default="s_curve", help="a built-in 2-D data set (s_curve, swiss_roll, moons, "
                       "8gaussians, checkerboard, gmm) or a .npy/.csv file of (N, 2) points")
    train.add_argument("--steps", type=int, default=10_000, help="training steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=DEFAULT_OUT, help="run directory (config.json, checkpoints/)")
    train.add_argument("--hidden", type=int, default=128, help="MLP width")
    train.add_argument("--blocks", type=int, default=3, help="MLP residual blocks")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_diffusion_options(train)
    _add_optim_options(train)

    sample = sub.add_parser("sample", help="sample from a checkpoint", formatter_class=fmt)
    sample.add_argument("--checkpoint", required=True, help="a run directory (newest checkpoint) or a checkpoint")
    sample.add_argument("--n", type=int, default=4000, help="number of samples")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="samples.npy", help="output .npy; plots are written beside it")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _train_config(args: argparse.Namespace):
    from .config import DiffusionConfig, OptimConfig, PointsTrainConfig
    from .diffusion import PredictionConfig
    from .models.mlp import MLPConfig

    diffusion = DiffusionConfig(
        T=args.T, schedule=args.schedule, schedule_params=dict(args.schedule_param),
        parameterization=args.parameterization, variance=args.variance, loss=args.loss,
        decoder="gaussian", timestep_sampler=args.timestep_sampler,
    )
    optim = OptimConfig(lr=args.lr, warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
                        ema_warmup=not args.no_ema_warmup, batch_size=args.batch_size)
    out_dim = PredictionConfig(args.parameterization, args.variance).output_channels(2)
    model = MLPConfig(data_dim=2, out_dim=out_dim, hidden=args.hidden, blocks=args.blocks)
    return PointsTrainConfig(data=args.data, steps=args.steps, seed=args.seed, diffusion=diffusion,
                             optim=optim, model=model)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import to_dict
    from .data.toy2d import load_points
    from .toy import train_points

    config = _train_config(args)
    if args.dry_run:
        print(json.dumps(to_dict(config), indent=2, sort_keys=True))
        return 0
    load_points(config.data)  # fail on bad data before anything is written
    ckpt = train_points(config, args.out, progress=not args.quiet)
    print(f"checkpoint: {ckpt}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .config import to_dict
    from .toy import load_points_model, sample_points
    from .training.checkpoint import write_json
    from .visualization import reverse_strip, scatter_vs_data

    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise ConfigError(f"--out {out}: 2-D samples are written as .npy")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    loaded = load_points_model(args.checkpoint, use_ema=not args.no_ema)
    result = sample_points(loaded, args.n, args.seed, progress=not args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.samples)
    name = f"{loaded.config.data} · step {loaded.step}"
    scatter = scatter_vs_data(result.samples, loaded.reference.numpy(), out.with_suffix(".png"), name)
    strip = reverse_strip(result.trajectory, out.with_name(out.stem + "_strip.png"), name)
    write_json(out.with_suffix(".json"), {
        "checkpoint": str(loaded.path), "n": args.n, "seed": args.seed, "ema": not args.no_ema,
        "sampler": "ancestral", "seconds": result.seconds, "config": to_dict(loaded.config),
    })
    print(f"samples: {out}\nscatter: {scatter}\nstrip:   {strip}")
    return 0


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample}


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
