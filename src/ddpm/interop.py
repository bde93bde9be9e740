"""Checkpoint folders to and from diffusers (UNet2DModel + DDPMScheduler), safetensors only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .checkpoint import Checkpoint
from .config import DiffusionConfig, ImageDataConfig, ImageTrainConfig, OptimConfig, to_dict
from .errors import CheckpointError, ConfigError
from .files import prepare_output, read_json, write_json
from .models.diffusers_interop import (
    diffusers_config_from_unet,
    state_dict_from_diffusers,
    state_dict_to_diffusers,
    unet_config_from_diffusers,
)

WEIGHTS = "diffusion_pytorch_model.safetensors"

# diffusers' names -> ours (and back)
_SCHEDULES = {"linear": "linear", "squaredcos_cap_v2": "cosine", "scaled_linear": "quadratic", "sigmoid": "sigmoid"}
_VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
              "fixed_large_log": "fixed_large", "learned": "learned", "learned_range": "learned_range"}
_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def _find(src: Path, *candidates: str) -> Path | None:
    for c in candidates:
        if (src / c).is_file():
            return src / c
    return None


def diffusion_from_scheduler(cfg: dict[str, Any], where: str) -> DiffusionConfig:
    """Our DiffusionConfig for a DDPMScheduler config (paper defaults where a key is absent)."""
    def pick(table: dict[str, str], key: str, default: str) -> str:
        value = cfg.get(key, default)
        if value not in table:
            raise CheckpointError(f"{where}: {key} = {value!r} is not supported ({', '.join(table)})")
        return table[value]

    schedule = pick(_SCHEDULES, "beta_schedule", "linear")
    params = {}
    if schedule in ("linear", "quadratic", "sigmoid"):
        params = {"beta_start": float(cfg.get("beta_start", 1e-4)), "beta_end": float(cfg.get("beta_end", 0.02))}
    return DiffusionConfig(
        T=int(cfg.get("num_train_timesteps", 1000)), schedule=schedule, schedule_params=params,
        parameterization=pick(_PREDICTIONS, "prediction_type", "epsilon"),
        variance=pick(_VARIANCES, "variance_type", "fixed_small"), clip_x0=bool(cfg.get("clip_sample", True)),
        loss="simple" if pick(_VARIANCES, "variance_type", "fixed_small").startswith("fixed") else "hybrid",
    )


def _new_folder(out: str | Path) -> Path:
    """``out`` created for a conversion's files; an existing folder must be empty (writing into a
    run or model folder would replace its config.json and weights)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists; give a new folder")
    return prepare_output(out, folder=True)


def import_diffusers(src: str | Path, out: str | Path, data: str | None = None, data_dir: str | None = None) -> Path:
    """Convert a diffusers UNet2DModel folder (DDPM configuration) into our checkpoint under ``out``.
    ``data`` (mnist, digits, cifar10 or an image folder; ``data_dir`` its files) records what the
    weights were trained on, so that evaluation reads its images; without it the run names none."""
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: no such directory")
    config_path = _find(src, "config.json", "unet/config.json")
    if config_path is None:
        raise CheckpointError(f"{src}: no config.json (looked in the folder and in unet/)")
    weights_path = config_path.parent / WEIGHTS
    if not weights_path.is_file():
        bins = list(config_path.parent.glob("*.bin"))
        hint = f"; found {bins[0].name}, which is a pickle and is never loaded: convert it to safetensors first" if bins else ""
        raise CheckpointError(f"{weights_path}: missing{hint}")
    unet = unet_config_from_diffusers(read_json(config_path, CheckpointError), where=str(config_path))
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:  # safetensors' own error types
        raise CheckpointError(f"{weights_path}: unreadable safetensors file: {exc}") from None
    sd = state_dict_from_diffusers(weights, unet, where=str(weights_path))
    sched_path = _find(src, "scheduler_config.json", "scheduler/scheduler_config.json")
    diffusion = diffusion_from_scheduler(read_json(sched_path, CheckpointError), str(sched_path)) if sched_path else DiffusionConfig(clip_x0=True)
    if data_dir is not None and data is None:
        raise ConfigError("--data-dir: give --data too (the data set whose files it holds)")
    dataset, path = ("folder", data) if data is not None and Path(data).is_dir() else (data or "none", data_dir)
    try:  # a data set whose images are not the network's channels is refused here
        data_cfg = ImageDataConfig(dataset=dataset, path=os.path.abspath(path) if path else None,
                                   image_size=unet.image_size, channels=unet.in_channels, random_flip=False)
    except ConfigError as exc:
        raise ConfigError(f"--data {data}: {exc}") from None
    config = ImageTrainConfig(data=data_cfg, model=unet, diffusion=diffusion, optim=OptimConfig(), steps=0)
    out = _new_folder(out)
    write_json(out / "config.json", to_dict(config))
    return Checkpoint("image", 0, config, sd, sd, info={"source": f"diffusers:{src.resolve()}"}).write(out)


def export_diffusers(checkpoint: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Write a UNet2DModel folder (config.json, safetensors weights, scheduler_config.json)."""
    from .api import load

    loaded = load(checkpoint, use_ema=use_ema)
    if loaded.kind != "image":
        raise CheckpointError(f"{loaded.path}: only image (U-Net) checkpoints can be exported to diffusers")
    d = loaded.config.diffusion
    back_schedules = {v: k for k, v in _SCHEDULES.items()}
    back_predictions = {v: k for k, v in _PREDICTIONS.items()}
    if d.schedule not in back_schedules:
        raise CheckpointError(f"{loaded.path}: schedule {d.schedule!r} has no diffusers equivalent")
    if d.parameterization not in back_predictions:
        raise CheckpointError(f"{loaded.path}: parameterization {d.parameterization!r} has no diffusers equivalent")
    out = _new_folder(out)
    unet = loaded.config.model
    write_json(out / "config.json", diffusers_config_from_unet(unet))
    save_file(state_dict_to_diffusers(loaded.model.state_dict(), unet), str(out / WEIGHTS))
    scheduler = {
        "_class_name": "DDPMScheduler", "num_train_timesteps": d.T, "beta_schedule": back_schedules[d.schedule],
        "variance_type": d.variance, "clip_sample": d.clip_x0, "prediction_type": back_predictions[d.parameterization],
        **{k: v for k, v in d.schedule_params.items() if k in ("beta_start", "beta_end")},
    }
    write_json(out / "scheduler_config.json", scheduler)
    return out
