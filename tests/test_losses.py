"""Losses match hand-computed values; class weights match the study's formulas."""

import math

import numpy as np
import pytest
import torch

from hpa_tune.classes import class_table
from hpa_tune.train.losses import MIN_CLASS_WEIGHT, class_weights, create_loss, list_losses


def test_class_weights_follow_the_formulas_on_hpa_counts():
    pos = np.array([c.train_count for c in class_table()])
    n = 31072
    np.testing.assert_allclose(class_weights(pos, n, "none"), np.ones(28))
    np.testing.assert_allclose(class_weights(pos, n, "full"), (n - pos) / pos, rtol=1e-6)
    np.testing.assert_allclose(class_weights(pos, n, "ln"), np.log((n - pos) / pos), rtol=1e-6)
    assert class_weights(pos, n, "ln")[27] == pytest.approx(math.log((n - 11) / 11), rel=1e-6)


def test_class_weights_floor_and_absent_class():
    w = class_weights(np.array([90, 0]), 100, "ln")
    assert w[0] == pytest.approx(MIN_CLASS_WEIGHT)  # ln(10/90) < 0 would reward mistakes
    assert w[1] == pytest.approx(math.log(99 / 1), rel=1e-6)  # no positive counts as one
    with pytest.raises(ValueError, match="none"):
        class_weights(np.array([1]), 10, "sqrt")


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_weighted_bce_weights_both_terms():
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([[1.0, 0.0]])
    w = np.array([3.0, 0.5])
    expected = (-3.0 * math.log(_sig(2.0)) + -0.5 * math.log(1 - _sig(-1.0))) / 2
    assert create_loss("bce", w)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_positive_only_weighting_leaves_negative_term_alone():
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([[1.0, 0.0]])
    w = np.array([3.0, 0.5])
    expected = (-3.0 * math.log(_sig(2.0)) + -math.log(1 - _sig(-1.0))) / 2
    assert create_loss("bce_pos", w)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_equals_weighted_bce():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 28), (torch.rand(8, 28) < 0.2).float()
    w = np.linspace(0.5, 2, 28)
    focal = create_loss("focal", w, gamma=0.0)(logits, target)
    bce = create_loss("bce", w)(logits, target)
    assert focal.item() == pytest.approx(bce.item(), rel=1e-6)


def test_focal_downweights_easy_examples():
    target = torch.tensor([[1.0]])
    easy, hard = torch.tensor([[4.0]]), torch.tensor([[-1.0]])
    focal = create_loss("focal", gamma=2.0)
    bce = create_loss("bce")
    assert focal(easy, target) / bce(easy, target) < focal(hard, target) / bce(hard, target)


def test_margin_loss_matches_hand_computation_and_is_zero_for_perfect_capsules():
    lengths = torch.tensor([[0.8, 0.3]])
    logits = torch.log(lengths / (1 - lengths))
    target = torch.tensor([[1.0, 0.0]])
    expected = (0.9 - 0.8) ** 2 + 0.5 * (0.3 - 0.1) ** 2
    assert create_loss("margin")(logits, target).item() == pytest.approx(expected, rel=1e-5)
    perfect = torch.log(torch.tensor([[0.95, 0.05]]) / torch.tensor([[0.05, 0.95]]))
    assert create_loss("margin")(perfect, target).item() == pytest.approx(0.0, abs=1e-12)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_loss("hinge")
    for name in list_losses():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="does not accept"):
        create_loss("bce", gamma=2.0)
