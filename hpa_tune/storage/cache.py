"""The local cache root of hpa-tune: the built-in sample, staging copies and node shard caches
live under it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$HPA_TUNE_CACHE`` or ``~/.cache/hpa-tune``."""
    return Path(os.environ.get("HPA_TUNE_CACHE") or Path.home() / ".cache" / "hpa-tune")
