"""Where data and results live: local paths, ``s3://`` and ``gs://``, through pyarrow filesystems.

S3 follows the AWS conventions: credentials come from the standard chain (``AWS_ACCESS_KEY_ID``
and friends, ``AWS_PROFILE``, instance roles), resolved by the AWS SDK inside pyarrow; an
S3-compatible endpoint is read from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` and passed to
pyarrow explicitly. GCS uses Google's Application Default Credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, the metadata
server), and ``STORAGE_EMULATOR_HOST`` (Google's convention for an emulator, e.g.
``http://127.0.0.1:9023``) makes it talk to that endpoint anonymously. Credentials are never
part of a URI we accept, so none can reach a file we write (``run.json`` keeps the URI as given).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Collection, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from hpa_tune.errors import HpaTuneError

REMOTE_SCHEMES = ("s3", "gs", "gcs")
_BLOCK = 8 << 20


def is_remote(location: str | Path) -> bool:
    """True for ``s3://``, ``gs://`` and ``gcs://`` URIs."""
    return urlsplit(str(location)).scheme in REMOTE_SCHEMES


def location_arg(value: str | Path) -> str:
    """A ``--data``/``--storage``/``--out`` value as stored: URIs without a trailing ``/``,
    local paths as given (``Path`` would turn ``s3://b/k`` into ``s3:/b/k``).

    Raises:
        HpaTuneError: the URI carries credentials (``s3://KEY:SECRET@bucket``).
    """
    text = str(value)
    if not is_remote(text):
        return text
    parts = urlsplit(text)
    if "@" in parts.netloc or parts.query:
        raise HpaTuneError(
            f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}: no credentials or "
            "options in the URI; use AWS_ACCESS_KEY_ID/AWS_PROFILE and AWS_ENDPOINT_URL "
            "(or the Google equivalents) instead"
        )
    return text.rstrip("/")


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    kwargs: dict[str, object] = {}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or endpoint
        if parts.scheme:
            kwargs["scheme"] = parts.scheme
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _gcs_filesystem() -> pafs.GcsFileSystem:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return pafs.GcsFileSystem()  # Application Default Credentials
    # Google's clients talk to an emulator anonymously; the variable may omit the scheme.
    parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    return pafs.GcsFileSystem(anonymous=True, scheme=parts.scheme, endpoint_override=parts.netloc)


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``location`` and the path within it.

    Raises:
        HpaTuneError: credentials in the URI, or a filesystem pyarrow cannot open.
    """
    text = location_arg(location)
    if not is_remote(text):
        return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())
    parts = urlsplit(text)
    path = f"{parts.netloc}{parts.path}".rstrip("/")
    builder = _s3_filesystem if parts.scheme == "s3" else _gcs_filesystem
    try:
        return builder(), path
    except Exception as err:  # pyarrow raises several types for a backend it cannot open
        raise HpaTuneError(f"{text}: cannot open ({_describe(err)})") from None


def join(location: str | Path, *parts: str) -> str:
    """``location/part/...`` for a URI or a local path."""
    base = str(location).rstrip("/") if is_remote(location) else str(location)
    if is_remote(base):
        return "/".join([base, *parts])
    return str(Path(base).joinpath(*parts))


def _describe(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_bytes(location: str | Path) -> bytes:
    """A whole file's bytes.

    Raises:
        FileNotFoundError: there is no such file.
        HpaTuneError: the store could not be read (permissions, endpoint down), naming the file.
    """
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        if "not exist" in str(err).lower() or "not found" in str(err).lower():
            raise FileNotFoundError(str(location)) from None
        raise HpaTuneError(f"{location}: cannot read ({_describe(err)})") from None


def is_file(location: str | Path) -> bool:
    """True when ``location`` is an existing file (False when it or the store is unreachable)."""
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path).type == pafs.FileType.File
    except OSError:
        return False


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write (replace) one file, creating parent directories where the store has them."""
    fs, path = filesystem(location)
    parent = path.rpartition("/")[0]
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def replace_bytes(location: str | Path, data: bytes) -> None:
    """Write (replace) one file so that a reader sees the old content or the new, never a part:
    a local file is written beside it (``.NAME.<random>.tmp``) and renamed over it; an object
    store's PUT already is all-or-nothing."""
    if is_remote(location):
        write_bytes(location, data)
        return
    _, path = filesystem(location)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def list_files(location: str | Path) -> list[str]:
    """Paths (``/``-separated, relative to ``location``) of every file below it; [] if none."""
    fs, root = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as err:
        raise HpaTuneError(f"{location}: cannot list ({_describe(err)})") from None
    return sorted(i.path[len(root) :].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def delete(location: str | Path, relative: Iterable[str]) -> None:
    """Delete the given files below ``location`` (missing ones are skipped)."""
    fs, root = filesystem(location)
    for rel in relative:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{root}/{rel}")


def remove_empty_dir(location: str | Path) -> None:
    """Remove a local directory if it is empty (object storage has no directories to remove)."""
    if not is_remote(location):
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(location)


def _copy(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str) -> None:
    with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
        while block := fin.read(_BLOCK):
            fout.write(block)


def upload_tree(local_dir: Path, location: str, *, last: tuple[str, ...] = ()) -> list[str]:
    """Copy every file below ``local_dir`` to ``location`` (overwriting), the ``last`` names
    (relative paths) after all others. Returns the relative paths copied."""
    dst_fs, dst_root = filesystem(location)
    local = pafs.LocalFileSystem()
    files = sorted(
        p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file()
    )
    ordered = [f for f in files if f not in last] + [f for f in last if f in files]
    for rel in ordered:
        target = f"{dst_root}/{rel}"
        dst_fs.create_dir(target.rpartition("/")[0], recursive=True)
        _copy(local, str(Path(local_dir) / rel), dst_fs, target)
    return ordered


def download_tree(
    location: str, local_dir: Path, *, skip_dirs: tuple[str, ...] = (), only: tuple[str, ...] = ()
) -> list[str]:
    """Copy every file below ``location`` into ``local_dir``; files in top-level directories whose
    names start with one of ``skip_dirs`` are left out, and with ``only`` given, just the files
    whose relative paths start with one of ``only`` are copied."""
    src_fs, src_root = filesystem(location)
    local = pafs.LocalFileSystem()
    copied = []
    for rel in list_files(location):
        if skip_dirs and "/" in rel and rel.startswith(skip_dirs):
            continue
        if only and not rel.startswith(only):
            continue
        target = Path(local_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(src_fs, f"{src_root}/{rel}", local, str(target))
        copied.append(rel)
    return copied


def replace_tree(
    local_dir: Path, location: str, *, commit_file: str, previous: Collection[str]
) -> None:
    """Publish ``local_dir`` at ``location`` so that a reader sees the old set, no set, or the new
    one, never a mix: ``commit_file`` (what makes the set loadable) is deleted first and written
    last, and the files of the old set (``previous``: what its commit file lists, relative paths)
    that the new one lacks are removed before it is written. Nothing else at ``location`` is
    listed, deleted or overwritten but the new set's own files."""
    if not is_remote(location):
        raise ValueError(
            "replace_tree publishes to object storage; local output is written in place"
        )
    new = {p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file()}
    # Once the commit file is gone the old set is no longer loadable, so its other files may go.
    delete(location, [commit_file] if commit_file in previous else [])
    delete(location, sorted(set(previous) - new - {commit_file}))
    upload_tree(local_dir, location, last=(commit_file,))


def remove_local(path: Path) -> None:
    """Delete a local staging directory (missing is fine)."""
    shutil.rmtree(path, ignore_errors=True)
