"""Typed, frozen configuration, one dataclass per concern, validated on construction.

Defaults are the paper's (Ho et al. 2020 §4): T = 1000, linear β from 1e-4 to 0.02,
ε-prediction, L_simple, σ_t² = β̃_t, Adam 2e-4 with 5000 warm-up steps, gradient clipping at
1.0, EMA 0.9999, batch 128. The resolved config is written as JSON beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .data.sources import ImageDataConfig
from .diffusion import Parameterization, PredictionConfig, VarianceType
from .errors import CheckpointError, ConfigError, check_choice, check_float, check_int
from .files import read_json
from .losses import DecoderType, LossConfig, LossType
from .models.mlp import MLPConfig
from .models.unet import UNetConfig
from .schedules import NoiseSchedule, make_betas, schedule_name

#: How training draws t: uniformly (Ho et al. Algorithm 1) or by importance (Nichol & Dhariwal §3.3).
TimestepSamplerType = Literal["uniform", "importance"]
#: The largest seed: every seed is mixed into 64-bit generator seeds.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process and how the network's output is read and trained."""

    T: int = 1000
    schedule: str = "linear"
    schedule_params: dict[str, float] = field(default_factory=dict)
    parameterization: Parameterization = "eps"
    variance: VarianceType = "fixed_small"
    clip_x0: bool = False
    loss: LossType = "simple"
    decoder: DecoderType = "discretized"
    hybrid_weight: float = 0.001
    timestep_sampler: TimestepSamplerType = "uniform"

    def __post_init__(self) -> None:
        check_int("T", self.T, 1)
        object.__setattr__(self, "schedule", schedule_name(self.schedule))  # an old alias -> its name
        check_choice("timestep_sampler", self.timestep_sampler, get_args(TimestepSamplerType))
        self.prediction()  # validates parameterization and variance
        self.loss_config()  # validates loss, decoder and weight
        if self.loss == "simple" and self.variance in ("learned", "learned_range"):
            raise ConfigError(f"variance {self.variance!r} is learned only through the bound: use loss 'hybrid' or 'vlb'")
        if self.loss == "hybrid" and self.variance in ("fixed_small", "fixed_large"):
            raise ConfigError("loss 'hybrid' trains a learned variance (its bound term is stopped for the mean); "
                              "with a fixed variance use 'simple' or 'vlb'")
        make_betas(self.schedule, self.T, **self.schedule_params)  # validates the parameters

    def prediction(self) -> PredictionConfig:
        return PredictionConfig(self.parameterization, self.variance, self.clip_x0)

    def loss_config(self) -> LossConfig:
        return LossConfig(self.loss, self.decoder, self.hybrid_weight)

    def make_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(make_betas(self.schedule, self.T, **self.schedule_params))


@dataclass(frozen=True)
class OptimConfig:
    """Adam with linear warm-up, gradient clipping and an EMA of the weights."""

    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0  # 0 turns clipping off
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    batch_size: int = 128
    grad_accum: int = 1  # the batch's gradient summed over this many micro-batches: the same step in less memory

    def __post_init__(self) -> None:
        check_float("lr", self.lr, 0.0, low_open=True)
        check_int("warmup", self.warmup, 0)
        check_float("grad_clip", self.grad_clip, 0.0)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0)
        check_int("batch_size", self.batch_size, 1)
        check_int("grad_accum", self.grad_accum, 1)
        if self.grad_accum > self.batch_size:
            raise ConfigError(f"grad_accum {self.grad_accum}: more micro-batches than the batch's {self.batch_size} "
                              "examples")


@dataclass(frozen=True)
class RunConfig:
    """What every training run has, whatever its data: length, seed, and the cadence of its
    checkpoints, logs and sample pictures."""

    steps: int = 10_000
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0: no sample pictures while training
    log_every: int = 100
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast; emulated (slow) on most CPUs
    compile: bool = False  # torch.compile the network (minutes of compilation per graph)
    channels_last: bool = False  # images: weights and batches in channels-last (NHWC) memory, for GPU convolutions
    label_dropout: float = 0.1  # class-conditional runs: P(label -> "no class"), Ho & Salimans 2022
    init: str | None = None  # the run began from these weights (a run, checkpoint or pretrained:NAME), not at random

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, ("fp32", "bf16"))
        check_float("label_dropout", self.label_dropout, 0.0, 1.0)
        check_int("seed", self.seed, 0, MAX_SEED)
        if self.init is not None and not (isinstance(self.init, str) and self.init):
            raise ConfigError(f"init must be a non-empty path or pretrained:NAME, got {self.init!r}")
        for key, low in (("steps", 0), ("checkpoint_every", 1), ("keep_checkpoints", 1), ("sample_every", 0),
                         ("log_every", 1)):
            check_int(key, getattr(self, key), low)


@dataclass(frozen=True)
class PointsTrainConfig(RunConfig):
    """A training run on 2-D points (a built-in data set name or a .npy/.csv file) with the MLP."""

    data: str = "s_curve"
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(decoder="gaussian"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: MLPConfig = field(default_factory=MLPConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        expected = self.diffusion.prediction().output_channels(self.model.data_dim)
        if self.model.out_dim != expected:
            raise ConfigError(f"model.out_dim is {self.model.out_dim} but variance {self.diffusion.variance!r} needs {expected}")


@dataclass(frozen=True)
class ImageTrainConfig(RunConfig):
    """A training run on images with the U-Net; defaults are the paper's CIFAR-10 run."""

    steps: int = 800_000
    checkpoint_every: int = 5000
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(clip_x0=True))
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model.in_channels != self.data.channels:
            raise ConfigError(f"model.in_channels {self.model.in_channels} != data.channels {self.data.channels}")
        if self.model.image_size != self.data.image_size:
            raise ConfigError(f"model.image_size {self.model.image_size} != data.image_size {self.data.image_size}")
        expected = self.diffusion.prediction().output_channels(self.data.channels)
        if self.model.out_channels != expected:
            raise ConfigError(
                f"model.out_channels is {self.model.out_channels} but variance {self.diffusion.variance!r} needs {expected}"
            )


def read_run_config(run: Path) -> RunConfig:
    """The settings a run directory was last trained with (its config.json), of its kind."""
    data = read_json(run / "config.json", CheckpointError)
    image = isinstance(data, dict) and isinstance(data.get("data"), dict)  # an image run's data is a section
    return from_dict(ImageTrainConfig if image else PointsTrainConfig, data, str(run / "config.json"))


#: The run config of each kind of data, by the name a checkpoint records ("kind" in state.json).
RUN_CONFIGS: dict[str, type[RunConfig]] = {"points": PointsTrainConfig, "image": ImageTrainConfig}


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (nested ones included)."""
    return dataclasses.asdict(config)


def differences(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every setting in which two configs differ, nested keys
    joined by '.' (``diffusion.schedule``; a schedule's parameters compare as one setting)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "schedule_params" else
                       {f"{prefix}{k}": v})
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build ``cls`` from a dict, naming any unknown or mistyped key by its path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
