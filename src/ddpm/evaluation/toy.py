"""Distances between two sets of points, for 2-D sample quality."""

from __future__ import annotations

import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """SW_2: the root mean over random unit directions θ of W_2²(θᵀx, θᵀy).

    For sets of equal size W_2 on a line pairs the sorted projections; unequal sets are
    compared through matching quantiles.
    """
    x, y = x.double(), y.double()
    theta = torch.randn(num_projections, x.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)  # (P, D)
    px, _ = torch.sort(x @ theta.T, dim=0)  # (N, P)
    py, _ = torch.sort(y @ theta.T, dim=0)  # (M, P)
    if px.shape[0] != py.shape[0]:
        q = torch.linspace(0, 1, max(px.shape[0], py.shape[0]), dtype=torch.float64)
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """D² = 2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ (Székely & Rizzo), V-statistic form."""
    x, y = x.double(), y.double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)
