"""A run directory's ownership: taken (created, locked, cleared of what killed writes left),
given back when a run is refused before writing anything, and checked for room for a checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint import remove_leftovers
from ..errors import DDPMError
from ..files import FolderLock, try_writing_in

if TYPE_CHECKING:
    from .trainer import TrainState


def undo_run_directory(out_dir: Path, new: list[Path]) -> None:
    """A run refused before it wrote anything (its folder holds the lock and an empty checkpoints/
    alone) takes away the folders it created: bad input leaves nothing behind."""
    ckpts = out_dir / "checkpoints"
    try:
        if not ({p.name for p in out_dir.iterdir()} - {".lock", "checkpoints"} or any(ckpts.iterdir())):
            ckpts.rmdir()
            (out_dir / ".lock").unlink()
            for folder in new:  # deepest first
                folder.rmdir()
    except OSError:  # something else is there after all: it stays
        pass


def take_run_directory(out_dir: Path) -> FolderLock:
    """Create the run directory, take its lock (one writer) and clear what killed writes left."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DDPMError(f"{out_dir}: exists and is not a folder; give a run directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(out_dir).acquire()
    except OSError as exc:
        raise DDPMError(f"{out_dir}: cannot use it as a run directory: {exc.strerror}") from None
    try:
        (out_dir / "checkpoints").mkdir(exist_ok=True)
        try_writing_in(out_dir / "checkpoints")
        remove_leftovers(out_dir)
    except OSError as exc:  # found now, not at the first checkpoint with the steps before it lost
        lock.release()
        raise DDPMError(f"{out_dir / 'checkpoints'}: cannot write checkpoints there: {exc.strerror}") from None
    return lock


def check_room(out_dir: Path, state: "TrainState") -> None:
    """Refuse to start when the disk cannot hold one more checkpoint (weights, EMA, Adam's two moments)."""
    need = 4 * sum(t.numel() * t.element_size() for t in state.model.state_dict().values())
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise DDPMError(f"{out_dir}: {free / 2**20:.1f} MiB free, less than the {need / 2**20:.1f} MiB one "
                        "checkpoint of this run needs")
