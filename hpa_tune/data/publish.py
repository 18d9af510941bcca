"""``prepare`` to object storage: prepare locally, then publish with the manifest written last.

A reader finds a prepared set by its ``manifest.json``; it is deleted before the upload starts
and written after every shard, so a half-finished upload is never loadable and a finished one
replaces the previous set at once. Local output is prepared in place, as before.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hpa_tune.data.prepare import PrepareOptions, PrepareResult, ProgressFn, prepare
from hpa_tune.data.shards import MANIFEST_NAME
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.cache import cache_root


def prepare_to(
    raw_dir: Path,
    out: str | Path,
    options: PrepareOptions | None = None,
    progress: ProgressFn | None = None,
) -> PrepareResult:
    """``prepare`` into ``out``: a local directory, or an ``s3://``/``gs://`` prefix.

    Remote output is prepared into a temporary directory under ``$HPA_TUNE_CACHE/staging`` (the
    full set passes through local disk once), then uploaded with the manifest last.
    """
    out = storage.location_arg(out)
    if not storage.is_remote(out):
        return prepare(raw_dir, Path(out), options or PrepareOptions(), progress=progress)
    staging = cache_root() / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prepare-", dir=staging) as tmp:
        local = Path(tmp) / "shards"
        result = prepare(raw_dir, local, options or PrepareOptions(), progress=progress)
        storage.replace_tree(local, out, commit_file=MANIFEST_NAME)
    return result
