"""A small read-only reader of the model registry: the packages of a group, newest first.

"The newest approved package for a target" has one meaning across the project: the newest package
of the group with ``ModelApprovalStatus`` Approved whose CustomerMetadataProperties carry a usable
artifact for that target (``edge:<target>:uri|sha256``, read by ``target_artifact``).
It is what a car with that target installs, and so what the Evaluate step compares a new model against.

ListModelPackages sorts by CreationTime and pages with NextToken (at most 100 summaries a page):
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListModelPackages.html

Standard library only: the car and the rollout Lambda import this module through ``edge.agent``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge import artifacts

log = logging.getLogger(__name__)

APPROVED = "Approved"
# ListModelPackages' MaxResults is 1-100 (the API reference above): the largest page needs the fewest calls.
PAGE_SIZE = 100

# A package carries each edge target's artifact in CustomerMetadataProperties, one key per fact:
# ``edge:<target>:uri``, ``edge:<target>:sha256``, ``edge:<target>:runtime`` (docs/registry.md says why
# not AdditionalInferenceSpecifications). AWS allows [\p{L}\p{Z}\p{N}_.:/=+-@] in keys (1-128) and
# values (1-256), so an S3 URI, a hex digest and a runtime name fit as they are.
EDGE_METADATA_FIELDS = ("uri", "sha256", "runtime")
# The car's target when it is told none (a Raspberry Pi 4, Neo's ``rasp4b``), and the targets the pipeline
# compiles for when told none: always including the car's default, or a car left at it would find no
# artifact in any package the pipeline registers.
DEFAULT_CAR_TARGET = "rasp4b"
DEFAULT_EDGE_TARGETS = ("jetson_nano", DEFAULT_CAR_TARGET)


def edge_metadata_key(target: str, field: str) -> str:
    return f"edge:{target}:{field}"


@dataclass(frozen=True)
class TargetArtifact:
    """One target's artifact as a package's metadata records it."""

    uri: str
    sha256: str  # normalised: 64 lowercase hex digits
    runtime: str = ""  # what the pipeline compiled it for (dlr, litert, onnxruntime); informative only


def target_artifact(description: dict[str, Any], target: str) -> TargetArtifact | None:
    """A ``describe_model_package`` response's artifact for ``target``, or None if it names none.

    Raises artifacts.ArtifactError when the metadata names the target but has no URI or no SHA-256.
    """
    metadata = description.get("CustomerMetadataProperties") or {}
    uri = metadata.get(edge_metadata_key(target, "uri"))
    if uri is None:
        return None
    sha256 = metadata.get(edge_metadata_key(target, "sha256"))
    if not uri or not sha256:
        arn = description["ModelPackageArn"]
        raise artifacts.ArtifactError(f"{arn}: target {target!r} has no artifact URI or no SHA-256")
    runtime = metadata.get(edge_metadata_key(target, "runtime"), "")
    return TargetArtifact(uri, artifacts.normalize_sha256(sha256), runtime)


def package_arns_newest_first(sagemaker: Any, group: str, status: str | None = None) -> Iterator[str]:
    """ARNs of ``group``'s packages (only those with approval ``status`` if given), newest first.

    The registry sorts (SortBy CreationTime, Descending); this follows NextToken across every page.
    """
    kwargs: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": PAGE_SIZE,
    }
    if status:
        kwargs["ModelApprovalStatus"] = status
    while True:
        page = sagemaker.list_model_packages(**kwargs)
        for summary in page.get("ModelPackageSummaryList", []):
            yield summary["ModelPackageArn"]
        token = page.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token


def carries_artifact_for(description: dict[str, Any], target: str) -> bool:
    """Whether a described package has a usable artifact for ``target`` (the car's own test).

    Metadata that names the target but is unusable (no digest, not a SHA-256) is logged: the car
    skips such a package, so every reader does.
    """
    try:
        return target_artifact(description, target) is not None
    except artifacts.ArtifactError as exc:
        log.warning("skipping %s", exc)
        return False


def packages_newest_first(
    sagemaker: Any, group: str, status: str | None = None, target: str | None = None
) -> Iterator[dict[str, Any]]:
    """DescribeModelPackage answers for ``group``'s packages, newest first, filtered by approval
    ``status`` and, if ``target`` is given, by carrying a usable artifact for it."""
    for arn in package_arns_newest_first(sagemaker, group, status):
        description = sagemaker.describe_model_package(ModelPackageName=arn)
        if target is None or carries_artifact_for(description, target):
            yield description


def newest(
    sagemaker: Any, group: str, status: str | None = None, target: str | None = None
) -> dict[str, Any] | None:
    """The newest package of ``group`` (described) matching ``status`` and ``target``, or None."""
    return next(packages_newest_first(sagemaker, group, status, target), None)


def newest_approved_for_target(sagemaker: Any, group: str, target: str) -> dict[str, Any] | None:
    """The newest Approved package with a usable artifact for ``target``: what that car installs."""
    return newest(sagemaker, group, APPROVED, target)
