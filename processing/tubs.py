"""Find and read DonkeyCar tubs (v2 and v1) and Ground Truth manifests into validated candidate frames.

Reading follows donkeycar 5.3.0 (``donkeycar/parts/datastore_v2.py``, ``tub_v2.py``):

* **v2** — ``manifest.json`` is 5 JSON lines; the 5th holds ``paths`` (the catalogs, in order),
  ``current_index``, ``max_len`` and ``deleted_indexes``. Each ``catalog_N.catalog`` has one record per
  line; ``catalog_N.catalog_manifest`` holds that catalog's ``start_index`` and ``line_lengths``.
  Images are ``images/<file>`` named by the record's ``cam/image_array``.
* **v1** — ``meta.json``, ``record_<N>.json`` (N is the index), JPEGs in the tub folder, and
  ``exclude.json`` (a list of excluded indexes, counted as deleted).

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
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.records import RecordValidator, Rejection, parse_json_object

V2_IMAGE_DIR = "images"
GROUND_TRUTH_SUFFIX = ".manifest"
_V1_RECORD = re.compile(r"^record_(\d+)\.json$")


class SourceError(ValueError):
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

    def reject(self, index: int, reason: str) -> None:
        self.rejected += 1
        self.rejections.append({"index": index, "reason": reason})

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
            "warnings": list(self.warnings),
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


def discover_sources(root: Path) -> list[Source]:
    """Every tub (v2: manifest.json; v1: meta.json + record_*.json) and ``*.manifest`` under ``root``.

    Tubs may be nested at any depth; a tub's own folders are not searched further. Sorted by path,
    so the output never depends on the file system's listing order.
    """
    root = Path(root)
    found: list[Source] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        files = set(filenames)
        name = here.relative_to(root).as_posix()
        name = root.resolve().name if name == "." else name
        if "manifest.json" in files:
            found.append(Source(here, "v2", name))
            dirnames[:] = []
            continue
        if "meta.json" in files and any(_V1_RECORD.match(f) for f in files):
            found.append(Source(here, "v1", name))
            dirnames[:] = []
            continue
        for filename in filenames:
            if filename.endswith(GROUND_TRUTH_SUFFIX):
                path = here / filename
                found.append(Source(path, "ground-truth", path.relative_to(root).as_posix()))
        dirnames.sort()
    return sorted(found, key=lambda s: s.name)


def _read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{path}: {what} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: {what} is not valid JSON ({exc})") from None


def read_v2_manifest(tub: Path) -> tuple[list[str], set[int], int]:
    """(catalog paths, deleted indexes, ``current_index`` = records written) from a v2 ``manifest.json``."""
    path = tub / "manifest.json"
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from None
    if len(lines) < 5:
        raise SourceError(f"{path}: expected 5 JSON lines (inputs, types, metadata, sessions, catalogs)")
    try:
        catalogs = json.loads(lines[4])
        paths = [str(p) for p in catalogs["paths"]]
        deleted = {int(i) for i in catalogs.get("deleted_indexes", [])}
        current_index = int(catalogs.get("current_index", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"{path}: malformed catalog line ({exc})") from None
    return paths, deleted, current_index


def _catalog_start_index(catalog: Path, fallback: int, report: SourceReport, line_count: int) -> int:
    meta_path = catalog.with_name(f"{catalog.stem}.catalog_manifest")
    try:
        meta = json.loads(meta_path.read_text().splitlines()[0])
        start = int(meta["start_index"])
        listed = len(meta.get("line_lengths", []))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        report.warnings.append(f"{meta_path.name} missing or unreadable: indexes counted from line order")
        return fallback
    if listed != line_count:
        report.warnings.append(f"{catalog.name} has {line_count} lines, its catalog_manifest lists {listed}")
    return start


def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the final newline ends the last line, it does not start one
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def read_v2_tub(source: Source, validator: RecordValidator) -> tuple[SourceReport, list[Candidate]]:
    report = SourceReport(source.name, "v2")
    paths, deleted, current_index = read_v2_manifest(source.path)
    candidates: list[Candidate] = []
    images_dir = os.path.join(str(source.path), V2_IMAGE_DIR, "")  # string joins: ~10x cheaper than Path
    seen: set[int] = set()  # every index met on a line: accepted, rejected or deleted
    expected = 0  # the index the next line implies: the previous line's + 1
    mismatched = 0
    for catalog_name in paths:
        catalog = source.path / catalog_name
        try:
            data = catalog.read_bytes()
        except OSError as exc:
            report.warnings.append(f"catalog {catalog_name} listed in manifest.json cannot be read ({exc})")
            continue
        lines = split_lines(data)
        expected = _catalog_start_index(catalog, expected, report, len(lines))
        for line in lines:
            report.read += 1
            record: dict[str, Any] | None = None
            parse_error: Rejection | None = None
            try:
                record = parse_json_object(line)
            except Rejection as rejection:
                parse_error = rejection
            carried = record.get("_index") if record is not None else None
            index = carried if type(carried) is int else expected
            if record is not None and index != expected:
                mismatched += 1
            expected = index + 1
            duplicate = index in seen
            seen.add(index)
            if index in deleted:
                report.deleted += 1
                continue
            try:
                if parse_error is not None or record is None:
                    raise parse_error or Rejection("malformed record", "unparseable")
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
    # Records manifest.json counts (current_index) that no catalog line holds: lost, and said so.
    for index in range(current_index):
        if index not in seen:
            report.read += 1
            if index in deleted:
                report.deleted += 1
            else:
                report.reject(index, f"record missing: no catalog line, manifest.json counts {current_index}")
    if mismatched:
        report.warnings.append(f"{mismatched} records carry an _index that differs from their line position")
    unlisted = sorted({p.name for p in source.path.glob("catalog_*.catalog")} - set(paths))
    if unlisted:  # donkeycar reads only the catalogs manifest.json lists; so do we, but say so
        report.warnings.append(f"catalogs not listed in manifest.json, not read: {', '.join(unlisted)}")
    return report, candidates


def read_v1_tub(source: Source, validator: RecordValidator) -> tuple[SourceReport, list[Candidate]]:
    report = SourceReport(source.name, "v1")
    meta = _read_json_file(source.path / "meta.json", "meta.json")
    start_ms = int(float(meta.get("start", 0)) * 1000) if isinstance(meta, dict) else 0
    exclude_path = source.path / "exclude.json"
    excluded: set[int] = set()
    if exclude_path.exists():
        value = _read_json_file(exclude_path, "exclude.json")
        if not isinstance(value, list):
            raise SourceError(f"{exclude_path}: expected a JSON list of indexes")
        excluded = {int(i) for i in value}
    records = sorted(
        (int(m.group(1)), source.path / name)
        for name in os.listdir(source.path)
        if (m := _V1_RECORD.match(name))
    )
    candidates: list[Candidate] = []
    for index, path in records:
        report.read += 1
        if index in excluded:
            report.deleted += 1
            continue
        try:
            record = parse_json_object(path.read_bytes())
            validator.check(record)
        except Rejection as rejection:
            report.reject(index, rejection.reason)
            continue
        except OSError as exc:
            report.reject(index, f"malformed record: cannot read {path.name} ({exc.strerror})")
            continue
        millis = record.get("milliseconds")
        candidates.append(
            Candidate(
                index=index,
                image_path=os.path.join(str(source.path), record["cam/image_array"]),
                session=source.name,  # a v1 tub is one driving session
                timestamp_ms=start_ms + int(millis) if type(millis) is int else -1,
                angle=float(record["user/angle"]),
                throttle=float(record["user/throttle"]),
            )
        )
    return report, candidates
