"""Reproducible tar.gz archives: the same members give the same bytes, hence the same SHA-256.

The one writer of deterministic archives: compiled model packages (``processing/edge_package.py``,
``processing/neo.py``), the pipeline's code bundles (``pipelines/code_bundle.py``) and the car's tub uploads
(``edge/upload.py``), all named by that SHA-256.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from edge.artifacts import sha256_file

MEMBER_MODE = 0o644  # regular files, readable by the container's user whatever the builder's umask
GZIP_LEVEL = 9


def write_reproducible_tar_gz(members: Mapping[str, bytes | Path], dest: Path) -> dict[str, Any]:
    """``dest``: the reproducible tar.gz of ``members``, and its sha256 and size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as raw:
        _write(members, raw)
    return {"sha256": sha256_file(dest), "size_bytes": dest.stat().st_size}


def reproducible_tar_gz(members: Mapping[str, bytes | Path]) -> bytes:
    """The same archive in memory (the pipeline's code bundles, a few hundred kB)."""
    raw = io.BytesIO()
    _write(members, raw)
    return raw.getvalue()


def _write(members: Mapping[str, bytes | Path], raw: BinaryIO) -> None:
    """A tar.gz of regular files only, sorted, zero mtimes, uid/gid 0 and modes 0644: same members, same
    bytes. A member is its bytes, or a file streamed from disk (a tub's images need not fit in memory).

    The gzip header carries no file name and mtime 0, so neither the destination's name nor the clock
    changes the bytes (gzip would otherwise record ``dest``'s name: RFC 1952, FNAME); the level is gzip's
    default 9, written out because it changes the bytes too.
    """
    with (
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=GZIP_LEVEL) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            content = members[name]
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = MEMBER_MODE, 0, 0, 0
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as handle:
                    tar.addfile(info, handle)  # a file shortened meanwhile fails: tarfile reads size bytes
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
