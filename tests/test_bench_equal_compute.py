"""The equal-compute bench's opponent: the space's default point alone, at the full size."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.equal_compute import _config_compute, default_space
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
