"""The study table: one row per trial with the study's columns, and its Markdown rendering (pure).

Train and val columns are the trial's last epoch, exactly as in ``summary.csv``. Test F1 is the
holdout macro F1 at threshold 0.5 and at per-class thresholds tuned on val: for every trial when
``trial_scores.csv`` exists (each trial's best-epoch checkpoint, ``score_all_trials: true``),
otherwise for the refit winner only (its retrained model) and empty for the other trials.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from hpa_tune.search.space import SpaceSpec

TEST_05, TEST_TUNED, TEST_FROM = "test_macro_f1@0.5", "test_macro_f1_tuned", "test_from"
FROM_CHECKPOINT, FROM_REFIT = "trial checkpoint", "refit model"
SUMMARY_COLUMNS = (
    "train_macro_f1",
    "train_loss",
    "val_macro_f1_batch_avg",
    "val_macro_f1",
    "val_loss",
)
HEADERS = {
    "trial_id": "Trial",
    "config": "Configuration",
    "status": "Status",
    "epochs": "Epochs",
    "train_macro_f1": "Train F1",
    "train_loss": "Train loss",
    "val_macro_f1_batch_avg": "Val F1 (batch avg)",
    "val_macro_f1": "Val F1 (whole set)",
    "val_loss": "Val loss",
    "best_epoch": "Best epoch",
    TEST_05: "Test F1 @0.5",
    TEST_TUNED: "Test F1 (tuned thr.)",
    TEST_FROM: "Test scored on",
}


def header(column: str) -> str:
    """The human column title (``best_val_macro_f1`` -> ``Best val macro F1``)."""
    if column in HEADERS:
        return HEADERS[column]
    return column.replace("best_", "Best ").replace("_", " ").replace("f1", "F1")


def format_value(value: Any) -> str:
    """A compact, human form of a parameter value (``0.000123``, ``64``, ``ln``)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.3g}"
    return str(value)


def config_label(row: pd.Series, spec: SpaceSpec) -> str:
    """``arch, key=value, ...`` for one summary row: the sampled parameters active in that trial,
    named by the config key they set (``freeze=fc``, not ``resnet_freeze=fc``)."""
    parts = [str(row.get("arch", ""))]
    for name in spec.params:
        value = row.get(f"param:{name}")
        if pd.isna(value) or spec.config_key(name) == "arch":
            continue
        parts.append(f"{spec.config_key(name)}={format_value(value)}")
    return ", ".join(p for p in parts if p)


def _test_scores(
    trial_ids: pd.Series,
    scores: pd.DataFrame | None,
    refit_metrics: dict[str, Any] | None,
    best_trial_id: str | None,
) -> pd.DataFrame:
    """Test F1 @0.5 / tuned and where each came from, aligned with ``trial_ids``."""
    out = pd.DataFrame(
        {TEST_05: math.nan, TEST_TUNED: math.nan, TEST_FROM: ""}, index=trial_ids.index
    )
    if scores is not None and not scores.empty:
        by_id = scores.set_index(scores["trial_id"].astype(str))
        for i, trial_id in trial_ids.items():
            if trial_id in by_id.index:
                out.loc[i, TEST_05] = float(by_id.loc[trial_id, "holdout_macro_f1@0.5"])
                out.loc[i, TEST_TUNED] = float(by_id.loc[trial_id, "holdout_macro_f1_tuned"])
                out.loc[i, TEST_FROM] = FROM_CHECKPOINT
        return out
    if refit_metrics is not None:
        winner = str(refit_metrics.get("trial_id", best_trial_id))
        for i in trial_ids.index[trial_ids == winner]:
            out.loc[i, TEST_05] = float(refit_metrics["holdout_macro_f1@0.5"])
            out.loc[i, TEST_TUNED] = float(refit_metrics["holdout_macro_f1_tuned"])
            out.loc[i, TEST_FROM] = FROM_REFIT
    return out


def study_table(
    summary: pd.DataFrame,
    spec: SpaceSpec,
    trial_scores: pd.DataFrame | None = None,
    refit_metrics: dict[str, Any] | None = None,
    best_trial_id: str | None = None,
) -> pd.DataFrame:
    """One row per trial, in ``summary.csv`` order (best first).

    Args:
        summary: ``summary.csv`` as a frame.
        spec: the experiment's search space (names the parameters and the metric).
        trial_scores: ``trial_scores.csv`` (every trial's holdout scores), if written.
        refit_metrics: ``refit/metrics.json``, if the winner was refit.
        best_trial_id: the winner (``best.json``), used when ``refit_metrics`` lacks it.

    Returns:
        Columns trial_id, config, status, epochs, the train/val columns of ``summary.csv``,
        ``best_<metric>``, best_epoch, test_macro_f1@0.5, test_macro_f1_tuned, test_from.
    """
    best_col = f"best_{spec.metric}"
    trial_ids = summary["trial_id"].astype(str)
    table = pd.DataFrame(
        {
            "trial_id": trial_ids,
            "config": [config_label(row, spec) for _, row in summary.iterrows()],
            "status": summary["status"],
            "epochs": summary["epochs"],
        }
    )
    for col in (*SUMMARY_COLUMNS, best_col, "best_epoch"):
        table[col] = summary.get(col, math.nan)
    tests = _test_scores(trial_ids, trial_scores, refit_metrics, best_trial_id)
    return pd.concat([table, tests], axis=1)


def _cell(value: Any) -> str:
    if pd.isna(value) or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned to 4 decimals, missing cells empty."""
    headers = [header(c) for c in table.columns]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"
