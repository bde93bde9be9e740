"""Sinusoidal timestep embedding (Vaswani et al. 2017 §3.5), as Ho et al. (2020) §4 use it."""

from __future__ import annotations

import math

import torch


def timestep_embedding(index: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Embed a (B,) tensor of network time indices into (B, dim) sines and cosines.

    Layout as in the authors' code (``get_timestep_embedding``): the first half sines, the
    second half cosines, frequencies max_period^(−i/(half−1)). The networks of this package
    call it with index = t − 1 for the paper's t ∈ {1, …, T}, as the authors' code did.
    """
    half = dim // 2
    scale = math.log(max_period) / max(half - 1, 1)
    freqs = torch.exp(-scale * torch.arange(half, dtype=torch.float32, device=index.device))  # (half,)
    args = index.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, 2·half)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
