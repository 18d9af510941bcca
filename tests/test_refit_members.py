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


SCHEDULED = TrialConfig(image_size=64, max_epochs=10, size_schedule=((1, 16), (3, 32), (10, 64)))


def test_a_longer_refit_stretches_the_size_schedule_with_its_epochs():
    longer = refit_config(SCHEDULED, 3.0)
    assert longer.max_epochs == 30 and longer.size_schedule == ((3, 16), (9, 32), (30, 64))
    assert refit_config(SCHEDULED, 1.0) is SCHEDULED


def _candidate(tmp_path, cfg: TrialConfig, best_epoch: int):
    import torch

    from hpa_tune.experiment_files import CONFIG_FILE, MODEL_FILE
    from hpa_tune.refit.members import Candidate

    torch.save({}, tmp_path / MODEL_FILE)
    (tmp_path / CONFIG_FILE).write_text(cfg.model_dump_json())
    row = {"status": "completed", "checkpoint": str(tmp_path), "best_epoch": best_epoch}
    return Candidate("t1", {}, cfg, row)


def test_a_trial_checkpoint_kept_at_a_lower_size_is_retrained_not_reused(tmp_path):
    from hpa_tune.refit.members import _reusable_checkpoint

    assert _reusable_checkpoint(_candidate(tmp_path, SCHEDULED, best_epoch=4)) == tmp_path
    assert _reusable_checkpoint(_candidate(tmp_path, SCHEDULED, best_epoch=3)) is None  # 32 px
