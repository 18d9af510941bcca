"""The benchmark's search-efficiency arithmetic: epochs to a common target, replayed in time order."""

from __future__ import annotations

import pytest

from bench.search_efficiency import first_reach, summarise


def test_first_reach_counts_epochs_in_time_order_until_the_running_best_reaches_the_target():
    events = [(3.0, "b", 0.5), (1.0, "a", 0.2), (2.0, "a", 0.4), (4.0, "b", 0.7)]
    assert first_reach(events, 0.4) == (2, 2.0)
    assert first_reach(events, 0.7) == (4, 4.0)
    assert first_reach(events, 0.8) is None


def _run(strategy: str, seed: int, values: list[float]) -> dict:
    events = [(float(i + 1), "t", v) for i, v in enumerate(values)]
    return {
        "strategy": strategy,
        "seed": seed,
        "wall_s": float(len(values)),
        "trial_epochs": len(values),
        "best": max(values),
        "events": events,
    }


def test_target_is_the_quality_every_strategy_reached_and_ratio_is_against_full_random():
    runs = [
        _run("random_full", 0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),  # reaches 0.5 at epoch 5
        _run("asha_tpe", 0, [0.5, 0.55]),  # final best 0.55; target: min(0.6, 0.55) = 0.55
    ]
    summary = summarise(runs)
    assert summary["asha_tpe"]["per_seed"][0]["target"] == 0.55
    assert summary["asha_tpe"]["trial_epochs_to_target"] == 2
    assert summary["random_full"]["trial_epochs_to_target"] == 6
    assert summary["asha_tpe"]["epochs_saved_vs_baseline"] == pytest.approx(3.0)
    assert summary["random_full"]["epochs_saved_vs_baseline"] == pytest.approx(1.0)
