"""Staging copies of bucket experiments: paths that follow the process using them, and uploads
of what changed."""

from __future__ import annotations

import multiprocessing
import pickle

import optuna

from hpa_tune.search.study import journal_path, journal_storage
from hpa_tune.storage.staging import StagedPath, snapshot, staging_dir


def _resolve_elsewhere(pickled: bytes, queue) -> None:
    import os

    queue.put((os.fspath(pickle.loads(pickled)), str(staging_dir("s3://b/runs/exp") / "x.json")))


def test_a_staged_path_resolves_to_the_staging_copy_of_the_process_that_unpickles_it():
    staged = StagedPath("s3://b/runs/exp") / "x.json"
    here = staging_dir("s3://b/runs/exp") / "x.json"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_resolve_elsewhere, args=(pickle.dumps(staged), queue))
    proc.start()
    there, expected_there = queue.get(timeout=60)
    proc.join(timeout=30)
    assert str(here) == str(staged.__fspath__())
    assert there == expected_there and there != str(here)  # another process, another copy


def test_a_pickled_journal_storage_reopens_the_journal_where_its_directory_now_resolves(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HPA_TUNE_CACHE", str(tmp_path / "first"))
    location = "s3://b/runs/exp"
    study = optuna.create_study(study_name="s", storage=journal_storage(StagedPath(location)))
    study.add_trial(optuna.trial.create_trial(value=0.5))
    pickled = pickle.dumps(study)
    # A resumed driver: another staging copy, holding the journal it downloaded.
    first_copy = journal_path(staging_dir(location))
    monkeypatch.setenv("HPA_TUNE_CACHE", str(tmp_path / "second"))
    second_copy = journal_path(staging_dir(location))
    second_copy.parent.mkdir(parents=True)
    second_copy.write_bytes(first_copy.read_bytes())
    first_copy.unlink()
    restored = pickle.loads(pickled)
    restored.add_trial(optuna.trial.create_trial(value=0.7))
    assert [t.value for t in restored.trials] == [0.5, 0.7]
    assert not first_copy.exists()  # written where the copy is now, not where it was


def test_a_snapshot_leaves_out_the_upload_links(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / ".changed" / "tensorboard").mkdir(parents=True)
    (tmp_path / ".changed" / "tensorboard" / "events").write_text("x")
    assert list(snapshot(tmp_path)) == ["run.json"]
