"""A residual MLP denoiser for 2-D (or any low-dimensional) data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .embeddings import add_class, class_embedding, timestep_embedding


@dataclass(frozen=True)
class MLPConfig:
    data_dim: int = 2
    out_dim: int = 2  # data_dim, doubled when the variance is learned
    hidden: int = 128
    blocks: int = 3
    time_embed_dim: int = 64
    num_classes: int = 0  # > 0: class-conditional, with one more "no class" id

    def __post_init__(self) -> None:
        for key in ("data_dim", "out_dim", "hidden", "blocks", "time_embed_dim"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"MLPConfig.{key} must be >= 1, got {getattr(self, key)!r}")
        if int(self.num_classes) < 0:
            raise ConfigError(f"MLPConfig.num_classes must be >= 0, got {self.num_classes!r}")


class _Block(nn.Module):
    def __init__(self, hidden: int, temb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.temb = nn.Linear(temb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.fc1(nn.functional.silu(self.norm(h))) + self.temb(emb)  # (B, hidden)
        return h + self.fc2(nn.functional.silu(r))


class MLP(nn.Module):
    """ε_θ(x_t, t) for points: residual blocks with the timestep embedding added in each.

    Called as ``model(x_t, t)`` with the paper's t ∈ {1, …, T}; the sinusoidal embedding is
    fed t − 1, the authors' zero-based index (the one place this mapping happens).
    """

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        self.config = config
        c = config
        self.time_mlp = nn.Sequential(
            nn.Linear(c.time_embed_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden)
        )
        self.class_emb = class_embedding(c.num_classes, c.hidden)
        self.inp = nn.Linear(c.data_dim, c.hidden)
        self.blocks = nn.ModuleList(_Block(c.hidden, c.hidden) for _ in range(c.blocks))
        self.out = nn.Sequential(nn.LayerNorm(c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.out_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = add_class(self.time_mlp(timestep_embedding(t - 1, self.config.time_embed_dim)), self.class_emb, y)  # (B, hidden)
        h = self.inp(x)  # (B, hidden)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)  # (B, out_dim)
