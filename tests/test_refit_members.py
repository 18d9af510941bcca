"""Which epoch a retrained refit member keeps: the best by the search's own metric and mode."""

from __future__ import annotations

from hpa_tune.refit_members import improves


def test_first_score_always_improves_on_nothing():
    assert improves(0.0, None, "max") and improves(5.0, None, "min")


def test_higher_is_better_under_max_and_lower_under_min():
    assert improves(0.3, 0.2, "max") and not improves(0.2, 0.3, "max")
    assert improves(0.2, 0.3, "min") and not improves(0.3, 0.2, "min")


def test_a_tie_keeps_the_earlier_epoch():
    assert not improves(0.25, 0.25, "max") and not improves(0.25, 0.25, "min")
