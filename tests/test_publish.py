"""``prepare --out s3://…|gs://…`` (``data/publish.py``) on real servers on loopback (moto's S3,
a GCS emulator): the new set replaces the set the previous manifest lists, and nothing else at
the prefix is ever deleted or overwritten; a prefix holding objects no manifest lists where
prepare is about to write is refused in one line."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.data.output_swap import files_listed
from hpa_tune.storage import filesystems as storage
from tests.conftest import write_kaggle_dir


@pytest.fixture(params=["s3", "gs"])
def bucket(request) -> str:
    """A fresh bucket on the S3 or the GCS test server; returns ``s3://NAME`` or ``gs://NAME``."""
    name = f"hpa-{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        import boto3

        request.getfixturevalue("s3_endpoint")
        boto3.client("s3").create_bucket(Bucket=name)
    else:
        import pyarrow.fs as pafs

        endpoint = request.getfixturevalue("gcs_endpoint")
        pafs.GcsFileSystem(
            anonymous=True,
            scheme="http",
            endpoint_override=urlsplit(endpoint).netloc,
            project_id="hpa-tune-test",
        ).create_dir(name)
    return f"{request.param}://{name}"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish") / "raw"
    write_kaggle_dir(root, 20, size=64)
    return root


def _prepare(raw: Path, out: str, sizes: str = "32"):
    return CliRunner().invoke(
        main, ["prepare", str(raw), "--out", out, "--sizes", sizes, "--workers", "1"]
    )


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_prepare_at_a_bucket_root_deletes_only_what_the_previous_manifest_lists(
    bucket, raw, foreign
):
    foreign.plant(bucket)
    first = _prepare(raw, bucket, "32")
    assert first.exit_code == 0, first.output
    foreign.assert_intact()
    second = _prepare(raw, bucket, "48")  # the size_32 shards of the first set are ours to drop
    assert second.exit_code == 0, second.output
    foreign.assert_intact()
    listed = files_listed(storage.read_bytes(f"{bucket}/manifest.json"))
    assert set(storage.list_files(bucket)) == listed | {
        where.removeprefix(f"{bucket}/") for where in foreign.planted
    }
    assert all(f.startswith("size_48/") for f in listed - {"manifest.json", "rejected.csv"})


def test_prepare_into_a_prefix_keeps_its_neighbours_and_what_else_it_holds(bucket, raw, foreign):
    foreign.plant(f"{bucket}/shards")
    foreign.plant(bucket, ("shards-v1/manifest.json", "shards.txt", "runs/t/run.json"))
    for sizes in ("32", "32,48", "32"):
        result = _prepare(raw, f"{bucket}/shards", sizes)
        assert result.exit_code == 0, result.output
        foreign.assert_intact()


@pytest.mark.parametrize(
    "name, why",
    [
        ("size_32/theirs.parquet", "not written by prepare"),
        ("rejected.csv", "not written by prepare"),
        ("manifest.json", "not a manifest that prepare wrote"),
    ],
)
def test_an_object_no_manifest_lists_where_prepare_writes_is_refused_and_kept(
    bucket, raw, foreign, name, why
):
    foreign.plant(bucket, (name,))
    line = _one_line_error(_prepare(raw, f"{bucket}", "32"))
    assert f"{bucket}/{name}: {why}" in line and "choose another --out" in line
    assert storage.list_files(bucket) == [name]  # nothing was written either


def test_a_file_beside_the_previous_shards_is_refused_and_the_previous_set_kept(
    bucket, raw, foreign
):
    out = f"{bucket}/shards"
    assert _prepare(raw, out, "32").exit_code == 0
    before = {f: storage.read_bytes(f"{out}/{f}") for f in storage.list_files(out)}
    foreign.plant(out, ("size_32/theirs.parquet",))
    line = _one_line_error(_prepare(raw, out, "32,48"))
    assert f"{out}/size_32/theirs.parquet: not written by prepare (not in {out}/manifest.json)" in (
        line
    )
    assert {f: storage.read_bytes(f"{out}/{f}") for f in before} == before


def test_a_manifest_claims_only_shard_paths():
    text = '{"shards": [{"path": "size_32/train-00000.parquet"}, {"path": "NOTES.md"}, '
    text += '{"path": "size_32/../../x"}, {"path": "size_32/.."}, {"path": "../size_32/a"}]}'
    assert files_listed(text) == {"size_32/train-00000.parquet", "manifest.json", "rejected.csv"}
    assert files_listed("{}") is None and files_listed("not json") is None
