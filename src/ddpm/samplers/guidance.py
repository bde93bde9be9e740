"""Classifier-free guidance (Ho & Salimans 2022), for every sampler: a class-conditional network
becomes a plain ``model(x_t, t)`` that any sampler calls.

    ε̃_θ(x_t, c) = (1 + w) ε_θ(x_t, c) − w ε_θ(x_t, ∅)          (Ho & Salimans 2022, eq. 6)

w = 0 is the conditional model itself; diffusers' ``guidance_scale`` is 1 + w. The conditional
and unconditional outputs come from one batched network call. The combination is applied to
the network's output whatever it predicts (ε, x_0, v and μ̃ are all linear in it); with a
learned variance only the mean channels are guided and the variance is the conditional one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


class ClassifierFreeGuidance(nn.Module):
    """``model(x, t)`` of a conditional network for the classes ``labels`` (B,) at guidance ``w``.

    ``null_class`` is the network's "no class" id (its number of classes); ``labels`` may hold it
    (those samples are unconditional). ``mean_channels``: the leading output channels to guide
    (the rest, a learned variance, are taken from the conditional call); None guides them all.
    """

    def __init__(self, model, labels: torch.Tensor, w: float, null_class: int, mean_channels: int | None = None):
        super().__init__()
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"the guidance weight must be a finite number >= 0, got {w}")
        if labels.dim() != 1 or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > null_class)):
            raise ConfigError(f"class ids must lie in [0, {null_class - 1}] (or {null_class}: no class)")
        self.model, self.w, self.null_class, self.mean_channels = model, float(w), null_class, mean_channels
        self.register_buffer("labels", labels.long(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = self.labels.to(x.device)
        if self.w == 0.0:
            return self.model(x, t, y)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, self.null_class)]))
        cond, uncond = both.chunk(2)  # (B, ...) each
        k = self.mean_channels or cond.shape[1]
        guided = (1.0 + self.w) * cond[:, :k] - self.w * uncond[:, :k]
        return torch.cat([guided, cond[:, k:]], dim=1) if k < cond.shape[1] else guided
