"""Image resolution as a fidelity, end to end: a search whose trials train at 16 px up to ASHA's
first rung and at 32 px after it (a trial whose process died continues from its 16 px checkpoint
at 32 px), refit on the stretched schedule, reported, in TensorBoard, and resumed."""

import json
import re
import threading

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from tests.conftest import load_events
from tests.test_faults import _kill_worker_after_epoch
from tests.test_resume import _result_rows
from tests.test_user_errors import one_line_error

SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 2, "max_epochs": 3},
    # Rungs at epochs 1 and 2: 16 px for epoch 1, 32 px for epochs 2..3.
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1},
    "fixed": {"channels": "rgb", "arch": "baseline_cnn", "batch_size": 16},
    "params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    "fidelity": {"image_size": [16, 32]},
    "refit_epochs_factor": 2,
}


def _size(epoch: int) -> int:
    return 16 if epoch <= 1 else 32


def _write(space: dict, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_rung_sizes_the_data_was_not_prepared_at_are_one_line_before_any_trial(
    fidelity_shards, tmp_path
):
    space = {**SPACE, "budget": {"num_samples": 2, "max_epochs": 4}}
    space["fidelity"] = {"image_size": [24, 32, 48]}
    args = ["run", _write(space, tmp_path), "--data", fidelity_shards, "--storage", tmp_path / "r"]
    result = CliRunner().invoke(main, [*map(str, args), "--name", "x", "--no-refit", "--quiet"])
    line = one_line_error(result)
    assert "image sizes 24, 48 were not prepared; prepared sizes: [16, 32]" in line
    assert not list((tmp_path / "r").glob("x/trial_*"))


def test_the_shipped_fidelity_space_runs_on_the_built_in_samples_sizes(tmp_path):
    from pathlib import Path

    from hpa_tune.data.builtin_sample.prepared import BuiltinSample
    from hpa_tune.search.planning import RunOptions, plan_run

    space = Path(__file__).resolve().parents[1] / "search_spaces" / "fidelity_space.yaml"
    plan = plan_run(RunOptions(space, storage=tmp_path), "<built-in sample>", builtin_sample=True)
    assert plan.record.sizes == [32, 64] and set(plan.record.sizes) <= set(BuiltinSample().sizes)
    assert plan.record.constants["size_schedule"] == [[2, 32], [5, 64]]  # demo: 5 epochs
    # Its progress (live table or log lines) names the size each trial trains at.
    from hpa_tune.ray_layer.runner import progress_callbacks

    assert all(c.state.sizes_vary for m in ("live", "plain") for c in progress_callbacks(plan, m))


@pytest.mark.ray
def test_a_fidelity_search_continues_trials_at_each_size_then_refits_reports_and_resumes(
    ray_runtime, fidelity_shards, tmp_path
):
    exp_dir, killed = tmp_path / "f", []
    # The first trial's process dies after its 16 px epoch: Ray retries it from that checkpoint.
    watcher = threading.Thread(
        target=_kill_worker_after_epoch, args=(exp_dir, 1, killed), daemon=True
    )
    watcher.start()
    args = ["run", str(_write(SPACE, tmp_path)), "--data", str(fidelity_shards)]
    result = CliRunner().invoke(main, [*args, "--storage", str(tmp_path), "--name", "f", "--quiet"])
    watcher.join()
    assert result.exit_code == 0, result.output
    assert killed, "the trial finished before its worker could be killed"

    run = json.loads((exp_dir / "run.json").read_text())
    assert run["constants"]["size_schedule"] == [[1, 16], [3, 32]]
    assert run["constants"]["image_size"] == 32 and run["sizes"] == [16, 32]
    # Every epoch of every trial trained and was scored at its scheduled size.
    history = pd.read_csv(exp_dir / "history.csv", dtype={"trial_id": str})
    assert len(history) >= 2 and not history.duplicated(["trial_id", "epoch"]).any()
    assert list(history["image_size"]) == [_size(e) for e in history["epoch"]]
    # The killed trial went on from its last checkpoint (epoch 1 at 16 px, unless a later one
    # was saved before the kill), not from epoch 1, at the size of the epoch it continued with.
    trial_dir, epoch_at_kill = killed[0]
    rows = _result_rows(exp_dir / trial_dir)
    restarts = [r for r in rows if r["iterations_since_restore"] == 1]
    assert len(restarts) == 2 and restarts[0]["epoch"] == 1
    assert 1 < restarts[1]["epoch"] <= epoch_at_kill + 1
    assert restarts[1]["image_size"] == _size(restarts[1]["epoch"])
    if epoch_at_kill == 1:  # the usual case: the checkpoint at 16 px continues at 32 px
        assert (restarts[1]["epoch"], restarts[1]["image_size"]) == (2, 32)

    # The refit trains twice as long on the stretched schedule and keeps a full-size epoch.
    info = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    member = json.loads((exp_dir / "refit" / "members" / "0" / "config.json").read_text())
    assert member["max_epochs"] == 6 and member["size_schedule"] == [[2, 16], [6, 32]]
    assert info["best_epoch"] >= 3

    report = CliRunner().invoke(main, ["report", str(exp_dir)])
    assert report.exit_code == 0, report.output
    trial = history["trial_id"].iloc[0]
    events = load_events(exp_dir / "tensorboard" / f"trial_{trial}")
    sizes = {e.step: e.value for e in events.Scalars("image_size")}
    assert sizes == {e: _size(e) for e in history.loc[history["trial_id"] == trial, "epoch"]}

    status = CliRunner().invoke(main, ["status", str(exp_dir)])  # each trial's size at its end
    assert status.exit_code == 0, status.output
    assert re.search(r"epoch\s+px\s+val F1", status.output), status.output

    resumed = CliRunner().invoke(main, ["resume", str(exp_dir)])  # finished: says so, as it is
    assert resumed.exit_code == 0, resumed.output
    assert pd.read_csv(exp_dir / "history.csv", dtype={"trial_id": str}).equals(history)
