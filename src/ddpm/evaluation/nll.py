"""The full variational bound (Ho et al. 2020 eq. 5) with its breakdown, in nats and bits/dim."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..diffusion import Model, PredictionConfig, q_sample
from ..losses import DecoderType, prior_kl, vlb_term
from ..schedules import NoiseSchedule


class Bound(NamedTuple):
    """Per-example terms in nats; ``terms[:, t−1]`` is L_{t−1}, so column 0 is the decoder L_0."""

    prior: torch.Tensor  # (B,) L_T
    terms: torch.Tensor  # (B, T)
    num_dims: int

    @property
    def decoder(self) -> torch.Tensor:
        return self.terms[:, 0]

    @property
    def diffusion(self) -> torch.Tensor:
        """Σ_{t=2}^{T} L_{t−1}, shape (B,)."""
        return self.terms[:, 1:].sum(dim=1)

    @property
    def total(self) -> torch.Tensor:
        """The negative ELBO L = L_T + Σ L_{t−1} + L_0, shape (B,), nats."""
        return self.prior + self.terms.sum(dim=1)

    def bits_per_dim(self, nats: torch.Tensor | None = None) -> torch.Tensor:
        return (self.total if nats is None else nats) / (self.num_dims * math.log(2.0))


@torch.no_grad()
def variational_bound(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    decoder: DecoderType = "discretized",
    generator: torch.Generator | None = None,
) -> Bound:
    """Every term of the bound for a batch x_0, each L_{t−1} from one draw x_t ~ q(x_t|x_0)."""
    B, T = x0.shape[0], schedule.T
    terms = torch.zeros(B, T, dtype=torch.float64, device=x0.device)
    for t in range(T, 0, -1):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x0.device)
        xt = q_sample(schedule, x0, t_batch, generator=generator)
        terms[:, t - 1] = vlb_term(model, schedule, x0, xt, t_batch, prediction, decoder).double()
    return Bound(prior_kl(schedule, x0).double(), terms, x0[0].numel())
