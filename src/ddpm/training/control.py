"""When a run stops and when it writes: signals, the time limit, the step count, and the cadence
of checkpoints and sample pictures, each decided in one small place."""

from __future__ import annotations

import signal
import threading
import time


class StopRequest:
    """SIGTERM / Ctrl-C set ``requested``: the run finishes its step, writes a checkpoint and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class TimeLimit:
    """True once ``seconds`` have passed since it was made (never, for None)."""

    def __init__(self, seconds: float | None, clock=time.monotonic):
        self.seconds, self.clock, self.started = seconds, clock, clock()

    def passed(self) -> bool:
        return self.seconds is not None and self.clock() - self.started > self.seconds


def stop_reason(stop: StopRequest, limit: TimeLimit) -> str | None:
    """Why the run should stop after this step, or None."""
    if stop.requested:
        return "a signal"
    if limit.passed():
        return f"the time limit of {limit.seconds:.0f} s"
    return None


def checkpoint_due(step: int, every: int, end: int, stopping: bool) -> bool:
    """A checkpoint every ``every`` steps, at the last step, and whenever the run stops early."""
    return stopping or step % every == 0 or step == end


def sample_due(step: int, every: int) -> bool:
    """A sample picture every ``every`` steps (0: never)."""
    return every > 0 and step % every == 0
