"""Greedy ensemble selection with replacement, cross-validated within val, on hand-made
probabilities: weak members get no weight, complementary ones are both chosen, and the winner
alone is kept unless an ensemble beats it."""

import numpy as np
import pytest

from hpa_tune.scoring.ensemble_selection import (
    greedy_counts,
    select_ensemble,
    weighted_mean,
)

N, K = 90, 4


def _labels(seed: int = 0) -> np.ndarray:
    y = (np.random.default_rng(seed).random((N, K)) < 0.3).astype(np.uint8)
    y[0] = 1  # every class has positives
    return y


def _knows(y: np.ndarray, classes: list[int], seed: int) -> np.ndarray:
    """A candidate that separates ``classes`` perfectly (positives 1, negatives 0) and guesses
    uniformly at random on the others."""
    probs = np.random.default_rng(seed).random(y.shape)
    probs[:, classes] = y[:, classes]
    return probs


def test_a_strong_winner_keeps_all_the_weight_over_a_weak_candidate():
    y = _labels()
    strong = np.clip(y * 0.8 + 0.1 + np.random.default_rng(1).normal(0, 0.05, y.shape), 0, 1)
    weak = np.random.default_rng(2).random(y.shape)
    choice = select_ensemble(y, [strong, weak])
    assert not choice.is_ensemble
    assert choice.weights.tolist() == [1.0, 0.0]
    assert choice.record(["w", "x"])["chosen"] == "winner_alone"


def test_two_complementary_candidates_are_both_chosen():
    y = _labels()
    first, second = _knows(y, [0, 1], seed=1), _knows(y, [2, 3], seed=2)
    choice = select_ensemble(y, [first, second])
    assert choice.is_ensemble
    assert choice.weights.tolist() == [0.5, 0.5]
    assert choice.cv_ensemble > choice.cv_winner
    record = choice.record(["a", "b"])
    assert record["chosen"] == "weighted_ensemble"
    assert record["weights"] == {"a": 0.5, "b": 0.5}


def test_a_weak_third_candidate_gets_no_weight_beside_two_complementary_ones():
    y = _labels()
    cands = [_knows(y, [0, 1], 1), np.random.default_rng(9).random(y.shape), _knows(y, [2, 3], 2)]
    choice = select_ensemble(y, cands)
    assert choice.weights.tolist() == [0.5, 0.0, 0.5]


def test_selection_is_with_replacement_and_weights_are_counts_over_total():
    a, b = np.zeros((3, 2)), np.ones((3, 2))
    target = (2 * a + b) / 3

    def closeness(_y, probs):
        return -float(np.abs(probs - target).sum())

    counts = greedy_counts(np.zeros((3, 2)), [a, b], score=closeness)
    assert counts.tolist() == [2, 1]
    np.testing.assert_allclose(weighted_mean([a, b], counts), target)


def test_greedy_stops_after_the_given_rounds():
    a, b = np.zeros((3, 2)), np.ones((3, 2))
    counts = greedy_counts(np.zeros((3, 2)), [a, b], rounds=2, score=lambda _y, p: float(p.sum()))
    assert counts.tolist() == [1, 2]


def test_falls_back_to_the_winner_when_no_candidate_adds_anything():
    y = _labels()
    winner = _knows(y, [0, 1], 1)
    choice = select_ensemble(y, [winner, winner.copy()])
    assert not choice.is_ensemble and choice.weights.tolist() == [1.0, 0.0]
    assert choice.cv_ensemble == pytest.approx(choice.cv_winner)
    assert "no ensemble beat the winner" in choice.reason


def test_one_candidate_is_the_winner_alone():
    y = _labels()
    choice = select_ensemble(y, [_knows(y, [0], 1)])
    assert choice.weights.tolist() == [1.0] and choice.reason == "one candidate"


def test_selection_is_deterministic():
    y = _labels()
    cands = [_knows(y, [0], 1), _knows(y, [1, 2], 2), np.random.default_rng(3).random(y.shape)]
    first, second = select_ensemble(y, cands), select_ensemble(y, cands)
    assert first.weights.tolist() == second.weights.tolist()
    assert (first.cv_ensemble, first.cv_winner) == (second.cv_ensemble, second.cv_winner)


def test_a_candidate_of_the_wrong_shape_is_named():
    y = _labels()
    with pytest.raises(ValueError, match="candidate 1"):
        select_ensemble(y, [y.astype(float), y[:5].astype(float)])
