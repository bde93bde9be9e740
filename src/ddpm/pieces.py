"""Finished batches of a long run (sampling, editing, bits/dim) kept on disk until its output is written,
so that a run stopped part-way (killed, out of time, a machine lost) does only what is missing
when it is started again with the same options.

A batch made in an earlier attempt is exactly the batch this attempt would make (the noise of
sample or measured image i is keyed by (seed, i)), so the resumed run writes the file an
uninterrupted run writes. Generation and editing also take their items from batches of another
size (a run stopped by "out of memory" and started again with a smaller ``--batch-size``, or
under another number of processes): each batch is named by the span of items it holds
(:meth:`Pieces.segments` cuts the spans a batch needs and makes only the rest), and the result
is an uninterrupted run's up to the network's float rounding at the other batch size. The
folder (``OUT.partial`` beside the output) records the job it belongs to; another job's folder
is an error naming what differs, and nothing in it is deleted. Each batch is one .npz of plain
arrays, written to a temporary name and renamed, so a kill leaves whole batches or none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .files import read_json, undo_on_failure, write_json

_PIECE = re.compile(r"^(\d{12})-(\d+)\.npz$")


def partial_folder(out: str | Path) -> Path:
    """Where the finished batches of the run writing ``out`` are kept: ``OUT.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Pieces:
    """The finished batches of one job (``job``: what makes its results what they are, JSON
    values) in ``folder``, each a dict of named arrays."""

    def __init__(self, folder: str | Path, job: dict, recorded_only: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.job = json.loads(json.dumps(job))  # as it reads back from job.json
        self.recorded_only = set(recorded_only)  # keys written for the reader but not compared
        self.failed: str | None = None  # why batches are no longer kept (e.g. a full disk)
        self.resumed = 0  # items an earlier attempt had finished when this one started (set by its opener)
        self._last: tuple | None = None  # the last batch :meth:`_read` read: ((start, count), arrays or None)

    def open(self) -> "Pieces":
        """Create the folder for this job, or check that the one there is this job's."""
        record = self.folder / "job.json"
        if record.is_file():
            held = read_json(record, ConfigError)
            differ = [k for k in sorted((set(held) | set(self.job)) - self.recorded_only)
                      if held.get(k) != self.job.get(k)]
            if differ:
                what = "; ".join(f"{k}: {_short(held.get(k))} there, {_short(self.job.get(k))} here" for k in differ)
                raise ConfigError(f"{self.folder}: holds the finished batches of another run ({what}); "
                                  "run with its options to finish it, or delete the folder to start over")
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: exists and is not a folder (it would keep a run's finished batches)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(record, self.job)
        except OSError as exc:
            self._give_up(f"{record}: {exc.strerror or exc}")
        else:
            undo_on_failure(self._remove_if_unused)  # a command refused before its first batch keeps no folder
        return self

    def _remove_if_unused(self) -> None:
        if not any(_PIECE.match(p.name) for p in self.folder.iterdir()):
            (self.folder / "job.json").unlink(missing_ok=True)
            self.folder.rmdir()

    def _give_up(self, why: str) -> None:
        self.failed = why
        print(f"warning: finished batches are not kept ({why}); the run goes on, but a stop loses the batches "
              "drawn after this", file=sys.stderr)

    def _spans(self) -> list[tuple[int, int]]:
        """(first item, items) of every kept batch, in order of their first item."""
        if not self.folder.is_dir():
            return []
        return sorted((int(m[1]), int(m[2])) for m in map(_PIECE.match, (p.name for p in self.folder.iterdir())) if m)

    def held(self, first: int, n: int) -> int:
        """How many of items first … first+n−1 finished batches hold (an item two batches hold counts
        once; a batch cut short, whose archive does not open, counts none: it is made again)."""
        reach, total = first, 0
        for start, size in self._spans():
            if not self._opens(start, size):
                continue
            lo, hi = max(start, reach), min(start + size, first + n)
            if hi > lo:
                total, reach = total + hi - lo, hi
        return total

    def segments(self, first: int, n: int) -> list[tuple[int, int, dict[str, torch.Tensor] | None]]:
        """Items first … first+n−1 as consecutive runs (start, count, arrays): the arrays of those
        items cut from the kept batches that hold them (batches of any size), or None for a run no
        readable batch holds, to be made (and kept with :meth:`put` under its own span)."""
        runs: list = []
        at, end = first, first + n
        for start, size in self._spans():
            if start >= end:
                break
            if start + size <= at:
                continue
            arrays = self._read(start, size)
            if arrays is None:
                continue  # unreadable or cut short: its items are made again
            lo, hi = max(start, at), min(start + size, end)
            if lo > at:
                runs.append((at, lo - at, None))
            runs.append((lo, hi - lo, {k: v[lo - start:hi - start] for k, v in arrays.items()}))
            at = hi
        if at < end:
            runs.append((at, end - at, None))
        return runs

    def _read(self, start: int, count: int) -> dict[str, torch.Tensor] | None:
        """:meth:`get`, remembering the last batch read (a kept batch larger than this attempt's
        batches serves several of them) and refusing one whose arrays do not all hold ``count`` items."""
        if self._last is not None and self._last[0] == (start, count):
            return self._last[1]
        arrays = self.get(start, count)
        if not arrays or any(v.ndim == 0 or v.shape[0] != count for v in arrays.values()):
            arrays = None
        self._last = ((start, count), arrays)
        return arrays

    def _opens(self, start: int, count: int) -> bool:
        """Whether a kept batch's archive opens (its directory, at the end of the file, is read; not its arrays)."""
        try:
            with zipfile.ZipFile(self._path(start, count)):
                return True
        except (OSError, zipfile.BadZipFile):
            return False

    def _path(self, start: int, count: int) -> Path:
        return self.folder / f"{start:012d}-{count}.npz"

    def get(self, start: int, count: int) -> dict[str, torch.Tensor] | None:
        """The arrays kept for the batch of items start … start+count−1, or None when it was not
        finished (or cannot be read: it is made again)."""
        path = self._path(start, count)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None

    def put(self, start: int, count: int, arrays: dict[str, torch.Tensor]) -> None:
        """Keep a finished batch (whole, or not at all if the process dies while writing it). Keeping
        is insurance, not the run's work: a batch that cannot be written (a full disk) says so once
        on stderr and the run goes on without keeping more."""
        if self.failed is not None:
            return
        path = self._path(start, count)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, **{k: v.detach().cpu().numpy() for k, v in arrays.items()})
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._give_up(f"{tmp}: {exc.strerror or exc}")

    def remove(self) -> None:
        """Delete the folder: the output holding its results has been written."""
        shutil.rmtree(self.folder, ignore_errors=True)
