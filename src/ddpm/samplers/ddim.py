"""DDIM (Song, Meng & Ermon 2021) for any η, and its deterministic inverse.

One step from kept timestep t to the next kept s < t (s = 0 at the end), eq. 12:

    x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,
    σ = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)          (eq. 16)

with x̂_0 and ε̂ from the network at (x_t, t). η = 1 on the full grid is Algorithm 2 with
σ_t² = β̃_t; η = 0 is deterministic.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch

from ..diffusion import Model, PredictionConfig, predict_x0_eps
from ..rng import Generators, randn
from ..schedules import NoiseSchedule
from .base import SamplerStep, run_to_end
from .timesteps import check_timesteps, make_timesteps


def ddim_sigma(abar_t: float, abar_s: float, eta: float) -> float:
    """σ_t(η) of Song et al. (2021) eq. 16 for a step from ᾱ_t to ᾱ_s."""
    if eta == 0.0:
        return 0.0
    return eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t)) * math.sqrt(max(1.0 - abar_t / abar_s, 0.0))


@torch.no_grad()
def ddim_steps(
    model: Model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    generator: Generators = None,
    *,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
) -> Iterator[SamplerStep]:
    """Yield each DDIM step over ``timesteps`` (default: all of 1..T); the last one lands on x_0."""
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    ts = check_timesteps(schedule.T, timesteps) if timesteps is not None else make_timesteps(schedule.T)
    abar = schedule.alpha_bar.detach().cpu().tolist()  # python floats: no device sync per step
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        step = ddim_step(model, schedule, x, t, s, prediction, eta, generator, abar)
        x = step.x
        yield step


def ddim_step(model: Model, schedule: NoiseSchedule, x: torch.Tensor, t: int, s: int,
              prediction: PredictionConfig = PredictionConfig(), eta: float = 0.0, generator: Generators = None,
              abar: list[float] | None = None) -> SamplerStep:
    """One DDIM step from x_t to x_s, s < t (Song et al. 2021 eq. 12 with σ(η) of eq. 16):

        x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z

    With η = 1 it draws from the posterior q(x_s | x_t, x̂_0), Algorithm 2's step between any two
    levels (σ² = β̃ of the pair). ``abar``: ᾱ as python floats, if the caller has them."""
    abar = abar if abar is not None else schedule.alpha_bar.detach().cpu().tolist()
    x0, eps = predict_x0_eps(model, schedule, x, t, prediction)
    abar_t, abar_s = abar[t], abar[s]
    sigma = ddim_sigma(abar_t, abar_s, eta)
    # in place on ε̂, a new array: two passes and no new one
    x = eps.mul_(math.sqrt(max(1.0 - abar_s - sigma**2, 0.0))).add_(x0, alpha=math.sqrt(abar_s))
    if sigma > 0:
        x.add_(randn(x.shape, generator, dtype=x.dtype, device=x.device), alpha=sigma)
    return SamplerStep(t, x, x0, s)


def ddim_sample(model: Model, schedule: NoiseSchedule, x_T: torch.Tensor,
                prediction: PredictionConfig = PredictionConfig(), generator: Generators = None,
                callback: Callable[[SamplerStep], None] | None = None, *, timesteps: Sequence[int] | None = None,
                eta: float = 0.0) -> torch.Tensor:
    """Run DDIM and return x_0; ``callback`` sees every :class:`SamplerStep`."""
    return run_to_end(ddim_steps(model, schedule, x_T, prediction, generator, timesteps=timesteps, eta=eta), x_T,
                      callback)


@torch.no_grad()
def ddim_invert(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    *,
    t_end: int | None = None,
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """Encode x_0 to x_{t_end} with the η = 0 ODE run forwards (Song et al. 2021, §4.3).

    ``timesteps`` (decreasing, as for sampling; default every t ≤ t_end) are visited from the
    smallest up. Each step from level a to b > a uses ε̂ at (x_a, a), and at (x_0, b) for the
    first step, where the network has no t = 0. DDIM with the same timesteps decodes it back.
    """
    if timesteps is None:
        t_end = schedule.T if t_end is None else t_end
        ts = make_timesteps(schedule.T, explicit=list(range(t_end, 0, -1)))
    else:
        ts = check_timesteps(schedule.T, timesteps)
    abar = schedule.alpha_bar.detach().cpu().tolist()
    x, a = x0, 0
    for b in reversed(ts):
        x0_hat, eps = predict_x0_eps(model, schedule, x, a if a > 0 else b, prediction)
        abar_b = abar[b]
        x = math.sqrt(abar_b) * x0_hat + math.sqrt(1.0 - abar_b) * eps
        a = b
    return x
