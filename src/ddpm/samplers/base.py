"""What every sampler shares: the step it yields and how a run is drained (x̂_0/ε̂ at a step is
``ddpm.diffusion.predict_x0_eps``, beside p_θ)."""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch


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
