"""Search spaces are data: YAML -> ``SpaceSpec`` -> an Optuna define-by-run function.

The YAML uses Optuna's own distribution vocabulary. A parameter with ``when:`` is sampled only
while its condition holds, so conditional spaces (freeze levels per architecture) stay honest in
the sampler's history. ``sets:`` lets several mutually exclusive parameters feed one config key
(Optuna needs a distinct name per distinct choice set). Everything here is pure: sampling does no
work, and replaying a chosen configuration runs the same function on ``optuna.trial.FixedTrial``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpa_tune.errors import HpaTuneError
from hpa_tune.train.config import TrialConfig, config_keys, make_trial_config
from hpa_tune.train.size_schedule import size_schedule

Scalar = bool | int | float | str | None
METRICS = {
    "val_macro_f1": "max",
    "val_macro_f1_global": "max",
    "val_loss": "min",
    "val_macro_f1_batch_avg": "max",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One searched parameter."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Scalar] | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None
    sets: str | None = None

    @model_validator(mode="after")
    def _check_distribution(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("categorical takes 'choices' only, not low/high/step/log")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' is for categorical parameters, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"bad range: low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("'step' cannot be combined with log: true")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (got {self.step})")
        if self.type == "int" and not all(
            float(v).is_integer() for v in (self.low, self.high, self.step or 1)
        ):
            raise ValueError("int parameters need integer low/high/step")
        return self

    def condition(self) -> dict[str, list[Scalar]]:
        """``when`` with every value normalised to a list."""
        return {k: v if isinstance(v, list) else [v] for k, v in (self.when or {}).items()}


class Budget(_Strict):
    """How much searching a run does."""

    num_samples: int = Field(8, ge=1)
    max_epochs: int = Field(10, ge=1)
    time_budget_s: float | None = Field(None, gt=0)


class DemoSettings(Budget):
    """Budget and fixed-value overrides used on the built-in sample (no ``--data``)."""

    fixed: dict[str, Any] = Field(default_factory=dict)


class SchedulerSpec(_Strict):
    """``asha`` prunes on the metric by epoch; ``fifo`` runs every trial to the end."""

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3, gt=1)
    brackets: int = Field(1, ge=1)


class SamplerSpec(_Strict):
    """Optuna TPE settings. ``n_startup_trials: auto`` scales with the budget (see
    :func:`startup_trials`).

    ``multivariate`` models the parameters jointly; ``group`` (needs ``multivariate``) does so
    per sub-space of parameters that were sampled together, so a conditional parameter is modelled
    with the parents it appears with instead of falling back to independent sampling;
    ``constant_liar`` counts trials still running as bad results, so trials that run in parallel
    are not all suggested near the same point.
    """

    type: Literal["tpe"] = "tpe"
    n_startup_trials: int | Literal["auto"] = Field("auto")
    multivariate: bool = True
    group: bool = True
    constant_liar: bool = True

    @field_validator("n_startup_trials")
    @classmethod
    def _non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return v

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> SamplerSpec:
        if self.group and not self.multivariate:
            raise ValueError("group: true needs multivariate: true (or set group: false)")
        return self


def startup_trials(setting: int | str, num_samples: int, n_points: int) -> int:
    """Trials TPE leaves to random sampling before it models the space.

    ``auto``: the ``n_points`` configurations of ``points_to_evaluate`` plus a quarter of the
    remaining budget (at least 2), so that a small search still spends most trials on TPE's
    suggestions, and a 6-trial search is not pure random search. A number is used as given.
    """
    if setting != "auto":
        return int(setting)
    return n_points + max(2, (num_samples - n_points) // 4)


def tpe_sampler(
    spec: SamplerSpec, seed: int | None, num_samples: int, n_points: int = 0
) -> optuna.samplers.TPESampler:
    """The Optuna TPE sampler ``spec`` describes, for a search of ``num_samples`` trials of which
    ``n_points`` come from ``points_to_evaluate``."""
    with warnings.catch_warnings():
        # group=True is marked experimental (since Optuna 2.8); say so once in the docs, not per run
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials(spec.n_startup_trials, num_samples, n_points),
            multivariate=spec.multivariate,
            group=spec.group,
            constant_liar=spec.constant_liar,
        )


class FidelitySpec(_Strict):
    """Image resolution as a fidelity: ``image_size`` lists the sizes trials train at, one per
    ASHA rung, the last the full size (``hpa_tune.train.size_schedule``)."""

    image_size: list[int] = Field(min_length=2)

    @field_validator("image_size")
    @classmethod
    def _increasing(cls, sizes: list[int]) -> list[int]:
        if sizes != sorted(set(sizes)) or sizes[0] < 16:
            raise ValueError(f"sizes must increase strictly, from at least 16 px (got {sizes})")
        return sizes


class Resources(_Strict):
    """Per-trial resources; ``max_concurrent`` caps trials running at once.

    ``gpus_per_trial: auto`` means one GPU per trial when the Ray cluster has GPUs, else none.
    """

    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float | Literal["auto"] = "auto"
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="retries of a trial whose process died")


class SpaceSpec(_Strict):
    """A whole search-space file."""

    name: str = ""
    description: str = ""
    metric: str = "val_macro_f1"
    mode: Literal["max", "min"] = "max"
    budget: Budget = Budget()
    demo: DemoSettings = DemoSettings(num_samples=6, max_epochs=4)
    scheduler: SchedulerSpec = SchedulerSpec()
    sampler: SamplerSpec = SamplerSpec()
    resources: Resources = Resources()
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    fidelity: FidelitySpec | None = None
    points_to_evaluate: list[dict[str, Scalar]] = Field(default_factory=list)
    score_all_trials: bool = (
        False  # after refit, score every trial's best checkpoint on the holdout
    )
    # The refit trains each member for this many times the trials' max_epochs, keeping its best
    # epoch by `metric`; 1 reuses a completed trial's checkpoint instead of training again.
    refit_epochs_factor: float = Field(1.0, ge=1.0, le=10.0)

    @model_validator(mode="after")
    def _check_structure(self) -> SpaceSpec:
        if self.metric not in METRICS:
            raise ValueError(f"metric: unknown {self.metric!r}; valid: {sorted(METRICS)}")
        keys = set(config_keys())
        for section, fixed in (("fixed", self.fixed), ("demo.fixed", self.demo.fixed)):
            for key in fixed:
                if key not in keys:
                    raise ValueError(
                        f"{section}.{key}: unknown key; valid keys: {', '.join(config_keys())}"
                    )
        for name, p in self.params.items():
            target = p.sets or name
            if target not in keys:
                raise ValueError(
                    f"params.{name}: sets unknown config key {target!r}; valid keys: {', '.join(config_keys())}"
                )
            for parent, values in p.condition().items():
                if parent not in self.params:
                    raise ValueError(
                        f"params.{name}.when: unknown parameter {parent!r}; known: {list(self.params)}"
                    )
                choices = self.params[parent].choices
                if choices is not None and (bad := [v for v in values if v not in choices]):
                    raise ValueError(
                        f"params.{name}.when.{parent}: {bad} not among its choices {choices}"
                    )
        _check_shared_targets(self.params)
        for i, point in enumerate(self.points_to_evaluate):
            if unknown := [k for k in point if k not in self.params]:
                raise ValueError(
                    f"points_to_evaluate[{i}]: unknown parameter(s) {unknown}; known: {list(self.params)}"
                )
        sampling_order(self.params)  # raises on a cycle
        if self.fidelity is not None:
            self._check_fidelity(self.fidelity)
        return self

    def _check_fidelity(self, fidelity: FidelitySpec) -> None:
        """``fidelity.image_size`` owns the image size and needs single-bracket ASHA rungs."""
        where = "fidelity.image_size"
        if "image_size" in self.fixed or "image_size" in self.demo.fixed:
            raise ValueError(f"{where} sets the image size; remove image_size from fixed")
        if sampled := [n for n in self.params if self.config_key(n) == "image_size"]:
            raise ValueError(f"{where} sets the image size; remove params.{sampled[0]}")
        if self.scheduler.type != "asha" or self.scheduler.brackets != 1:
            raise ValueError(f"{where} needs scheduler type asha with brackets 1 (its rungs)")
        if capsnets := [a for a in self._arch_values() if _is_capsnet(a)]:
            raise ValueError(f"{where}: {capsnets[0]} is built for one input size; fix image_size")
        s = self.scheduler
        for key, budget in (("budget", self.budget), ("demo", self.demo)):
            try:
                size_schedule(
                    fidelity.image_size, s.grace_period, s.reduction_factor, budget.max_epochs
                )
            except ValueError as err:
                raise ValueError(f"{where} with {key}.max_epochs: {err}") from None

    def _arch_values(self) -> list[Any]:
        """Every architecture a trial can get: fixed, or among a parameter's choices."""
        values = [self.fixed.get("arch"), self.demo.fixed.get("arch")]
        for name, p in self.params.items():
            if self.config_key(name) == "arch":
                values += p.choices or []
        return [v for v in values if v is not None]

    def config_key(self, param: str) -> str:
        """The TrialConfig key a parameter fills."""
        return self.params[param].sets or param


def _is_capsnet(arch: Any) -> bool:
    from hpa_tune.models import get_model_info

    try:
        return get_model_info(str(arch)).family == "capsnet"
    except ValueError:
        return False  # an unknown name fails as a TrialConfig, naming the valid ones


def fidelity_constants(spec: SpaceSpec, max_epochs: int) -> dict[str, Any]:
    """The constants a resolution fidelity adds to every trial: the full ``image_size`` and the
    ``size_schedule`` on the ASHA rungs before ``max_epochs``; none without a fidelity.

    Raises:
        HpaTuneError: the image size is pinned too (``--set``), or ``max_epochs`` (``--max-epochs``)
            leaves fewer rungs than sizes.
    """
    if spec.fidelity is None:
        return {}
    where = f"space {spec.name!r}: fidelity.image_size"
    if "image_size" in spec.fixed:
        raise HpaTuneError(f"{where} sets the image size; it cannot be pinned (--set image_size)")
    s, sizes = spec.scheduler, spec.fidelity.image_size
    try:
        schedule = size_schedule(sizes, s.grace_period, s.reduction_factor, max_epochs)
    except ValueError as err:
        raise HpaTuneError(f"{where}: {err}") from None
    return {"image_size": sizes[-1], "size_schedule": [list(entry) for entry in schedule]}


def _check_shared_targets(params: dict[str, ParamSpec]) -> None:
    """Parameters filling the same key must be exclusive: conditioned on one parent, disjoint values."""
    by_target: dict[str, list[str]] = {}
    for name, p in params.items():
        by_target.setdefault(p.sets or name, []).append(name)
    for target, names in by_target.items():
        if len(names) < 2:
            continue
        conds = [params[n].condition() for n in names]
        parents = {next(iter(c)) for c in conds if len(c) == 1}
        values = [v for c in conds for vs in c.values() for v in vs]
        if any(len(c) != 1 for c in conds) or len(parents) != 1 or len(values) != len(set(values)):
            raise ValueError(
                f"params {names} all set {target!r}: each needs a 'when' on the same parameter "
                "with values no other of them uses"
            )


def sampling_order(params: dict[str, ParamSpec]) -> list[str]:
    """Parameters ordered so each comes after the ones its ``when`` refers to.

    Raises:
        ValueError: on a cycle of conditions.
    """
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(
                f"params: 'when' conditions form a cycle: {' -> '.join((*path, name))}"
            )
        state[name] = 1
        for parent in params[name].condition():
            visit(parent, (*path, name))
        state[name] = 2
        order.append(name)

    for name in params:
        visit(name, ())
    return order


def _location(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"] if p != "function-after")


def parse_space(raw: Any, source: str = "<space>") -> SpaceSpec:
    """Validate a parsed YAML mapping into a SpaceSpec.

    Raises:
        HpaTuneError: one line per problem, naming ``source``, the key and what was expected.
    """
    if not isinstance(raw, dict):
        raise HpaTuneError(
            f"{source}: expected a mapping of sections (params, fixed, budget, ...), got {type(raw).__name__}"
        )
    try:
        return SpaceSpec(**raw)
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            loc = _location(problem)
            if problem["type"] == "extra_forbidden":
                problems.append(f"unknown key {loc!r}")
            else:
                msg = " ".join(problem["msg"].removeprefix("Value error, ").split())
                problems.append(f"{loc + ': ' if loc else ''}{msg}")
        raise HpaTuneError(f"{source}: " + "; ".join(problems)) from None
    except TypeError as err:
        raise HpaTuneError(f"{source}: {err}") from None


def load_space(path: str | Path) -> SpaceSpec:
    """Read and validate a search-space YAML file (name defaults to the file's stem)."""
    path = Path(path)
    if not path.is_file():
        raise HpaTuneError(f"{path}: search-space file not found")
    spec = parse_space(read_yaml(path), str(path))
    return spec if spec.name else spec.model_copy(update={"name": path.stem})


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, any problem (not UTF-8, binary, bad syntax) as a one-line error.

    Raises:
        HpaTuneError: naming the file, the line and column, and what was wrong.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise HpaTuneError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
            "expected a YAML search space"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise HpaTuneError(f"{path}: not valid YAML: {where}{problem}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as err:
        reason = " ".join(str(err).split())
        raise HpaTuneError(f"{path}: not valid YAML: {reason}") from None


def _condition_holds(p: ParamSpec, sampled: dict[str, Any]) -> bool:
    return all(
        parent in sampled and sampled[parent] in values for parent, values in p.condition().items()
    )


def sample_params(spec: SpaceSpec, trial: optuna.Trial | optuna.trial.FixedTrial) -> dict[str, Any]:
    """Sample every active parameter on ``trial`` (define-by-run); returns name -> value."""
    sampled: dict[str, Any] = {}
    for name in sampling_order(spec.params):
        p = spec.params[name]
        if not _condition_holds(p, sampled):
            continue
        if p.type == "categorical":
            sampled[name] = trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
        elif p.type == "int":
            step = int(p.step) if p.step else 1
            sampled[name] = trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)  # type: ignore[arg-type]
        else:
            sampled[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)  # type: ignore[arg-type]
    return sampled


@dataclass(frozen=True)
class DefineByRun:
    """The function OptunaSearch calls per trial: samples, and returns the constants to add.

    A class rather than a closure so Ray can pickle the searcher's state for resuming.
    """

    spec: SpaceSpec
    constants: dict[str, Any]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        sample_params(self.spec, trial)
        return dict(self.constants)


def define_by_run(
    spec: SpaceSpec, constants: dict[str, Any] | None = None
) -> Callable[[optuna.Trial], dict[str, Any]]:
    """The define-by-run function of ``spec`` that also returns ``constants``."""
    return DefineByRun(spec, dict(constants or {}))


def resolve_config(
    spec: SpaceSpec, params: dict[str, Any], constants: dict[str, Any]
) -> TrialConfig:
    """The TrialConfig of one trial: TrialConfig defaults <- ``constants`` <- sampled ``params``."""
    values = dict(constants)
    for name, value in params.items():
        if name in spec.params:
            values[spec.config_key(name)] = value
    return make_trial_config(values, where=f"space {spec.name!r}")


def replay(spec: SpaceSpec, params: dict[str, Any], constants: dict[str, Any]) -> TrialConfig:
    """Re-derive a trial's configuration from its sampled params via ``optuna.trial.FixedTrial``.

    Raises:
        HpaTuneError: ``params`` do not fit the space (a missing or out-of-range parameter).
    """
    try:
        sampled = sample_params(spec, optuna.trial.FixedTrial(params))
    except ValueError as err:
        raise HpaTuneError(f"parameters {params} do not fit space {spec.name!r}: {err}") from None
    return resolve_config(spec, sampled, constants)


def split_trial_config(
    spec: SpaceSpec, flat: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a Ray trial config into (sampled params, constants)."""
    params = {k: v for k, v in flat.items() if k in spec.params}
    constants = {k: v for k, v in flat.items() if k not in spec.params}
    return params, constants


def preview_configs(
    spec: SpaceSpec, constants: dict[str, Any], n: int = 16, seed: int = 0
) -> list[tuple[dict[str, Any], TrialConfig]]:
    """Sample ``n`` random configurations (plus every ``points_to_evaluate``) and resolve each.

    Used before a run starts and by ``hpa-tune check``, so that a bad value fails with its key
    before any Ray worker is started.

    Raises:
        HpaTuneError: a sampled configuration is not a valid TrialConfig.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    for point in spec.points_to_evaluate:
        study.enqueue_trial(point)
    out = []
    for _ in range(len(spec.points_to_evaluate) + n):
        trial = study.ask()
        params = sample_params(spec, trial)
        out.append((params, resolve_config(spec, params, constants)))
        study.tell(trial, 0.0)
    return out


def _ancestors(spec: SpaceSpec, names: set[str]) -> set[str]:
    """``names`` and every parameter their ``when`` conditions refer to, transitively."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += list(spec.params[name].condition())
    return found


def _highest_value(p: ParamSpec) -> Scalar:
    if p.step is None:
        assert p.high is not None  # a numeric parameter always has bounds
        return int(p.high) if p.type == "int" else p.high
    top = p.low + ((p.high - p.low) // p.step) * p.step  # type: ignore[operator]
    return int(top) if p.type == "int" else top


def _branch_values(spec: SpaceSpec, name: str) -> list[Scalar]:
    """The values of parameter ``name`` a combination tries: every choice of a categorical; of a
    number its highest value and each value a child's ``when`` names within its range."""
    p = spec.params[name]
    if p.choices is not None:
        return list(p.choices)
    named = [
        v
        for child in spec.params.values()
        for v in child.condition().get(name, [])
        if isinstance(v, int | float) and p.low <= v <= p.high  # type: ignore[operator]
    ]
    return [_highest_value(p), *[v for v in named if v != _highest_value(p)]]


def config_combinations(
    spec: SpaceSpec, constants: dict[str, Any], keys: set[str]
) -> list[tuple[dict[str, Any], TrialConfig]]:
    """Every combination of the values the config ``keys`` can take in the space, resolved.

    Deterministic, and conditions are respected: a parameter is varied only in the branches where
    its ``when`` holds, and the parameters a condition refers to are varied too. A categorical
    takes each of its choices; a number its highest value (for callers to which larger is the
    worst case, such as memory). Other parameters are left out (their keys keep ``constants`` or
    the defaults), and combinations that are not a valid TrialConfig are skipped: no trial could
    be sampled with them.
    """
    varied = _ancestors(spec, {n for n in spec.params if spec.config_key(n) in keys})
    combos: list[dict[str, Any]] = [{}]
    for name in (n for n in sampling_order(spec.params) if n in varied):
        p = spec.params[name]
        values = _branch_values(spec, name)
        grown: list[dict[str, Any]] = []
        for c in combos:
            grown += [{**c, name: v} for v in values] if _condition_holds(p, c) else [c]
        combos = grown
    out = []
    for params in combos:
        try:
            out.append((params, resolve_config(spec, params, constants)))
        except HpaTuneError:
            continue
    return out


def searched_values(spec: SpaceSpec, key: str) -> list[Any]:
    """Every value a config key can take from the space's parameters (empty if none samples it)."""
    values: list[Any] = []
    for name, p in spec.params.items():
        if spec.config_key(name) == key and p.choices:
            values += [v for v in p.choices if v not in values]
    return values


def pin_values(spec: SpaceSpec, values: dict[str, Any]) -> SpaceSpec:
    """The space with some config keys pinned (``--set``, a demo's fixed values).

    A pinned key leaves the search: parameters that set it are removed, conditions on them are
    resolved against the pinned value (kept parameters lose that condition, others are removed),
    and the pinned values join ``fixed``. Pinning ``pretrained`` to ``none`` also pins ``freeze``
    to ``none`` (unless it is pinned too): frozen random weights learn nothing.
    """
    if values.get("pretrained") == "none" and "freeze" not in values:
        values = {**values, "freeze": "none"}
    params = dict(spec.params)
    removed: dict[str, Any] = {
        name: values[spec.config_key(name)] for name in params if spec.config_key(name) in values
    }
    while removed:
        for name in removed:
            params.pop(name, None)
        newly: dict[str, Any] = {}
        for name, p in list(params.items()):
            cond = p.condition()
            decided = {parent: v for parent, v in cond.items() if parent in removed}
            if not decided:
                continue
            if all(removed[parent] in v for parent, v in decided.items()):
                rest = {k: v for k, v in cond.items() if k not in decided}
                params[name] = p.model_copy(update={"when": rest or None})
            else:
                newly[name] = None  # its condition can never hold: never sampled
        removed = newly
    points = [{k: v for k, v in point.items() if k in params} for point in spec.points_to_evaluate]
    return spec.model_copy(
        update={
            "params": params,
            "fixed": {**spec.fixed, **values},
            "points_to_evaluate": [p for p in points if p],
        }
    )
