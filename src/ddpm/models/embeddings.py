"""Sinusoidal timestep embedding (Vaswani et al. 2017 §3.5), as Ho et al. (2020) §4 use it, and the
class embedding of a class-conditional network (Ho & Salimans 2022)."""

from __future__ import annotations

import math

import torch
from torch import nn


def class_embedding(num_classes: int, dim: int) -> nn.Embedding | None:
    """A learned embedding of class ids 0..num_classes−1 plus one more, id ``num_classes``, that
    means "no class" (Ho & Salimans 2022: one network, conditional and unconditional); None
    for an unconditional network (num_classes 0)."""
    return nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None


def add_class(emb: torch.Tensor, table: nn.Embedding | None, y: torch.Tensor | None) -> torch.Tensor:
    """The timestep embedding plus the class embedding of ``y`` ((B,) ids; None: no class)."""
    if table is None:
        if y is not None:
            raise ValueError("class labels given to a network trained without classes")
        return emb
    if y is None:
        y = torch.full((emb.shape[0],), table.num_embeddings - 1, dtype=torch.long, device=emb.device)
    return emb + table(y.to(emb.device).long()).to(emb.dtype)


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
