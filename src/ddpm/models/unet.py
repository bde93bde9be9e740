"""The U-Net of Ho et al. (2020) §4 and Appendix B (a PixelCNN++ backbone, Salimans et al. 2017).

Wide-ResNet blocks with GroupNorm(32) and swish, the timestep embedding added in every block,
dropout, self-attention at chosen resolutions, ``num_res_blocks`` blocks per level on the way
down and one more on the way up, channel multipliers per level. The CIFAR-10 configuration
(ch 128, mult (1, 2, 2, 2), attention at 16×16) has 35.7M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .embeddings import add_class, class_embedding, timestep_embedding


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32
    in_channels: int = 3
    out_channels: int = 3  # doubled when the variance is learned
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    num_classes: int = 0  # > 0: class-conditional, with one more "no class" id (Ho & Salimans 2022)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        for key in ("image_size", "in_channels", "out_channels", "ch", "num_res_blocks", "num_groups"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"UNetConfig.{key} must be >= 1, got {getattr(self, key)!r}")
        if int(self.num_classes) < 0:
            raise ConfigError(f"UNetConfig.num_classes must be >= 0, got {self.num_classes!r}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ConfigError(f"UNetConfig.ch_mult must be positive integers, got {self.ch_mult!r}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ConfigError(
                f"UNetConfig.image_size {self.image_size} must be divisible by 2^{len(self.ch_mult) - 1} "
                f"for {len(self.ch_mult)} levels"
            )
        sizes = [self.image_size // 2**level for level in range(len(self.ch_mult))]
        stray = [r for r in self.attn_resolutions if r not in sizes]
        if stray:  # the network would silently have no attention there
            raise ConfigError(f"UNetConfig.attn_resolutions: attention at {', '.join(map(str, stray))}, but the feature "
                              f"maps are {', '.join(map(str, sizes))} (put attention at some of these, or at none)")
        for m in self.ch_mult:
            if (self.ch * m) % self.num_groups:
                raise ConfigError(f"UNetConfig: channels {self.ch * m} are not divisible by {self.num_groups} groups")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"UNetConfig.dropout must lie in [0, 1), got {self.dropout!r}")


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer (the authors' init_scale 1e-10 on the last layer of each branch)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, H, W)
        h = h + self.temb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)  # 3 × (B, HW, C)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        return x + self.proj_out(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # the authors' asymmetric "SAME" padding


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_t, t) for images; called as ``model(x_t, t)`` with the paper's t ∈ {1, …, T}.

    The sinusoidal embedding is fed t − 1, the zero-based index of the authors' code (and of
    diffusers' checkpoints); this is the only place the mapping happens.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = c = config
        temb = 4 * c.ch
        self.temb = nn.Sequential(nn.Linear(c.ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.class_emb = class_embedding(c.num_classes, temb)  # added to the timestep's, as in diffusers
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        chans, cur, res = [c.ch], c.ch, c.image_size
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.num_res_blocks):
                self.down.append(self._level_block(cur, c.ch * mult, res))
                cur = c.ch * mult
                chans.append(cur)
            if level != len(c.ch_mult) - 1:
                self.down.append(Downsample(cur))
                chans.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, c.dropout, c.num_groups), AttnBlock(cur, c.num_groups),
                                  ResBlock(cur, cur, temb, c.dropout, c.num_groups)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.ch_mult))):
            for _ in range(c.num_res_blocks + 1):
                self.up.append(self._level_block(cur + chans.pop(), c.ch * mult, res))
                cur = c.ch * mult
            if level != 0:
                self.up.append(Upsample(cur))
                res *= 2
        self.norm_out = nn.GroupNorm(c.num_groups, cur, eps=1e-6)
        self.conv_out = _zero(nn.Conv2d(cur, c.out_channels, 3, padding=1))

    def _level_block(self, cin: int, cout: int, res: int) -> nn.ModuleList:
        c = self.config
        block = nn.ModuleList([ResBlock(cin, cout, 4 * c.ch, c.dropout, c.num_groups)])
        if res in c.attn_resolutions:
            block.append(AttnBlock(cout, c.num_groups))
        return block

    @staticmethod
    def _run(block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(block, (Downsample, Upsample)):
            return block(h)
        h = block[0](h, emb)
        return block[1](h) if len(block) > 1 else h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """ε (or the configured output) at x_t, paper t; ``y`` (B,) class ids of a conditional network."""
        emb = add_class(self.temb(timestep_embedding(t - 1, self.config.ch).to(x.dtype)), self.class_emb, y)  # (B, 4ch)
        h = self.conv_in(x)  # (B, ch, H, W)
        skips = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if not isinstance(block, Upsample):
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = self._run(block, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
