"""``ddpm.load``: any checkpoint this package writes, points or images, as a model ready to sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint
from .config import RunConfig
from .diffusion import PredictionConfig
from .errors import CheckpointError
from .kinds import KINDS, Codec
from .schedules import NoiseSchedule


@dataclass
class Loaded:
    """A trained model: call ``model(x_t, t)`` with the paper's t ∈ {1, …, T} in the model's
    space; ``codec`` maps samples to the data's own values (uint8 pixels, points in their scale)."""

    model: nn.Module
    schedule: NoiseSchedule
    prediction: PredictionConfig
    config: RunConfig
    kind: str  # "image" or "points"
    codec: Codec
    step: int = 0
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what else the checkpoint recorded
    data: dict[str, torch.Tensor] = field(default_factory=dict)  # its data statistics (2-D: mean, std, reference)
    _compiled: Any = field(default=None, repr=False, compare=False)

    def compiled(self):
        """The network under ``torch.compile`` for fixed shapes, made once and kept, so every
        batch and step of a run reuses its graph (a new batch shape compiles again)."""
        if self._compiled is None:
            self._compiled = torch.compile(self.model, dynamic=False)
        return self._compiled

    @property
    def num_classes(self) -> int:
        """The classes a conditional network knows (its "no class" id is this number); 0: unconditional."""
        return self.config.model.num_classes

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape in the model's space: (2,) for points, (C, H, W) for images."""
        return KINDS[self.kind].sample_shape(self.config)

    @classmethod
    def of(cls, config: RunConfig, kind: str, weights: dict[str, torch.Tensor], data: dict[str, torch.Tensor],
           step: int = 0, path: Path | None = None, info: dict[str, Any] | None = None) -> "Loaded":
        """Build the kind's network from ``config``, load ``weights`` and put it in eval mode."""
        adapter = KINDS[kind]
        model = adapter.model(config)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path or 'weights'}: the weights do not fit the configured model: {first}") from None
        model.eval()
        try:
            codec = adapter.codec(config, data)
        except CheckpointError as exc:
            raise CheckpointError(f"{path or 'checkpoint'}: {exc}") from None
        return cls(model, config.diffusion.make_schedule(), config.diffusion.prediction(), config, kind, codec, step,
                   path, dict(info or {}), dict(data))

    @property
    def default_sampler(self):
        """The :class:`~ddpm.samplers.SamplerSpec` these weights are drawn with when none is given
        (``generate``, ``inpaint`` and ``sdedit`` with no sampler, ``ddpm sample`` with no --sampler):
        the one packed with them (``ddpm pack --sampler``; the pretrained: ones carry DDIM η = 1,
        50 steps), else the paper's Algorithm 2 with all T steps."""
        from .samplers import SamplerSpec

        packed = packed_sampler(self)
        return SamplerSpec(packed["sampler"], packed["steps"], eta=packed["eta"]) if packed else SamplerSpec()

    @property
    def device(self) -> torch.device:
        """Where the network is (its first parameter's or buffer's device; the CPU if it has none)."""
        for t in [*self.model.parameters(), *self.model.buffers()][:1]:
            return t.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> "Loaded":
        """Model and schedule on ``device`` (in place; returns self)."""
        self.model.to(device)
        self.schedule = self.schedule.to(device)
        return self


def load(path: str | Path, use_ema: bool = True) -> Loaded:
    """Load a run directory (its newest checkpoint) or one checkpoint directory, of either kind."""
    name = "ema" if use_ema else "model"
    ckpt = Checkpoint.read(path, parts=(name, "data"))
    return Loaded.of(ckpt.config, ckpt.kind, getattr(ckpt, name), ckpt.data, ckpt.step, ckpt.path, ckpt.info)


def packed_sampler(loaded: Loaded) -> dict | None:
    """The default sampler a packed checkpoint carries (state.json's ``default_sampler``), checked."""
    from .samplers import SAMPLERS

    packed = loaded.info.get("default_sampler")
    if packed is None:
        return None
    where = f"{loaded.path / 'state.json' if loaded.path else 'the checkpoint'}: default_sampler"
    if not isinstance(packed, dict) or packed.get("sampler") not in SAMPLERS:
        raise CheckpointError(f"{where}: expected {{'sampler': one of {', '.join(SAMPLERS)}, 'steps', 'eta'}}, "
                              f"got {packed!r}")
    steps, eta = packed.get("steps"), packed.get("eta", 0.0)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise CheckpointError(f"{where}: steps must be a positive integer or null, got {steps!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < float("inf"):
        raise CheckpointError(f"{where}: eta must be a number >= 0, got {eta!r}")
    return {"sampler": packed["sampler"], "steps": steps, "eta": float(eta)}
