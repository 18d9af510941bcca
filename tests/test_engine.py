"""Training loop pieces: the learning-rate schedule and whole-epoch scores."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from hpa_tune.scoring.metrics import batch_averaged_macro_f1, macro_f1
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import (
    NONFINITE_CHECK_STEPS,
    NonFiniteLossError,
    autocast_dtype,
    build_optimizer,
    lr_at,
    predict,
    train_one_epoch,
)
from hpa_tune.train.fast_path import resolve_fast_path


def cfg(**kw):
    return TrialConfig(**{"lr": 0.1, "max_epochs": 10, **kw})


def test_constant_schedule_with_warmup_ramps_linearly():
    c = cfg(warmup_epochs=2, lr_schedule="constant")
    assert lr_at(1.0, c) == pytest.approx(0.05, rel=1e-3)
    assert lr_at(2.0, c) == lr_at(9.9, c) == 0.1


def test_step_schedule_decays_every_step_epochs():
    c = cfg(lr_schedule="step", lr_step_epochs=3, lr_step_gamma=0.5)
    assert [lr_at(e, c) for e in (0, 2.9, 3, 6, 9)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025, 0.0125]
    )


def test_cosine_schedule_ends_near_zero():
    c = cfg(lr_schedule="cosine")
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(5, c) == pytest.approx(0.05)
    assert lr_at(10, c) == pytest.approx(0.0, abs=1e-12)


def test_onecycle_peaks_at_thirty_percent():
    c = cfg(lr_schedule="onecycle")
    assert lr_at(0, c) == pytest.approx(0.1 / 25)
    assert lr_at(3, c) == pytest.approx(0.1)
    assert lr_at(10, c) == pytest.approx(0.1 / 1e4)
    assert lr_at(3, c) > lr_at(6, c) > lr_at(9, c)


def test_onecycle_with_warmup_peaks_when_the_warmup_ends():
    c = cfg(lr_schedule="onecycle", warmup_epochs=1)
    assert lr_at(0, c) == pytest.approx(0.1 / 25)
    assert lr_at(0.5, c) == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) / 2)
    assert lr_at(1, c) == pytest.approx(0.1)
    assert lr_at(1, c) > lr_at(3, c) > lr_at(9, c)
    assert lr_at(10, c) == pytest.approx(0.1 / 1e4)


def test_cosine_is_the_default_schedule():
    assert TrialConfig().lr_schedule == "cosine"


@pytest.mark.parametrize(
    "name,kind",
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_optimizer_choice_and_l2(name, kind):
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg(optimizer=name, weight_decay=1e-4))
    assert isinstance(opt, kind) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_frozen_model_without_trainable_parameters_is_refused():
    model = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, cfg())


def _batches(n=40, k=28, bs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (torch.rand(n, k, generator=g) < 0.3).float()
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]


def test_predict_scores_the_whole_set_and_the_batch_average_separately():
    torch.manual_seed(0)
    model = nn.Linear(5, 28)
    batches = _batches()
    result = predict(model, batches, nn.BCEWithLogitsLoss())
    y = np.concatenate([b[1].numpy() for b in batches])
    assert result.macro_f1 == pytest.approx(macro_f1(y, result.probs))
    per_batch = [(b[1].numpy(), result.probs[i * 8 : (i + 1) * 8]) for i, b in enumerate(batches)]
    assert result.macro_f1_batch_avg == pytest.approx(batch_averaged_macro_f1(per_batch))
    expected_loss = nn.BCEWithLogitsLoss()(
        model(torch.cat([b[0] for b in batches])), torch.tensor(y)
    ).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_training_epoch_lowers_the_loss_and_reports_the_lr():
    torch.manual_seed(0)
    model = nn.Linear(5, 28)
    batches = _batches()
    c = cfg(lr=0.05, lr_schedule="cosine", max_epochs=5)
    opt = build_optimizer(model, c)
    before = predict(model, batches, nn.BCEWithLogitsLoss()).loss
    for epoch in range(5):
        result = train_one_epoch(
            model, batches, nn.BCEWithLogitsLoss(), opt, c, epoch, len(batches)
        )
    assert predict(model, batches, nn.BCEWithLogitsLoss()).loss < before
    assert result.last_lr == pytest.approx(lr_at(4 + 4 / 5, c))
    assert result.images_per_s > 0 and not math.isnan(result.loss)


class _NanFromStep(nn.Module):
    """BCE loss that turns NaN from (0-based) training step ``k`` on, counting its calls."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, logits, y):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        self.calls += 1
        return loss * float("nan") if self.calls > self.k else loss


@pytest.mark.parametrize("k", [0, NONFINITE_CHECK_STEPS - 1, NONFINITE_CHECK_STEPS, 45])
def test_a_nan_loss_at_step_k_stops_training_within_the_check_interval(k):
    torch.manual_seed(0)
    model = nn.Linear(5, 28)
    steps = 10 * NONFINITE_CHECK_STEPS
    taken = []

    def batches():
        for i in range(steps):
            taken.append(i)
            yield torch.randn(4, 5), torch.randint(0, 2, (4, 28)).float()

    c = cfg(lr=0.01)
    loss_fn = _NanFromStep(k)
    with pytest.raises(NonFiniteLossError, match="epoch 3"):
        train_one_epoch(model, batches(), loss_fn, build_optimizer(model, c), c, 2, steps)
    assert len(taken) <= k + NONFINITE_CHECK_STEPS  # not the whole epoch


def test_a_nan_loss_in_the_last_unchecked_steps_still_ends_the_epoch_in_error():
    model = nn.Linear(5, 28)
    batches = _batches()  # 5 batches: fewer than one check interval
    c = cfg()
    loss_fn = _NanFromStep(len(batches) - 1)
    with pytest.raises(NonFiniteLossError):
        train_one_epoch(model, batches, loss_fn, build_optimizer(model, c), c, 0, len(batches))


def test_fast_path_off_means_fp32_on_cuda_and_auto_means_bf16():
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    off = resolve_fast_path(cfg(fast_path="off"), cuda)
    auto = resolve_fast_path(cfg(fast_path="auto"), cuda)
    assert autocast_dtype(cuda, off.amp) is None
    assert autocast_dtype(cuda, auto.amp) == torch.bfloat16
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, resolve_fast_path(cfg(fast_path="auto"), cpu).amp) is None
    assert autocast_dtype(cpu, resolve_fast_path(cfg(fast_path="on"), cpu).amp) == torch.bfloat16


def test_batch_averaged_f1_is_computed_at_the_trials_batch_size_whatever_the_eval_batches():
    torch.manual_seed(0)
    model = nn.Linear(5, 28)
    loss_fn = nn.BCEWithLogitsLoss()
    at_trial_size = predict(model, _batches(n=72, bs=8), loss_fn)
    four_x = _batches(n=72, bs=32)  # the fast path's eval batches: same samples, same order
    assert predict(model, four_x, loss_fn).macro_f1_batch_avg != pytest.approx(
        at_trial_size.macro_f1_batch_avg
    )  # the batch size does change the figure, so it must be fixed
    result = predict(model, four_x, loss_fn, batch_avg_size=8)
    assert result.macro_f1_batch_avg == pytest.approx(at_trial_size.macro_f1_batch_avg)
    assert result.macro_f1 == pytest.approx(at_trial_size.macro_f1)
