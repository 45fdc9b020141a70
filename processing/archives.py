"""Reproducible tar.gz archives: the same members give the same bytes, so a content hash names them.

Used for the code bundles each step gets (``pipelines/code_bundle.py``) and the packages CompileForEdge
writes (``processing/edge_package.py``). Standard library only.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable

MEMBER_MODE = 0o644  # regular files, readable by the container's user whatever the builder's umask
GZIP_LEVEL = 9  # gzip's own default, written out: the level changes the bytes


def deterministic_targz(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar.gz of regular files, sorted by name, whose bytes depend only on names and contents: no
    mtimes, owners or modes from the disk, and no gzip timestamp or file name in the header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), MEMBER_MODE, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=GZIP_LEVEL) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
