"""The one definition of the two EventBridge rules and of the events they match.

``infra/template.yaml`` carries the same patterns (a test renders them from here and compares), and the
local trigger (``pipelines/local/trigger.py``) matches its synthesized events against them with
``pipelines.event_pattern``. Pure: no clients, no clock unless a time is not given.

Rule "new data": one tub starts one execution. A v2 tub is a folder whose ``manifest.json`` is uploaded
last by ``aws s3 sync``/``cp --recursive`` (keys go in lexical order: ``catalog_*``, ``images/``, then
``manifest.json``); any other tub (v1, or many files at once) is uploaded as one ``.tar.gz``/``.zip``
archive. Its target is the snapshot function (``infra/snapshot/handler.py``), which names the raw prefix's
contents by a manifest and starts the pipeline on it. Rule "approved": a model package of our group
reaches ``ModelApprovalStatus: Approved``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

S3_SOURCE = "aws.s3"
S3_OBJECT_CREATED = "Object Created"
SAGEMAKER_SOURCE = "aws.sagemaker"
MODEL_PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
# The file that completes a donkeycar v2 tub (docs/design.md, "The data as donkeycar writes it").
TUB_MARKER = "manifest.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
EXAMPLE_ACCOUNT = "123456789012"  # never a real account (house rule)
_EVENT_NAMESPACE = uuid.UUID("0c6a3bb5-93f5-4c33-a1b7-7b8f0e5b6d1e")  # event ids derive from content


def normalize_prefix(prefix: str) -> str:
    """``raw`` / ``/raw/`` / ``raw/`` -> ``raw/``; the empty prefix stays empty (the whole bucket)."""
    if any(char in prefix for char in "*\\"):
        raise ValueError(f"prefix {prefix!r} may not contain '*' or '\\' (they are wildcard syntax)")
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def new_data_key_filters(prefix: str) -> list[dict[str, str]]:
    """The key filters: a ``manifest.json`` inside a folder under the prefix, or an archive under it.

    ``wildcard`` because EventBridge ORs the filters of one field: prefix AND suffix need one wildcard.
    """
    base = normalize_prefix(prefix)
    return [{"wildcard": f"{base}*/{TUB_MARKER}"}] + [
        {"wildcard": f"{base}*{suffix}"} for suffix in ARCHIVE_SUFFIXES
    ]


def new_data_pattern(bucket: str, prefix: str) -> dict[str, Any]:
    """Rule "new data": an object that completes a tub is created under ``s3://bucket/prefix``."""
    return {
        "source": [S3_SOURCE],
        "detail-type": [S3_OBJECT_CREATED],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": new_data_key_filters(prefix)}},
    }


def approved_pattern(group: str) -> dict[str, Any]:
    """Rule "approved": a package of ``group`` changes state and is (now) Approved."""
    return {
        "source": [SAGEMAKER_SOURCE],
        "detail-type": [MODEL_PACKAGE_STATE_CHANGE],
        "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved"]},
    }


def s3_object_created_event(
    bucket: str,
    key: str,
    *,
    size: int = 0,
    etag: str = "",
    sequencer: str = "",
    version_id: str | None = None,
    region: str = "us-east-1",
    account: str = EXAMPLE_ACCOUNT,
    time: dt.datetime | None = None,
    reason: str = "PutObject",
) -> dict[str, Any]:
    """The EventBridge event S3 sends for a new object (the shape in the S3 user guide, version 0).

    The event id is derived from bucket/key/etag/sequencer, so the same object gives the same event.
    """
    detail_object: dict[str, Any] = {"key": key, "size": size, "etag": etag, "sequencer": sequencer}
    if version_id is not None:
        detail_object["version-id"] = version_id
    identity = f"{bucket}/{key}/{etag}/{sequencer}/{version_id or ''}"
    return {
        "version": "0",
        "id": str(uuid.uuid5(_EVENT_NAMESPACE, identity)),
        "detail-type": S3_OBJECT_CREATED,
        "source": S3_SOURCE,
        "account": account,
        "time": _timestamp(time),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": detail_object,
            "request-id": hashlib.sha256(identity.encode()).hexdigest()[:16].upper(),
            "requester": account,
            "source-ip-address": "127.0.0.1",
            "reason": reason,
        },
    }


def model_package_state_change_event(
    *,
    model_package_arn: str,
    group: str,
    version: int,
    approval_status: str,
    package_status: str = "Completed",
    region: str = "us-east-1",
    account: str = EXAMPLE_ACCOUNT,
    time: dt.datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event SageMaker sends when a model package changes (EventBridge integration, SageMaker guide).

    ``detail`` adds the package's other described fields (``InferenceSpecification``, metadata, ...),
    as SageMaker includes them.
    """
    timestamp = _timestamp(time)
    identity = f"{model_package_arn}/{approval_status}/{package_status}/{timestamp}"
    return {
        "version": "0",
        "id": str(uuid.uuid5(_EVENT_NAMESPACE, identity)),
        "detail-type": MODEL_PACKAGE_STATE_CHANGE,
        "source": SAGEMAKER_SOURCE,
        "account": account,
        "time": timestamp,
        "region": region,
        "resources": [model_package_arn],
        "detail": {
            "CreationTime": timestamp,
            **(detail or {}),
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": model_package_arn,
            "ModelPackageName": f"{group}/{version}",
            "ModelApprovalStatus": approval_status,
            "ModelPackageStatus": package_status,
        },
    }


def _timestamp(time: dt.datetime | None) -> str:
    moment = time or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
