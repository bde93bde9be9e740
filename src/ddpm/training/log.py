"""The training log: a row of ``log.csv`` (and TensorBoard scalars where installed) every few steps."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Callable

import torch

COLUMNS = ["step", "loss", "lr", "steps_per_s", "loss_t_q1", "loss_t_q2", "loss_t_q3", "loss_t_q4"]


def truncate_log(path: Path, last_step: int) -> None:
    """Keep the header and the rows up to ``last_step`` (the checkpoint a run resumes from), so
    that the rows written again after it are not there twice; rewritten under a temporary name
    and renamed, so a kill leaves the old file or the new one, never half of one."""
    if not path.exists():
        return
    rows = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = [r for r in rows if r.split(",")[0].isdigit() and int(r.split(",")[0]) <= last_step
            and len(r.split(",")) == len(COLUMNS)]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{r}\n" for r in [",".join(COLUMNS), *kept]), encoding="utf-8")
    os.replace(tmp, path)


class TrainLog:
    """At every multiple of ``every`` steps: step, mean loss, lr, steps/s and the mean loss in each
    quarter of the timesteps (t ≤ T/4, …) since the last row, as a row of ``out_dir/log.csv``
    and TensorBoard scalars under ``tb/``. The window of steps not yet written is part of a
    checkpoint (:meth:`state_dict`), so a resumed run writes the rows an uninterrupted one would
    (but for steps/s). ``active`` False (the other DDP ranks) records nothing."""

    def __init__(self, out_dir: Path, T: int, every: int, active: bool = True,
                 say: Callable[[str], None] = print, start_step: int = 0):
        self.T, self.every, self.active = T, every, active
        self.sums, self.counts, self.losses, self.start = torch.zeros(4), torch.zeros(4), [], time.perf_counter()
        self.timed = 0  # steps this process timed since the last row
        self.tb = None
        if not active:
            return
        path = out_dir / "log.csv"
        truncate_log(path, start_step)
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"))
        except ImportError:
            say("TensorBoard logs need `pip install tensorboard`; writing log.csv only")

    def record(self, step: int, loss: float | torch.Tensor, lr: float, t: torch.Tensor,
               example_losses: torch.Tensor) -> None:
        """One step's mean ``loss`` and the (B,) timesteps and per-example losses of its batch.
        They are summed where they are (a GPU's tensors on the GPU) and read once a row."""
        if not self.active:
            return
        if self.sums.device != t.device:
            self.sums, self.counts = self.sums.to(t.device), self.counts.to(t.device)
        q = ((t - 1) * 4 // self.T).clamp(0, 3)
        self.sums.index_add_(0, q, example_losses.detach().float())
        self.counts.index_add_(0, q, torch.ones_like(q, dtype=torch.float32))
        self.losses.append(torch.as_tensor(loss, dtype=torch.float64, device=t.device).reshape(()))
        self.timed += 1
        if step % self.every == 0:
            losses = torch.stack([v.to(t.device) for v in self.losses]).mean().item()  # the row's one wait
            rate = self.timed / (time.perf_counter() - self.start)
            quarters = (self.sums / self.counts.clamp_min(1)).tolist()
            row = [step, losses, lr, rate, *quarters]
            self.writer.writerow([row[0], *(f"{v:.6g}" for v in row[1:])])
            self.file.flush()
            if self.tb is not None:
                for name, value in zip(COLUMNS[1:], row[1:]):
                    self.tb.add_scalar(f"train/{name}", value, step)
                self.tb.flush()
            self.sums.zero_()
            self.counts.zero_()
            self.losses, self.start, self.timed = [], time.perf_counter(), 0

    def state_dict(self) -> dict:
        """The steps since the last row: their losses and the per-quarter sums and counts."""
        losses = torch.stack([v.to(self.sums.device) for v in self.losses]).tolist() if self.losses else []
        return {"losses": losses, "sums": self.sums.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.losses = [torch.tensor(float(v), dtype=torch.float64) for v in state.get("losses", [])]
        self.sums = torch.tensor(state.get("sums", [0.0] * 4), dtype=torch.float32)
        self.counts = torch.tensor(state.get("counts", [0.0] * 4), dtype=torch.float32)

    def close(self) -> None:
        if self.active:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
