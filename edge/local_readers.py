"""The car's read-only local clients: local S3 objects and the local Model Registry, behind boto3's names.

``LocalS3Reader`` reads ``s3://bucket/key`` from a workspace's S3 folder; ``LocalRegistryReader`` lists
and describes model packages from its registry folder (``edge/workspace.py`` has the layout). They
answer with the shapes boto3 returns (datetimes for times, ``ResponseMetadata``) and fail as AWS does
(``ClientError`` with the same error codes), so ``robocar-edge pull/run --local-root`` runs the code it
runs against AWS, with nothing above ``edge/`` installed. Nothing here writes the registry: the control
plane's clients (``pipelines/local/s3.py``, ``pipelines/local/registry.py``) extend these with the writes.

Standard library only: this module runs on the car.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from edge.atomic_files import atomic_copy_file
from edge.aws_errors import (
    ClientError,
    NoSuchBucket,
    NoSuchKey,
    ResourceNotFound,
    check_params,
    client_error,
    response_metadata,
)
from edge.workspace import WorkspaceLayout

ACCOUNT_ID = "123456789012"  # a placeholder account: local resources never belong to a real one
DEFAULT_REGION = "us-east-1"
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
# ListModelPackages' MaxResults defaults to and allows at most 100:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListModelPackages.html
DEFAULT_MAX_RESULTS = 100
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
# The request fields every registry List* call takes (ListModelPackages, ListModelPackageGroups):
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListModelPackageGroups.html
LIST_PARAMS = (
    "CreationTimeAfter",
    "CreationTimeBefore",
    "MaxResults",
    "NameContains",
    "NextToken",
    "SortBy",
    "SortOrder",
)


def resolve_region(region: str | None = None) -> str:
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """How the local clients store a time (read back by ``from_iso``)."""
    return value.isoformat()


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


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


def etag(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _ETAGS:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _ETAGS[key] = f'"{digest.hexdigest()}"'
    return _ETAGS[key]


def encode_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def decode_token(token: str, operation: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise client_error(
            "InvalidArgument", "The continuation token provided is incorrect", operation
        ) from None


class LocalS3Reader:
    """boto3's ``s3`` client, reading part, over a workspace: ``s3://bucket/key`` is ``ROOT/s3/bucket/key``
    (what the car downloads from a local workspace)."""

    def __init__(self, root: str | os.PathLike[str], region: str | None = None) -> None:
        self.root = Path(root)
        self.layout = WorkspaceLayout(self.root)
        self.base = self.layout.s3
        self.region = resolve_region(region)
        self.meta = SimpleNamespace(region_name=self.region, endpoint_url=None)  # as boto3's client.meta
        self.exceptions = SimpleNamespace(
            ClientError=ClientError, NoSuchKey=NoSuchKey, NoSuchBucket=NoSuchBucket
        )

    def object_path(self, bucket: str, key: str, operation: str) -> Path:
        """The file that holds ``s3://bucket/key`` (``WorkspaceLayout.object_path``)."""
        return self.layout.object_path(bucket, key, operation)

    def _existing(self, bucket: str, key: str, operation: str, *, head: bool = False) -> Path:
        path = self.object_path(bucket, key, operation)
        if not path.is_file():
            if head:  # HEAD has no body, so S3 answers with the bare status code
                raise client_error("404", "Not Found", operation)
            raise client_error("NoSuchKey", "The specified key does not exist.", operation, cls=NoSuchKey)
        return path

    def _describe(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        return {
            "ContentLength": stat.st_size,
            "ETag": etag(path),
            "LastModified": datetime.fromtimestamp(stat.st_mtime, UTC),
            "ContentType": "binary/octet-stream",
        }

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


def list_response(list_key: str, summaries: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    """A List* answer: the summaries under ``list_key``, and ``NextToken`` only while more pages follow."""
    response: dict[str, Any] = {list_key: summaries, "ResponseMetadata": response_metadata()}
    if token:
        response["NextToken"] = token
    return response


def validation_error(message: str, operation: str) -> Exception:
    return client_error("ValidationException", message, operation)


def from_record(record: dict[str, Any]) -> dict[str, Any]:
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
        raise validation_error(
            f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
            "constraint: Member must have value between 1 and 100",
            operation,
        )
    start = 0
    if kwargs.get("NextToken"):
        try:
            start = int(decode_token(kwargs["NextToken"], operation))
        except ValueError:
            raise validation_error("Invalid pagination token", operation) from None
    end = start + max_results
    return items[start:end], (encode_token(str(end)) if end < len(items) else None)


def sort_records(
    items: list[dict[str, Any]], kwargs: dict[str, Any], name_field: str, operation: str
) -> list:
    sort_by = kwargs.get("SortBy", "CreationTime")
    sort_order = kwargs.get("SortOrder", "Ascending")
    if sort_by not in ("Name", "CreationTime"):
        raise validation_error(
            f"1 validation error detected: Value '{sort_by}' at 'sortBy' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Name, CreationTime]",
            operation,
        )
    if sort_order not in ("Ascending", "Descending"):
        raise validation_error(
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


def time_filter(items: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    after, before = kwargs.get("CreationTimeAfter"), kwargs.get("CreationTimeBefore")
    if after is not None:
        items = [i for i in items if i["CreationTime"] > after]
    if before is not None:
        items = [i for i in items if i["CreationTime"] < before]
    return items


def check_approval_status(status: Any, operation: str) -> None:
    if status not in APPROVAL_STATUSES:
        raise validation_error(
            f"1 validation error detected: Value '{status}' at 'modelApprovalStatus' failed to satisfy "
            "constraint: Member must satisfy enum value set: [PendingManualApproval, Approved, Rejected]",
            operation,
        )


class LocalRegistryReader:
    """boto3's ``sagemaker`` client, Model Registry reading part, over ``ROOT/registry/``
    (``WorkspaceLayout``: one JSON document per group and per version)."""

    def __init__(self, root: str | os.PathLike[str], region: str | None = None) -> None:
        self.root = Path(root)
        self.layout = WorkspaceLayout(self.root)
        self.registry = self.layout.registry
        self.region = resolve_region(region)
        self.meta = SimpleNamespace(region_name=self.region, endpoint_url=None)
        self.exceptions = SimpleNamespace(ClientError=ClientError, ResourceNotFound=ResourceNotFound)

    # -- ARNs
    def arn(self, resource: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:{resource}"

    def _group_arn(self, group: str) -> str:
        return self.arn(f"model-package-group/{group.lower()}")  # AWS lower-cases names in SageMaker ARNs

    def _package_arn(self, group: str, version: int) -> str:
        return self.arn(f"model-package/{group.lower()}/{version}")

    # -- records
    def _groups(self) -> list[dict[str, Any]]:
        folder = self.layout.groups_dir
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def _find_group(self, name_or_arn: str) -> dict[str, Any] | None:
        """Group names are unique ignoring case (their ARNs are lower-cased); ARNs are accepted too."""
        name = name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
        exact = self.layout.group_file(name)
        if exact.is_file():
            return json.loads(exact.read_text())
        return next((g for g in self._groups() if g["ModelPackageGroupName"].lower() == name.lower()), None)

    def _packages(self, group: str) -> list[dict[str, Any]]:
        folder = self.layout.package_dir(group)
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in folder.glob("*.json")]

    def _find_package(self, arn: str, operation: str) -> tuple[dict[str, Any], Path]:
        match = re.fullmatch(r"arn:aws:sagemaker:[^:]+:\d{12}:model-package/([^/]+)/(\d+)", arn or "")
        group = self._find_group(match.group(1)) if match else None
        path = (
            self.layout.package_file(group["ModelPackageGroupName"], int(match.group(2))) if group else None
        )
        if path is None or not path.is_file():
            raise validation_error(f"ModelPackage {arn} does not exist.", operation)
        return json.loads(path.read_text()), path

    # -- packages
    def describe_model_package(self, *, ModelPackageName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs)
        record, _ = self._find_package(ModelPackageName, "DescribeModelPackage")
        out = from_record(record)
        out.pop("_ClientToken", None)
        return {**out, "ResponseMetadata": response_metadata()}

    def list_model_packages(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListModelPackages"
        check_params(
            kwargs, allowed=(*LIST_PARAMS, "ModelApprovalStatus", "ModelPackageGroupName", "ModelPackageType")
        )
        if "ModelApprovalStatus" in kwargs:
            check_approval_status(kwargs["ModelApprovalStatus"], operation)
        group_name = kwargs.get("ModelPackageGroupName")
        if group_name:
            group = self._find_group(group_name)
            records = self._packages(group["ModelPackageGroupName"]) if group else []
        elif kwargs.get("ModelPackageType", "Unversioned") == "Unversioned":
            records = []  # AWS lists unversioned packages by default; the local registry has none
        else:
            records = [p for g in self._groups() for p in self._packages(g["ModelPackageGroupName"])]
        packages = [from_record(r) for r in records]
        if kwargs.get("ModelApprovalStatus"):
            packages = [p for p in packages if p["ModelApprovalStatus"] == kwargs["ModelApprovalStatus"]]
        if kwargs.get("NameContains"):
            packages = [p for p in packages if kwargs["NameContains"] in p["ModelPackageGroupName"]]
        packages = sort_records(time_filter(packages, kwargs), kwargs, "ModelPackageGroupName", operation)
        page, token = page_items(packages, kwargs, operation)
        summaries = [{k: p[k] for k in _SUMMARY_FIELDS if k in p} for p in page]
        return list_response("ModelPackageSummaryList", summaries, token)

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name != "list_model_packages":
            raise NotImplementedError(f"the local registry has no paginator for {operation_name}")
        return Paginator(self.list_model_packages, "NextToken", "NextToken")
