"""Reading the Kaggle HPA layout: ``train.csv`` (Id,Target) and ``{Id}_{color}.{png,tif,jpg}`` files.

Validation here is per row: a bad row is reported as a ``Rejection`` and the others are kept.
Problems with the directory itself (missing ``train.csv``, malformed header) raise ``HpaTuneError``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.errors import HpaTuneError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class LabelRow:
    """One sample named in a CSV: its Id and its label set (empty for unlabelled test rows)."""

    id: str
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Rejection:
    """A sample left out of the shards, with the reason in words."""

    id: str
    reason: str


def _read_csv_rows(path: Path, header: tuple[str, str]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every row after the header.

    Bytes that are not UTF-8 are kept as surrogates (see :func:`_not_utf8`), so one bad byte
    costs only its own row.
    """
    if not path.is_file():
        raise HpaTuneError(f"{path}: file not found (expected the Kaggle layout's {path.name})")
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f)
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as err:
            raise HpaTuneError(f"{path} line {reader.line_num}: not a CSV file ({err})") from None
    head = rows[0][1] if rows else []
    if not rows or tuple(c.strip() for c in head[:2]) != header or len(head) != 2:
        found = _printable(",".join(head)) if rows else "an empty file"
        raise HpaTuneError(
            f"{path}: malformed header: expected '{','.join(header)}', found '{found}'"
        )
    return rows[1:]


def _printable(text: str) -> str:
    """``text`` with undecodable bytes shown as U+FFFD (safe to print and to write to CSV)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _not_utf8(fields: list[str]) -> str | None:
    """A description of the first non-UTF-8 byte in a row's fields, or None."""
    for field in fields:
        for char in field:
            if "\udc80" <= char <= "\udcff":
                return f"not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x})"
    return None


def _parse_target(text: str) -> tuple[int, ...]:
    tokens = text.split()
    if not tokens:
        raise ValueError("empty Target")
    labels = set()
    for tok in tokens:
        if not tok.isdigit() or not 0 <= int(tok) < NUM_CLASSES:
            raise ValueError(f"label {tok!r} outside 0..{NUM_CLASSES - 1}")
        labels.add(int(tok))
    return tuple(sorted(labels))


def id_problem(sample_id: str) -> str | None:
    """What makes ``sample_id`` unusable as an Id, in words, or None.

    An Id names the files ``{Id}_{color}.png`` inside ``train/`` or ``test/``, so it must be a
    plain file-name stem: not empty, and no path (``/``, ``\\``, ``.`` or ``..``, a NUL byte).
    """
    if not sample_id:
        return "empty Id"
    if "/" in sample_id or "\\" in sample_id or "\0" in sample_id or sample_id in (".", ".."):
        return (
            f"Id {sample_id!r} is a path, not a file-name stem (an Id names the files "
            "{Id}_{color}.png inside train/ or test/)"
        )
    return None


def read_train_csv(path: Path) -> tuple[list[LabelRow], list[Rejection]]:
    """Parse ``train.csv``; rows with an empty/invalid Target, an empty Id or an Id that is a path,
    or repeating an earlier Id, are rejected.

    Raises:
        HpaTuneError: when the file is missing or its header is not ``Id,Target``.
    """
    rows: list[LabelRow] = []
    rejected: list[Rejection] = []
    first_line: dict[str, int] = {}
    for line_no, raw in _read_csv_rows(path, ("Id", "Target")):
        if not raw or not any(c.strip() for c in raw):
            continue
        sample_id = raw[0].strip()
        where = f"{path.name} line {line_no}"
        if problem := _not_utf8(raw):
            rejected.append(Rejection(_printable(sample_id) or f"<{where}>", f"{where}: {problem}"))
            continue
        if len(raw) != 2:
            rejected.append(
                Rejection(sample_id or f"<{where}>", f"{where}: expected 2 fields, got {len(raw)}")
            )
            continue
        if problem := id_problem(sample_id):
            rejected.append(Rejection(sample_id or f"<{where}>", f"{where}: {problem}"))
            continue
        if sample_id in first_line:
            # The first row wins: its images are the same files, only the labels would conflict.
            rejected.append(
                Rejection(
                    sample_id, f"{where}: duplicate Id (first on line {first_line[sample_id]})"
                )
            )
            continue
        first_line[sample_id] = line_no
        try:
            rows.append(LabelRow(sample_id, _parse_target(raw[1])))
        except ValueError as err:
            rejected.append(Rejection(sample_id, f"{where}: {err}"))
    return rows, rejected


def read_submission_ids(path: Path) -> tuple[list[LabelRow], list[Rejection]]:
    """Parse ``sample_submission.csv`` (Id,Predicted): test Ids in file order; duplicates and Ids
    that are paths rejected, rows without an Id skipped."""
    rows: list[LabelRow] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for line_no, raw in _read_csv_rows(path, ("Id", "Predicted")):
        sample_id = raw[0].strip() if raw else ""
        if not sample_id:
            continue
        if problem := _not_utf8([sample_id]):
            where = f"{path.name} line {line_no}"
            rejected.append(Rejection(_printable(sample_id), f"{where}: {problem}"))
            continue
        if problem := id_problem(sample_id):
            rejected.append(Rejection(sample_id, f"{path.name} line {line_no}: {problem}"))
            continue
        if sample_id in seen:
            rejected.append(Rejection(sample_id, f"{path.name} line {line_no}: duplicate Id"))
            continue
        seen.add(sample_id)
        rows.append(LabelRow(sample_id, ()))
    return rows, rejected


def index_channel_files(image_dir: Path) -> dict[str, dict[str, Path]]:
    """Map each Id to its channel files found in ``image_dir`` (one directory scan, not 4 stats per Id).

    Where a channel exists in several formats, PNG wins, then TIFF, then JPEG.
    """
    index: dict[str, dict[str, Path]] = {}
    if not image_dir.is_dir():
        return index
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            suffix = suffix.lower()
            sample_id, _, color = stem.rpartition("_")
            if suffix not in rank or color not in CHANNELS or not sample_id:
                continue
            channels = index.setdefault(sample_id, {})
            current = channels.get(color)
            if current is None or rank[suffix] < rank[current.suffix.lower()]:
                channels[color] = Path(entry.path)
    return index


def missing_channels(files: dict[str, Path] | None) -> list[str]:
    """Channels (in CHANNELS order) absent from one Id's file map."""
    return [c for c in CHANNELS if not files or c not in files]


def check_raw_dir(raw_dir: Path) -> None:
    """Fail early, in one line, on a directory that cannot be a Kaggle layout."""
    if not raw_dir.is_dir():
        raise HpaTuneError(
            f"{raw_dir}: no such directory (expected the Kaggle layout: train.csv, train/)"
        )
    if not any(raw_dir.iterdir()):
        raise HpaTuneError(
            f"{raw_dir}: directory is empty (expected train.csv and train/ with {{Id}}_{{color}}.png)"
        )
    if not (raw_dir / "train.csv").is_file():
        raise HpaTuneError(
            f"{raw_dir / 'train.csv'}: file not found (expected the Kaggle layout: train.csv, train/)"
        )
