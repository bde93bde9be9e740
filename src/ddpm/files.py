"""File helpers every layer may use: JSON written and read with errors that name the file,
and durable writes (a temporary name, fsync, then a rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import DDPMError


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON, written under a temporary name and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path, error: type[DDPMError] = DDPMError) -> Any:
    """The JSON in ``path``; an unreadable or malformed file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable JSON: {exc}") from None


def fsync_files(folder: Path) -> None:
    """Flush every file directly inside ``folder`` to the disk."""
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
