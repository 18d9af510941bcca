"""The refit's ensemble members: the K best distinct configurations of a search, each retrained
on train (best val epoch kept), or reused when its trial already did exactly that.

A trial's kept checkpoint is reused when the trial ran to ``max_epochs`` (ASHA did not stop it)
and the configuration saved beside it equals the replayed one: retraining it with the same seed
would select the same epoch of the same run.

Members are retrained here one after another, or elsewhere beforehand (on a cluster, one Ray task
each: ``ray_layer.remote_members``) and handed in as ``TrainedMember``s.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import (
    CONFIG_FILE,
    HISTORY_FILE,
    MEMBERS_DIR,
    MODEL_FILE,
    SUMMARY_FILE,
)
from hpa_tune.search.experiment import BestTrial
from hpa_tune.search.space import SpaceSpec, replay
from hpa_tune.search.trial_table import COMPLETED, ERROR
from hpa_tune.train.build import build_model, default_device
from hpa_tune.train.checkpoint import load_checkpoint_model
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import NonFiniteLossError
from hpa_tune.train.size_schedule import scale_schedule
from hpa_tune.train.trainable import run_epochs
from hpa_tune.train.trial_data import TrialData

Progress = Callable[[int, int], None]


@dataclass
class Member:
    """One trained ensemble member."""

    trial_id: str
    params: dict[str, Any]
    cfg: TrialConfig
    model: nn.Module
    best_epoch: int
    history: list[dict[str, Any]]
    reused: bool
    # Where and when it trained when a Ray task trained it: node_id, started, ended (epoch s).
    task: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainedMember:
    """A member retrained before the refit (a Ray task of its own): its best epoch's weights (on
    the CPU) or, when retraining failed, why; and the node and wall times it trained at."""

    trial_id: str
    weights: dict[str, torch.Tensor] | None
    best_epoch: int = 0
    history: list[dict[str, Any]] | None = None
    failure: str | None = None
    node_id: str | None = None
    started: float | None = None
    ended: float | None = None

    def task(self) -> dict[str, Any]:
        """Where and when it trained, as the refit records it."""
        return {"node_id": self.node_id, "started": self.started, "ended": self.ended}


@dataclass(frozen=True)
class Candidate:
    """A trial chosen for the ensemble, before training."""

    trial_id: str
    params: dict[str, Any]
    cfg: TrialConfig
    row: dict[str, Any]


def _row_params(row: pd.Series, spec: SpaceSpec) -> dict[str, Any]:
    """The sampled params of a ``summary.csv`` row, with values typed as the space's choices."""
    params: dict[str, Any] = {}
    for name, p in spec.params.items():
        value = row.get(f"param:{name}")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if p.choices:
            value = next((c for c in p.choices if c == value or str(c) == str(value)), value)
        elif p.type == "int":
            value = int(value)
        params[name] = value
    return params


def refit_epochs(max_epochs: int, factor: float) -> int:
    """Epochs a refit member trains: ``factor`` times the trials' ``max_epochs``, rounded, and
    never fewer than they had."""
    return max(max_epochs, round(max_epochs * factor))


def refit_config(cfg: TrialConfig, factor: float) -> TrialConfig:
    """A trial's configuration as the refit trains it (more epochs when ``factor`` > 1, so its
    checkpoint, saved with fewer, is not reused). A size schedule (resolution fidelity) is
    stretched with it: the same sizes in the same proportions of the longer training."""
    epochs = refit_epochs(cfg.max_epochs, factor)
    if epochs == cfg.max_epochs:
        return cfg
    schedule = cfg.size_schedule and scale_schedule(cfg.size_schedule, epochs)
    return cfg.model_copy(update={"max_epochs": epochs, "size_schedule": schedule})


def top_distinct_candidates(
    exp_dir: Path, spec: SpaceSpec, constants: dict[str, Any], best: BestTrial, k: int
) -> list[Candidate]:
    """The winner, then the next best trials (``summary.csv`` order) with configurations not seen
    yet, up to ``k``; trials that never reported the metric, or ended in an error (whatever they
    scored before it), are skipped."""
    summary = pd.read_csv(exp_dir / SUMMARY_FILE, dtype={"trial_id": str})
    metric_col = f"best_{spec.metric}"
    summary = summary[summary[metric_col].notna()] if metric_col in summary else summary
    summary = summary[summary["status"] != ERROR] if "status" in summary else summary
    factor = spec.refit_epochs_factor
    winner_cfg = refit_config(replay(spec, best.params, constants), factor)
    rows = {str(r["trial_id"]): r for _, r in summary.iterrows()}
    winner_row = rows.get(best.trial_id)
    chosen = [
        Candidate(
            best.trial_id,
            best.params,
            winner_cfg,
            dict(winner_row) if winner_row is not None else {},
        )
    ]
    for trial_id, row in rows.items():
        if len(chosen) >= k:
            break
        params = _row_params(row, spec)
        cfg = refit_config(replay(spec, params, constants), factor)
        if all(cfg != c.cfg for c in chosen):
            chosen.append(Candidate(trial_id, params, cfg, dict(row)))
    return chosen


def _reusable_checkpoint(candidate: Candidate) -> Path | None:
    row = candidate.row
    checkpoint = Path(str(row.get("checkpoint") or ""))
    if row.get("status") != COMPLETED or not (checkpoint / MODEL_FILE).is_file():
        return None
    try:
        saved = TrialConfig(**json.loads((checkpoint / CONFIG_FILE).read_text()))
    except (OSError, ValueError):
        return None
    if saved != candidate.cfg:
        return None
    if saved.size_schedule is None:
        return checkpoint
    # A checkpoint kept at a lower rung of a size schedule is retrained: members are full size.
    best = pd.to_numeric(row.get("best_epoch"), errors="coerce")
    best_epoch = saved.max_epochs if pd.isna(best) else int(best)
    return checkpoint if saved.epoch_size(best_epoch) == saved.image_size else None


def needs_retraining(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates the refit must train (no reusable trial checkpoint), in their order."""
    return [c for c in candidates if _reusable_checkpoint(c) is None]


def _trial_history(exp_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    path = exp_dir / HISTORY_FILE
    if not path.is_file():
        return []
    frame = pd.read_csv(path, dtype={"trial_id": str})
    keep = [c for c in frame.columns if not c.startswith("val_class_f1") and c != "arch"]
    return frame.loc[frame["trial_id"] == trial_id, keep].to_dict("records")


def improves(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) under ``mode`` (``max`` or ``min``)."""
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def train_best_epoch(
    cfg: TrialConfig,
    data: TrialData,
    log: Any,
    progress: Callable[[int], None] | None = None,
    metric: str = "val_macro_f1",
    mode: str = "max",
) -> tuple[nn.Module, int, list[dict[str, Any]]]:
    """Train for max_epochs and keep the epoch with the best ``metric`` (the search's, so a
    retrained member keeps the epoch its trial's checkpoint would have kept); with a size
    schedule, the best of the epochs at the full size, the one the member predicts at."""
    best_state: dict[str, Any] | None = None
    best_value: float | None = None
    best_epoch, history = 0, []
    model = None
    for outcome in run_epochs(cfg, data):
        m = outcome.metrics
        history.append({k: v for k, v in m.items() if k != "val_class_f1"})
        log(
            f"refit epoch {m['epoch']}/{cfg.max_epochs}: train loss {m['train_loss']:.4f}, "
            f"val macro F1 {m['val_macro_f1']:.4f}, {metric} {m[metric]:.4f}"
        )
        if progress:
            progress(outcome.epoch)
        at_full_size = cfg.epoch_size(outcome.epoch) == cfg.image_size
        if at_full_size and improves(float(m[metric]), best_value, mode):
            best_state = copy.deepcopy(outcome.model.state_dict())
            best_value, best_epoch = float(m[metric]), outcome.epoch
        model = outcome.model
    assert model is not None and best_state is not None
    model.load_state_dict(best_state)
    return model, best_epoch, history


# What ends one member's retraining and may spare the others: a loss that became non-finite
# (the trial's configuration diverges again), a project error, running out of memory.
MEMBER_FAILURES = (NonFiniteLossError, HpaTuneError, torch.OutOfMemoryError)


def failure_reason(trial_id: str, err: BaseException | str) -> str:
    """The one line that says why retraining a member failed (its warning and error text)."""
    why = err if isinstance(err, str) else _one_line(err)
    return f"retraining trial {trial_id} failed: {why}"


def retrain_member(
    cand: Candidate,
    data: TrialData,
    log: Any = print,
    progress: Callable[[int], None] | None = None,
    metric: str = "val_macro_f1",
    mode: str = "max",
) -> TrainedMember:
    """Retrain one candidate (``train_best_epoch``) and keep its best weights on the CPU, or the
    reason when it fails with one of ``MEMBER_FAILURES`` (the refit then skips it)."""
    try:
        model, best_epoch, history = train_best_epoch(cand.cfg, data, log, progress, metric, mode)
    except MEMBER_FAILURES as err:
        return TrainedMember(cand.trial_id, None, failure=failure_reason(cand.trial_id, err))
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return TrainedMember(cand.trial_id, weights, best_epoch, history)


def _model_from_weights(cfg: TrialConfig, weights: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(cfg.model_copy(update={"pretrained": "none"})).to(default_device())
    model.load_state_dict(weights)
    return model


def obtain_members(
    exp_dir: Path,
    candidates: list[Candidate],
    data: TrialData,
    log: Any = print,
    progress: Progress | None = None,
    metric: str = "val_macro_f1",
    mode: str = "max",
    trained: Mapping[str, TrainedMember] | None = None,
) -> list[Member]:
    """Reuse, take from ``trained`` (by trial id: retrained beforehand, e.g. as Ray tasks) or
    retrain here each candidate (keeping its best epoch by the search's ``metric``);
    ``progress(epochs_done, epochs_total)`` over those retrained here.

    A member whose retraining fails (``MEMBER_FAILURES``, here or where it was trained) is
    skipped with a warning while others remain.

    Raises:
        HpaTuneError: every member failed (one line per the first failure's trial and reason).
    """
    trained = trained or {}
    reusable = [_reusable_checkpoint(c) for c in candidates]
    total = sum(
        c.cfg.max_epochs
        for c, r in zip(candidates, reusable, strict=True)
        if r is None and c.trial_id not in trained
    )
    done = 0
    members = []
    failures: list[str] = []
    for i, (cand, checkpoint) in enumerate(zip(candidates, reusable, strict=True)):
        task = None
        if checkpoint is not None:
            log(
                f"refit: member {i + 1}/{len(candidates)} reuses trial {cand.trial_id}'s checkpoint"
            )
            model, _ = load_checkpoint_model(checkpoint)
            best_epoch = int(cand.row.get("best_epoch") or cand.cfg.max_epochs)
            history = _trial_history(exp_dir, cand.trial_id)
        elif cand.trial_id in trained:
            done_elsewhere = trained[cand.trial_id]
            task = done_elsewhere.task()
            if done_elsewhere.weights is None:
                reason = done_elsewhere.failure or failure_reason(cand.trial_id, "no weights")
                failures.append(reason)
                log(f"warning: refit: member {i + 1}/{len(candidates)} skipped, {reason}")
                continue
            model = _model_from_weights(cand.cfg, done_elsewhere.weights)
            best_epoch = done_elsewhere.best_epoch
            history = list(done_elsewhere.history or [])
        else:
            log(
                f"refit: member {i + 1}/{len(candidates)} retrains trial {cand.trial_id} "
                f"({cand.cfg.arch}) for {cand.cfg.max_epochs} epochs on the train split"
            )
            base = done

            def tick(epoch: int, base: int = base) -> None:
                if progress:
                    progress(base + epoch, max(total, 1))

            try:
                model, best_epoch, history = train_best_epoch(
                    cand.cfg, data, log, tick, metric, mode
                )
            except MEMBER_FAILURES as err:
                reason = failure_reason(cand.trial_id, err)
                failures.append(reason)
                log(f"warning: refit: member {i + 1}/{len(candidates)} skipped, {reason}")
                continue
            finally:
                done += cand.cfg.max_epochs
        how = "reused" if checkpoint is not None else "retrained"
        how += f" on node {task['node_id']}" if task else ""
        log(
            f"refit: member {i + 1}/{len(candidates)} (trial {cand.trial_id}) {how}, "
            f"best epoch {best_epoch}"
        )
        members.append(
            Member(
                cand.trial_id,
                cand.params,
                cand.cfg,
                model,
                best_epoch,
                history,
                checkpoint is not None,
                task,
            )
        )
    if not members:
        raise HpaTuneError(f"refit: no member could be trained; {'; '.join(failures)}")
    return members


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def save_members(out: Path, members: list[Member]) -> list[dict[str, Any]]:
    """Each member's weights and config under ``out/members/<i>/``; returns their index entries."""
    entries = []
    for i, member in enumerate(members):
        directory = out / MEMBERS_DIR / str(i)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(member.model.state_dict(), directory / MODEL_FILE)
        (directory / CONFIG_FILE).write_text(member.cfg.model_dump_json(indent=2) + "\n")
        entries.append(
            {
                "dir": f"members/{i}",
                "trial_id": member.trial_id,
                "params": member.params,
                "best_epoch": member.best_epoch,
                "reused_trial_checkpoint": member.reused,
            }
        )
        if member.task:  # trained as a Ray task of its own: where and when (epoch seconds)
            entries[-1]["ray_task"] = member.task
    return entries
