"""Hyperparameter importance: the search's Optuna study, scored by Optuna's evaluators.

The study is the one the search kept in ``EXP/optuna.journal`` (``importance_study``): completed
trials as they were told, trials ASHA stopped (PRUNED there) at the best value they reached, so
that the evaluators, which read complete trials only, see every trial that trained; failed ones
are left out. Experiments from before the journal are rebuilt from ``summary.csv`` in the same
way (``study_from_summary``). Two evaluators are run:

- PED-ANOVA (Optuna's default) over every parameter, conditional ones included; its target
  quantile is widened on small studies so that a few trials form the "top" group.
- fANOVA (random forest) over the parameters every trial sampled (Optuna drops conditional ones).

Too few trials, or an evaluator that cannot run, give a note instead of an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

from hpa_tune.search.space import SpaceSpec
from hpa_tune.search.study import best_value
from hpa_tune.search.trial_table import COMPLETED, ERROR, PRUNED

MIN_TRIALS = 3
PED_ANOVA, FANOVA = "PED-ANOVA", "fANOVA"


def space_distributions(spec: SpaceSpec) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space's parameters that can vary (single choices left out)."""
    out: dict[str, BaseDistribution] = {}
    for name, p in spec.params.items():
        dist: BaseDistribution
        if p.type == "categorical":
            dist = CategoricalDistribution(p.choices)  # type: ignore[arg-type]
        elif p.type == "int":
            step = int(p.step) if p.step else 1
            dist = IntDistribution(int(p.low), int(p.high), log=p.log, step=step)  # type: ignore[arg-type]
        else:
            dist = FloatDistribution(p.low, p.high, log=p.log, step=p.step)  # type: ignore[arg-type]
        if not dist.single():
            out[name] = dist
    return out


def _param_value(value: Any, dist: BaseDistribution) -> Any:
    """``value`` as read from CSV, in the distribution's own type; None if missing or outside it."""
    if pd.isna(value):
        return None
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if c == value or str(c) == str(value)), None)
    assert isinstance(dist, IntDistribution | FloatDistribution)
    number = int(value) if isinstance(dist, IntDistribution) else float(value)
    return number if dist.low <= number <= dist.high else None


_STATUS = {
    optuna.trial.TrialState.COMPLETE: COMPLETED,
    optuna.trial.TrialState.PRUNED: PRUNED,
    optuna.trial.TrialState.FAIL: ERROR,
}


def _quiet_study(mode: str) -> optuna.Study:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)


def importance_study(study: optuna.Study, mode: str) -> optuna.Study:
    """An in-memory copy of the search's study for the evaluators: COMPLETE trials as they are,
    PRUNED ones as complete at their best intermediate value; others left out."""
    out = _quiet_study(mode)
    for trial in study.get_trials(deepcopy=False, states=tuple(_STATUS)[:2]):
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        value = value if value is not None else best_value(trial.intermediate_values, mode)
        if value is None:
            continue
        out.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                value=value,
                intermediate_values=trial.intermediate_values,
                user_attrs={**trial.user_attrs, "status": _STATUS[trial.state]},
            )
        )
    return out


def trials_frame(study: optuna.Study, metric: str, mode: str) -> pd.DataFrame:
    """The study's finished trials as rows shaped like ``summary.csv``'s: ``trial_id``,
    ``param:<name>``, ``status`` and ``best_<metric>`` (the best intermediate value)."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=tuple(_STATUS)):
        row: dict[str, Any] = {"trial_id": str(trial.user_attrs.get("trial_id", trial.number))}
        row.update({f"param:{k}": v for k, v in trial.params.items()})
        row["status"] = _STATUS[trial.state]
        row[f"best_{metric}"] = best_value(trial.intermediate_values, mode)
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["trial_id", "status"])


def study_from_summary(
    summary: pd.DataFrame, spec: SpaceSpec, history: pd.DataFrame | None = None
) -> optuna.Study:
    """An in-memory Optuna study holding the search's finished trials (for experiments without
    ``optuna.journal``)."""
    study = _quiet_study(spec.mode)
    dists = space_distributions(spec)
    steps: dict[str, dict[int, float]] = {}  # trial_id -> epoch -> metric
    if history is not None:
        reported = history.dropna(subset=[spec.metric])
        for trial_id, epoch, v in zip(
            reported["trial_id"].astype(str), reported["epoch"], reported[spec.metric], strict=True
        ):
            steps.setdefault(trial_id, {})[int(epoch)] = float(v)
    for _, row in summary.iterrows():
        value = row.get(f"best_{spec.metric}")
        if row["status"] == ERROR or pd.isna(value):
            continue
        params = {n: _param_value(row.get(f"param:{n}"), d) for n, d in dists.items()}
        params = {n: v for n, v in params.items() if v is not None}
        trial_id = str(row["trial_id"])
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={n: dists[n] for n in params},
                value=float(value),
                intermediate_values=steps.get(trial_id, {}),
                user_attrs={"trial_id": trial_id, "status": str(row["status"])},
            )
        )
    return study


@dataclass
class Importances:
    """Importance per (evaluator, parameter), normalised to sum to 1 per evaluator."""

    table: pd.DataFrame  # columns evaluator, param, importance
    notes: list[str] = field(default_factory=list)

    def ranked(self) -> list[str]:
        """Parameters, most important first (PED-ANOVA's order, then fANOVA's)."""
        order = self.table.sort_values(
            ["evaluator", "importance"], ascending=[False, False], kind="stable"
        )
        return list(dict.fromkeys(order["param"]))


def _run(evaluator: Any, study: optuna.Study, label: str, notes: list[str]) -> dict[str, float]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as err:
            notes.append(f"{label} could not run: {err}")
            return {}
    notes.extend(f"{label}: {w.message}" for w in caught if "importance" in str(w.message).lower())
    return result


def param_importances(study: optuna.Study, seed: int = 0) -> Importances:
    """Importances of the study's parameters by PED-ANOVA and fANOVA (see the module docstring)."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    empty = pd.DataFrame(columns=["evaluator", "param", "importance"])
    if not any(t.params for t in trials):
        return Importances(empty, ["no parameter varies in this search space"])
    if len(trials) < MIN_TRIALS:
        return Importances(
            empty,
            [
                f"importance needs at least {MIN_TRIALS} finished trials; this search has {len(trials)}"
            ],
        )
    notes: list[str] = []
    quantile = min(0.5, max(0.1, 5 / len(trials)))
    rows = []
    for label, evaluator in (
        (PED_ANOVA, PedAnovaImportanceEvaluator(target_quantile=quantile)),
        (FANOVA, FanovaImportanceEvaluator(seed=seed)),
    ):
        for param, value in _run(evaluator, study, label, notes).items():
            rows.append({"evaluator": label, "param": param, "importance": float(value)})
    notes.append(
        f"{len(trials)} finished trials; PED-ANOVA asks what put a trial in the top "
        f"{quantile:.0%}, fANOVA what explains the metric's variance over all of them"
    )
    stopped = sum(t.user_attrs.get("status") == PRUNED for t in trials)
    if stopped:
        notes.append(
            f"{stopped} trial(s) were stopped by ASHA: their value here is the best reached in "
            "fewer epochs, so slow starters can look worse than they are"
        )
    if len(trials) < 20:
        notes.append(f"with {len(trials)} trials these importances are rough indications only")
    return Importances(pd.DataFrame(rows, columns=["evaluator", "param", "importance"]), notes)
