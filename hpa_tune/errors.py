"""Project error types: user-facing problems the CLI prints as one line, without a traceback."""

from __future__ import annotations


class HpaTuneError(ValueError):
    """A problem with the user's input (file, row, YAML key) that the user can fix."""


class NotRetryableError(HpaTuneError):
    """A trial error that a retry would meet again (a bad configuration, a missing or corrupt
    shard): the trial ends with it instead of being retried like a process that died."""
