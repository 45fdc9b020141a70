"""The one definition of the EventBridge rules and of the events they match.

``infra/template.yaml`` carries the same patterns (a test renders them from here and compares), and the
local trigger (``pipelines/local/trigger.py``) matches its synthesized events against them with
``pipelines.event_pattern``. Pure: no clients, no clock unless a time is not given.

Rule "new data": one tub starts one execution. A v2 tub is a folder whose ``manifest.json`` is uploaded
last by ``aws s3 sync``/``cp --recursive`` (keys go in lexical order: ``catalog_*``, ``images/``, then
``manifest.json``); any other tub (v1, or many files at once) is uploaded as one ``.tar.gz``/``.zip``
archive. Its target is the snapshot function (``infra/snapshot/handler.py``), which names the raw prefix's
contents by a manifest and starts the pipeline on it. Rule "approved": a model package of our group
reaches ``ModelApprovalStatus: Approved``.

Each recipe has its own "new data" rule on its own raw folder (``pipelines.datasets.RAW_FOLDERS``), told
apart by what completes an upload there (``NEW_DATA_ENDINGS``): the pilot's a tub (above), the
classifier's and the detector's a Ground Truth output manifest (``*.manifest``, written by the labelling
job once every label is in, https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html), which
names the photos uploaded beside it.
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
GROUND_TRUTH_MANIFEST_SUFFIX = ".manifest"  # a Ground Truth output manifest (docs/classifier.md)
# Per recipe (the keys of edge.settings.RECIPE_NAMES), the key endings (after ``<raw folder>/*``) of an
# object that completes an upload: one event per labelled set or tub. The pilot's tub marker sits in
# the tub's folder, hence its leading '/'.
NEW_DATA_ENDINGS = {
    "pilot": (f"/{TUB_MARKER}", *ARCHIVE_SUFFIXES),
    "classifier": (GROUND_TRUTH_MANIFEST_SUFFIX,),
    "detection": (GROUND_TRUTH_MANIFEST_SUFFIX,),
}
# Per recipe, the ending of a completing object whose folder's other files arrive with it (a tub's
# images, a labelled set's photos): the object is new data once they, too, have settled.
FOLDER_MARKERS = {
    "pilot": f"/{TUB_MARKER}",
    "classifier": GROUND_TRUTH_MANIFEST_SUFFIX,
    "detection": GROUND_TRUTH_MANIFEST_SUFFIX,
}
EXAMPLE_ACCOUNT = "123456789012"  # never a real account (house rule)
_EVENT_NAMESPACE = uuid.UUID("0c6a3bb5-93f5-4c33-a1b7-7b8f0e5b6d1e")  # event ids derive from content


def normalize_prefix(prefix: str) -> str:
    """``raw`` / ``/raw/`` / ``raw/`` -> ``raw/``; the empty prefix stays empty (the whole bucket)."""
    if any(char in prefix for char in "*\\"):
        raise ValueError(f"prefix {prefix!r} may not contain '*' or '\\' (they are wildcard syntax)")
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def new_data_endings(recipe: str) -> tuple[str, ...]:
    try:
        return NEW_DATA_ENDINGS[recipe]
    except KeyError:
        raise ValueError(f"no recipe {recipe!r} (recipes: {', '.join(NEW_DATA_ENDINGS)})") from None


def new_data_key_filters(prefix: str, recipe: str = "pilot") -> list[dict[str, str]]:
    """The key filters: for the pilot a ``manifest.json`` inside a folder under the prefix, or an archive
    under it; for the classifier a ``*.manifest`` anywhere under it.

    ``wildcard`` because EventBridge ORs the filters of one field: prefix AND suffix need one wildcard
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html#eb-filtering-wildcard-matching).
    """
    base = normalize_prefix(prefix)
    return [{"wildcard": f"{base}*{ending}"} for ending in new_data_endings(recipe)]


def new_data_pattern(bucket: str, prefix: str, recipe: str = "pilot") -> dict[str, Any]:
    """Rule "new data": an object that completes a recipe's upload is created under ``s3://bucket/prefix``
    (the S3 event's fields: https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html)."""
    return {
        "source": [S3_SOURCE],
        "detail-type": [S3_OBJECT_CREATED],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": new_data_key_filters(prefix, recipe)}},
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
