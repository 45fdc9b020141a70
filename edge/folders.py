"""Walking a folder tree the one way every unit does it: tub discovery, the ``--data`` upload, local S3.

Symbolic links are followed once, when their target stays inside the tree; what is under a link appears
under the link's name. Refused with a ``FolderError`` that names the path, never skipped without a word:
a link that leads outside the tree or dangles, a link back to a folder it sits in (a loop), a link to a
folder met inside a folder reached through a link (followed once: no chains), a folder that cannot be
listed, anything that is neither a file nor a folder (a FIFO would block its reader forever). So a walk
costs at most (links + 1) x the tree. Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


class FolderError(ValueError):
    """A folder holds what cannot be walked safely: a link out of it, a loop, a special file."""


def _check_link(path: Path, target: Path, root_real: Path, folder: Path, via: Path | None) -> None:
    if not target.exists():
        raise FolderError(f"{path} is a broken symbolic link (to {os.readlink(path)})")
    if not target.is_relative_to(root_real):
        raise FolderError(
            f"{path} is a symbolic link to {target}, outside {root_real}: links are followed only within "
            "the folder (copy the data in instead)"
        )
    if target.is_dir() and Path(os.path.realpath(folder)).is_relative_to(target):
        raise FolderError(f"{path} is a symbolic link to {target}, a folder it is in: a loop")
    if target.is_dir() and via is not None:
        raise FolderError(
            f"{path} is a symbolic link to a folder, met inside {via}, itself a link: links are followed "
            "once, not in chains"
        )


def walk(
    root: Path, *, skip: Callable[[str], bool] | None = None
) -> Iterator[tuple[Path, str, list[str], list[str]]]:
    """Top-down like ``os.walk``: ``(folder, relative posix name, folder names, file names)``, names sorted.

    Removing names from the yielded folder list prunes the walk, as with ``os.walk``. ``skip(name)``
    leaves entries out (e.g. files being written).
    """
    root = Path(root)
    root_real = Path(os.path.realpath(root))
    pending: list[tuple[Path, str, Path | None]] = [(root, "", None)]  # (folder, name, reached via link)
    while pending:
        folder, relative, via = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise FolderError(f"cannot list folder {folder}: {exc.strerror}") from None
        folders: list[str] = []
        files: list[str] = []
        reached_via: dict[str, Path | None] = {}
        for entry in entries:
            if skip is not None and skip(entry.name):
                continue
            path = Path(entry.path)
            link = entry.is_symlink()
            target = Path(os.path.realpath(path)) if link else path
            if link:
                _check_link(path, target, root_real, folder, via)
            if target.is_dir():
                folders.append(entry.name)
                reached_via[entry.name] = path if link else via
            elif target.is_file():
                files.append(entry.name)
            else:
                raise FolderError(f"{path} is neither a file nor a folder")
        yield folder, relative, folders, files
        for name in reversed(folders):  # what the caller kept, popped in sorted order
            pending.append((folder / name, f"{relative}/{name}" if relative else name, reached_via[name]))


def files_under(root: Path, *, skip: Callable[[str], bool] | None = None) -> list[tuple[str, Path]]:
    """Every file under ``root`` as ``(relative posix path, path)``, sorted by relative path."""
    return sorted(
        (f"{relative}/{name}" if relative else name, folder / name)
        for folder, relative, _, names in walk(root, skip=skip)
        for name in names
    )
