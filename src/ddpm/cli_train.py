"""``ddpm train``: its options and the command (:mod:`ddpm.cli_train_config` resolves them to a run config)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_common import BATCH, INT, SEED, _device, _finite
from .errors import ConfigError

S = argparse.SUPPRESS  # options left out take the preset's value (images) or the paper's (2-D)


def _schedule_param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, _finite(value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{key}: {exc}") from None


def _positive_ints(text: str) -> tuple[int, ...]:
    """'1,2,2' -> (1, 2, 2): a comma list of integers >= 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _resolutions(text: str) -> tuple[int, ...]:
    return () if text.strip().lower() == "none" else _positive_ints(text)


def _dropout(text: str) -> float:
    value = _finite(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a dropout probability must lie in [0, 1), got {text}")
    return value


#: The U-Net's options for image runs: (flag, config field, type, metavar, help). Given, they replace the preset's.
_NETWORK_OPTIONS = (
    ("--image-size", "image_size", INT, "N", "side of the square images the network sees (MNIST and the digits "
     "are zero-padded to it, a folder's images resized; CIFAR-10 is 32 only)"),
    ("--num-channels", "ch", INT, "C", "channels of the first level (paper: 128)"),
    ("--channel-mult", "ch_mult", _positive_ints, "M,M,...", "channel multiplier of each level, e.g. 1,2,2,2 "
     "(paper); one level per entry, each after the first at half the size"),
    ("--num-res-blocks", "num_res_blocks", INT, "N", "residual blocks per level (paper: 2)"),
    ("--attention-resolutions", "attn_resolutions", _resolutions, "R,...", "feature-map sizes with "
     "self-attention, e.g. 16 (paper) or 16,8, or none"),
    ("--dropout", "dropout", _dropout, "P", "dropout probability in the residual blocks (paper: 0.1 for CIFAR-10)"),
    ("--num-groups", "num_groups", INT, "G", "GroupNorm groups; must divide every level's channels (paper: 32)"),
)
_NETWORK_FLAGS = {field: flag for flag, field, *_ in _NETWORK_OPTIONS}


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=S, help="2-D: s_curve, swiss_roll, moons, 8gaussians, checkerboard, gmm, or a "
                   ".npy/.csv file of (N, 2) points; images: mnist, digits, cifar10, folder (default: s_curve, or "
                   "the preset's)")
    p.add_argument("--data-dir", default=S, help="folder of CIFAR-10 batches (or their cifar-10-python.tar.gz), "
                   "MNIST idx files or images")
    p.add_argument("--preset", default=None, help="image run with the settings of: cifar10, celebahq256, lsun256, "
                   "mnist, digits (the first three are the paper's)")
    p.add_argument("--steps", type=INT, default=S, help="training steps (default: 10000 for 2-D, the preset's)")
    p.add_argument("--seed", type=SEED, default=S, help="seed of all random draws (default: 0)")
    p.add_argument("--out", default=None, help="run directory (config.json, checkpoints/, logs; default: runs/<data "
                   "set>); --out RUN alone (or with --steps, --time-limit, ...) goes on with RUN's own settings")
    p.add_argument("--resume", default="auto", help="auto (newest good checkpoint in --out), never, or a "
                   "checkpoint directory")
    p.add_argument("--init", default=None, metavar="WEIGHTS", help="start a new run from these weights (EMA) "
                   "instead of random ones: a run directory, a checkpoint or pretrained:NAME of the same network "
                   "(preset and options). The step count and optimizer start afresh; the EMA starts at these "
                   "weights and warms up again (fine-tuning), or keeps them at full decay with --no-ema-warmup "
                   "(training a model on). A run that resumes from its own checkpoint does not read it")
    p.add_argument("--allow-changes", action="store_true", help="resume a run although this command's settings "
                   "differ from its own (seed, learning rate, batch size, schedule, model, data, …); without it "
                   "such a resume stops and lists them. The steps, the cadences, --time-limit, --compile, "
                   "--channels-last, --grad-accum and the device may always change")
    p.add_argument("--checkpoint-every", type=INT, default=S, help="steps between checkpoints (default: 1000 for "
                   "2-D, the preset's)")
    p.add_argument("--time-limit", type=_finite, default=None, metavar="MINUTES", help="stop with a checkpoint after "
                   "this many minutes of training (a later run resumes)")
    p.add_argument("--sample-every", type=INT, default=S, help="steps between pictures of 16 EMA samples in "
                   "samples/ (default 0: none)")
    p.add_argument("--skip-bad-images", action="store_true", help="images: skip unreadable files instead of stopping")
    p.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=S,
                   help="images: flip horizontally with probability 1/2 (default: the preset's; the paper flips "
                        "all but LSUN bedroom)")
    p.add_argument("--precision", default=S, choices=("fp32", "bf16"), help="bf16 autocast (default fp32; "
                   "bf16 is emulated and slow on most CPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (minutes per graph)")
    p.add_argument("--channels-last", action="store_true", help="images: keep weights and batches channels-last "
                   "(NHWC), faster convolutions on GPUs (with --precision bf16 most); the same arithmetic")
    p.add_argument("--class-conditional", action="store_true", help="train on the data's class labels (MNIST, "
                   "digits, CIFAR-10, an image folder with one sub-folder per class (sorted names -> ids); the 2-D "
                   "mixtures gmm and 8gaussians, a 2-D file's third column) with a 'no class' id, so that one "
                   "network samples a chosen class or any (classifier-free guidance, Ho & Salimans 2022)")
    p.add_argument("--label-dropout", type=_finite, default=S, metavar="P", help="with --class-conditional: the "
                   "probability a label is replaced by 'no class' in training (default 0.1)")
    p.add_argument("--hidden", type=INT, default=S, help="2-D: MLP width (default 128)")
    p.add_argument("--blocks", type=INT, default=S, help="2-D: MLP residual blocks (default 3)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N: where to train (under torchrun each "
                   "process takes the GPU of its local rank); default: cuda when available")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    n = p.add_argument_group("network of an image run (default: the preset's U-Net; improved-diffusion's names)")
    for flag, field, kind, metavar, text in _NETWORK_OPTIONS:
        n.add_argument(flag, dest=field, type=kind, default=S, metavar=metavar, help=text)
    g = p.add_argument_group("diffusion (default: Ho et al. 2020, or the preset's)")
    g.add_argument("--T", type=INT, default=S, help="number of diffusion steps (paper: 1000)")
    g.add_argument("--schedule", default=S, help="beta schedule: linear (paper), linear_small and proportional "
                   "(the seed note's), cosine, sigmoid, quadratic, constant, jsd")
    g.add_argument("--schedule-param", type=_schedule_param, action="append", default=S, metavar="KEY=VALUE",
                   help="a schedule parameter, e.g. beta_end=0.02 (repeatable)")
    g.add_argument("--parameterization", default=S, help="network output: eps (paper), x0, v, mean")
    g.add_argument("--variance", default=S, help="reverse variance: fixed_small (β̃_t), fixed_large "
                   "(β_t: the paper's CIFAR-10 run, the cifar10 preset), learned, learned_range")
    g.add_argument("--loss", default=S, help="simple (paper), vlb, hybrid")
    g.add_argument("--timestep-sampler", default=S, help="uniform (paper), importance")
    o = p.add_argument_group("optimisation (default: Ho et al. 2020, or the preset's)")
    o.add_argument("--batch-size", type=BATCH, default=S, help="paper: 128")
    o.add_argument("--grad-accum", type=INT, default=S, metavar="K", help="each batch as K micro-batches whose "
                   "gradients add up: the same steps (up to rounding, dropout) in ~1/K of the memory (default 1)")
    o.add_argument("--lr", type=_finite, default=S, help="Adam learning rate (paper: 2e-4)")
    o.add_argument("--warmup", type=INT, default=S, help="linear learning-rate warm-up steps (paper: 5000)")
    o.add_argument("--grad-clip", type=_finite, default=S, help="gradient-norm clip, 0: off (paper: 1.0)")
    o.add_argument("--ema-decay", type=_finite, default=S, help="paper: 0.9999")
    o.add_argument("--no-ema-warmup", action="store_true", help="use the EMA decay from step 1, as the authors' code "
                   "(default: min(decay, (1 + n)/(10 + n)) at update n, full decay after ~90k steps)")


def _cmd_train(args: argparse.Namespace) -> int:
    from .cli_resume import continued_run
    from .cli_train_config import image_config, is_image_run, points_config
    from .config import ImageTrainConfig, to_dict

    config = continued_run(args) or (image_config(args) if is_image_run(args) else points_config(args))
    image = isinstance(config, ImageTrainConfig)
    if args.dry_run:
        from .kinds import kind_of
        from .models import size_line

        print(json.dumps(to_dict(config), indent=2, sort_keys=True))
        print(size_line(kind_of(config).model(config)), file=sys.stderr)
        return 0
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be > 0 minutes, got {args.time_limit}")
    if not image:
        from .data.points import load_points

        load_points(config.data, labelled=config.model.num_classes > 0)  # bad data fails before any writing
    from .training.run import train

    out = args.out or f"runs/{config.data.dataset if image else Path(config.data).stem}"
    limit = args.time_limit * 60 if args.time_limit is not None else None
    if args.device is not None:
        _device(args.device)  # cuda without a GPU: one line, before anything is written
    ckpt = train(config, out, resume_from=args.resume, progress=not args.quiet, time_limit=limit,
                 allow_changes=args.allow_changes, device=args.device).checkpoint
    if ckpt is not None:
        print(f"checkpoint: {ckpt}")
    return 0
