"""The resolution-rung bench's arithmetic: compute per rung, full-size bests, rung correlations."""

from __future__ import annotations

import pytest

from bench.rung_correlation import full_size_best, pixel_compute, summarise_seed


def test_an_epoch_at_half_the_side_costs_a_quarter_of_a_full_size_epoch():
    assert pixel_compute([32, 32, 64, 64], 64) == [0.25, 0.5, 1.5, 2.5]


def test_a_progressive_trial_is_ranked_by_its_full_size_epochs_only():
    assert full_size_best([0.9, 0.2, 0.3], [32, 64, 64], 64) == 0.3


def _trial(full: list[float], progressive: list[float]) -> dict:
    return {
        "full": {"scores": full, "sizes": [64] * len(full)},
        "progressive": {"scores": progressive, "sizes": [32] + [64] * (len(progressive) - 1)},
    }


def test_a_low_resolution_epoch_that_ranks_trials_backwards_correlates_minus_one():
    trials = [
        _trial([0.1, 0.2], [0.3, 0.25]),
        _trial([0.2, 0.4], [0.2, 0.35]),
        _trial([0.3, 0.6], [0.1, 0.5]),
    ]
    seed = summarise_seed(trials, 64)
    assert seed["full_vs_full_final"] == pytest.approx([1.0, 1.0])
    assert seed["progressive_vs_full_final"] == pytest.approx([-1.0, 1.0])
    assert seed["final_best_full"] == pytest.approx(0.4)
    assert seed["final_best_progressive"] == pytest.approx((0.25 + 0.35 + 0.5) / 3)
    assert seed["final_spearman"] == pytest.approx(1.0)
    assert seed["progressive_wins"] == 1
