"""Checkpoints: every tensor in safetensors, everything else in JSON; never pickle.

A run directory holds ``config.json`` and ``checkpoints/step_XXXXXXXXX/``. Each checkpoint is
written into a temporary directory, fsynced, and renamed into place only when complete, so
a directory named ``step_*`` is always whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

PREFIX = "step_"


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _fsync_files(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]
) -> Path:
    """Write ``<name>.safetensors`` for each entry of ``tensors`` and ``state.json`` = meta."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{PREFIX}{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckpt_root))
    try:
        for name, group in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / f"{name}.safetensors"))
        write_json(tmp / "state.json", {"step": step, **meta})
        _fsync_files(tmp)
        _fsync_dir(tmp)
        old = None
        if final.exists():  # re-saving the same step: move the old one aside, never delete it first
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=ckpt_root))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(ckpt_root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete one inside a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "state.json").is_file():
        return path
    candidates = sorted((path / "checkpoints").glob(f"{PREFIX}*")) if (path / "checkpoints").is_dir() else []
    if not candidates:
        raise CheckpointError(f"{path}: holds no checkpoint (expected state.json or checkpoints/{PREFIX}*)")
    return candidates[-1]


def load_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Return (directory, state.json contents, {file stem: tensors})."""
    ckpt = resolve_checkpoint(path)
    try:
        meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{ckpt / 'state.json'}: unreadable: {exc}") from None
    tensors = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        try:
            tensors[f.stem] = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{f}: unreadable safetensors file: {exc}") from None
    return ckpt, meta, tensors
