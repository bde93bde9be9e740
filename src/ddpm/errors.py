"""Exceptions a user can act on.

Every error that comes from bad input (a file, a config key, a command-line option) is a
:class:`DDPMError`; the command-line tool prints its message on one line and exits with
status 2, without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import math
import numbers


class DDPMError(Exception):
    """Base class of the errors caused by the user's input."""


class ConfigError(DDPMError, ValueError):
    """An option or configuration value is invalid (names the key and the value)."""


class DataError(DDPMError, ValueError):
    """A data file or data set cannot be used (names the file and the reason)."""


class CheckpointError(DDPMError, ValueError):
    """A checkpoint directory is missing, incomplete or inconsistent (names the path)."""


class StoppedWithRank0(DDPMError):
    """Under torchrun, rank 0 refused the command and says why; the other processes stop with it
    and say nothing (one line, not one a process)."""


# ---------------------------------------------------------------- validating values


def check_choice(key: str, value: object, options: tuple) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, options))}, got {value!r}")


def check_int(key: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer (not a bool) in [minimum, maximum]."""
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ConfigError(f"{key} must be an integer {bound}, got {value!r}")


def check_count(key: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= 1 (a Python or NumPy integer,
    not a bool): a number of items, a batch size, a number of terms a library call is given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")


def check_float(key: str, value: object, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number in [low, high] (or (low, high])."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
        raise ConfigError(f"{key} must be a number {bound}, got {value!r}")
