"""Who is crowned: the winner (``pick_best``), the order of ``summary.csv`` and the refit's members.

A trial that ended in an error — e.g. a loss that became non-finite after a good epoch — is never
the winner nor an ensemble member; a refit member whose retraining fails is skipped with a
warning while others remain, and is one line of error when none does. One tie rule everywhere:
the earliest epoch. The experiments here are written from hand-made trial records (no Ray), then
refit through the CLI on the sample shards, so the retraining really diverges.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.errors import HpaTuneError
from hpa_tune.search.experiment import write_run
from hpa_tune.search.planning import RunOptions, plan_run
from hpa_tune.search.results import pick_best, write_results
from hpa_tune.search.trial_table import (
    TrialRecord,
    best_report_index,
    checkpoint_rank,
    never_reported,
    summary_frame,
)

NONFINITE = "NonFiniteLossError: non-finite train loss at epoch 2"
# An absurd learning rate makes SGD's weights, then the loss, non-finite in the first epoch.
DIVERGES, LEARNS = 1e30, 1e-3


def _plan(tmp_path, sample_shards, time_budget_s=None):
    space = {
        "metric": "val_macro_f1",
        "mode": "max",
        "budget": {"num_samples": 3, "max_epochs": 2},
        "scheduler": {"type": "fifo"},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
        "fixed": {
            "image_size": 32,
            "channels": "rgb",
            "arch": "baseline_cnn",
            "batch_size": 16,
            "optimizer": "sgd",
        },
        "params": {"lr": {"type": "categorical", "choices": [LEARNS, DIVERGES]}},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    options = RunOptions(
        space_path=path, storage=tmp_path / "runs", name="exp", time_budget_s=time_budget_s
    )
    return plan_run(options, sample_shards, builtin_sample=False)


def _trial(trial_id, lr, scores, error=None):
    history = [
        {"epoch": e, "val_macro_f1": v, "val_loss": 1.0, "train_loss": 1.0}
        for e, v in enumerate(scores, start=1)
    ]
    return TrialRecord(trial_id, {"lr": lr}, "baseline_cnn", history, error)


def _experiment(plan, records):
    plan.exp_dir.mkdir(parents=True)
    write_run(plan.exp_dir, plan.record, plan.spec)
    return write_results(plan, records)


def test_a_trial_that_errored_after_a_good_epoch_is_not_the_winner(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards)
    records = [
        _trial("diverged", DIVERGES, [0.9], NONFINITE),
        _trial("steady", LEARNS, [0.3, 0.4]),
    ]
    best = pick_best(plan, records)
    assert (best.trial_id, best.value, best.epoch) == ("steady", 0.4, 2)


def test_summary_lists_errored_trials_after_every_other_whatever_they_scored(tmp_path):
    records = [_trial("diverged", DIVERGES, [0.9], NONFINITE), _trial("steady", LEARNS, [0.4])]
    frame = summary_frame(records, 2, "val_macro_f1", "max")
    assert frame["trial_id"].tolist() == ["steady", "diverged"]
    assert frame["status"].tolist() == ["pruned", "error"]


def test_only_errored_trials_is_one_line_saying_so(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards)
    with pytest.raises(HpaTuneError, match="no trial ended without an error; every trial failed"):
        pick_best(plan, [_trial("diverged", DIVERGES, [0.9], NONFINITE)])


def test_refit_never_retrains_an_errored_trial_even_when_it_scored_best(tmp_path, sample_shards):
    """The story of the issue: the errored trial would be retrained, diverge again, and end the
    run in a traceback with no refit/."""
    plan = _plan(tmp_path, sample_shards)
    _, best = _experiment(
        plan,
        [_trial("diverged", DIVERGES, [0.9], NONFINITE), _trial("steady", LEARNS, [0.3, 0.4])],
    )
    assert best.trial_id == "steady"
    result = CliRunner().invoke(main, ["refit", str(plan.exp_dir), "--top-k", "2", "--no-tta"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((plan.exp_dir / "refit" / "metrics.json").read_text())
    assert metrics["members"] == ["steady"]  # no other configuration ended without an error


def test_a_refit_member_that_diverges_is_skipped_with_a_warning_when_others_remain(
    tmp_path, sample_shards
):
    plan = _plan(tmp_path, sample_shards)
    # Both ran to the end in the search; the refit's own retraining of one diverges.
    _experiment(plan, [_trial("steady", LEARNS, [0.3, 0.5]), _trial("lucky", DIVERGES, [0.2, 0.4])])
    result = CliRunner().invoke(main, ["refit", str(plan.exp_dir), "--top-k", "2", "--no-tta"])
    assert result.exit_code == 0, result.output
    assert (
        "warning: refit: member 2/2 skipped, retraining trial lucky failed: "
        "non-finite train loss at epoch 1" in result.output
    )
    metrics = json.loads((plan.exp_dir / "refit" / "metrics.json").read_text())
    assert metrics["members"] == ["steady"]


def test_a_refit_whose_only_member_diverges_is_one_line_of_error(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards)
    _experiment(plan, [_trial("lucky", DIVERGES, [0.2, 0.4])])
    result = CliRunner().invoke(main, ["refit", str(plan.exp_dir), "--no-tta"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last == (
        "error: refit: no member could be trained; retraining trial lucky failed: "
        "non-finite train loss at epoch 1"
    )


# One tie rule: the earliest epoch.


def test_the_earliest_of_equal_epochs_is_the_best_under_max_and_min():
    assert best_report_index([0.2, 0.5, 0.5, 0.1], "max") == 1
    assert best_report_index([0.3, 0.1, 0.1, 0.4], "min") == 1
    assert best_report_index([], "max") is None


def test_summary_and_pick_best_name_the_earliest_of_tied_epochs(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards)
    records = [_trial("a", LEARNS, [0.3, 0.5, 0.5])]
    frame = summary_frame(records, 3, "val_macro_f1", "max")
    assert frame.loc[0, "best_epoch"] == 2
    assert pick_best(plan, records).epoch == 2


def test_ray_ranks_a_tied_epochs_checkpoint_below_the_earlier_one():
    """Ray keeps the later of two checkpoints with equal scores; ranked this way it keeps the
    earlier, the epoch ``summary.csv`` names."""
    assert checkpoint_rank(0.5, None, "max") == 0.5
    assert checkpoint_rank(0.6, 0.5, "max") == 0.6
    assert checkpoint_rank(0.5, 0.5, "max") == -math.inf
    assert checkpoint_rank(0.4, 0.5, "max") == -math.inf
    assert checkpoint_rank(0.3, 0.5, "min") == -0.3
    assert checkpoint_rank(0.5, 0.5, "min") == -math.inf


# A trial the time budget ended before its first report is no trial.


def test_a_trial_without_reports_or_error_is_not_a_trial_in_summary_csv(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards, time_budget_s=60)
    waiting = TrialRecord("waiting", {"lr": LEARNS}, "baseline_cnn")
    assert never_reported(waiting)
    frame, best = _experiment(plan, [_trial("a", LEARNS, [0.3, 0.4]), waiting])
    assert frame["trial_id"].tolist() == ["a"] and best.trial_id == "a"
    summary = pd.read_csv(plan.exp_dir / "summary.csv", dtype={"trial_id": str})
    assert summary["trial_id"].tolist() == ["a"]


def test_no_winner_because_the_budget_ran_out_says_so_not_that_trials_failed(
    tmp_path, sample_shards
):
    plan = _plan(tmp_path, sample_shards, time_budget_s=5)
    waiting = TrialRecord("waiting", {"lr": LEARNS}, "baseline_cnn")
    with pytest.raises(HpaTuneError) as err:
        pick_best(plan, [waiting])
    assert str(err.value).startswith(
        "the time budget of 5 s ran out before any trial reported val_macro_f1 (1 trial not started)"
    )
    assert "failed" not in str(err.value)


# Under a resolution fidelity only full-size epochs rank a trial.


def _fidelity_trial(trial_id, sizes_scores, error=None):
    history = [
        {"epoch": e, "val_macro_f1": v, "image_size": size, "full_size": size == 32}
        for e, (size, v) in enumerate(sizes_scores, start=1)
    ]
    return TrialRecord(trial_id, {"lr": LEARNS}, "baseline_cnn", history, error)


def test_a_low_resolution_epoch_never_ranks_a_trial_however_well_it_scored(tmp_path, sample_shards):
    plan = _plan(tmp_path, sample_shards)
    records = [
        # ASHA stopped it at its 16 px rung, where it scored best of all epochs of the search.
        _fidelity_trial("low", [(16, 0.9)]),
        # Its best epoch overall is at 16 px; its best full-size epoch is the 3rd.
        _fidelity_trial("full", [(16, 0.8), (32, 0.3), (32, 0.4)]),
    ]
    frame = summary_frame(records, 3, "val_macro_f1", "max")
    assert list(frame["trial_id"]) == ["full", "low"]
    assert frame.loc[0, "best_epoch"] == 3 and frame.loc[0, "best_val_macro_f1"] == 0.4
    assert pd.isna(frame.loc[1, "best_val_macro_f1"])  # no full-size epoch: ranks last
    best = pick_best(plan, records)
    assert (best.trial_id, best.epoch, best.value) == ("full", 3, 0.4)
