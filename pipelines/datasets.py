"""Datasets addressed by content: a snapshot of the raw-data prefix as an immutable SageMaker manifest.

SageMaker keys a cached step on its request's S3 *paths*, never on what lies under them ("Default cache
key attributes", https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html). Handing
Preprocess the raw prefix itself would make every execution within ``ExpireAfter`` reuse the first one's
Preprocess and Train, new tubs or not. So Preprocess reads a *snapshot*: ``snapshot`` lists every object
under the prefix, names the list by its SHA-256 and writes it as a manifest file at
``<prefix>/datasets/<sha256>.manifest``. The URI changes when, and only when, the listed data changes,
so the cache hits exactly when the data is the same (docs/datasets.md).

The manifest is SageMaker's ``ManifestFile`` format (``S3DataType: ManifestFile``): a JSON array whose
first element is ``{"prefix": "s3://bucket/key/prefix/"}`` and whose other elements are keys relative to
it (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html). A Processing job
downloads each listed object to ``LocalPath/<relative key>``.

The object list is named by (key, ETag) pairs: an ETag changes whenever an object's bytes change (for a
single-part upload to an SSE-S3 bucket it is the MD5 of the bytes), while a VersionId changes on every
upload, identical bytes included, which would retrain on unchanged data.

Standard library only, clients as arguments: the snapshot function (``infra/snapshot/handler.py``) runs
this in Lambda with boto3's clients; the CLI and the local trigger with boto3's, moto's or the local ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge.s3_uri import split_s3_uri
from pipelines.events import normalize_prefix

RAW_FOLDER = "raw"
# Each recipe's raw data lands in its own folder, so new data starts only that recipe's pipeline.
RAW_FOLDERS = {"pilot": RAW_FOLDER, "classifier": "raw-classifier", "detection": "raw-detection"}
DATASETS_FOLDER = "datasets"
MANIFEST_SUFFIX = ".manifest"
# What the pilot's InputDataUrl defaults to: no snapshot ever has this name (snapshots are named by a
# SHA-256), so an execution started without a dataset fails at once, naming this key, instead of
# silently training on a path whose contents the cache cannot see. Every robocar command passes one.
NO_SNAPSHOT_NAME = f"snapshot-required{MANIFEST_SUFFIX}"
INPUT_PARAMETER = "InputDataUrl"


class DatasetError(ValueError):
    """A snapshot that cannot be taken (an empty prefix) or a manifest that cannot be read."""


@dataclass(frozen=True)
class DatasetObject:
    key: str  # relative to the snapshot's prefix
    etag: str  # without S3's surrounding quotes


@dataclass(frozen=True)
class Snapshot:
    prefix_uri: str  # s3://bucket/.../raw/ : what was listed
    manifest_uri: str  # s3://bucket/.../datasets/<digest>.manifest
    digest: str  # SHA-256 of the (key, ETag) list, lowercase hex
    objects: int
    written: bool  # False when the same dataset had been snapshotted before (nothing was written)

    def line(self) -> str:
        state = "new" if self.written else "unchanged since an earlier snapshot"
        return f"dataset {self.manifest_uri}: {self.objects} object(s) under {self.prefix_uri} ({state})"


# ---------------------------------------------------------------- where things are
def folder_uri(bucket: str, prefix: str, folder: str) -> str:
    """``s3://bucket/<prefix>/<folder>/`` (the pipeline's raw-data or datasets folder)."""
    return f"s3://{bucket}/{normalize_prefix(prefix.strip('/') + '/' + folder)}"


def raw_uri(bucket: str, prefix: str, recipe: str = "pilot") -> str:
    return folder_uri(bucket, prefix, RAW_FOLDERS[recipe])


def datasets_uri(bucket: str, prefix: str) -> str:
    return folder_uri(bucket, prefix, DATASETS_FOLDER)


def manifest_uri(datasets: str, digest: str) -> str:
    return f"{datasets.rstrip('/')}/{digest}{MANIFEST_SUFFIX}"


def no_snapshot_uri(bucket: str, prefix: str) -> str:
    """The pilot's ``InputDataUrl`` default: a manifest that never exists (see ``NO_SNAPSHOT_NAME``)."""
    return f"{datasets_uri(bucket, prefix)}{NO_SNAPSHOT_NAME}"


def is_manifest_uri(uri: str) -> bool:
    """Our convention: a URI ending in ``.manifest`` names a dataset; anything else is a prefix."""
    return uri.endswith(MANIFEST_SUFFIX)


# ---------------------------------------------------------------- the snapshot
def list_dataset_objects(s3: Any, prefix_uri: str) -> list[DatasetObject]:
    """Every object under the prefix, by key relative to it, sorted.

    Keys ending in ``/`` are left out: they are the zero-byte "folder" markers the S3 console creates, not
    data, and a Processing job could not write a file named like a folder.
    """
    bucket, key_prefix = split_s3_uri(prefix_uri)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith("/"):
                found.append(DatasetObject(key[len(key_prefix) :], item["ETag"].strip('"')))
    return sorted(found, key=lambda o: o.key)


def dataset_digest(prefix_uri: str, objects: Iterable[DatasetObject]) -> str:
    """SHA-256 of the prefix and the sorted (relative key, ETag) list: the dataset's name."""
    listing = {
        "prefix": prefix_uri,
        "objects": [[o.key, o.etag] for o in sorted(objects, key=lambda o: o.key)],
    }
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def manifest_document(prefix_uri: str, keys: Iterable[str]) -> bytes:
    """The ManifestFile JSON: ``[{"prefix": ...}, "relative/key", ...]``, one element per line."""
    elements = [json.dumps({"prefix": prefix_uri}), *(json.dumps(key) for key in keys)]
    return ("[\n" + ",\n".join(elements) + "\n]\n").encode()


def read_manifest(document: bytes | str) -> tuple[str, list[str]]:
    """``(prefix, relative keys)`` of a ManifestFile; DatasetError says what is wrong with it."""
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        raise DatasetError(f"not a manifest file: not JSON ({exc})") from None
    if not isinstance(parsed, list) or not parsed:
        raise DatasetError('not a manifest file: expected a JSON array starting with {"prefix": ...}')
    head, *keys = parsed
    prefix = head.get("prefix") if isinstance(head, dict) else None
    if not isinstance(prefix, str) or not prefix.startswith("s3://"):
        raise DatasetError('not a manifest file: its first element must be {"prefix": "s3://..."}')
    bad = [key for key in keys if not isinstance(key, str) or not key]
    if bad:
        raise DatasetError(f"manifest entries must be non-empty keys (strings), got {bad[0]!r}")
    if not keys:
        raise DatasetError(f"the manifest lists no objects under {prefix}")
    return prefix, keys


def object_exists(s3: Any, uri: str) -> bool:
    """Whether the object exists, by listing its exact key: a HEAD of a missing key answers 403, not 404,
    to a caller without s3:ListBucket (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html),
    and the snapshot function may list, not read, the datasets folder."""
    bucket, key = split_s3_uri(uri)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return any(item["Key"] == key for item in listed)


def snapshot(s3: Any, prefix_uri: str, datasets: str) -> Snapshot:
    """Snapshot ``prefix_uri`` into a manifest under ``datasets``; writing the same dataset again is a no-op.

    Two snapshots of the same listing racing each other write the same bytes to the same key.
    """
    prefix_uri = prefix_uri if prefix_uri.endswith("/") else f"{prefix_uri}/"
    objects = list_dataset_objects(s3, prefix_uri)
    if not objects:
        raise DatasetError(f"no input data at {prefix_uri}: upload tubs there first")
    digest = dataset_digest(prefix_uri, objects)
    uri = manifest_uri(datasets, digest)
    written = not object_exists(s3, uri)
    if written:
        bucket, key = split_s3_uri(uri)
        body = manifest_document(prefix_uri, (o.key for o in objects))
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return Snapshot(prefix_uri, uri, digest, len(objects), written)


def client_request_token(digest: str) -> str:
    """StartPipelineExecution's idempotency token for a dataset: the same dataset starts one execution.

    The API takes 32 to 128 characters (botocore's sagemaker model, IdempotencyToken; no pattern); a
    SHA-256 in hex is 64 (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StartPipelineExecution.html).
    """
    return digest


# ---------------------------------------------------------------- the pipeline parameter
def resolve_input_data_url(
    s3: Any, given: str | None, *, bucket: str, prefix: str, recipe: str = "pilot"
) -> tuple[str, Snapshot | None]:
    """The ``InputDataUrl`` to start an execution with, and the snapshot taken for it (None if none was).

    A given manifest (``*.manifest``) is used as it is; a given prefix, or none (the pipeline's raw-data
    prefix), is snapshotted into the pipeline's datasets folder first.
    """
    if given and is_manifest_uri(given):
        return given, None
    taken = snapshot(s3, given or raw_uri(bucket, prefix, recipe), datasets_uri(bucket, prefix))
    return taken.manifest_uri, taken


def given_input_data_url(parameters: list[dict[str, str]]) -> str | None:
    return next((p["Value"] for p in parameters if p["Name"] == INPUT_PARAMETER), None)


def declares_input_data_url(definition: dict[str, Any]) -> bool:
    return any(p.get("Name") == INPUT_PARAMETER for p in definition.get("Parameters", []))


def start_parameters(
    s3: Any,
    definition: dict[str, Any],
    parameters: list[dict[str, str]],
    *,
    bucket: str,
    prefix: str,
    recipe: str = "pilot",
) -> tuple[list[dict[str, str]], Snapshot | None]:
    """``PipelineParameters`` whose ``InputDataUrl`` names a dataset (``resolve_input_data_url``), and the
    snapshot taken for it; unchanged for a definition without the parameter."""
    if not declares_input_data_url(definition):
        return parameters, None
    given = given_input_data_url(parameters)
    url, taken = resolve_input_data_url(s3, given, bucket=bucket, prefix=prefix, recipe=recipe)
    kept = [p for p in parameters if p["Name"] != INPUT_PARAMETER]
    return [*kept, {"Name": INPUT_PARAMETER, "Value": url}], taken
