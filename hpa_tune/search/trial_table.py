"""The trial table: one row per trial with its parameters, fate and last/best scores (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hpa_tune.train.size_schedule import FULL_SIZE

COMPLETED, PRUNED, ERROR = "completed", "pruned", "error"
METRIC_COLUMNS = (
    "train_macro_f1",
    "train_macro_f1_batch_avg",
    "train_loss",
    "val_macro_f1",
    "val_macro_f1_batch_avg",
    "val_macro_f1_global",
    "val_loss",
)


@dataclass
class TrialRecord:
    """One trial as the search left it: sampled params and the per-epoch history of reports."""

    trial_id: str
    params: dict[str, Any]
    arch: str
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    path: str = ""  # the checkpoint of the trial's best epoch (else the trial directory)


def never_reported(record: TrialRecord) -> bool:
    """Whether the search ended before the trial reported its first epoch, without an error.

    Only the time budget stops a trial that has not reported (ASHA decides on reports): such a
    trial, started or still waiting for resources, is no trial. It has no row in ``summary.csv``
    and the end of the search says that the budget ran out.
    """
    return not record.history and not record.error


def ended_status(last_epoch: int, max_epochs: int) -> str:
    """How a trial that ended without an error ended: ``completed`` at max_epochs, else ``pruned``."""
    return COMPLETED if last_epoch >= max_epochs else PRUNED


def trial_status(record: TrialRecord, max_epochs: int) -> str:
    """``error`` if it raised, else :func:`ended_status` of its last reported epoch."""
    if record.error:
        return ERROR
    return ended_status(record.history[-1]["epoch"] if record.history else 0, max_epochs)


def best_report_index(scores: list[float], mode: str) -> int | None:
    """Index of the best of a trial's per-epoch ``scores`` under ``mode``; None when empty.

    The one tie rule of the project: on equal scores the *earliest* epoch wins (``summary.csv``,
    ``pick_best``, the refit, and the checkpoint Ray keeps, see ``checkpoint_rank``).
    """
    if not scores:
        return None
    sign = 1 if mode == "max" else -1
    return max(range(len(scores)), key=lambda i: (sign * scores[i], -i))


def ranking_reports(history: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The epochs that rank a trial: those that report ``metric``, at the full image size.

    Under a resolution fidelity an epoch at a low rung is scored on low-resolution val images;
    ASHA compares trials there (all at the same size), but the trial table, the winner and the
    checkpoint Ray keeps go by full-size epochs only. A trial ASHA stopped before its full size
    has none, and ranks after every trial that has. Epochs without the flag (no fidelity, or an
    experiment older than it) count as full size.
    """
    return [h for h in history if metric in h and h.get(FULL_SIZE, True)]


def checkpoint_rank(value: float, best_so_far: float | None, mode: str) -> float:
    """The score Ray's checkpoint manager ranks an epoch's checkpoint by (``max`` order).

    The metric itself (signed) when it strictly beats every earlier epoch of the trial, else
    ``-inf``: Ray keeps the later of two equal scores, but a tie must keep the earlier epoch,
    the one ``summary.csv`` names (``best_report_index``). Ray keeps the latest checkpoint
    anyway (a retry restarts from it).
    """
    sign = 1.0 if mode == "max" else -1.0
    if best_so_far is None or sign * value > sign * best_so_far:
        return sign * value
    return float("-inf")


def summary_frame(
    records: list[TrialRecord], max_epochs: int, metric: str, mode: str
) -> pd.DataFrame:
    """The trial table, best trial first; errored trials after every other (never winners).

    Columns: trial_id, arch, one ``param:<name>`` column per sampled parameter, epochs, status,
    the last epoch's train/val F1 and loss, ``best_<metric>`` and the epoch it was reached,
    ``node_id`` (the Ray node it ran on).
    """
    rows = []
    for rec in records:
        last = rec.history[-1] if rec.history else {}
        reported = ranking_reports(rec.history, metric)
        scores = [h[metric] for h in reported]
        best_idx = best_report_index(scores, mode)
        row: dict[str, Any] = {"trial_id": rec.trial_id, "arch": rec.arch}
        row.update({f"param:{k}": v for k, v in rec.params.items()})
        row["epochs"] = last.get("epoch", 0)
        row["status"] = trial_status(rec, max_epochs)
        row.update({col: last.get(col) for col in METRIC_COLUMNS})
        row[f"best_{metric}"] = scores[best_idx] if best_idx is not None else None
        row["best_epoch"] = reported[best_idx]["epoch"] if best_idx is not None else None
        row["trainable_params"] = last.get("trainable_params")
        row["time_total_s"] = last.get("time_total_s")
        row["node_id"] = last.get("node_id")  # the Ray node of its last epoch
        row["error"] = (rec.error or "").splitlines()[-1] if rec.error else ""
        row["checkpoint"] = rec.path
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    key = f"best_{metric}"
    frame = frame.sort_values(key, ascending=(mode == "min"), na_position="last", kind="stable")
    errored = frame["status"] == ERROR
    return pd.concat([frame[~errored], frame[errored]]).reset_index(drop=True)


def history_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """Every epoch report of every trial, one row each, keyed by ``trial_id`` and ``epoch``."""
    rows = [
        {"trial_id": rec.trial_id, "arch": rec.arch, **h} for rec in records for h in rec.history
    ]
    return pd.DataFrame(rows)
