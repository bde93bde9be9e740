"""The one checkpoint schema: every writer and reader of a checkpoint goes through :class:`Checkpoint`.

A run directory holds ``config.json`` and ``checkpoints/step_XXXXXXXXX/``. A checkpoint is
tensors in safetensors files (``model``, ``ema``, and where present ``optimizer``, ``rng``,
``data``) and everything else in ``state.json``; nothing is ever unpickled. Each is written
into a temporary directory, fsynced, and renamed into place only when complete, so a
directory named ``step_*`` is always whole. The layout is the one ddpm 0.1.0 wrote, so its
run directories still load (tests/data/v0.1.0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import RUN_CONFIGS, RunConfig, from_dict, to_dict
from .errors import CheckpointError, DDPMError
from .files import fsync_dir, fsync_files, read_json, write_json

PREFIX = "step_"
Tensors = dict[str, torch.Tensor]
#: state.json keys the schema reads itself; any others are kept in ``Checkpoint.info``.
_KNOWN = {"step", "kind", "config", "ema_updates", "optimizer_param_groups", "data_position", "timestep_sampler",
          "train_seconds", "rng"}


@dataclass
class Checkpoint:
    """One checkpoint of a run of any kind of data.

    ``optimizer``/``optimizer_param_groups``, ``rng`` and ``data_position`` are what an exact
    resume needs; ``data`` holds the data statistics a kind keeps (the 2-D standardiser and
    reference points); ``info`` any other facts recorded (an import's source, …).
    """

    kind: str  # "image" or "points": which entry of config.RUN_CONFIGS ``config`` is
    step: int
    config: RunConfig
    model: Tensors
    ema: Tensors
    ema_updates: int = 0
    optimizer: Tensors | None = None
    optimizer_param_groups: list[dict] | None = None
    rng: dict[str, Any] | None = None  # {"torch": ByteTensor, "python": str, "numpy": list}
    data: Tensors = field(default_factory=dict)
    data_position: dict[str, int] = field(default_factory=dict)
    timestep_sampler: dict | None = None
    train_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was read from or written to

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None and self.optimizer_param_groups is not None

    def write(self, run_dir: str | Path) -> Path:
        """Write as ``run_dir/checkpoints/step_XXXXXXXXX`` (atomically) and return that directory."""
        files = {"model": self.model, "ema": self.ema}
        meta: dict[str, Any] = {**self.info, "kind": self.kind, "config": to_dict(self.config),
                                "ema_updates": self.ema_updates, "train_seconds": self.train_seconds}
        if self.optimizer is not None:
            files["optimizer"] = self.optimizer
            meta["optimizer_param_groups"] = self.optimizer_param_groups
        if self.data:
            files["data"] = self.data
        if self.rng is not None:
            files["rng"] = {"torch": self.rng["torch"]}
            meta["rng"] = {k: v for k, v in self.rng.items() if k != "torch"}
        if self.data_position:
            meta["data_position"] = self.data_position
        if self.timestep_sampler is not None:
            meta["timestep_sampler"] = self.timestep_sampler
        self.path = _write_atomically(Path(run_dir), self.step, files, meta)
        return self.path

    @classmethod
    def read(cls, path: str | Path) -> "Checkpoint":
        """A checkpoint directory, or the newest one of a run directory; any damage or
        inconsistency is a :class:`CheckpointError` naming the file."""
        ckpt = resolve(path)
        state = read_json(ckpt / "state.json", CheckpointError)
        if not isinstance(state, dict):
            raise CheckpointError(f"{ckpt / 'state.json'}: expected a JSON object, got {type(state).__name__}")
        kind = state.get("kind")
        if kind not in RUN_CONFIGS:
            raise CheckpointError(f"{ckpt / 'state.json'}: unknown checkpoint kind {kind!r}")
        try:
            config = from_dict(RUN_CONFIGS[kind], state.get("config"), where=f"{ckpt / 'state.json'}: config")
        except DDPMError as exc:
            raise CheckpointError(str(exc)) from None
        files = {f.stem: _read_tensors(f) for f in sorted(ckpt.glob("*.safetensors"))}
        for needed in ("model", "ema"):
            if needed not in files:
                raise CheckpointError(f"{ckpt}: missing {needed}.safetensors")
        rng = None
        if "rng" in files:
            rng = {"torch": files["rng"].get("torch"), **_expect(state, "rng", dict, ckpt, {})}
        try:
            return cls(kind, int(state.get("step", 0)), config, files["model"], files["ema"],
                       int(state.get("ema_updates", 0)), files.get("optimizer"),
                       _expect(state, "optimizer_param_groups", list, ckpt, None), rng, files.get("data", {}),
                       _expect(state, "data_position", dict, ckpt, {}), _expect(state, "timestep_sampler", dict, ckpt, None),
                       float(state.get("train_seconds", 0.0)), {k: v for k, v in state.items() if k not in _KNOWN}, ckpt)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{ckpt / 'state.json'}: {exc}") from None


def _expect(state: dict, key: str, kind: type, ckpt: Path, default: Any) -> Any:
    value = state.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise CheckpointError(f"{ckpt / 'state.json'}: {key} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _read_tensors(f: Path) -> Tensors:
    try:
        return load_file(str(f))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{f}: unreadable safetensors file: {exc}") from None


def _write_atomically(run_dir: Path, step: int, files: dict[str, Tensors], meta: dict[str, Any]) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for name, group in files.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / f"{name}.safetensors"))
        write_json(tmp / "state.json", {"step": step, **meta})
        fsync_files(tmp)
        fsync_dir(tmp)
        old = None
        if final.exists():  # re-saving the same step: move the old one aside, never delete it first
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


# ---------------------------------------------------------------- run directories


def checkpoints_of(run_dir: str | Path) -> list[Path]:
    """The complete checkpoint directories of a run, newest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(root.glob(f"{PREFIX}*"), reverse=True) if root.is_dir() else []


def resolve(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete one inside a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "state.json").is_file():
        return path
    found = checkpoints_of(path)
    if not found:
        raise CheckpointError(f"{path}: holds no checkpoint (expected state.json or checkpoints/{PREFIX}*)")
    return found[0]


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run."""
    for old in checkpoints_of(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
