"""The local workspace on disk, in one place: where local S3 objects and the Model Registry live.

Both the car's read-only clients (``edge/local_readers.py``) and the control plane's writing clients
(``pipelines/local/s3.py``, ``pipelines/local/registry.py``) find files through ``WorkspaceLayout``::

    ROOT/s3/<bucket>/<key>                        an object (key segments are folders)
    ROOT/s3/.tmp/                                 files being written (not a valid bucket name: never listed)
    ROOT/registry/groups/<group>.json             a model package group
    ROOT/registry/packages/<group>/<NNNNNN>.json  a version, the describe shape with ISO times
    ROOT/registry/.lock                           held by every registry write

``write_object`` is the one way to put an object into the layout (local S3's PutObject and the car's
``robocar-edge upload --local`` both use it). Standard library only: this module runs on the car.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from edge.artifacts import NAME_MAX_BYTES
from edge.atomic_files import IN_PROGRESS_PREFIX, atomic_write_bytes
from edge.aws_errors import NoSuchBucket, S3PathError, client_error

S3_FOLDER = "s3"
S3_TMP_FOLDER = ".tmp"
REGISTRY_FOLDER = "registry"
PACKAGE_FILE_DIGITS = 6  # 000001.json: names sort as versions do, up to a million versions a group
# Bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# S3 keys are flat strings: S3 keeps "a/../b", "./a", "a//b" and "/a" as keys of their own, unrelated to
# "b", "a" or "a/b" ("The Amazon S3 data model is a flat structure",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html). A folder cannot hold them as
# they are: "." and empty segments would alias other keys, ".." would name a parent folder, up and out of
# the bucket. The local client refuses such keys (docs/local-mode-safety.md) rather than renaming them,
# so a key never means two things; NUL (no file name can hold it) and over-long segments likewise.
S3_KEYS_DOC = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html"


def key_path_problem(key: object, *, prefix: bool = False) -> str | None:
    """Why ``key`` cannot be read as a path (segments joined by '/'), or None when it can.

    The part of the rule that holds on AWS too, where keys double as paths (the pipeline's prefix, a
    car's download folder): no empty, '.' or '..' segment, no leading '/', no NUL, UTF-8 text.
    ``prefix`` accepts what names a folder too: the empty key (the bucket) and one trailing slash.
    """
    if not isinstance(key, str):
        return f"it is a {type(key).__name__}, not a string"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not UTF-8 text (S3 keys are UTF-8)"
    if "\x00" in key:
        return "it contains a NUL character, which no file name can hold"
    body = key[:-1] if prefix and key.endswith("/") else key
    if not body:
        return None if prefix else "it is empty"
    if body.endswith("/"):
        return "it ends with '/' (a folder marker): a local folder cannot also be a file"
    for segment in body.split("/"):
        if segment == "":
            return "it has an empty segment (a leading '/' or '//')"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment, which a folder would read as a path, not a name"
    return None


def local_key_problem(key: object, *, prefix: bool = False) -> str | None:
    """Why ``key`` cannot name a file under a local bucket folder, or None when it can:
    ``key_path_problem``, plus what only a folder limits (a file name's length, local S3's own names)."""
    problem = key_path_problem(key, prefix=prefix)
    if problem or not isinstance(key, str):
        return problem
    for segment in key.split("/"):
        if len(segment.encode()) > NAME_MAX_BYTES:
            return f"a segment is longer than {NAME_MAX_BYTES} bytes, the longest file name a folder holds"
        if segment.startswith(IN_PROGRESS_PREFIX):
            return f"a segment starts with {IN_PROGRESS_PREFIX!r}, kept for files being written locally"
    return None


def _key_refused(key: object, problem: str) -> Exception:
    return S3PathError(
        report=f"Key {key!r} cannot be kept in local S3: {problem}. S3 stores such a key as it is "
        f"({S3_KEYS_DOC}); a folder cannot, so local mode refuses it"
    )


def _inside(directory: Path, path: Path, key: str) -> Path:
    """``path`` if it stays inside ``directory`` once symbolic links are followed (a link planted in a
    bucket's folder must not lead an S3 key outside it); else the refusal."""
    if path.resolve().is_relative_to(directory.resolve()):
        return path
    raise _key_refused(key, f"its local path {path} leads outside the bucket's folder (a symbolic link)")


def is_bucket_name(name: object) -> bool:
    return isinstance(name, str) and bool(BUCKET_NAME_RE.match(name)) and ".." not in name


@dataclass(frozen=True)
class WorkspaceLayout:
    """The paths of one workspace ``root``; every local client resolves S3 keys and registry names here."""

    root: Path

    @property
    def s3(self) -> Path:
        return self.root / S3_FOLDER

    @property
    def s3_tmp(self) -> Path:
        return self.s3 / S3_TMP_FOLDER

    def bucket_dir(self, bucket: str, operation: str, *, must_exist: bool = True) -> Path:
        """A bucket's folder; S3PathError for a name S3 refuses, NoSuchBucket when it must exist."""
        if not is_bucket_name(bucket):
            raise S3PathError(report=f'Invalid bucket name "{bucket}"')
        directory = self.s3 / bucket
        if must_exist and not directory.is_dir():
            raise client_error(
                "NoSuchBucket",
                f"The specified bucket does not exist: {bucket} (local folder {directory}; create it with "
                "create_bucket)",
                operation,
                cls=NoSuchBucket,
            )
        return directory

    def object_path(self, bucket: str, key: str, operation: str) -> Path:
        """The file that holds ``s3://bucket/key`` (the bucket must exist); refuses a key a folder cannot
        keep (``local_key_problem``) and a path that leaves the bucket's folder through a symbolic link."""
        directory = self.bucket_dir(bucket, operation)
        problem = local_key_problem(key)
        if problem:
            raise _key_refused(key, problem)
        return _inside(directory, directory.joinpath(*key.split("/")), key)

    def prefix_path(self, bucket: str, key: str) -> Path:
        """Where an object or a prefix (``a/``, or the empty key: the bucket) lives, the bucket existing
        or not; never a path outside the bucket's folder."""
        directory = self.bucket_dir(bucket, "uri_to_path", must_exist=False)
        problem = local_key_problem(key, prefix=True)
        if problem:
            raise _key_refused(key, problem)
        parts = [part for part in key.removesuffix("/").split("/") if part]
        return _inside(directory, directory.joinpath(*parts), key)

    def writable_path(self, bucket: str, key: str, operation: str) -> Path:
        """``object_path`` for a write: S3 may hold both ``a`` and ``a/b``; a folder cannot."""
        path = self.object_path(bucket, key, operation)
        if path.is_dir():
            raise _key_refused(key, f"local S3 keeps keys under {key + '/'!r} in a folder of that name")
        bucket_dir = self.s3 / bucket
        for parent in path.parents:
            if parent == bucket_dir:
                break
            if parent.is_file():
                taken = parent.relative_to(bucket_dir).as_posix()
                raise _key_refused(key, f"the key {taken!r} is a file where this key needs a folder")
        return path

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FOLDER

    @property
    def registry_lock(self) -> Path:
        return self.registry / ".lock"

    @property
    def groups_dir(self) -> Path:
        return self.registry / "groups"

    def group_file(self, group: str) -> Path:
        return self.groups_dir / f"{group}.json"

    def package_dir(self, group: str) -> Path:
        return self.registry / "packages" / group

    def package_file(self, group: str, version: int) -> Path:
        return self.package_dir(group) / f"{version:0{PACKAGE_FILE_DIGITS}d}.json"


def write_object(
    layout: WorkspaceLayout, bucket: str, key: str, data: bytes, operation: str = "PutObject"
) -> str:
    """Put ``data`` at ``s3://bucket/key`` of the workspace atomically (the bucket must exist); the
    object's ETag (its MD5 in quotes, as S3 gives for a single-part upload)."""
    path = layout.writable_path(bucket, key, operation)
    atomic_write_bytes(path, data, tmp_dir=layout.s3_tmp)
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
