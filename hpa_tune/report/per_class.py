"""Per-class holdout F1 of the refit model at 0.5 and at tuned thresholds, weakest class first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa_tune.report.figures import save


def per_class_frame(refit_metrics: dict[str, Any], train_samples: int | None) -> pd.DataFrame:
    """One row per class from ``refit/metrics.json``, sorted weakest (tuned F1) first.

    Args:
        refit_metrics: ``refit/metrics.json`` (its ``per_class`` list).
        train_samples: size of the train split, for frequencies; None leaves them empty.

    Returns:
        Columns index, name, train_positives, train_frequency, holdout_positives, threshold,
        f1@0.5, f1_tuned, gain (tuned minus 0.5).
    """
    rows = [
        {
            "index": c["index"],
            "name": c["name"],
            "train_positives": c["train_positives"],
            "train_frequency": c["train_positives"] / train_samples if train_samples else np.nan,
            "holdout_positives": c["holdout_positives"],
            "threshold": c["threshold"],
            "f1@0.5": c["holdout_f1@0.5"],
            "f1_tuned": c["holdout_f1"],
        }
        for c in refit_metrics["per_class"]
    ]
    frame = pd.DataFrame(rows)
    frame["gain"] = frame["f1_tuned"] - frame["f1@0.5"]
    return frame.sort_values(
        ["f1_tuned", "train_positives"], ascending=[True, True], kind="stable"
    ).reset_index(drop=True)


def _class_label(row: pd.Series) -> str:
    freq = f", {row['train_frequency']:.1%}" if pd.notna(row["train_frequency"]) else ""
    return f"{row['name']} (n={int(row['train_positives'])}{freq})"


def per_class_figure(frame: pd.DataFrame, macro: tuple[float, float], path: Path) -> Path:
    """Paired horizontal bars per class (0.5 vs tuned), weakest at the top, with the macro means.

    Args:
        frame: :func:`per_class_frame` output (already sorted).
        macro: holdout macro F1 at 0.5 and tuned, drawn as vertical lines.
        path: where the PNG goes.
    """
    fig = Figure(figsize=(10, 1.4 + 0.3 * len(frame)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(frame))
    ax.barh(y - 0.2, frame["f1@0.5"], height=0.4, color="#9aa5b1", label="threshold 0.5")
    ax.barh(y + 0.2, frame["f1_tuned"], height=0.4, color="#264653", label="tuned on val")
    ax.axvline(macro[0], color="#9aa5b1", ls="--", lw=1.2, label=f"macro @0.5 = {macro[0]:.3f}")
    ax.axvline(macro[1], color="#264653", ls="--", lw=1.2, label=f"macro tuned = {macro[1]:.3f}")
    ax.set_yticks(y, [_class_label(r) for _, r in frame.iterrows()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("holdout F1 (label: train positives, share of train images)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Refit model: per-class holdout F1, weakest first")
    return save(fig, path)
