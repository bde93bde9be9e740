"""``ddpm train``'s options resolved to the run config: a preset's (images) or the paper's (2-D),
with what is given in place of their values; options the run cannot read are refused, naming them."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cli_common import CHANNELS_LAST_POINTS
from .cli_train import _NETWORK_FLAGS
from .errors import ConfigError

IMAGE_SOURCES = ("mnist", "digits", "cifar10", "folder")

# options whose names are their config fields', taken only when given (the rest keep the defaults)
_DIFFUSION_KEYS = ("T", "schedule", "parameterization", "variance", "loss", "timestep_sampler")
_OPTIM_KEYS = ("batch_size", "grad_accum", "lr", "warmup", "grad_clip", "ema_decay")
_RUN_KEYS = ("steps", "checkpoint_every", "sample_every", "precision", "label_dropout", "seed")


def _classes(args: argparse.Namespace, available: int, name: str) -> int:
    """The network's number of classes: the data's with --class-conditional, else 0."""
    if not args.class_conditional:
        if hasattr(args, "label_dropout"):
            raise ConfigError("--label-dropout: not read by an unconditional run (add --class-conditional)")
        return 0
    if available == 0:
        raise ConfigError(f"--class-conditional: {name} has no class labels")
    return available


def _given(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


def _override(args: argparse.Namespace, diffusion, optim):
    from .config import DiffusionConfig, OptimConfig

    d = {**vars(diffusion), **_given(args, _DIFFUSION_KEYS)}
    if hasattr(args, "schedule_param"):
        d["schedule_params"] = dict(args.schedule_param)
    o = {**vars(optim), **_given(args, _OPTIM_KEYS)}
    o["ema_warmup"] = o["ema_warmup"] and not args.no_ema_warmup
    return DiffusionConfig(**d), OptimConfig(**o)


def is_image_run(args: argparse.Namespace) -> bool:
    data = getattr(args, "data", None)
    return args.preset is not None or data in IMAGE_SOURCES or (data is not None and Path(data).is_dir())


#: Options that only one kind of run reads; given to the other they are refused, not ignored.
_IMAGE_ONLY = ("data_dir", "random_flip", "skip_bad_images")
_POINTS_ONLY = ("hidden", "blocks")


def _refuse(args: argparse.Namespace, names: tuple[str, ...], why: str) -> None:
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, False) not in (False, None)]
    if given:
        raise ConfigError(f"{', '.join(given)}: not read by {why}")


def _absolute(path: str | None) -> str | None:
    """A data path as the run stores it: absolute, so that eval, sample and a resumed training
    find the data from any working directory."""
    return os.path.abspath(path) if path else path


def points_config(args: argparse.Namespace):
    from .config import DiffusionConfig, OptimConfig, PointsTrainConfig
    from .models.mlp import MLPConfig

    where = f"--data {args.data}" if getattr(args, "data", None) else "the default --data s_curve"
    _refuse(args, _IMAGE_ONLY, f"a 2-D run ({where}; for images: --data mnist, digits, cifar10, folder or --preset)")
    network = _given(args, tuple(_NETWORK_FLAGS))
    if network:
        raise ConfigError(f"{', '.join(_NETWORK_FLAGS[k] for k in network)}: not read by a 2-D run (its network is "
                          "the MLP: --hidden, --blocks)")
    diffusion, optim = _override(args, DiffusionConfig(decoder="gaussian"), OptimConfig())
    from .data.points import POINT_DATASETS, load_points

    data = getattr(args, "data", "s_curve")
    data = data if data in POINT_DATASETS else _absolute(data)
    available = load_points(data, labelled=True).num_classes if args.class_conditional else 0
    sizes, classes = {k: getattr(args, k) for k in _POINTS_ONLY if hasattr(args, k)}, _classes(args, available, data)
    try:
        model = MLPConfig(data_dim=2, out_dim=diffusion.prediction().output_channels(2), num_classes=classes, **sizes)
    except ConfigError as exc:  # named as the options: "--hidden 0: MLPConfig.hidden must be >= 1, got 0"
        raise ConfigError(f"{', '.join(f'--{k} {v}' for k, v in sizes.items())}: {exc}") from None
    if args.channels_last:
        raise ConfigError(CHANNELS_LAST_POINTS)
    return PointsTrainConfig(data=data, init=args.init, diffusion=diffusion, optim=optim,
                             model=model, compile=args.compile, **_given(args, _RUN_KEYS))


def image_config(args: argparse.Namespace):
    from .data.sources import image_classes
    from .presets import FOLDER_PRESETS, TRAIN_PRESETS

    data = getattr(args, "data", None)
    name = args.preset or ("mnist" if data in (None, "mnist") else "digits" if data == "digits" else "cifar10")
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    _refuse(args, _POINTS_ONLY, "an image run (its network is the U-Net: --num-channels, --channel-mult, ...)")
    folder = data if data is not None and Path(data).is_dir() else None
    given = getattr(args, "data_dir", folder)
    if name in FOLDER_PRESETS and given is None:  # they are made with their folder
        raise ConfigError(f"--preset {name} trains on a folder of images: give it as --data DIR")
    run = TRAIN_PRESETS[name](given)
    dataset, path = run.data.dataset, run.data.path
    if data is not None:  # a name, or a folder of images given as --data
        dataset, path = ("folder", data) if folder else (data, path)
    if hasattr(args, "data_dir"):
        if dataset == "digits":
            raise ConfigError("--data-dir: the digits data set comes with scikit-learn and reads no files")
        path = args.data_dir
    if dataset == "folder" and path is None:
        raise ConfigError("--data folder: give the folder with --data-dir DIR (or as --data DIR)")
    data_cfg = replace(run.data, dataset=dataset, path=_absolute(path),
                       skip_bad_images=args.skip_bad_images)  # checked once
    if hasattr(args, "random_flip"):
        data_cfg = replace(data_cfg, random_flip=args.random_flip)
    diffusion, optim = _override(args, run.diffusion, run.optim)
    classes = image_classes(data_cfg) if args.class_conditional else 0
    model = replace(_network(args, run.model), out_channels=diffusion.prediction().output_channels(run.model.in_channels),
                    num_classes=_classes(args, classes, data_cfg.path or data_cfg.dataset))
    if model.image_size != data_cfg.image_size:
        try:
            data_cfg = replace(data_cfg, image_size=model.image_size)
        except ConfigError as exc:
            raise ConfigError(f"--image-size {model.image_size}: {exc}") from None
    return replace(run, data=data_cfg, model=model, diffusion=diffusion, optim=optim, init=args.init,
                   compile=args.compile or run.compile, channels_last=args.channels_last or run.channels_last,
                   **_given(args, _RUN_KEYS))


def _network(args: argparse.Namespace, preset):
    """The preset's U-Net with the network options given; a bad combination names the options."""
    given = _given(args, tuple(_NETWORK_FLAGS))
    if not given:
        return preset
    flags = ", ".join(f"{_NETWORK_FLAGS[k]} {_show(v)}" for k, v in given.items())
    try:
        return replace(preset, **given)
    except ConfigError as exc:
        hint = " (--num-groups sets them)" if "groups" in str(exc) and "num_groups" not in given else ""
        raise ConfigError(f"{flags}: {exc}{hint}") from None


def _show(value) -> str:
    return (",".join(map(str, value)) or "none") if isinstance(value, tuple) else str(value)
