"""Project error types: user-facing problems the CLI prints as one line, without a traceback."""

from __future__ import annotations


class HpaTuneError(ValueError):
    """A problem with the user's input (file, row, YAML key) that the user can fix."""
