"""``hpa-tune resume s3://…`` after the driver of a search with ``--storage s3://…`` was SIGKILLed:
the bucket alone (no local staging copy of the dead driver) is enough to finish the search and
the refit."""

import contextlib
import json
import os
import signal
import tempfile
import time
import uuid

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.search.study import load_study
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.cache import cache_root
from hpa_tune.storage.staging import local_experiment
from tests.test_resume import MAX_EPOCHS, NUM_SAMPLES, SPACE, _driver

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _bucket_ray_states(exp: str) -> dict[str, tuple[str, int | None]]:
    """Ray Tune's last snapshot on the bucket: trial id -> (status, last epoch reported)."""
    snapshots = sorted(f for f in storage.list_files(exp) if f.startswith("experiment_state-"))
    if not snapshots:
        return {}
    states = {}
    for trial_json, metadata_json in json.loads(storage.read_bytes(f"{exp}/{snapshots[-1]}"))[
        "trial_data"
    ]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        states[trial["trial_id"]] = (trial["status"], (metadata["last_result"] or {}).get("epoch"))
    return states


def _mid_search(exp: str, proc, timeout_s: float = 300) -> bool:
    """Wait until the bucket's snapshot has a trial finished and one running past epoch 1."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):  # a snapshot may be half-written
            states = _bucket_ray_states(exp).values()
            finished = [s for s, _ in states if s == "TERMINATED"]
            running = [e for s, e in states if s == "RUNNING" and e and e < MAX_EPOCHS - 1]
            if finished and running:
                return True
        time.sleep(0.2)
    return False


def test_resume_of_a_killed_bucket_search_finishes_it_and_the_refit_from_the_bucket(
    s3_endpoint, ray_runtime, sample_shards, tmp_path
):
    import boto3

    bucket = f"hpa-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    exp = f"s3://{bucket}/runs/r"
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", f"s3://{bucket}/runs"]
    with (
        tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as ray_tmp,
        _driver([*args, "--name", "r", "--quiet", "--seed", "3"], ray_tmp) as proc,
    ):
        reached = _mid_search(exp, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as when its machine goes away
        proc.wait()
        assert reached, proc.stdout.read().decode()[-3000:]
    at_kill = _bucket_ray_states(exp)
    finished_rows = {t: _result_rows(exp, t) for t, (s, _) in at_kill.items() if s == "TERMINATED"}
    # What the dead driver staged locally is gone with its machine: only the bucket is left.
    for stage in (cache_root() / "staging").glob(f"*-{proc.pid}"):
        storage.remove_local(stage)

    result = CliRunner().invoke(main, ["resume", exp])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"experiment: {exp}"

    summary, history = _csv(exp, "summary.csv"), _csv(exp, "history.csv")
    assert len(summary) == NUM_SAMPLES
    assert set(at_kill) <= set(summary["trial_id"])  # the trials of the killed driver, finished
    assert set(summary["status"]) <= {"completed", "pruned"}
    assert not history.duplicated(["trial_id", "epoch"]).any()
    # The study the killed driver had been telling (its journal, uploaded before Ray's snapshot)
    # carried on: one Optuna trial per Ray trial, each told how it ended.
    with local_experiment(exp, upload=False, only=("optuna.journal", "run.json")) as copy:
        study = load_study(copy, yaml.safe_load((copy / "run.json").read_text())["study_name"])
        assert study is not None
        assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(summary["trial_id"])
        assert all(t.state.is_finished() for t in study.trials)
    files = storage.list_files(exp)
    assert "refit/metrics.json" in files and "best.json" in files
    for tid, rows in finished_rows.items():  # finished before the kill: not trained again
        assert _result_rows(exp, tid) == rows, tid


def _csv(exp: str, name: str) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(storage.read_bytes(f"{exp}/{name}")), dtype={"trial_id": str})


def _result_rows(exp: str, trial_id: str) -> list[dict]:
    lines = storage.read_bytes(f"{exp}/trial_{trial_id}/result.json").decode().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]
