"""The DonkeyCar tub format, read one way: by the car replaying a tub (``edge/sources.py``) and by
Preprocess (``processing/tubs.py``, which adds its limits, record validation and accounting on top).

It follows donkeycar 5.3.0 (``donkeycar/parts/datastore_v2.py``, ``tub_v2.py``):

* **v2**: ``manifest.json`` is 5 JSON lines; the 5th holds ``paths`` (the catalogs, in order),
  ``current_index``, ``max_len`` and ``deleted_indexes``. Each catalog holds one JSON record per line;
  images are ``images/<file>`` named by the record's ``cam/image_array``.
* **v1**: ``meta.json``, ``record_<N>.json`` (N is the index), images in the tub folder, and
  ``exclude.json`` (the excluded indexes, counted as deleted).

Standard library only: the car reads tubs without pandas or the processing unit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MANIFEST_FILE = "manifest.json"
META_FILE = "meta.json"
EXCLUDE_FILE = "exclude.json"
V2_IMAGE_DIR = "images"
IMAGE_KEY = "cam/image_array"
V1_RECORD = re.compile(r"^record_([0-9]+)\.json$")  # ASCII digits: \d also matches "٣"
MANIFEST_LINES = 5  # inputs, types, metadata, sessions, catalogs
# The defaults of Preprocess's --max-tub-records and --max-line-bytes (processing/limits.py says why):
# the car replays a tub within the bounds Preprocess trains from.
MAX_TUB_RECORDS = 1_000_000
MAX_LINE_BYTES = 1 << 20
MAX_FILE_NAME_BYTES = 255  # a catalog's file name: one path component (NAME_MAX)
SKIP_CHUNK = 1 << 16  # bytes read at a time while skipping the rest of an overlong line


class TubError(ValueError):
    """A tub whose manifest or file names cannot be read as a tub; the message says what is wrong."""


def tub_version(files: Collection[str]) -> int | None:
    """2 for a folder holding ``manifest.json``, 1 for ``meta.json`` with a ``record_<N>.json``, else None."""
    if MANIFEST_FILE in files:
        return 2
    if META_FILE in files and any(V1_RECORD.match(name) for name in files):
        return 1
    return None


def image_dir(tub: Path, version: int) -> Path:
    """Where a tub's ``cam/image_array`` names its images."""
    return tub / V2_IMAGE_DIR if version == 2 else tub


def is_index(value: Any) -> bool:
    """A record index as JSON gives it: an integer >= 0 (not a bool, not 1.7)."""
    return type(value) is int and value >= 0


def is_file_name(value: str) -> bool:
    """A plain file name inside the tub folder: manifest.json's catalog paths must not lead elsewhere."""
    return (
        0 < len(value) <= MAX_FILE_NAME_BYTES
        and value not in (".", "..")
        and not any(c in value for c in "/\\\x00")
    )


def iter_lines(handle: BinaryIO, max_bytes: int) -> Iterator[bytes | int]:
    """The lines of a binary file, streamed: each line without its line break (LF or CRLF), or, for a
    line longer than ``max_bytes``, its length (an int; its bytes are skipped, never held).

    A final newline ends the last line, it does not start one (as donkeycar counts lines).
    """
    while True:
        line = handle.readline(max_bytes + 2)  # + the CRLF of a line of exactly max_bytes
        if not line:
            return
        if len(line) == max_bytes + 2 and not line.endswith(b"\n"):
            length = len(line)
            while not line.endswith(b"\n"):
                line = handle.readline(SKIP_CHUNK)
                if not line:
                    break
                length += len(line)
            yield length - (1 if line.endswith(b"\n") else 0)
            continue
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield line if len(line) <= max_bytes else len(line)


@dataclass(frozen=True)
class V2Manifest:
    """What a v2 ``manifest.json``'s catalog line says, checked."""

    paths: list[str]  # catalog file names, in order
    deleted: set[int]
    current_index: int  # the number of records donkeycar wrote


def parse_v2_manifest(
    text: str, *, max_records: int = MAX_TUB_RECORDS, records_limit: str | None = None
) -> V2Manifest:
    """The catalog line (the 5th) of a v2 ``manifest.json``; TubError unless every field is sane.

    ``records_limit`` names the bound ``max_records`` in messages (Preprocess names its flag).
    """
    limit = records_limit or f"the limit of {max_records:,} records"
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < MANIFEST_LINES:
        raise TubError("expected 5 JSON lines (inputs, types, metadata, sessions, catalogs)")
    try:
        catalogs = json.loads(lines[MANIFEST_LINES - 1])
    except (ValueError, RecursionError) as exc:
        raise TubError(f"malformed catalog line ({exc})") from None
    if not isinstance(catalogs, dict):
        raise TubError(f"malformed catalog line (a JSON {type(catalogs).__name__}, not an object)")
    paths = catalogs.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) and is_file_name(p) for p in paths):
        raise TubError(f"paths must list catalog file names in the tub folder, got {paths!r}")
    current_index = catalogs.get("current_index", 0)
    if not is_index(current_index):
        raise TubError(f"current_index {current_index!r} is not a record count (an integer >= 0)")
    if current_index > max_records:
        raise TubError(f"current_index {current_index:,} counts more records than {limit}")
    max_len = catalogs.get("max_len")
    if is_index(max_len) and max_len > 0 and current_index > len(paths) * max_len:
        raise TubError(
            f"current_index {current_index:,} counts more records than its {len(paths)} catalogs "
            f"of max_len {max_len:,} can hold"
        )
    deleted = catalogs.get("deleted_indexes", [])
    if not isinstance(deleted, list):
        raise TubError(f"deleted_indexes must be a list of record indexes, got {deleted!r}")
    for index in deleted:
        if not is_index(index) or index >= max_records:
            raise TubError(
                f"deleted_indexes holds {index!r}, not a record index (an integer 0..{max_records - 1:,}, "
                f"{limit})"
            )
    return V2Manifest(paths, set(deleted), current_index)


def v1_excluded(value: Any, *, max_records: int = MAX_TUB_RECORDS) -> set[int]:
    """The indexes a parsed v1 ``exclude.json`` lists; TubError for anything but a list of indexes."""
    if not isinstance(value, list):
        raise TubError("expected a JSON list of indexes")
    for entry in value:
        if not is_index(entry) or entry >= max_records:
            raise TubError(
                f"entry {entry!r} is not a record index (an integer 0..{max_records - 1:,}); "
                "fix exclude.json: a guessed index could train on a record the driver excluded"
            )
    return set(value)


def v1_record_files(
    tub: Path, *, max_records: int = MAX_TUB_RECORDS, records_limit: str | None = None
) -> list[tuple[int, Path]]:
    """(index, path) of every ``record_<N>.json``, by index; TubError for an N no tub can hold."""
    limit = records_limit or f"the limit of {max_records:,} records"
    records = []
    for name in os.listdir(tub):
        match = V1_RECORD.match(name)
        if match is None:
            continue
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > len(str(max_records)) or int(digits) >= max_records:  # int() of a 5,000-digit
            # name would raise: Python caps int/str conversion at 4,300 digits
            raise TubError(
                f"{name[:60]}: index {digits[:30]} is not a record index 0..{max_records - 1:,} ({limit})"
            )
        records.append((int(digits), tub / name))
    return sorted(records)


def _v2_records(tub: Path, manifest: V2Manifest) -> Iterator[dict[str, Any]]:
    for name in manifest.paths:
        with open(tub / name, "rb") as handle:
            for line in iter_lines(handle, MAX_LINE_BYTES):
                record = _json_object(line)
                if record is not None and record.get("_index") not in manifest.deleted:
                    yield record


def _v1_records(files: list[tuple[int, Path]], excluded: set[int]) -> Iterator[dict[str, Any]]:
    for index, path in files:
        record = _json_object(path.read_bytes()) if index not in excluded else None
        if record is not None:
            yield {**record, "_index": index}


def _json_object(line: bytes | int) -> dict[str, Any] | None:
    """A catalog line or record file as a JSON object; None for an overlong, garbage or non-object one."""
    if isinstance(line, int) or not line.strip():
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def tub_records(tub: Path) -> tuple[int, Iterator[dict[str, Any]]]:
    """A tub's version and its records in order, without deleted or excluded ones, nor lines that are
    no JSON object (the car replays what it can; Preprocess accounts for every line instead).

    The manifest (v2) or exclude list (v1) is read now: a TubError (or OSError) here, not mid-replay.
    """
    version = tub_version(set(os.listdir(tub)))
    if version == 2:
        return 2, _v2_records(tub, parse_v2_manifest((tub / MANIFEST_FILE).read_text(encoding="utf-8")))
    if version == 1:
        exclude = tub / EXCLUDE_FILE
        try:
            excluded = v1_excluded(json.loads(exclude.read_text())) if exclude.exists() else set()
        except (ValueError, RecursionError) as exc:
            raise TubError(f"{EXCLUDE_FILE}: {exc}") from None
        return 1, _v1_records(v1_record_files(tub), excluded)
    raise TubError(f"not a donkeycar tub (no {MANIFEST_FILE}, or no {META_FILE} with records)")
