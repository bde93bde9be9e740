"""2-D data end to end: train an MLP denoiser, save it, load it, sample from it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import PointsTrainConfig, to_dict
from .data.toy2d import PointData, Standardizer, load_points
from .errors import CheckpointError, DataError
from .models.mlp import MLP
from .samplers.ancestral import SamplerStep
from .samplers.spec import SamplerSpec
from .schedules import NoiseSchedule
from .training.checkpoint import save_checkpoint, write_json
from .training.trainer import make_train_state, run_training

REFERENCE_POINTS = 4000  # data points kept in the checkpoint for plots and metrics


@dataclass
class PointsModel:
    """A trained 2-D model: ``model(x_t, t)`` works on standardised points."""

    model: MLP
    schedule: NoiseSchedule
    config: PointsTrainConfig
    standardizer: Standardizer
    reference: torch.Tensor  # (N, 2) data points in their own scale
    step: int
    path: Path


def train_points(config: PointsTrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Train on ``config.data`` and write a checkpoint under ``out_dir``; return its directory."""
    data = load_points(config.data)
    standardizer = data.fit_standardizer()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    schedule = config.diffusion.make_schedule()
    model = MLP(config.model)
    state = make_train_state(model, config.diffusion, config.optim)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", to_dict(config))

    def batches(g: torch.Generator) -> torch.Tensor:
        return standardizer.forward(data.sample(config.optim.batch_size, g)).float()  # (B, 2)

    run_training(state, schedule, batches, config.diffusion, config.optim, config.steps, generator,
                 progress=progress, log_every=config.log_every)
    reference = _reference_points(data)
    tensors = {
        "model": model.state_dict(),
        "ema": state.ema.shadow,
        "data": {"mean": standardizer.mean, "std": standardizer.std, "reference": reference},
    }
    meta = {
        "config": to_dict(config),
        "kind": "points",
        "data_name": data.name,
        "ema_updates": state.ema.num_updates,
        "train_seconds": state.seconds,
        "final_loss": float(np.mean(state.losses[-config.log_every:])) if state.losses else None,
        "timestep_sampler": state.timesteps.state_dict() if config.diffusion.timestep_sampler != "uniform" else None,
    }
    ckpt = save_checkpoint(out_dir, state.step, tensors, meta)
    np.savetxt(out_dir / "losses.csv", np.asarray(state.losses), delimiter=",", header="loss", comments="")
    return ckpt


def _reference_points(data: PointData) -> torch.Tensor:
    if data.points is not None and data.points.shape[0] <= REFERENCE_POINTS:
        return data.points.clone()
    return data.sample(REFERENCE_POINTS, torch.Generator().manual_seed(12345))


def load_points_model(path: str | Path, use_ema: bool = True) -> PointsModel:
    """Load a checkpoint written by :func:`train_points` (a run or checkpoint directory)."""
    from .api import load

    loaded = load(path, use_ema=use_ema)
    if loaded.kind != "points":
        raise CheckpointError(f"{loaded.path}: not a 2-D points checkpoint (kind {loaded.kind!r})")
    d = loaded.extras.get("data")
    if d is None or not {"mean", "std", "reference"} <= set(d):
        raise CheckpointError(f"{loaded.path}: data.safetensors is missing or lacks mean, std, reference")
    return PointsModel(loaded.model, loaded.schedule, loaded.config, Standardizer(d["mean"], d["std"]),
                       d["reference"], loaded.step, loaded.path)


@dataclass
class PointSamples:
    samples: np.ndarray  # (N, 2) in the data's own scale
    trajectory: dict[int, np.ndarray]  # t -> (N, 2) x_t in the data's scale, t = T … 0
    seconds: float


def sample_points(loaded: PointsModel, n: int, seed: int, keep_t: list[int] | None = None,
                  progress: bool = False, sampler: SamplerSpec = SamplerSpec()) -> PointSamples:
    """Draw n points (Algorithm 2 unless ``sampler`` says otherwise) from N(0, I); keep x_t at
    those of the timesteps ``keep_t`` that the sampler visits."""
    if n < 1:
        raise DataError(f"the number of samples must be >= 1, got {n}")
    from tqdm.auto import tqdm

    T = loaded.schedule.T
    states = sampler.timesteps_for(T) + [0]  # the timesteps x passes through
    if keep_t is None:  # the visited timesteps nearest to T, 3T/4, …, 0
        keep_t = [min(states, key=lambda v: abs(v - t)) for t in strip_timesteps(T)]
    keep = set(keep_t)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, loaded.config.model.data_dim, generator=g)  # (N, 2)
    trajectory = {states[0]: loaded.standardizer.inverse(x_T).numpy()} if states[0] in keep else {}
    bar = tqdm(total=len(states) - 1, disable=not progress, desc="sample", unit="step", dynamic_ncols=True, mininterval=1.0)

    def record(step: SamplerStep) -> None:
        bar.update(1)
        if step.t_next in keep:
            trajectory[step.t_next] = loaded.standardizer.inverse(step.x).numpy()

    start = time.perf_counter()
    x0 = x_T
    with torch.no_grad():
        for step in sampler.steps_iter(loaded.model, loaded.schedule, x_T, loaded.config.diffusion.prediction(), g):
            x0 = step.x
            record(step)
    bar.close()
    return PointSamples(loaded.standardizer.inverse(x0).numpy(), trajectory, time.perf_counter() - start)


def strip_timesteps(T: int) -> list[int]:
    """T, 3T/4, T/2, T/4, T/10, T/40 and 0 (deduplicated, decreasing)."""
    fracs = [1.0, 0.75, 0.5, 0.25, 0.1, 0.025, 0.0]
    return sorted({int(round(f * T)) for f in fracs}, reverse=True)
