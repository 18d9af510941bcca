"""``prepare`` to object storage: prepare locally, then publish with the manifest written last.

A reader finds a prepared set by its ``manifest.json``; it is deleted before the upload starts
and written after every shard, so a half-finished upload is never loadable and a finished one
replaces the previous set at once. Only what the previous manifest lists is ever deleted: the
prefix may hold anything else (other data sets, experiments, notes), and a prefix holding objects
that no manifest lists where prepare is about to write is refused before anything is done. Local
output is prepared in place, as before.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hpa_tune.data.output_swap import REJECTED_NAME, files_listed
from hpa_tune.data.prepare import PrepareOptions, PrepareResult, ProgressFn, prepare
from hpa_tune.data.shards import MANIFEST_NAME
from hpa_tune.errors import HpaTuneError
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.cache import cache_root


def previous_set(out: str, sizes: tuple[int, ...]) -> set[str]:
    """The files at ``out`` that an earlier prepare wrote (what its manifest lists), which a new
    prepare may replace or delete; only the places prepare writes are looked at.

    Raises:
        HpaTuneError: ``out`` holds, where prepare is about to write (``manifest.json``,
            ``rejected.csv``, ``size_<S>/`` for the sizes asked for), an object that no manifest
            there lists; the message names one.
    """
    manifest = storage.join(out, MANIFEST_NAME)
    try:
        listed = files_listed(storage.read_bytes(manifest))
    except FileNotFoundError:
        listed = set()
    else:
        if listed is None:
            raise _foreign(manifest, "not a manifest that prepare wrote")
    why = f"not in {manifest}" if listed else f"{manifest} does not exist"
    if REJECTED_NAME not in listed and storage.is_file(storage.join(out, REJECTED_NAME)):
        raise _foreign(storage.join(out, REJECTED_NAME), f"not written by prepare ({why})")
    for size in sizes:
        place = storage.join(out, f"size_{size}")
        for rel in storage.list_files(place):
            if f"size_{size}/{rel}" not in listed:
                raise _foreign(storage.join(place, rel), f"not written by prepare ({why})")
    return listed


def _foreign(location: str, why: str) -> HpaTuneError:
    return HpaTuneError(f"{location}: {why}; move it or choose another --out (nothing was changed)")


def prepare_to(
    raw_dir: Path,
    out: str | Path,
    options: PrepareOptions | None = None,
    progress: ProgressFn | None = None,
) -> PrepareResult:
    """``prepare`` into ``out``: a local directory, or an ``s3://``/``gs://`` prefix.

    Remote output is prepared into a temporary directory under ``$HPA_TUNE_CACHE/staging`` (the
    full set passes through local disk once), then uploaded with the manifest last; of the
    objects already at ``out``, only those the previous manifest lists are replaced or deleted.

    Raises:
        HpaTuneError: as :func:`prepare`, and as :func:`previous_set` for a remote ``out``.
    """
    out = storage.location_arg(out)
    options = options or PrepareOptions()
    if not storage.is_remote(out):
        return prepare(raw_dir, Path(out), options, progress=progress)
    previous = previous_set(out, options.sizes)
    staging = cache_root() / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prepare-", dir=staging) as tmp:
        local = Path(tmp) / "shards"
        result = prepare(raw_dir, local, options, progress=progress)
        storage.replace_tree(local, out, commit_file=MANIFEST_NAME, previous=previous)
    return result
