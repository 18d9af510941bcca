"""The report's text parts: the overview of the run and the notes explaining the study table."""

from __future__ import annotations

import pandas as pd

from hpa_tune.report import page
from hpa_tune.report.inputs import ExperimentInputs
from hpa_tune.report.study_table import format_value


def study_table_notes(inputs: ExperimentInputs) -> list[str]:
    """What the study table's columns mean for this experiment."""
    notes = [
        "Train and val columns are each trial's last epoch, as in summary.csv; F1 is macro F1 "
        "over the whole set (from accumulated predictions) unless marked batch avg "
        "(the mean of per-batch scores).",
        f"Best epoch: the epoch of the trial's best {inputs.spec.metric}.",
    ]
    if inputs.trial_scores is not None:
        notes.append(
            "Test F1: holdout macro F1 of each trial's best-epoch checkpoint (trial_scores.csv), "
            "at threshold 0.5 and at per-class thresholds tuned on val."
        )
    elif inputs.refit_metrics is not None:
        notes.append(
            "Test F1: holdout macro F1 of the refit winner only (refit/metrics.json), at 0.5 and "
            "at thresholds tuned on val; other trials were not scored on the holdout (set "
            "score_all_trials: true in the space, or run hpa-tune refit --all-trials)."
        )
    else:
        notes.append("Test F1: empty, the winner was not refit (run hpa-tune refit).")
    return notes


def predictors_frame(refit_metrics: dict) -> pd.DataFrame:
    """Holdout macro F1 of each refit candidate (single / ensemble, with / without TTA) under
    each threshold method, with the method chosen on val and whether it is the final predictor."""
    rows = []
    for name, scores in refit_metrics.get("predictors", {}).items():
        rows.append(
            {
                "predictor": name,
                "final": "yes" if name == refit_metrics.get("predictor") else "",
                "method chosen on val": scores["threshold_method"],
                **{f"holdout F1 ({m})": v for m, v in scores["holdout_macro_f1"].items()},
            }
        )
    return pd.DataFrame(rows)


def _scheduler(inputs: ExperimentInputs) -> str:
    s = inputs.spec.scheduler
    if s.type == "fifo":
        return "FIFO (no early stopping)"
    return f"ASHA, grace period {s.grace_period}, reduction factor {s.reduction_factor:g}"


def overview(inputs: ExperimentInputs) -> page.Section:
    """The run at a glance: space, data, budget, winner and the refit model's headline scores."""
    rec, spec = inputs.record, inputs.spec
    status = inputs.summary["status"].value_counts()
    pairs = [
        ("search space", f"{spec.name or rec.space_path}: {spec.description}".rstrip(": ")),
        ("data", "built-in HPA-like sample" if rec.builtin_sample else rec.data_dir),
        ("budget", f"{rec.num_samples} trials x up to {rec.max_epochs} epochs, seed {rec.seed}"),
        ("scheduler", _scheduler(inputs)),
        ("metric", f"{spec.metric} ({spec.mode})"),
        ("trials", ", ".join(f"{n} {s}" for s, n in status.items())),
    ]
    if inputs.best_trial_id is not None:
        rows = inputs.summary[inputs.summary["trial_id"].astype(str) == inputs.best_trial_id]
        best = rows.iloc[0] if len(rows) else pd.Series(dtype=object)
        value = best.get(f"best_{spec.metric}", float("nan"))
        params = [
            f"{c.removeprefix('param:')}={format_value(v)}"
            for c, v in best.items()
            if str(c).startswith("param:") and pd.notna(v)
        ]
        pairs.append(("winner", f"trial {inputs.best_trial_id}: {value:.4f} ({', '.join(params)})"))
    m = inputs.refit_metrics
    if m is not None:
        trivial = m.get("trivial_holdout_macro_f1", {})
        pairs += [
            (
                "refit holdout macro F1",
                f"{m['holdout_macro_f1@0.5']:.4f} at 0.5, "
                f"{m['holdout_macro_f1_tuned']:.4f} with thresholds tuned on val",
            ),
            (
                "refit predictor",
                f"{m.get('predictor', 'single')} (trials {', '.join(m.get('members', [m['trial_id']]))}), "
                f"thresholds: {m.get('threshold_method', 'per_class')}",
            ),
            (
                "refit val macro F1 (tuned)",
                f"{m['val_macro_f1_tuned']:.4f} (optimistic: tuned on it)",
            ),
            ("trivial baselines (holdout)", ", ".join(f"{k} {v:.4f}" for k, v in trivial.items())),
        ]
    return page.Section("Overview", page.key_values(pairs), "overview")
