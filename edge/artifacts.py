"""Getting a compiled model onto the device without trusting the bytes: download, verify, extract safely.

The artifact is a ``model.tar.gz`` from ``processing/compile.py`` (contracts section 5). Its SHA-256 comes
from the model registry, not from the download, so a tampered or truncated file is refused before it is
opened. The tar is then unpacked member by member with our own checks rather than ``tarfile.extractall``:
only regular files and folders, relative paths that stay inside the destination, and limits on the member
count and on every file's and the total size, so a hostile archive can neither escape nor fill the disk.

Standard library only (the S3 client is passed in), so it runs on the car.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_BYTES = 1 << 20


class ArtifactError(Exception):
    """An artifact that must not be installed; the message says why."""


class IntegrityError(ArtifactError):
    """The downloaded bytes are not the ones the registry vouches for (SHA-256 or size)."""


class UnsafeArchiveError(ArtifactError):
    """The archive tries to write outside its folder, holds links or devices, or exceeds a limit."""


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what an archive may unpack to. A compiled pilot is a few MiB; these leave ample room."""

    max_members: int = 256
    max_file_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; anything else is an ArtifactError naming the URI."""
    if not uri.startswith("s3://"):
        raise ArtifactError(f"artifact URI must start with s3://, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ArtifactError(f"artifact URI {uri!r} has no bucket or no key")
    return bucket, key


def normalize_sha256(digest: str) -> str:
    """A SHA-256 given as 64 hex digits (any case) -> lowercase; anything else is refused."""
    value = digest.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ArtifactError(f"not a SHA-256 hex digest: {digest!r}")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashing(src: BinaryIO, dst: BinaryIO, max_bytes: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
        size += len(chunk)
        if size > max_bytes:
            raise IntegrityError(f"artifact is larger than the {max_bytes}-byte limit")
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest(), size


def fetch_verified(
    s3: Any, uri: str, dest: Path, expected_sha256: str, *, max_bytes: int = 512 << 20
) -> Path:
    """Stream ``uri`` through ``s3.get_object`` to ``dest``, keeping it only if its SHA-256 matches.

    The bytes land in ``dest.part`` first and are renamed only once verified, so a crash or a mismatch
    never leaves a file at ``dest`` that looks valid. Client errors (no network) propagate unchanged.
    """
    expected = normalize_sha256(expected_sha256)
    bucket, key = parse_s3_uri(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with open(partial, "wb") as out:
            actual, size = _copy_hashing(body, out, max_bytes)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        close = getattr(body, "close", None)
        if close:
            close()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise IntegrityError(
            f"SHA-256 mismatch for {uri}: the registry says {expected}, "
            f"the download ({size} bytes) is {actual}"
        )
    os.replace(partial, dest)
    return dest


def verify_file(path: Path, expected_sha256: str) -> None:
    """Refuse a local artifact (e.g. one Greengrass delivered) whose SHA-256 is not the expected one."""
    expected = normalize_sha256(expected_sha256)
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(f"SHA-256 mismatch for {path}: expected {expected}, file is {actual}")


def _member_relative_path(name: str) -> str:
    """A tar member name -> a safe relative POSIX path, or UnsafeArchiveError saying what is wrong."""
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"member {name!r} has a NUL or backslash in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} climbs out of the archive with '..'")
    return posixpath.join(*parts) if parts else ""


def check_member(member: tarfile.TarInfo, limits: ExtractLimits) -> str:
    """Raise UnsafeArchiveError unless ``member`` is a plain file or folder within the limits."""
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(
            f"member {member.name!r} is a link (to {member.linkname!r}); links are refused"
        )
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"member {member.name!r} is a device, FIFO or other special file")
    relative = _member_relative_path(member.name)
    if member.isreg() and member.size > limits.max_file_bytes:
        raise UnsafeArchiveError(
            f"member {member.name!r} is {member.size} bytes, over the {limits.max_file_bytes}-byte limit"
        )
    return relative


def safe_extract(archive: Path, dest: Path, limits: ExtractLimits = ExtractLimits()) -> list[str]:
    """Unpack ``archive`` (tar, compressed or not, or zip) into the new folder ``dest``; returns the
    files written (relative paths).

    Every member is checked before anything of it is written; on any refusal ``dest`` is removed, so a
    bad archive leaves nothing behind. ``dest`` must not exist yet.
    """
    if zipfile.is_zipfile(archive):
        return _safe_extract_zip(archive, dest, limits)
    seen: set[str] = set()
    total = 0
    with _unpacking(archive, dest, "tar", tarfile.TarError) as written:
        root = dest.resolve()
        with tarfile.open(archive, "r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
                relative = check_member(member, limits)
                if not relative:
                    continue  # the archive's own "." folder
                target = (root / relative).resolve()
                if os.path.commonpath([root, target]) != str(root):
                    raise UnsafeArchiveError(f"member {member.name!r} resolves outside the destination")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if relative in seen:
                    raise UnsafeArchiveError(f"member {member.name!r} appears twice")
                seen.add(relative)
                total += member.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchiveError(f"archive unpacks to more than {limits.max_total_bytes} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # unreachable for regular files; kept so a tarfile change cannot slip by
                    raise UnsafeArchiveError(f"member {member.name!r} has no data")
                with source, open(target, "xb") as out:
                    # Cap what is written at the declared size, whatever the stream yields.
                    _, size = _copy_hashing(source, out, member.size)
                if size != member.size:
                    raise UnsafeArchiveError(f"member {member.name!r} is truncated")
                os.chmod(target, 0o644)
                written.append(relative)
    return written


@contextlib.contextmanager
def _unpacking(
    archive: Path, dest: Path, kind: str, unreadable: type[BaseException] | tuple[type[BaseException], ...]
) -> Iterator[list[str]]:
    """Create ``dest`` and collect the files written into it; on any failure, or nothing written,
    remove ``dest`` (a refused archive leaves nothing behind) and raise UnsafeArchiveError."""
    dest.mkdir(parents=True, exist_ok=False)
    written: list[str] = []
    try:
        yield written
    except unreadable as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchiveError(f"{archive.name} is not a readable {kind} archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if not written:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchiveError(f"{archive.name} contains no files")


def _zip_member_is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)  # 3: made on Unix


def _safe_extract_zip(archive: Path, dest: Path, limits: ExtractLimits) -> list[str]:
    """The zip side of ``safe_extract``: the same checks (names, links, sizes, duplicates, limits)."""
    with _unpacking(archive, dest, "zip", (zipfile.BadZipFile, zipfile.LargeZipFile)) as written:
        root = dest.resolve()
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if len(members) > limits.max_members:
                raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
            if sum(m.file_size for m in members) > limits.max_total_bytes:
                raise UnsafeArchiveError(f"archive unpacks to more than {limits.max_total_bytes} bytes")
            names = [_member_relative_path(m.filename) for m in members]
            files = [n for n, m in zip(names, members, strict=True) if n and not m.is_dir()]
            if len(files) != len(set(files)):
                raise UnsafeArchiveError("archive holds a member twice")
            for info, relative in zip(members, names, strict=True):
                if _zip_member_is_link(info):
                    raise UnsafeArchiveError(f"member {info.filename!r} is a link; links are refused")
                if info.file_size > limits.max_file_bytes:
                    raise UnsafeArchiveError(
                        f"member {info.filename!r} is {info.file_size} bytes, over the "
                        f"{limits.max_file_bytes}-byte limit"
                    )
                target = (root / relative).resolve()
                if relative and os.path.commonpath([root, target]) != str(root):
                    raise UnsafeArchiveError(f"member {info.filename!r} resolves outside the destination")
            for info, relative in zip(members, names, strict=True):
                if not relative:
                    continue
                target = root / relative
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "xb") as out:
                    _, size = _copy_hashing(source, out, info.file_size)
                if size != info.file_size:
                    raise UnsafeArchiveError(f"member {info.filename!r} is truncated")
                written.append(relative)
    return written
