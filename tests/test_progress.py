"""The live view of a search: the overall bar/line and the trial table, as a pure rendering."""

from rich.console import Console

from hpa_tune.ray_layer.live_table import RUNNING, SearchState, TrialState, render


def text_of(renderable) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def search_state() -> SearchState:
    state = SearchState(num_samples=4, max_epochs=6)
    state.trials["a1"] = TrialState(
        "a1", {"arch": "resnet18", "lr": 0.00123456}, "completed", 6, 0.21, 0.25
    )
    state.trials["b2"] = TrialState(
        "b2", {"arch": "baseline_cnn", "lr": 0.01}, "pruned", 2, 0.05, 0.07
    )
    state.trials["c3"] = TrialState("c3", {"arch": "resnet18"}, RUNNING, 3, 0.30, 0.31)
    return state


def test_the_overall_line_counts_finished_and_running_trials_and_names_the_best():
    text = text_of(render(search_state(), ["arch", "lr"]))
    first = text.splitlines()[0]
    assert "trials 2/4 done, 1 running" in first
    assert "best val macro F1 0.3100 (trial c3)" in first
    assert "━" in first  # the bar of trials done


def test_the_table_shows_each_trials_params_epoch_scores_and_status():
    lines = text_of(render(search_state(), ["arch", "lr"])).splitlines()
    row = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
    assert row["a1"] == ["a1", "resnet18", "0.00123", "6/6", "0.2100", "0.2500", "completed"]
    assert row["b2"][-1] == "pruned" and row["b2"][3] == "2/6"
    assert row["c3"][2] == "-"  # a parameter this trial did not sample
    assert row["c3"][-1] == RUNNING


def test_only_the_most_recent_trials_are_listed():
    state = SearchState(num_samples=30, max_epochs=1)
    for i in range(30):
        state.trials[f"t{i:02d}"] = TrialState(f"t{i:02d}", {}, "completed", 1, 0.1, 0.1)
    text = text_of(render(state, [], max_rows=5))
    assert "t29" in text and "t25" in text and "t24" not in text


def test_trials_not_yet_placed_show_as_waiting_for_resources():
    state = search_state()
    state.trials["d4"] = TrialState("d4", {"arch": "resnet18"})  # created, not started
    text = text_of(render(state, ["arch", "lr"]))
    assert "1 running, 1 waiting for resources" in text.splitlines()[0]
    d4 = next(line for line in text.splitlines() if line.startswith("d4"))
    assert d4.endswith("waiting for resources")


def test_the_overall_line_does_not_mention_waiting_when_nothing_waits():
    assert "waiting" not in text_of(render(search_state(), ["arch"])).splitlines()[0]


def test_the_live_view_picks_up_trials_tune_has_created_but_not_placed(monkeypatch):
    from types import SimpleNamespace

    from hpa_tune.ray_layer.live_table import PENDING, LiveProgress

    live = LiveProgress(num_samples=4, max_epochs=2, param_names=["lr"])
    refreshes: list[int] = []
    monkeypatch.setattr(live, "_refresh", lambda: refreshes.append(1))
    trials = [
        SimpleNamespace(trial_id="a", status="PENDING", config={"lr": 0.1}),
        SimpleNamespace(trial_id="b", status="RUNNING", config={"lr": 0.2}),
    ]
    live.on_step_begin(0, trials)
    live.on_step_begin(1, trials)  # nothing new: no redraw
    assert live.state.trials["a"].status == PENDING and "b" not in live.state.trials
    assert len(refreshes) == 1
    live.on_trial_start(2, trials, trials[0])
    assert live.state.trials["a"].status == RUNNING
