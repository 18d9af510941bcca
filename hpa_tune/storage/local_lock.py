"""An exclusive lock on a local file, shared by the processes of one node (``flock``).

For caches on a node's own disk: the shard cache and the built-in sample. The lock goes with the
process, so a killed holder never leaves it held.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold ``path``'s lock (created if missing) for the ``with`` block.

    Yields:
        True when held; False when ``blocking`` is off and another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
