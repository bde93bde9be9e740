"""The exact optimal ε-predictor for data drawn from a Gaussian mixture.

For x_0 ~ Σ_k π_k N(m_k, S_k) and x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, each component gives
x_t | k ~ N(a m_k, a² S_k + s² I) with a = √ᾱ_t, s = √(1−ᾱ_t), and
E[x_0 | x_t, k] = m_k + a S_k (a² S_k + s² I)⁻¹ (x_t − a m_k). Mixing these by the posterior
responsibilities gives E[x_0 | x_t], and ε* = (x_t − a E[x_0|x_t]) / s minimises L_simple.
No training is needed, so samplers can be tested against the known data distribution.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianMixtureDenoiser(nn.Module):
    """ε*(x_t, t) for a Gaussian mixture; called as ``model(x_t, t)`` with the paper's t."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor, alpha_bar: torch.Tensor):
        super().__init__()
        self.register_buffer("log_weights", torch.log(torch.as_tensor(weights, dtype=torch.float64)))  # (K,)
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float64))  # (K, D)
        self.register_buffer("covariances", torch.as_tensor(covariances, dtype=torch.float64))  # (K, D, D)
        self.register_buffer("alpha_bar", torch.as_tensor(alpha_bar, dtype=torch.float64))  # (T+1,)

    def posterior_mean_x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] for a (B, D) batch, in float64."""
        x = x.double()
        a = self.alpha_bar[t.long()].sqrt()[:, None, None, None]  # (B, 1, 1, 1)
        s2 = (1.0 - self.alpha_bar[t.long()])[:, None, None, None]
        D = x.shape[1]
        eye = torch.eye(D, dtype=torch.float64, device=x.device)
        cov_t = a**2 * self.covariances[None] + s2 * eye  # (B, K, D, D)
        diff = x[:, None, :] - a[..., 0] * self.means[None]  # (B, K, D)
        chol = torch.linalg.cholesky(cov_t)  # (B, K, D, D)
        sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]  # (B, K, D) = C⁻¹ (x − a m)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B, K)
        log_norm = -0.5 * ((diff * sol).sum(-1) + logdet + D * math.log(2 * math.pi))  # (B, K)
        resp = torch.softmax(self.log_weights[None] + log_norm, dim=1)  # (B, K)
        cond = self.means[None] + a[..., 0] * (self.covariances[None] @ sol[..., None])[..., 0]  # (B, K, D)
        return (resp[..., None] * cond).sum(1)  # (B, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = self.posterior_mean_x0(x, t)
        a = self.alpha_bar[t.long()].sqrt()[:, None]
        s = (1.0 - self.alpha_bar[t.long()]).sqrt()[:, None]
        return ((x.double() - a * x0) / s).to(x.dtype)  # (B, D)


class ConditionalMixtureDenoiser(nn.Module):
    """The exact ε* of a Gaussian mixture whose components are classes: ``model(x_t, t, y)`` is
    component y's ε* for y < K and the whole mixture's for y = K ("no class"), as a perfectly
    trained class-conditional network with label dropout would be."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor, alpha_bar: torch.Tensor):
        super().__init__()
        one = torch.ones(1, dtype=torch.float64)
        self.classes = nn.ModuleList(GaussianMixtureDenoiser(one, means[k:k + 1], covariances[k:k + 1], alpha_bar)
                                     for k in range(means.shape[0]))
        self.unconditional = GaussianMixtureDenoiser(weights, means, covariances, alpha_bar)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return self.unconditional(x, t)
        outs = torch.stack([m(x, t) for m in self.classes] + [self.unconditional(x, t)])  # (K + 1, B, D)
        return outs[y.long(), torch.arange(x.shape[0])]  # (B, D)
