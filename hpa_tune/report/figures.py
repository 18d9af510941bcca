"""The search's figures: best-so-far, the ASHA picture and the cost (one function per PNG).

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot state), so
reports can be written from any thread or process without a display.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpa_tune.search.trial_table import COMPLETED, ERROR, PRUNED

STATUS_STYLE = {
    COMPLETED: {"color": "#2a9d8f", "marker": "o", "label": "completed"},
    PRUNED: {"color": "#e76f51", "marker": "X", "label": "stopped by ASHA"},
    ERROR: {"color": "#222222", "marker": "s", "label": "error"},
}
DPI = 110


def metric_label(metric: str) -> str:
    """``val_macro_f1`` -> ``val macro F1``."""
    return metric.replace("_", " ").replace("f1", "F1")


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG at ``path``."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def _time_axis(seconds: pd.Series) -> tuple[pd.Series, str]:
    top = float(seconds.max()) if len(seconds) else 0.0
    if top > 2 * 3600:
        return seconds / 3600, "hours"
    if top > 120:
        return seconds / 60, "minutes"
    return seconds, "seconds"


def best_so_far_figure(
    curve: pd.DataFrame, metric: str, full_budget_epochs: int, path: Path
) -> Path:
    """Best-so-far metric against wall-clock time and against trial-epochs spent.

    Args:
        curve: :func:`hpa_tune.report.curves.best_so_far` output.
        metric: the metric's name, for labels.
        full_budget_epochs: trial-epochs had every trial run to ``max_epochs`` (a marker line).
        path: where the PNG goes.
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    elapsed, unit = _time_axis(curve["elapsed_s"])
    for ax, x, xlabel in (
        (left, elapsed, f"wall-clock since the search started ({unit})"),
        (right, curve["trial_epochs"], "trial-epochs spent"),
    ):
        ax.scatter(x, curve["value"], s=14, color="#9aa5b1", label="each trial-epoch", zorder=2)
        ax.step(x, curve["best"], where="post", color="#264653", lw=2.2, label="best so far")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    right.axvline(full_budget_epochs, ls=":", color="#e76f51", label="full budget")
    left.set_ylabel(metric_label(metric))
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Best {metric_label(metric)} so far")
    return save(fig, path)


def _draw_rungs(ax: Axes, rungs: pd.DataFrame, tick_half_width: float) -> None:
    for _, rung in rungs.iterrows():
        ax.axvline(rung["rung"], ls="--", color="#8d99ae", lw=1, zorder=1)
        ax.annotate(
            f"rung {rung['rung']:g}\n{int(rung['trials'])} trials",
            (rung["rung"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -4),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="#5c677d",
        )
        if pd.notna(rung["cutoff"]):
            ax.plot(
                [rung["rung"] - tick_half_width, rung["rung"] + tick_half_width],
                [rung["cutoff"]] * 2,
                color="k",
                lw=2,
            )


def asha_figure(
    history: pd.DataFrame,
    summary: pd.DataFrame,
    rungs: pd.DataFrame,
    metric: str,
    max_epochs: int,
    path: Path,
) -> Path:
    """Each trial's metric per epoch, where it stopped (by status) and ASHA's rungs with cutoffs."""
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax = fig.subplots()
    status = dict(zip(summary["trial_id"].astype(str), summary["status"], strict=True))
    label_ends = len(status) <= 12
    for trial_id, trial in history.groupby(history["trial_id"].astype(str), sort=False):
        trial = trial.sort_values("epoch")
        style = STATUS_STYLE.get(status.get(trial_id, ERROR), STATUS_STYLE[ERROR])
        ax.plot(trial["epoch"], trial[metric], color=style["color"], alpha=0.55, lw=1.4)
        last = trial.iloc[-1]
        ax.scatter(
            last["epoch"],
            last[metric],
            color=style["color"],
            marker=style["marker"],
            s=60,
            zorder=3,
        )
        if label_ends:
            ax.annotate(
                trial_id,
                (last["epoch"], last[metric]),
                xytext=(5, 0),
                textcoords="offset points",
                fontsize=7,
                va="center",
            )
    _draw_rungs(ax, rungs, tick_half_width=max(0.15, 0.02 * max_epochs))
    for style in STATUS_STYLE.values():
        ax.scatter([], [], color=style["color"], marker=style["marker"], label=style["label"])
    if rungs["cutoff"].notna().any():
        ax.plot([], [], color="k", lw=2, label="rung cutoff over all trials")
    ax.set_xlim(0.8, max_epochs + 0.6)
    if max_epochs <= 20:
        ax.set_xticks(range(1, max_epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_label(metric))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{metric_label(metric)} per epoch; markers show where each trial ended")
    return save(fig, path)


def _device_time_unit(hours: float) -> tuple[float, str]:
    """A readable unit for a device-time axis: (factor from hours, unit name)."""
    if hours >= 1:
        return 1.0, "hours"
    if hours * 60 >= 1:
        return 60.0, "minutes"
    return 3600.0, "seconds"


def cost_figure(cost: pd.DataFrame, device_unit: str, path: Path) -> Path:
    """Per trial: trial-epochs and device-hours spent (filled) against full budget (outline)."""
    fig = Figure(figsize=(11, 0.9 + 0.32 * max(len(cost), 3)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = range(len(cost))
    colors = [STATUS_STYLE.get(s, STATUS_STYLE[ERROR])["color"] for s in cost["status"]]
    scale, unit = _device_time_unit(float(cost["full_budget_device_hours"].sum()))
    for ax, spent, full, label in (
        (axes[0], cost["epochs"], cost["full_budget_epochs"], "trial-epochs"),
        (
            axes[1],
            cost["device_hours"] * scale,
            cost["full_budget_device_hours"] * scale,
            f"{device_unit}-{unit}",
        ),
    ):
        ax.barh(y, full, color="none", edgecolor="#5c677d", ls="--", label="at full budget")
        ax.barh(y, spent, color=colors, alpha=0.85, label="spent (colour: status)")
        ax.set_xlabel(f"{label}: spent {spent.sum():.4g} of {full.sum():.4g}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y), cost["trial_id"].astype(str), fontsize=8)
    axes[0].invert_yaxis()
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle("Cost per trial: spent vs the same trials at full budget")
    return save(fig, path)
