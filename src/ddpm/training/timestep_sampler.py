"""How training draws the timestep t of each example.

``uniform``: t ~ U{1, …, T} (Ho et al. Algorithm 1). ``importance``: p_t ∝ √E[L_t²] from the
last ``history`` per-example losses seen at each t, uniform until every t has them (Nichol &
Dhariwal 2021 §3.3); the returned weights 1/(T p_t) keep the loss an unbiased estimate of the
uniform one. The trainer records each example's whole training loss, as the authors' code
does (``losses["loss"]`` in improved-diffusion): the bound term L_{t−1} itself under ``vlb``,
L_simple + λ L_{t−1} under ``hybrid``.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

import numpy as np
import torch

from ..config import TimestepSamplerType


class TimestepDraw(NamedTuple):
    t: torch.Tensor  # (B,) int64 paper timesteps in 1..T
    weights: torch.Tensor  # (B,) importance weights 1/(T p_t); ones for uniform sampling


class TimestepSampler:
    """Uniform or loss-second-moment importance sampling of t ∈ {1, …, T}."""

    def __init__(self, T: int, kind: TimestepSamplerType = "uniform", history: int = 10, uniform_prob: float = 1e-3):
        if kind not in get_args(TimestepSamplerType):
            raise ValueError(f"timestep sampler must be 'uniform' or 'importance', got {kind!r}")
        self.T, self.kind, self.uniform_prob = T, kind, uniform_prob
        self.history = np.zeros((T, history), dtype=np.float64)  # row t−1: last losses at t
        self.counts = np.zeros(T, dtype=np.int64)

    def probabilities(self) -> np.ndarray:
        """p_1..p_T, shape (T,)."""
        if self.kind == "uniform" or not self.warmed_up:
            return np.full(self.T, 1.0 / self.T)
        p = np.sqrt(np.mean(self.history**2, axis=1))
        p = p / p.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    @property
    def warmed_up(self) -> bool:
        return bool(np.all(self.counts >= self.history.shape[1]))

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> TimestepDraw:
        if self.kind == "uniform" or not self.warmed_up:
            t = torch.randint(1, self.T + 1, (batch_size,), generator=generator)
            return TimestepDraw(t.to(device), torch.ones(batch_size, device=device))
        p = torch.from_numpy(self.probabilities())
        idx = torch.multinomial(p, batch_size, replacement=True, generator=generator)  # (B,) in 0..T−1
        weights = (1.0 / (self.T * p[idx])).float()
        return TimestepDraw((idx + 1).to(device), weights.to(device))

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-example training losses ``losses`` of examples drawn at timesteps ``t``."""
        if self.kind == "uniform":
            return
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            row, n = ti - 1, self.history.shape[1]
            if self.counts[row] == n:
                self.history[row, :-1] = self.history[row, 1:]
                self.history[row, -1] = li
            else:
                self.history[row, self.counts[row]] = li
                self.counts[row] += 1

    def state_dict(self) -> dict:
        return {"history": self.history.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.history = np.asarray(state["history"], dtype=np.float64)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
