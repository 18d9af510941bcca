"""``prepare``: Kaggle layout -> shards + manifest + splits; a bad sample never costs the others."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hpa_tune.cli import main
from hpa_tune.data.loader import load_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import ShardManifest, sha256_of
from hpa_tune.errors import HpaTuneError
from tests.conftest import SMALL_SOURCE, write_kaggle_dir

OPTS = PrepareOptions(sizes=(32, 64), workers=2, expected_size=SMALL_SOURCE)


def _rejected(out: Path) -> dict[str, str]:
    with (out / "rejected.csv").open() as f:
        return {row["Id"]: row["reason"] for row in csv.DictReader(f)}


def test_prepare_writes_shards_manifest_and_disjoint_splits(kaggle_dir, tmp_path):
    raw, _images = kaggle_dir
    result = prepare(raw, tmp_path / "out", OPTS)
    m = ShardManifest.load(tmp_path / "out")
    assert m.channel_order == ["red", "green", "blue", "yellow"]
    assert m.sizes == [32, 64] and len(m.class_names) == 28
    assert set(m.splits) == {"train", "val", "holdout", "test"}
    assert sum(m.splits[s] for s in ("train", "val", "holdout")) == 56 and m.splits["test"] == 5
    assert result.rejected == [] and m.rejected == 0
    for shard in m.shards:
        assert sha256_of(tmp_path / "out" / shard.path) == shard.sha256
    ids = [set(load_split(tmp_path / "out", s, 32).ids) for s in ("train", "val", "holdout")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(m.class_counts["train"]) == int(
        load_split(tmp_path / "out", "train", 32).labels.sum()
    )


def test_stored_images_are_the_resized_channels_in_documented_order(kaggle_dir, tmp_path):
    raw, _images = kaggle_dir
    prepare(raw, tmp_path / "out", OPTS)
    train = load_split(tmp_path / "out", "train", 64)
    sample_id = train.ids[0]
    for c, color in enumerate(["red", "green", "blue", "yellow"]):
        expected = np.asarray(
            Image.open(raw / "train" / f"{sample_id}_{color}.png").resize((64, 64), Image.BILINEAR)
        )
        np.testing.assert_array_equal(train.images[0, c], expected)


def test_same_seed_gives_the_same_splits(kaggle_dir, tmp_path):
    raw, _ = kaggle_dir
    a = prepare(raw, tmp_path / "a", OPTS).manifest
    b = prepare(raw, tmp_path / "b", OPTS).manifest
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


def _truncate(raw, sid):
    path = raw / "train" / f"{sid}_green.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(raw, sid):
    (raw / "train" / f"{sid}_red.png").write_bytes(b"not a png at all")


def _missing(raw, sid):
    (raw / "train" / f"{sid}_yellow.png").unlink()


def _edit_csv(raw, sid, target):
    text = (raw / "train.csv").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(sid))
    (raw / "train.csv").write_text(text.replace(line, f"{sid},{target}"))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 8-bit gray pixels (no real image data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _bomb(raw, sid):
    (raw / "train" / f"{sid}_green.png").write_bytes(png_claiming(30000, 30000))


def _not_utf8(raw, sid):
    data = (raw / "train.csv").read_bytes()
    (raw / "train.csv").write_bytes(
        data.replace(f"{sid},".encode(), f"{sid},\xff".encode("latin-1"), 1)
    )


BAD_INPUTS = {
    "decompression bomb": (_bomb, "too large"),
    "non-UTF-8 byte in train.csv": (_not_utf8, "not UTF-8"),
    "truncated image": (_truncate, "truncated"),
    "unreadable image": (_garbage, "unreadable"),
    "missing channel file": (_missing, "_yellow.png"),
    "label outside 0..27": (lambda raw, sid: _edit_csv(raw, sid, "3 28"), "outside 0..27"),
    "empty Target": (lambda raw, sid: _edit_csv(raw, sid, ""), "empty Target"),
    "non-numeric label": (lambda raw, sid: _edit_csv(raw, sid, "x"), "outside 0..27"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_one_bad_sample_is_rejected_and_every_other_kept(kaggle_dir, tmp_path, case):
    raw, images = kaggle_dir
    bad_id = sorted(images)[10]
    damage, reason = BAD_INPUTS[case]
    damage(raw, bad_id)
    result = prepare(raw, tmp_path / "out", OPTS)
    rejected = _rejected(tmp_path / "out")
    assert list(rejected) == [bad_id]
    assert reason in rejected[bad_id]
    m = result.manifest
    assert m.rejected == 1 and sum(m.splits[s] for s in ("train", "val", "holdout")) == 55


def test_duplicate_id_keeps_the_first_row_and_rejects_the_repeat(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    dup = sorted(images)[3]
    with (raw / "train.csv").open("a") as f:
        f.write(f"{dup},5\n")
    result = prepare(raw, tmp_path / "out", OPTS)
    assert "duplicate Id" in _rejected(tmp_path / "out")[dup]
    assert sum(result.manifest.splits[s] for s in ("train", "val", "holdout")) == 56


@pytest.mark.parametrize(
    "bad_id, reason",
    [
        ("", "empty Id"),
        ("../../etc/passwd", "Id '../../etc/passwd' is a path"),
        ("/etc/hostname", "Id '/etc/hostname' is a path"),
        ("a/b", "Id 'a/b' is a path"),
        ("..", "Id '..' is a path"),
    ],
)
def test_an_empty_id_or_an_id_that_is_a_path_is_rejected_saying_so(
    kaggle_dir, tmp_path, bad_id, reason
):
    raw, _ = kaggle_dir
    with (raw / "train.csv").open("a") as f:
        f.write(f"{bad_id},5\n")
    result = prepare(raw, tmp_path / "out", OPTS)
    line = f"train.csv line {2 + 56}"
    assert _rejected(tmp_path / "out") == {
        bad_id or f"<{line}>": f"{line}: "
        + (
            reason
            if not bad_id
            else f"{reason}, not a file-name stem (an Id names the files "
            "{Id}_{color}.png inside train/ or test/)"
        )
    }
    assert sum(result.manifest.splits[s] for s in ("train", "val", "holdout")) == 56
    kind = "empty Id" if not bad_id else "Id is a path"
    assert result.manifest.extra["rejected_by_reason"] == {kind: 1}


def test_a_test_id_that_is_a_path_is_rejected_saying_so(kaggle_dir, tmp_path):
    raw, _ = kaggle_dir
    with (raw / "sample_submission.csv").open("a") as f:
        f.write("../train/x,0\n")
    prepare(raw, tmp_path / "out", OPTS)
    assert "is a path" in _rejected(tmp_path / "out")["../train/x"]


def test_wrong_image_size_is_resized_and_counted(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    sid = sorted(images)[0]
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(raw / "train" / f"{sid}_blue.png")
    m = prepare(raw, tmp_path / "out", OPTS).manifest
    assert m.resized == 1 and m.rejected == 0


def test_strict_fails_listing_the_rejected_samples(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    bad = sorted(images)[7]
    _garbage(raw, bad)
    with pytest.raises(HpaTuneError, match=f"1 sample\\(s\\) rejected.*{bad}"):
        prepare(
            raw,
            tmp_path / "out",
            PrepareOptions(sizes=(32,), workers=1, strict=True, expected_size=SMALL_SOURCE),
        )
    assert not list((tmp_path / "out").glob("size_*/*.parquet"))


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_tif_and_jpg_channel_files_are_accepted(tmp_path, suffix):
    raw = tmp_path / "raw"
    write_kaggle_dir(raw, 30, size=64, suffix=suffix)
    m = prepare(
        raw, tmp_path / "out", PrepareOptions(sizes=(32,), workers=1, expected_size=64)
    ).manifest
    assert m.rejected == 0 and m.resized == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda raw: raw.mkdir(), "directory is empty"),
        (lambda raw: (raw.mkdir(), (raw / "train").mkdir()), "train.csv: file not found"),
        (
            lambda raw: (raw.mkdir(), (raw / "train.csv").write_text("Image,Labels\na,1\n")),
            "malformed header",
        ),
        (lambda raw: None, "no such directory"),
    ],
)
def test_unusable_directory_stops_with_one_line_and_no_traceback(tmp_path, setup, message):
    raw = tmp_path / "raw"
    setup(raw)
    result = CliRunner().invoke(main, ["prepare", str(raw), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_prepare_prints_a_summary(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    _garbage(raw, sorted(images)[1])
    result = CliRunner().invoke(
        main, ["prepare", str(raw), "--out", str(tmp_path / "o"), "--sizes", "32", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "rejected: 1" in result.output and "unreadable or truncated" in result.output
    assert "resized (not 512x512): 60" in result.output  # the CLI expects Kaggle's 512 px sources
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["splits"]["test"] == 5


def test_non_utf8_row_names_file_and_line_and_costs_only_that_row(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    bad = sorted(images)[4]
    line_no = 2 + list(images).index(bad)
    _not_utf8(raw, bad)
    result = prepare(raw, tmp_path / "out", OPTS)
    assert _rejected(tmp_path / "out") == {
        bad: f"train.csv line {line_no}: not UTF-8 text (byte 0xff)"
    }
    assert sum(result.manifest.splits[s] for s in ("train", "val", "holdout")) == 55


def test_a_decompression_bomb_is_rejected_not_a_traceback(kaggle_dir, tmp_path):
    raw, images = kaggle_dir
    bad = sorted(images)[2]
    _bomb(raw, bad)
    result = CliRunner().invoke(
        main, ["prepare", str(raw), "--out", str(tmp_path / "o"), "--sizes", "32", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "too large" in _rejected(tmp_path / "o")[bad]
    assert "rejected: 1" in result.output


def test_tiny_data_with_an_empty_val_split_is_a_clear_error(tmp_path):
    write_kaggle_dir(tmp_path / "raw", 4, size=64)
    result = CliRunner().invoke(
        main, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--sizes", "32"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "train.csv: too few usable samples" in result.output
    assert "the val split(s) would be empty" in result.output
    assert not (tmp_path / "out").exists()


def test_val_emptied_by_a_rejected_image_is_a_clear_error_and_keeps_the_old_output(tmp_path):
    raw = tmp_path / "raw"
    images = write_kaggle_dir(raw, 16, size=64)
    opts = PrepareOptions(sizes=(32,), workers=1, expected_size=64, val_fraction=0.1)
    assert prepare(raw, tmp_path / "out", opts).manifest.splits["val"] == 1
    val_id = load_split(tmp_path / "out", "val", 32).ids[0]
    _garbage(raw, val_id)
    with pytest.raises(HpaTuneError, match=r"after decoding: the val split.*left unchanged"):
        prepare(raw, tmp_path / "out", opts)
    assert val_id in images and load_split(tmp_path / "out", "val", 32).ids[0] == val_id


def test_manifest_keeps_every_test_id_including_rejected_ones(kaggle_dir, tmp_path):
    raw, _ = kaggle_dir
    test_ids = [ln.split(",")[0] for ln in (raw / "sample_submission.csv").read_text().split()[1:]]
    (raw / "test" / f"{test_ids[1]}_red.png").write_bytes(b"garbage")
    m = prepare(raw, tmp_path / "out", OPTS).manifest
    assert m.splits["test"] == len(test_ids) - 1
    assert ShardManifest.load(tmp_path / "out").test_ids == test_ids
