"""Ensembles average their members' probabilities; TTA averages the 8 symmetries of a square."""

import numpy as np
import pytest
import torch
from torch import nn

from hpa_tune.data.symmetry import dihedral
from hpa_tune.refit.ensemble import ensemble_mean, predict_probs


def _batches(n=10, size=8, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.zeros(n, 28)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


class _PooledLinear(nn.Module):
    """Global average pooling, then a linear layer: blind to any flip or rotation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 28)

    def forward(self, x):
        return self.fc(x.mean(dim=(-2, -1)))


class _FlatLinear(nn.Module):
    """A linear layer over every pixel: sees orientation."""

    def __init__(self, size=8) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * size * size, 28)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_dihedral_codes_are_the_eight_distinct_symmetries_of_a_square():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = {tuple(dihedral(x, c).flatten().tolist()) for c in range(8)}
    assert len(views) == 8
    assert torch.equal(dihedral(x, 0), x)
    with pytest.raises(ValueError, match=r"0\.\.7"):
        dihedral(x, 8)


def test_tta_of_a_flip_and_rotation_invariant_model_equals_the_plain_prediction():
    torch.manual_seed(0)
    model = _PooledLinear()
    plain = predict_probs(model, _batches(), tta=False)
    np.testing.assert_allclose(predict_probs(model, _batches(), tta=True), plain, atol=1e-6)


def test_tta_is_the_mean_over_the_eight_views_for_an_orientation_sensitive_model():
    torch.manual_seed(0)
    model = _FlatLinear()
    batches = _batches()
    views = [
        predict_probs(model, [(dihedral(x, c), y) for x, y in batches], tta=False) for c in range(8)
    ]
    tta = predict_probs(model, batches, tta=True)
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(tta, views[0], atol=1e-4)  # the views really differ


def test_ensemble_probabilities_are_the_mean_of_its_members():
    torch.manual_seed(0)
    members = [_FlatLinear(), _PooledLinear(), _FlatLinear()]
    probs = [predict_probs(m, _batches()) for m in members]
    np.testing.assert_allclose(
        ensemble_mean(probs), (probs[0] + probs[1] + probs[2]) / 3, rtol=1e-6
    )
    with pytest.raises(ValueError, match="at least one"):
        ensemble_mean([])
    with pytest.raises(ValueError, match="shape"):
        ensemble_mean([probs[0], probs[0][:2]])


def test_a_weighted_ensemble_is_the_weighted_mean_and_no_weights_mean_equal_weights():
    probs = [np.full((2, 3), v) for v in (0.0, 0.3, 0.9)]
    np.testing.assert_allclose(ensemble_mean(probs, [2, 1, 0]), np.full((2, 3), 0.1))
    np.testing.assert_allclose(ensemble_mean(probs, None), ensemble_mean(probs, [1, 1, 1]))
    with pytest.raises(ValueError, match="one non-negative number per member"):
        ensemble_mean(probs, [1, 1])
