"""Faults inside a real search (local Ray runtime): a trial process killed mid-training comes back
from its last epoch's checkpoint; a trial whose loss turns NaN ends as ``error`` with the reason
while the others finish."""

import json
import os
import shutil
import signal
import threading
import time

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from hpa_tune.cli import main
from hpa_tune.data.shards import MANIFEST_NAME, ShardManifest
from hpa_tune.errors import NotRetryableError
from hpa_tune.ray_layer.faults import fail_fast_on_retry
from hpa_tune.search.study import load_study

pytestmark = pytest.mark.ray

BASE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "scheduler": {"type": "fifo"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1},
    "fixed": {"image_size": 32, "channels": "rgb", "arch": "baseline_cnn", "batch_size": 8},
}


def _run(space, tmp_path, sample_shards, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    args = ["run", str(path), "--data", str(sample_shards), "--storage", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--name", name, "--no-refit", "--quiet"])
    assert result.exit_code == 0, result.output
    exp_dir = tmp_path / name
    summary = pd.read_csv(exp_dir / "summary.csv", dtype={"trial_id": str})
    return exp_dir, summary


def _results(trial_dir):
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _kill_worker_after_epoch(exp_dir, epoch, killed):
    """Watch the experiment's result.json files; SIGKILL the worker that reported ``epoch``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not killed:
        for trial_dir in exp_dir.glob("trial_*"):
            rows = _results(trial_dir)
            if any(r["epoch"] == epoch for r in rows):
                os.kill(rows[-1]["pid"], signal.SIGKILL)
                killed.append((trial_dir.name, rows[-1]["epoch"]))
                return
        time.sleep(0.05)


def test_a_killed_trial_process_resumes_from_its_last_epoch(ray_runtime, sample_shards, tmp_path):
    space = {**BASE, "budget": {"num_samples": 1, "max_epochs": 5}}
    space["params"] = {"lr": {"type": "float", "low": 1e-3, "high": 2e-3}}
    killed: list = []
    watcher = threading.Thread(
        target=_kill_worker_after_epoch, args=(tmp_path / "killed", 1, killed), daemon=True
    )
    watcher.start()
    exp_dir, summary = _run(space, tmp_path, sample_shards, "killed")
    watcher.join()
    assert killed, "the trial finished before its worker could be killed"
    trial_dir, last_epoch_before_kill = killed[0]
    rows = _results(exp_dir / trial_dir)
    restarts = [r["epoch"] for r in rows if r["iterations_since_restore"] == 1]
    # Two starts: the first at epoch 1, the retry after the last checkpointed epoch, not at 1.
    assert len(restarts) == 2 and restarts[0] == 1
    assert 1 < restarts[1] <= last_epoch_before_kill + 1
    assert summary["status"].tolist() == ["completed"] and summary["error"].isna().all()
    history = pd.read_csv(exp_dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]  # every epoch once
    assert load_study(exp_dir, "killed").trials[0].state == TrialState.COMPLETE


def test_a_nan_loss_ends_that_trial_as_error_and_the_search_goes_on(
    ray_runtime, sample_shards, tmp_path
):
    space = {**BASE, "budget": {"num_samples": 2, "max_epochs": 1}}
    space["fixed"] = {**BASE["fixed"], "optimizer": "sgd"}
    space["resources"] = {**BASE["resources"], "max_failures": 1}
    # An absurd learning rate makes the weights, and then the loss, non-finite in epoch 1.
    space["params"] = {"lr": {"type": "categorical", "choices": [1e-3, 1e30]}}
    space["points_to_evaluate"] = [{"lr": 1e30}, {"lr": 1e-3}]
    exp_dir, summary = _run(space, tmp_path, sample_shards, "nan")
    by_lr = summary.set_index("param:lr")
    assert by_lr.loc[1e30, "status"] == "error"
    assert "non-finite train loss at epoch 1" in by_lr.loc[1e30, "error"]
    assert by_lr.loc[1e-3, "status"] == "completed"
    states = {t.params["lr"]: t.state for t in load_study(exp_dir, "nan").trials}
    assert states == {1e30: TrialState.FAIL, 1e-3: TrialState.COMPLETE}
    # Ray retried it (max_failures 1); the retry failed at once with the same reason, before
    # training (its traceback ends in the check, not in the training loop).
    trial_dir = exp_dir / f"trial_{by_lr.loc[1e30, 'trial_id']}"
    first, retry = (trial_dir / "error.txt").read_text().split("Failure # ")[1:]
    assert "non-finite train loss at epoch 1" in first and "train_one_epoch" in first
    assert "non-finite train loss at epoch 1" in retry and "train_one_epoch" not in retry


def test_a_retry_of_an_attempt_that_failed_not_retryably_fails_at_once_with_the_same_reason(
    tmp_path,
):
    with pytest.raises(NotRetryableError), fail_fast_on_retry(tmp_path / "trial"):
        raise NotRetryableError(
            "s3://b/shards/train-32-0.parquet: shard listed in the manifest is missing"
        )
    ran = []
    with (
        pytest.raises(NotRetryableError, match=r"train-32-0\.parquet: shard listed"),
        fail_fast_on_retry(tmp_path / "trial"),
    ):
        ran.append(True)
    assert ran == []  # the retry did no work at all
    with fail_fast_on_retry(tmp_path / "other-trial"):  # other trials are not affected
        ran.append(True)
    assert ran == [True]


def test_a_missing_shard_ends_the_trial_without_reading_data_again_on_its_retry(
    ray_runtime, sample_shards, tmp_path
):
    data = tmp_path / "shards"
    shutil.copytree(sample_shards, data)
    # A manifest of other bytes is another set to the node cache: this one is decoded afresh.
    manifest = data / MANIFEST_NAME
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=1))
    (data / ShardManifest.load(data).shards_for("train", 32)[0].path).unlink()
    space = {**BASE, "budget": {"num_samples": 1, "max_epochs": 1}}
    space["resources"] = {**BASE["resources"], "max_failures": 2}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    args = ["run", str(path), "--data", str(data), "--storage", str(tmp_path), "--name", "gone"]
    result = CliRunner().invoke(main, [*args, "--no-refit", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "shard listed in the manifest is missing" in result.output
    summary = pd.read_csv(tmp_path / "gone" / "summary.csv", dtype={"trial_id": str})
    assert summary["status"].tolist() == ["error"]
    trial_dir = tmp_path / "gone" / f"trial_{summary['trial_id'][0]}"
    first, *retries = (trial_dir / "error.txt").read_text().split("Failure # ")[1:]
    assert "cached_split" in first and retries
    # Ray retried it (it retries every error); each retry failed at once, before any data.
    assert all("missing" in r and "cached_split" not in r for r in retries)
