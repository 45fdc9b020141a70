"""Reproducible tar.gz archives: the same members give the same bytes, hence the same SHA-256.

The one writer of deterministic archives: compiled model packages (``processing/edge_package.py``,
``processing/neo.py``) and the car's tub uploads (``edge/upload.py``), which are named by that SHA-256.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.artifacts import sha256_file

MEMBER_MODE = 0o644


def write_reproducible_tar_gz(members: Mapping[str, bytes | Path], dest: Path) -> dict[str, Any]:
    """A tar.gz of regular files only, sorted, zero mtimes, uid/gid 0 and modes 0644: same members, same
    sha256. A member is its bytes, or a file streamed from disk (a tub's images need not fit in memory).

    The gzip header carries no file name and mtime 0, so neither the destination's name nor the clock
    changes the bytes (gzip would otherwise record ``dest``'s name: RFC 1952, FNAME).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
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
    return {"sha256": sha256_file(dest), "size_bytes": dest.stat().st_size}
