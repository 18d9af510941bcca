"""``hpa-tune report``: write the study table, and the HTML report with the PNGs and CSVs behind it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa_tune.experiment_files import REPORT_DIR, REPORT_FILE, TABLE_CSV, TABLE_MD
from hpa_tune.report import page
from hpa_tune.report.cost import Devices, cost_table, cost_totals, devices_per_trial
from hpa_tune.report.curves import asha_rungs, best_so_far, rung_cutoffs
from hpa_tune.report.figures import asha_figure, best_so_far_figure, cost_figure
from hpa_tune.report.importance import (
    importance_study,
    param_importances,
    study_from_summary,
    trials_frame,
)
from hpa_tune.report.inputs import ExperimentInputs, load_inputs
from hpa_tune.report.param_figures import importance_figure, param_vs_metric_figure
from hpa_tune.report.per_class import per_class_figure, per_class_frame
from hpa_tune.report.sections import overview, predictors_frame, study_table_notes
from hpa_tune.report.study_table import header, study_table, to_markdown
from hpa_tune.search.study import load_study

TOP_PARAMS = 4


def default_out_dir(exp_dir: Path) -> Path:
    """Where a report goes unless told otherwise: ``EXP/report``."""
    return Path(exp_dir) / REPORT_DIR


def _write_table(inputs: ExperimentInputs, out_dir: Path) -> tuple[pd.DataFrame, Path, Path]:
    frame = study_table(
        inputs.summary,
        inputs.spec,
        inputs.trial_scores,
        inputs.refit_metrics,
        inputs.best_trial_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / TABLE_MD, out_dir / TABLE_CSV
    lines = [f"# Study table: {inputs.exp_dir.name}", "", to_markdown(frame)]
    lines += [f"- {note}" for note in study_table_notes(inputs)]
    md_path.write_text("\n".join(lines) + "\n")
    frame.to_csv(csv_path, index=False)
    return frame, md_path, csv_path


def write_study_table(
    exp_dir: Path, out_dir: Path | None = None
) -> tuple[pd.DataFrame, Path, Path]:
    """Write ``study_table.md`` and ``study_table.csv`` for an experiment.

    Args:
        exp_dir: the experiment directory (``STORAGE/NAME``).
        out_dir: where to write (default ``EXP/report``).

    Returns:
        The table, the Markdown path and the CSV path.

    Raises:
        HpaTuneError: a required file of the experiment is missing, naming it.
    """
    inputs = load_inputs(Path(exp_dir), need_history=False)
    return _write_table(inputs, Path(out_dir) if out_dir else default_out_dir(exp_dir))


def _progress_section(inputs: ExperimentInputs, cost: pd.DataFrame, out: Path) -> page.Section:
    assert inputs.history is not None
    spec = inputs.spec
    curve = best_so_far(inputs.history, spec.metric, spec.mode)
    curve.to_csv(out / "best_so_far.csv", index=False)
    full_budget = int(cost["full_budget_epochs"].sum())
    png = best_so_far_figure(curve, spec.metric, full_budget, out / "best_so_far.png")
    return page.Section(
        "Search progress",
        page.image(png, "best so far")
        + page.notes(
            [
                "Each dot is one trial-epoch as it finished; the line is the best value reached so far. "
                "Ray's timestamps have one-second resolution.",
            ]
        ),
        "progress",
    )


def _asha_section(inputs: ExperimentInputs, out: Path) -> page.Section:
    assert inputs.history is not None
    spec, rec, sched = inputs.spec, inputs.record, inputs.spec.scheduler
    rungs = (
        []
        if sched.type == "fifo"
        else asha_rungs(sched.grace_period, sched.reduction_factor, rec.max_epochs, sched.brackets)
    )
    cutoffs = rung_cutoffs(inputs.history, rungs, spec.metric, spec.mode, sched.reduction_factor)
    if sched.brackets > 1:
        cutoffs["cutoff"] = float("nan")  # trials were spread over brackets we cannot tell apart
    cutoffs.to_csv(out / "asha_rungs.csv", index=False)
    status = inputs.summary.set_index("trial_id")["status"]
    curves = inputs.history[["trial_id", "epoch", spec.metric]].assign(
        status=inputs.history["trial_id"].map(status)
    )
    curves.to_csv(out / "trial_curves.csv", index=False)
    png = asha_figure(
        inputs.history, inputs.summary, cutoffs, spec.metric, rec.max_epochs, out / "asha.png"
    )
    text = (
        ["FIFO scheduler: every trial ran its whole budget (or failed)."]
        if sched.type == "fifo"
        else [
            f"ASHA, grace period {sched.grace_period}, reduction factor {sched.reduction_factor:g}, "
            f"{sched.brackets} bracket(s): at each rung a trial continues only if its "
            f"{spec.metric} is in the top 1/{sched.reduction_factor:g} of the trials recorded there "
            "so far; the black tick is that cutoff over all trials that reached the rung."
        ]
    )
    return page.Section(
        "Trials per epoch" + (" (FIFO)" if sched.type == "fifo" else ": ASHA's rungs and stops"),
        page.image(png, "ASHA") + page.notes(text) + (page.table(cutoffs) if len(cutoffs) else ""),
        "asha",
    )


def _importance_section(inputs: ExperimentInputs, out: Path) -> page.Section:
    spec = inputs.spec
    stored = load_study(inputs.exp_dir, inputs.record.study_name)
    if stored is None:  # an experiment from before optuna.journal: rebuilt from summary.csv
        study, trials = study_from_summary(inputs.summary, spec, inputs.history), inputs.summary
    else:
        study = importance_study(stored, spec.mode)
        trials = trials_frame(stored, spec.metric, spec.mode)
    result = param_importances(study, seed=inputs.record.seed)
    result.table.to_csv(out / "importance.csv", index=False)
    body = ""
    if len(result.table):
        body += page.image(importance_figure(result.table, out / "importance.png"), "importance")
        body += page.table(
            result.table.pivot_table(
                index="param", columns="evaluator", values="importance", sort=False
            ).reset_index()
        )
    ranked = result.ranked() or [
        n for n in spec.params if f"param:{n}" in trials and trials[f"param:{n}"].nunique() > 1
    ]
    if ranked:
        png = param_vs_metric_figure(
            trials,
            spec,
            ranked[:TOP_PARAMS],
            inputs.best_trial_id,
            out / "param_vs_metric.png",
        )
        body += page.image(png, "parameter vs metric")
    return page.Section("Hyperparameter importance", body + page.notes(result.notes), "importance")


def _per_class_section(inputs: ExperimentInputs, out: Path) -> page.Section:
    m = inputs.refit_metrics
    if m is None:
        return page.Section(
            "Per-class F1 of the refit model",
            page.notes(
                ["No refit/metrics.json: run `hpa-tune refit EXPERIMENT_DIR` to get this section."]
            ),
        )
    frame = per_class_frame(m, inputs.train_samples)
    frame.to_csv(out / "per_class.csv", index=False)
    predictors = predictors_frame(m)
    predictors.to_csv(out / "predictors.csv", index=False)
    png = per_class_figure(
        frame, (m["holdout_macro_f1@0.5"], m["holdout_macro_f1_tuned"]), out / "per_class.png"
    )
    candidates = (
        page.notes(
            [
                "Holdout macro F1 of every refit candidate under every threshold method; each "
                "candidate's method was chosen by cross-validation on val, never on the holdout."
            ]
        )
        + page.table(predictors, digits=4)
        if not predictors.empty
        else ""
    )
    return page.Section(
        "Per-class F1 of the refit model",
        candidates
        + page.image(png, "per-class F1")
        + page.notes(
            [
                "Holdout F1 per class; thresholds were tuned on val only. "
                "Weakest classes (tuned) first."
            ]
        )
        + page.table(frame, digits=3),
        "per-class",
    )


def _cost_section(
    inputs: ExperimentInputs, devices: Devices, table: pd.DataFrame, out: Path
) -> page.Section:
    table.to_csv(out / "cost.csv", index=False)
    totals = cost_totals(table, inputs.history)
    png = cost_figure(table, devices.unit, out / "cost.png")
    pairs = [
        (
            "trial-epochs",
            f"{totals.trial_epochs} spent of {totals.full_budget_trial_epochs} at full budget",
        ),
        (
            f"{devices.unit}-hours",
            f"{totals.device_hours:.4g} spent of "
            f"{totals.full_budget_device_hours:.4g} at full budget "
            f"({totals.saved_fraction:.0%} saved)",
        ),
        ("devices per trial", f"{devices.count:g} {devices.unit}"),
        ("search wall-clock", f"{totals.search_wall_s / 60:.1f} min"),
    ]
    return page.Section(
        "Cost",
        page.key_values(pairs)
        + page.image(png, "cost")
        + page.notes(
            [
                "A trial's cost is its own running time (Ray's time_total_s) times the devices it held; "
                "at full budget each stopped trial would have run max_epochs at its mean seconds per epoch.",
            ]
        ),
        "cost",
    )


def write_report(exp_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``report.html`` (self-contained) with its PNGs, CSVs and the study table.

    Args:
        exp_dir: the experiment directory (``STORAGE/NAME``).
        out_dir: where to write (default ``EXP/report``).

    Returns:
        The path of ``report.html``.

    Raises:
        HpaTuneError: a required file of the experiment is missing, naming it.
    """
    inputs = load_inputs(Path(exp_dir), need_history=True)
    out = Path(out_dir) if out_dir else default_out_dir(exp_dir)
    table, _, _ = _write_table(inputs, out)
    rec = inputs.record
    devices = devices_per_trial(rec.cpus_per_trial, rec.gpus_per_trial)
    cost = cost_table(inputs.summary, rec.max_epochs, devices)
    trial_table = page.Section(
        "Trials",
        page.table(table, {c: header(c) for c in table.columns})
        + page.notes(study_table_notes(inputs)),
        "trials",
    )
    sections = [
        overview(inputs),
        _progress_section(inputs, cost, out),
        _asha_section(inputs, out),
        _importance_section(inputs, out),
        _per_class_section(inputs, out),
        trial_table,
        _cost_section(inputs, devices, cost, out),
    ]
    files = sorted(p.name for p in out.iterdir() if p.suffix in {".png", ".csv", ".md"})
    sections.append(page.Section("Files", page.file_list(files), "files"))
    path = out / REPORT_FILE
    path.write_text(
        page.render(
            f"hpa-tune report: {inputs.exp_dir.name}", str(inputs.exp_dir.resolve()), sections
        )
    )
    return path
