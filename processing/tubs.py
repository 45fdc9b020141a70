"""Find and read DonkeyCar tubs (v2 and v1) and Ground Truth manifests into validated candidate frames.

The tub format (donkeycar 5.3.0) is read through ``edge/tubs.py``, the reader the car replays tubs
with: which folder is a tub, the v2 manifest, the v1 record files and exclude list, catalog lines.
This module adds Preprocess's limits, record validation and accounting. A v2 catalog's
``catalog_N.catalog_manifest`` holds that catalog's ``start_index`` and ``line_lengths``.

What is counted. **read** is every record the tub holds: every line of every catalog listed in the
manifest (an empty or garbage line included; a final newline does not start a line), plus every index
below the manifest's ``current_index`` (the number of records donkeycar wrote) that no line holds: such
a record is lost (a line cut out, a catalog file gone) and is rejected as ``record missing``, or counted
deleted if it was. For v1: every ``record_N.json`` file. ``read = accepted + rejected + deleted`` for
every tub.

Which index a record has. A line that parses gets the ``_index`` it carries (so a lost line does not
renumber the rest). A line that does not parse gets the index its position implies: the previous
line's index + 1, starting each catalog at the ``start_index`` of its catalog_manifest (which, for a
healthy tub, is exactly donkeycar's ``ManifestIterator`` count). A record whose index is in
``deleted_indexes`` is *deleted* whether or not it would have been valid (donkeycar checks deletion
before parsing). A parseable record whose ``_index`` differs from its position is accepted with a
warning; a second line with an index already met is rejected (``duplicate index``).

Bounds (``processing/limits.py``, docs/data-limits.md). Catalogs and manifests are streamed line by
line; a line longer than ``line_bytes`` is a rejected record (``malformed record``), an ``_index``
outside ``0..tub_records-1`` is a rejected record at the index its position implies (``out of range``).
A ``manifest.json`` whose ``current_index`` or ``deleted_indexes`` are not record indexes within the
limit, or claim more records than its catalogs can hold (``len(paths) * max_len``: donkeycar starts a
new catalog every ``max_len`` records), refuses the run, as do a v1 ``exclude.json`` entry that is not
an integer index (``1.7``: it names no record, and guessing one could train on data the driver
excluded) and a ``meta.json`` ``start`` that is not a Unix time.

Folders. A symbolic link to a folder anywhere under the input folder refuses the run: following it
could loop or read outside the input folder, and skipping it would lose a tub without a word. So
does a folder that cannot be listed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.folders import FolderError, walk
from edge.tubs import (
    EXCLUDE_FILE,
    MANIFEST_FILE,
    META_FILE,
    V2_IMAGE_DIR,
    TubError,
    V2Manifest,
    is_index,
    iter_lines,
    parse_v2_manifest,
    tub_version,
    v1_excluded,
    v1_record_files,
)
from processing.errors import UserError, clip
from processing.limits import (
    DEFAULT_LIMITS,
    FLAGS,
    DataLimits,
    FileTooLarge,
    RecordBudget,
    limit_text,
    read_limited,
)
from processing.records import RecordValidator, Rejection, parse_json_object

GROUND_TRUTH_SUFFIX = ".manifest"
MAX_WARNINGS = 50  # per tub: one per catalog would grow with a hostile manifest's list of paths
MAX_REPORT_TEXT = 500  # characters of one rejection reason or warning (they may quote hostile data)


class SourceError(UserError, ValueError):
    """A tub or manifest that cannot be read at all (no manifest, malformed manifest.json)."""


@dataclass(slots=True)
class Candidate:
    """A record that passed record validation; its image is checked when frames are prepared."""

    index: int
    image_path: str
    session: str
    timestamp_ms: int
    angle: float = 0.0
    throttle: float = 0.0
    label: int = -1
    machine_labelled: bool = False  # Ground Truth's "human-annotated": "no" (automated data labeling)
    # A detector's photo: its objects as (class id, xmin, ymin, xmax, ymax) normalised to [0, 1], and the
    # (width, height) its manifest declares.
    boxes: tuple[tuple[int, float, float, float, float], ...] = ()
    image_size: tuple[int, int] | None = None


@dataclass
class SourceReport:
    """The accounting of one tub or manifest (a ``tubs`` entry of data_report.json)."""

    tub: str
    format: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    deleted: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warnings_dropped: int = 0

    def reject(self, index: int, reason: str) -> None:
        self.rejected += 1
        self.rejections.append({"index": index, "reason": clip(reason, MAX_REPORT_TEXT)})

    def warn(self, text: str) -> None:
        """Keep the first ``MAX_WARNINGS`` warnings; count the others."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(clip(text, MAX_REPORT_TEXT))
        else:
            self.warnings_dropped += 1

    def unaccounted(self) -> int:
        """read - (accepted + rejected + deleted): 0 once every record has been judged."""
        return self.read - self.accepted - self.rejected - self.deleted

    def to_dict(self) -> dict[str, Any]:
        rejections = sorted(self.rejections, key=lambda r: (r["index"], r["reason"]))
        return {
            "tub": self.tub,
            "format": self.format,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "deleted": self.deleted,
            "rejections": rejections,
            "warnings": list(self.warnings)
            + ([f"... and {self.warnings_dropped} more warnings"] if self.warnings_dropped else []),
        }

    def summary_line(self) -> str:
        line = (
            f"{self.tub} ({self.format}): read {self.read}, accepted {self.accepted}, "
            f"rejected {self.rejected}, deleted {self.deleted}"
        )
        if self.rejections:
            codes: dict[str, int] = {}
            for rejection in self.rejections:
                code = rejection["reason"].split(":", 1)[0]
                codes[code] = codes.get(code, 0) + 1
            line += " [" + ", ".join(f"{code} x{n}" for code, n in sorted(codes.items())) + "]"
        return line


@dataclass
class Source:
    """A tub folder or a Ground Truth manifest found under the input folder."""

    path: Path
    format: str  # "v2" | "v1" | "ground-truth"
    name: str  # path relative to the input folder, posix; recorded as ``tub`` in shards and report


def walk_input(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` top-down with sorted names, the way every unit walks a folder (``edge.folders``:
    a symbolic link followed once when it stays inside ``root``; a loop, a link out, a folder that cannot
    be listed refused with a ``SourceError``, never skipped without a word)."""
    try:
        for folder, _, folders, files in walk(root):
            yield str(folder), folders, files
    except FolderError as exc:
        raise SourceError(str(exc)) from None


def discover_sources(root: Path) -> list[Source]:
    """Every tub (v2: manifest.json; v1: meta.json + record_*.json) and ``*.manifest`` under ``root``.

    Tubs may be nested at any depth; a tub's own folders are not searched further. Sorted by path,
    so the output never depends on the file system's listing order.
    """
    root = Path(root)
    found: list[Source] = []
    for dirpath, dirnames, filenames in walk_input(root):
        here = Path(dirpath)
        files = set(filenames)
        name = here.relative_to(root).as_posix()
        name = root.resolve().name if name == "." else name
        version = tub_version(files)
        if version is not None:
            found.append(Source(here, f"v{version}", name))
            dirnames[:] = []
            continue
        for filename in filenames:
            if filename.endswith(GROUND_TRUTH_SUFFIX):
                path = here / filename
                found.append(Source(path, "ground-truth", path.relative_to(root).as_posix()))
    return sorted(found, key=lambda s: s.name)


def overlong_line(length: int, limits: DataLimits) -> Rejection:
    return Rejection(
        "malformed record", f"a line of {length:,} bytes, over {limit_text(limits, 'line_bytes')}"
    )


@contextlib.contextmanager
def _refusing(where: str) -> Iterator[None]:
    """The shared tub reader's TubError as the run's refusal (``SourceError``), ``where`` first."""
    try:
        yield
    except TubError as exc:
        raise SourceError(f"{where}{exc}") from None


def _read_json_file(path: Path, what: str, limits: DataLimits) -> Any:
    try:
        return json.loads(read_limited(path, limits.metadata_bytes))
    except FileNotFoundError:
        raise SourceError(f"{path}: {what} is missing") from None
    except FileTooLarge:
        raise SourceError(f"{path}: over {limit_text(limits, 'metadata_bytes')}") from None
    except (ValueError, RecursionError) as exc:
        raise SourceError(f"{path}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read {what} ({exc.strerror})") from None


def read_v2_manifest(tub: Path, limits: DataLimits = DEFAULT_LIMITS) -> V2Manifest:
    """The catalog line (the 5th) of a v2 ``manifest.json``; ``SourceError`` unless every field is sane."""
    path = tub / MANIFEST_FILE
    try:
        text = read_limited(path, limits.metadata_bytes).decode()
    except FileTooLarge:
        raise SourceError(f"{path}: over {limit_text(limits, 'metadata_bytes')}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from None
    with _refusing(f"{path}: "):
        return parse_v2_manifest(
            text, max_records=limits.tub_records, records_limit=limit_text(limits, "tub_records")
        )


def _catalog_start_index(
    catalog: Path, fallback: int, report: SourceReport, limits: DataLimits
) -> tuple[int, int | None]:
    """(index of the catalog's first line, line count its catalog_manifest lists or None)."""
    meta_path = catalog.with_name(f"{catalog.stem}.catalog_manifest")
    try:
        meta = json.loads(read_limited(meta_path, limits.metadata_bytes).split(b"\n", 1)[0])
        start = meta["start_index"]
        listed = meta.get("line_lengths", [])
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        report.warn(f"{meta_path.name} missing or unreadable: indexes counted from line order")
        return fallback, None
    if not is_index(start) or start >= limits.tub_records:
        report.warn(
            f"{meta_path.name}: start_index {start!r} is not a record index: indexes counted from line order"
        )
        return fallback, None
    return start, len(listed) if isinstance(listed, list) else None


def read_v2_tub(
    source: Source,
    validator: RecordValidator,
    limits: DataLimits = DEFAULT_LIMITS,
    budget: RecordBudget | None = None,
) -> tuple[SourceReport, list[Candidate]]:
    report = SourceReport(source.name, "v2")
    budget = budget or RecordBudget(limits)
    manifest = read_v2_manifest(source.path, limits)
    candidates: list[Candidate] = []
    images_dir = os.path.join(str(source.path), V2_IMAGE_DIR, "")  # string joins: ~10x cheaper than Path
    seen: set[int] = set()  # every index met on a line: accepted, rejected or deleted
    expected = 0  # the index the next line implies: the previous line's + 1
    mismatched = 0
    for catalog_name in manifest.paths:
        catalog = source.path / catalog_name
        try:
            handle = open(catalog, "rb")  # noqa: SIM115 - closed by the with below; only opening is "unreadable"
        except OSError as exc:
            report.warn(f"catalog {catalog_name} listed in manifest.json cannot be read ({exc.strerror})")
            continue
        with handle:
            expected, listed = _catalog_start_index(catalog, expected, report, limits)
            lines = 0
            for line in iter_lines(handle, limits.line_bytes):
                lines += 1
                budget.admit(source.name, report.read + 1)
                report.read += 1
                record: dict[str, Any] | None = None
                problem: Rejection | None = None
                try:
                    if type(line) is int:
                        raise overlong_line(line, limits)
                    record = parse_json_object(line)
                except Rejection as rejection:
                    problem = rejection
                carried = record.get("_index") if record is not None else None
                if type(carried) is int and 0 <= carried < limits.tub_records:
                    index = carried
                else:  # unparseable, no integer _index, or one no tub can hold: the position decides
                    index = expected
                    if type(carried) is int:
                        problem = Rejection(
                            "out of range",
                            f"_index {carried} is not a record index 0..{limits.tub_records - 1:,} "
                            f"({FLAGS['tub_records']})",
                        )
                if record is not None and index != expected:
                    mismatched += 1
                expected = index + 1
                duplicate = index in seen
                seen.add(index)
                if index in manifest.deleted:
                    report.deleted += 1
                    continue
                try:
                    if problem is not None or record is None:
                        raise problem or Rejection("malformed record", "unparseable")
                    validator.check(record)
                    if duplicate:
                        raise Rejection("duplicate index", f"_index {index} was already read from this tub")
                except Rejection as rejection:
                    report.reject(index, rejection.reason)
                    continue
                candidates.append(
                    Candidate(
                        index=index,
                        image_path=images_dir + record["cam/image_array"],
                        session=str(record.get("_session_id", source.name)),
                        timestamp_ms=int(record.get("_timestamp_ms", -1)),
                        angle=float(record["user/angle"]),
                        throttle=float(record["user/throttle"]),
                    )
                )
        if listed is not None and listed != lines:
            report.warn(f"{catalog_name} has {lines} lines, its catalog_manifest lists {listed}")
    # Records manifest.json counts (current_index) that no catalog line holds: lost, and said so.
    for index in range(manifest.current_index):
        if index not in seen:
            budget.admit(source.name, report.read + 1)
            report.read += 1
            if index in manifest.deleted:
                report.deleted += 1
            else:
                report.reject(
                    index, f"record missing: no catalog line, manifest.json counts {manifest.current_index}"
                )
    if mismatched:
        report.warn(f"{mismatched} records carry an _index that differs from their line position")
    unlisted = sorted({p.name for p in source.path.glob("catalog_*.catalog")} - set(manifest.paths))
    if unlisted:  # donkeycar reads only the catalogs manifest.json lists; so do we, but say so
        report.warn(f"catalogs not listed in manifest.json, not read: {', '.join(unlisted)}")
    return report, candidates


# A Unix time in seconds between 1970 and the year 10000: what donkeycar's time.time() writes, and
# small enough that start * 1000 + milliseconds stays an int64.
MAX_UNIX_SECONDS = 253_402_300_800
INT64 = (-(2**63), 2**63 - 1)


def _v1_start_ms(meta: Any, path: Path) -> int:
    """``meta.json``'s ``start`` (Unix seconds) in milliseconds; 0 when absent."""
    start = meta.get("start", 0) if isinstance(meta, dict) else 0
    if type(start) not in (int, float) or not 0 <= start < MAX_UNIX_SECONDS:  # NaN fails the comparison
        raise SourceError(f"{path}: start {start!r} is not a Unix time in seconds (0..{MAX_UNIX_SECONDS})")
    return int(start * 1000)


def _v1_excluded(path: Path, limits: DataLimits) -> set[int]:
    """The indexes a v1 ``exclude.json`` lists (counted as deleted); none without the file."""
    if not path.exists():
        return set()
    with _refusing(f"{path}: "):
        return v1_excluded(_read_json_file(path, EXCLUDE_FILE, limits), max_records=limits.tub_records)


def _v1_record_files(tub: Path, limits: DataLimits) -> list[tuple[int, Path]]:
    """(index, path) of every ``record_<N>.json``, by index; ``SourceError`` for an N no tub can hold."""
    with _refusing(f"{tub}/"):
        return v1_record_files(
            tub, max_records=limits.tub_records, records_limit=limit_text(limits, "tub_records")
        )


def read_v1_tub(
    source: Source,
    validator: RecordValidator,
    limits: DataLimits = DEFAULT_LIMITS,
    budget: RecordBudget | None = None,
) -> tuple[SourceReport, list[Candidate]]:
    report = SourceReport(source.name, "v1")
    budget = budget or RecordBudget(limits)
    start_ms = _v1_start_ms(
        _read_json_file(source.path / META_FILE, META_FILE, limits), source.path / META_FILE
    )
    excluded = _v1_excluded(source.path / EXCLUDE_FILE, limits)
    candidates: list[Candidate] = []
    seen: set[int] = set()
    for index, path in _v1_record_files(source.path, limits):
        budget.admit(source.name, report.read + 1)
        report.read += 1
        duplicate = index in seen  # record_7.json and record_07.json
        seen.add(index)
        if index in excluded:
            report.deleted += 1
            continue
        try:
            record = parse_json_object(read_limited(path, limits.line_bytes))
            validator.check(record)
            if duplicate:
                raise Rejection(
                    "duplicate index", f"{path.name}: index {index} was already read from this tub"
                )
            millis = record.get("milliseconds")
            timestamp_ms = start_ms + millis if type(millis) is int else -1
            if not INT64[0] <= timestamp_ms <= INT64[1]:
                raise Rejection("out of range", f"milliseconds={millis} puts the timestamp outside int64")
        except Rejection as rejection:
            report.reject(index, rejection.reason)
            continue
        except FileTooLarge:
            report.reject(index, f"malformed record: {path.name} is over {limit_text(limits, 'line_bytes')}")
            continue
        except OSError as exc:
            report.reject(index, f"malformed record: cannot read {path.name} ({exc.strerror})")
            continue
        candidates.append(
            Candidate(
                index=index,
                image_path=os.path.join(str(source.path), record["cam/image_array"]),
                session=source.name,  # a v1 tub is one driving session
                timestamp_ms=timestamp_ms,
                angle=float(record["user/angle"]),
                throttle=float(record["user/throttle"]),
            )
        )
    return report, candidates
