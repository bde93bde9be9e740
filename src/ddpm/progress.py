"""Progress bars that suit where stderr goes.

On a terminal, tqdm's bar redrawn every second. When stderr is a file (nohup, a batch job's
log), a bar redrawn in place would pile up in the file as one ever longer line of carriage
returns; there each update is one plain line instead, every ``every`` seconds.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "into_a_file", "say_when_work_starts", "forget_what_was_to_be_said"]

_to_say: list[str] = []  # lines for stderr that wait for the work they describe


def say_when_work_starts(line: str) -> None:
    """Print ``line`` on stderr when the first shown progress bar starts (the command's real work),
    not now: a command still checking its input may yet refuse it, and then its one error line is
    all it prints. A command without a bar (--quiet, a process other than the first) says none."""
    _to_say.append(line)


def forget_what_was_to_be_said() -> None:
    """Drop the lines no work followed (a refused command, or one with nothing left to do)."""
    _to_say.clear()


def into_a_file() -> bool:
    """Whether progress goes to a file (nohup, a batch job's log) rather than a terminal: plain
    lines there, never a bar redrawn in place."""
    return not sys.stderr.isatty()


class _Lines:
    """A stream for tqdm that writes each redrawn status as a line of its own."""

    def __init__(self, stream):
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()  # tqdm redraws with "\r" and pads with spaces
        # "desc: 40%|####   | 400/1000 [times, rate]": the count after the bar, whose width follows the
        # rate's text, so a redraw of the same count may draw one more or one fewer "#"
        count = text.split(" [", 1)[0].rsplit("|", 1)[-1]
        if text and count != self.last:  # closing redraws the last count once more
            self.stream.write(text + "\n")
            self.last = count

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, *, show: bool = True, every: float = 30.0, **options):
    """``tqdm(iterable, **options)``: a live bar on a terminal, plain lines every ``every`` s on a
    file, nothing when ``show`` is false."""
    from tqdm.auto import tqdm

    while show and _to_say:  # --quiet: no bar, and no notes either
        print(_to_say.pop(0), file=sys.stderr, flush=True)
    if show and into_a_file():
        # miniters=1: every update checks the clock, and tqdm's monitor thread never redraws (it would
        # print a loop's count as of the last line, not its current one)
        return tqdm(iterable, file=_Lines(sys.stderr), mininterval=every, miniters=1, ncols=100, **options)
    return tqdm(iterable, disable=not show, dynamic_ncols=True, mininterval=1.0, **options)
