"""The paper's math: the forward process, its posterior, and the reverse process p_θ.

Every function takes the :class:`~ddpm.schedules.NoiseSchedule` first and, for the reverse
process, the network as an argument; nothing here owns a network. ``t`` is a (B,) integer
tensor of the paper's timesteps (1..T; 0 is the data where allowed), or one int for the whole
batch, as the samplers pass it: then every coefficient is a Python float (no gather, no device read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, get_args

import torch

from .errors import ConfigError
from .rng import Generators, randn
from .schedules import NoiseSchedule, extract

__all__ = [
    "Parameterization", "VarianceType", "Gaussian", "Prediction", "PredictionConfig", "q_step_mean_var",
    "q_step_sample", "q_mean_var", "q_sample", "q_posterior", "x0_from_eps", "eps_from_x0", "v_from_x0_eps",
    "x0_from_v", "eps_from_v", "x0_from_mean", "model_output_from_x0", "noise_like", "p_mean_variance",
    "predict_x0_eps", "predict_x0",
]

#: What the network predicts: ε (default, Ho et al. eq. 11), x_0, v (Salimans & Ho 2022), or
#: the posterior mean μ̃ directly (the "μ̃ prediction" row of Ho et al. Table 2).
Parameterization = Literal["eps", "x0", "v", "mean"]
#: The reverse-process variance Σ_θ = σ_t² I: β̃_t (``fixed_small``), β_t (``fixed_large``),
#: the network's log-variance (``learned``), or an interpolation between log β̃_t and log β_t
#: (``learned_range``, Nichol & Dhariwal 2021 eq. 15).
VarianceType = Literal["fixed_small", "fixed_large", "learned", "learned_range"]
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Gaussian(NamedTuple):
    """A diagonal Gaussian; ``variance`` and ``log_variance`` broadcast against ``mean``."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor


@dataclass(frozen=True)
class PredictionConfig:
    """How to read the network's output."""

    parameterization: Parameterization = "eps"
    variance: VarianceType = "fixed_small"
    clip_x0: bool = False  # clamp the predicted x_0 to [-1, 1] (image data) before forming μ

    def __post_init__(self) -> None:
        if self.parameterization not in get_args(Parameterization):
            raise ConfigError(f"parameterization must be one of {', '.join(get_args(Parameterization))}, "
                              f"got {self.parameterization!r}")
        if self.variance not in get_args(VarianceType):
            raise ConfigError(f"variance must be one of {', '.join(get_args(VarianceType))}, got {self.variance!r}")

    @property
    def learned_variance(self) -> bool:
        return self.variance in ("learned", "learned_range")

    def output_channels(self, data_channels: int) -> int:
        """Channels the network must output: doubled when the variance is learned."""
        return 2 * data_channels if self.learned_variance else data_channels


# ---------------------------------------------------------------- forward process q


def _batch_t(schedule: NoiseSchedule, t: torch.Tensor | int, x: torch.Tensor, allow_zero: bool = False):
    """t checked, as a (B,) tensor (one int t stands for the whole batch)."""
    t = schedule.check_t(t, allow_zero=allow_zero)
    return t if isinstance(t, torch.Tensor) else torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def q_step_mean_var(schedule: NoiseSchedule, x_prev: torch.Tensor, t: torch.Tensor) -> Gaussian:
    """q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I), Ho et al. (2020) eq. 2."""
    t = _batch_t(schedule, t, x_prev)
    beta = extract(schedule.beta, t, x_prev)
    return Gaussian(torch.sqrt(1.0 - beta) * x_prev, beta, torch.log(beta))


def q_step_sample(
    schedule: NoiseSchedule,
    x_prev: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: Generators = None,
) -> torch.Tensor:
    """One draw from q(x_t | x_{t−1}) by reparameterization."""
    mean, var, _ = q_step_mean_var(schedule, x_prev, t)
    noise = noise_like(x_prev, noise, generator)
    return mean + torch.sqrt(var) * noise


def q_mean_var(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor) -> Gaussian:
    """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), Ho et al. (2020) eq. 4 (t = 0 gives x_0)."""
    t = _batch_t(schedule, t, x0, allow_zero=True)
    var = extract(1.0 - schedule.alpha_bar, t, x0)
    return Gaussian(extract(schedule.sqrt_alpha_bar, t, x0) * x0, var, torch.log(var))


def q_sample(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: Generators = None,
) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, Ho et al. (2020) eq. 4 reparameterized (Algorithm 1)."""
    t = _batch_t(schedule, t, x0, allow_zero=True)
    noise = noise_like(x0, noise, generator)
    return extract(schedule.sqrt_alpha_bar, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bar, t, x0) * noise


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> Gaussian:
    """q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t I), Ho et al. (2020) eqs. 6–7. The log-variance
    is the clipped one (log β̃_2 at t = 1, where β̃_1 = 0). One int t gives python-float variances."""
    t = schedule.check_t(t)
    a, b = schedule.at("posterior_mean_coef_x0", t, xt), schedule.at("posterior_mean_coef_xt", t, xt)
    mean = torch.mul(x0, a).add_(xt, alpha=b) if isinstance(b, float) else a * x0 + b * xt
    var, log_var = schedule.at("posterior_variance", t, xt), schedule.at("posterior_log_variance_clipped", t, xt)
    return Gaussian(mean, var, log_var)


# ---------------------------------------------------------------- parameterizations


def x0_from_eps(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t, eq. 4 solved for x_0."""
    a, b = schedule.at("sqrt_one_minus_alpha_bar", t, xt), schedule.at("sqrt_alpha_bar", t, xt)
    return torch.sub(xt, eps, alpha=a).div_(b) if isinstance(a, float) else (xt - a * eps) / b  # float: 2 passes


def eps_from_x0(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1−ᾱ_t), eq. 4 solved for ε."""
    a, b = schedule.at("sqrt_alpha_bar", t, xt), schedule.at("sqrt_one_minus_alpha_bar", t, xt)
    return torch.sub(xt, x0, alpha=a).div_(b) if isinstance(a, float) else (xt - a * x0) / b


def v_from_x0_eps(schedule: NoiseSchedule, t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022, §4)."""
    return schedule.at("sqrt_alpha_bar", t, x0) * eps - schedule.at("sqrt_one_minus_alpha_bar", t, x0) * x0


def x0_from_v(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x_0 = √ᾱ_t x_t − √(1−ᾱ_t) v."""
    return schedule.at("sqrt_alpha_bar", t, xt) * xt - schedule.at("sqrt_one_minus_alpha_bar", t, xt) * v


def eps_from_v(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ε = √(1−ᾱ_t) x_t + √ᾱ_t v."""
    return schedule.at("sqrt_one_minus_alpha_bar", t, xt) * xt + schedule.at("sqrt_alpha_bar", t, xt) * v


def x0_from_mean(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """x_0 from the posterior mean μ̃_t (eq. 7 solved for x_0)."""
    return (mean - schedule.at("posterior_mean_coef_xt", t, xt) * xt) / schedule.at("posterior_mean_coef_x0", t, xt)


def model_output_from_x0(
    schedule: NoiseSchedule,
    parameterization: Parameterization,
    xt: torch.Tensor,
    t: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a network of the given parameterization should output for the true x_0.

    This is the regression target of L_simple: ε for ``eps`` (Ho et al. eq. 14), x_0, v, or
    μ̃_t(x_t, x_0) for ``mean``. Pass the noise ``eps`` that made x_t when it is known
    (training does), so the target is exactly it rather than recomputed from x_t.
    """
    if parameterization == "x0":
        return x0
    if parameterization == "mean":
        return q_posterior(schedule, x0, xt, t).mean
    if eps is None:
        eps = eps_from_x0(schedule, xt, t, x0)
    if parameterization == "eps":
        return eps
    if parameterization == "v":
        return v_from_x0_eps(schedule, t, x0, eps)
    raise ConfigError(f"unknown parameterization {parameterization!r}")


def _x0_from_output(
    schedule: NoiseSchedule, parameterization: Parameterization, xt: torch.Tensor, t: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    if parameterization == "eps":
        return x0_from_eps(schedule, xt, t, out)
    if parameterization == "x0":
        return out
    if parameterization == "v":
        return x0_from_v(schedule, xt, t, out)
    if parameterization == "mean":
        return x0_from_mean(schedule, xt, t, out)
    raise ConfigError(f"unknown parameterization {parameterization!r}")


# ---------------------------------------------------------------- reverse process p_θ


class Prediction(NamedTuple):
    """p_θ(x_{t−1} | x_t) and the x̂_0 the network implies (ε̂: :func:`predict_x0_eps`); at one
    int t a fixed variance and its log are Python floats."""

    mean: torch.Tensor
    variance: torch.Tensor | float
    log_variance: torch.Tensor | float
    pred_x0: torch.Tensor
    model_output: torch.Tensor  # the raw output, variance channels included


def _variance(
    schedule: NoiseSchedule, variance: VarianceType, var_out: torch.Tensor | None, t: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    if variance == "fixed_small":  # σ_t² = β̃_t (Ho et al. §3.2), log clipped at t = 1
        return schedule.at("posterior_variance", t, x), schedule.at("posterior_log_variance_clipped", t, x)
    if variance == "fixed_large":  # σ_t² = β_t, with β̃_2 at t = 1 as in the authors' code
        return schedule.at("fixed_large_variance", t, x), schedule.at("fixed_large_log_variance", t, x)
    assert var_out is not None
    if variance == "learned":
        return torch.exp(var_out), var_out
    # learned_range, Nichol & Dhariwal (2021) eq. 15: Σ = exp(v log β_t + (1 − v) log β̃_t), v ∈ [0, 1]
    min_log = schedule.at("posterior_log_variance_clipped", t, x)
    max_log = schedule.at("log_beta", t, x)
    frac = (var_out + 1.0) / 2.0  # the network outputs v in [-1, 1]
    log_var = frac * max_log + (1.0 - frac) * min_log
    return torch.exp(log_var), log_var


def _read_output(model: Model, schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int,
                 config: PredictionConfig, model_output: torch.Tensor | None):
    """(t checked: a (B,) tensor or one int, the raw output, its mean part, its variance part or None, x̂_0)."""
    t = schedule.check_t(t)  # one int t stays an int: its coefficients are python floats
    if model_output is None:
        out = model(xt, t if isinstance(t, torch.Tensor) else torch.full((xt.shape[0],), t, device=xt.device))
    else:
        out = model_output
    var_out = None
    if config.learned_variance:
        if out.shape[1] != 2 * xt.shape[1]:
            raise ValueError(f"variance {config.variance!r} needs {2 * xt.shape[1]} output channels, "
                             f"the model gave {out.shape[1]}")
        out_mean, var_out = out.chunk(2, dim=1)
    else:
        if out.shape != xt.shape:
            raise ValueError(f"the model output has shape {tuple(out.shape)}, expected {tuple(xt.shape)}")
        out_mean = out
    pred_x0 = _x0_from_output(schedule, config.parameterization, xt, t, out_mean)
    if config.clip_x0:  # in place where x̂_0 is a new array, not the network's output
        pred_x0 = pred_x0.clamp(-1.0, 1.0) if pred_x0 is out_mean else pred_x0.clamp_(-1.0, 1.0)
    return t, out, out_mean, var_out, pred_x0


def p_mean_variance(model: Model, schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int,
                    config: PredictionConfig = PredictionConfig(),
                    model_output: torch.Tensor | None = None) -> Prediction:
    """p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I), Ho et al. (2020) eq. 1 and §3.2.

    ``model(x_t, t)`` is called with the paper's t (unless ``model_output`` is given). For
    ε-prediction μ_θ = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t (eq. 11), computed through x̂_0 and the
    posterior mean, which is algebraically identical and lets x̂_0 be clipped.

    ``t`` is a (B,) tensor, or one int for the whole batch (as the samplers pass it): that one
    is checked in Python, so a step on a GPU waits for nothing (checking a tensor reads it back).
    """
    t, out, out_mean, var_out, pred_x0 = _read_output(model, schedule, xt, t, config, model_output)
    variance, log_variance = _variance(schedule, config.variance, var_out, t, xt)
    # with μ-prediction the network's μ is used as is (x̂_0 only reports it)
    mean = out_mean if config.parameterization == "mean" else q_posterior(schedule, pred_x0, xt, t).mean
    return Prediction(mean, variance, log_variance, pred_x0, out)


def predict_x0_eps(model: Model, schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int,
                   config: PredictionConfig = PredictionConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂_0 and ε̂ at (x_t, t) for any parameterization (ε̂ recomputed from a clipped x̂_0): what
    DDIM and DPM-Solver need of p_θ, without its variance and posterior mean."""
    t, _, _, _, pred_x0 = _read_output(model, schedule, xt, t, config, None)
    return pred_x0, eps_from_x0(schedule, xt, t, pred_x0)


def predict_x0(model: Model, schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int,
               config: PredictionConfig = PredictionConfig()) -> torch.Tensor:
    """x̂_0 at (x_t, t) alone (DPM-Solver++ needs no ε̂)."""
    return _read_output(model, schedule, xt, t, config, None)[4]


def noise_like(x: torch.Tensor, noise: torch.Tensor | None = None, generator: Generators = None) -> torch.Tensor:
    """``noise`` checked against x's shape, or fresh N(0, I) from a generator (or one per sample)."""
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x.shape)}")
        return noise
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)
