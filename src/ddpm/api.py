"""``ddpm.load``: any checkpoint this package writes, as a model and its schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ImageTrainConfig, PointsTrainConfig, from_dict
from .diffusion import PredictionConfig
from .errors import CheckpointError
from .models.unet import UNet
from .schedules import NoiseSchedule
from .training.checkpoint import load_checkpoint


@dataclass
class Loaded:
    """A trained model: call ``model(x_t, t)`` with the paper's t ∈ {1, …, T}."""

    model: nn.Module
    schedule: NoiseSchedule
    prediction: PredictionConfig
    config: ImageTrainConfig | PointsTrainConfig
    kind: str  # "image" or "points"
    step: int
    path: Path
    meta: dict[str, Any]  # state.json
    extras: dict[str, dict[str, torch.Tensor]]  # the other safetensors files, by stem (e.g. "data")


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{where}: the weights do not fit the configured model: {first}") from None


def load(path: str | Path, use_ema: bool = True) -> Loaded:
    """Load a run directory (its newest checkpoint) or one checkpoint directory."""
    ckpt, meta, tensors = load_checkpoint(path)
    kind = meta.get("kind")
    name = "ema" if use_ema else "model"
    if name not in tensors:
        raise CheckpointError(f"{ckpt}: missing {name}.safetensors")
    where = f"{ckpt / 'state.json'}: config"
    if kind == "image":
        config = from_dict(ImageTrainConfig, meta.get("config", {}), where=where)
        model: nn.Module = UNet(config.model)
    elif kind == "points":
        from .models.mlp import MLP

        config = from_dict(PointsTrainConfig, meta.get("config", {}), where=where)
        model = MLP(config.model)
    else:
        raise CheckpointError(f"{ckpt}: unknown checkpoint kind {kind!r} in state.json")
    _load_weights(model, tensors[name], ckpt / f"{name}.safetensors")
    model.eval()
    extras = {k: v for k, v in tensors.items() if k not in ("model", "ema", "optimizer")}
    return Loaded(model, config.diffusion.make_schedule(), config.diffusion.prediction(), config, kind,
                  int(meta.get("step", 0)), ckpt, meta, extras)
