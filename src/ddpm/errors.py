"""Exceptions a user can act on.

Every error that comes from bad input (a file, a config key, a command-line option) is a
:class:`DDPMError`; the command-line tool prints its message on one line and exits with
status 2, without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class DDPMError(Exception):
    """Base class of the errors caused by the user's input."""


class ConfigError(DDPMError, ValueError):
    """An option or configuration value is invalid (names the key and the value)."""


class DataError(DDPMError, ValueError):
    """A data file or data set cannot be used (names the file and the reason)."""


class CheckpointError(DDPMError, ValueError):
    """A checkpoint directory is missing, incomplete or inconsistent (names the path)."""
