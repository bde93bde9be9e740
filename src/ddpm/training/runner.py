"""A resumable image training run: checkpoints, exact resume, halting, signals, logs, DDP.

Randomness is derived from (seed, step): the data order from the epoch permutation, t, ε and
the flips from a generator seeded with (seed, step), dropout from the global generator seeded
with (seed, step, rank). So a run resumed from any checkpoint continues bitwise as if it had
never stopped, and every process agrees on the global batch.
"""

from __future__ import annotations

import ast
import csv
import random
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..config import ImageTrainConfig, to_dict
from ..data.images import random_flip, to_model_range
from ..data.sources import EpochOrder, build_image_data, gather
from ..errors import CheckpointError
from ..models.unet import UNet
from ..rng import seed_for
from . import distributed as dist
from .checkpoint import PREFIX, load_checkpoint, save_checkpoint, write_json
from .trainer import TrainState, learning_rate, make_train_state


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    # how the step is computed (fused, foreach, ...) is this process's choice, not the checkpoint's
    impl = ("fused", "foreach", "capturable", "differentiable")
    groups = [{**g, **{k: cur[k] for k in impl if k in cur}} for g, cur in zip(groups, opt.param_groups)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_training_checkpoint(out_dir: Path, config: ImageTrainConfig, state: TrainState, order: EpochOrder) -> Path:
    opt_tensors, groups = _optimizer_tensors(state.optimizer)
    np_state = np.random.get_state()
    meta = {
        "kind": "image",
        "config": to_dict(config),
        "ema_updates": state.ema.num_updates,
        "optimizer_param_groups": groups,
        "data_position": order.state_dict(),
        "timestep_sampler": state.timesteps.state_dict(),
        "train_seconds": state.seconds,
        "rng": {  # our own randomness is derived from (seed, step); these are kept for user code
            "python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        },
    }
    tensors = {"model": state.model.state_dict(), "ema": state.ema.shadow, "optimizer": opt_tensors,
               "rng": {"torch": torch.get_rng_state()}}
    return save_checkpoint(out_dir, state.step, tensors, meta)


def restore_training_checkpoint(path: Path, state: TrainState, order: EpochOrder) -> None:
    ckpt, meta, tensors = load_checkpoint(path)
    for needed in ("model", "ema", "optimizer"):
        if needed not in tensors:
            raise CheckpointError(f"{ckpt}: missing {needed}.safetensors")
    try:
        state.model.load_state_dict(tensors["model"])
        _load_optimizer(state.optimizer, tensors["optimizer"], meta["optimizer_param_groups"])
        try:
            state.ema.load(tensors["ema"], meta["ema_updates"])
        except ValueError as exc:
            raise CheckpointError(f"{ckpt}: ema.safetensors does not fit the model: {exc}") from None
        state.timesteps.load_state_dict(meta["timestep_sampler"])
        order.load_state_dict(meta["data_position"])
        state.step = int(meta["step"])
        state.seconds = float(meta.get("train_seconds", 0.0))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt}: cannot resume from it: {str(exc).splitlines()[0]}") from None
    if "rng" in tensors:
        torch.set_rng_state(tensors["rng"]["torch"])
    rng = meta.get("rng", {})
    if "python" in rng:
        random.setstate(ast.literal_eval(rng["python"]))
    if "numpy" in rng:
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def _candidates(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    return sorted(root.glob(f"{PREFIX}*"), reverse=True) if root.is_dir() else []


def _resume(resume: str, out_dir: Path, state: TrainState, order: EpochOrder, say) -> None:
    if resume == "never":
        return
    if resume != "auto":
        restore_training_checkpoint(Path(resume), state, order)
        say(f"resumed from {resume} at step {state.step}")
        return
    candidates = _candidates(out_dir)
    for ckpt in candidates:
        try:
            restore_training_checkpoint(ckpt, state, order)
            say(f"resumed from {ckpt} at step {state.step}")
            return
        except CheckpointError as exc:
            say(f"skipping a damaged checkpoint: {exc}")
    if candidates:  # never train on from a half-loaded state
        raise CheckpointError(f"{out_dir}: none of its {len(candidates)} checkpoint(s) could be loaded (see above); "
                              "fix or move them, or start over with --resume never")


def _prune(out_dir: Path, keep: int) -> None:
    import shutil

    for old in _candidates(out_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


class _StopRequest:
    """SIGTERM / Ctrl-C finish the current step, write a checkpoint and exit."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _TrainLog:
    """Every ``every`` steps: step, loss, lr, steps/s and the loss in each quarter of the timesteps,
    as a row of ``log.csv`` and as TensorBoard scalars under ``tb/`` (where tensorboard is installed)."""

    COLUMNS = ["step", "loss", "lr", "steps_per_s", "loss_t_q1", "loss_t_q2", "loss_t_q3", "loss_t_q4"]

    def __init__(self, out_dir: Path, T: int, every: int, active: bool, say, start_step: int = 0):
        self.T, self.every, self.active = T, every, active
        self.sums, self.counts, self.losses, self.start = torch.zeros(4), torch.zeros(4), [], time.perf_counter()
        self.tb = None
        if active:
            path = out_dir / "log.csv"
            if path.exists():  # rows past the checkpoint we resume from will be written again: drop them
                rows = path.read_text().splitlines()
                kept = rows[:1] + [r for r in rows[1:] if r.split(",")[0].isdigit() and int(r.split(",")[0]) <= start_step]
                path.write_text("".join(f"{r}\n" for r in kept))
            new = not path.exists()
            self.file = open(path, "a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(self.COLUMNS)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                say("TensorBoard logs need `pip install tensorboard`; writing log.csv only")

    def record(self, state: TrainState, lr: float) -> None:
        if not self.active:
            return
        q = ((state.last_t - 1) * 4 // self.T).clamp(0, 3).cpu()
        self.sums.index_add_(0, q, state.last_example_losses.float().cpu())
        self.counts.index_add_(0, q, torch.ones_like(q, dtype=torch.float32))
        self.losses.append(state.losses[-1])
        if len(self.losses) == self.every:
            rate = self.every / (time.perf_counter() - self.start)
            quart = (self.sums / self.counts.clamp_min(1)).tolist()
            row = [state.step, float(np.mean(self.losses)), lr, rate, *quart]
            self.writer.writerow([row[0], *(f"{v:.6g}" for v in row[1:])])
            self.file.flush()
            if self.tb is not None:
                for name, value in zip(self.COLUMNS[1:], row[1:]):
                    self.tb.add_scalar(f"train/{name}", value, state.step)
                self.tb.flush()
            self.sums.zero_()
            self.counts.zero_()
            self.losses, self.start = [], time.perf_counter()

    def close(self) -> None:
        if self.active:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


class RunResult(NamedTuple):
    checkpoint: Path | None  # the last checkpoint this process wrote (rank 0 only)
    state: TrainState


def train_images(config: ImageTrainConfig, out_dir: str | Path, resume: str = "auto", progress: bool = True,
                 stop_at: int | None = None, time_limit: float | None = None) -> RunResult:
    """Train (or resume) an image model into ``out_dir``.

    ``stop_at`` ends the run early at that step, ``time_limit`` (seconds) after the first step
    that ends past it; either way with a checkpoint, and a later call resumes.
    """
    out_dir = Path(out_dir)
    device = dist.setup()
    main = dist.is_main()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if main else (lambda msg: None)
    data = build_image_data(config.data, "train", min_images=config.optim.batch_size)
    torch.manual_seed(seed_for(config.seed))  # the initial weights (DDP then copies rank 0's to all)
    model = UNet(config.model).to(device)
    state = make_train_state(model, config.diffusion, config.optim)
    if dist.world_size() > 1:
        state.forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        state.forward = torch.compile(state.forward)
    state.autocast = torch.bfloat16 if config.precision == "bf16" else None
    order = EpochOrder(len(data), config.optim.batch_size, config.seed)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", to_dict(config))
    _resume(resume, out_dir, state, order, say)
    schedule = config.diffusion.make_schedule().to(device)
    log = _TrainLog(out_dir, config.diffusion.T, config.log_every, main, say, start_step=state.step)
    last: Path | None = None
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    if state.step >= end:
        say(f"already at step {state.step} of {end}; nothing to train")

    def batches(g: torch.Generator) -> tuple[torch.Tensor, int]:
        g.manual_seed(seed_for(config.seed, state.step))  # this step's t, ε and flips
        torch.manual_seed(seed_for(config.seed, state.step, dist.rank()))  # this step's dropout
        idx = order.next()  # the global batch; each process reads only its own share of it
        part = dist.local_slice(len(idx))
        x = to_model_range(gather(data, idx[part]))  # (B / world size, C, H, W) in [-1, 1]
        if config.data.random_flip:
            x = random_flip(x, g, part, len(idx))
        return x, len(idx)

    def checkpoint() -> None:
        nonlocal last
        dist.check_same_weights(state.model)
        if main:
            last = save_training_checkpoint(out_dir, config, state, order)
            _prune(out_dir, config.keep_checkpoints)
        dist.barrier()

    started = time.monotonic()
    if time_limit is not None:
        say(f"training for at most {time_limit / 60:g} min (the bar's ETA is for all {end} steps); "
            "the run then stops with a checkpoint and the same command resumes it")
    with _StopRequest() as stop:
        def after_step(st: TrainState) -> bool:
            log.record(st, learning_rate(config.optim, st.step - 1))
            out_of_time = time_limit is not None and time.monotonic() - started > time_limit
            stopping = stop.requested or out_of_time
            stopping = dist.any_flag(stopping, device) if dist.world_size() > 1 else stopping
            if stopping or st.step % config.checkpoint_every == 0 or st.step == end:
                checkpoint()
            if main and config.sample_every and st.step % config.sample_every == 0:
                _sample_grid(config, st, out_dir, device)
            if stopping:
                why = "a signal" if stop.requested else f"the time limit of {time_limit:.0f} s"
                say(f"stopped by {why} after step {st.step}; checkpoint written")
            return stopping

        from .trainer import run_training

        try:
            run_training(state, schedule, batches, config.diffusion, config.optim, end, torch.Generator(),
                         progress=progress, log_every=config.log_every, after_step=after_step)
        finally:
            log.close()
            if dist.launched_by_torchrun():
                dist.teardown()
    return RunResult(last, state)


def _sample_grid(config: ImageTrainConfig, state: TrainState, out_dir: Path, device: torch.device) -> None:
    from ..sampling import sample_images, save_grid

    model = UNet(config.model).to(device)
    state.ema.copy_to(model)
    model.eval()
    images = sample_images(model, config.diffusion.make_schedule().to(device), config.diffusion.prediction(),
                           n=16, seed=config.seed, batch_size=16, device=device)
    (out_dir / "samples").mkdir(exist_ok=True)
    save_grid(images.images, out_dir / "samples" / f"{PREFIX}{state.step:09d}.png")
