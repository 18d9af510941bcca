"""Object storage through pyarrow against moto's real S3 server on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hpa_tune.errors import HpaTuneError
from hpa_tune.storage import filesystems as storage


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh bucket on the test S3 server; returns ``s3://NAME``."""
    import boto3

    name = f"hpa-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def test_local_paths_and_uris_are_told_apart():
    assert storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k")
    assert not storage.is_remote("/data/shards") and not storage.is_remote("results")
    assert storage.join("s3://b/k/", "size_32", "a.parquet") == "s3://b/k/size_32/a.parquet"
    assert storage.location_arg("s3://b/k/") == "s3://b/k"


@pytest.mark.parametrize(
    "uri", ["s3://AKIAXX:secret@bucket/shards", "s3://bucket/shards?secret_key=abc"]
)
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(HpaTuneError, match="no credentials") as err:
        storage.location_arg(uri)
    assert "secret" not in str(err.value).split(":", 2)[-1].split(";")[0]
    assert "AKIAXX" not in str(err.value)


def test_files_round_trip_through_the_endpoint_from_the_environment(bucket):
    storage.write_bytes(f"{bucket}/a/b.txt", b"hello")
    assert storage.read_bytes(f"{bucket}/a/b.txt") == b"hello"
    assert storage.is_file(f"{bucket}/a/b.txt")
    assert not storage.is_file(f"{bucket}/a/missing.txt")
    assert storage.list_files(bucket) == ["a/b.txt"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{bucket}/a/missing.txt")


def test_trees_upload_and_download_with_the_commit_file_last(bucket, tmp_path: Path):
    src = tmp_path / "src"
    (src / "size_32").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "size_32" / "train-00000.parquet").write_bytes(b"shard")
    order = storage.upload_tree(src, f"{bucket}/set", last=("manifest.json",))
    assert order == ["size_32/train-00000.parquet", "manifest.json"]
    (src / "size_32.txt").write_text("a file, not a directory")
    storage.upload_tree(src, f"{bucket}/set")
    copied = storage.download_tree(f"{bucket}/set", tmp_path / "dst", skip_dirs=("size_",))
    assert copied == ["manifest.json", "size_32.txt"]
    assert (tmp_path / "dst" / "manifest.json").read_text() == "{}"


def test_replacing_a_set_removes_only_what_the_previous_set_lists_and_the_new_one_lacks(
    bucket, tmp_path: Path
):
    old, new = tmp_path / "old", tmp_path / "new"
    for root, names in (
        (old, ["manifest.json", "a.parquet", "b.parquet"]),
        (new, ["manifest.json", "a.parquet"]),
    ):
        root.mkdir()
        for name in names:
            (root / name).write_text(f"{root.name}:{name}")
    storage.write_bytes(f"{bucket}/set/notes.txt", b"not part of any set")
    storage.replace_tree(old, f"{bucket}/set", commit_file="manifest.json", previous=set())
    previous = {"manifest.json", "a.parquet", "b.parquet"}
    storage.replace_tree(new, f"{bucket}/set", commit_file="manifest.json", previous=previous)
    assert storage.list_files(f"{bucket}/set") == ["a.parquet", "manifest.json", "notes.txt"]
    assert storage.read_bytes(f"{bucket}/set/manifest.json") == b"new:manifest.json"
    assert storage.read_bytes(f"{bucket}/set/notes.txt") == b"not part of any set"


def test_replace_bytes_replaces_a_local_file_whole_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "d" / "claim.json"
    storage.replace_bytes(str(target), b"old")
    storage.replace_bytes(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["claim.json"]
