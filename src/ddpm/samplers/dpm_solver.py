"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a multistep second-order solver of the
diffusion ODE in its data-prediction form, for ε-, x_0- and v-networks alike.

With α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t/σ_t) and h_i = λ_{t_i} − λ_{t_{i−1}}:

    x_{t_i} = (σ_{t_i}/σ_{t_{i−1}}) x_{t_{i−1}} − α_{t_i} (e^{−h_i} − 1) D_i,
    D_i = (1 + 1/(2r_i)) x̂_0(t_{i−1}) − 1/(2r_i) x̂_0(t_{i−2}),   r_i = h_{i−1}/h_i,

with D_1 = x̂_0(t_0) (first order) for the first step. The last step goes to t = 0 where
σ = 0 and λ = ∞; it is taken at first order, which returns x̂_0 of the last evaluation
(the "lower order final" choice, whose alternative is undefined at σ = 0).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch

from ..diffusion import Model, PredictionConfig, predict_x0
from ..errors import ConfigError
from ..rng import Generators
from ..schedules import NoiseSchedule
from .base import SamplerStep, run_to_end
from .timesteps import check_timesteps, make_timesteps


def _lambda(abar: float) -> float:
    """λ = log(α/σ) = ½ log(ᾱ / (1 − ᾱ))."""
    if not 0.0 < abar < 1.0:
        raise ConfigError(f"DPM-Solver needs 0 < ᾱ_t < 1 at every visited t, got ᾱ = {abar} "
                          "(a schedule with ᾱ_T = 0, such as jsd: use another sampler or drop t = T)")
    return 0.5 * (math.log(abar) - math.log1p(-abar))


@torch.no_grad()
def dpm_solver_steps(
    model: Model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    generator: Generators = None,
    *,
    timesteps: Sequence[int] | None = None,
) -> Iterator[SamplerStep]:
    """Yield each DPM-Solver++(2M) step; deterministic, so ``generator`` is unused."""
    del generator
    ts = check_timesteps(schedule.T, timesteps) if timesteps is not None else make_timesteps(schedule.T)
    abar = schedule.alpha_bar.detach().cpu().tolist()  # python floats: no device sync per step
    x = x_T
    prev_x0, prev_h = None, None
    for i, t in enumerate(ts):
        x0 = predict_x0(model, schedule, x, t, prediction)
        s = ts[i + 1] if i + 1 < len(ts) else 0
        if s == 0:  # σ_0 = 0, so the first-order step is x̂_0 itself
            x = x0
        else:
            abar_t, abar_s = abar[t], abar[s]
            h = _lambda(abar_s) - _lambda(abar_t)
            if prev_x0 is None:
                d = x0
            else:
                r = prev_h / h
                d = torch.mul(x0, 1.0 + 0.5 / r).sub_(prev_x0, alpha=0.5 / r)
            ratio, coef = math.sqrt((1.0 - abar_s) / (1.0 - abar_t)), math.sqrt(abar_s) * math.expm1(-h)
            x = torch.mul(x, ratio).sub_(d, alpha=coef)  # σ_s/σ_t x − α_s (e^{−h} − 1) D
            prev_x0, prev_h = x0, h
        yield SamplerStep(t, x, x0, s)


def dpm_solver_sample(model: Model, schedule: NoiseSchedule, x_T: torch.Tensor,
                      prediction: PredictionConfig = PredictionConfig(), generator: Generators = None,
                      callback: Callable[[SamplerStep], None] | None = None, *,
                      timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """Run DPM-Solver++(2M) and return x_0; ``callback`` sees every :class:`SamplerStep`."""
    return run_to_end(dpm_solver_steps(model, schedule, x_T, prediction, generator, timesteps=timesteps), x_T,
                      callback)
