"""``hpa-tune resume`` after the driver was SIGKILLed mid-search: finished trials are kept as they
were, running ones continue from their checkpoint, the study ends with exactly the requested
trials and none RUNNING."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from hpa_tune.cli import main
from hpa_tune.search.study import load_study

pytestmark = pytest.mark.ray

NUM_SAMPLES, MAX_EPOCHS = 4, 4
SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": NUM_SAMPLES, "max_epochs": MAX_EPOCHS},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"type": "tpe", "n_startup_trials": 3},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
    "fixed": {"image_size": 32, "channels": "rgb", "arch": "baseline_cnn", "batch_size": 8},
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


def _session_pids(sid):
    """Processes (still) in session ``sid``: the killed driver's Ray processes, if any linger."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[3]) == sid:  # after the name: state, ppid, pgrp, session
                pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def _driver(args, ray_tmp):
    """``hpa-tune run`` in its own session with its own local Ray; whatever of that session is
    left at the end is killed (only it: other Ray instances on the machine are not ours)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)  # its own Ray, never one another `ray start` announced
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpa_tune.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        for pid in [proc.pid, *_session_pids(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _trial_states(exp_dir):
    """Optuna's view: Ray trial id -> the study's trial."""
    study = load_study(exp_dir, "r")
    return {} if study is None else {t.user_attrs.get("trial_id"): t for t in study.trials}


def _ray_states(exp_dir):
    """Ray Tune's view, as its last snapshot in the experiment directory has it (what
    ``Tuner.restore`` starts from): trial id -> (status, last epoch reported)."""
    snapshots = sorted(exp_dir.glob("experiment_state-*.json"))
    if not snapshots:
        return {}
    states = {}
    for trial_json, metadata_json in json.loads(snapshots[-1].read_text())["trial_data"]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        states[trial["trial_id"]] = (trial["status"], (metadata["last_result"] or {}).get("epoch"))
    return states


def _mid_search(exp_dir, proc, timeout_s=300):
    """Wait until Ray's snapshot has two trials finished and one running past its first epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):  # a snapshot may be half-written
            states = _ray_states(exp_dir).values()
            finished = [s for s, _ in states if s == "TERMINATED"]
            running = [e for s, e in states if s == "RUNNING" and e and e < MAX_EPOCHS - 1]
            if len(finished) >= 2 and running:
                return True
        time.sleep(0.1)
    return False


def _result_rows(trial_dir):
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_resume_after_the_driver_was_killed_finishes_the_search_without_rerunning(
    ray_runtime, sample_shards, tmp_path
):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    exp_dir = tmp_path / "r"
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    with (
        tempfile.TemporaryDirectory(prefix="rk", dir="/tmp") as ray_tmp,
        _driver([*args, "--name", "r", "--quiet", "--no-refit", "--seed", "3"], ray_tmp) as proc,
    ):
        reached = _mid_search(exp_dir, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as when its machine goes away
        proc.wait()
        assert reached, proc.stdout.read().decode()[-3000:]

    at_kill, ray_at_kill = _trial_states(exp_dir), _ray_states(exp_dir)
    # Finished: in Ray's snapshot, or only in the study (told after Ray's last snapshot).
    finished = {tid for tid, t in at_kill.items() if t.state.is_finished()}
    finished |= {tid for tid, (status, _) in ray_at_kill.items() if status == "TERMINATED"}
    running = {tid: epoch for tid, (status, epoch) in ray_at_kill.items() if status == "RUNNING" and epoch and tid not in finished}  # fmt: skip
    rows_at_kill = {tid: _result_rows(exp_dir / f"trial_{tid}") for tid in ray_at_kill}
    assert len(finished) >= 2 and running

    result = CliRunner().invoke(main, ["resume", str(exp_dir), "--no-refit"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"experiment: {exp_dir.resolve()}"
    # The search was started --quiet; resume shows its own progress (plain: not a terminal),
    # counting the trials finished before the kill as done.
    for tid in running:
        assert f"trial {tid} epoch {MAX_EPOCHS}/{MAX_EPOCHS}" in result.output or (
            f"trial {tid} pruned" in result.output
        )
    assert f"status: trials {NUM_SAMPLES}/{NUM_SAMPLES} done, 0 running" in result.output

    summary = pd.read_csv(exp_dir / "summary.csv", dtype={"trial_id": str}).set_index("trial_id")
    history = pd.read_csv(exp_dir / "history.csv", dtype={"trial_id": str})
    study = load_study(exp_dir, "r")
    assert len(summary) == NUM_SAMPLES and len(study.trials) == NUM_SAMPLES
    assert not history.duplicated(["trial_id", "epoch"]).any()
    # The study holds exactly the search's trials, each told how it really ended.
    fate = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    assert {t.user_attrs["trial_id"]: t.state for t in study.trials} == {
        tid: fate[status] for tid, status in summary["status"].items()
    }
    for trial in study.trials:  # and every epoch's score as history.csv has it
        epochs = history[history["trial_id"] == trial.user_attrs["trial_id"]]
        assert trial.intermediate_values == pytest.approx(
            dict(zip(epochs["epoch"], epochs["val_macro_f1"], strict=True))
        )
    for tid in finished:  # kept as they were: not one more epoch trained or reported
        assert _result_rows(exp_dir / f"trial_{tid}") == rows_at_kill.get(tid, []), tid
    for tid, last_epoch in running.items():  # continued from their checkpoint, not epoch 1
        rows = _result_rows(exp_dir / f"trial_{tid}")
        assert rows[: len(rows_at_kill[tid])] == rows_at_kill[tid]  # what it did before is kept
        resumed = rows[len(rows_at_kill[tid]) :]
        assert resumed[0]["iterations_since_restore"] == 1
        assert resumed[0]["epoch"] == last_epoch + 1, (tid, resumed[0]["epoch"], last_epoch)
    # ASHA kept its rungs: every trial that reached rung 1 before the kill is still recorded.
    rungs = json.loads((exp_dir / "asha_state.json").read_text())["brackets"][0]
    rung_1 = next(r["recorded"] for r in rungs if r["milestone"] == 1)
    assert {tid for tid in at_kill if at_kill[tid].intermediate_values} <= set(rung_1)


def _interrupt_after_first_epoch(exp_dir, sent):
    """Ctrl-C (SIGINT to this process, whose main thread runs Tune) once a trial reported."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the journal may not be there yet
            if any(t.intermediate_values for t in _trial_states(exp_dir).values()):
                os.kill(os.getpid(), signal.SIGINT)
                sent.append(True)
                return
        time.sleep(0.1)


def test_ctrl_c_stops_the_search_and_prints_how_to_resume_it(ray_runtime, sample_shards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "budget": {"num_samples": 2, "max_epochs": 4}}))
    exp_dir, sent = tmp_path / "r", []
    watcher = threading.Thread(target=_interrupt_after_first_epoch, args=(exp_dir, sent))
    watcher.start()
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--name", "r", "--quiet", "--no-refit"])
    watcher.join()
    assert sent and result.exit_code == 130, result.output
    assert f"Continue it with: hpa-tune resume {exp_dir}" in result.output
    assert not (exp_dir / "summary.csv").exists()  # no results written for a stopped search
    # The study was not told that the interrupted trials ended: resume continues them.
    assert any(not t.state.is_finished() for t in _trial_states(exp_dir).values())


def _lines(proc):
    """The driver's output lines, collected by a thread as they come."""
    lines: list[str] = []

    def read():
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(condition, proc, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):  # the journal may not be there yet
            if condition():
                return True
        time.sleep(0.1)
    return False


def test_sigterm_stops_the_search_like_ctrl_c_and_it_resumes(ray_runtime, sample_shards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "budget": {"num_samples": 2, "max_epochs": 3}}))
    exp_dir = tmp_path / "r"  # the study name _trial_states reads
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    with (
        tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp,
        _driver([*args, "--name", "r", "--quiet", "--no-refit"], ray_tmp) as proc,
    ):
        output = _lines(proc)
        reported = _wait_for(
            lambda: any(t.intermediate_values for t in _trial_states(exp_dir).values()), proc
        )
        assert reported, "".join(output)[-3000:]
        os.kill(proc.pid, signal.SIGTERM)  # what timeout, systemd, Slurm and Kubernetes send
        code = proc.wait(timeout=300)
        text = "".join(output)

    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert f"Continue it with: hpa-tune resume {exp_dir.resolve()}" in text
    assert "Traceback" not in text and "core dumped" not in text and "*** " not in text
    resumed = CliRunner().invoke(main, ["resume", str(exp_dir), "--no-refit"])
    assert resumed.exit_code == 0, resumed.output
    assert len(pd.read_csv(exp_dir / "summary.csv")) == 2


def test_a_second_ctrl_c_during_the_refit_aborts_quietly(sample_shards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "budget": {"num_samples": 1, "max_epochs": 1}}))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path)]
    with (
        tempfile.TemporaryDirectory(prefix="rc", dir="/tmp") as ray_tmp,
        _driver([*args, "--name", "c", "--quiet"], ray_tmp) as proc,
    ):
        output = _lines(proc)
        refitting = _wait_for(lambda: any(line.startswith("refit:") for line in output), proc)
        assert refitting, "".join(output)[-3000:]
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.3)  # while the first one unwinds and Ray shuts down
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=300)
        text = "".join(output)

    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]


def _files(root):
    return {
        p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_resume_of_a_finished_experiment_says_so_and_leaves_it_as_it_is(
    tied_experiment, tmp_path, monkeypatch
):
    import shutil

    import hpa_tune.ray_layer.resume
    import hpa_tune.ray_layer.runner

    exp = tmp_path / "finished"
    shutil.copytree(tied_experiment[0], exp)
    before = _files(exp)

    def no_ray(*args, **kwargs):
        raise AssertionError("resume of a finished experiment started Ray")

    monkeypatch.setattr(hpa_tune.ray_layer.resume, "resume_search", no_ray)
    monkeypatch.setattr(hpa_tune.ray_layer.runner, "_init_ray", no_ray)
    result = CliRunner().invoke(main, ["resume", str(exp)])
    assert result.exit_code == 0, result.output
    assert f"{exp}: the search is finished (summary.csv) and its refit is in" in result.output
    assert "nothing to resume, left as it is" in result.output
    assert _files(exp) == before  # summary.csv, best.json, refit/: not a byte, not a touch

    # Asked for explicitly, a new refit replaces refit/; the search's files stay.
    result = CliRunner().invoke(main, ["resume", str(exp), "--refit"])
    assert result.exit_code == 0, result.output
    after = _files(exp)
    assert after[Path("refit/metrics.json")][1] != before[Path("refit/metrics.json")][1]
    for name in ("summary.csv", "best.json", "history.csv", "optuna.journal"):
        assert after[Path(name)] == before[Path(name)]
