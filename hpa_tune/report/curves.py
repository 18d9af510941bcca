"""How the search progressed: best-so-far curves and the ASHA rungs (pure, over ``history.csv``).

``history.csv`` has one row per trial and epoch with Ray's ``timestamp`` (end of the epoch, whole
seconds) and ``time_total_s`` (seconds since the trial started), so the search's clock starts at
the earliest ``timestamp - time_total_s``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def ray_elapsed_s(history: pd.DataFrame) -> pd.Series | None:
    """Seconds since the search started at the end of each history row; None without Ray's clock."""
    if not {"timestamp", "time_total_s"} <= set(history.columns):
        return None
    start = (history["timestamp"] - history["time_total_s"]).min()
    return (history["timestamp"] - start).astype(float)


def _elapsed_s(history: pd.DataFrame) -> pd.Series:
    """:func:`ray_elapsed_s`, or without Ray's clock the epochs laid end to end (a sequential
    search's wall-clock)."""
    elapsed = ray_elapsed_s(history)
    if elapsed is None:
        elapsed = history["time_this_iter_s"].fillna(0).cumsum().astype(float)
    return elapsed


def best_so_far(history: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The best ``metric`` seen so far after every trial-epoch, in the order epochs finished.

    Args:
        history: ``history.csv`` (trial_id, epoch, the metric, timestamp, time_total_s).
        metric: the column to follow, e.g. ``val_macro_f1``.
        mode: ``max`` or ``min``.

    Returns:
        Columns trial_id, epoch, elapsed_s, trial_epochs (epochs spent by all trials so far),
        value (this epoch's metric) and best (best so far), one row per history row.
    """
    frame = history[["trial_id", "epoch", metric]].rename(columns={metric: "value"})
    frame = frame.assign(elapsed_s=_elapsed_s(history), _order=np.arange(len(history)))
    frame = frame.sort_values(["elapsed_s", "_order"], kind="stable").reset_index(drop=True)
    frame["trial_epochs"] = np.arange(1, len(frame) + 1)
    values = frame["value"].astype(float)
    frame["best"] = values.cummax() if mode == "max" else values.cummin()
    return frame[["trial_id", "epoch", "elapsed_s", "trial_epochs", "value", "best"]]


def asha_rungs(
    grace_period: int, reduction_factor: float, max_epochs: int, brackets: int = 1
) -> list[float]:
    """The epochs at which ASHA compares trials, as Ray's ``_Bracket`` lays them out.

    Bracket ``s`` has rungs ``grace * rf**(k + s)``; a rung at ``max_epochs`` or later stops
    nothing (the trial ends there anyway), so only earlier ones are returned, ascending.
    """
    grace = min(grace_period, max_epochs)
    rungs: set[float] = set()
    for s in range(brackets):
        n = int(math.log(max_epochs / grace) / math.log(reduction_factor) - s + 1)
        rungs.update(grace * reduction_factor ** (k + s) for k in range(max(n, 0)))
    return sorted(int(r) if float(r).is_integer() else r for r in rungs if r < max_epochs)


def rung_cutoffs(
    history: pd.DataFrame, rungs: list[float], metric: str, mode: str, reduction_factor: float
) -> pd.DataFrame:
    """The cutoff of each rung over every trial that reached it (single-bracket ASHA).

    A trial is recorded at a rung with its metric at the first epoch >= the rung; a trial
    arriving at the end of the search would have needed to beat this cutoff (Ray takes the
    ``1 - 1/rf`` quantile of recorded scores, on the negated metric when minimising).

    Returns:
        Columns rung, trials (how many reached it), cutoff.
    """
    rows = []
    quantile = (1 - 1 / reduction_factor) * 100 if mode == "max" else 100 / reduction_factor
    for rung in rungs:
        reached = history[history["epoch"] >= rung].sort_values("epoch", kind="stable")
        recorded = reached.groupby("trial_id", sort=False)[metric].first().astype(float)
        cutoff = float(np.nanpercentile(recorded, quantile)) if len(recorded) else math.nan
        rows.append({"rung": rung, "trials": len(recorded), "cutoff": cutoff})
    return pd.DataFrame(rows, columns=["rung", "trials", "cutoff"])
