"""`hpa-tune report`: the study table, best-so-far, ASHA rungs, cost and importance computations
on small hand-made frames, then the whole HTML report on a real search, rendered in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from hpa_tune.classes import class_names
from hpa_tune.cli import main
from hpa_tune.report import study_table, to_markdown, write_report, write_study_table
from hpa_tune.report.cost import Devices, cost_table, cost_totals, devices_per_trial
from hpa_tune.report.curves import asha_rungs, best_so_far, rung_cutoffs
from hpa_tune.report.importance import (
    importance_study,
    param_importances,
    study_from_summary,
    trials_frame,
)
from hpa_tune.report.per_class import per_class_frame
from hpa_tune.search.experiment import BestTrial, RunRecord, write_best, write_run
from hpa_tune.search.space import parse_space
from tests.conftest import resnet_freeze_param

SPACE = parse_space(
    {
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "params": {
            "arch": {"type": "categorical", "choices": ["resnet18", "capsnet"]},
            "resnet_freeze": resnet_freeze_param("fc", "layer4"),
            "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        },
    }
)
METRICS = ("train_macro_f1", "train_loss", "val_macro_f1_batch_avg", "val_macro_f1", "val_loss")


def _summary() -> pd.DataFrame:
    """Three trials as summary.csv has them, best first: a winner, one ASHA stopped, one error."""
    return pd.DataFrame(
        {
            "trial_id": ["a1", "b2", "c3"],
            "arch": ["resnet18", "capsnet", "resnet18"],
            "param:arch": ["resnet18", "capsnet", "resnet18"],
            "param:resnet_freeze": ["fc", np.nan, "layer4"],
            "param:lr": [1e-3, 2e-4, 5e-3],
            "epochs": [4, 1, 0],
            "status": ["completed", "pruned", "error"],
            "train_macro_f1": [0.5, 0.2, np.nan],
            "train_macro_f1_batch_avg": [0.45, 0.18, np.nan],
            "train_loss": [0.3, 0.6, np.nan],
            "val_macro_f1": [0.4, 0.1, np.nan],
            "val_macro_f1_batch_avg": [0.35, 0.09, np.nan],
            "val_loss": [0.35, 0.7, np.nan],
            "best_val_macro_f1": [0.42, 0.1, np.nan],
            "best_epoch": [3, 1, np.nan],
            "time_total_s": [40.0, 12.0, 3.0],
        }
    )


def _history() -> pd.DataFrame:
    """a1 runs epochs 1-4 (10 s each) from t=100; b2 starts at t=105 and is stopped after 1."""
    rows = [
        {
            "trial_id": "a1",
            "epoch": e,
            "val_macro_f1": v,
            "timestamp": 100 + 10 * e,
            "time_total_s": 10.0 * e,
            "time_this_iter_s": 10.0,
        }
        for e, v in zip((1, 2, 3, 4), (0.2, 0.3, 0.42, 0.4), strict=True)
    ]
    rows.append(
        {
            "trial_id": "b2",
            "epoch": 1,
            "val_macro_f1": 0.1,
            "timestamp": 117,
            "time_total_s": 12.0,
            "time_this_iter_s": 12.0,
        }
    )
    return pd.DataFrame(rows)


# --- the study table -------------------------------------------------------------------------


def test_study_table_keeps_summary_order_and_last_epoch_values():
    table = study_table(_summary(), SPACE)
    assert list(table["trial_id"]) == ["a1", "b2", "c3"]
    pd.testing.assert_frame_equal(
        table[list(METRICS)], _summary()[list(METRICS)], check_dtype=False
    )
    assert list(table["best_val_macro_f1"][:2]) == [0.42, 0.1]


def test_configuration_names_config_keys_and_skips_inactive_conditional_params():
    table = study_table(_summary(), SPACE)
    assert table["config"][0] == "resnet18, freeze=fc, lr=0.001"
    assert table["config"][1] == "capsnet, lr=0.0002"


def test_without_trial_scores_only_the_refit_winner_gets_test_f1():
    refit = {"trial_id": "a1", "holdout_macro_f1@0.5": 0.31, "holdout_macro_f1_tuned": 0.37}
    table = study_table(_summary(), SPACE, refit_metrics=refit)
    assert table.loc[0, ["test_macro_f1@0.5", "test_macro_f1_tuned"]].tolist() == [0.31, 0.37]
    assert table.loc[0, "test_from"] == "refit model"
    assert table.loc[1:, "test_macro_f1@0.5"].isna().all()
    assert (table.loc[1:, "test_from"] == "").all()


def test_trial_scores_give_every_scored_trial_its_test_f1():
    scores = pd.DataFrame(
        {
            "trial_id": ["b2", "a1"],
            "holdout_macro_f1@0.5": [0.1, 0.3],
            "holdout_macro_f1_tuned": [0.15, 0.35],
        }
    )
    refit = {"trial_id": "a1", "holdout_macro_f1@0.5": 0.9, "holdout_macro_f1_tuned": 0.9}
    table = study_table(_summary(), SPACE, trial_scores=scores, refit_metrics=refit)
    assert table["test_macro_f1@0.5"].tolist()[:2] == [0.3, 0.1]
    assert table["test_macro_f1_tuned"].tolist()[:2] == [0.35, 0.15]
    assert table["test_from"].tolist() == ["trial checkpoint", "trial checkpoint", ""]


def test_markdown_has_a_header_and_one_row_per_trial_with_missing_cells_empty():
    md = to_markdown(study_table(_summary(), SPACE)).splitlines()
    assert len(md) == 2 + 3
    assert "Val F1 (batch avg)" in md[0] and "Val F1 (whole set)" in md[0]
    assert "| 0.4000 |" in md[2]
    error_row = [c.strip() for c in md[4].strip("|").split("|")]
    assert error_row[0] == "c3" and error_row[4] == ""


# --- progress, rungs, cost -------------------------------------------------------------------


def test_best_so_far_follows_epochs_in_the_order_they_finished():
    curve = best_so_far(_history(), "val_macro_f1", "max")
    assert list(zip(curve["trial_id"], curve["epoch"], strict=True)) == [
        ("a1", 1),
        ("b2", 1),
        ("a1", 2),
        ("a1", 3),
        ("a1", 4),
    ]
    # The search started at t=100 (a1's first epoch ended at 110 after 10 s).
    assert curve["elapsed_s"].tolist() == [10, 17, 20, 30, 40]
    assert curve["trial_epochs"].tolist() == [1, 2, 3, 4, 5]
    assert curve["best"].tolist() == [0.2, 0.2, 0.3, 0.42, 0.42]
    assert best_so_far(_history(), "val_macro_f1", "min")["best"].tolist()[-1] == 0.1


@pytest.mark.parametrize(
    ("grace", "rf", "max_t", "brackets"),
    [(1, 2, 4, 1), (1, 3, 27, 1), (2, 3, 50, 1), (1, 2, 16, 3)],
)
def test_asha_rungs_are_rays_bracket_milestones_before_max_epochs(grace, rf, max_t, brackets):
    from ray.tune.schedulers.async_hyperband import _Bracket

    ray_rungs = {
        milestone
        for s in range(brackets)
        for milestone, _ in _Bracket(grace, max_t, rf, s)._rungs
        if milestone < max_t
    }
    assert asha_rungs(grace, rf, max_t, brackets) == sorted(ray_rungs)


def test_rung_cutoff_is_rays_quantile_of_each_trials_first_score_at_the_rung():
    history = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "c", "c"],
            "epoch": [1, 2, 1, 1, 2],
            "val_macro_f1": [0.2, 0.5, 0.1, 0.4, 0.3],
        }
    )
    cutoffs = rung_cutoffs(history, [1, 2], "val_macro_f1", "max", reduction_factor=2)
    assert cutoffs["trials"].tolist() == [3, 2]
    assert cutoffs["cutoff"].tolist() == pytest.approx([0.2, 0.4])  # medians of (.2,.1,.4), (.5,.3)
    low = rung_cutoffs(history, [1], "val_macro_f1", "min", reduction_factor=4)
    assert low["cutoff"][0] == pytest.approx(np.percentile([0.2, 0.1, 0.4], 25))


def test_cost_extrapolates_stopped_trials_and_counts_errors_as_they_ran():
    cost = cost_table(_summary(), max_epochs=4, devices=Devices(2.0, "GPU"))
    assert cost["full_budget_epochs"].tolist() == [4, 4, 0]
    # b2: 12 s for 1 epoch -> 48 s at 4 epochs, on 2 GPUs.
    assert cost["full_budget_device_hours"].tolist() == pytest.approx(
        [40 * 2 / 3600, 48 * 2 / 3600, 3 * 2 / 3600]
    )
    totals = cost_totals(cost, _history())
    assert (totals.trial_epochs, totals.full_budget_trial_epochs) == (5, 8)
    assert totals.device_hours == pytest.approx(55 * 2 / 3600)
    assert totals.saved_fraction == pytest.approx(1 - 55 / 91)
    assert totals.search_wall_s == 40  # t=100 to t=140


def test_cost_is_counted_in_gpus_when_trials_had_them_else_cpu_cores():
    assert devices_per_trial(4, 0.5) == Devices(0.5, "GPU")
    assert devices_per_trial(4, 0) == Devices(4.0, "CPU core")
    assert devices_per_trial(4, "auto").count == 1.0


# --- importance and per-class ------------------------------------------------------------------


def test_study_from_summary_keeps_conditional_params_only_where_sampled_and_drops_errors():
    study = study_from_summary(_summary(), SPACE, _history())
    trials = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(trials) == {"a1", "b2"}
    assert trials["a1"].params == {"arch": "resnet18", "resnet_freeze": "fc", "lr": 1e-3}
    assert "resnet_freeze" not in trials["b2"].params
    assert trials["a1"].value == 0.42 and trials["a1"].intermediate_values[3] == 0.42


def test_importance_ranks_the_parameter_that_drives_the_metric_first():
    rng = np.random.default_rng(0)
    n = 30
    lr = 10 ** rng.uniform(-5, -2, n)
    arch = rng.choice(["resnet18", "capsnet"], n)
    summary = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(n)],
            "param:arch": arch,
            "param:lr": lr,
            "status": "completed",
            "best_val_macro_f1": -np.abs(np.log10(lr) + 3.5),
        }
    )
    result = param_importances(study_from_summary(summary, SPACE))
    assert set(result.table["evaluator"]) == {"PED-ANOVA", "fANOVA"}
    assert result.ranked()[0] == "lr"


def test_importance_with_too_few_trials_is_a_note_not_an_error():
    result = param_importances(study_from_summary(_summary(), SPACE))
    assert result.table.empty
    assert "at least 3" in result.notes[0]


def test_per_class_frame_sorts_the_weakest_class_first_with_train_frequency():
    per_class = [
        {
            "index": k,
            "name": name,
            "threshold": 0.3,
            "holdout_f1@0.5": 0.1,
            "holdout_f1": (k % 5) / 5,
            "train_positives": 10 + k,
            "holdout_positives": 2,
        }
        for k, name in enumerate(class_names())
    ]
    frame = per_class_frame({"per_class": per_class}, train_samples=200)
    assert len(frame) == 28 and frame["f1_tuned"].is_monotonic_increasing
    assert frame.loc[0, "name"] == class_names()[0]
    assert frame.loc[0, "train_frequency"] == pytest.approx(10 / 200)


# --- the whole report on a hand-made experiment (no Ray) ---------------------------------------


def _write_experiment(root: Path, refit: bool = True) -> Path:
    exp = root / "exp"
    record = RunRecord(
        space_path="s.yaml",
        data_dir=str(root / "no-data"),
        builtin_sample=False,
        constants={},
        num_samples=3,
        max_epochs=4,
        seed=0,
        sizes=[32],
        gpus_per_trial=0,
    )
    write_run(exp, record, SPACE)
    _summary().to_csv(exp / "summary.csv", index=False)
    _history().to_csv(exp / "history.csv", index=False)
    write_best(exp, BestTrial("a1", {"arch": "resnet18"}, {}, "val_macro_f1", "max", 0.42, 3, None))
    if refit:
        (exp / "refit").mkdir()
        per_class = [
            {
                "index": k,
                "name": n,
                "threshold": 0.5,
                "holdout_f1@0.5": 0.2,
                "holdout_f1": 0.3,
                "train_positives": 5,
                "holdout_positives": 1,
            }
            for k, n in enumerate(class_names())
        ]
        metrics = {
            "trial_id": "a1",
            "holdout_macro_f1@0.5": 0.2,
            "holdout_macro_f1_tuned": 0.3,
            "val_macro_f1_tuned": 0.5,
            "per_class": per_class,
            "trivial_holdout_macro_f1": {"all_positive": 0.1, "class_prior": 0.05},
        }
        (exp / "refit" / "metrics.json").write_text(json.dumps(metrics))
    return exp


def test_report_on_a_small_experiment_writes_page_table_and_figures(tmp_path):
    exp = _write_experiment(tmp_path)
    page = write_report(exp, tmp_path / "out")
    names = {p.name for p in page.parent.iterdir()}
    assert {
        "report.html",
        "study_table.md",
        "study_table.csv",
        "asha.png",
        "per_class.png",
        "best_so_far.png",
        "cost.png",
        "cost.csv",
    } <= names
    assert page == exp.parent / "out" / "report.html"
    assert "importance needs at least 3 finished trials" in page.read_text()


def test_report_without_refit_says_how_to_get_the_per_class_section(tmp_path):
    exp = _write_experiment(tmp_path, refit=False)
    html = write_report(exp).read_text()  # default: EXP/report
    assert "hpa-tune refit EXPERIMENT_DIR" in html
    assert not (exp / "report" / "per_class.png").exists()


def test_report_names_the_missing_file_and_exits_2(tmp_path):
    exp = _write_experiment(tmp_path)
    (exp / "history.csv").unlink()
    result = CliRunner().invoke(main, ["report", str(exp)])
    assert result.exit_code == 2
    assert f"{exp / 'history.csv'}: not found" in result.output
    table = CliRunner().invoke(main, ["report", str(exp), "--table"])  # the table needs no history
    assert table.exit_code == 0, table.output


# --- the report of a real search -------------------------------------------------------------

FIGURES = {"best_so_far", "asha", "importance", "param_vs_metric", "per_class", "cost"}


@pytest.fixture(scope="module")
def search_report(searched_experiment, tmp_path_factory) -> tuple[Path, Path, str]:
    """``hpa-tune report`` on the shared search, written to a private directory."""
    exp_dir, _ = searched_experiment
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", str(exp_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {out / 'report.html'}"
    return exp_dir, out, (out / "report.html").read_text()


@pytest.mark.ray
def test_report_page_embeds_every_figure_and_each_is_a_real_image(search_report):
    _, out, html = search_report
    embedded = dict(re.findall(r'data-file="([^"]+)" src="data:image/png;base64,([^"]+)"', html))
    assert set(embedded) == {f"{name}.png" for name in FIGURES}
    assert {p.name for p in out.glob("*.png")} == set(embedded)
    for name, data in embedded.items():
        raw = (out / name).read_bytes()
        assert base64.b64decode(data) == raw, name
        pixels = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=float)
        assert pixels.var() > 100, f"{name} looks blank"


@pytest.mark.ray
def test_report_csvs_agree_with_summary_and_history(search_report):
    exp_dir, out, _ = search_report
    summary = pd.read_csv(exp_dir / "summary.csv", dtype={"trial_id": str})
    table = pd.read_csv(out / "study_table.csv", dtype={"trial_id": str})
    assert table["trial_id"].tolist() == summary["trial_id"].tolist()
    for col in (*METRICS, "epochs", "status", "best_val_macro_f1", "best_epoch"):
        assert table[col].tolist() == summary[col].tolist(), col
    winner = json.loads((exp_dir / "best.json").read_text())["trial_id"]
    refit = json.loads((exp_dir / "refit" / "metrics.json").read_text())
    row = table.set_index("trial_id").loc[winner]
    assert row["test_macro_f1_tuned"] == pytest.approx(refit["holdout_macro_f1_tuned"])

    cost = pd.read_csv(out / "cost.csv", dtype={"trial_id": str})
    assert cost[["trial_id", "epochs", "time_total_s"]].values.tolist() == (
        summary[["trial_id", "epochs", "time_total_s"]].values.tolist()
    )
    history = pd.read_csv(exp_dir / "history.csv", dtype={"trial_id": str})
    curve = pd.read_csv(out / "best_so_far.csv", dtype={"trial_id": str})
    assert len(curve) == len(history) == summary["epochs"].sum()
    assert curve["best"].iloc[-1] == pytest.approx(summary["best_val_macro_f1"].max())
    assert len(pd.read_csv(out / "per_class.csv")) == 28
    importance = pd.read_csv(out / "importance.csv")
    assert set(importance["param"]) <= {"lr", "batch_size", "loss_weighting"}
    assert importance.groupby("evaluator")["importance"].sum().tolist() == pytest.approx([1, 1])


@pytest.mark.ray
def test_report_table_prints_the_study_table_in_markdown(
    searched_experiment, search_foreign, tmp_path
):
    exp_dir, _ = searched_experiment
    result = CliRunner().invoke(main, ["report", str(exp_dir), "--table", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    search_foreign.assert_intact()
    rows = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 6
    assert "refit model" in result.output
    frame, md, csv = write_study_table(exp_dir, tmp_path)
    assert md.read_text() in result.output and len(pd.read_csv(csv)) == len(frame) == 6


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed to render the report: apt-get install -y chromium")


@pytest.mark.ray
def test_report_page_renders_in_headless_chromium(search_report, tmp_path):
    _, out, _ = search_report
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            (out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (3000, 1200)
    gray = image.mean(axis=2)
    assert (gray < 250).mean() > 0.05, "the screenshot is mostly blank"
    # The embedded figures' colours (not just black text on white) reached the screen.
    colours = {tuple(c) for c in image[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 200


def test_importance_reads_the_kept_study_with_pruned_trials_at_their_best_epoch():
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    study = optuna.create_study(direction="maximize")
    for state, value, steps, tid in (
        (TrialState.COMPLETE, 0.4, {1: 0.1, 2: 0.4}, "a"),
        (TrialState.PRUNED, None, {1: 0.3, 2: 0.2}, "b"),
        (TrialState.FAIL, None, {}, "c"),
    ):
        study.add_trial(
            create_trial(state=state, value=value, params={"lr": 0.01}, distributions={"lr": lr},
                         intermediate_values=steps, user_attrs={"trial_id": tid})
        )  # fmt: skip
    copy = importance_study(study, "max")
    assert [(t.user_attrs["status"], t.value) for t in copy.trials] == [
        ("completed", 0.4),
        ("pruned", 0.3),
    ]
    frame = trials_frame(study, "val_macro_f1", "max").set_index("trial_id")
    assert frame["status"].to_dict() == {"a": "completed", "b": "pruned", "c": "error"}
    assert frame.loc["b", "best_val_macro_f1"] == 0.3
