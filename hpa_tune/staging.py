"""Experiments on object storage: commands work on a local staging copy synced with the bucket.

An experiment at ``s3://bucket/runs/NAME`` (or ``gs://``) is handled like a local one: the files
a command reads are downloaded into ``$HPA_TUNE_CACHE/staging/<hash>-<pid>/NAME``, the command
runs on that copy, what it wrote or changed is uploaded back, and the copy is deleted. Ray Tune
writes trial results and checkpoints straight to the bucket (its ``storage_path``), so downloads
skip the trial directories; a command that needs a checkpoint fetches just that one
(``evaluation.local_checkpoint``). Local experiments are used in place."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpa_tune import storage
from hpa_tune.data.builtin import cache_root
from hpa_tune.errors import HpaTuneError

TRIAL_PREFIX = "trial_"  # Ray Tune's trial directories (trial_dirname_creator in runner)


def staging_dir(location: str | Path) -> Path:
    """The local directory that stands for ``location`` in this process (the location itself
    when local). It keeps the experiment's name; its parent is private to the process, so two
    commands on one experiment never share a copy."""
    text = storage.location_arg(location)
    if not storage.is_remote(text):
        return Path(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return cache_root() / "staging" / f"{digest}-{os.getpid()}" / text.rsplit("/", 1)[-1]


def _snapshot(root: Path) -> dict[str, tuple[float, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def _upload_changed(stage: Path, location: str, before: dict[str, tuple[float, int]]) -> None:
    changed = stage / ".changed"
    shutil.rmtree(changed, ignore_errors=True)
    for rel, stamp in _snapshot(stage).items():
        if before.get(rel) != stamp:
            target = changed / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(stage / rel)
    if changed.exists():
        storage.upload_tree(changed, location)
    shutil.rmtree(changed, ignore_errors=True)


def check_new_remote(location: str) -> None:
    """A new run never writes into an existing experiment on object storage either.

    Raises:
        HpaTuneError: ``location`` is remote and already holds files; names ``resume``.
    """
    if storage.is_remote(location) and storage.list_files(location):
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
        # (``evaluation.local_checkpoint``).
        storage.download_tree(text, stage, skip_dirs=(TRIAL_PREFIX,), only=only)
    before = _snapshot(stage)
    try:
        yield stage
    finally:
        try:
            if upload:
                _upload_changed(stage, text, before)
        finally:
            if not keep:
                shutil.rmtree(stage.parent, ignore_errors=True)
