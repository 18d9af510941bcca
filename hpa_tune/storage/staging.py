"""Experiments on object storage: commands work on a local staging copy synced with the bucket.

An experiment at ``s3://bucket/runs/NAME`` (or ``gs://``) is handled like a local one: the files
a command reads are downloaded into ``$HPA_TUNE_CACHE/staging/<hash>-<pid>/NAME``, the command
runs on that copy, what it wrote or changed is uploaded back, and the copy is deleted. Ray Tune
writes trial results and checkpoints straight to the bucket (its ``storage_path``), so downloads
skip the trial directories; a command that needs a checkpoint fetches just that one
(``search.experiment.local_checkpoint``). Local experiments are used in place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import CLAIM_DIR, TRIAL_PREFIX
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.cache import cache_root

_CHANGED = ".changed"  # hard links to the files of one upload, inside the staging copy


def staging_dir(location: str | Path) -> Path:
    """The local directory that stands for ``location`` in this process (the location itself
    when local). It keeps the experiment's name; its parent is private to the process, so two
    commands on one experiment never share a copy."""
    text = storage.location_arg(location)
    if not storage.is_remote(text):
        return Path(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return cache_root() / "staging" / f"{digest}-{os.getpid()}" / text.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StagedPath:
    """``NAME`` (or the directory itself) in the staging copy of ``location``, resolved in the
    process that uses it (``os.fspath``) rather than the one that made it: objects that Ray Tune
    pickles with the search (the searcher's journal, ASHA's state, callbacks) find the staging
    copy of whichever driver restores them (``hpa-tune resume``, a new process and directory).
    """

    location: str
    name: str = ""

    def __fspath__(self) -> str:
        stage = staging_dir(self.location)
        return str(stage / self.name if self.name else stage)

    def __truediv__(self, name: str) -> StagedPath:
        return StagedPath(self.location, f"{self.name}/{name}" if self.name else name)


Snapshot = dict[str, tuple[float, int]]


def snapshot(root: Path) -> Snapshot:
    """Relative path -> (mtime, size) of every file below ``root``."""
    stamps: Snapshot = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        with contextlib.suppress(FileNotFoundError):  # a temporary file replaced meanwhile
            if path.is_file() and not rel.startswith(f"{_CHANGED}/"):
                stat = path.stat()
                stamps[rel] = (stat.st_mtime, stat.st_size)
    return stamps


def upload_changed(stage: Path, location: str, before: Snapshot) -> Snapshot:
    """Upload the files of ``stage`` that are new or changed since ``before``; returns the
    snapshot they were compared with (the ``before`` of the next call)."""
    changed = stage / _CHANGED
    shutil.rmtree(changed, ignore_errors=True)
    now = snapshot(stage)
    for rel, stamp in now.items():
        if before.get(rel) != stamp:
            target = changed / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                target.hardlink_to(stage / rel)
    if changed.exists():
        storage.upload_tree(changed, location)
    shutil.rmtree(changed, ignore_errors=True)
    return now


def check_new_remote(location: str) -> None:
    """A new run never writes into an existing experiment on object storage either.

    Raises:
        HpaTuneError: ``location`` is remote and already holds files; names ``resume``.
    """
    if not storage.is_remote(location):
        return
    # The new run's own claim (taken before this check) is not an experiment.
    if any(not rel.startswith(f"{CLAIM_DIR}/") for rel in storage.list_files(location)):
        raise HpaTuneError(
            f"{location}: an experiment of that name exists; continue it with "
            f"`hpa-tune resume {location}`, or choose another --name"
        )


@contextmanager
def local_experiment(
    location: str | Path,
    *,
    download: bool = True,
    upload: bool = True,
    only: tuple[str, ...] = (),
    keep: bool = False,
) -> Iterator[Path]:
    """A local directory for the experiment at ``location``.

    Args:
        location: a local experiment directory, or its ``s3://``/``gs://`` URI.
        download: fetch the experiment's files first (False for a new experiment). The staging
            directory starts empty either way.
        upload: afterwards, upload the files the command created or changed (also when it
            failed: a partial search is worth keeping).
        only: download just the files under these relative prefixes (e.g. ``("tensorboard/",)``).
        keep: leave the staging copy on disk afterwards (a server still reading it); it is
            deleted otherwise.
    """
    text = storage.location_arg(location)
    if not storage.is_remote(text):
        yield Path(text)
        return
    stage = staging_dir(text)
    shutil.rmtree(stage, ignore_errors=True)  # never mix in files of an earlier command
    stage.mkdir(parents=True)
    if download:
        # Trial directories hold every checkpoint: fetched one by one where needed instead
        # (``search.experiment.local_checkpoint``).
        storage.download_tree(text, stage, skip_dirs=(TRIAL_PREFIX,), only=only)
    before = snapshot(stage)
    try:
        yield stage
    finally:
        try:
            if upload:
                upload_changed(stage, text, before)
        finally:
            if not keep:
                shutil.rmtree(stage.parent, ignore_errors=True)
