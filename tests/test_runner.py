"""A real Ray Tune search (local Ray runtime, OptunaSearch + ASHA) on the sample shards,
then refit and predict through the CLI — the files a user relies on."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.data.loader import BatchLoader, load_split
from hpa_tune.refit.ensemble import predict_probs
from hpa_tune.scoring.metrics import macro_f1
from hpa_tune.scoring.thresholds import at_least_one_label, list_threshold_methods
from hpa_tune.train.checkpoint import load_checkpoint_model
from hpa_tune.train.trainable import make_loader
from hpa_tune.train.trial_data import load_trial_data
from tests.conftest import SEARCH_SPACE

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ensemble_experiment(searched_experiment, tmp_path_factory):
    """A copy of the searched experiment refit as a 3-member ensemble with TTA (the default is
    the winner alone with TTA). Returns (experiment directory, CLI output)."""
    copy = tmp_path_factory.mktemp("ensemble") / "exp"
    shutil.copytree(searched_experiment[0], copy)
    result = CliRunner().invoke(main, ["refit", str(copy), "--top-k", "3", "--tta"])
    assert result.exit_code == 0, result.output
    return copy, result.output


def test_last_line_names_the_experiment_directory(searched_experiment):
    exp_dir, output = searched_experiment
    assert output.strip().splitlines()[-1] == f"experiment: {exp_dir}"


def test_the_output_is_ours_not_ray_tunes_status_boxes(searched_experiment):
    _, output = searched_experiment
    assert "View detailed results here" not in output
    assert "driver_artifacts" not in output  # Tune's TensorBoard hint, not our EXP/tensorboard


def test_summary_has_every_trial_and_asha_stopped_some(searched_experiment):
    exp_dir, _ = searched_experiment
    summary = pd.read_csv(exp_dir / "summary.csv")
    assert len(summary) == 6
    assert set(summary["status"]) <= {"completed", "pruned"}
    pruned = summary[summary["status"] == "pruned"]
    assert len(pruned) >= 1 and (summary["status"] == "completed").sum() >= 1
    # ASHA (grace 1, reduction 2, max 4) can only stop a trial at a rung: after epoch 1 or 2.
    assert set(pruned["epochs"]) <= {1, 2}
    for col in (
        "param:lr",
        "param:batch_size",
        "param:loss_weighting",
        "train_macro_f1",
        "train_loss",
        "val_macro_f1",
        "val_loss",
    ):
        assert summary[col].notna().all(), col


def test_every_trial_reported_whole_set_metrics_each_epoch_and_kept_a_checkpoint(
    searched_experiment,
):
    exp_dir, _ = searched_experiment
    trial_dirs = sorted(exp_dir.glob("trial_*"))
    assert len(trial_dirs) == 6
    for trial_dir in trial_dirs:
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
        for key in (
            "val_macro_f1",
            "val_macro_f1_batch_avg",
            "train_macro_f1",
            "train_loss",
            "val_loss",
            "lr",
            "images_per_s",
        ):
            assert all(key in r for r in rows), key
        assert list(trial_dir.glob("checkpoint_*/model.pt"))


def test_best_json_names_the_winner_and_its_params(searched_experiment):
    exp_dir, _ = searched_experiment
    best = json.loads((exp_dir / "best.json").read_text())
    summary = pd.read_csv(exp_dir / "summary.csv")
    assert best["trial_id"] == str(summary.iloc[0]["trial_id"])
    assert best["value"] == pytest.approx(summary["best_val_macro_f1"].max())
    assert set(best["params"]) == {"lr", "batch_size", "loss_weighting"}
    assert Path(best["checkpoint"]).is_dir()


def test_run_json_records_the_resources_trials_actually_got(searched_experiment):
    exp_dir, _ = searched_experiment
    run = json.loads((exp_dir / "run.json").read_text())
    # The space asks for gpus_per_trial: auto; on this CPU-only Ray runtime that resolved to 0.
    assert run["cpus_per_trial"] == 1.0 and run["gpus_per_trial"] == 0.0


def test_refit_writes_model_thresholds_config_and_holdout_metrics(searched_experiment):
    exp_dir, _ = searched_experiment
    refit = exp_dir / "refit"
    for name in ("model.pt", "thresholds.json", "config.json", "metrics.json"):
        assert (refit / name).is_file(), name
    metrics = json.loads((refit / "metrics.json").read_text())
    for key in ("holdout_macro_f1@0.5", "holdout_macro_f1_tuned", "val_macro_f1_tuned"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["per_class"]) == 28
    assert {"name", "threshold", "holdout_f1"} <= set(metrics["per_class"][0])
    assert len(json.loads((refit / "thresholds.json").read_text())["thresholds"]) == 28
    # The final predictor's method is the one with the best cross-validated val score.
    final = metrics["predictors"][metrics["predictor"]]
    assert final["threshold_method"] == metrics["threshold_method"]
    assert final["val_cv_macro_f1"][final["threshold_method"]] == max(
        final["val_cv_macro_f1"].values()
    )
    assert metrics["holdout_macro_f1_tuned"] == pytest.approx(
        final["holdout_macro_f1"][metrics["threshold_method"]]
    )


def test_the_refit_holdout_headline_scores_the_labels_predict_writes(searched_experiment):
    refit = searched_experiment[0] / "refit"
    metrics = json.loads((refit / "metrics.json").read_text())
    assert metrics["decision_rule"]["name"] == "at_least_one_label"
    saved = np.load(refit / "predictions.npz")
    thresholds = json.loads((refit / "thresholds.json").read_text())["thresholds"]
    written = at_least_one_label(saved["holdout_probs"], np.asarray(thresholds))  # predict's rule
    assert metrics["holdout_macro_f1_tuned"] == pytest.approx(
        macro_f1(saved["holdout_targets"], written)
    )


def test_refit_reports_single_ensemble_and_tta_under_every_threshold_method(ensemble_experiment):
    exp_dir, output = ensemble_experiment
    metrics = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    assert metrics["predictor"] in {"weighted_tta", "single_tta"}
    assert len(metrics["candidates"]) == 3
    assert {"single", "single_tta", "ensemble", "ensemble_tta"} <= set(metrics["predictors"])
    for scores in metrics["predictors"].values():
        assert set(scores["holdout_macro_f1"]) == set(list_threshold_methods())
    assert f"> {metrics['predictor']}" in output and "class_ratio" in output


def test_top_k_refit_says_whether_val_chose_a_weighted_ensemble_or_the_winner_alone(
    ensemble_experiment,
):
    exp_dir, output = ensemble_experiment
    refit = exp_dir / "refit"
    metrics = json.loads((refit / "metrics.json").read_text())
    selection = metrics["ensemble_selection"]
    weights = {m["trial_id"]: m["weight"] for m in _index(refit)["members"]}
    assert selection["weights"] == pytest.approx(weights)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert metrics["members"] == [t for t in metrics["candidates"] if weights[t] > 0]
    cv = selection["val_cv_macro_f1"]
    if selection["chosen"] == "winner_alone":
        assert metrics["predictor"] == "single_tta" and metrics["members"] == [metrics["trial_id"]]
        assert (
            cv["weighted_ensemble"] <= cv["winner_alone"] or "added nothing" in selection["reason"]
        )
        assert f"ensemble selection: the winner {metrics['trial_id']} alone" in output
    else:
        assert selection["chosen"] == "weighted_ensemble"
        assert metrics["predictor"] == "weighted_tta" and len(metrics["members"]) >= 2
        assert cv["weighted_ensemble"] > cv["winner_alone"]
        assert "weighted_tta" in metrics["predictors"]
        assert "ensemble selection: weighted ensemble of trials" in output


def _index(refit: Path) -> dict:
    return json.loads((refit / "ensemble.json").read_text())


def test_ensemble_refit_probabilities_are_the_weighted_mean_of_its_members_with_tta(
    ensemble_experiment, sample_shards
):
    exp_dir, _ = ensemble_experiment
    refit = exp_dir / "refit"
    index = _index(refit)
    data = load_trial_data(sample_shards, [32])
    member_probs = []
    for entry in index["members"]:
        model, cfg = load_checkpoint_model(refit / entry["dir"])
        member_probs.append(
            predict_probs(
                model, make_loader(cfg, data, "val", False, torch.device("cpu")), tta=True
            )
        )
    saved = np.load(refit / "predictions.npz")
    weights = [m["weight"] for m in index["members"]]
    np.testing.assert_allclose(
        saved["val_probs"], np.average(member_probs, axis=0, weights=weights), rtol=1e-5, atol=1e-6
    )


def test_refit_reuses_the_checkpoint_of_a_trial_that_ran_to_the_end(ensemble_experiment):
    exp_dir, _ = ensemble_experiment
    index = json.loads((exp_dir / "refit" / "ensemble.json").read_text())
    summary = pd.read_csv(exp_dir / "summary.csv", dtype={"trial_id": str}).set_index("trial_id")
    for entry in index["members"]:
        completed = summary.loc[entry["trial_id"], "status"] == "completed"
        assert entry["reused_trial_checkpoint"] == completed
        if completed:
            saved = torch.load(Path(summary.loc[entry["trial_id"], "checkpoint"]) / "model.pt")
            member = torch.load(exp_dir / "refit" / entry["dir"] / "model.pt")
            assert all(torch.equal(saved[k], member[k]) for k in saved)


def _read_submission(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("source", ["shards", "raw"])
def test_predict_writes_a_valid_kaggle_submission(
    searched_experiment, search_foreign, sample_shards, tmp_path, source
):
    exp_dir, _ = searched_experiment
    data = sample_shards if source == "shards" else sample_shards.parent / "raw"
    out = tmp_path / "submission.csv"
    result = CliRunner().invoke(
        main, ["predict", str(exp_dir / "refit"), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    search_foreign.assert_intact()
    rows = _read_submission(out)
    expected_ids = [
        r["Id"] for r in _read_submission(sample_shards.parent / "raw" / "sample_submission.csv")
    ]
    assert [r["Id"] for r in rows] == expected_ids
    for row in rows:
        labels = [int(t) for t in row["Predicted"].split()]
        assert labels and all(0 <= label < 28 for label in labels)


def _expected_submission(refit: Path, sample_shards, weights) -> list[list[int]]:
    """The labels of the members' test probabilities averaged with ``weights``, computed here."""
    index = _index(refit)
    test = load_split(sample_shards, "test", 32)
    probs = []
    for entry in index["members"]:
        model, cfg = load_checkpoint_model(refit / entry["dir"])
        stats = index["channel_stats"]["32"]
        batches = BatchLoader(test, 16, channels=cfg.channels, mean=stats["mean"], std=stats["std"])
        probs.append(predict_probs(model, batches, tta=index["tta"]))
    thresholds = np.asarray(json.loads((refit / "thresholds.json").read_text())["thresholds"])
    expected = at_least_one_label(np.average(probs, axis=0, weights=weights), thresholds)
    return [np.flatnonzero(row).tolist() for row in expected]


def _predicted(refit: Path, sample_shards, out: Path) -> list[list[int]]:
    result = CliRunner().invoke(
        main, ["predict", str(refit), "--data", str(sample_shards), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return [sorted(int(t) for t in r["Predicted"].split()) for r in _read_submission(out)]


def test_predict_uses_the_refit_ensemble_its_weights_tta_and_thresholds(
    ensemble_experiment, sample_shards, tmp_path
):
    refit = ensemble_experiment[0] / "refit"
    weights = [m["weight"] for m in _index(refit)["members"]]
    assert _predicted(refit, sample_shards, tmp_path / "s.csv") == _expected_submission(
        refit, sample_shards, weights
    )


@pytest.mark.parametrize("weights", [[0.1, 0.0, 0.9], None], ids=["weighted", "old_equal"])
def test_predict_applies_the_weights_in_ensemble_json_and_old_files_mean_equal_weights(
    ensemble_experiment, sample_shards, tmp_path, weights
):
    refit = tmp_path / "refit"
    shutil.copytree(ensemble_experiment[0] / "refit", refit)
    index = _index(refit)
    for i, entry in enumerate(index["members"]):
        entry.pop("weight")
        if weights is not None:
            entry["weight"] = weights[i]
    (refit / "ensemble.json").write_text(json.dumps(index))
    expected = _expected_submission(refit, sample_shards, weights or [1, 1, 1])
    if weights is not None:  # else this test could not tell weights from an equal mean
        assert expected != _expected_submission(refit, sample_shards, [1, 1, 1])
    assert _predicted(refit, sample_shards, tmp_path / "s.csv") == expected


def test_refit_command_reruns_from_the_experiment_directory(searched_experiment, search_foreign):
    exp_dir, _ = searched_experiment
    before = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    result = CliRunner().invoke(main, ["refit", str(exp_dir)])
    assert result.exit_code == 0, result.output
    search_foreign.assert_intact()
    after = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    assert after["trial_id"] == before["trial_id"]
    # Same seed, same data, same replayed config: the refit is reproducible.
    assert after["holdout_macro_f1@0.5"] == pytest.approx(before["holdout_macro_f1@0.5"], abs=1e-6)
    # Progress: a bar over the refit's epochs when a member retrains (none when every member
    # reuses its trial's checkpoint: no empty bar), and a line per epoch of each retrained member.
    retrained = [
        m
        for m in json.loads((exp_dir / "refit" / "ensemble.json").read_text())["members"]
        if not m["reused_trial_checkpoint"]
    ]
    assert ("refit epochs" in result.output) == bool(retrained)
    assert result.output.count("refit epoch ") == after["epochs"] * len(retrained)


def test_the_default_refit_is_the_winner_alone_with_tta(searched_experiment):
    exp_dir, _ = searched_experiment
    metrics = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    assert metrics["predictor"] == "single_tta" and metrics["members"] == [metrics["trial_id"]]
    assert set(metrics["predictors"]) == {"single", "single_tta"}


def test_refit_without_tta_uses_the_plain_predictions(ensemble_experiment, tmp_path):
    copy = tmp_path / "exp"
    shutil.copytree(ensemble_experiment[0], copy)
    result = CliRunner().invoke(main, ["refit", str(copy), "--top-k", "1", "--no-tta"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((copy / "refit" / "metrics.json").read_text())
    assert metrics["predictor"] == "single" and metrics["members"] == [metrics["trial_id"]]
    assert not json.loads((copy / "refit" / "ensemble.json").read_text())["tta"]


def test_a_space_with_refit_epochs_factor_retrains_the_winner_for_longer(
    searched_experiment, tmp_path
):
    copy = tmp_path / "exp"
    shutil.copytree(searched_experiment[0], copy)
    space = yaml.safe_load((copy / "space.yaml").read_text())
    (copy / "space.yaml").write_text(yaml.safe_dump({**space, "refit_epochs_factor": 2}))
    max_epochs = json.loads((copy / "run.json").read_text())["max_epochs"]
    result = CliRunner().invoke(main, ["refit", str(copy), "--top-k", "1"])
    assert result.exit_code == 0, result.output
    index = json.loads((copy / "refit" / "ensemble.json").read_text())
    assert not index["members"][0]["reused_trial_checkpoint"]
    config = json.loads((copy / "refit" / "members" / "0" / "config.json").read_text())
    assert config["max_epochs"] == 2 * max_epochs
    assert 1 <= index["members"][0]["best_epoch"] <= 2 * max_epochs


def test_on_tied_scores_the_kept_checkpoint_is_the_earliest_epoch_the_files_name(
    tied_experiment,
):
    exp, output = tied_experiment
    history = pd.read_csv(exp / "history.csv")
    assert history["val_macro_f1"].nunique() == 1 and len(history) == 3  # a three-way tie
    summary = pd.read_csv(exp / "summary.csv")
    best = json.loads((exp / "best.json").read_text())
    assert summary.loc[0, "best_epoch"] == best["epoch"] == 1  # the earliest of equals
    kept = Path(summary.loc[0, "checkpoint"])
    assert kept == Path(best["checkpoint"])
    assert torch.load(kept / "training_state.pt", weights_only=False)["epoch"] == 1
    # The refit reuses that checkpoint and names the same epoch.
    assert f"reuses trial {summary.loc[0, 'trial_id']}'s checkpoint" in output
    assert json.loads((exp / "refit" / "metrics.json").read_text())["best_epoch"] == 1


def test_a_time_budget_that_ends_before_any_report_says_so_and_counts_no_trial(
    ray_runtime, sample_shards, tmp_path
):
    from optuna.trial import TrialState

    from hpa_tune.search.study import load_study

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--name", "b", "--time-budget-s", "0.5", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "failed" not in result.output and "pruned" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(
        "error: the time budget of 0.5 s ran out before any trial reported val_macro_f1"
    )
    assert "pruned" not in (tmp_path / "b" / "summary.csv").read_text()
    study = load_study(tmp_path / "b", "b")
    assert study is not None
    assert all(t.state == TrialState.FAIL for t in study.trials)
    assert all(t.user_attrs.get("not_started") for t in study.trials)
