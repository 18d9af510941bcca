"""Replacing a prepared directory all at once: build beside it, then swap.

``prepare`` writes its whole output into a staging directory next to ``--out`` and only swaps
it in when it is complete, so the previous output stays intact and loadable until then and after
any failure (an exception, Ctrl-C, SIGKILL). The swap is one ``renameat2(RENAME_EXCHANGE)`` on
Linux (two renames elsewhere). Entries of ``--out`` that prepare did not write (anything but
``manifest.json``, ``rejected.csv`` and the shard files the old manifest lists) are hard-linked
into the new output before the swap, so they are never absent and never deleted.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
from pathlib import Path

from hpa_tune.errors import HpaTuneError

MANIFEST_NAME = "manifest.json"
REJECTED_NAME = "rejected.csv"
_STAGING_TAG = ".prepare-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SHARD_PATH = re.compile(r"size_[0-9]+/[^/.][^/]*")


def files_listed(manifest_text: bytes | str) -> set[str] | None:
    """Relative paths a prepare wrote, by its ``manifest.json`` text: the shards it lists (only
    ``size_<S>/<name>`` paths count, so a hand-edited manifest cannot claim other files),
    ``manifest.json`` and ``rejected.csv``. None: not a manifest prepare wrote."""
    try:
        listed = {str(s["path"]) for s in json.loads(manifest_text)["shards"]}
    except (ValueError, KeyError, TypeError):
        return None
    shards = {p for p in listed if _SHARD_PATH.fullmatch(p)}
    return shards | {MANIFEST_NAME, REJECTED_NAME}


def _owned_files(out_dir: Path) -> set[str] | None:
    """Relative paths the previous prepare wrote into ``out_dir`` (None: no readable manifest)."""
    try:
        return files_listed((out_dir / MANIFEST_NAME).read_bytes())
    except OSError:
        return None


def check_output_dir(raw_dir: Path, out_dir: Path, sizes: tuple[int, ...]) -> None:
    """Refuse, in one line, an ``--out`` that prepare cannot safely replace.

    Raises:
        HpaTuneError: ``out_dir`` is a file, lies inside ``raw_dir`` (or holds it), holds a file
            named ``size_*``, or holds shard-like files that no manifest of it lists.
    """
    raw, out = raw_dir.resolve(), out_dir.resolve()
    if out == raw or raw in out.parents:
        raise HpaTuneError(f"--out {out_dir}: inside the raw directory {raw_dir}; choose another")
    if out in raw.parents:
        raise HpaTuneError(f"--out {out_dir}: holds the raw directory {raw_dir}; choose another")
    if out_dir.exists() and not out_dir.is_dir():
        raise HpaTuneError(f"--out {out_dir}: is a file, expected a directory (or a new path)")
    if not out_dir.is_dir():
        return
    owned = _owned_files(out_dir)
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith("size_") and not entry.is_dir():
            raise HpaTuneError(
                f"{entry}: a file where prepare writes a size_<S>/ shard directory; "
                "move it or choose another --out"
            )
    for size in sizes:
        shard_dir = out_dir / f"size_{size}"
        if not shard_dir.is_dir():
            continue
        for path in sorted(shard_dir.rglob("*")):
            rel = path.relative_to(out_dir).as_posix()
            if path.is_file() and (owned is None or rel not in owned):
                raise HpaTuneError(
                    f"{path}: not written by prepare (not in {out_dir / MANIFEST_NAME}); "
                    "move it or choose another --out"
                )
    if owned is None and (out_dir / REJECTED_NAME).exists():
        raise HpaTuneError(
            f"{out_dir / REJECTED_NAME}: exists but {out_dir} has no manifest.json; "
            "move it or choose another --out"
        )


def output_bytes_bound(n_samples: int, sizes: tuple[int, ...]) -> int:
    """At most how many bytes prepare writes for ``n_samples`` at ``sizes``: every image stored
    raw (4 uint8 channels), as LZ4 stores pixels it cannot compress, plus 1 KiB per sample and
    size for ids, labels and Parquet's own bookkeeping."""
    return n_samples * sum(4 * s * s + 1024 for s in sizes)


def no_space_error(where: Path, needed: int, free_at_start: int) -> HpaTuneError:
    """The one-line error for a disk that filled up while prepare wrote into ``where``."""
    return HpaTuneError(
        f"{where}: no space left on device while prepare wrote its output there; the output "
        f"needs up to {_mib(needed)} (images stored uncompressed; less where they compress) and "
        f"{_mib(free_at_start)} were free when it started; free some space or choose another "
        "--out (for a bucket --out: another $HPA_TUNE_CACHE); the previous output is unchanged"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def staging_dir(out_dir: Path) -> Path:
    """A fresh, empty staging directory beside ``out_dir`` (stale ones of dead runs removed).

    Raises:
        HpaTuneError: the directory cannot be created (read-only, not a directory, ...).
    """
    path = out_dir.parent / f".{out_dir.name}{_STAGING_TAG}{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out_dir)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
    except OSError as err:
        raise HpaTuneError(f"--out {out_dir}: cannot write beside it ({err})") from None
    return path


def remove_stale_staging(out_dir: Path) -> None:
    """Remove staging directories of ``out_dir`` left by prepare runs whose process is gone."""
    prefix = f".{out_dir.name}{_STAGING_TAG}"
    if not out_dir.parent.is_dir():
        return
    for entry in out_dir.parent.iterdir():
        pid = entry.name.removeprefix(prefix)
        if entry.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_foreign(out_dir: Path, staged: Path) -> None:
    """Hard-link into ``staged`` every entry of ``out_dir`` that prepare did not write."""
    owned = _owned_files(out_dir) or set()
    for dirpath, dirnames, filenames in os.walk(out_dir):
        here = Path(dirpath)
        rel_dir = here.relative_to(out_dir)
        if not dirnames and not filenames and rel_dir != Path("."):
            (staged / rel_dir).mkdir(parents=True, exist_ok=True)  # an empty foreign folder
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in filenames + links:
            rel = rel_dir / name
            target = staged / rel
            if rel.as_posix() in owned or target.exists() or target.is_symlink():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(str(here / name), str(target))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where it is not supported."""
    try:
        # The C library already loaded (find_library would spawn a process to look for it).
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(staged: Path, out_dir: Path) -> None:
    """Make the complete ``staged`` directory the new ``out_dir``; the old output is removed.

    Entries of the old ``out_dir`` that prepare did not write are kept (hard-linked across).
    """
    if not out_dir.exists():
        os.rename(staged, out_dir)
        return
    _carry_foreign(out_dir, staged)
    if not _exchange(staged, out_dir):
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
        os.rename(staged, out_dir)
        staged = old
    shutil.rmtree(staged, ignore_errors=True)
