"""Progress of a search: the live view (a pure rendering), the plain lines a log gets, and what
`hpa-tune run` prints when its stdout is a pipe."""

import re
from types import SimpleNamespace

import yaml
from rich.console import Console

from hpa_tune.ray_layer.live_table import RUNNING, PlainProgress, SearchState, TrialState, render
from hpa_tune.report.search_view import asha_rungs, epoch_is_logged, eta_s, progress_mode
from tests.conftest import SEARCH_SPACE, run_piped


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


def test_auto_progress_is_live_on_a_terminal_and_plain_in_a_log():
    assert progress_mode("auto", is_terminal=True) == "live"
    assert progress_mode("auto", is_terminal=False) == "plain"
    assert progress_mode("none", is_terminal=True) == "none"


def test_asha_rungs_are_the_epochs_where_trials_are_compared():
    assert asha_rungs(1, 2, 3) == [1, 2]
    assert asha_rungs(2, 3, 10) == [2, 6]
    assert asha_rungs(2, 3, 2) == []


def test_an_epoch_is_logged_at_a_rung_at_the_end_and_every_n_epochs():
    logged = [e for e in range(1, 31) if epoch_is_logged(e, 30, [2, 6, 18], every=10)]
    assert logged == [2, 6, 10, 18, 20, 30]


def test_the_eta_comes_once_a_trial_has_ended_and_stays_within_the_time_budget():
    assert eta_s(100.0, 0, 6) is None
    assert eta_s(100.0, 2, 6) == 200.0
    assert eta_s(100.0, 2, 6, time_budget_s=150.0) == 50.0


def _trial(trial_id, status="RUNNING", **config):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, error_file=None)


def test_plain_progress_prints_a_line_per_event_and_an_overall_line_each_interval(
    capsys, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    plain = PlainProgress(3, 4, ["lr"], rungs=[1, 2], status_every_s=60)
    a, b = _trial("a", lr=0.001), _trial("b", lr=0.01)
    plain.on_trial_start(0, [a, b], a)
    plain.on_trial_start(0, [a, b], b)
    plain.on_trial_result(1, [a, b], a, {"epoch": 1, "val_macro_f1": 0.1, "best_val_macro_f1": 0.1})
    plain.on_trial_result(2, [a, b], a, {"epoch": 3, "val_macro_f1": 0.2, "best_val_macro_f1": 0.2})
    plain.on_trial_result(3, [a, b], b, {"epoch": 1, "val_macro_f1": 0.3, "best_val_macro_f1": 0.3})
    plain.on_trial_complete(4, [a, b], b)
    clock[0] += 59
    plain.on_step_end(5, [a, b])  # not a minute yet
    clock[0] += 1
    plain.on_step_end(6, [a, b])
    plain.on_trial_error(7, [a, b], a)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["trial a started: lr=0.001", "trial b started: lr=0.01"]
    assert lines[2] == "trial a epoch 1/4 (ASHA rung): val macro F1 0.1000, best 0.1000"
    # epoch 3 is neither a rung, the last epoch, nor a multiple of every_epochs (1 for 4 epochs):
    # with 4 epochs every epoch is logged
    assert lines[3].startswith("trial a epoch 3/4: val macro F1 0.2000")
    assert lines[5] == (
        "trial b pruned at epoch 1/4 (ASHA stopped it at its rung), best val macro F1 0.3000"
    )
    assert lines[6] == (
        "status: trials 1/3 done, 1 running, elapsed 1m00s, "
        "best val macro F1 0.3000 (trial b), ETA 2m00s"
    )
    assert lines[7].startswith("trial a failed at epoch 3/4 (")
    assert len(lines) == 8


def test_a_search_with_resolution_rungs_shows_the_size_each_trial_trains_at(capsys):
    plain = PlainProgress(2, 6, ["lr"], rungs=[2], sizes_vary=True)
    a = _trial("a", lr=0.001)
    plain.on_trial_start(0, [a], a)
    plain.on_trial_result(1, [a], a, {"epoch": 2, "val_macro_f1": 0.1, "image_size": 32})
    plain.on_trial_result(2, [a], a, {"epoch": 6, "val_macro_f1": 0.2, "image_size": 64})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("trial a epoch 2/6 at 32 px (ASHA rung): val macro F1 0.1000")
    assert lines[2].startswith("trial a epoch 6/6 at 64 px: val macro F1 0.2000")
    table = text_of(render(plain.state, ["lr"]))
    assert re.search(r"epoch\s+px\s+val F1", table) and re.search(r"6/6\s+64\s+0\.2000", table)


def test_a_search_at_one_size_has_no_size_column_or_size_in_its_lines(capsys):
    plain = PlainProgress(2, 6, ["lr"], rungs=[2])
    a = _trial("a", lr=0.001)
    plain.on_trial_start(0, [a], a)
    plain.on_trial_result(1, [a], a, {"epoch": 2, "val_macro_f1": 0.1, "image_size": 64})
    assert " px" not in capsys.readouterr().out
    assert "px" not in text_of(render(plain.state, ["lr"]))


def test_a_bar_that_never_gets_an_update_prints_nothing(capsys):
    from hpa_tune.cli._common import progress_bar

    bar, _ = progress_bar("refit epochs")  # a refit whose members all reuse checkpoints
    with bar:
        pass
    assert capsys.readouterr().out == ""


def _texts(piped):
    return [line for _, line in piped.lines]


def test_a_piped_run_prints_each_trial_event_while_the_search_runs(piped_search):
    lines = piped_search.lines
    assert piped_search.returncode == 0, "\n".join(_texts(piped_search))[-3000:]
    started = {m.group(1): t for t, line in lines if (m := re.match(r"trial (\S+) started", line))}
    assert len(started) == 3
    ended = [t for t, line in lines if re.match(r"trial \S+ (completed|pruned) at epoch", line)]
    assert len(ended) == 3
    # The first trial's line came while the search ran, not in one flush when it was over: a
    # second or more before the last trial ended (the search's trials take several seconds even
    # on a fast machine; lines flushed at the end arrive within milliseconds of each other).
    assert min(started.values()) < max(ended) - 1.0
    for trial_id in started:
        assert any(
            re.match(rf"trial {trial_id} epoch 1/3 \(ASHA rung\): val macro F1", x)
            for x in _texts(piped_search)
        )
        assert any(
            re.match(rf"trial {trial_id} (completed|pruned) at epoch \d/3 \(", x)
            for x in _texts(piped_search)
        )
    assert "status: trials 3/3 done, 0 running" in "\n".join(_texts(piped_search))
    refit = [x for x in _texts(piped_search) if x.startswith("refit: member 1/1")]
    assert len(refit) == 2  # started (reuses / retrains) and ended
    assert all(t < piped_search.ended_s for t, _ in lines)


def test_a_piped_run_cuts_no_column_and_glues_no_line(piped_search):
    texts = _texts(piped_search)
    assert not [x for x in texts if "…" in x]
    assert not [x for x in texts if "0/?" in x]  # no empty progress bar
    # Only our lines: not Ray Tune's TensorBoard logger complaining about -inf checkpoint ranks.
    assert not [x for x in texts if "NaN or Inf" in x]
    # Every table starts on its own line: nothing before a title, one header per line.
    assert not [
        x for x in texts if "trials (best first)" in x and x.strip() != "trials (best first)"
    ]
    assert not [x for x in texts if x.count("trial ") > 1 and "status" in x and "val F1" in x]
    header = next(x for x in texts if "train F1" in x)  # the final table's header
    for column in ("lr", "batch_size", "loss_weighting", "best val_macro_f1"):
        assert column in header  # in full, up to the final table's last column


def test_a_failing_piped_run_ends_with_the_error_on_its_own_line(sample_shards, tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"this is not a state dict")
    space = tmp_path / "space.yaml"
    fixed = {**SEARCH_SPACE["fixed"], "pretrained": str(weights)}
    space.write_text(yaml.safe_dump({**SEARCH_SPACE, "fixed": fixed}))
    args = [
        *("run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path / "r")),
        *("--name", "f", "--num-samples", "1", "--max-epochs", "1"),
    ]
    piped = run_piped(args, tmp_path / "r" / "f")
    texts = [x for x in _texts(piped) if x.strip()]
    assert piped.returncode == 2
    assert any(
        re.match(r"trial \S+ failed at epoch 0/1 \(.*cannot read pretrained", x) for x in texts
    )
    errors = [x for x in texts if "error: " in x]
    assert errors and all(x.startswith("error: ") for x in errors), texts[-5:]
    assert texts[-1].startswith("error: no trial reported val_macro_f1")


def test_a_resumed_search_counts_the_trials_it_had_finished_as_done():
    plain = PlainProgress(3, 4, ["lr"])
    done = SimpleNamespace(
        trial_id="a", status="TERMINATED", config={"lr": 0.1}, last_result={"epoch": 4}
    )
    plain.on_step_begin(0, [done, _trial("b", "PENDING")])
    assert plain.state.trials["a"].status == "completed" and plain.state.finished() == 1
