"""The benchmark's search-efficiency arithmetic: epochs to a common target, replayed in time order."""

from __future__ import annotations

import pytest

from bench.search_efficiency import (
    STRATEGIES,
    best_full_size,
    complete_seeds,
    early_vs_final,
    first_reach,
    spearman,
    summarise,
    trial_constants,
)


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


def test_pairwise_ratio_uses_only_the_strategy_and_full_random():
    runs = [
        _run("random_full", 0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        _run("asha_tpe", 0, [0.5, 0.6]),  # with full random alone: target 0.6, 6 vs 2 epochs
        _run("asha_random", 0, [0.2]),  # drags the common target down to 0.2
    ]
    summary = summarise(runs)
    assert summary["asha_tpe"]["per_seed"][0]["target"] == 0.2
    assert summary["asha_tpe"]["epochs_saved_vs_baseline"] == pytest.approx(2.0)
    assert summary["asha_tpe"]["epochs_saved_vs_baseline_pairwise"] == pytest.approx(3.0)
    assert summary["asha_random"]["epochs_saved_vs_baseline_pairwise"] == pytest.approx(2.0)


def test_each_strategy_names_the_settings_it_ran_with():
    names = {n: s.describe(1, 3) for n, s in STRATEGIES.items()}
    assert names["random_full"] == "FIFO (every trial its full budget) + random"
    assert "grace 2" in names["asha_tpe_truthful_grace2"]
    assert "multivariate, group, constant liar" in names["asha_tpe_truthful"]
    assert "constant liar" not in names["asha_tpe_truthful_no_liar"]
    assert "independent" in names["asha_tpe_truthful_independent"]


def test_a_stopped_bench_keeps_the_seeds_every_strategy_ran():
    runs = [
        _run("random_full", 0, [0.1]),
        _run("asha_tpe", 0, [0.2]),
        _run("random_full", 1, [0.3]),
    ]
    seeds, kept = complete_seeds(runs)
    assert seeds == [0]
    assert {(r["strategy"], r["seed"]) for r in kept} == {("random_full", 0), ("asha_tpe", 0)}


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    a, b = [0.1, 0.1, 0.3, 0.2, 0.5], [0.2, 0.4, 0.4, 0.1, 0.9]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_early_vs_final_ranks_full_budget_trials_by_each_epochs_score():
    # trial "a" leads at epoch 1 but ends last; "b" and "c" keep their order throughout
    events = []
    for trial, curve in {"a": [0.3, 0.3, 0.3], "b": [0.1, 0.4, 0.5], "c": [0.2, 0.5, 0.6]}.items():
        events += [(float(epoch), trial, v) for epoch, v in enumerate(curve)]
    events.append((0.5, "d", 0.0))  # stopped after one epoch: not a full-budget trial
    events.append((0.6, "e", 0.1, 1.0, True))  # as recorded since the fidelity: also one epoch
    correlations = early_vs_final(events, max_epochs=3)
    assert correlations[1] == pytest.approx(spearman([0.3, 0.1, 0.2], [0.3, 0.5, 0.6]))
    assert correlations[2] == pytest.approx(spearman([0.3, 0.4, 0.5], [0.3, 0.5, 0.6]))
    assert correlations[2] == pytest.approx(1.0)
    assert correlations[1] < 0


def test_under_a_resolution_fidelity_compute_is_pixel_weighted_and_only_full_size_epochs_count():
    # (seconds, trial, score, compute in full-size epochs, trained at the full size)
    events = [
        (1.0, "a", 0.6, 0.25, False),  # a 32 px epoch of a 64 px search: a quarter of the compute
        (2.0, "a", 0.3, 0.25, False),
        (3.0, "a", 0.5, 1.0, True),
    ]
    assert first_reach(events, 0.5) == (1.5, 3.0)  # the 32 px 0.6 does not reach the target
    assert best_full_size(events) == 0.5


def test_the_rung_strategy_trains_at_half_size_up_to_its_first_rung(builtin_sample):
    from bench.__main__ import _refused_strategies, _search_plan_factory

    make_plan, _ = _search_plan_factory(False, 4, 6, image_size=64)
    plan = make_plan(0)
    rungs = STRATEGIES["asha_tpe_truthful_rungs"]
    assert "resolution rungs" in rungs.describe(1, 3)
    constants = trial_constants(rungs, plan)
    assert constants["image_size"] == 64
    assert constants["size_schedule"] == [[2, 32], [6, 64]]  # grace 2: 32 px for epochs 1-2
    assert "size_schedule" not in trial_constants(STRATEGIES["asha_tpe_truthful_grace2"], plan)
    assert _refused_strategies(["asha_tpe_truthful_rungs"], 64) is None
    refused = _refused_strategies(["asha_tpe_truthful_rungs"], 32)
    assert refused is not None and "16 px" in refused and "--image-size 64" in refused
