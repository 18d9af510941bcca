"""`hpa-tune run SPACE --default-only`: the space's default point trained alone, no search."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.errors import HpaTuneError
from hpa_tune.search.default_point import default_only
from hpa_tune.search.planning import RunOptions, plan_run
from hpa_tune.search.space import load_space, parse_space
from tests.test_user_errors import one_line_error

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_space_reduces_to_its_first_point_with_a_refit_on_that_trial(path):
    spec = load_space(path)
    default = default_only(spec)
    assert default.params == {} and default.points_to_evaluate == []
    assert default.fidelity is None and default.refit_epochs_factor == 1
    for name, value in spec.points_to_evaluate[0].items():
        if name in spec.params:
            assert default.fixed[spec.config_key(name)] == value


def test_a_space_with_resolution_rungs_trains_its_default_at_the_full_size():
    default = default_only(load_space(SPACES / "fidelity_space.yaml"))
    assert default.fixed["image_size"] == 64


def _space(**extra):
    return parse_space(
        {
            "params": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "loss_weighting": {"type": "categorical", "choices": ["none", "ln"]},
            },
            **extra,
        },
        "s.yaml",
    )


def test_a_space_without_a_default_point_or_with_a_gap_in_it_is_refused_in_one_line():
    with pytest.raises(HpaTuneError, match=r"--default-only trains points_to_evaluate\[0\]"):
        default_only(_space())
    with pytest.raises(HpaTuneError, match="points_to_evaluate\\[0\\] gives no value for lr"):
        default_only(_space(points_to_evaluate=[{"loss_weighting": "ln"}]))


def test_the_plan_is_one_trial_of_the_default_point(tmp_path):
    options = RunOptions(SPACES / "baseline_space.yaml", storage=tmp_path, default_only=True)
    plan = plan_run(options, "<built-in sample>", builtin_sample=True)
    assert plan.record.num_samples == 1 and plan.spec.params == {}
    assert plan.record.constants["lr"] == 1.0e-3
    assert plan.record.constants["loss_weighting"] == "ln"


def test_default_only_with_more_trials_or_a_warm_start_is_one_line_and_exit_2(tmp_path):
    space = str(SPACES / "baseline_space.yaml")
    for extra in (["--num-samples", "3"], ["--warm-start", str(tmp_path)]):
        result = CliRunner().invoke(
            main, ["run", space, "--default-only", "--storage", str(tmp_path), *extra]
        )
        assert "--default-only trains one trial of the default point" in one_line_error(result)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.ray
def test_a_default_only_run_trains_the_default_once_and_refits_on_its_checkpoint(
    ray_runtime, sample_shards, tmp_path
):
    import json

    import pandas as pd
    import yaml

    from tests.conftest import SEARCH_SPACE

    space = tmp_path / "space.yaml"
    point = {"lr": 3e-3, "batch_size": 32, "loss_weighting": "ln"}
    space.write_text(yaml.safe_dump({**SEARCH_SPACE, "points_to_evaluate": [point]}))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    result = CliRunner().invoke(
        main, [*args, "--name", "d", "--default-only", "--max-epochs", "2", "--progress", "plain"]
    )
    assert result.exit_code == 0, result.output
    assert "the default point alone (--default-only), 1 trial x up to 2 epochs" in result.output
    assert "started (nothing sampled)" in result.output
    exp = tmp_path / "d"
    summary = pd.read_csv(exp / "summary.csv")
    assert len(summary) == 1 and summary["epochs"].tolist() == [2]
    config = json.loads((exp / "refit" / "members" / "0" / "config.json").read_text())
    assert {k: config[k] for k in point} == point
    member = json.loads((exp / "refit" / "ensemble.json").read_text())["members"][0]
    assert member["reused_trial_checkpoint"]  # trained once, not again for the refit
