"""The paper's pictures: progressive generation (Fig. 6) and interpolation (§4.4, Fig. 8)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.images import to_model_range, to_uint8
from ..diffusion import Model, PredictionConfig, q_sample
from ..errors import ConfigError
from ..rng import per_sample_generators, randn
from ..samplers import SamplerSpec, ancestral_steps, ddim_invert, ddim_steps, make_timesteps
from ..schedules import NoiseSchedule


def _check_ts(T: int, ts: Sequence[int], allow_zero: bool) -> list[int]:
    lo = 0 if allow_zero else 1
    bad = [t for t in ts if not lo <= t <= T]
    if bad or not ts:
        raise ConfigError(f"timesteps must lie in [{lo}, {T}], got {list(ts)}")
    return sorted(set(int(t) for t in ts), reverse=True)


@torch.no_grad()
def progressive_generation(model: Model, schedule: NoiseSchedule, prediction: PredictionConfig, shape: tuple,
                           n: int, seed: int, show_t: Sequence[int], sampler: SamplerSpec = SamplerSpec(),
                           device: torch.device | str = "cpu") -> tuple[list[int], torch.Tensor]:
    """x̂_0(x_t, t) along one reverse run of n samples, at the sampler's visited t nearest each of
    ``show_t`` (0 shows the final x_0). Returns those t and uint8 (n, len(t), C, H, W)."""
    wanted = _check_ts(schedule.T, show_t, allow_zero=True)
    visited = sampler.timesteps_for(schedule.T)
    shown = sorted({min(visited + [0], key=lambda v: abs(v - t)) for t in wanted}, reverse=True)
    gens = per_sample_generators(seed, 0, n)
    x = randn((n, *shape), gens, device=device)
    got: dict[int, torch.Tensor] = {}
    for step in sampler.steps_iter(model, schedule, x, prediction, gens):
        if step.t in shown:
            got[step.t] = to_uint8(step.pred_x0.clamp(-1, 1)).cpu()
        x = step.x
    if 0 in shown:
        got[0] = to_uint8(x).cpu()
    return shown, torch.stack([got[t] for t in shown], dim=1)


@torch.no_grad()
def interpolate(model: Model, schedule: NoiseSchedule, prediction: PredictionConfig, a: torch.Tensor,
                b: torch.Tensor, t: int, lambdas: Sequence[float], seed: int, method: str = "ancestral",
                ddim_steps_count: int | None = None) -> torch.Tensor:
    """Interpolate uint8 images a and b (P, C, H, W) through x_t (Ho et al. 2020 §4.4).

    ``ancestral`` (the paper's): x_t and x'_t from q with the same noise, mixed as
    (1 − λ) x_t + λ x'_t, then denoised by the reverse process from t with the same reverse
    noise for every λ. ``ddim``: x_t from the deterministic DDIM inversion, mixed the same way,
    decoded by DDIM (η = 0); λ = 0 and 1 then give back a and b closely.
    Returns uint8 (P, len(lambdas), C, H, W).
    """
    if not 1 <= t <= schedule.T:
        raise ConfigError(f"interpolation t must lie in [1, {schedule.T}], got {t}")
    if method not in ("ancestral", "ddim"):
        raise ConfigError(f"interpolation method must be 'ancestral' or 'ddim', got {method!r}")
    x0a, x0b = to_model_range(a), to_model_range(b)
    P = a.shape[0]
    if method == "ancestral":
        gens = per_sample_generators(seed, 0, P)
        noise = randn(x0a.shape, gens, device=x0a.device)
        tt = torch.full((P,), t, dtype=torch.long, device=x0a.device)
        xa, xb = q_sample(schedule, x0a, tt, noise), q_sample(schedule, x0b, tt, noise)
        timesteps = list(range(t, 0, -1))
    else:
        timesteps = make_timesteps(t, ddim_steps_count or t, "linspace")
        xa = ddim_invert(model, schedule, x0a, prediction, timesteps=timesteps)
        xb = ddim_invert(model, schedule, x0b, prediction, timesteps=timesteps)
    rows = []
    for lam in lambdas:
        x = (1.0 - lam) * xa + lam * xb
        if method == "ancestral":
            gens = per_sample_generators(seed + 1, 0, P)  # the same reverse noise for every λ
            steps = ancestral_steps(model, schedule, x, prediction, gens, timesteps=timesteps)
        else:
            steps = ddim_steps(model, schedule, x, prediction, timesteps=timesteps)
        for step in steps:
            x = step.x
        rows.append(to_uint8(x).cpu())
    return torch.stack(rows, dim=1)


def lambdas_of(count: int) -> list[float]:
    if count < 2:
        raise ConfigError(f"need at least 2 interpolation points, got {count}")
    return np.linspace(0.0, 1.0, count).tolist()
