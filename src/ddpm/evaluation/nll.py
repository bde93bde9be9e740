"""The full variational bound (Ho et al. 2020 eq. 5) with its breakdown, in nats and bits/dim,
an unbiased estimate of it from a few timesteps, and the rate–distortion curve of §4.3.

Every L_{t−1} comes from one draw x_t ~ q(x_t | x_0), so each term (and so the bound) is an
unbiased single-sample estimate of its expectation; standard errors are over images. With a
:class:`ddpm.rng.CounterNoise` as the generator, image i's draws are keyed by (seed, i) and
counted in a fixed order (the full bound: t = T … 1; the estimate: L_0, its timesteps, then its
terms in turn), so every figure is the same at any batch size and ``max_batch``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..diffusion import Model, PredictionConfig, p_mean_variance, q_sample
from ..losses import DecoderType, prior_kl, vlb_term
from ..rng import CounterNoise, Generators
from ..schedules import NoiseSchedule

_LOG2 = math.log(2.0)


class Bound(NamedTuple):
    """Per-example terms in nats; ``terms[:, t−1]`` is L_{t−1}, so column 0 is the decoder L_0.

    ``sq_err[:, t−1]`` is the mean squared error of x̂_0(x_t, t) against x_0 in the model's
    [−1, 1] range (the distortion of §4.3 at step t), when it was computed.
    """

    prior: torch.Tensor  # (B,) L_T
    terms: torch.Tensor  # (B, T)
    num_dims: int
    sq_err: torch.Tensor | None = None  # (B, T)

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
        return (self.total if nats is None else nats) / (self.num_dims * _LOG2)

    def rate(self) -> torch.Tensor:
        """(B, T): column t−1 holds the bits/dim sent once the receiver has x_t,
        L_T + Σ_{s=t+1}^{T} L_{s−1} (progressive coding, Ho et al. 2020 Algorithm 3)."""
        later = torch.flip(torch.cumsum(torch.flip(self.terms, [1]), 1), [1]) - self.terms  # Σ_{j ≥ t} L_j
        return (self.prior[:, None] + later) / (self.num_dims * _LOG2)


def _noise(x0_rep: torch.Tensor, B: int, generator: Generators) -> torch.Tensor | None:
    """ε for k stacked copies of a batch of B images (t-major): from a CounterNoise, one draw per
    copy in turn, each image's own; otherwise None (q_sample draws it from the generator)."""
    if not isinstance(generator, CounterNoise):
        return None
    return torch.cat([generator.randn((B, *x0_rep.shape[1:]), x0_rep.dtype, x0_rep.device)
                      for _ in range(x0_rep.shape[0] // B)])


def _terms_at(model: Model, schedule: NoiseSchedule, x0: torch.Tensor, ts: list[int],
              prediction: PredictionConfig, decoder: DecoderType,
              generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
    """L_{t−1} and the x̂_0 squared error for every image at each t of ``ts``, in one network call."""
    B, k = x0.shape[0], len(ts)
    x0_rep = x0.repeat(k, *([1] * (x0.dim() - 1)))  # (k·B, ...), t-major
    t_batch = torch.tensor(ts, dtype=torch.long, device=x0.device).repeat_interleave(B)
    xt = q_sample(schedule, x0_rep, t_batch, _noise(x0_rep, B, generator), generator)
    out = model(xt, t_batch)
    term = vlb_term(model, schedule, x0_rep, xt, t_batch, prediction, decoder, model_output=out)
    pred_x0 = p_mean_variance(model, schedule, xt, t_batch, prediction, model_output=out).pred_x0
    err = (pred_x0 - x0_rep).pow(2).flatten(1).mean(1)
    return term.double().view(k, B).T, err.double().view(k, B).T  # (B, k) each


@torch.no_grad()
def variational_bound(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: PredictionConfig = PredictionConfig(),
    decoder: DecoderType = "discretized",
    generator: Generators = None,
    max_batch: int | None = None,
) -> Bound:
    """Every term of the bound for a batch x_0, each L_{t−1} from one draw x_t ~ q(x_t|x_0).

    ``max_batch`` (default: the batch itself) lets one network call cover several timesteps
    when the batch of images is small, so the network, not the loop, sets the time.
    """
    B, T = x0.shape[0], schedule.T
    per_call = max(1, (max_batch or B) // B)
    terms = torch.zeros(B, T, dtype=torch.float64, device=x0.device)
    sq_err = torch.zeros(B, T, dtype=torch.float64, device=x0.device)
    for hi in range(T, 0, -per_call):
        ts = list(range(hi, max(hi - per_call, 0), -1))
        term, err = _terms_at(model, schedule, x0, ts, prediction, decoder, generator)
        idx = torch.tensor(ts, device=x0.device) - 1
        terms[:, idx], sq_err[:, idx] = term, err
    return Bound(prior_kl(schedule, x0).double(), terms, x0[0].numel(), sq_err)


class BoundEstimate(NamedTuple):
    """Per-example unbiased estimates (nats) from ``num_timesteps`` random L_{t−1}, t ∈ 2..T."""

    prior: torch.Tensor  # (B,) L_T, exact
    decoder: torch.Tensor  # (B,) L_0, one draw of x_1
    diffusion: torch.Tensor  # (B,) (T − 1)·mean of the sampled L_{t−1}
    num_dims: int
    network_evaluations: int  # per image

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.decoder + self.diffusion

    def bits_per_dim(self) -> torch.Tensor:
        return self.total / (self.num_dims * _LOG2)


@torch.no_grad()
def bound_estimate(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    num_timesteps: int,
    prediction: PredictionConfig = PredictionConfig(),
    decoder: DecoderType = "discretized",
    generator: Generators = None,
    max_batch: int | None = None,
) -> BoundEstimate:
    """The bound with Σ_{t=2}^{T} L_{t−1} replaced by (T − 1) times the mean of K terms at
    t drawn uniformly from 2..T (with replacement, independently per image): unbiased, with
    K + 1 network evaluations per image instead of T."""
    B, T = x0.shape[0], schedule.T
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    decoder_term, _ = _terms_at(model, schedule, x0, [1], prediction, decoder, generator)
    if T == 1:
        diffusion = torch.zeros(B, dtype=torch.float64, device=x0.device)
    else:
        t = _uniform_timesteps(generator, num_timesteps, B, T, x0.device)
        rows = max(1, (max_batch or B) // B)  # rows of t per network call
        terms = []
        for k in range(0, num_timesteps, rows):
            t_flat = t[k:k + rows].reshape(-1)
            x0_rep = x0.repeat(t_flat.shape[0] // B, *([1] * (x0.dim() - 1)))
            xt = q_sample(schedule, x0_rep, t_flat, _noise(x0_rep, B, generator), generator)
            terms.append(vlb_term(model, schedule, x0_rep, xt, t_flat, prediction, decoder).double().view(-1, B))
        diffusion = (T - 1) * torch.cat(terms).mean(0)
    return BoundEstimate(prior_kl(schedule, x0).double(), decoder_term[:, 0], diffusion, x0[0].numel(),
                         num_timesteps + 1)


def _uniform_timesteps(generator: Generators, K: int, B: int, T: int, device: torch.device) -> torch.Tensor:
    """(K, B) timesteps uniform on 2..T, independent per image: from a CounterNoise, each image's
    own draw of K normals mapped through Φ (uniform on (0, 1)); otherwise ``torch.randint``."""
    if not isinstance(generator, CounterNoise):
        return torch.randint(2, T + 1, (K, B), generator=generator, device="cpu").to(device)
    u = torch.special.ndtr(generator.randn((B, K), torch.float64, device))  # (B, K), uniform
    return (2 + (u * (T - 1)).long().clamp_(max=T - 2)).T.contiguous()
