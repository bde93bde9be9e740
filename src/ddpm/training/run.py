"""The one run driver: a resumable training run of any kind of data (points or images).

It wires the kind's network and training data to the loop (trainer.py), the log (log.py), the
stopping rules (control.py) and the checkpoint schema (ddpm.checkpoint). Randomness is derived
from (seed, step): the step's generator draws the data (2-D points, image flips), t and ε;
dropout comes from the global generator seeded with (seed, step, rank); the image order from
the epoch permutation. So a run resumed from any checkpoint continues bitwise as if it had
never stopped, and every DDP process agrees on the global batch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from ..checkpoint import Checkpoint, checkpoints_of, prune
from ..config import RunConfig, differences, to_dict
from ..errors import CheckpointError, ConfigError, DDPMError
from ..files import new_folders, write_json
from ..kinds import TrainingData, drop_labels, kind_of
from ..models import size_line
from ..rng import seed_for
from . import distributed as dist
from .control import StopRequest, TimeLimit, checkpoint_due, sample_due, stop_reason
from .global_rng import global_rng_state, set_global_rng_state
from .init import initial_weights, start_from
from .log import TrainLog
from .run_directory import check_room, take_run_directory, undo_run_directory
from .trainer import TrainState, learning_rate, load_optimizer, make_train_state, optimizer_tensors, run_training


class RunResult(NamedTuple):
    checkpoint: Path | None  # the last checkpoint this process wrote (rank 0 only)
    state: TrainState


def snapshot(config: RunConfig, state: TrainState, data: TrainingData, log: TrainLog) -> Checkpoint:
    """Everything an exact resume needs, as the one checkpoint schema."""
    opt, groups = optimizer_tensors(state.optimizer)
    return Checkpoint(kind_of(config).name, state.step, config, state.model.state_dict(), state.ema.shadow,
                      state.ema.num_updates, opt, groups, global_rng_state(), data.tensors(), data.state_dict(),
                      state.timesteps.state_dict(), state.seconds, log.state_dict(), data.info())


def restore(ckpt: Checkpoint, state: TrainState, data: TrainingData) -> None:
    """Put a run back where ``ckpt`` left it; anything that does not fit is a CheckpointError."""
    try:
        state.model.load_state_dict(ckpt.model)
        load_optimizer(state.optimizer, ckpt.optimizer, ckpt.optimizer_param_groups)
        state.ema.load(ckpt.ema, ckpt.ema_updates)
        if ckpt.timestep_sampler is not None:
            state.timesteps.load_state_dict(ckpt.timestep_sampler)
        data.load_state_dict(ckpt.data_position)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: cannot resume from it: {str(exc).splitlines()[0]}") from None
    state.step, state.seconds = ckpt.step, ckpt.train_seconds
    if ckpt.rng is not None:
        set_global_rng_state(ckpt.rng)


#: Settings a resumed run may change: its length and the cadence of what it writes (and how it runs: the
#: device, the time limit, --compile, --channels-last, --grad-accum keep the arithmetic, up to rounding).
MAY_CHANGE = {"steps", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every", "compile",
              "channels_last", "init", "optim.grad_accum"}  # init: a resumed run's weights come from its checkpoint


def changed_settings(old: RunConfig, new: RunConfig) -> list[str]:
    """'key: old -> new' for every setting that differs and may not change on resume. A data path
    stored relative (runs made before paths were stored absolute) is the same as its absolute form."""
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in differences(old, new) if k not in MAY_CHANGE
            and not (k in ("data", "data.path") and _same_path(a, b))]


def _same_path(a, b) -> bool:
    return isinstance(a, str) and isinstance(b, str) and os.path.abspath(a) == os.path.abspath(b)


def check_same_run(ckpt: Checkpoint, config: RunConfig, allow_changes: bool, say) -> None:
    """Refuse to resume a checkpoint without optimizer state (a CheckpointError), or one trained
    under other settings (a ConfigError listing them, unless ``allow_changes``)."""
    if not ckpt.resumable:
        raise CheckpointError(f"{ckpt.path}: holds no optimizer state, so a run cannot resume from it "
                              "(written by an import or by ddpm 0.1.0's 2-D trainer)")
    if type(ckpt.config) is not type(config):
        raise ConfigError(f"{ckpt.path}: is a {ckpt.kind} run; this command trains a {kind_of(config).name} run")
    diff = changed_settings(ckpt.config, config)
    if diff and not allow_changes:
        raise ConfigError(f"{ckpt.path} was trained with other settings ({'; '.join(diff)}); give the same ones, "
                          "train a new run into another --out, or pass --allow-changes to go on with the new ones")
    if diff:
        say(f"resuming with changed settings: {'; '.join(diff)}")


def resume(how: str, out_dir: Path, state: TrainState, data: TrainingData, config: RunConfig, say,
           allow_changes: bool = False) -> Checkpoint | None:
    """``never``; a checkpoint directory; or ``auto``: the newest checkpoint of the run that
    loads, skipping damaged ones with a message (and stopping if none does). A checkpoint of
    other settings than ``config``'s stops the run (see :func:`check_same_run`). Returns the
    checkpoint resumed from, if any."""
    if how == "never":
        return None
    if how != "auto":
        ckpt = Checkpoint.read(how)
        check_same_run(ckpt, config, allow_changes, say)
        restore(ckpt, state, data)
        say(f"resumed from {how} at step {state.step}")
        return ckpt
    candidates = checkpoints_of(out_dir)
    for path in candidates:
        try:
            ckpt = Checkpoint.read(path)
            check_same_run(ckpt, config, allow_changes, say)
            restore(ckpt, state, data)
            say(f"resumed from {path} at step {state.step}")
            return ckpt
        except CheckpointError as exc:
            say(f"skipping a damaged checkpoint: {exc}")
    if candidates:  # never train on from a half-loaded state
        raise CheckpointError(f"{out_dir}: none of its {len(candidates)} checkpoint(s) could be loaded (see above); "
                              "fix or move them, or start over with --resume never")
    return None


def train(config: RunConfig, out_dir: str | Path, resume_from: str = "auto", progress: bool = True,
          stop_at: int | None = None, time_limit: float | None = None, allow_changes: bool = False,
          device: str | None = None) -> RunResult:
    """Train (or resume) a run of ``config``'s kind into ``out_dir``, holding its lock throughout.

    ``stop_at`` ends the run early at that step, ``time_limit`` (seconds) after the first step
    that ends past it; either way with a checkpoint, and a later call resumes.
    ``allow_changes`` resumes a checkpoint trained with other settings (see :data:`MAY_CHANGE`).
    ``device``: "cpu", "cuda" or "cuda:N" (under torchrun each process takes the GPU of its
    local rank); default cuda when there is one.
    """
    fresh = resume_from == "never" or resume_from == "auto" and not checkpoints_of(out_dir)
    # --init weights that do not fit fail here, before anything is written; a resumed run does not read them
    initial = initial_weights(config.init, config) if config.init is not None and fresh else None
    device = dist.setup(device)
    lock, problem, new = None, None, []
    if dist.is_main():  # rank 0 holds the lock for all; the others learn whether it got it
        new = new_folders(Path(out_dir))
        try:
            lock = take_run_directory(Path(out_dir))
        except DDPMError as exc:
            problem = exc
    if dist.world_size() > 1 and dist.any_flag(problem is not None, device) and problem is None:
        problem = DDPMError(f"{out_dir}: rank 0 could not take the run directory (see its message)")
    if problem is not None:
        if dist.launched_by_torchrun():
            dist.teardown()
        raise problem
    try:
        return _train(config, Path(out_dir), device, resume_from, progress, stop_at, time_limit, allow_changes,
                      initial)
    except DDPMError:
        if lock is not None and new:
            undo_run_directory(Path(out_dir), new)
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(config: RunConfig, out_dir: Path, device: torch.device, resume_from: str, progress: bool,
           stop_at: int | None, time_limit: float | None, allow_changes: bool,
           initial: tuple[dict[str, torch.Tensor], int] | None = None) -> RunResult:
    kind = kind_of(config)
    main = dist.is_main()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if main else (lambda msg: None)
    data = kind.source(config).to(device)
    torch.manual_seed(seed_for(config.seed))  # the initial weights (DDP then copies rank 0's to all)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    state = make_train_state(kind.model(config).to(device, memory_format=layout), config.diffusion, config.optim)
    if dist.world_size() > 1:
        state.forward = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        state.forward = torch.compile(state.forward)
    state.autocast = torch.bfloat16 if config.precision == "bf16" else None
    if main:
        check_room(out_dir, state)
    resumed = resume(resume_from, out_dir, state, data, config, say, allow_changes)
    if resumed is None and config.init is not None:
        start_from(config.init, initial or initial_weights(config.init, config), state, config, say)
    elif resumed is not None and resumed.config.init != config.init:
        if config.init is not None:
            say(f"--init {config.init}: not used; the run resumes from its checkpoint")
        config = replace(config, init=resumed.config.init)  # where the run's weights first came from
    if main:  # only now: a refused resume leaves the run's config.json as it was
        write_json(out_dir / "config.json", to_dict(config))
        say(size_line(state.model))
    schedule = config.diffusion.make_schedule().to(device)
    log = TrainLog(out_dir, config.diffusion.T, config.log_every, main, say, start_step=state.step)
    if resumed is not None and resumed.log_window is not None:
        log.load_state_dict(resumed.log_window)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    if state.step >= end:
        say(f"already at step {state.step} of {end}; nothing to train")
    if time_limit is not None:
        say(f"training for at most {time_limit / 60:g} min (the bar's ETA is for all {end} steps); "
            "the run then stops with a checkpoint and the same command resumes it")
    last: list[Path] = []
    batch = config.optim.batch_size

    def batches(g: torch.Generator) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        g.manual_seed(seed_for(config.seed, state.step))  # this step's data draws, label dropout, t and ε
        torch.manual_seed(seed_for(config.seed, state.step, dist.rank()))  # this step's dropout
        part = dist.local_slice(batch)
        x, y = data.batch(g, part, batch)
        x = x.contiguous(memory_format=layout) if x.dim() == 4 else x
        if y is not None and config.label_dropout > 0:
            y = drop_labels(y, g, part, batch, config.label_dropout, config.model.num_classes)
        return x, batch, y

    with StopRequest() as stop:
        limit = TimeLimit(time_limit)

        def after_step(st: TrainState) -> bool:
            log.record(st.step, st.pending[-1] if st.pending else st.losses[-1],
                       learning_rate(config.optim, st.step - 1), st.last_t, st.last_example_losses)
            why = stop_reason(stop, limit)
            stopping = dist.any_flag(why is not None, device) if dist.world_size() > 1 else why is not None
            if checkpoint_due(st.step, config.checkpoint_every, end, stopping):
                st.sync()  # halts here, before writing, if a step since the last sync was not finite
                dist.check_same_weights(st.model)
                if main:
                    last.append(snapshot(config, st, data, log).write(out_dir))
                    prune(out_dir, config.keep_checkpoints)
                dist.barrier()
            if sample_due(st.step, config.sample_every):
                st.sync()  # on every process, so that all halt at the same step
                if main:
                    _sample_picture(config, st, data, out_dir, device)
            if stopping:
                say(f"stopped by {why or 'another process'} after step {st.step}; checkpoint written")
            return stopping

        try:
            run_training(state, schedule, batches, config.diffusion, config.optim, end, torch.Generator(),
                         progress=progress, log_every=config.log_every, after_step=after_step)
        finally:
            log.close()
            if dist.launched_by_torchrun():
                dist.teardown()
    return RunResult(last[-1] if last else None, state)


def _sample_picture(config: RunConfig, state: TrainState, data: TrainingData, out_dir: Path,
                    device: torch.device) -> None:
    """16 samples of the EMA weights through the one generation path, as ``samples/step_N.png``."""
    from ..api import Loaded
    from ..generation import generate
    from ..outputs import save_picture

    kind = kind_of(config)
    loaded = Loaded.of(config, kind.name, state.ema.shadow, data.tensors(), state.step).to(device)
    samples = generate(loaded, 16, seed=config.seed, batch_size=16, device=device)
    (out_dir / "samples").mkdir(exist_ok=True)
    save_picture(loaded, samples.data, out_dir / "samples" / f"step_{state.step:09d}.png", f"step {state.step}")
