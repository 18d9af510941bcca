"""Property: whatever mixture of good and broken samples ``prepare`` is given, it exits 0, keeps
every good sample in exactly one split, and lists every broken one in rejected.csv with a reason."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpa_tune.cli import main
from hpa_tune.data.loader import load_split
from hpa_tune.data.shards import ShardManifest
from tests.conftest import write_kaggle_dir
from tests.test_prepare import png_claiming

N_GOOD = 20  # with val 30%: more val samples than broken ones, so val is never emptied


def _image(raw: Path, sid: str, color: str) -> Path:
    return raw / "train" / f"{sid}_{color}.png"


def _set_target(raw: Path, sid: str, target: bytes) -> None:
    data = (raw / "train.csv").read_bytes()
    start = data.index(sid.encode())
    end = data.index(b"\n", start)
    (raw / "train.csv").write_bytes(data[:start] + sid.encode() + b"," + target + data[end:])


CORRUPTIONS = {
    "truncated": lambda raw, sid: _image(raw, sid, "green").write_bytes(
        _image(raw, sid, "green").read_bytes()[:60]
    ),
    "zero bytes": lambda raw, sid: _image(raw, sid, "blue").write_bytes(b""),
    "garbage": lambda raw, sid: _image(raw, sid, "red").write_bytes(b"not a png"),
    "missing channel": lambda raw, sid: _image(raw, sid, "yellow").unlink(),
    "decompression bomb": lambda raw, sid: _image(raw, sid, "red").write_bytes(
        png_claiming(30000, 30000)
    ),
    "label 28": lambda raw, sid: _set_target(raw, sid, b"3 28"),
    "label -1": lambda raw, sid: _set_target(raw, sid, b"-1"),
    "label abc": lambda raw, sid: _set_target(raw, sid, b"abc"),
    "empty Target": lambda raw, sid: _set_target(raw, sid, b""),
    "non-UTF-8 byte": lambda raw, sid: _set_target(raw, sid, b"4 \xfe"),
    "three fields": lambda raw, sid: _set_target(raw, sid, b"1,2"),
}


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    broken=st.lists(st.sampled_from(sorted(CORRUPTIONS)), min_size=0, max_size=5),
    duplicates=st.integers(min_value=0, max_value=2),
    seed=st.integers(min_value=0, max_value=3),
)
def test_prepare_keeps_every_good_sample_once_and_rejects_every_broken_one(
    broken: list[str], duplicates: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        images = write_kaggle_dir(raw, N_GOOD + len(broken), size=32, seed=seed)
        ids = list(images)
        bad = dict(zip(ids[N_GOOD:], broken, strict=True))
        for sid, kind in bad.items():
            CORRUPTIONS[kind](raw, sid)
        with (raw / "train.csv").open("a") as f:  # repeats of good Ids: the first row wins
            f.writelines(f"{ids[i]},5\n" for i in range(duplicates))

        result = CliRunner().invoke(
            main,
            [
                *("prepare", str(raw), "--out", str(out), "--sizes", "32", "--workers", "1"),
                *("--val-fraction", "0.3", "--holdout-fraction", "0.2", "--seed", str(seed)),
            ],
        )

        assert result.exit_code == 0, (broken, result.output)
        manifest = ShardManifest.load(out)
        kept = [sid for split in manifest.splits for sid in load_split(out, split, 32).ids]
        assert sorted(kept) == sorted(ids[:N_GOOD])  # each good one exactly once
        with (out / "rejected.csv").open(newline="") as f:
            reasons = [(row["Id"], row["reason"]) for row in csv.DictReader(f)]
        assert all(reason.strip() for _, reason in reasons)
        assert {sid for sid, _ in reasons} == set(bad) | set(ids[:duplicates])
        assert len(reasons) == len(bad) + duplicates
