"""Ho et al. (2020) Algorithm 2: ancestral sampling of p_θ(x_{0:T}).

    x_T ~ N(0, I)
    for t = T, …, 1:
        z ~ N(0, I) if t > 1 else z = 0
        x_{t−1} = μ_θ(x_t, t) + σ_t z
    return x_0

Given a subsequence of timesteps it runs the same algorithm on the respaced process
(Nichol & Dhariwal 2021): β recomputed from the kept ᾱ, the network called with the
original t.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch

from ..diffusion import Model, PredictionConfig, p_mean_variance
from ..rng import Generators, randn
from ..schedules import NoiseSchedule
from .base import SamplerStep, run_to_end
from .timesteps import RespacedModel, check_timesteps, respace


@torch.no_grad()
def ancestral_steps(
    model: Model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    generator: Generators = None,
    *,
    timesteps: Sequence[int] | None = None,
) -> Iterator[SamplerStep]:
    """Yield every step of Algorithm 2, from t = T down to t = 1, starting at ``x_T``.

    ``generator`` (one, or one per sample) drives the fresh noise z; the last step (t = 1) adds none.
    With ``timesteps`` (decreasing paper timesteps) the respaced process is run instead; each
    step reports its original t.
    """
    t_map = None
    if timesteps is not None:
        kept = check_timesteps(schedule.T, timesteps)
        if kept != list(range(schedule.T, 0, -1)):
            schedule, t_map = respace(schedule, kept)
            schedule = schedule.to(x_T.device)
            model = RespacedModel(model, t_map.to(x_T.device))
            t_map = t_map.tolist()  # python ints: reporting the original t reads nothing back from a GPU
    x = x_T
    for t in range(schedule.T, 0, -1):
        pred = p_mean_variance(model, schedule, x, t, prediction)
        if t > 1:
            z = randn(x.shape, generator, dtype=x.dtype, device=x.device)
            lv = pred.log_variance  # a python float at one int t, unless the network gives it
            x = pred.mean + torch.exp(0.5 * lv) * z if isinstance(lv, torch.Tensor) else \
                torch.add(pred.mean, z, alpha=math.exp(0.5 * lv))
        else:
            x = pred.mean
        if t_map is None:
            yield SamplerStep(t, x, pred.pred_x0, t - 1)
        else:
            yield SamplerStep(t_map[t], x, pred.pred_x0, t_map[t - 1])


def ancestral_sample(
    model: Model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    generator: Generators = None,
    callback: Callable[[SamplerStep], None] | None = None,
    *,
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """Run Algorithm 2 and return x_0; ``callback`` sees every :class:`SamplerStep`."""
    return run_to_end(ancestral_steps(model, schedule, x_T, prediction, generator, timesteps=timesteps), x_T,
                      callback)
