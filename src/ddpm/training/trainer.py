"""The training loop of Ho et al. (2020) Algorithm 1, for any data and network.

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, …, T});  ε ~ N(0, I)
        gradient step on ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²
    until converged

Randomness: every process draws the whole global batch's t from the step's generator and keeps
its own slice; ε of example j is counter-based noise keyed by (the step's seed, j), drawn on the
device for this process's examples only. So N processes and one process at the same global
batch see the same examples with the same noise.

Nothing in a step waits for the device: the loss stays a device tensor, and a non-finite loss or
gradient is recorded on the device (:class:`Health`) and read at the next :meth:`TrainState.sync`
— every ``log_every`` steps, and before anything is saved — which halts the run naming the
first bad step; nothing after the step before it is ever saved.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..config import DiffusionConfig, OptimConfig
from ..errors import ConfigError, DDPMError
from ..rng import CounterNoise, seed_for, to_device
from ..losses import training_loss
from ..schedules import NoiseSchedule
from . import distributed as dist
from .ema import EMA
from .timestep_sampler import TimestepSampler


class TrainingHalted(DDPMError):
    """A non-finite loss or gradient stopped training; nothing after the step before it is saved."""


class Health:
    """The first step whose loss or gradient norm was not finite, kept on the device so that no
    step waits for it; :meth:`check` reads it (one wait) and raises."""

    def __init__(self) -> None:
        self.first: torch.Tensor | None = None  # (3,) float64: step (0: none yet), loss, gradient norm

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        if dist.world_size() > 1:  # the same verdict on every process (asynchronous on the device)
            bad = dist.all_reduce_max(bad.to(torch.float32)) > 0
        now = torch.stack([torch.full_like(loss, step, dtype=torch.float64), loss.detach().double(),
                           grad_norm.detach().double()])
        if self.first is None:
            self.first = torch.zeros(3, dtype=torch.float64, device=loss.device)
        self.first = torch.where((self.first[0] == 0) & bad, now, self.first)

    def check(self) -> None:
        if self.first is None:
            return
        step, loss, grad_norm = self.first.tolist()
        if step:
            what = f"the loss is not finite ({loss})" if not math.isfinite(loss) else \
                f"the gradient norm is {grad_norm}"
            raise TrainingHalted(f"step {int(step)}: {what}; training halted, nothing after step "
                                 f"{int(step) - 1} is saved")


@dataclass
class TrainState:
    """Everything the loop updates; ``losses`` holds the mean loss of each step up to the last
    :meth:`sync`, ``pending`` the later ones (device tensors)."""

    model: nn.Module  # the bare network (EMA and checkpoints use it)
    ema: EMA
    optimizer: torch.optim.Optimizer
    timesteps: TimestepSampler
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    forward: nn.Module | None = None  # what the loss calls: the model, or its DDP wrapper
    last_t: torch.Tensor | None = None  # the global batch's t at the last step
    last_example_losses: torch.Tensor | None = None  # and its per-example losses
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16: the forward pass runs under autocast
    pending: list[torch.Tensor] = field(default_factory=list)
    health: Health = field(default_factory=Health)

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

    def sync(self) -> None:
        """Wait for the device once: halt on a non-finite step, move the pending losses to ``losses``."""
        self.health.check()
        if self.pending:
            self.losses.extend(torch.stack(self.pending).tolist())
            self.pending = []


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    """Adam (Kingma & Ba; the paper's optimizer), fused into one kernel over all tensors where
    this torch has it for the device (CPU since torch 2.4): 2.4× faster than the default for the
    cifar10 U-Net on a 2-core CPU (benchmarks/unet_speed.py). Plain Adam otherwise; the
    arithmetic is Adam's either way."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's state as flat tensors ("<param index>.<name>") and its param groups (JSON)."""
    sd = opt.state_dict()
    return {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of :func:`optimizer_tensors`. How the step is computed (fused, foreach, …) stays
    this process's choice, not the checkpoint's."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    impl = ("fused", "foreach", "capturable", "differentiable")
    groups = [{**g, **{k: cur[k] for k in impl if k in cur}} for g, cur in zip(groups, opt.param_groups)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def make_train_state(model: nn.Module, diffusion: DiffusionConfig, optim: OptimConfig) -> TrainState:
    share = optim.batch_size // dist.world_size()
    if optim.grad_accum > share:  # every process refuses, before a run writes anything
        raise ConfigError(f"grad_accum {optim.grad_accum}: more micro-batches than the {share} examples each of "
                          f"the {dist.world_size()} processes takes of the batch {optim.batch_size}")
    optimizer = make_optimizer(model.parameters(), optim.lr)
    return TrainState(model, EMA(model, optim.ema_decay, optim.ema_warmup), optimizer,
                      TimestepSampler(diffusion.T, diffusion.timestep_sampler))


def learning_rate(optim: OptimConfig, step: int) -> float:
    """Linear warm-up over ``optim.warmup`` steps, then constant (Ho et al. §4): update ``step``
    (0 for the first) takes lr·(step + 1)/warmup. The authors' ``get_warmed_up_lr`` takes
    lr·global_step/warmup, so their first update has learning rate 0 (it only fills Adam's moments)
    and each later one the rate ours had a step before: one step of the 5,000, kept so that no
    update is spent."""
    if optim.warmup == 0:
        return optim.lr
    return optim.lr * min(1.0, (step + 1) / optim.warmup)


class Batch(NamedTuple):
    x0: torch.Tensor  # (B, ...) this process's slice of the global batch
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, ...)
    weights: torch.Tensor  # (B,) importance weights
    y: torch.Tensor | None = None  # (B,) class ids of a class-conditional run


def draw_batch(state: TrainState, x0: torch.Tensor, generator: torch.Generator,
               global_size: int | None = None, y: torch.Tensor | None = None) -> Batch:
    """t and ε for the global batch from ``generator``; keep this process's slice.

    ``x0`` is the global batch, or with ``global_size`` this process's slice of it already
    (so that each process reads only its own images); the draws are the same either way.
    """
    n = x0.shape[0] if global_size is None else global_size
    draw = state.timesteps.sample(n, generator)
    part = dist.local_slice(n)
    if global_size is None:
        x0 = x0[part]
    elif x0.shape[0] != part.stop - part.start:
        raise ValueError(f"got {x0.shape[0]} images for this process's share of {n}, expected {part.stop - part.start}")
    device = next(state.model.parameters()).device
    noise = CounterNoise(seed_for(generator.initial_seed(), 1), range(part.start, part.stop))
    eps = noise.randn(x0.shape, x0.dtype, device)  # example j's ε, made on the device
    return Batch(to_device(x0, device), to_device(draw.t[part], device), eps, to_device(draw.weights[part], device),
                 to_device(y, device) if y is not None else None)


def micro_batches(batch: Batch, k: int) -> list[Batch]:
    """``batch`` cut into ``k`` consecutive parts (sizes differing by at most one), each example
    with the t, ε, weight and label drawn for it in the whole batch."""
    n = batch.x0.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"grad_accum {k}: more micro-batches than the {n} examples of this process's batch")
    bounds = [n * i // k for i in range(k + 1)]
    return [Batch(*(None if v is None else v[a:b] for v in batch)) for a, b in zip(bounds, bounds[1:])]


def _backward(state: TrainState, schedule: NoiseSchedule, part: Batch, diffusion: DiffusionConfig, share: float,
              last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one micro-batch holding ``share`` of the batch; DDP's gradient
    all-reduce waits for the ``last`` one. Returns (its part of the mean loss, per-example losses)."""
    forward = state.forward if part.y is None else (lambda x, t: state.forward(x, t, part.y))
    hold = state.forward.no_sync() if not last and hasattr(state.forward, "no_sync") else contextlib.nullcontext()
    with hold:
        with torch.autocast(part.x0.device.type, dtype=state.autocast or torch.bfloat16,
                            enabled=state.autocast is not None):
            out = training_loss(forward, schedule, part.x0, part.t, diffusion.prediction(),
                                diffusion.loss_config(), noise=part.noise)
        loss = (out.loss * part.weights).mean()
        loss = loss * share if share != 1.0 else loss  # one micro-batch: the graph exactly as it always was
        loss.backward()
    return loss.detach(), out.loss.detach()


def train_step(state: TrainState, schedule: NoiseSchedule, batch: Batch, diffusion: DiffusionConfig,
               optim: OptimConfig) -> torch.Tensor:
    """One gradient step; returns the mean loss (a device tensor; the step does not wait for it).
    A non-finite loss or gradient is recorded in ``state.health`` for the next sync. With
    ``optim.grad_accum`` = K the batch's gradient is summed over K micro-batches, each weighted by
    its share of the batch: the same step in about 1/K of the activation memory."""
    state.forward.train()
    parts = micro_batches(batch, optim.grad_accum)
    state.optimizer.zero_grad(set_to_none=True)
    n, losses, examples = batch.x0.shape[0], [], []
    for i, part in enumerate(parts):
        loss, per_example = _backward(state, schedule, part, diffusion, part.x0.shape[0] / n, i == len(parts) - 1)
        losses.append(loss)
        examples.append(per_example)
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
    step = state.step + 1
    params = [p for p in state.model.parameters() if p.grad is not None]
    max_norm = optim.grad_clip if optim.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    state.health.record(step, loss, grad_norm)
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(optim, state.step)
    state.optimizer.step()
    state.ema.update(state.model)
    per_example = examples[0] if len(examples) == 1 else torch.cat(examples)
    t_all, loss_all = dist.all_gather_cat(batch.t), dist.all_gather_cat(per_example)
    state.timesteps.update(t_all, loss_all)
    state.last_t, state.last_example_losses = t_all, loss_all
    state.step = step
    value = loss_all.mean() if dist.world_size() > 1 else loss
    state.pending.append(value)
    return value


def run_training(
    state: TrainState,
    schedule: NoiseSchedule,
    batches: Callable[[torch.Generator], torch.Tensor | tuple],
    diffusion: DiffusionConfig,
    optim: OptimConfig,
    steps: int,
    generator: torch.Generator,
    progress: bool = True,
    log_every: int = 100,
    after_step: Callable[[TrainState], bool] | None = None,
) -> TrainState:
    """Train until ``state.step == steps``, drawing global x_0 batches from ``batches(generator)``.

    ``after_step(state)`` runs after every step (checkpoints, logs); returning True stops early.
    On the main process a progress bar shows the loss, steps/s and the time left; when stderr is a
    file (nohup, a batch job's log) a plain line says the same every ``log_every`` steps instead.
    """
    from tqdm.auto import tqdm

    from ..progress import into_a_file

    show = progress and dist.is_main()
    lines = show and into_a_file()  # a line per log row, with the loss, instead of the bar
    bar = tqdm(total=steps, initial=state.step, disable=not show or lines, desc="train",
               unit="step", dynamic_ncols=True, mininterval=1.0)
    start, window = time.perf_counter(), 0
    since = (start, state.step)
    try:
        while state.step < steps:
            got = batches(generator)  # the global batch, or (this process's slice, the global size[, labels])
            x0, size, *labels = got if isinstance(got, tuple) else (got, None)
            batch = draw_batch(state, x0, generator, size, labels[0] if labels else None)
            train_step(state, schedule, batch, diffusion, optim)
            window += 1
            bar.update(1)
            if state.step % log_every == 0 or state.step == steps:
                state.sync()  # the one wait for the device in log_every steps
                recent = state.losses[-window:]
                loss, lr = f"{sum(recent) / len(recent):.4f}", f"{learning_rate(optim, state.step - 1):.2e}"
                bar.set_postfix(loss=loss, lr=lr)
                if lines:
                    now = time.perf_counter()
                    rate = (state.step - since[1]) / max(now - since[0], 1e-9)
                    print(f"step {state.step}/{steps}: loss {loss}, lr {lr}, {rate:.2f} steps/s, "
                          f"{tqdm.format_interval((steps - state.step) / rate)} left", file=sys.stderr, flush=True)
                    since = (now, state.step)
                window = 0
            if after_step is not None and after_step(state):
                break
        state.sync()
    finally:
        bar.close()
        state.seconds += time.perf_counter() - start
    return state
