"""Exponential moving average of the weights (Ho et al. 2020 §4: decay 0.9999)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """θ_ema ← d θ_ema + (1 − d) θ, kept in float32 whatever the model's dtype.

    With ``warmup`` the decay at update n is min(decay, (1 + n)/(10 + n)), so that short runs
    are not dominated by the random initialisation; it reaches 0.9999 after ~90k updates, so a
    paper-length run (800k steps) is essentially unchanged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        shadow, current = [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                shadow.append(self.shadow[k])
                current.append(v.detach().float())
            else:
                self.shadow[k].copy_(v)
        if shadow:
            torch._foreach_lerp_(shadow, current, 1.0 - d)  # one call for all tensors, as lerp_ each
        self.num_updates += 1

    def load(self, tensors: dict[str, torch.Tensor], num_updates: int) -> None:
        """Take saved shadow weights, placed where the current ones live (a checkpoint is read on
        the CPU; the run may be on a GPU) and kept in float32."""
        if set(tensors) != set(self.shadow):
            raise ValueError("the saved EMA weights have other names than the model's")
        for k, v in tensors.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA weight {k}: saved shape {tuple(v.shape)}, model {tuple(self.shadow[k].shape)}")
        # a copy always: shadow tensors that were the model's own would follow it, an EMA of nothing
        self.shadow = {k: v.to(device=self.shadow[k].device, dtype=self.shadow[k].dtype, copy=True)
                       for k, v in tensors.items()}
        self.num_updates = int(num_updates)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
