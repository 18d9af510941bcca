"""`hpa-tune status`: where a search stands, read from its files, while it runs and after."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pandas as pd
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpa_tune.cli import main
from hpa_tune.report.experiment_status import (
    elapsed_of_study,
    show_sizes,
    state_from_study,
    state_from_summary,
)


def _study_trial(number, state, values, trial_id):
    start = datetime(2026, 12, 1, 10, 0) + timedelta(minutes=number)
    trial = create_trial(
        state=state,
        value=max(values.values()) if state == TrialState.COMPLETE else None,
        params={"lr": 0.001 * (number + 1)},
        distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
        intermediate_values=values,
        user_attrs={"trial_id": trial_id},
    )
    trial.number = number
    trial.datetime_start = start
    trial.datetime_complete = None if state == TrialState.RUNNING else start + timedelta(minutes=2)
    return trial


def test_a_running_study_becomes_the_trial_table_with_ray_trial_ids():
    trials = [
        _study_trial(0, TrialState.COMPLETE, {1: 0.1, 2: 0.3, 3: 0.25}, "t0"),
        _study_trial(1, TrialState.PRUNED, {1: 0.05}, "t1"),
        _study_trial(2, TrialState.RUNNING, {1: 0.2, 2: 0.4}, "t2"),
        _study_trial(3, TrialState.RUNNING, {}, "t3"),  # asked, no epoch ended yet
    ]
    state = state_from_study(trials, num_samples=6, max_epochs=3, mode="max")
    assert [(t.trial_id, t.status, t.epoch) for t in state.trials.values()] == [
        ("t0", "completed", 3),
        ("t1", "pruned", 1),
        ("t2", "running", 2),
        ("t3", "running", 0),
    ]
    assert state.trials["t0"].best_val_macro_f1 == 0.3 and state.trials["t0"].val_macro_f1 == 0.25
    assert state.best().trial_id == "t2" and state.finished() == 2
    assert state.trials["t1"].params == {"lr": 0.002}
    now = datetime(2026, 12, 1, 10, 10)
    assert elapsed_of_study(trials, now, finished=False) == 600
    assert elapsed_of_study(trials, now, finished=True) == 180  # to the last trial end (10:03)


def test_status_of_a_search_with_resolution_rungs_names_each_trials_current_size():
    trials = [
        _study_trial(0, TrialState.PRUNED, {1: 0.1, 2: 0.2}, "t0"),
        _study_trial(1, TrialState.RUNNING, {1: 0.2, 2: 0.3, 3: 0.35}, "t1"),
        _study_trial(2, TrialState.RUNNING, {}, "t2"),
    ]
    state = state_from_study(trials, num_samples=3, max_epochs=6, mode="max")
    show_sizes(state, [[2, 32], [6, 64]], 64)
    assert state.sizes_vary
    assert [t.image_size for t in state.trials.values()] == [32, 64, None]
    plain = state_from_study(trials, num_samples=3, max_epochs=6, mode="max")
    show_sizes(plain, None, 64)  # one size: nothing to show
    assert not plain.sizes_vary and all(t.image_size is None for t in plain.trials.values())


def test_a_finished_summary_becomes_the_trial_table_best_first():
    frame = pd.DataFrame(
        [
            {
                "trial_id": "b",
                "param:lr": 0.01,
                "epochs": 3,
                "status": "completed",
                "val_macro_f1": 0.3,
                "best_val_macro_f1": 0.35,
            },
            {
                "trial_id": "a",
                "param:lr": float("nan"),
                "epochs": 1,
                "status": "pruned",
                "val_macro_f1": 0.1,
                "best_val_macro_f1": 0.1,
            },
        ]
    )
    state = state_from_summary(frame, num_samples=2, max_epochs=3, metric="val_macro_f1")
    assert list(state.trials) == ["b", "a"]
    assert state.trials["b"].params == {"lr": 0.01} and state.trials["a"].params == {}
    assert state.trials["b"].best_val_macro_f1 == 0.35 and state.finished() == 2


def test_status_of_a_directory_that_is_no_experiment_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: {tmp_path / 'run.json'}: not found")


def _trial_ids(piped_search):
    return [m.group(1) for _, x in piped_search.lines if (m := re.match(r"trial (\S+) started", x))]


def test_status_of_a_running_search_shows_its_trials_from_another_process(piped_search):
    ids = _trial_ids(piped_search)
    seen = [out for out in piped_search.statuses_while_running if any(i in out for i in ids)]
    assert seen, piped_search.statuses_while_running[-1:]
    first = seen[0].splitlines()
    assert first[0].endswith(
        "search running (no summary.csv yet; if its driver stopped, "
        f"continue it with `hpa-tune resume {piped_search.exp_dir}`)"
    )
    assert re.match(r"trials \d/3 done, \d running, elapsed \d+s, best val macro F1", first[1])
    assert first[2].split() == [
        "trial",
        "batch_size",
        "loss_weighting",
        "lr",
        "epoch",
        "val",
        "F1",
        "best",
        "status",
    ]


def test_status_of_a_finished_search_shows_every_trial_the_best_and_the_refit(piped_search):
    result = CliRunner().invoke(main, ["status", str(piped_search.exp_dir), "--watch"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{piped_search.exp_dir}: search finished"
    assert lines[1].startswith("trials 3/3 done, 0 running, elapsed ")
    assert "ETA" not in lines[1]
    summary = pd.read_csv(piped_search.exp_dir / "summary.csv", dtype={"trial_id": str})
    rows = [x.split() for x in lines[3:6]]
    assert [r[0] for r in rows] == list(summary["trial_id"])  # best first
    assert [r[-1] for r in rows] == list(summary["status"])
    best = summary.iloc[0]
    assert f"best: trial {best['trial_id']}, val_macro_f1 {best['best_val_macro_f1']:.4f}" in (
        result.output
    )
    assert re.search(r"^refit: \S+, holdout macro F1 \d\.\d{4}$", result.output, re.M)


def test_status_reads_an_experiment_on_object_storage(piped_search, s3_endpoint):
    import boto3

    from hpa_tune.storage import filesystems as storage

    boto3.client("s3").create_bucket(Bucket="status-runs")
    location = "s3://status-runs/runs/p"
    storage.upload_tree(piped_search.exp_dir, location)
    result = CliRunner().invoke(main, ["status", location])
    assert result.exit_code == 0, result.output
    local = CliRunner().invoke(main, ["status", str(piped_search.exp_dir)])
    assert result.output.splitlines()[0] == f"{location}: search finished"
    assert result.output.splitlines()[1:] == local.output.splitlines()[1:]
