"""What every sampler shares: the step it yields, how a run is drained, and x̂_0/ε̂ at a step."""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch

from ..diffusion import Model, PredictionConfig, p_mean_variance
from ..schedules import NoiseSchedule


class SamplerStep(NamedTuple):
    """The state after one reverse step from t: ``x`` is x at ``t_next`` (t − 1 on the full
    grid, the next kept timestep or 0 otherwise); ``pred_x0`` is x̂_0(x_t, t)."""

    t: int
    x: torch.Tensor
    pred_x0: torch.Tensor
    t_next: int


def run_to_end(steps: Iterator[SamplerStep], x_T: torch.Tensor,
               callback: Callable[[SamplerStep], None] | None = None) -> torch.Tensor:
    """Drain a sampler's step iterator and return the last x (x_T if there were no steps)."""
    x = x_T
    for step in steps:
        x = step.x
        if callback is not None:
            callback(step)
    return x


def predict_x0_eps(model: Model, schedule: NoiseSchedule, x: torch.Tensor, t: int,
                   prediction: PredictionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂_0 and ε̂ at (x_t, t) for any parameterization (ε̂ recomputed from a clipped x̂_0)."""
    pred = p_mean_variance(model, schedule, x, t, prediction)
    return pred.pred_x0, pred.pred_eps
