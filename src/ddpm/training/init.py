"""``ddpm train --init WEIGHTS``: a new run that starts from another run's weights (fine-tuning,
or training a shipped model on), with a fresh optimizer, learning-rate warm-up and step count."""

from __future__ import annotations

import torch

from ..checkpoint import Checkpoint
from ..config import RunConfig, differences
from ..errors import CheckpointError, ConfigError
from ..kinds import kind_of

#: Settings the weights' run and the new run must share: the network, and what its output means.
MUST_MATCH = ("model", "diffusion.parameterization", "diffusion.variance")


def _a_run(kind: str) -> str:
    return "an image run" if kind == "image" else "a 2-D run"


def initial_weights(source: str, config: RunConfig) -> tuple[dict[str, torch.Tensor], int]:
    """The EMA weights of ``source`` (a run, a checkpoint or ``pretrained:NAME``) and the step
    they were taken at, after checking that they fit ``config``'s network: a ConfigError names
    every setting that differs."""
    ckpt = Checkpoint.read(source, parts=("ema",))
    where = f"--init {source}"
    if type(ckpt.config) is not type(config):
        raise ConfigError(f"{where}: holds the weights of {_a_run(ckpt.kind)}; this command trains "
                          f"{_a_run(kind_of(config).name)}")
    diff = [f"{k}: {a!r} -> {b!r}" for k, a, b in differences(ckpt.config, config)
            if any(k == m or k.startswith(m + ".") for m in MUST_MATCH)]
    if diff:
        raise ConfigError(f"{where}: its network differs from this run's ({'; '.join(diff)}); give the same "
                          "preset and options it was trained with")
    return ckpt.ema, ckpt.step


def start_from(source: str, initial: tuple[dict[str, torch.Tensor], int], state, config: RunConfig, say) -> None:
    """Put ``initial``, ``source``'s weights and step as :func:`initial_weights` gives them, into the
    model and the EMA of a run at step 0. Its optimizer stays fresh; with EMA warm-up the average
    soon holds only the new run's own steps (fine-tuning), without it (--no-ema-warmup) it moves
    away from these weights at the full decay (training a model on)."""
    weights, step = initial
    try:
        state.model.load_state_dict(weights)  # copied into the model's own tensors and dtype (float16 packs too)
    except RuntimeError as exc:
        raise CheckpointError(f"--init {source}: the weights do not fit the network: "
                              f"{str(exc).strip().splitlines()[0]}") from None
    state.ema.load(state.model.state_dict(), 0)  # copied: the average starts at these weights, then moves
    ema = "its warm-up starts again" if config.optim.ema_warmup else "at full decay (--no-ema-warmup)"
    say(f"starting from the weights of {source} (its step {step}) with a new step count and optimizer; the EMA "
        f"starts at these weights, {ema}")
