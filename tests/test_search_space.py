"""Search-space YAML: validation names file and key; translation samples only active parameters."""

from pathlib import Path

import optuna
import pytest
import yaml

from hpa_tune.errors import HpaTuneError
from hpa_tune.search.space import (
    config_combinations,
    define_by_run,
    load_space,
    parse_space,
    pin_values,
    preview_configs,
    replay,
    resolve_config,
    sample_params,
    sampling_order,
    tpe_sampler,
)

SPACES = sorted(Path(__file__).resolve().parents[1].joinpath("search_spaces").glob("*.yaml"))

CONDITIONAL = {
    "fixed": {"image_size": 64, "pretrained": "imagenet"},
    "params": {
        "resnet_freeze": {
            "type": "categorical",
            "choices": ["fc", "none"],
            "when": {"arch": "resnet18"},
            "sets": "freeze",
        },
        "arch": {"type": "categorical", "choices": ["baseline_cnn", "resnet18", "densenet121"]},
        "densenet_freeze": {
            "type": "categorical",
            "choices": ["classifier", "none"],
            "when": {"arch": ["densenet121"]},
            "sets": "freeze",
        },
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
    },
}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_samples_valid_configs(path):
    spec = load_space(path)
    assert spec.name == path.stem
    assert len(preview_configs(spec, dict(spec.fixed), n=8)) >= 8


def test_conditional_parameters_appear_only_when_their_condition_holds():
    spec = parse_space(CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_arch = set()
    for _ in range(60):
        trial = study.ask()
        params = sample_params(spec, trial)
        seen_arch.add(params["arch"])
        assert ("resnet_freeze" in params) == (params["arch"] == "resnet18")
        assert ("densenet_freeze" in params) == (params["arch"] == "densenet121")
        cfg = resolve_config(spec, params, dict(spec.fixed))
        if params["arch"] == "baseline_cnn":
            assert cfg.freeze == "none"
        study.tell(trial, 0.0)
    assert seen_arch == {"baseline_cnn", "resnet18", "densenet121"}


def test_parents_are_sampled_before_their_dependents():
    order = sampling_order(parse_space(CONDITIONAL).params)
    assert order.index("arch") < order.index("resnet_freeze")


def test_define_by_run_returns_constants_and_does_no_other_work():
    spec = parse_space(CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    assert define_by_run(spec, {"image_size": 64})(trial) == {"image_size": 64}
    assert "arch" in trial.params and "lr" in trial.params


def test_replay_of_a_fixed_configuration_gives_the_same_trial_config():
    spec = parse_space(CONDITIONAL)
    params = {"arch": "resnet18", "resnet_freeze": "fc", "lr": 0.01, "batch_size": 32}
    cfg = replay(spec, params, {"image_size": 64, "pretrained": "imagenet"})
    assert (cfg.arch, cfg.freeze, cfg.lr, cfg.batch_size, cfg.image_size) == (
        "resnet18",
        "fc",
        0.01,
        32,
        64,
    )


def test_replay_with_a_missing_parameter_names_it():
    spec = parse_space(CONDITIONAL)
    with pytest.raises(HpaTuneError, match="resnet_freeze"):
        replay(spec, {"arch": "resnet18", "lr": 0.01, "batch_size": 32}, {})


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"parms": {}}, "unknown key 'parms'"),
        ({"params": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "params.lr: bad range"),
        ({"params": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "low > 0"),
        ({"params": {"lr": {"type": "float", "low": 0.1}}}, "needs 'low' and 'high'"),
        ({"params": {"lr": {"type": "uniform", "low": 0, "high": 1}}}, "params.lr.type"),
        ({"params": {"bs": {"type": "categorical", "choices": []}}}, "non-empty 'choices'"),
        (
            {
                "params": {
                    "freeze": {"type": "categorical", "choices": ["fc"], "when": {"arch": "x"}}
                }
            },
            "params.freeze.when: unknown parameter 'arch'",
        ),
        (
            {"params": {"lr_typo": {"type": "float", "low": 0.1, "high": 1}}},
            "sets unknown config key 'lr_typo'",
        ),
        ({"fixed": {"learning_rate": 0.1}}, "fixed.learning_rate: unknown key"),
        (
            {"params": {"lr": {"type": "float", "low": 0.1, "high": 1, "lwo": 2}}},
            "unknown key 'params.lr.lwo'",
        ),
        ({"metric": "accuracy"}, "metric: unknown 'accuracy'"),
        (
            {"sampler": {"type": "tpe", "multivariate": False, "group": True}},
            "sampler: group: true needs multivariate: true",
        ),
        (
            {
                "params": {
                    "a": {
                        "type": "categorical",
                        "choices": ["fc"],
                        "when": {"b": "x"},
                        "sets": "freeze",
                    },
                    "b": {
                        "type": "categorical",
                        "choices": ["x"],
                        "when": {"a": "fc"},
                        "sets": "arch",
                    },
                }
            },
            "cycle",
        ),
    ],
)
def test_bad_spaces_fail_naming_the_file_and_key(tmp_path, raw, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(HpaTuneError) as err:
        load_space(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_bad_fixed_value_fails_before_any_run_naming_the_key():
    spec = parse_space({"fixed": {"arch": "resnet18", "freeze": "denseblock4"}})
    with pytest.raises(HpaTuneError, match="freeze 'denseblock4' is not a level of resnet18"):
        preview_configs(spec, dict(spec.fixed), n=1)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(HpaTuneError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [unclosed\n")
    with pytest.raises(HpaTuneError, match="not valid YAML"):
        load_space(bad)


def test_pinning_a_sampled_key_removes_its_parameter_and_resolves_conditions():
    spec = parse_space(CONDITIONAL)
    pinned = pin_values(spec, {"arch": "resnet18", "lr": 0.01})
    assert "arch" not in pinned.params and "lr" not in pinned.params
    assert "densenet_freeze" not in pinned.params  # its condition (densenet121) can never hold
    assert pinned.params["resnet_freeze"].when is None  # its condition (resnet18) always holds
    assert pinned.fixed["arch"] == "resnet18"
    for params, cfg in preview_configs(pinned, dict(pinned.fixed), n=10):
        assert cfg.arch == "resnet18" and cfg.lr == 0.01 and "resnet_freeze" in params


def test_pinning_a_freeze_level_removes_every_parameter_that_sets_it():
    pinned = pin_values(parse_space(CONDITIONAL), {"freeze": "none"})
    assert not {"resnet_freeze", "densenet_freeze"} & set(pinned.params)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_runs_offline_at_64_px(path):
    spec = pin_values(load_space(path), {"pretrained": "none", "image_size": 64})
    for _, cfg in preview_configs(spec, dict(spec.fixed), n=12):
        assert cfg.pretrained == "none" and cfg.image_size == 64


def test_study_table_enumerates_the_six_study_configurations():
    spec = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "study_table.yaml")
    configs = [cfg for _, cfg in preview_configs(spec, dict(spec.fixed), n=0)]
    rows = {
        (c.arch, c.loss_weighting, c.loss, c.freeze, c.lr_schedule, c.weight_decay) for c in configs
    }
    assert rows == {
        ("resnet18", "none", "bce", "fc", "constant", 0.0),
        ("resnet18", "full", "bce", "fc", "constant", 0.0),
        ("resnet18", "ln", "bce", "fc", "constant", 0.0),
        ("capsnet", "ln", "margin", "none", "constant", 0.0),
        ("densenet161", "ln", "bce", "denseblock4", "constant", 0.0),
        ("densenet161", "ln", "bce", "denseblock4", "step", 0.0001),
    }
    assert spec.scheduler.type == "fifo" and spec.budget.num_samples == 6 and spec.score_all_trials


def test_pinning_pretrained_none_also_unfreezes_so_no_sampled_config_trains_frozen_random_weights():
    spec = parse_space(CONDITIONAL)
    pinned = pin_values(spec, {"pretrained": "none"})
    assert not {"resnet_freeze", "densenet_freeze"} & set(pinned.params)
    assert all(cfg.freeze == "none" for _, cfg in preview_configs(pinned, dict(pinned.fixed), n=8))
    # An explicit freeze pin is kept, and the nonsense it makes is refused.
    with pytest.raises(HpaTuneError, match="frozen random weights"):
        explicit = pin_values(spec, {"pretrained": "none", "arch": "resnet18", "freeze": "fc"})
        preview_configs(explicit, dict(explicit.fixed), n=1)


def _conditional_study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """A study whose ``momentum`` exists only in the trials that chose ``sgd``."""

    def objective(trial: optuna.Trial) -> float:
        optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        if optimizer == "sgd":
            return lr * trial.suggest_float("momentum", 0.0, 0.99)
        return lr

    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial({"optimizer": "adam"})
    study.enqueue_trial({"optimizer": "sgd"})
    study.optimize(objective, n_trials=4)
    return study


@pytest.mark.parametrize("group", [True, False])
def test_tpe_sampler_has_the_settings_of_the_spec(group):
    spec = parse_space(
        {"sampler": {"type": "tpe", "multivariate": True, "group": group, "constant_liar": False}}
    ).sampler
    sampler = tpe_sampler(spec, seed=0, num_samples=8)
    study = _conditional_study(sampler)
    modelled = sampler.infer_relative_search_space(study, study.trials[-1])
    # group=True models the conditional parameter with the sub-space it was sampled in;
    # plain multivariate TPE models only what every trial had and samples momentum on its own.
    assert ("momentum" in modelled) is group
    assert {"optimizer", "lr"} <= set(modelled)
    assert sampler._constant_liar is False


def test_tpe_defaults_are_multivariate_grouped_with_constant_liar_and_auto_start_up():
    spec = parse_space({}).sampler
    assert (spec.multivariate, spec.group, spec.constant_liar) == (True, True, True)
    sampler = tpe_sampler(spec, seed=0, num_samples=13, n_points=1)
    assert sampler._constant_liar is True
    assert sampler._n_startup_trials == 1 + 3  # auto: the point + a quarter of the other 12


def test_val_macro_f1_at_the_best_global_threshold_is_a_metric_a_space_can_rank_by():
    spec = parse_space({"metric": "val_macro_f1_global", "mode": "max"})
    assert spec.metric == "val_macro_f1_global" and spec.mode == "max"


def test_config_combinations_are_every_choice_of_the_keys_asked_for_within_their_conditions():
    spec = parse_space(
        {
            "fixed": {"image_size": 64, "pretrained": "imagenet"},
            "params": {
                "arch": {"type": "categorical", "choices": ["baseline_cnn", "resnet18"]},
                "resnet_freeze": {
                    "type": "categorical",
                    "choices": ["fc", "none"],
                    "when": {"arch": "resnet18"},
                    "sets": "freeze",
                },
                "big_batch": {
                    "type": "int",
                    "low": 8,
                    "high": 60,
                    "step": 8,
                    "when": {"resnet_freeze": "fc"},
                    "sets": "batch_size",
                },
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
        }
    )
    combos = config_combinations(spec, dict(spec.fixed), {"arch", "freeze", "batch_size"})
    got = sorted((c.arch, c.freeze, c.batch_size) for _, c in combos)
    # a number takes its highest value (56, on the step grid); a parameter outside its branch
    # keeps the default (batch 32); lr is no key asked for and is left out
    assert got == [("baseline_cnn", "none", 32), ("resnet18", "fc", 56), ("resnet18", "none", 32)]
    assert all("lr" not in params for params, _ in combos)
    assert combos == config_combinations(spec, dict(spec.fixed), {"arch", "freeze", "batch_size"})


FIDELITY = {
    "budget": {"max_epochs": 10},
    "demo": {"max_epochs": 4},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
    "fidelity": {"image_size": [16, 32, 64]},
}


def test_a_fidelity_sets_the_full_image_size_and_the_schedule_of_every_trial():
    from hpa_tune.search.space import fidelity_constants

    spec = parse_space(FIDELITY, "f.yaml")
    constants = fidelity_constants(spec, max_epochs=10)
    assert constants == {"image_size": 64, "size_schedule": [[1, 16], [3, 32], [10, 64]]}
    cfg = resolve_config(spec, {}, {**constants, "max_epochs": 10})
    assert [cfg.epoch_size(e) for e in (1, 2, 3, 4, 10)] == [16, 32, 32, 64, 64]
    assert cfg.training_sizes() == [16, 32, 64]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fixed": {"image_size": 64}}, "fidelity.image_size sets the image size; remove image_size from fixed"),
        ({"demo": {"max_epochs": 4, "fixed": {"image_size": 64}}}, "remove image_size from fixed"),
        ({"params": {"size": {"type": "categorical", "choices": [32, 64], "sets": "image_size"}}}, "remove params.size"),
        ({"scheduler": {"type": "fifo"}}, "fidelity.image_size needs scheduler type asha with brackets 1"),
        ({"scheduler": {"type": "asha", "brackets": 2}}, "needs scheduler type asha with brackets 1"),
        ({"fixed": {"arch": "capsnet"}}, "fidelity.image_size: capsnet is built for one input size"),
        ({"params": {"arch": {"type": "categorical", "choices": ["resnet18", "capsnet"]}}}, "capsnet is built for one input size"),
        ({"budget": {"max_epochs": 3}}, r"fidelity.image_size with budget.max_epochs: 3 sizes need 2 ASHA rung\(s\)"),
        ({"demo": {"max_epochs": 3}}, "fidelity.image_size with demo.max_epochs"),
        ({"fidelity": {"image_size": [64, 32]}}, "fidelity.image_size: sizes must increase strictly"),
        ({"fidelity": {"image_size": [8, 32]}}, "from at least 16 px"),
        ({"fidelity": {"image_size": [64]}}, "fidelity.image_size"),
        ({"fidelity": {"size": [16, 32]}}, "unknown key 'fidelity.size'"),
    ],
)  # fmt: skip
def test_a_fidelity_that_cannot_work_is_one_line_naming_the_key(change, message):
    with pytest.raises(HpaTuneError, match=message) as err:
        parse_space({**FIDELITY, **change}, "f.yaml")
    assert str(err.value).startswith("f.yaml: ") and "\n" not in str(err.value)


def test_a_fidelity_with_a_pinned_size_or_too_few_epochs_at_run_time_is_refused():
    from hpa_tune.search.space import fidelity_constants

    spec = parse_space(FIDELITY, "f.yaml")
    with pytest.raises(HpaTuneError, match=r"--set image_size"):
        fidelity_constants(pin_values(spec, {"image_size": 64}), 10)
    with pytest.raises(HpaTuneError, match=r"fidelity.image_size: 3 sizes need 2 .*max_epochs 2"):
        fidelity_constants(spec, 2)  # --max-epochs 2


def test_a_space_cannot_fix_the_size_schedule_itself():
    with pytest.raises(HpaTuneError, match=r"fixed\.size_schedule: unknown key"):
        parse_space({"fixed": {"size_schedule": [[1, 32]]}}, "f.yaml")
