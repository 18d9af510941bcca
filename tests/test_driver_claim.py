"""One driver per experiment (``driver_claim``): the decisions alone, the claim on a local
directory and on moto's S3, and the commands that take it (``run``, ``resume``, ``refit``)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict

import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.experiment_files import CLAIM_DIR
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.driver_claim import (
    DriverClaim,
    ExperimentBusy,
    acquire,
    boot_id,
    decide,
    driver_claim,
    is_stale,
    process_start,
    read_claims,
)

HERE = {"host": "node-a", "boot_id": "boot-1"}
T0 = 1_800_000_000.0


def _claim(key="00000000000000000010-aa", host="node-a", boot="boot-1", pid=100, start=5, beat=T0):
    return DriverClaim(key, "run", host, boot, pid, start, T0, beat)


def _judge(claim, *, now=T0, processes=None):
    processes = {100: 5} if processes is None else processes
    return is_stale(
        claim, **HERE, now=now, stale_after=300, process_start=lambda pid: processes.get(pid)
    )


# The decisions, over plain values.


def test_a_claim_of_a_running_process_on_this_machine_is_live():
    assert not _judge(_claim())


def test_a_claim_whose_process_is_gone_is_stale():
    assert _judge(_claim(), processes={})


def test_a_recycled_pid_with_another_start_time_is_not_the_holder():
    assert _judge(_claim(start=5), processes={100: 9})


def test_a_claim_from_another_machine_is_stale_only_when_its_heartbeat_is_old():
    other = _claim(host="node-b", pid=100)
    assert not _judge(other, now=T0 + 299, processes={})  # its pid means nothing here
    assert _judge(other, now=T0 + 301, processes={100: 5})
    rebooted = _claim(boot="boot-0")  # same name, earlier boot: judged by its heartbeat too
    assert _judge(rebooted, now=T0 + 301)


def test_the_only_live_claim_holds():
    mine = _claim(key="2-b")
    assert decide("2-b", [mine]).action == "hold"


def test_a_later_contender_loses_to_the_earlier_claim_naming_it():
    first, second = _claim(key="1-a"), _claim(key="2-b", pid=200)
    decision = decide("2-b", [second, first])
    assert decision.action == "lose" and decision.holder == first


def test_the_earlier_contender_waits_while_a_later_one_is_listed():
    first, second = _claim(key="1-a"), _claim(key="2-b", pid=200)
    assert decide("1-a", [first, second]) == decide("1-a", [second, first])
    assert decide("1-a", [first, second]).action == "wait"


def test_the_holder_is_named_with_host_pid_and_since_when():
    text = _claim().describe()
    assert text == "hpa-tune run on host node-a, pid 100, since 2027-01-15 08:00:00 UTC"


# The claim itself, on a local directory and on S3.


def _planted(location, proc, *, command="run", age_s=0.0):
    """A claim written for process ``proc`` (on this machine), as its driver would have."""
    started = time.time() - age_s
    claim = DriverClaim(
        key=f"{int(started * 1e9):020d}-{uuid.uuid4().hex[:12]}",
        command=command,
        host=socket.gethostname(),
        boot_id=boot_id(),
        pid=proc.pid,
        pid_start=process_start(proc.pid),
        started=started,
        heartbeat=started,
    )
    path = storage.join(location, CLAIM_DIR, f"{claim.key}.json")
    storage.write_bytes(path, json.dumps(asdict(claim)).encode())
    return claim


def _dead_process():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def s3_bucket(s3_endpoint):
    import boto3

    name = f"claim-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def gs_bucket(gcs_endpoint):
    from tests.test_gcs_storage import _create_bucket

    name = f"claim-{uuid.uuid4().hex[:8]}"
    _create_bucket(gcs_endpoint, name)
    return f"gs://{name}"


def _base(where, tmp_path, request):
    """Where experiments go: a local directory, or a new bucket on moto's S3 or the GCS emulator."""
    return str(tmp_path) if where == "local" else request.getfixturevalue(f"{where}_bucket")


def _race(location, contenders=4):
    """``contenders`` drivers acquiring ``location`` at the same moment: (held, refused)."""
    barrier, held, refused = threading.Barrier(contenders), [], []

    def contend():
        barrier.wait()
        try:
            held.append(acquire(location, "run"))
        except ExperimentBusy as err:
            refused.append(err)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return held, refused


@pytest.mark.parametrize("where", ["local", "s3", "gs"])
def test_of_drivers_starting_together_exactly_one_holds(where, tmp_path, request):
    base = _base(where, tmp_path, request)
    for _ in range(3):
        held, refused = _race(storage.join(base, "exp"))
        assert len(held) == 1 and len(refused) == 3, (held, refused)
        for err in refused:  # each loser names a driver, and left no claim behind
            assert f"pid {os.getpid()}" in str(err)
        claims = read_claims(held[0].location)
        assert [c.key for c in claims] == [held[0].claim.key]
        held[0].release()
        assert read_claims(held[0].location) == []


@pytest.mark.parametrize("where", ["local", "s3", "gs"])
def test_a_live_drivers_claim_refuses_and_a_dead_ones_is_taken_over(
    where, tmp_path, request, live_process
):
    base = _base(where, tmp_path, request)
    location = storage.join(base, "exp")
    holder = _planted(location, live_process)
    with pytest.raises(ExperimentBusy, match=f"pid {live_process.pid}, since"):
        acquire(location, "resume")
    assert read_claims(location) == [holder]  # the loser's own claim is gone, the holder's kept

    _planted(location, _dead_process(), age_s=60)
    live_process.kill()
    live_process.wait()
    with driver_claim(location, "resume") as mine:
        assert read_claims(location) == [mine]  # both dead drivers' claims taken over
    assert read_claims(location) == []


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch):
    import hpa_tune.storage.driver_claim as dc

    monkeypatch.setattr(dc, "HEARTBEAT_S", 0.05)
    with driver_claim(tmp_path, "run") as mine:
        deadline = time.monotonic() + 10
        while read_claims(str(tmp_path))[0].heartbeat == mine.heartbeat:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert not (tmp_path / CLAIM_DIR).exists()


def test_a_claim_cut_short_is_live_until_its_age_makes_it_stale(tmp_path, monkeypatch):
    key = f"{time.time_ns():020d}-deadbeef0000"
    storage.write_bytes(str(tmp_path / CLAIM_DIR / f"{key}.json"), b'{"key": ')
    with pytest.raises(ExperimentBusy, match="not complete yet"):
        acquire(tmp_path, "run")
    monkeypatch.setenv("HPA_TUNE_DRIVER_STALE_S", "0.01")
    time.sleep(0.05)
    with driver_claim(tmp_path, "run") as mine:
        assert read_claims(str(tmp_path)) == [mine]


# The commands.


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_naming(result, proc):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "another driver holds this experiment" in lines[0]
    assert f"on host {socket.gethostname()}, pid {proc.pid}, since " in lines[0]


SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 2, "max_epochs": 2},
    "scheduler": {"type": "fifo"},
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1},
    "fixed": {"image_size": 32, "channels": "rgb", "arch": "baseline_cnn", "batch_size": 16},
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_run_resume_and_refit_refuse_an_experiment_a_live_driver_holds(
    where, tmp_path, request, live_process
):
    base = _base(where, tmp_path / "runs", request)
    location = storage.join(base, "exp")
    storage.write_bytes(storage.join(location, "run.json"), b"{}")  # the holder's, so far
    _planted(location, live_process)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    run = ["run", space, "--data", tmp_path / "no-data", "--storage", base, "--name", "exp"]
    for args in (run, ["resume", location], ["refit", location]):
        _one_line_naming(_invoke(*args), live_process)
    assert len(read_claims(location)) == 1  # the refused commands left nothing behind


def test_resume_of_a_path_holding_nothing_creates_nothing_there(tmp_path):
    result = _invoke("resume", tmp_path / "typo")
    assert result.exit_code == 2 and "not found" in result.output
    assert not (tmp_path / "typo").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_of_two_runs_with_one_name_only_the_first_runs_and_resume_waits_for_it(
    ray_runtime, sample_shards, tmp_path
):
    from tests.test_resume import _driver

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    exp_dir = tmp_path / "runs" / "exp"
    args = ["run", space, "--data", sample_shards, "--storage", tmp_path / "runs", "--name", "exp"]
    first_args = [str(a) for a in [*args, "--quiet", "--no-refit"]]
    with (
        tempfile.TemporaryDirectory(prefix="rc", dir="/tmp") as ray_tmp,
        _driver(first_args, ray_tmp) as first,
    ):
        deadline = time.monotonic() + 120
        while not list((exp_dir / CLAIM_DIR).glob("*.json")):
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for second in ([*args, "--quiet"], ["resume", exp_dir]):
            result = _invoke(*second, "--no-refit")
            assert first.poll() is None, first.stdout.read().decode()[-3000:]  # still holding
            _one_line_naming(result, first)
        assert first.wait(timeout=300) == 0, first.stdout.read().decode()[-3000:]
    # Only the first driver's trials, and its claim released.
    trials = [d.name for d in exp_dir.iterdir() if d.name.startswith("trial_")]
    assert len(trials) == SPACE["budget"]["num_samples"], trials
    assert not (exp_dir / CLAIM_DIR).exists()


@pytest.mark.ray
def test_run_takes_over_the_claim_of_a_driver_that_died(ray_runtime, sample_shards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    exp = tmp_path / "runs" / "exp"
    _planted(str(exp), _dead_process())  # killed before it wrote anything else
    args = ["run", space, "--data", sample_shards, "--storage", tmp_path / "runs", "--name", "exp"]
    result = _invoke(*args, "--num-samples", "1", "--max-epochs", "1", "--quiet", "--no-refit")
    assert result.exit_code == 0, result.output
    assert (exp / "summary.csv").is_file() and not (exp / CLAIM_DIR).exists()


def test_claims_are_not_mistaken_for_a_path_that_holds_an_experiment(tmp_path):
    # A run's own claim is taken before the "experiment exists" check: that check ignores it.
    from hpa_tune.search.experiment import check_new_experiment

    with driver_claim(tmp_path / "exp", "run"):
        check_new_experiment(tmp_path / "exp")
