"""Shared fixtures: tiny Kaggle-layout directories written by the tests themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from hpa_tune.classes import CHANNELS
from hpa_tune.cli import main

# Trials and refits must never try to download weights in tests.
os.environ.setdefault("HPA_TUNE_OFFLINE", "1")


def write_kaggle_dir(
    root: Path, n: int, *, size: int = 512, seed: int = 0, n_test: int = 0, suffix: str = ".png"
) -> dict[str, np.ndarray]:
    """A Kaggle layout with ``n`` train samples (labels cycling over all 28 classes) and ``n_test``
    test samples; returns train Id -> the (4, size, size) uint8 image written, in CHANNELS order."""
    rng = np.random.default_rng(seed)
    images: dict[str, np.ndarray] = {}
    root.mkdir(parents=True, exist_ok=True)

    def write(folder: str, sample_id: str) -> np.ndarray:
        (root / folder).mkdir(exist_ok=True)
        img = rng.integers(0, 256, (len(CHANNELS), size, size), dtype=np.uint8)
        for plane, color in zip(img, CHANNELS, strict=True):
            Image.fromarray(plane).save(
                root / folder / f"{sample_id}_{color}{suffix}", compress_level=1
            )
        return img

    lines = ["Id,Target"]
    for i in range(n):
        sample_id = f"{i:08x}-0000-0000-0000-000000000000"
        labels = sorted({i % 28, (i * 7 + 3) % 28})
        lines.append(f"{sample_id},{' '.join(map(str, labels))}")
        images[sample_id] = write("train", sample_id)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    if n_test:
        sub = ["Id,Predicted"]
        for i in range(n_test):
            sample_id = f"{i:08x}-ffff-0000-0000-000000000000"
            sub.append(f"{sample_id},0")
            write("test", sample_id)
        (root / "sample_submission.csv").write_text("\n".join(sub) + "\n")
    return images


SMALL_SOURCE = 128  # tests write 128 px sources (prepare(expected_size=128)) to stay fast


@pytest.fixture
def kaggle_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """56 train samples (every class present 4 times) and 5 test samples at 128 px."""
    root = tmp_path / "raw"
    return root, write_kaggle_dir(root, 56, n_test=5, size=SMALL_SOURCE)


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in renderer's HPA-like images (a learnable signal), small: 336 train + 28 test at
    64 px, prepared at 32 px. Shared by the trainable, search, refit and predict tests."""
    from hpa_tune.data.builtin_sample.render import write_kaggle_sample
    from hpa_tune.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("sample")
    write_kaggle_sample(root / "raw", 336, 28, size=64, seed=5, min_per_class=8, workers=2)
    prepare(
        root / "raw",
        root / "shards",
        PrepareOptions(sizes=(32,), workers=2, expected_size=64, seed=5),
    )
    return root / "shards"


@pytest.fixture(scope="session")
def fidelity_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sample (168 train + 28 test at 32 px) prepared at 16 and 32 px: the two rungs of
    the resolution-fidelity tests."""
    from hpa_tune.data.builtin_sample.render import write_kaggle_sample
    from hpa_tune.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("fidelity-sample")
    write_kaggle_sample(root / "raw", 168, 28, size=32, seed=7, min_per_class=6, workers=2)
    prepare(
        root / "raw",
        root / "shards",
        PrepareOptions(sizes=(16, 32), workers=2, expected_size=32, seed=7),
    )
    return root / "shards"


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own ``$HPA_TUNE_CACHE`` (staging) and node shard cache, set
    before any Ray runtime starts so that trials inherit them."""
    names = ("HPA_TUNE_CACHE", "HPA_TUNE_SHARD_CACHE")
    previous = {k: os.environ.get(k) for k in names}
    os.environ["HPA_TUNE_CACHE"] = str(tmp_path_factory.mktemp("hpa-tune-cache"))
    os.environ["HPA_TUNE_SHARD_CACHE"] = str(tmp_path_factory.mktemp("shard-cache"))
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# Fake AWS credentials for moto's S3 server; tests check that neither string is ever written.
FAKE_AWS_KEY_ID = "AKIAHPATUNEFAKEKEY42"
FAKE_AWS_SECRET = "hpaTuneFakeSecret/DoNotWrite+0123456789abc"


def files_holding(secrets: tuple[bytes, ...], bucket: str, local_roots: list[Path]) -> list[str]:
    """Every file on ``bucket`` and under ``local_roots`` (plus the private caches) that contains
    one of ``secrets``."""
    from hpa_tune.storage import filesystems as storage

    leaks = [
        f"{bucket}/{rel}"
        for rel in storage.list_files(bucket)
        if any(s in storage.read_bytes(f"{bucket}/{rel}") for s in secrets)
    ]
    roots = [
        *local_roots,
        Path(os.environ["HPA_TUNE_CACHE"]),
        Path(os.environ["HPA_TUNE_SHARD_CACHE"]),
    ]
    leaks += [
        str(p)
        for base in roots
        for p in base.rglob("*")
        if p.is_file() and any(s in p.read_bytes() for s in secrets)
    ]
    return leaks


# Where a user keeps other things beside hpa-tune's output: notes, another data set's manifest and
# shards, another experiment (names that look like ours but are not ours to touch).
FOREIGN_NAMES = (
    "NOTES.md",
    "other-set/manifest.json",
    "other-set/size_32/train-00000.parquet",
    "experiments/exp-0/run.json",
)


class ForeignFiles:
    """Files a test plants where hpa-tune writes (a local directory or a bucket prefix) that no
    command created: every command must leave each of them present and byte-for-byte unchanged."""

    def __init__(self) -> None:
        self.planted: dict[str, bytes] = {}

    def plant(self, location: str | Path, names: tuple[str, ...] = FOREIGN_NAMES) -> None:
        """Write ``names`` (relative paths) below ``location``, each with content of its own."""
        from hpa_tune.storage import filesystems as storage

        for name in names:
            where = storage.join(str(location), *name.split("/"))
            content = f"not hpa-tune's: {where}\n".encode()
            storage.write_bytes(where, content)
            self.planted[where] = content

    def damaged(self) -> list[str]:
        """The planted files that are gone or no longer hold what was planted."""
        from hpa_tune.storage import filesystems as storage

        def intact(where: str, content: bytes) -> bool:
            try:
                return storage.read_bytes(where) == content
            except FileNotFoundError:
                return False

        return [where for where, content in self.planted.items() if not intact(where, content)]

    def assert_intact(self) -> None:
        assert self.planted, "nothing was planted"
        assert self.damaged() == []


@pytest.fixture
def foreign() -> Iterator[ForeignFiles]:
    """A :class:`ForeignFiles` for one test, checked once more when the test ends."""
    files = ForeignFiles()
    yield files
    if files.planted:
        files.assert_intact()


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's real S3 server on a free loopback port, with fake credentials and
    ``AWS_ENDPOINT_URL`` in the environment (set before Ray starts, so trials inherit them).
    Yields the endpoint URL; every test makes its own bucket."""
    from moto.server import ThreadedMotoServer

    port = _free_loopback_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_AWS_SECRET,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def gcs_endpoint():
    """A GCS emulator (gcp-storage-emulator: Google's JSON and upload APIs, in memory) on a free
    loopback port, announced the Google way, ``STORAGE_EMULATOR_HOST`` (set before Ray starts,
    so trials inherit it). Yields the endpoint URL; every test makes its own bucket."""
    from gcp_storage_emulator.server import create_server

    port = _free_loopback_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        yield endpoint
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture(scope="session")
def ray_runtime(s3_endpoint, gcs_endpoint):
    """A real local Ray runtime (2 CPUs) shared by every test that schedules trials (started
    after the S3 and GCS test servers, so trials see their endpoints and credentials)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def builtin_sample(tmp_path_factory: pytest.TempPathFactory):
    """The real built-in sample (default settings), rendered and prepared once into a private
    cache; ``HPA_TUNE_CACHE`` points there for the whole session."""
    from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample

    cache = tmp_path_factory.mktemp("hpa-cache")
    previous = os.environ.get("HPA_TUNE_CACHE")
    os.environ["HPA_TUNE_CACHE"] = str(cache)
    try:
        yield ensure_builtin_sample()
    finally:
        if previous is None:
            os.environ.pop("HPA_TUNE_CACHE", None)
        else:
            os.environ["HPA_TUNE_CACHE"] = previous


SEARCH_SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 6, "max_epochs": 4},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"type": "tpe", "n_startup_trials": 3},
    # One trial at a time: ASHA then compares every trial with all earlier ones at each rung,
    # so which trials it stops is a deterministic function of the seeded runs.
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": "auto", "max_concurrent": 1},
    "fixed": {"image_size": 32, "channels": "rgb", "arch": "baseline_cnn"},
    "params": {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64]},
        "loss_weighting": {"type": "categorical", "choices": ["none", "full", "ln"]},
    },
}


@pytest.fixture(scope="session")
def search_root(tmp_path_factory) -> Path:
    """Where the shared search keeps its space file and its ``--storage`` (``runs/``)."""
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="session")
def search_foreign(search_root: Path) -> ForeignFiles:
    """The files planted in and beside the shared search's ``--storage`` before it ran (see
    :func:`searched_experiment`); a test that runs a command on that experiment checks them."""
    root = search_root
    files = ForeignFiles()
    files.plant(root / "runs")
    files.plant(root, ("NOTES.md", "runs-old/t/run.json"))
    return files


@pytest.fixture(scope="session")
def searched_experiment(ray_runtime, sample_shards, search_root, search_foreign):
    """One ASHA search (6 trials, some pruned) + refit on the sample shards, run through the CLI
    exactly as a user would, into a ``--storage`` that already held files of someone else's
    (``search_foreign``, intact afterwards). Returns (experiment directory, CLI output); shared
    read-only."""
    root = search_root
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(space),
            "--data",
            str(sample_shards),
            "--storage",
            str(root / "runs"),
            "--name",
            "t",
            "--seed",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    search_foreign.assert_intact()
    return root / "runs" / "t", result.output


def resnet_freeze_param(*choices: str) -> dict:
    """The spaces' usual conditional parameter: ``resnet_freeze`` (setting ``freeze``) over
    ``choices``, sampled only when ``arch`` is resnet18."""
    return {
        "type": "categorical",
        "choices": list(choices),
        "when": {"arch": "resnet18"},
        "sets": "freeze",
    }


def load_events(run_dir: Path):
    """TensorBoard's own reader (an EventAccumulator) over one run's event files, loaded, with
    every scalar, tensor and image kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


@dataclass
class PipedSearch:
    """``hpa-tune run`` as under ``nohup`` or CI: stdout (and stderr) a pipe, read as it comes."""

    exp_dir: Path
    lines: list[tuple[float, str]]  # (seconds since the start, line), as each line arrived
    ended_s: float  # when the process exited
    returncode: int
    statuses_while_running: list[str]  # `hpa-tune status` outputs taken while the driver ran


def run_piped(args: list[str], exp_dir: Path, poll_status: bool = False) -> PipedSearch:
    """Run ``python -m hpa_tune.cli ARGS`` with its output piped into this process, recording when
    each line arrives; with ``poll_status``, run ``hpa-tune status EXP_DIR`` every 2 s meanwhile
    (kept when the driver was still running after it answered)."""
    import subprocess
    import sys
    import threading
    import time

    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpa_tune.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    statuses: list[str] = []
    try:
        while proc.poll() is None and time.monotonic() - started < 600:
            if poll_status and (exp_dir / "run.json").is_file():
                out = CliRunner().invoke(main, ["status", str(exp_dir)]).output
                if proc.poll() is None:
                    statuses.append(out)
            time.sleep(2)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # our own driver only
    ended = time.monotonic() - started
    reader.join(timeout=30)
    return PipedSearch(exp_dir, lines, ended, proc.returncode, statuses)


@pytest.fixture(scope="session")
def piped_search(sample_shards, tmp_path_factory) -> PipedSearch:
    """A 3-trial, 3-epoch ASHA search (rungs at epochs 1 and 2) and its refit, run through
    ``hpa-tune run`` with stdout piped, ``hpa-tune status`` polled while it runs."""
    root = tmp_path_factory.mktemp("piped")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    args = [
        *("run", str(space), "--data", str(sample_shards), "--storage", str(root / "runs")),
        *("--name", "p", "--num-samples", "3", "--max-epochs", "3", "--seed", "1"),
    ]
    piped = run_piped(args, root / "runs" / "p", poll_status=True)
    (root / "output.txt").write_text("".join(f"{t:7.1f} {line}\n" for t, line in piped.lines))
    return piped


TIED_SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 1, "max_epochs": 3},
    "scheduler": {"type": "fifo"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1},
    # Only the head trains (frozen features, frozen BatchNorm statistics), by SGD with a
    # learning rate too small to change a float32 weight: every epoch predicts the same, so the
    # val scores of all epochs tie exactly.
    "fixed": {
        "image_size": 32,
        "channels": "rgb",
        "arch": "baseline_cnn",
        "batch_size": 32,
        "freeze": "head",
        "optimizer": "sgd",
        "momentum": 0.0,
    },
    "params": {"lr": {"type": "categorical", "choices": [1e-30]}},
}


@pytest.fixture(scope="session")
def tied_experiment(ray_runtime, sample_shards, tmp_path_factory):
    """A finished search (one trial, three epochs with tied val scores) and its refit, run
    through the CLI. Returns (experiment directory, CLI output); shared read-only."""
    import torch

    from hpa_tune.train.build import build_model
    from hpa_tune.train.config import TrialConfig

    root = tmp_path_factory.mktemp("tied")
    weights = root / "weights.pth"
    torch.manual_seed(0)
    torch.save(build_model(TrialConfig(image_size=32, channels="rgb")).state_dict(), weights)
    space = root / "space.yaml"
    fixed = {**TIED_SPACE["fixed"], "pretrained": str(weights)}
    space.write_text(yaml.safe_dump({**TIED_SPACE, "fixed": fixed}))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(root / "runs")]
    result = CliRunner().invoke(main, [*args, "--name", "tied", "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "runs" / "tied", result.output
