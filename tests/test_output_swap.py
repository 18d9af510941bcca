"""``prepare`` replaces its output all at once: nothing of a previous output is lost on failure,
and nothing it did not write is ever deleted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.data.loader import load_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import ShardManifest
from hpa_tune.errors import HpaTuneError
from tests.conftest import ForeignFiles, write_kaggle_dir

OPTS = PrepareOptions(sizes=(32,), workers=1, expected_size=64)


@pytest.fixture
def prepared(tmp_path: Path, foreign: ForeignFiles) -> tuple[Path, Path]:
    """A raw directory (20 samples at 64 px, 4 test) and a first, complete output of it, in an
    ``out`` that held files of someone else's before (and beside it): they must outlive every
    command of the test."""
    raw = tmp_path / "raw"
    write_kaggle_dir(raw, 20, size=64, n_test=4)
    foreign.plant(tmp_path / "out")
    foreign.plant(tmp_path)
    prepare(raw, tmp_path / "out", OPTS)
    foreign.assert_intact()
    return raw, tmp_path / "out"


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_failed_prepare_leaves_the_previous_output_intact_and_loadable(prepared):
    raw, out = prepared
    before = _snapshot(out)
    bad = sorted(p for p in (raw / "train").iterdir())[0]
    bad.write_bytes(b"garbage")
    strict = PrepareOptions(sizes=(32, 48), workers=1, expected_size=64, strict=True)
    with pytest.raises(HpaTuneError, match="left unchanged"):
        prepare(raw, out, strict)
    assert _snapshot(out) == before
    assert len(load_split(out, "train", 32)) == ShardManifest.load(out).splits["train"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out")] == []


def test_a_new_output_replaces_the_old_one_and_keeps_what_prepare_did_not_write(prepared):
    raw, out = prepared
    (out / "notes.txt").write_text("mine")
    (out / "size_512").mkdir()
    (out / "size_512" / "hand-made.bin").write_bytes(b"keep me")
    (out / "extra" / "deep").mkdir(parents=True)
    prepare(raw, out, PrepareOptions(sizes=(48,), workers=1, expected_size=64))
    assert ShardManifest.load(out).sizes == [48]
    assert not (out / "size_32").exists()  # the previous output's own shards are replaced
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "size_512" / "hand-made.bin").read_bytes() == b"keep me"
    assert (out / "extra" / "deep").is_dir()
    assert len(load_split(out, "train", 48)) > 0
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out")] == []


def test_a_file_prepare_did_not_write_inside_a_size_dir_is_refused_and_kept(prepared):
    raw, out = prepared
    (out / "size_32" / "theirs.parquet").write_bytes(b"not ours")
    line = _one_line_error(_cli("prepare", raw, "--out", out, "--sizes", "32"))
    assert "theirs.parquet: not written by prepare" in line
    assert (out / "size_32" / "theirs.parquet").read_bytes() == b"not ours"


def test_a_symlinked_out_is_replaced_where_it_points_and_stays_a_link(prepared, tmp_path):
    raw, out = prepared
    link = tmp_path / "link"
    link.symlink_to(out)
    prepare(raw, link, PrepareOptions(sizes=(48,), workers=1, expected_size=64))
    assert link.is_symlink() and ShardManifest.load(out).sizes == [48]


def test_out_that_is_a_file_is_a_one_line_error(prepared, tmp_path):
    raw, _ = prepared
    (tmp_path / "afile").write_text("x")
    line = _one_line_error(_cli("prepare", raw, "--out", tmp_path / "afile"))
    assert "is a file" in line and (tmp_path / "afile").read_text() == "x"


def test_out_holding_a_file_named_size_star_is_a_one_line_error(prepared):
    raw, out = prepared
    (out / "size_64").write_text("a file")
    line = _one_line_error(_cli("prepare", raw, "--out", out, "--sizes", "32"))
    assert "size_64: a file where prepare writes" in line
    assert (out / "size_64").read_text() == "a file"


@pytest.mark.parametrize("where", ["inside", "same", "parent"])
def test_out_inside_the_raw_directory_is_refused(prepared, where):
    raw, _ = prepared
    out = {"inside": raw / "shards", "same": raw, "parent": raw.parent}[where]
    line = _one_line_error(_cli("prepare", raw, "--out", out, "--sizes", "32"))
    assert "raw directory" in line
    assert (raw / "train.csv").is_file() and not (raw / "shards").exists()


def test_out_under_a_file_is_a_one_line_error(prepared, tmp_path):
    raw, _ = prepared
    (tmp_path / "afile").write_text("x")
    line = _one_line_error(_cli("prepare", raw, "--out", tmp_path / "afile" / "out"))
    assert "--out" in line


_KILLABLE = """
import sys, time
from pathlib import Path
from hpa_tune.data.prepare import PrepareOptions, prepare

raw, out, marker = map(Path, sys.argv[1:4])
def progress(done, total):
    if done == 12:  # several shards are written by now; stay here until killed
        marker.write_text("midway")
        time.sleep(600)
prepare(raw, out, PrepareOptions(sizes=(32,), workers=1, expected_size=64, shard_bytes=4200),
        progress=progress)
"""


def test_sigkilled_prepare_leaves_the_previous_output_loadable(prepared, tmp_path):
    raw, out = prepared
    before = _snapshot(out)
    train_before = load_split(out, "train", 32)
    marker = tmp_path / "midway"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(raw), str(out), str(marker)])
    try:
        while not marker.exists():
            assert proc.poll() is None, "prepare ended before reaching the middle"
            time.sleep(0.1)
        staging = out.parent / f".out.prepare-{proc.pid}"
        assert len(list(staging.glob("size_32/*.parquet"))) >= 2  # truly midway
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert _snapshot(out) == before
    train_after = load_split(out, "train", 32)
    np.testing.assert_array_equal(train_after.images, train_before.images)
    # The next prepare clears what the killed one left behind, and succeeds.
    prepare(raw, out, OPTS)
    assert not staging.exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem (tmpfs), mounted for this test and unmounted after it; skipped
    only where mounting is impossible (not root, no CAP_SYS_ADMIN, no ``mount``)."""
    where = tmp_path / "tiny-disk"
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    cmd = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)]
    mounted = subprocess.run(cmd, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:  # lazily: a file a failed test left open must not keep the mount
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def test_a_full_disk_is_one_line_saying_where_and_how_much_and_keeps_the_old_output(
    tiny_disk, foreign, prepared
):  # tiny_disk first: it is unmounted after foreign's last check
    raw, _ = prepared
    out = tiny_disk / "out"
    foreign.plant(out, ("NOTES.md",))
    assert _cli("prepare", raw, "--out", out, "--sizes", "32", "--workers", "1").exit_code == 0
    before = _snapshot(out)
    # 24 samples at 32+64+128 px: about 2 MiB, 4x what the disk holds.
    line = _one_line_error(_cli("prepare", raw, "--out", out, "--sizes", "32,64,128"))
    assert line.startswith(f"error: {tiny_disk}: no space left on device")
    assert "the output needs up to 2.0 MiB" in line and "previous output is unchanged" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["out"]  # no staging left behind
    foreign.assert_intact()
