"""Warm start: a new study begins with the finished trials of earlier ones, and from their winner.

``hpa-tune run SPACE --warm-start EXP [EXP...]`` adds each earlier experiment's finished trials
(parameters, per-epoch intermediate values, COMPLETE or PRUNED) to the new study, so that TPE
models from the first trial on, and puts the earlier winner (``best.json``) in place of the
space's ``points_to_evaluate``. Typical use: a cheap 64 px study, then a 224 px one.

The rule that maps an earlier trial onto the new space (``fit_params``) is pure, and never
coerces a value:

- the new space's define-by-run is replayed on the trial's parameters: a parameter it samples
  is carried, with the new space's distribution;
- a value outside the new distribution (a changed range or choices) skips the whole trial: its
  score came from a configuration the new space cannot express;
- a parameter the new space does not sample (gone, pinned with ``--set``, or its ``when`` no
  longer holds) is dropped from the trial, which is kept;
- a parameter only the new space has is left out of the carried trial (as a conditional
  parameter that was not sampled; TPE handles such trials);
- FAIL trials (no score) and unfinished ones are skipped.

Every skip and drop is one note line. Studies with another metric or mode are refused.
No Ray here, and no reading: ``earlier_studies`` reads the experiments and logs the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpa_tune.errors import HpaTuneError
from hpa_tune.search.experiment import BestTrial
from hpa_tune.search.space import ParamSpec, SpaceSpec, resolve_config, sampling_order

# User attributes of a carried trial: the experiment it came from, and its trial there.
FROM_EXPERIMENT_ATTR = "warm_start_from"
FROM_TRIAL_ATTR = "warm_start_trial"
_CARRIED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def distribution(p: ParamSpec) -> BaseDistribution:
    """The Optuna distribution ``space.sample_params`` suggests ``p`` from."""
    if p.type == "categorical":
        return CategoricalDistribution(p.choices)  # type: ignore[arg-type]
    assert p.low is not None and p.high is not None  # checked by ParamSpec
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return FloatDistribution(p.low, p.high, log=p.log, step=p.step)


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):  # a categorical value not among the choices
        return False


def describe(p: ParamSpec) -> str:
    """``p``'s values as a note names them: ``choices [a, b]`` or ``range [low, high] (log)``."""
    if p.type == "categorical":
        return f"choices {p.choices}"
    extras = " (log)" if p.log else f" (step {p.step:g})" if p.step else ""
    return f"range [{p.low:g}, {p.high:g}]{extras}"


@dataclass(frozen=True)
class FittedParams:
    """One earlier trial's parameters against the new space (``fit_params``)."""

    params: dict[str, Any]  # what the new space samples, with the earlier values
    dropped: list[str]  # earlier parameters the new space does not sample
    outside: str | None = None  # the parameter whose value the new space cannot take


def fit_params(spec: SpaceSpec, params: Mapping[str, Any]) -> FittedParams:
    """Replay ``spec``'s define-by-run on earlier ``params`` (see the module's rule)."""
    kept: dict[str, Any] = {}
    for name in sampling_order(spec.params):
        p = spec.params[name]
        active = all(
            parent in kept and kept[parent] in values for parent, values in p.condition().items()
        )
        if not active or name not in params:
            continue
        if not _contains(distribution(p), params[name]):
            return FittedParams({}, [], name)
        kept[name] = params[name]
    return FittedParams(kept, [n for n in params if n not in kept])


@dataclass(frozen=True)
class EarlierStudy:
    """What a warm start reads of an earlier experiment."""

    location: str
    metric: str
    mode: str
    trials: list[FrozenTrial]
    best: BestTrial | None


@dataclass(frozen=True)
class WarmStart:
    """The trials a new study starts with, and its first point."""

    sources: list[str]
    trials: list[FrozenTrial]
    start_point: dict[str, Any] | None = None  # replaces the space's points_to_evaluate
    start_from: dict[str, Any] | None = None  # provenance: experiment, trial_id, metric, value
    notes: list[str] = field(default_factory=list)

    def record_fields(self) -> dict[str, Any]:
        """The ``RunRecord`` fields saying where the run started from."""
        return {
            "warm_start_from": list(self.sources),
            "warm_start_trials": len(self.trials),
            "start_point_from": self.start_from,
        }

    def start_space(self, spec: SpaceSpec) -> SpaceSpec:
        """``spec`` whose first trial is the earlier winner (unchanged without one)."""
        if self.start_point is None:
            return spec
        return spec.model_copy(update={"points_to_evaluate": [dict(self.start_point)]})

    def add_to(self, study: optuna.Study) -> None:
        """Add the carried trials to ``study`` (before its first new trial)."""
        for trial in self.trials:
            study.add_trial(trial)

    def start_study(self, storage: BaseStorage, study_name: str, mode: str) -> optuna.Study:
        """Create the new study in ``storage`` holding the carried trials, so that its own
        trials (the searcher loads it) are numbered after them."""
        direction = StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
        self.add_to(study)
        return study


def check_same_objective(earlier: EarlierStudy, spec: SpaceSpec) -> None:
    """Raises: HpaTuneError: ``earlier`` optimised another metric or mode than ``spec``."""
    if (earlier.metric, earlier.mode) != (spec.metric, spec.mode):
        raise HpaTuneError(
            f"--warm-start {earlier.location}: its study {earlier.mode}imises {earlier.metric}, "
            f"this space {spec.mode}imises {spec.metric}; warm-start only from the same objective"
        )


def _carry(trial: FrozenTrial, fitted: FittedParams, spec: SpaceSpec, location: str) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=trial.state,
        value=trial.value,
        params=fitted.params,
        distributions={n: distribution(spec.params[n]) for n in fitted.params},
        intermediate_values=dict(trial.intermediate_values),
        user_attrs={
            FROM_EXPERIMENT_ATTR: location,
            FROM_TRIAL_ATTR: str(trial.user_attrs.get("trial_id", trial.number)),
        },
    )


def carry_trials(earlier: EarlierStudy, spec: SpaceSpec) -> tuple[list[FrozenTrial], list[str]]:
    """The trials of ``earlier`` mapped onto ``spec``, and one note per reason something was
    left out (skipped trials, dropped parameters)."""
    carried: list[FrozenTrial] = []
    unfinished: dict[str, int] = {}
    outside: dict[str, list[str]] = {}
    dropped: dict[str, int] = {}
    unshared = 0
    for trial in earlier.trials:
        if trial.state not in _CARRIED_STATES:
            unfinished[trial.state.name] = unfinished.get(trial.state.name, 0) + 1
            continue
        fitted = fit_params(spec, trial.params)
        if fitted.outside is not None:
            value = trial.params[fitted.outside]
            outside.setdefault(fitted.outside, []).append(repr(value))
            continue
        if not fitted.params:
            unshared += 1
            continue
        for name in fitted.dropped:
            dropped[name] = dropped.get(name, 0) + 1
        carried.append(_carry(trial, fitted, spec, earlier.location))
    where = f"warm start from {earlier.location}"
    notes = [
        f"{where}: {n} {state} trial(s) skipped (no score to carry)"
        for state, n in sorted(unfinished.items())
    ]
    notes += [
        f"{where}: {len(values)} trial(s) skipped: {name} = {', '.join(values)} outside the new "
        f"{describe(spec.params[name])}"
        for name, values in outside.items()
    ]
    if unshared:
        notes.append(
            f"{where}: {unshared} trial(s) skipped: no parameter shared with the new space"
        )
    notes += [
        f"{where}: parameter {name} dropped from {n} trial(s): the new space does not sample it"
        for name, n in dropped.items()
    ]
    return carried, notes


def choose_start(
    earlier: Sequence[EarlierStudy], spec: SpaceSpec, constants: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """The first point of the new study: the best earlier winner (by ``spec``'s mode; the
    first listed on a tie) that fits the new space and resolves to a valid configuration.

    Returns (its params, its provenance, notes); (None, None, notes) when none fits (the
    space's own ``points_to_evaluate`` are kept).
    """
    sign = 1 if spec.mode == "max" else -1
    winners = [e for e in earlier if e.best is not None]
    ranked = sorted(winners, key=lambda e: -sign * e.best.value)  # type: ignore[union-attr]
    notes = [
        f"warm start from {e.location}: no best.json, no winner to start from"
        for e in earlier
        if e.best is None
    ]
    for e in ranked:
        best = e.best
        assert best is not None
        fitted = fit_params(spec, best.params)
        reason = ""
        if fitted.outside is not None:
            value = best.params[fitted.outside]
            reason = f"{fitted.outside} = {value!r} outside the new {describe(spec.params[fitted.outside])}"
        else:
            try:
                resolve_config(spec, fitted.params, dict(constants))
            except HpaTuneError as err:
                reason = str(err)
        if reason:
            notes.append(
                f"warm start from {e.location}: its winner (trial {best.trial_id}) not used: {reason}"
            )
            continue
        provenance = {
            "experiment": e.location,
            "trial_id": best.trial_id,
            "metric": best.metric,
            "value": best.value,
            "params": dict(best.params),
        }
        return fitted.params, provenance, notes
    if winners:
        notes.append(
            "warm start: no earlier winner fits the new space; starting from the space's points_to_evaluate"
        )
    return None, None, notes


def plan_warm_start(
    earlier: Sequence[EarlierStudy], spec: SpaceSpec, constants: Mapping[str, Any]
) -> WarmStart:
    """The warm start of a study over ``spec`` from ``earlier`` studies (pure).

    Raises:
        HpaTuneError: an earlier study optimised another metric or mode.
    """
    for e in earlier:
        check_same_objective(e, spec)
    trials: list[FrozenTrial] = []
    notes: list[str] = []
    for e in earlier:
        carried, why = carry_trials(e, spec)
        trials += carried
        notes += why
    point, provenance, start_notes = choose_start(earlier, spec, constants)
    return WarmStart([e.location for e in earlier], trials, point, provenance, notes + start_notes)
