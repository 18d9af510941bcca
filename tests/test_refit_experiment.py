"""Where a refit runs is decided below the CLI: here (through a staging copy) or as a Ray task."""

from pathlib import Path

import pytest

import hpa_tune.ray_layer.remote_refit as remote_refit
import hpa_tune.refit.retrain as retrain
import hpa_tune.refit.trial_scores as trial_scores
from hpa_tune.ray_layer.refit_experiment import refit_experiment, refit_on_ray_by_default


@pytest.fixture
def calls(monkeypatch):
    """Stand-ins for the local refit, the trial scoring and the Ray task, recording their calls."""
    seen: list[tuple[str, object]] = []

    def local_refit(exp_dir, **kwargs):
        seen.append(("local", Path(exp_dir)))
        return "local result"

    def on_ray(location, **kwargs):
        seen.append(("ray", location))
        return "ray result"

    monkeypatch.setattr(retrain, "refit", local_refit)
    monkeypatch.setattr(
        trial_scores, "score_trials", lambda exp_dir, **kw: seen.append(("scores", Path(exp_dir)))
    )
    monkeypatch.setattr(remote_refit, "refit_on_ray", on_ray)
    return seen


def test_a_refit_joins_ray_by_default_only_when_ray_address_names_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not refit_on_ray_by_default()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert refit_on_ray_by_default()


def test_a_local_refit_runs_here_and_scores_every_trial_when_asked(calls, monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert refit_experiment(tmp_path, all_trials=True) == "local result"
    assert calls == [("local", tmp_path), ("scores", tmp_path)]


def test_a_refit_on_a_cluster_is_a_ray_task(calls, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert refit_experiment(tmp_path) == "ray result"
    assert refit_experiment(tmp_path, on_ray=False) == "local result"
    assert calls == [("ray", tmp_path), ("local", tmp_path)]
