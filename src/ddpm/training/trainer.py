"""The training loop of Ho et al. (2020) Algorithm 1, for any data and network.

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, …, T});  ε ~ N(0, I)
        gradient step on ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²
    until converged
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..config import DiffusionConfig, OptimConfig
from ..errors import DDPMError
from ..losses import training_loss
from ..schedules import NoiseSchedule
from .ema import EMA
from .timestep_sampler import TimestepSampler


class TrainingHalted(DDPMError):
    """A non-finite loss or gradient stopped training before the optimizer step."""


@dataclass
class TrainState:
    """Everything the loop updates; ``losses`` holds the mean loss of each step."""

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    timesteps: TimestepSampler
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def make_train_state(model: nn.Module, diffusion: DiffusionConfig, optim: OptimConfig) -> TrainState:
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr)
    return TrainState(model, EMA(model, optim.ema_decay, optim.ema_warmup), optimizer,
                      TimestepSampler(diffusion.T, diffusion.timestep_sampler))


def learning_rate(optim: OptimConfig, step: int) -> float:
    """Linear warm-up over ``optim.warmup`` steps, then constant (Ho et al. §4)."""
    if optim.warmup == 0:
        return optim.lr
    return optim.lr * min(1.0, (step + 1) / optim.warmup)


def train_step(
    state: TrainState,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    diffusion: DiffusionConfig,
    optim: OptimConfig,
    generator: torch.Generator,
) -> float:
    """One gradient step; raises :class:`TrainingHalted` before stepping on NaN/inf."""
    model, opt = state.model, state.optimizer
    model.train()
    draw = state.timesteps.sample(x0.shape[0], generator, device=x0.device)
    out = training_loss(model, schedule, x0, draw.t, diffusion.prediction(), diffusion.loss_config(), generator=generator)
    loss = (out.loss * draw.weights).mean()
    step = state.step + 1
    if not torch.isfinite(loss):
        raise TrainingHalted(f"step {step}: the loss is {loss.item()}; training halted before the optimizer step")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = optim.grad_clip if optim.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if not torch.isfinite(grad_norm):
        raise TrainingHalted(f"step {step}: the gradient norm is {grad_norm.item()}; training halted before the optimizer step")
    for group in opt.param_groups:
        group["lr"] = learning_rate(optim, state.step)
    opt.step()
    state.ema.update(model)
    state.timesteps.update(draw.t, out.loss)
    state.step = step
    value = loss.item()
    state.losses.append(value)
    return value


def run_training(
    state: TrainState,
    schedule: NoiseSchedule,
    batches: Callable[[torch.Generator], torch.Tensor],
    diffusion: DiffusionConfig,
    optim: OptimConfig,
    steps: int,
    generator: torch.Generator,
    progress: bool = True,
    log_every: int = 100,
) -> TrainState:
    """Run ``steps`` steps, drawing x_0 from ``batches(generator)``; a progress bar shows loss and steps/s."""
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, disable=not progress, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
    start, window = time.perf_counter(), []
    try:
        for _ in range(steps):
            window.append(train_step(state, schedule, batches(generator), diffusion, optim, generator))
            bar.update(1)
            if len(window) == log_every or state.step == steps:
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", lr=f"{learning_rate(optim, state.step - 1):.2e}")
                window = []
    finally:
        bar.close()
        state.seconds += time.perf_counter() - start
    return state
