"""Timestep subsequences and Nichol & Dhariwal's respacing.

Every sequence here is in the paper's convention: integers in 1..T, strictly decreasing, the
first at the noisy end. The sampler's last step always goes from the smallest kept t to the
data, t = 0. diffusers counts from 0, so its timestep ``k`` is our ``k + 1``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..schedules import NoiseSchedule

Spacing = Literal["linspace", "leading", "trailing"]
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")


def make_timesteps(T: int, steps: int | None = None, spacing: str = "linspace",
                   explicit: Sequence[int] | None = None) -> list[int]:
    """K kept paper timesteps, decreasing: ``explicit`` checked, or ``steps`` of a named spacing.

    - ``linspace``: round(linspace(T, 1, K)); keeps both T and 1 (DDIM's and DPM-Solver's
      "time uniform" on the discrete grid).
    - ``leading``: diffusers' default, 1 + s·k for k = 0..K−1 with s = T // K; starts below T
      when K does not divide T.
    - ``trailing``: round(T − T/K · k) for k = 0..K−1; always starts at T (Lin et al. 2024
      recommend it for few steps).
    """
    if explicit is not None:
        return check_timesteps(T, explicit)
    if steps is None:
        steps = T
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ConfigError(f"steps must be an integer in [1, {T}], got {steps!r}")
    K = int(steps)
    if spacing == "linspace":
        ts = np.round(np.linspace(T, 1, K)) if K > 1 else np.array([T])
    elif spacing == "leading":
        ts = 1 + np.arange(K)[::-1] * (T // K)
    elif spacing == "trailing":
        ts = np.round(T - np.arange(K) * (T / K))
    else:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    return check_timesteps(T, [int(t) for t in ts])


def check_timesteps(T: int, timesteps: Sequence[int], lowest: int = 1) -> list[int]:
    """Validate a sequence of paper timesteps: integers in [lowest, T] (lowest 0 admits the data,
    as a picture of x_0 may), strictly decreasing. The one check of a timestep list."""
    ts = list(timesteps)
    if not ts:
        raise ConfigError("the timestep list is empty")
    for i, t in enumerate(ts):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ConfigError(f"timestep #{i} is {t!r}, not an integer")
        if not lowest <= t <= T:
            raise ConfigError(f"timestep #{i} is {t}, outside [{lowest}, {T}] (the paper's t; diffusers' k is t − 1)")
    for i in range(1, len(ts)):
        if ts[i] >= ts[i - 1]:
            raise ConfigError(f"timesteps must be strictly decreasing; #{i - 1} = {ts[i - 1]}, #{i} = {ts[i]}")
    return [int(t) for t in ts]


def parse_timesteps(text: str, flag: str = "--timesteps") -> list[int]:
    """'999,500,10' -> [999, 500, 10]: the one parser of a comma list of integers typed by a user
    (timesteps are then validated by :func:`check_timesteps`)."""
    parts = text.replace(" ", "").split(",")
    try:
        if "" in parts:  # '1,,2' or '5,': a number left out is likelier than a gap meant
            raise ValueError
        return [int(part) for part in parts]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


class RespacedModel(nn.Module):
    """Calls the wrapped network with the original timestep: index i of the respaced process -> kept[i]."""

    def __init__(self, model, timestep_map: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("timestep_map", timestep_map.long(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.timestep_map.to(t.device)[t.long()])


def respace(schedule: NoiseSchedule, timesteps: Sequence[int]) -> tuple[NoiseSchedule, torch.Tensor]:
    """The process that visits only ``timesteps`` (Nichol & Dhariwal 2021, §4).

    With kept t_1 < … < t_K, the new process has ᾱ'_i = ᾱ_{t_i} and
    β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}} (t_0 = 0, ᾱ_0 = 1), so q(x_{t_i} | x_0) is unchanged and its
    posterior, bound and learned-range variance are all those of the shorter chain.
    Returns the new schedule and the map (length K + 1, map[0] = 0) from its index to the
    original t, for :class:`RespacedModel`.
    """
    kept = sorted(check_timesteps(schedule.T, sorted(timesteps, reverse=True)))
    abar = schedule.alpha_bar.detach().cpu()
    idx = torch.tensor([0] + kept)
    abar_kept = abar[idx]  # (K+1,), abar_kept[0] = 1
    betas = 1.0 - abar_kept[1:] / abar_kept[:-1]
    return NoiseSchedule(betas), idx
