"""Figures about the parameters: importance bars and parameter-vs-metric scatter plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from hpa_tune.report.figures import STATUS_STYLE, metric_label, save
from hpa_tune.report.study_table import format_value
from hpa_tune.search.space import SpaceSpec
from hpa_tune.search.trial_table import ERROR

EVALUATOR_COLORS = ("#264653", "#e9c46a", "#8d99ae")


def importance_figure(table: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of each parameter's importance, one colour per evaluator.

    Args:
        table: columns evaluator, param, importance (``Importances.table``), non-empty.
        path: where the PNG goes.
    """
    wide = table.pivot_table(index="param", columns="evaluator", values="importance", sort=False)
    wide = wide.loc[wide.max(axis=1).sort_values(ascending=True).index]
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(wide)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(len(wide.columns), 1)
    for i, evaluator in enumerate(wide.columns):
        y = np.arange(len(wide)) + (i - (len(wide.columns) - 1) / 2) * height
        ax.barh(
            y,
            wide[evaluator].fillna(0),
            height=height,
            label=evaluator,
            color=EVALUATOR_COLORS[i % len(EVALUATOR_COLORS)],
        )
    ax.set_yticks(np.arange(len(wide)), list(wide.index))
    ax.set_xlabel("importance (normalised per evaluator)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Hyperparameter importance (Optuna)")
    return save(fig, path)


def _log_axis(ax: Axes, values: np.ndarray) -> None:
    """Log scale with plain labels: at 1, 2, 5 x 10^k over a short range, else per decade."""
    ax.set_xscale("log")
    positive = values[np.isfinite(values) & (values > 0)]
    short = len(positive) > 0 and np.log10(positive.max() / positive.min()) < 1.5
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if short else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(float(v))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _categorical_axis(ax: Axes, values: pd.Series, choices: list) -> np.ndarray:
    labels = [format_value(c) for c in choices]
    index = {label: i for i, label in enumerate(labels)}
    positions = np.array([index.get(format_value(v), np.nan) for v in values], dtype=float)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(positions))
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    return positions + jitter


def param_vs_metric_figure(
    summary: pd.DataFrame,
    spec: SpaceSpec,
    params: list[str],
    best_trial_id: str | None,
    path: Path,
) -> Path:
    """One scatter per parameter: its value against the trial's best metric, by status.

    Args:
        summary: ``summary.csv``.
        spec: the search space (distributions of ``params``; the metric).
        params: parameters to plot, most important first.
        best_trial_id: the winner, drawn as a star.
        path: where the PNG goes.
    """
    metric = f"best_{spec.metric}"
    fig = Figure(figsize=(4.2 * len(params), 3.8), layout="constrained")
    axes = fig.subplots(1, len(params), sharey=True, squeeze=False)[0]
    trials = summary[summary["status"] != ERROR]
    for ax, name in zip(axes, params, strict=True):
        p = spec.params[name]
        column = trials[f"param:{name}"]
        if p.type == "categorical":
            x = _categorical_axis(ax, column, list(p.choices or []))
        else:
            x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            if p.log:
                _log_axis(ax, x)
        for status, style in STATUS_STYLE.items():
            mask = (trials["status"] == status).to_numpy()
            ax.scatter(
                x[mask],
                trials[metric][mask],
                color=style["color"],
                marker=style["marker"],
                s=45,
                alpha=0.85,
                label=style["label"],
            )
        winner = (trials["trial_id"].astype(str) == str(best_trial_id)).to_numpy()
        if winner.any():
            ax.scatter(
                x[winner],
                trials[metric][winner],
                marker="*",
                s=260,
                facecolor="none",
                edgecolor="k",
                lw=1.3,
                label="winner",
            )
        ax.set_xlabel(f"{name}" + (" (log)" if p.log else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric_label(metric))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=len(labels),
        fontsize=8,
    )
    fig.suptitle(f"Top parameters against {metric_label(metric)}")
    return save(fig, path)
