"""Bounds on everything Preprocess reads, so that no input can make it run out of memory or time.

Each limit is far above what a real tub or Ground Truth manifest holds (docs/data-limits.md gives the
reasoning and the flag that raises each one). What happens when one is exceeded:

* the problem is one record's (a line too long, an ``_index`` or class id out of range, an image file
  too large): that record is rejected, by index, with its reason, and the run goes on;
* the problem is the input as a whole (a manifest claiming 10^9 records, more records than the run may
  read): the run is refused, exit status 2, one line naming the tub, the limit and its flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.tubs import MAX_LINE_BYTES, MAX_TUB_RECORDS
from processing.errors import UserError


@dataclass(frozen=True)
class DataLimits:
    """Every bound Preprocess enforces; the defaults are the ``--max-*`` flags' defaults."""

    # 10 driving sessions of 10^5 frames (83 min each at donkeycar's 20 Hz); 10x Ground Truth's default
    # quota of 100,000 items per labeling job (https://docs.aws.amazon.com/sagemaker/latest/dg/input-data-limits.html)
    tub_records: int = MAX_TUB_RECORDS
    total_records: int = 10_000_000  # a run: 139 hours of driving at 20 Hz
    sources: int = 10_000  # tubs and manifests in one run
    # A donkeycar record is ~200 bytes, a Ground Truth image-classification line ~400; Ground Truth's input
    # manifest lines are limited to 100k characters (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-input.html),
    # at most 400 KB in UTF-8.
    line_bytes: int = MAX_LINE_BYTES
    # manifest.json (with deleted_indexes of a full tub: ~9 bytes each), meta.json, exclude.json,
    # catalog_manifest (line_lengths of a full catalog)
    metadata_bytes: int = 64 << 20
    # A 160x120 camera JPEG is ~5 KB; Ground Truth refuses images over 40 MB (input-data-limits above).
    image_bytes: int = 40 << 20
    classes: int = 1_000  # Ground Truth class ids 0..999 (ImageNet has 1,000 classes)


DEFAULT_LIMITS = DataLimits()
READ_CHUNK = 1 << 20

# The flag of each limit, named in every refusal so the user knows how to raise it.
FLAGS = {
    "tub_records": "--max-tub-records",
    "total_records": "--max-records",
    "sources": "--max-tubs",
    "line_bytes": "--max-line-bytes",
    "metadata_bytes": "--max-metadata-bytes",
    "image_bytes": "--max-image-bytes",
    "classes": "--max-classes",
}


class LimitError(UserError):
    """The input as a whole exceeds a limit: the run is refused (exit status 2)."""


UNITS = {"sources": "tubs and manifests", "classes": "classes"}


def limit_text(limits: DataLimits, name: str) -> str:
    """``the limit of N <unit> (--flag)``: how every message names limit ``name``."""
    unit = UNITS.get(name) or ("bytes" if name.endswith("_bytes") else "records")
    return f"the limit of {getattr(limits, name):,} {unit} ({FLAGS[name]})"


class RecordBudget:
    """Counts the records a run reads, per source and in total, and refuses the run past a limit.

    Counting happens as records are read (a catalog is streamed), so a manifest claiming 10^9 records
    stops after ``tub_records`` of them, in bounded time and memory.
    """

    def __init__(self, limits: DataLimits) -> None:
        self.limits = limits
        self.total = 0

    def admit(self, source: str, read: int) -> None:
        """Record number ``read`` (1-based) of ``source`` is about to be counted."""
        self.total += 1
        if read > self.limits.tub_records:
            raise LimitError(f"{source} holds more records than {limit_text(self.limits, 'tub_records')}")
        if self.total > self.limits.total_records:
            raise LimitError(
                f"the input holds more records than {limit_text(self.limits, 'total_records')} "
                f"(reached in {source})"
            )


class FileTooLarge(ValueError):
    """A file is larger than its limit (raised by ``read_limited``; the caller names the limit)."""


def read_limited(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of ``path``, or ``FileTooLarge``, holding at most ``max_bytes`` + 1 MiB of them.

    ``read(max_bytes + 1)`` would allocate the whole limit for every small file; the file's size is
    asked first, and a file without one (a pipe) or that grows is read in chunks up to the limit.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise FileTooLarge(f"{Path(path).name} is larger than {max_bytes:,} bytes")
        parts = [handle.read(size + 1)] if size else []
        total = len(parts[0]) if parts else 0
        while total <= max_bytes:
            part = handle.read(min(READ_CHUNK, max_bytes + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
    if total > max_bytes:
        raise FileTooLarge(f"{Path(path).name} is larger than {max_bytes:,} bytes")
    return parts[0] if len(parts) == 1 else b"".join(parts)
