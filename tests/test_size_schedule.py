"""Resolution as a fidelity: which image size each epoch trains at, laid on ASHA's rungs."""

import pytest

from hpa_tune.train.size_schedule import (
    asha_rung_epochs,
    scale_schedule,
    size_at_epoch,
    size_schedule,
)


@pytest.mark.parametrize(
    ("grace", "rf", "max_epochs", "rungs"),
    [(1, 3, 10, [1, 3, 9]), (1, 2, 4, [1, 2]), (2, 3, 15, [2, 6]), (1, 3, 9, [1, 3]), (1, 2.5, 10, [1, 3, 7]), (5, 2, 4, [])],
)  # fmt: skip
def test_rungs_are_the_epochs_at_which_single_bracket_asha_judges(grace, rf, max_epochs, rungs):
    assert asha_rung_epochs(grace, rf, max_epochs) == rungs


def test_rungs_match_the_ones_ray_lays_out():
    from hpa_tune.report.curves import asha_rungs  # the report's copy of Ray's _Bracket maths

    for grace, rf, max_epochs in [(1, 3, 10), (2, 2, 20), (1, 4, 30), (3, 3, 27)]:
        assert asha_rung_epochs(grace, rf, max_epochs) == asha_rungs(grace, rf, max_epochs)


def test_each_size_trains_up_to_its_rung_and_the_full_size_to_the_end():
    schedule = size_schedule([128, 256, 512], grace_period=1, reduction_factor=3, max_epochs=10)
    assert schedule == ((1, 128), (3, 256), (10, 512))
    sizes = [size_at_epoch(schedule, epoch, 512) for epoch in range(1, 11)]
    assert sizes == [128, 256, 256] + [512] * 7


def test_fewer_sizes_than_rungs_use_the_first_rungs():
    assert size_schedule([32, 64], 2, 2, 20) == ((2, 32), (20, 64))


def test_more_sizes_than_rungs_before_max_epochs_is_an_error_naming_the_rungs():
    with pytest.raises(ValueError, match=r"4 sizes need 3 ASHA rung\(s\) .* give 2 \(\[1, 3\]\)"):
        size_schedule([16, 32, 64, 128], 1, 3, 8)


def test_without_a_schedule_every_epoch_is_at_the_full_size():
    assert size_at_epoch(None, 5, 64) == 64


@pytest.mark.parametrize(
    ("max_epochs", "scaled"),
    [(30, ((3, 16), (9, 32), (30, 64))), (10, ((1, 16), (3, 32), (10, 64))), (11, ((1, 16), (3, 32), (11, 64)))],
)  # fmt: skip
def test_a_refit_stretches_the_schedule_in_proportion(max_epochs, scaled):
    assert scale_schedule(((1, 16), (3, 32), (10, 64)), max_epochs) == scaled


def test_a_stretched_schedule_keeps_every_size_at_least_one_epoch():
    assert scale_schedule(((1, 16), (2, 32), (3, 64)), 4) == ((1, 16), (3, 32), (4, 64))
