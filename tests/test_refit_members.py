"""Which epoch a retrained refit member keeps: the best by the search's own metric and mode."""

from __future__ import annotations

from hpa_tune.refit.members import improves, refit_config, refit_epochs
from hpa_tune.train.config import TrialConfig


def test_first_score_always_improves_on_nothing():
    assert improves(0.0, None, "max") and improves(5.0, None, "min")


def test_higher_is_better_under_max_and_lower_under_min():
    assert improves(0.3, 0.2, "max") and not improves(0.2, 0.3, "max")
    assert improves(0.2, 0.3, "min") and not improves(0.3, 0.2, "min")


def test_a_tie_keeps_the_earlier_epoch():
    assert not improves(0.25, 0.25, "max") and not improves(0.25, 0.25, "min")


def test_refit_trains_factor_times_the_trial_epochs_and_never_fewer():
    assert refit_epochs(12, 1.0) == 12
    assert refit_epochs(12, 2.0) == 24
    assert refit_epochs(10, 1.5) == 15
    assert refit_epochs(3, 1.1) == 3


def test_a_longer_refit_config_differs_from_the_trials_so_its_checkpoint_is_not_reused():
    cfg = TrialConfig(max_epochs=6)
    assert refit_config(cfg, 1.0) is cfg
    longer = refit_config(cfg, 2.0)
    assert longer.max_epochs == 12 and longer != cfg
    assert longer.model_copy(update={"max_epochs": 6}) == cfg
