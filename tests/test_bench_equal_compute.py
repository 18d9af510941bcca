"""The equal-compute bench: its default-alone opponent, its compute, and the val-only defaults bench."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bench.defaults_on_val import best_within, tta_on_val, val_curve
from bench.equal_compute import _config_compute, default_space, is_point, search_compute
from hpa_tune.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]
RUNGS = ROOT / "bench" / "results" / "equal_compute-spaces" / "baseline_rungs.yaml"


def test_the_default_arm_fixes_every_parameter_at_the_default_point(tmp_path: Path) -> None:
    path, full_size = default_space(
        ROOT / "search_spaces" / "baseline_space.yaml", tmp_path / "d.yaml"
    )
    space = yaml.safe_load(path.read_text())
    assert space["params"] == {} and space["points_to_evaluate"] == []
    assert space["fixed"]["lr"] == 1.0e-3 and space["fixed"]["loss_weighting"] == "ln"
    assert space["refit_epochs_factor"] == 1
    assert full_size == 64
    load_space(path)  # a valid space


def test_the_default_arm_of_a_rungs_space_trains_at_the_last_rung_throughout(
    tmp_path: Path,
) -> None:
    path, full_size = default_space(RUNGS, tmp_path / "d.yaml")
    space = yaml.safe_load(path.read_text())
    assert "fidelity" not in space
    assert space["fixed"]["image_size"] == full_size == 64
    load_space(path)


def test_a_progressive_run_costs_its_low_resolution_epochs_at_a_quarter() -> None:
    cfg = {"max_epochs": 12, "image_size": 64, "size_schedule": [[2, 32], [12, 64]]}
    assert _config_compute(cfg, 64) == 2 * 0.25 + 10
    assert _config_compute({"max_epochs": 12, "image_size": 64}, 64) == 12


def _history(exp: Path, sizes: list[int]) -> None:
    exp.mkdir(parents=True)
    rows = "".join(f"t,{e + 1},{s},0.1\n" for e, s in enumerate(sizes))
    (exp / "history.csv").write_text("trial_id,epoch,image_size,val_macro_f1_global\n" + rows)


def test_an_earlier_study_without_a_refit_costs_its_pixel_weighted_trial_epochs(
    tmp_path: Path,
) -> None:
    _history(tmp_path / "early", [32, 32, 32, 32, 64])
    assert search_compute(tmp_path / "early", 64) == 4 * 0.25 + 1


def test_a_winner_is_the_default_point_only_when_it_has_every_default_value() -> None:
    point = {"lr": 1e-3, "batch_size": 32}
    assert is_point({"lr": 1e-3, "batch_size": 32, "extra": 1}, point)
    assert not is_point({"lr": 2e-3, "batch_size": 32}, point)
    assert not is_point(None, point)


def test_a_refit_of_f_times_the_epochs_keeps_the_best_val_figure_of_its_first_epochs(
    tmp_path: Path,
) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "history.csv").write_text(
        "trial_id,epoch,val_macro_f1_global\nt,2,0.3\nt,1,0.2\nt,3,0.25\n"
    )
    curve = val_curve(tmp_path / "base")
    assert curve == [0.2, 0.3, 0.25]
    assert best_within(curve, 1) == 0.2 and best_within(curve, 3) == 0.3


def test_tta_is_judged_on_val_at_the_threshold_method_val_chose_for_each_predictor() -> None:
    def predictor(method: str, cv: dict[str, float]) -> dict:
        return {"threshold_method": method, "val_cv_macro_f1": cv, "holdout_macro_f1_tuned": 0.9}

    metrics = {
        "predictors": {
            "single": predictor("global", {"global": 0.30, "shrunk": 0.40}),
            "single_tta": predictor("shrunk", {"global": 0.50, "shrunk": 0.35}),
        }
    }
    assert tta_on_val(metrics) == (0.30, 0.35)  # never a holdout figure


def test_defaults_on_val_writes_its_tables_from_finished_runs_and_reads_no_holdout(
    tmp_path: Path,
) -> None:
    from bench import defaults_on_val

    (tmp_path / "shards10").mkdir()
    (tmp_path / "shards10" / "manifest.json").write_text("{}")  # prepared: not made again
    for label, epochs in (("val-base", 72), ("val-bce", 36)):
        exp = tmp_path / "runs" / f"{label}-seed10"
        exp.mkdir(parents=True)
        (exp / "best.json").write_text("{}")  # finished: not run again
        rate = 0.004 if label == "val-base" else 0.002
        rows = "".join(f"t,{e},{min(rate * e, 0.25):.4f}\n" for e in range(1, epochs + 1))
        (exp / "history.csv").write_text("trial_id,epoch,val_macro_f1_global\n" + rows)
    refit = tmp_path / "runs" / "val-base-seed10" / "refit"
    refit.mkdir()
    single = {"threshold_method": "global", "val_cv_macro_f1": {"global": 0.2}}
    tta = {"threshold_method": "global", "val_cv_macro_f1": {"global": 0.25}}
    (refit / "metrics.json").write_text(
        json.dumps({"predictors": {"single": single, "single_tta": tta}})
    )
    out = tmp_path / "out.json"
    defaults_on_val.main(
        ["--work", str(tmp_path), "--seeds", "10", "--tta-from", str(tmp_path / "runs"),
         "--json", str(out)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["refit"]["3"] == 0.144 and row["refit"]["5"] == 0.24 and row["refit"]["6"] == 0.25
    assert row["best_epoch"] == 63 and (row["bce_pos"], row["bce"]) == (0.144, 0.072)
    assert result["tta"] == [{"experiment": "val-base-seed10", "alone": 0.2, "tta": 0.25}]
    assert result["command"].startswith("python bench/defaults_on_val.py --work")
