"""Noise schedules β_1..β_T and the tables derived from them.

Timestep convention (used everywhere in this package): the paper's, t ∈ {1, …, T}; t = T is
(nearly) pure noise and t = 0 is the data. Every table of :class:`NoiseSchedule` has length
T + 1 and is indexed by that t directly, so ``alpha_bar[0] == 1`` and ``beta[0] == 0``.
All tables are built in float64 and cast to the data's dtype only when gathered.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, check_count

__all__ = ["SCHEDULES", "SCHEDULE_ALIASES", "schedule_name", "make_betas", "NoiseSchedule", "extract"]


def _linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    # Ho et al. (2020) §4: β_1 = 1e-4 rising linearly to β_T = 0.02 (with T = 1000).
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def _linear_small(T: int) -> np.ndarray:
    # The seed note's code: np.linspace(1e-5, 0.2e-2, num_steps), a tenth of the paper's β_T.
    return np.linspace(1e-5, 2e-3, T, dtype=np.float64)


def _proportional(T: int, scale: float = 0.02) -> np.ndarray:
    # The seed note's formula α_t = √(1 − 0.02 t / T); with α_t = √(1 − β_t) that is β_t = 0.02 t / T.
    return scale * np.arange(1, T + 1, dtype=np.float64) / T


def _cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    # Nichol & Dhariwal (2021) eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2),
    # β_t = 1 − ᾱ(t)/ᾱ(t−1), clipped at max_beta.
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def _sigmoid(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    # A sigmoid of linspace(−6, 6, T) stretched to [beta_start, beta_end] (Xu et al. 2022, GeoDiff).
    x = np.linspace(-6.0, 6.0, T, dtype=np.float64)
    return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-x))


def _quadratic(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    # "quad" in the authors' code: linear in √β.
    return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2


def _constant(T: int, beta: float = 0.02) -> np.ndarray:
    return np.full(T, beta, dtype=np.float64)


def _jsd(T: int) -> np.ndarray:
    # "jsd" in the authors' code: β_t = 1/(T − t + 1), i.e. 1/T, 1/(T−1), …, 1 (so ᾱ_T = 0).
    return 1.0 / np.linspace(T, 1, T, dtype=np.float64)


#: Registry of schedule builders by name; each takes T and its own keyword parameters.
SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": _linear,
    "linear_small": _linear_small,
    "proportional": _proportional,
    "cosine": _cosine,
    "sigmoid": _sigmoid,
    "quadratic": _quadratic,
    "constant": _constant,
    "jsd": _jsd,
}


#: Names earlier versions used, still accepted (and stored under the name they stand for).
SCHEDULE_ALIASES: dict[str, str] = {"seed_code": "linear_small", "seed_formula": "proportional"}


def schedule_name(name: str) -> str:
    """The registry name of a schedule, given it or an alias; unknown names are refused."""
    name = SCHEDULE_ALIASES.get(name, name)
    if name not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return name


def make_betas(name: str, T: int, **params: float) -> torch.Tensor:
    """Return β_1..β_T of the named schedule as a float64 tensor of shape (T,).

    ``params`` are the schedule's own keywords (``beta_start``/``beta_end`` for ``linear``,
    ``sigmoid`` and ``quadratic``; ``s``/``max_beta`` for ``cosine``; ``beta`` for
    ``constant``; ``scale`` for ``proportional``). ``seed_code`` and ``seed_formula`` are
    accepted for ``linear_small`` and ``proportional``.
    """
    name = schedule_name(name)
    check_count("the number of diffusion steps T", T)
    known = [p for p in inspect.signature(SCHEDULES[name]).parameters][1:]  # after T
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"schedule {name!r} has no parameter {', '.join(unknown)}; "
                          f"its parameters: {', '.join(known) or 'none'}")
    try:
        betas = SCHEDULES[name](int(T), **params)
    except TypeError as exc:
        raise ConfigError(f"schedule {name!r}: bad parameters {params}: {exc}") from None
    return torch.from_numpy(_check_betas(betas, name)).clone()


def _check_betas(betas: np.ndarray, name: str) -> np.ndarray:
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 1:
        raise ConfigError(f"schedule {name!r}: betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas > 1):
        bad = int(np.argmax(~((betas > 0) & (betas <= 1))))
        raise ConfigError(
            f"schedule {name!r}: every beta must lie in (0, 1]; beta_{bad + 1} = {float(betas[bad])!r}"
        )
    return betas


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather ``table[t]`` for a (B,) integer tensor ``t`` and shape it to broadcast over ``x``.

    The result has x's dtype and device and shape (B, 1, ..., 1). This is the only gather
    helper of the package.
    """
    if table.device != x.device:
        table = table.to(x.device)
    if t.device != x.device or t.dtype != torch.long:
        t = t.to(x.device, torch.long)
    out = table.index_select(0, t)  # (B,); a third cheaper than table[t], which a sampler does ~10 times a step
    return out.to(x.dtype).view(t.shape[0], *([1] * (x.dim() - 1)))


class NoiseSchedule(nn.Module):
    """Float64 tables of Ho et al. (2020) indexed by the paper's t ∈ {0, 1, …, T}.

    Index 0 is the data: ``beta[0] = 0``, ``alpha[0] = alpha_bar[0] = 1``. Posterior tables
    (defined for t ≥ 1) hold 0 at index 0, except the clipped log-variance, whose index 0
    repeats index 1. The tables are buffers, so ``schedule.to(device)`` moves them and keeps
    them float64. They are read-only: a sampler's step at one t reads Python floats made from
    them here (no gather, no device read), which a table changed in place would not reach; for
    other betas build another ``NoiseSchedule``.
    """

    beta: torch.Tensor
    alpha: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor
    fixed_large_variance: torch.Tensor
    fixed_large_log_variance: torch.Tensor
    log_beta: torch.Tensor

    def __init__(self, betas: torch.Tensor | np.ndarray):
        super().__init__()
        b = _check_betas(torch.as_tensor(betas, dtype=torch.float64).cpu().numpy(), "custom")
        T = b.shape[0]
        beta = np.concatenate([[0.0], b])  # (T+1,)
        alpha = 1.0 - beta
        alpha_bar = np.cumprod(alpha)  # ᾱ_t = Π_{s≤t} α_s, Ho et al. (2020) §2
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])  # ᾱ_{t−1}; index 0 unused
        with np.errstate(divide="ignore", invalid="ignore"):
            one_minus = 1.0 - alpha_bar
            # Ho et al. (2020) eq. 7: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t
            post_var = np.where(one_minus > 0, (1.0 - alpha_bar_prev) / one_minus * beta, 0.0)
            # eq. 7: μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
            coef_x0 = np.where(one_minus > 0, np.sqrt(alpha_bar_prev) * beta / one_minus, 0.0)
            coef_xt = np.where(one_minus > 0, np.sqrt(alpha) * (1.0 - alpha_bar_prev) / one_minus, 0.0)
        # β̃_1 = 0, so its log is clipped to log β̃_2 as in the authors' code.
        clip_source = post_var[2] if T >= 2 else beta[1]
        log_var = np.log(np.concatenate([[clip_source, clip_source], post_var[2:]]))
        self.T = T
        tables = {
            "beta": beta,
            "alpha": alpha,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": np.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(1.0 - alpha_bar),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": log_var,
            "posterior_mean_coef_x0": coef_x0,
            "posterior_mean_coef_xt": coef_xt,
        }
        for key, value in tables.items():
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)))
        # σ_t² = β_t of the "fixed_large" reverse variance, with β̃_2 at t ≤ 1 as in the authors' code
        large = np.concatenate([[post_var[2], post_var[2]], beta[2:]]) if T >= 2 else beta
        derived = {"fixed_large_variance": large, "fixed_large_log_variance": np.log(np.maximum(large, 1e-300)),
                   "log_beta": np.log(np.maximum(beta, 1e-300))}
        for key, value in derived.items():  # not in state_dict: made from the others
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)),
                                 persistent=False)
        tables.update(derived)
        # python floats of every table, for a sampler's step at one int t: no gather, no device read
        self._host = {key: np.asarray(value, dtype=np.float64).tolist() for key, value in tables.items()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Loading a state_dict cannot change the schedule: every table (and the python floats a
        sampler's step reads) follows from the betas it was built with. Other tables are an error
        that names the key, and nothing of this schedule is overwritten."""
        for key, host in self._host.items():
            value = state_dict.get(prefix + key)
            if value is None or key not in self._buffers or key in self._non_persistent_buffers_set:
                continue
            if value.shape != (self.T + 1,) or not torch.equal(value.detach().cpu().double(),
                                                               torch.tensor(host, dtype=torch.float64)):
                error_msgs.append(f"{prefix}{key}: not this schedule's table; a NoiseSchedule follows from its "
                                  "betas: build NoiseSchedule(betas) rather than loading other tables into one")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @classmethod
    def from_name(cls, name: str = "linear", T: int = 1000, **params: float) -> "NoiseSchedule":
        """Build the schedule ``make_betas(name, T, **params)``."""
        return cls(make_betas(name, T, **params))

    @property
    def betas(self) -> torch.Tensor:
        """β_1..β_T, shape (T,), float64 (what :func:`make_betas` returned)."""
        return self.beta[1:]

    def at(self, name: str, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor | float:
        """Table ``name`` at the paper's t: :func:`extract` of it for a (B,) tensor t, a python float
        for one int t (what a sampler step passes: scalar arithmetic, no gather, nothing read back from
        a GPU). Besides the buffers: ``fixed_large_variance`` (β_t, β̃_2 at t ≤ 1), its log, ``log_beta``."""
        if isinstance(t, torch.Tensor):
            return extract(getattr(self, name), t, x)
        return self._host[name][t]

    def check_t(self, t: torch.Tensor | int, *, allow_zero: bool = False) -> torch.Tensor | int:
        """Validate a (B,) integer tensor of paper timesteps and return it as int64, or one int t
        (numpy's too; a float or bool is a TypeError) checked in Python and returned as an int."""
        lo = 0 if allow_zero else 1
        if not isinstance(t, torch.Tensor):
            if isinstance(t, bool):
                raise TypeError(f"a timestep must be an integer, got {t!r}")
            t = operator.index(t)
            if not lo <= t <= self.T:
                raise ValueError(f"timestep {t} is outside [{lo}, {self.T}]")
            return t
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
            raise ValueError(f"t must be a 1-D integer tensor of paper timesteps, got {t.dtype} {tuple(t.shape)}")
        if t.numel() and t.device.type == "cpu":
            if int(t.min()) < lo or int(t.max()) > self.T:
                raise ValueError(f"timesteps must lie in [{lo}, {self.T}], got [{int(t.min())}, {int(t.max())}]")
        elif t.numel():  # on a GPU, reading t back would make every step wait for the device
            torch._assert_async(((t >= lo) & (t <= self.T)).all(), f"timesteps must lie in [{lo}, {self.T}]")
        return t.long()

    def extra_repr(self) -> str:
        return f"T={self.T}"
