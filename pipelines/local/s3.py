"""Local S3 for the control plane: a folder per bucket under ``ROOT/s3/``, behind boto3's ``s3`` names.

``LocalS3Client`` adds the writes, listing and buckets to the car's reader (``edge/local_readers.py``),
in the same layout (``edge/workspace.py``). It answers with boto3's shapes and fails as AWS does, so code
written against boto3 runs unchanged against it (docs/contracts.md section 6).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.atomic_files import IN_PROGRESS_PREFIX, atomic_copy_file
from edge.aws_errors import check_params, client_error, param_validation_error, response_metadata
from edge.local_readers import ACCOUNT_ID, LocalS3Reader, Paginator, decode_token, encode_token, etag
from edge.s3_uri import split_s3_uri
from edge.workspace import is_bucket_name, local_key_problem, write_object


class LocalS3Client(LocalS3Reader):
    """boto3's ``s3`` client over a folder: ``s3://bucket/key`` is ``ROOT/s3/bucket/key``."""

    def writable_path(self, bucket: str, key: str, operation: str) -> Path:
        """The file a write of ``s3://bucket/key`` goes to (``WorkspaceLayout.writable_path``)."""
        return self.layout.writable_path(bucket, key, operation)

    def uri_to_path(self, uri: str) -> Path:
        """Where an ``s3://`` URI (an object, or a prefix: ``s3://bucket/``, ``s3://bucket/a/``) lives on
        disk, for code that reads local objects directly; never a path outside the bucket's folder.

        Raises ``ParamValidationError`` (a ValueError) for a bucket name or key local S3 cannot hold.
        """
        bucket, key = split_s3_uri(uri)
        return self.layout.prefix_path(bucket, key)

    # -- buckets
    def create_bucket(self, *, Bucket: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803 (boto3 names)
        check_params(kwargs, allowed=("CreateBucketConfiguration", "ACL", "ObjectOwnership"))
        self.layout.bucket_dir(Bucket, "CreateBucket", must_exist=False).mkdir(parents=True, exist_ok=True)
        return {"Location": f"/{Bucket}", "ResponseMetadata": response_metadata()}

    def head_bucket(self, *, Bucket: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("ExpectedBucketOwner",))
        if not self.layout.bucket_dir(Bucket, "HeadBucket", must_exist=False).is_dir():
            raise client_error("404", "Not Found", "HeadBucket")
        return {"BucketRegion": self.region, "ResponseMetadata": response_metadata()}

    def list_buckets(self, **kwargs: Any) -> dict[str, Any]:
        check_params(kwargs)
        buckets = (
            sorted(p for p in self.base.iterdir() if p.is_dir() and is_bucket_name(p.name))
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
        if isinstance(Body, str):
            data = Body.encode()
        elif isinstance(Body, bytes | bytearray | memoryview):
            data = bytes(Body)
        elif hasattr(Body, "read"):
            data = Body.read()
            data = data.encode() if isinstance(data, str) else data
        else:
            raise param_validation_error(f"Invalid type for parameter Body, value: {type(Body).__name__}")
        return {"ETag": write_object(self.layout, Bucket, Key, data), "ResponseMetadata": response_metadata()}

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
        atomic_copy_file(source, destination, tmp_dir=self.layout.s3_tmp)
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
        atomic_copy_file(source, destination, tmp_dir=self.layout.s3_tmp)
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
        after = decode_token(token, "ListObjectsV2") if token else kwargs.get("StartAfter", "")
        bucket_dir = self.layout.bucket_dir(Bucket, "ListObjectsV2")

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
                "ETag": etag(path),
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
            response["NextContinuationToken"] = encode_token(page[-1][0])
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
