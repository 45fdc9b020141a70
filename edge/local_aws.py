"""Local AWS: an S3 that is a folder and a SageMaker Model Registry on disk, behind boto3's method names.

``LocalS3Client`` maps ``s3://bucket/key`` to ``ROOT/s3/bucket/key``; ``LocalSageMakerClient`` keeps model
package groups and versions under ``ROOT/registry/``. Both answer with the shapes boto3 returns (datetimes
for times, ``ResponseMetadata``) and fail like AWS does (``ClientError`` with the same error codes), so code
written against boto3 runs unchanged against them (docs/contracts.md section 6).

Standard library only: this module runs on the car. ``botocore`` is used for the exception classes when it
is importable, so ``except botocore.exceptions.ClientError`` works either way.

Nothing is ever half-written: every file goes to a temporary name first and is renamed into place, and
registry changes happen under an exclusive file lock, so two processes never hand out the same version.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

try:  # the device may have no fcntl (Windows); locking then degrades to a no-op
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

ACCOUNT_ID = "123456789012"  # a placeholder account: local resources never belong to a real one
DEFAULT_REGION = "us-east-1"
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
DEFAULT_MAX_RESULTS = 100
_GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TMP_DIR = ".tmp"
FILE_MODE = 0o644  # under ROOT/s3; not a valid bucket name, so never listed


# ---------------------------------------------------------------- errors (botocore's when available)
class LocalClientError(Exception):
    """Stand-in for ``botocore.exceptions.ClientError`` where botocore is not installed (same attributes)."""

    def __init__(self, error_response: dict[str, Any], operation_name: str) -> None:
        err = error_response.get("Error", {})
        super().__init__(
            f"An error occurred ({err.get('Code')}) when calling the {operation_name} operation: "
            f"{err.get('Message')}"
        )
        self.response = error_response
        self.operation_name = operation_name


class LocalParamValidationError(ValueError):
    """Stand-in for ``botocore.exceptions.ParamValidationError``."""

    def __init__(self, report: str) -> None:
        super().__init__(f"Parameter validation failed:\n{report}")
        self.kwargs = {"report": report}


def _client_error_base() -> type[Exception]:
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return LocalClientError
    return ClientError


def _param_validation_error(report: str) -> Exception:
    try:
        from botocore.exceptions import ParamValidationError
    except ImportError:
        return LocalParamValidationError(report)
    return ParamValidationError(report=report)


def _s3_path_error_class() -> type[Exception]:
    """A bucket or key local S3 cannot hold is refused with botocore's ParamValidationError (what callers
    of S3 catch; not a ValueError in botocore) that is also a ValueError (what local-mode code and the
    CLI treat as bad input), reading as its one-line report."""
    try:
        from botocore.exceptions import ParamValidationError
    except ImportError:
        bases: tuple[type, ...] = (LocalParamValidationError,)
    else:
        bases = (ParamValidationError, ValueError)
    return type("S3PathError", bases, {"__module__": __name__, "__str__": lambda self: self.kwargs["report"]})


ClientError = _client_error_base()
S3PathError = _s3_path_error_class()  # a bucket or key local S3 cannot hold: see local_key_problem
# Modelled exceptions are subclasses of ClientError, exactly as boto3's ``client.exceptions.X``.
NoSuchKey = type("NoSuchKey", (ClientError,), {})
NoSuchBucket = type("NoSuchBucket", (ClientError,), {})
ResourceNotFound = type("ResourceNotFound", (ClientError,), {})
_STATUS = {"ValidationException": 400, "NoSuchKey": 404, "NoSuchBucket": 404, "404": 404}


def client_error(
    code: str, message: str, operation: str, *, cls: type[Exception] | None = None, status: int | None = None
) -> Exception:
    """A ClientError shaped like botocore's (``e.response["Error"]["Code"]``)."""
    http_status = status or _STATUS.get(code, 400)
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": http_status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    return (cls or ClientError)(response, operation)


def response_metadata(status: int = 200) -> dict[str, Any]:
    return {"RequestId": uuid.uuid4().hex, "HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0}


def check_params(
    given: dict[str, Any], *, required: tuple[str, ...] = (), allowed: tuple[str, ...] = ()
) -> None:
    """Reject missing and unknown parameters the way botocore does, before anything is touched."""
    problems = [f'Missing required parameter in input: "{name}"' for name in required if name not in given]
    known = set(required) | set(allowed)
    problems += [
        f'Unknown parameter in input: "{name}", must be one of: {", ".join(sorted(known))}'
        for name in given
        if name not in known
    ]
    if problems:
        raise _param_validation_error("\n".join(problems))


# ---------------------------------------------------------------- atomic files and locks
IN_PROGRESS_PREFIX = ".tmp-"  # files being written: never listed as objects, never a key segment


def in_progress_prefix() -> str:
    """``.tmp-<pid>-``: the name of a file being written tells whose it is, so a later run can remove
    what a killed writer left (``pipelines/local/executor.py``) and keep what a live one is writing."""
    return f"{IN_PROGRESS_PREFIX}{os.getpid()}-"


def atomic_write_bytes(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = tmp_dir or path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=in_progress_prefix(), suffix=".part")
    os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would make local S3 objects private to this user
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_copy_file(source: Path, destination: Path, *, tmp_dir: Path | None = None) -> None:
    """Copy a file into place through a temporary name (same filesystem as the destination)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    directory = tmp_dir or destination.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=in_progress_prefix(), suffix=".part")
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, document: Any) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode())


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


def resolve_region(region: str | None = None) -> str:
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    return value.isoformat()


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------- S3
# S3 keys are flat strings: S3 keeps "a/../b", "./a", "a//b" and "/a" as keys of their own, unrelated to
# "b", "a" or "a/b" ("The Amazon S3 data model is a flat structure",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html). A folder cannot hold them as
# they are: "." and empty segments would alias other keys, ".." would name a parent folder, up and out of
# the bucket. The local client refuses such keys (docs/local-mode-safety.md) rather than renaming them,
# so a key never means two things; NUL (no file name can hold it) and over-long segments likewise.
S3_KEYS_DOC = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html"
NAME_MAX_BYTES = 255  # the longest file name ext4, XFS, tmpfs and APFS store (NAME_MAX)


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


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; a clear ValueError for anything else."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in S3 URI: {uri!r}")
    return bucket, key


class StreamingBody:
    """The part of botocore's StreamingBody that callers use: read, iter_chunks, close, context manager."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def read(self, amt: int | None = None) -> bytes:
        data = self._handle.read() if amt is None else self._handle.read(amt)
        if amt is None or not data:
            self.close()
        return data

    def iter_chunks(self, chunk_size: int = 1024) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> StreamingBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Paginator:
    """``client.get_paginator(name).paginate(**kwargs)`` for the list calls the clients implement."""

    def __init__(self, method: Callable[..., dict[str, Any]], token_in: str, token_out: str) -> None:
        self._method, self._token_in, self._token_out = method, token_in, token_out

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        kwargs.pop("PaginationConfig", None)
        while True:
            page = self._method(**kwargs)
            yield page
            token = page.get(self._token_out)
            if not token:
                return
            kwargs[self._token_in] = token


_ETAGS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> ETag: listing polls stay cheap


def _etag(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _ETAGS:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _ETAGS[key] = f'"{digest.hexdigest()}"'
    return _ETAGS[key]


def _inside(directory: Path, path: Path, key: str) -> Path:
    """``path`` if it stays inside ``directory`` once symbolic links are followed (a link planted in a
    bucket's folder must not lead an S3 key outside it); else the refusal."""
    if path.resolve().is_relative_to(directory.resolve()):
        return path
    raise _key_refused(key, f"its local path {path} leads outside the bucket's folder (a symbolic link)")


class LocalS3Client:
    """boto3's ``s3`` client over a folder: ``s3://bucket/key`` is ``ROOT/s3/bucket/key``."""

    def __init__(self, root: str | os.PathLike[str], region: str | None = None) -> None:
        self.root = Path(root)
        self.base = self.root / "s3"
        self.region = resolve_region(region)
        self.meta = SimpleNamespace(region_name=self.region, endpoint_url=None)  # as boto3's client.meta
        self.exceptions = SimpleNamespace(
            ClientError=ClientError, NoSuchKey=NoSuchKey, NoSuchBucket=NoSuchBucket
        )

    # -- paths
    def _bucket_dir(self, bucket: str, operation: str, *, must_exist: bool = True) -> Path:
        if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise S3PathError(report=f'Invalid bucket name "{bucket}"')
        directory = self.base / bucket
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
        directory = self._bucket_dir(bucket, operation)
        problem = local_key_problem(key)
        if problem:
            raise _key_refused(key, problem)
        return _inside(directory, directory.joinpath(*key.split("/")), key)

    def writable_path(self, bucket: str, key: str, operation: str) -> Path:
        """``object_path`` for a write: S3 may hold both ``a`` and ``a/b``; a folder cannot."""
        path = self.object_path(bucket, key, operation)
        if path.is_dir():
            raise _key_refused(key, f"local S3 keeps keys under {key + '/'!r} in a folder of that name")
        bucket_dir = self.base / bucket
        for parent in path.parents:
            if parent == bucket_dir:
                break
            if parent.is_file():
                taken = parent.relative_to(bucket_dir).as_posix()
                raise _key_refused(key, f"the key {taken!r} is a file where this key needs a folder")
        return path

    def _existing(self, bucket: str, key: str, operation: str, *, head: bool = False) -> Path:
        path = self.object_path(bucket, key, operation)
        if not path.is_file():
            if head:  # HEAD has no body, so S3 answers with the bare status code
                raise client_error("404", "Not Found", operation)
            raise client_error("NoSuchKey", "The specified key does not exist.", operation, cls=NoSuchKey)
        return path

    def _tmp(self) -> Path:
        return self.base / _TMP_DIR

    def _describe(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        return {
            "ContentLength": stat.st_size,
            "ETag": _etag(path),
            "LastModified": datetime.fromtimestamp(stat.st_mtime, UTC),
            "ContentType": "binary/octet-stream",
        }

    def uri_to_path(self, uri: str) -> Path:
        """Where an ``s3://`` URI (an object, or a prefix: ``s3://bucket/``, ``s3://bucket/a/``) lives on
        disk, for code that reads local objects directly; never a path outside the bucket's folder.

        Raises ``ParamValidationError`` (a ValueError) for a bucket name or key local S3 cannot hold.
        """
        bucket, key = split_s3_uri(uri)
        directory = self._bucket_dir(bucket, "uri_to_path", must_exist=False)
        problem = local_key_problem(key, prefix=True)
        if problem:
            raise _key_refused(key, problem)
        parts = [part for part in key.removesuffix("/").split("/") if part]
        return _inside(directory, directory.joinpath(*parts), key)

    # -- buckets
    def create_bucket(self, *, Bucket: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803 (boto3 names)
        check_params(kwargs, allowed=("CreateBucketConfiguration", "ACL", "ObjectOwnership"))
        self._bucket_dir(Bucket, "CreateBucket", must_exist=False).mkdir(parents=True, exist_ok=True)
        return {"Location": f"/{Bucket}", "ResponseMetadata": response_metadata()}

    def head_bucket(self, *, Bucket: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("ExpectedBucketOwner",))
        if not self._bucket_dir(Bucket, "HeadBucket", must_exist=False).is_dir():
            raise client_error("404", "Not Found", "HeadBucket")
        return {"BucketRegion": self.region, "ResponseMetadata": response_metadata()}

    def list_buckets(self, **kwargs: Any) -> dict[str, Any]:
        check_params(kwargs)
        buckets = (
            sorted(p for p in self.base.iterdir() if p.is_dir() and _BUCKET_RE.match(p.name))
            if self.base.is_dir()
            else []
        )
        return {
            "Buckets": [
                {"Name": p.name, "CreationDate": datetime.fromtimestamp(p.stat().st_mtime, UTC)}
                for p in buckets
            ],
            "Owner": {"ID": ACCOUNT_ID},
            "ResponseMetadata": response_metadata(),
        }

    # -- objects
    def put_object(self, *, Bucket: str, Key: str, Body: Any = b"", **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("ContentType", "Metadata", "ContentMD5", "ServerSideEncryption", "ACL"))
        path = self.writable_path(Bucket, Key, "PutObject")
        if isinstance(Body, str):
            data = Body.encode()
        elif isinstance(Body, bytes | bytearray | memoryview):
            data = bytes(Body)
        elif hasattr(Body, "read"):
            data = Body.read()
            data = data.encode() if isinstance(data, str) else data
        else:
            raise _param_validation_error(f"Invalid type for parameter Body, value: {type(Body).__name__}")
        atomic_write_bytes(path, data, tmp_dir=self._tmp())
        etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        return {"ETag": etag, "ResponseMetadata": response_metadata()}

    def get_object(self, *, Bucket: str, Key: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("Range", "IfMatch", "VersionId"))
        path = self._existing(Bucket, Key, "GetObject")
        described = self._describe(path)
        handle = open(path, "rb")  # noqa: SIM115 (closed by the body, like a network stream)
        if kwargs.get("Range"):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", kwargs["Range"])
            if not match:
                handle.close()
                raise client_error("InvalidRange", "The requested range is not satisfiable", "GetObject")
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else described["ContentLength"] - 1
            handle.seek(start)
            from io import BytesIO

            data = handle.read(max(0, end - start + 1))
            handle.close()
            described["ContentLength"] = len(data)
            return {
                **described,
                "Body": StreamingBody(BytesIO(data)),
                "ResponseMetadata": response_metadata(206),
            }
        return {**described, "Body": StreamingBody(handle), "ResponseMetadata": response_metadata()}

    def head_object(self, *, Bucket: str, Key: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("IfMatch", "VersionId"))
        path = self._existing(Bucket, Key, "HeadObject", head=True)
        return {**self._describe(path), "ResponseMetadata": response_metadata()}

    def delete_object(self, *, Bucket: str, Key: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("VersionId",))
        path = self.object_path(Bucket, Key, "DeleteObject")
        with contextlib.suppress(FileNotFoundError):  # S3 deletes of missing keys succeed
            path.unlink()
        self._prune_empty_dirs(path.parent, self.base / Bucket)
        return {"ResponseMetadata": response_metadata(204)}

    def copy_object(self, *, Bucket: str, Key: str, CopySource: Any, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("MetadataDirective", "ContentType"))
        if isinstance(CopySource, str):
            src_bucket, _, src_key = CopySource.lstrip("/").partition("/")
        else:
            src_bucket, src_key = CopySource["Bucket"], CopySource["Key"]
        source = self._existing(src_bucket, src_key, "CopyObject")
        destination = self.writable_path(Bucket, Key, "CopyObject")
        atomic_copy_file(source, destination, tmp_dir=self._tmp())
        described = self._describe(destination)
        return {
            "CopyObjectResult": {"ETag": described["ETag"], "LastModified": described["LastModified"]},
            "ResponseMetadata": response_metadata(),
        }

    def upload_file(
        self,
        Filename: str | os.PathLike[str],  # noqa: N803
        Bucket: str,  # noqa: N803
        Key: str,  # noqa: N803
        ExtraArgs: dict[str, Any] | None = None,  # noqa: N803
        Callback: Callable[[int], None] | None = None,  # noqa: N803
        Config: Any = None,  # noqa: N803
    ) -> None:
        source = Path(Filename)
        if not source.is_file():
            raise FileNotFoundError(f"upload_file: no such file {source}")
        destination = self.writable_path(Bucket, Key, "PutObject")
        atomic_copy_file(source, destination, tmp_dir=self._tmp())
        if Callback is not None:
            Callback(source.stat().st_size)

    def download_file(
        self,
        Bucket: str,  # noqa: N803
        Key: str,  # noqa: N803
        Filename: str | os.PathLike[str],  # noqa: N803
        ExtraArgs: dict[str, Any] | None = None,  # noqa: N803
        Callback: Callable[[int], None] | None = None,  # noqa: N803
        Config: Any = None,  # noqa: N803
    ) -> None:
        # boto3's transfer manager starts with a HEAD, so a missing key is a ClientError with code "404".
        source = self._existing(Bucket, Key, "HeadObject", head=True)
        atomic_copy_file(source, Path(Filename))
        if Callback is not None:
            Callback(source.stat().st_size)

    def list_objects_v2(self, *, Bucket: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(
            kwargs,
            allowed=("Prefix", "Delimiter", "MaxKeys", "ContinuationToken", "StartAfter", "EncodingType"),
        )
        prefix: str = kwargs.get("Prefix", "") or ""
        delimiter: str | None = kwargs.get("Delimiter") or None
        max_keys = int(kwargs.get("MaxKeys", 1000))
        token = kwargs.get("ContinuationToken")
        after = _decode_token(token, "ListObjectsV2") if token else kwargs.get("StartAfter", "")
        bucket_dir = self._bucket_dir(Bucket, "ListObjectsV2")

        entries: list[tuple[str, Path | None]] = []  # (key or common prefix, file or None for a prefix)
        seen_prefixes: set[str] = set()
        for key, path in self._walk(bucket_dir, prefix):
            if delimiter and delimiter in key[len(prefix) :]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                if common not in seen_prefixes:
                    seen_prefixes.add(common)
                    entries.append((common, None))
            else:
                entries.append((key, path))
        entries.sort(key=lambda e: e[0].encode())  # S3 lists in UTF-8 binary order
        entries = [e for e in entries if e[0].encode() > after.encode()] if after else entries
        page, truncated = entries[:max_keys], len(entries) > max_keys

        response: dict[str, Any] = {
            "IsTruncated": truncated,
            "Name": Bucket,
            "Prefix": prefix,
            "MaxKeys": max_keys,
            "KeyCount": len(page),
            "ResponseMetadata": response_metadata(),
        }
        contents = [
            {
                "Key": key,
                "LastModified": datetime.fromtimestamp(path.stat().st_mtime, UTC),
                "ETag": _etag(path),
                "Size": path.stat().st_size,
                "StorageClass": "STANDARD",
            }
            for key, path in page
            if path is not None
        ]
        if contents:  # boto3 omits the key when nothing matched
            response["Contents"] = contents
        if delimiter:
            response["Delimiter"] = delimiter
            prefixes = [{"Prefix": key} for key, path in page if path is None]
            if prefixes:
                response["CommonPrefixes"] = prefixes
        if token:
            response["ContinuationToken"] = token
        if truncated:
            response["NextContinuationToken"] = _encode_token(page[-1][0])
        return response

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name != "list_objects_v2":
            raise NotImplementedError(f"local S3 has no paginator for {operation_name}")
        return Paginator(self.list_objects_v2, "ContinuationToken", "NextContinuationToken")

    # -- helpers
    @staticmethod
    def _walk(bucket_dir: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        """Each (key, file) in the bucket under ``prefix``, walking only the prefix's folder.

        A prefix is a filter, not a key: S3 lists nothing for ``a/../`` unless keys start with it, and
        local S3 holds no such key (``local_key_problem``), so such a prefix lists nothing here either,
        never the parent folder. Files reached through a symbolic link out of the bucket are no objects.
        """
        folder = prefix.rpartition("/")[0]
        if folder and local_key_problem(folder):
            return
        start = bucket_dir.joinpath(*folder.split("/")) if folder else bucket_dir
        inside = bucket_dir.resolve()
        if not start.is_dir() or not start.resolve().is_relative_to(inside):
            return
        for dirpath, dirnames, filenames in os.walk(start):  # does not follow links to folders
            dirnames[:] = [d for d in dirnames if not d.startswith(IN_PROGRESS_PREFIX)]
            for name in filenames:
                if name.startswith(IN_PROGRESS_PREFIX):
                    continue
                path = Path(dirpath, name)
                if path.is_symlink() and not path.resolve().is_relative_to(inside):
                    continue
                key = path.relative_to(bucket_dir).as_posix()
                if key.startswith(prefix):
                    yield key, path

    @staticmethod
    def _prune_empty_dirs(directory: Path, stop: Path) -> None:
        while directory != stop and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent


def _encode_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def _decode_token(token: str, operation: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise client_error(
            "InvalidArgument", "The continuation token provided is incorrect", operation
        ) from None


# ---------------------------------------------------------------- SageMaker Model Registry
_GROUP_CREATE_PARAMS = ("ModelPackageGroupDescription", "Tags")
_PACKAGE_CREATE_PARAMS = (
    "ModelPackageGroupName",
    "ModelPackageName",
    "ModelPackageDescription",
    "InferenceSpecification",
    "ValidationSpecification",
    "SourceAlgorithmSpecification",
    "CertifyForMarketplace",
    "Tags",
    "ModelApprovalStatus",
    "MetadataProperties",
    "ModelMetrics",
    "ClientToken",
    "Domain",
    "Task",
    "SamplePayloadUrl",
    "CustomerMetadataProperties",
    "DriftCheckBaselines",
    "AdditionalInferenceSpecifications",
    "SkipModelValidation",
    "SourceUri",
    "SecurityConfig",
    "ModelCard",
    "ModelLifeCycle",
)
_SUMMARY_FIELDS = (
    "ModelPackageName",
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "ModelPackageDescription",
    "CreationTime",
    "ModelPackageStatus",
    "ModelApprovalStatus",
)
_TIME_FIELDS = ("CreationTime", "LastModifiedTime")


def _validation(message: str, operation: str) -> Exception:
    return client_error("ValidationException", message, operation)


def _from_record(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record -> the boto3 shape (ISO strings back to datetimes)."""
    out = json.loads(json.dumps(record))  # a deep copy callers may mutate
    for field in _TIME_FIELDS:
        if field in out:
            out[field] = from_iso(out[field])
    return out


def page_items(
    items: list[dict[str, Any]], kwargs: dict[str, Any], operation: str
) -> tuple[list, str | None]:
    max_results = kwargs.get("MaxResults", DEFAULT_MAX_RESULTS)
    if not isinstance(max_results, int) or not 1 <= max_results <= 100:
        raise _validation(
            f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
            "constraint: Member must have value between 1 and 100",
            operation,
        )
    start = 0
    if kwargs.get("NextToken"):
        try:
            start = int(_decode_token(kwargs["NextToken"], operation))
        except ValueError:
            raise _validation("Invalid pagination token", operation) from None
    end = start + max_results
    return items[start:end], (_encode_token(str(end)) if end < len(items) else None)


def _sort(items: list[dict[str, Any]], kwargs: dict[str, Any], name_field: str, operation: str) -> list:
    sort_by = kwargs.get("SortBy", "CreationTime")
    sort_order = kwargs.get("SortOrder", "Ascending")
    if sort_by not in ("Name", "CreationTime"):
        raise _validation(
            f"1 validation error detected: Value '{sort_by}' at 'sortBy' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Name, CreationTime]",
            operation,
        )
    if sort_order not in ("Ascending", "Descending"):
        raise _validation(
            f"1 validation error detected: Value '{sort_order}' at 'sortOrder' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Ascending, Descending]",
            operation,
        )
    # Versions created in the same microsecond still sort in creation order.
    if sort_by == "Name":

        def key(item: dict[str, Any]) -> tuple:
            return (item[name_field], item.get("ModelPackageVersion", 0))
    else:

        def key(item: dict[str, Any]) -> tuple:
            return (item["CreationTime"], item.get("ModelPackageVersion", 0))

    return sorted(items, key=key, reverse=sort_order == "Descending")


def _time_filter(items: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    after, before = kwargs.get("CreationTimeAfter"), kwargs.get("CreationTimeBefore")
    if after is not None:
        items = [i for i in items if i["CreationTime"] > after]
    if before is not None:
        items = [i for i in items if i["CreationTime"] < before]
    return items


class LocalSageMakerClient:
    """boto3's ``sagemaker`` client, Model Registry part, persisted under ``ROOT/registry/``.

    Layout: ``groups/<group>.json`` and ``packages/<group>/<version>.json`` (one JSON document per
    version, the describe shape with ISO times). Writes take ``registry/.lock``.
    """

    def __init__(self, root: str | os.PathLike[str], region: str | None = None) -> None:
        self.root = Path(root)
        self.region = resolve_region(region)
        self.meta = SimpleNamespace(region_name=self.region, endpoint_url=None)
        self.registry = self.root / "registry"
        self.exceptions = SimpleNamespace(ClientError=ClientError, ResourceNotFound=ResourceNotFound)

    # -- ARNs and paths
    def arn(self, resource: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:{resource}"

    def _group_arn(self, group: str) -> str:
        return self.arn(f"model-package-group/{group.lower()}")  # AWS lower-cases names in SageMaker ARNs

    def _package_arn(self, group: str, version: int) -> str:
        return self.arn(f"model-package/{group.lower()}/{version}")

    def _group_file(self, group: str) -> Path:
        return self.registry / "groups" / f"{group}.json"

    def _package_dir(self, group: str) -> Path:
        return self.registry / "packages" / group

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.registry / ".lock")

    def _groups(self) -> list[dict[str, Any]]:
        folder = self.registry / "groups"
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def _find_group(self, name_or_arn: str) -> dict[str, Any] | None:
        """Group names are unique ignoring case (their ARNs are lower-cased); ARNs are accepted too."""
        name = name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
        exact = self._group_file(name)
        if exact.is_file():
            return json.loads(exact.read_text())
        return next((g for g in self._groups() if g["ModelPackageGroupName"].lower() == name.lower()), None)

    def _packages(self, group: str) -> list[dict[str, Any]]:
        folder = self._package_dir(group)
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in folder.glob("*.json")]

    def _find_package(self, arn: str, operation: str) -> tuple[dict[str, Any], Path]:
        match = re.fullmatch(r"arn:aws:sagemaker:[^:]+:\d{12}:model-package/([^/]+)/(\d+)", arn or "")
        group = self._find_group(match.group(1)) if match else None
        path = (
            self._package_dir(group["ModelPackageGroupName"]) / f"{int(match.group(2)):06d}.json"
            if group
            else None
        )
        if path is None or not path.is_file():
            raise _validation(f"ModelPackage {arn} does not exist.", operation)
        return json.loads(path.read_text()), path

    # -- groups
    def create_model_package_group(self, *, ModelPackageGroupName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=_GROUP_CREATE_PARAMS)
        name = ModelPackageGroupName
        if not isinstance(name, str) or not _GROUP_NAME_RE.match(name):
            raise _validation(
                f"1 validation error detected: Value '{name}' at 'modelPackageGroupName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                f"{_GROUP_NAME_RE.pattern}",
                "CreateModelPackageGroup",
            )
        with self._lock():
            if self._find_group(name) is not None:
                raise _validation(
                    f"Model Package Group already exists: {self._group_arn(name)}", "CreateModelPackageGroup"
                )
            record: dict[str, Any] = {
                "ModelPackageGroupName": name,
                "ModelPackageGroupArn": self._group_arn(name),
                "CreationTime": to_iso(now_utc()),
                "CreatedBy": {},
                "ModelPackageGroupStatus": "Completed",
            }
            if kwargs.get("ModelPackageGroupDescription") is not None:
                record["ModelPackageGroupDescription"] = kwargs["ModelPackageGroupDescription"]
            if kwargs.get("Tags"):
                record["Tags"] = kwargs["Tags"]
            atomic_write_json(self._group_file(name), record)
        return {
            "ModelPackageGroupArn": record["ModelPackageGroupArn"],
            "ResponseMetadata": response_metadata(),
        }

    def describe_model_package_group(self, *, ModelPackageGroupName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs)
        group = self._find_group(ModelPackageGroupName)
        if group is None:
            raise _validation(
                f"ModelPackageGroup {self._group_arn(ModelPackageGroupName)} does not exist.",
                "DescribeModelPackageGroup",
            )
        out = _from_record(group)
        out.pop("Tags", None)  # describe does not return tags (ListTags does)
        return {**out, "ResponseMetadata": response_metadata()}

    def list_model_package_groups(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListModelPackageGroups"
        check_params(
            kwargs,
            allowed=(
                "CreationTimeAfter",
                "CreationTimeBefore",
                "MaxResults",
                "NameContains",
                "NextToken",
                "SortBy",
                "SortOrder",
                "CrossAccountFilterOption",
            ),
        )
        groups = [_from_record(g) for g in self._groups()]
        if kwargs.get("NameContains"):
            groups = [g for g in groups if kwargs["NameContains"] in g["ModelPackageGroupName"]]
        groups = _sort(_time_filter(groups, kwargs), kwargs, "ModelPackageGroupName", operation)
        page, token = page_items(groups, kwargs, operation)
        fields = (
            "ModelPackageGroupName",
            "ModelPackageGroupArn",
            "ModelPackageGroupDescription",
            "CreationTime",
            "ModelPackageGroupStatus",
        )
        response: dict[str, Any] = {
            "ModelPackageGroupSummaryList": [{k: g[k] for k in fields if k in g} for g in page],
            "ResponseMetadata": response_metadata(),
        }
        if token:
            response["NextToken"] = token
        return response

    # -- packages
    def create_model_package(self, **kwargs: Any) -> dict[str, Any]:
        operation = "CreateModelPackage"
        check_params(kwargs, allowed=_PACKAGE_CREATE_PARAMS)
        group_name = kwargs.get("ModelPackageGroupName")
        if kwargs.get("ModelPackageName") and group_name:
            raise _validation(
                "Both ModelPackageName and ModelPackageGroupName are provided in the input. "
                "Cannot determine which one to use.",
                operation,
            )
        if not group_name:
            raise _validation(
                "The local registry holds versioned model packages only: give ModelPackageGroupName.",
                operation,
            )
        status = kwargs.get("ModelApprovalStatus", "PendingManualApproval")
        _check_approval_status(status, operation)
        _check_inference_specification(kwargs.get("InferenceSpecification"), operation)
        _check_additional_specifications(kwargs.get("AdditionalInferenceSpecifications") or [], [], operation)
        with self._lock():
            group = self._find_group(group_name)
            if group is None:
                raise _validation(
                    f"Model Package Group {self._group_arn(group_name)} does not exist.", operation
                )
            group_name = group["ModelPackageGroupName"]
            existing = self._packages(group_name)
            token = kwargs.get("ClientToken")
            if token:  # idempotent retries, as AWS does for a repeated ClientToken
                for package in existing:
                    if package.get("_ClientToken") == token:
                        return {
                            "ModelPackageArn": package["ModelPackageArn"],
                            "ResponseMetadata": response_metadata(),
                        }
            version = max((p["ModelPackageVersion"] for p in existing), default=0) + 1
            now = to_iso(now_utc())
            record: dict[str, Any] = {
                "ModelPackageGroupName": group_name,
                "ModelPackageVersion": version,
                "ModelPackageArn": self._package_arn(group_name, version),
                "CreationTime": now,
                "LastModifiedTime": now,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "CertifyForMarketplace": bool(kwargs.get("CertifyForMarketplace", False)),
                "ModelApprovalStatus": status,
                "CreatedBy": {},
            }
            skip = {
                "ModelPackageGroupName",
                "ModelApprovalStatus",
                "CertifyForMarketplace",
                "ClientToken",
                "Tags",
            }
            record.update({k: v for k, v in kwargs.items() if k not in skip and v is not None})
            if token:
                record["_ClientToken"] = token
            atomic_write_json(self._package_dir(group_name) / f"{version:06d}.json", record)
        return {"ModelPackageArn": record["ModelPackageArn"], "ResponseMetadata": response_metadata()}

    def describe_model_package(self, *, ModelPackageName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs)
        record, _ = self._find_package(ModelPackageName, "DescribeModelPackage")
        out = _from_record(record)
        out.pop("_ClientToken", None)
        return {**out, "ResponseMetadata": response_metadata()}

    def list_model_packages(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListModelPackages"
        check_params(
            kwargs,
            allowed=(
                "CreationTimeAfter",
                "CreationTimeBefore",
                "MaxResults",
                "NameContains",
                "ModelApprovalStatus",
                "ModelPackageGroupName",
                "ModelPackageType",
                "NextToken",
                "SortBy",
                "SortOrder",
            ),
        )
        if "ModelApprovalStatus" in kwargs:
            _check_approval_status(kwargs["ModelApprovalStatus"], operation)
        group_name = kwargs.get("ModelPackageGroupName")
        if group_name:
            group = self._find_group(group_name)
            records = self._packages(group["ModelPackageGroupName"]) if group else []
        elif kwargs.get("ModelPackageType", "Unversioned") == "Unversioned":
            records = []  # AWS lists unversioned packages by default; the local registry has none
        else:
            records = [p for g in self._groups() for p in self._packages(g["ModelPackageGroupName"])]
        packages = [_from_record(r) for r in records]
        if kwargs.get("ModelApprovalStatus"):
            packages = [p for p in packages if p["ModelApprovalStatus"] == kwargs["ModelApprovalStatus"]]
        if kwargs.get("NameContains"):
            packages = [p for p in packages if kwargs["NameContains"] in p["ModelPackageGroupName"]]
        packages = _sort(_time_filter(packages, kwargs), kwargs, "ModelPackageGroupName", operation)
        page, token = page_items(packages, kwargs, operation)
        response: dict[str, Any] = {
            "ModelPackageSummaryList": [{k: p[k] for k in _SUMMARY_FIELDS if k in p} for p in page],
            "ResponseMetadata": response_metadata(),
        }
        if token:
            response["NextToken"] = token
        return response

    def update_model_package(self, *, ModelPackageArn: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        operation = "UpdateModelPackage"
        check_params(
            kwargs,
            allowed=(
                "ModelApprovalStatus",
                "ApprovalDescription",
                "CustomerMetadataProperties",
                "CustomerMetadataPropertiesToRemove",
                "AdditionalInferenceSpecificationsToAdd",
                "InferenceSpecification",
                "SourceUri",
                "ModelCard",
                "ModelLifeCycle",
                "ClientToken",
            ),
        )
        if "ModelApprovalStatus" in kwargs:
            _check_approval_status(kwargs["ModelApprovalStatus"], operation)
        with self._lock():
            record, path = self._find_package(ModelPackageArn, operation)
            to_add = kwargs.get("AdditionalInferenceSpecificationsToAdd") or []
            _check_additional_specifications(
                to_add, record.get("AdditionalInferenceSpecifications", []), operation
            )
            for field in (
                "ModelApprovalStatus",
                "ApprovalDescription",
                "InferenceSpecification",
                "SourceUri",
            ):
                if kwargs.get(field) is not None:
                    record[field] = kwargs[field]
            # AWS merges metadata: given keys are set, listed keys removed, the rest stay.
            metadata = dict(record.get("CustomerMetadataProperties", {}))
            metadata.update(kwargs.get("CustomerMetadataProperties") or {})
            for removed in kwargs.get("CustomerMetadataPropertiesToRemove") or []:
                metadata.pop(removed, None)
            if metadata or "CustomerMetadataProperties" in record:
                record["CustomerMetadataProperties"] = metadata
            if to_add:
                record["AdditionalInferenceSpecifications"] = [
                    *record.get("AdditionalInferenceSpecifications", []),
                    *to_add,
                ]
            record["LastModifiedTime"] = to_iso(now_utc())
            record["LastModifiedBy"] = {}
            atomic_write_json(path, record)
        return {"ModelPackageArn": record["ModelPackageArn"], "ResponseMetadata": response_metadata()}

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name not in ("list_model_packages", "list_model_package_groups"):
            raise NotImplementedError(f"local SageMaker has no paginator for {operation_name}")
        return Paginator(getattr(self, operation_name), "NextToken", "NextToken")


def _check_approval_status(status: Any, operation: str) -> None:
    if status not in APPROVAL_STATUSES:
        raise _validation(
            f"1 validation error detected: Value '{status}' at 'modelApprovalStatus' failed to satisfy "
            "constraint: Member must satisfy enum value set: [PendingManualApproval, Approved, Rejected]",
            operation,
        )


def _check_inference_specification(spec: Any, operation: str) -> None:
    if spec is None:
        return
    containers = spec.get("Containers") if isinstance(spec, dict) else None
    if not containers or not all(isinstance(c, dict) and c.get("Image") for c in containers):
        raise _validation(
            "InferenceSpecification.Containers must list containers, each with an Image.", operation
        )


def _check_additional_specifications(
    to_add: list[dict[str, Any]], existing: list[dict[str, Any]], operation: str
) -> None:
    names = [s.get("Name") for s in existing]
    for spec in to_add:
        if not isinstance(spec, dict) or not spec.get("Name") or not spec.get("Containers"):
            raise _validation(
                "Each AdditionalInferenceSpecification needs a Name and at least one container.", operation
            )
        if spec["Name"] in names:
            raise _validation(
                f"AdditionalInferenceSpecification name {spec['Name']} is not unique in the model package.",
                operation,
            )
        names.append(spec["Name"])
