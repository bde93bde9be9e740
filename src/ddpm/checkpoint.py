"""The one checkpoint schema: every writer and reader of a checkpoint goes through :class:`Checkpoint`.

A run directory holds ``config.json`` and ``checkpoints/step_XXXXXXXXX/``. A checkpoint is
tensors in safetensors files (``model``, ``ema``, and where present ``optimizer``, ``rng``,
``data``) and everything else in ``state.json``; nothing is ever unpickled. Each is written
into a temporary directory, fsynced, and renamed into place only when complete, so a
directory named ``step_*`` is always whole; ``state.json`` records the SHA-256 of every
tensor file, and reading verifies them, so flipped bytes are refused rather than loaded. The
layout is the one ddpm 0.1.0 wrote (without digests), so its run directories still load
(tests/data/v0.1.0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from .config import RUN_CONFIGS, RunConfig, from_dict, to_dict
from .errors import CheckpointError, DDPMError
from .files import as_umask_says, digest_bytes, digest_file, fsync_dir, fsync_files, read_json, write_json

PREFIX = "step_"
Tensors = dict[str, torch.Tensor]
#: state.json keys the schema reads itself; any others are kept in ``Checkpoint.info``.
_KNOWN = {"step", "kind", "config", "ema_updates", "optimizer_param_groups", "data_position", "timestep_sampler",
          "train_seconds", "rng", "sha256", "log_window"}
#: Names of the folders a write or a prune moves things through; a run's start removes them.
LEFTOVERS = (".tmp-*", ".old-*", ".trash-*")


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
    log_window: dict | None = None  # the training log's steps not yet written as a row
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
        if self.log_window is not None:
            meta["log_window"] = self.log_window
        self.path = _write_atomically(Path(run_dir), self.step, files, meta)
        return self.path

    @classmethod
    def read(cls, path: str | Path, parts: tuple[str, ...] | None = None) -> "Checkpoint":
        """A checkpoint directory, or the newest one of a run directory; any damage or
        inconsistency is a :class:`CheckpointError` naming the file. ``parts`` reads only those
        tensor files (e.g. ("ema", "data") to sample: not the optimizer's twice-as-large state);
        the others are left empty."""
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
        digests = _expect(state, "sha256", dict, ckpt, None)
        present = sorted(ckpt.glob("*.safetensors"))
        missing = sorted(set(digests or ()) - {f.name for f in present})
        if missing:
            raise CheckpointError(f"{ckpt}: {', '.join(missing)} recorded in state.json but missing")
        files = {f.stem: _read_tensors(f, digests) for f in present if parts is None or f.stem in parts}
        for needed in ("model", "ema"):
            if needed not in files and (parts is None or needed in parts):
                packed = needed == "model" and "packed" in state  # `ddpm pack` keeps the EMA weights alone
                raise CheckpointError(f"{ckpt}: missing {needed}.safetensors" + (
                    " (a pack holds only the EMA weights: leave out --no-ema)" if packed else ""))
        rng = None
        if "rng" in files:
            rng = {"torch": files["rng"].get("torch"), **_expect(state, "rng", dict, ckpt, {})}
        try:
            return cls(kind, int(state.get("step", 0)), config, files.get("model", {}), files.get("ema", {}),
                       int(state.get("ema_updates", 0)), files.get("optimizer"),
                       _expect(state, "optimizer_param_groups", list, ckpt, None), rng, files.get("data", {}),
                       _expect(state, "data_position", dict, ckpt, {}), _expect(state, "timestep_sampler", dict, ckpt, None),
                       float(state.get("train_seconds", 0.0)), _expect(state, "log_window", dict, ckpt, None),
                       {k: v for k, v in state.items() if k not in _KNOWN}, ckpt)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{ckpt / 'state.json'}: {exc}") from None


def _expect(state: dict, key: str, kind: type, ckpt: Path, default: Any) -> Any:
    value = state.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise CheckpointError(f"{ckpt / 'state.json'}: {key} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _read_tensors(f: Path, digests: dict[str, str] | None) -> Tensors:
    """A safetensors file, read once: its bytes are checked against the recorded digest, then parsed."""
    try:
        data = f.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{f}: unreadable: {exc.strerror}") from None
    if digests is not None:
        if f.name not in digests:
            raise CheckpointError(f"{f}: not one of the files this checkpoint recorded")
        if digest_bytes(data) != digests[f.name]:
            raise CheckpointError(f"{f}: its content changed after it was written (SHA-256 mismatch); "
                                  "the checkpoint is damaged")
    try:
        return load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{f}: unreadable safetensors file: {exc}") from None


def _write_atomically(run_dir: Path, step: int, files: dict[str, Tensors], meta: dict[str, Any]) -> Path:
    root = run_dir / "checkpoints"
    try:
        return _write_into(root, step, files, meta)
    except OSError as exc:  # a full disk, a folder made read-only: one line, the last checkpoint intact
        raise CheckpointError(f"{root}: cannot write the checkpoint of step {step}: {exc.strerror or exc}") from None


def _write_into(root: Path, step: int, files: dict[str, Tensors], meta: dict[str, Any],
                final: Path | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = final or root / f"{PREFIX}{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        digests = {}
        for name, group in files.items():
            path = tmp / f"{name}.safetensors"
            try:
                save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(path))
            except Exception as exc:  # safetensors reports a full disk as its own error type
                if isinstance(exc, OSError):
                    raise
                raise OSError(str(exc).replace("Error while serializing: ", "")) from None
            digests[path.name] = digest_file(path)
        write_json(tmp / "state.json", {"step": step, **meta, "sha256": digests})
        fsync_files(tmp)
        as_umask_says(tmp)
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


PRETRAINED = Path(__file__).parent / "pretrained"  # the weights that ship: pretrained/NAME/


def pretrained_names() -> list[str]:
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / "state.json").is_file()) if PRETRAINED.is_dir() else []


def resolve(path: str | Path) -> Path:
    """A checkpoint directory itself, the newest complete one inside a run directory, or for
    ``pretrained:NAME`` the weights of that name shipped with the package."""
    if isinstance(path, str) and path.startswith("pretrained:"):
        name, names = path.split(":", 1)[1], pretrained_names()
        if name not in names:
            raise CheckpointError(f"{path}: no such shipped weights; there are: "
                                  f"{', '.join('pretrained:' + n for n in names) or 'none'}")
        return PRETRAINED / name
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "state.json").is_file():
        return path
    found = checkpoints_of(path)
    if not found:
        raise CheckpointError(f"{path}: holds no checkpoint (expected state.json or checkpoints/{PREFIX}*)")
    return found[0]


def pack(checkpoint: str | Path, out: str | Path, use_ema: bool = True, note: str = "",
         sampler: dict | None = None) -> Path:
    """Write a checkpoint's EMA (or raw) weights in float16 with its config and data statistics as
    a small checkpoint folder ``out`` that sampling, editing and evaluation read like any other
    (the form of the weights that ship as ``pretrained:NAME``); it cannot be resumed. ``sampler``
    ({"sampler", "steps", "eta"}) is the default those commands use when given no --sampler."""
    name = "ema" if use_ema else "model"
    ckpt = Checkpoint.read(checkpoint, parts=(name, "data"))
    if sampler is not None:
        from .samplers import SamplerSpec

        SamplerSpec(sampler["sampler"], sampler.get("steps"), eta=sampler.get("eta", 0.0)).timesteps_for(
            ckpt.config.diffusion.T)  # a sampler the weights cannot run is an error now, not at sampling
        ckpt.info["default_sampler"] = dict(sampler)
    half = {k: v.half() if v.is_floating_point() else v for k, v in getattr(ckpt, name).items()}
    files = {"ema": half, **({"data": ckpt.data} if ckpt.data else {})}
    meta = {**ckpt.info, "kind": ckpt.kind, "config": to_dict(ckpt.config), "train_seconds": ckpt.train_seconds,
            "packed": {"from": str(ckpt.path), "weights": f"{name} in float16", "note": note}}
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # an empty folder is taken (made just for it)
        raise CheckpointError(f"{out}: already exists; give a new folder")
    try:
        return _write_into(out.parent, ckpt.step, files, meta, final=out)
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot write: {exc.strerror or exc}") from None


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run. Each is first renamed aside (one
    atomic step), so a kill during the deletion leaves a ``.trash-*`` folder, never a partial
    ``step_*`` one; :func:`remove_leftovers` clears those."""
    for old in checkpoints_of(run_dir)[keep:]:
        aside = old.with_name(f".trash-{old.name}")
        shutil.rmtree(aside, ignore_errors=True)  # what an earlier killed prune of the same name left
        os.replace(old, aside)
        shutil.rmtree(aside, ignore_errors=True)


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Remove what a killed write or prune left in ``checkpoints/`` (call only holding the run's lock)."""
    root = Path(run_dir) / "checkpoints"
    found = [p for pattern in LEFTOVERS for p in root.glob(pattern)] if root.is_dir() else []
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found
