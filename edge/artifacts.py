"""Getting a compiled model onto the device without trusting the bytes: download, verify, extract safely.

The artifact is a ``model.tar.gz`` from ``processing/compile.py`` (contracts section 5). Its SHA-256 comes
from the model registry, not from the download, so a tampered or truncated file is refused before it is
opened. The tar is then unpacked member by member with our own checks rather than ``tarfile.extractall``:
only regular files and folders, relative paths that stay inside the destination, and limits
(``ExtractLimits``) checked before the bytes they bound are read, so a hostile archive can neither
escape, nor fill the disk, nor make the reader allocate gigabytes (a GNU long-name or pax header is
refused on its declared size, before tarfile reads it).

Every refusal is an ``ArtifactError`` naming the archive and the reason, whatever the decompressor or
tarfile raised. An ``OSError`` of the car's own disk (``is_storage_error``: full, read-only, ...) is not
the archive's fault and propagates unchanged, so the caller can try again later.

Standard library only (the S3 client is passed in), so it runs on the car.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edge.s3_uri import split_s3_uri

CHUNK_BYTES = 1 << 20
NAME_MAX_BYTES = 255  # one path component: NAME_MAX of Linux filesystems (ext4, f2fs, btrfs)
# Errors of the car's own disk, not of what it was sent: the package is not to blame and is tried again.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
# What a decompressor, tarfile or zipfile raise on bytes they cannot make sense of. Anything else (a
# TypeError, an AttributeError) would be a bug of ours and is left to propagate, to stay visible.
_UNREADABLE = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,  # a truncated gzip stream
    zlib.error,
    struct.error,
    ValueError,  # bad numbers or encodings in headers
    OverflowError,
    RuntimeError,  # zip: encrypted member; NotImplementedError: unknown compression; RecursionError
    OSError,  # gzip.BadGzipFile, ENAMETOOLONG, ...; storage errors are re-raised unchanged first
)
_TAR_EXTENSION_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
# Compressions tarfile would open but the car does not accept: compile writes gzip, and an xz header may
# ask the decoder for a 1.5 GiB dictionary before a single member is seen.
_REFUSED_COMPRESSIONS = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_ZIP_DIRECTORY_ENTRY_BYTES = 46 + 1024  # fixed part of a central-directory entry + room for extra/comment
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


class ArtifactError(Exception):
    """An artifact that must not be installed; the message says why."""


class IntegrityError(ArtifactError):
    """The downloaded bytes are not the ones the registry vouches for (SHA-256 or size)."""


class UnsafeArchiveError(ArtifactError):
    """The archive tries to write outside its folder, holds links or devices, exceeds a limit, or cannot
    be read (truncated, corrupt, encrypted, an unknown compression)."""


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the car's own disk failing (full, read-only, no permission, I/O error)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what an archive may unpack to, each checked before the bytes it bounds are read.

    A compiled pilot package is a manifest and up to four model files of a few MiB each (a Neo folder:
    about five files), with names under 40 bytes; every default is far above that.
    """

    max_members: int = 256
    max_file_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20
    max_name_bytes: int = 1024  # a member's whole path, UTF-8 (a component is also held to NAME_MAX_BYTES)
    # One tar extension header (GNU long name/link, a pax record set): a real one is ~100 bytes. tarfile
    # reads it into memory whole, so this is what a 0.4 MB archive declaring a 3 GB name would cost.
    max_header_bytes: int = 64 << 10
    max_extension_headers: int = 4  # in a row before one member; GNU tar and pax write at most 2


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``split_s3_uri`` for an object: an ArtifactError naming the URI when it has no bucket or no key."""
    try:
        bucket, key = split_s3_uri(uri)
    except ValueError as exc:
        raise ArtifactError(f"artifact URI: {exc}") from None
    if not key:
        raise ArtifactError(f"artifact URI {uri!r} has no key")
    return bucket, key


def normalize_sha256(digest: Any) -> str:
    """A SHA-256 given as 64 hex digits (any case) -> lowercase; anything else is refused."""
    value = digest.strip().lower() if isinstance(digest, str) else ""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ArtifactError(f"not a SHA-256 hex digest: {digest!r}")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashing(
    src: BinaryIO, dst: BinaryIO, max_bytes: int, error: type[ArtifactError] = IntegrityError
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
        size += len(chunk)
        if size > max_bytes:
            raise error(f"artifact is larger than the {max_bytes}-byte limit")
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


def _member_relative_path(name: str, limits: ExtractLimits) -> str:
    """A member name -> a safe relative POSIX path, or UnsafeArchiveError saying what is wrong."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > limits.max_name_bytes:
        raise UnsafeArchiveError(
            f"member name {name[:60]!r}... is {len(encoded)} bytes, "
            f"over the {limits.max_name_bytes}-byte limit"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "\\" in name:
        raise UnsafeArchiveError(f"member {name!r} has a control character or backslash in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} climbs out of the archive with '..'")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            raise UnsafeArchiveError(
                f"member {name[:60]!r}... has a name part over {NAME_MAX_BYTES} bytes (NAME_MAX)"
            )
    return posixpath.join(*parts) if parts else ""


def check_member(member: tarfile.TarInfo, limits: ExtractLimits) -> str:
    """Raise UnsafeArchiveError unless ``member`` is a plain file or folder within the limits."""
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(
            f"member {member.name!r} is a link (to {member.linkname!r}); links are refused"
        )
    if member.issparse():
        raise UnsafeArchiveError(f"member {member.name!r} is a sparse file; sparse files are refused")
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"member {member.name!r} is a device, FIFO or other special file")
    relative = _member_relative_path(member.name, limits)
    if member.isreg() and member.size > limits.max_file_bytes:
        raise UnsafeArchiveError(
            f"member {member.name!r} is {member.size} bytes, over the {limits.max_file_bytes}-byte limit"
        )
    return relative


class _Layout:
    """The tree an archive describes, checked as it grows: no file twice, no path that is both a file and
    a folder (the second would fail half-way with EEXIST/ENOTDIR), the total within the limit."""

    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.files: set[str] = set()
        self.folders: set[str] = set()
        self.total_bytes = 0

    def _parents(self, relative: str) -> list[str]:
        parts = relative.split("/")
        return ["/".join(parts[:i]) for i in range(1, len(parts))]

    def _claim_folders(self, name: str, folders: list[str]) -> None:
        clash = next((f for f in folders if f in self.files), None)
        if clash is not None:
            raise UnsafeArchiveError(f"member {name!r} needs {clash!r} as a folder, but it is a file")
        self.folders.update(folders)

    def add_folder(self, name: str, relative: str) -> None:
        self._claim_folders(name, [*self._parents(relative), relative])

    def add_file(self, name: str, relative: str, size: int) -> None:
        if relative in self.files:
            raise UnsafeArchiveError(f"member {name!r} appears twice")
        if relative in self.folders:
            raise UnsafeArchiveError(f"member {name!r} is both a folder and a file")
        self._claim_folders(name, self._parents(relative))
        self.total_bytes += size
        if self.total_bytes > self.limits.max_total_bytes:
            raise UnsafeArchiveError(f"archive unpacks to more than {self.limits.max_total_bytes} bytes")
        self.files.add(relative)


def _archive_kind(archive: Path) -> str:
    """``tar.gz``, ``zip`` or ``tar`` from the first bytes; a compression the car refuses is an error."""
    with open(archive, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    for magic, name in _REFUSED_COMPRESSIONS.items():
        if head.startswith(magic):
            raise UnsafeArchiveError(f"{archive.name} is {name}-compressed; only gzip (or none) is accepted")
    return "zip" if zipfile.is_zipfile(archive) else "tar"


def safe_extract(archive: Path, dest: Path, limits: ExtractLimits = ExtractLimits()) -> list[str]:
    """Unpack ``archive`` (tar, gzip-compressed or not, or zip) into the new folder ``dest``; returns the
    files written (relative paths).

    Every member is checked before anything of it is written; on any refusal ``dest`` is removed, so a
    bad archive leaves nothing behind. ``dest`` must not exist yet.
    """
    kind = _archive_kind(archive)
    if kind == "zip":
        return _safe_extract_zip(archive, dest, limits)
    layout = _Layout(limits)
    with _unpacking(archive, dest, kind) as written:
        root = dest.resolve()
        mode = "r:gz" if kind == "tar.gz" else "r:"
        with tarfile.open(archive, mode, tarinfo=_bounded_tarinfo(limits)) as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
                relative = check_member(member, limits)
                if not relative:
                    continue  # the archive's own "." folder
                target = _inside(root, relative, member.name)
                if member.isdir():
                    layout.add_folder(member.name, relative)
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                layout.add_file(member.name, relative, member.size)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # unreachable for regular files; kept so a tarfile change cannot slip by
                    raise UnsafeArchiveError(f"member {member.name!r} has no data")
                with source, open(target, "xb") as out:
                    # Cap what is written at the declared size, whatever the stream yields.
                    _, size = _copy_hashing(source, out, member.size, UnsafeArchiveError)
                if size != member.size:
                    raise UnsafeArchiveError(f"member {member.name!r} is truncated")
                os.chmod(target, 0o644)
                written.append(relative)
    return written


def _inside(root: Path, relative: str, name: str) -> Path:
    target = (root / relative).resolve()
    if os.path.commonpath([root, target]) != str(root):
        raise UnsafeArchiveError(f"member {name!r} resolves outside the destination")
    return target


def _bounded_tarinfo(limits: ExtractLimits) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized or endless extension headers and sparse members *before*
    tarfile reads them: tarfile reads a GNU long name or a pax header into memory in one piece, and a
    sparse map block by block, on the header's word alone."""

    class BoundedTarInfo(tarfile.TarInfo):
        # tarfile documents _proc_member as the hook "which can be overridden in a subclass".
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise UnsafeArchiveError(f"member {self.name!r} is a sparse file; sparse files are refused")
            if self.type not in _TAR_EXTENSION_TYPES:
                tar._robocar_extension_headers = 0  # type: ignore[attr-defined]
                return super()._proc_member(tar)
            if self.size > limits.max_header_bytes:
                raise UnsafeArchiveError(
                    f"a tar extension header declares {self.size} bytes, over the "
                    f"{limits.max_header_bytes}-byte limit (long name or pax header)"
                )
            in_a_row = getattr(tar, "_robocar_extension_headers", 0) + 1
            if in_a_row > limits.max_extension_headers:
                raise UnsafeArchiveError(
                    f"more than {limits.max_extension_headers} tar extension headers in a row"
                )
            tar._robocar_extension_headers = in_a_row  # type: ignore[attr-defined]
            return super()._proc_member(tar)

        # pax headers can describe GNU sparse maps too; tarfile would read those without bound.
        def _proc_gnusparse_00(self, *args: Any) -> None:
            raise UnsafeArchiveError("a pax header describes a sparse file; sparse files are refused")

        _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00

    return BoundedTarInfo


@contextlib.contextmanager
def _unpacking(archive: Path, dest: Path, kind: str) -> Iterator[list[str]]:
    """Create ``dest`` and collect the files written into it; on any failure, or nothing written,
    remove ``dest`` (a refused archive leaves nothing behind). What the readers raise on bad bytes
    becomes an UnsafeArchiveError; the car's own disk errors propagate unchanged."""
    dest.mkdir(parents=True, exist_ok=False)
    written: list[str] = []
    try:
        yield written
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, ArtifactError) or is_storage_error(exc) or not isinstance(exc, _UNREADABLE):
            raise
        raise UnsafeArchiveError(
            f"{archive.name} is not a readable {kind} archive: {type(exc).__name__}: {exc}"
        ) from exc
    if not written:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchiveError(f"{archive.name} contains no files")


def _zip_member_is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)  # 3: made on Unix


def _check_zip_directory(archive: Path, limits: ExtractLimits) -> None:
    """Refuse a central directory bigger than ``max_members`` entries can be, before zipfile reads it:
    zipfile loads the whole directory and makes an object per entry (46 bytes each at least)."""
    with open(archive, "rb") as f:
        end = zipfile._EndRecData(f)  # the record zipfile itself will use (zip64 included)
    if not end:
        raise UnsafeArchiveError(f"{archive.name} has no zip end-of-directory record")
    if end[zipfile._ECD_ENTRIES_TOTAL] > limits.max_members:
        raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
    bound = limits.max_members * (_ZIP_DIRECTORY_ENTRY_BYTES + limits.max_name_bytes)
    if end[zipfile._ECD_SIZE] > bound:
        raise UnsafeArchiveError(
            f"archive's directory is {end[zipfile._ECD_SIZE]} bytes, "
            f"more than {limits.max_members} members can take"
        )


def _check_zip_member(info: zipfile.ZipInfo, limits: ExtractLimits) -> None:
    if _zip_member_is_link(info):
        raise UnsafeArchiveError(f"member {info.filename!r} is a link; links are refused")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"member {info.filename!r} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise UnsafeArchiveError(
            f"member {info.filename!r} uses compression method {info.compress_type}; "
            f"only {' and '.join(_ZIP_METHODS.values())} are accepted"
        )
    if info.file_size > limits.max_file_bytes:
        raise UnsafeArchiveError(
            f"member {info.filename!r} is {info.file_size} bytes, over the {limits.max_file_bytes}-byte limit"
        )


def _safe_extract_zip(archive: Path, dest: Path, limits: ExtractLimits) -> list[str]:
    """The zip side of ``safe_extract``: the same checks (names, links, sizes, layout, limits), all made
    on the central directory before a byte is written."""
    layout = _Layout(limits)
    with _unpacking(archive, dest, "zip") as written:
        root = dest.resolve()
        _check_zip_directory(archive, limits)
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if len(members) > limits.max_members:
                raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
            names = [_member_relative_path(m.filename, limits) for m in members]
            for info, relative in zip(members, names, strict=True):
                _check_zip_member(info, limits)
                if not relative:
                    continue
                _inside(root, relative, info.filename)
                if info.is_dir():
                    layout.add_folder(info.filename, relative)
                else:
                    layout.add_file(info.filename, relative, info.file_size)
            for info, relative in zip(members, names, strict=True):
                if not relative:
                    continue
                target = root / relative
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "xb") as out:
                    _, size = _copy_hashing(source, out, info.file_size, UnsafeArchiveError)
                if size != info.file_size:
                    raise UnsafeArchiveError(f"member {info.filename!r} is truncated")
                written.append(relative)
    return written
