"""File helpers every layer may use: JSON written and read with errors that name the file,
durable writes (a temporary name, fsync, then a rename), content digests, modes as the user's
umask says, and a lock that keeps a folder to one writer."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from .errors import DDPMError


def dumps(obj: Any, level: int = 0) -> str:
    """``obj`` as key-sorted JSON indented by two spaces, except that a list of plain values (the
    timesteps of a 1000-step sampler, a shape) stays on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict) and obj:
        keys = {k: k if isinstance(k, str) else json.dumps(k) for k in obj}  # json's own key text
        rows = [f"{inner}{json.dumps(keys[k])}: {dumps(obj[k], level + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(rows) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, level + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as :func:`dumps` writes it, under a temporary name and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps(obj) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path, error: type[DDPMError] = DDPMError) -> Any:
    """The JSON in ``path``; an unreadable or malformed file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable JSON: {exc}") from None


_NUMPY_MAGIC = {".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04", b"PK\x05\x06")}


def load_numpy(path: str | Path, kind: str, error: type[DDPMError] = DDPMError) -> Any:
    """``np.load(path, allow_pickle=False)`` of what ``kind`` (".npy" or ".npz") says the file is: its
    array, or the lazy archive of an .npz (close it; its members can still fail as they are read).
    A file of the other kind or none, or one that holds pickles, raises ``error`` naming the file in
    words of its own (numpy calls any unknown file "pickled data")."""
    import numpy as np

    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except OSError as exc:
        raise error(f"{p}: cannot read it ({exc.strerror})") from None
    if not head.startswith(_NUMPY_MAGIC[kind]):
        other = next((k for k, magic in _NUMPY_MAGIC.items() if head.startswith(magic)), None)
        found = f"an {other} under another name" if other else "its first bytes are neither .npy's nor .npz's"
        raise error(f"{p}: not an {kind} file ({found})")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile) as exc:
        raise error(f"{p}: not a readable {kind}: {numpy_error_text(exc)}") from None


def numpy_error_text(exc: BaseException) -> str:
    """numpy's reason for refusing a file, first line only; its "allow_pickle" advice (which the
    package never takes) becomes what it means."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "allow_pickle" in text or "pickled" in text:
        return "it holds Python objects (pickled), which are never loaded: save plain arrays"
    return text


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


# ---------------------------------------------------------------- digests


def digest_bytes(data: bytes | memoryview) -> str:
    """The SHA-256 of some bytes, as hex (hashlib's; SHA extensions make it ~1–2 GB/s on x86)."""
    return hashlib.sha256(data).hexdigest()


def digest_file(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in 8 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def digest_tree(folder: str | Path, suffixes: set[str] | None = None) -> str:
    """One SHA-256 of every file under ``folder`` (with one of ``suffixes``): names and contents."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        if suffixes is None or p.suffix.lower() in suffixes:
            h.update(str(p.relative_to(root)).encode() + b"\0" + digest_file(p).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- permissions


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_says(folder: Path) -> None:
    """Give ``folder`` and the files directly in it the modes a plain mkdir/open would have given
    under the user's umask (0755 / 0644 under 022); mkdtemp makes 0700, safetensors 0600."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~mask)


# ---------------------------------------------------------------- one writer per folder


class FolderLock:
    """An advisory lock on ``folder/.lock`` (``fcntl.flock``): one writer at a time. The kernel
    drops it when the holder exits, however it dies, so a kill -9 leaves no stale lock. The
    holder's PID is written into the file, for the message a second writer gets."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DDPMError(f"{self.path.parent}: another ddpm process (PID {holder}) is writing to it; "
                            "wait for it to finish, stop it, or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def holder(self) -> str | None:
        """The PID of the process that holds the lock now (None: nobody does), without taking it from
        anyone: a shared lock is tried and let go at once."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file: never written, or not readable
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)  # also lets go of the shared lock, if it was had
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: Folders :func:`prepare_output` created in this process, and what else a command asked to be
#: undone if it fails (:func:`undo_on_failure`), so that bad input found after the output was
#: prepared still leaves nothing behind (:func:`command_failed`).
_CREATED: list[Path] = []
_UNDO: list[Callable[[], None]] = []


def prepare_output(path: str | Path, folder: bool = False) -> Path:
    """Make sure ``path`` can be written (as a file, or a ``folder``) before any work is done: its
    folder is created, and a path of the wrong kind or in a folder that cannot be written is a
    DDPMError naming it."""
    path = Path(path)
    target = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        raise DDPMError(f"{path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise DDPMError(f"{path}: is a folder; give a file name")
    missing = new_folders(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DDPMError(f"{target}: cannot create it: {exc.strerror}") from None
    _CREATED.extend(missing)
    try:
        try_writing_in(target)
    except OSError as exc:
        raise DDPMError(f"{target}: cannot write there ({exc.strerror})") from None
    return path


def try_writing_in(folder: Path) -> None:
    """Create a file in ``folder`` and remove it: an OSError if that fails. Asking os.access is not
    enough: for root it says yes to every folder, and it knows nothing of /proc or /sys, which
    refuse new files whatever the permissions say; found after the work, that loses the work."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".ddpm-write-check-")
    os.close(fd)
    os.unlink(name)


def new_folders(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    for p in (path, *path.absolute().parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def undo_on_failure(action: Callable[[], None]) -> None:
    """Have ``action`` run if the command fails (before its new empty folders are taken away)."""
    _UNDO.append(action)


def command_started() -> None:
    """A new command: what earlier ones created is theirs to keep."""
    _CREATED.clear()
    _UNDO.clear()


def command_failed() -> None:
    """Undo what the failed command asked to (newest first), then take away the folders
    :func:`prepare_output` created that are still empty, deepest first; a folder that holds
    anything (kept work) stays."""
    for action in reversed(_UNDO):
        try:
            action()
        except OSError:
            pass
    for p in sorted(_CREATED, key=lambda p: len(p.absolute().parts), reverse=True):
        try:
            p.rmdir()  # only an empty folder goes
        except OSError:
            pass
    command_started()
