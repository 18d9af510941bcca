"""The end of a search, free of Ray: the winner among its trials (``pick_best``) and the files a
finished search writes (``summary.csv``, ``history.csv``, ``best.json``)."""

from __future__ import annotations

from typing import Any

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import HISTORY_FILE, SUMMARY_FILE
from hpa_tune.search.experiment import BestTrial, write_best
from hpa_tune.search.planning import RunPlan
from hpa_tune.search.space import resolve_config
from hpa_tune.search.trial_table import (
    TrialRecord,
    best_report_index,
    history_frame,
    never_reported,
    ranking_reports,
    summary_frame,
)


def pick_best(plan: RunPlan, records: list[TrialRecord]) -> BestTrial:
    """The trial with the best ``metric`` at any full-size epoch (``ranking_reports``), among the
    trials that ended without an error (one whose loss became non-finite after a good epoch is
    never the winner); on a tie the earlier trial, and within a trial the earlier epoch
    (``summary.best_report_index``).

    Raises:
        HpaTuneError: no trial that ended without an error reported the metric.
    """
    metric, mode = plan.spec.metric, plan.spec.mode
    sign = 1 if mode == "max" else -1
    candidates = []  # (signed best value, -position, record, its best epoch's report)
    for position, r in enumerate(records):
        reported = ranking_reports(r.history, metric)
        best = best_report_index([h[metric] for h in reported], mode)
        if best is not None and not r.error:
            candidates.append((sign * reported[best][metric], -position, r, reported[best]))
    if not candidates:
        raise HpaTuneError(_no_winner(metric, records, plan.record.time_budget_s))
    _, _, rec, hist = max(candidates, key=lambda c: c[:2])
    cfg = resolve_config(plan.spec, rec.params, plan.record.constants)
    return BestTrial(
        trial_id=rec.trial_id,
        params=rec.params,
        config=cfg.model_dump(),
        metric=metric,
        mode=mode,
        value=float(hist[metric]),
        epoch=int(hist["epoch"]),
        checkpoint=rec.path,
    )


def _no_winner(metric: str, records: list[TrialRecord], time_budget_s: float | None) -> str:
    """Why no trial can win: the time budget ran out first, or every trial failed."""
    trials = [r for r in records if not never_reported(r)]
    if not trials:
        budget = f" of {time_budget_s:g} s" if time_budget_s else ""
        note = f" ({budget_note(records)})" if records else ""
        return (
            f"the time budget{budget} ran out before any trial reported {metric}{note}; "
            "give the search more time with --time-budget-s"
        )
    errors = "; ".join(sorted({(r.error or "no report").splitlines()[-1] for r in trials}))
    if any(metric in h for r in trials for h in r.history):
        return f"no trial ended without an error; every trial failed: {errors}"
    return f"no trial reported {metric}; every trial failed: {errors}"


def budget_note(records: list[TrialRecord]) -> str:
    """``"N trial(s) not started"`` for the trials the time budget ended before their first
    report (they are no trials: not in ``summary.csv``); empty when there are none."""
    n = sum(never_reported(r) for r in records)
    return f"{n} trial{'s' if n != 1 else ''} not started" if n else ""


def write_results(plan: RunPlan, records: list[TrialRecord]) -> tuple[Any, BestTrial]:
    """Write ``summary.csv``, ``history.csv`` and ``best.json``; returns the summary frame and the winner."""
    trials = [r for r in records if not never_reported(r)]  # the budget ended the others first
    frame = summary_frame(trials, plan.record.max_epochs, plan.spec.metric, plan.spec.mode)
    frame.to_csv(plan.exp_dir / SUMMARY_FILE, index=False)
    history_frame(trials).to_csv(plan.exp_dir / HISTORY_FILE, index=False)
    best = pick_best(plan, records)
    write_best(plan.exp_dir, best)
    return frame, best
