"""Files that are never half-written, and one exclusive lock: how the car and local mode write.

Every file goes to a temporary name in the same folder (or ``tmp_dir`` on the same filesystem) and is
renamed into place, so a reader sees the old file or the new one, never part of one (``os.replace`` is
atomic on POSIX). Standard library only: the car writes its state through this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # the device may have no fcntl (Windows); locking then degrades to a no-op
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

FILE_MODE = 0o644  # mkstemp's 0600 would make a local S3 object or the car's state private to one user
IN_PROGRESS_PREFIX = ".tmp-"  # files being written: never listed as objects, never a key segment
COPY_CHUNK_BYTES = 1 << 20


def in_progress_prefix() -> str:
    """``.tmp-<pid>-``: the name of a file being written tells whose it is, so a later run can remove
    what a killed writer left (``pipelines/local/executor.py``) and keep what a live one is writing."""
    return f"{IN_PROGRESS_PREFIX}{os.getpid()}-"


@contextlib.contextmanager
def _replacing(path: Path, tmp_dir: Path | None, durable: bool) -> Iterator[Any]:
    """A binary handle on a temporary file that becomes ``path`` when the block ends without error.

    ``durable`` also fsyncs the file before the rename, so a power cut (the car's battery) leaves the
    old file or the whole new one, not an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = tmp_dir or path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=in_progress_prefix(), suffix=".part")
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(
    path: Path, data: bytes, *, tmp_dir: Path | None = None, durable: bool = False
) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    with _replacing(path, tmp_dir, durable) as handle:
        handle.write(data)


def atomic_copy_file(source: Path, destination: Path, *, tmp_dir: Path | None = None) -> None:
    """Copy a file into place through a temporary name (same filesystem as the destination)."""
    with _replacing(destination, tmp_dir, durable=False) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)


def atomic_write_json(path: Path, document: Any, *, durable: bool = False) -> None:
    """``document`` as indented, key-sorted JSON (datetimes as strings) written atomically."""
    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, text.encode(), durable=durable)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the block; released by the OS if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
