"""A small read-only reader of the model registry: the packages of a group, newest first.

"The newest approved package for a target" has one meaning across the project: the newest package
of the group with ``ModelApprovalStatus`` Approved whose CustomerMetadataProperties carry a usable
artifact for that target (``edge:<target>:uri|sha256``, read by ``edge.agent.candidate_from_package``).
It is what a car with that target installs, and so what the Evaluate step compares a new model against.

ListModelPackages sorts by CreationTime and pages with NextToken (at most 100 summaries a page):
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListModelPackages.html

Standard library only: the car and the rollout Lambda import this module through ``edge.agent``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

APPROVED = "Approved"
# ListModelPackages' MaxResults is 1-100 (the API reference above): the largest page needs the fewest calls.
PAGE_SIZE = 100


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
    from edge import agent, artifacts  # here: edge.agent imports this module for its listing

    try:
        return agent.candidate_from_package(description, target) is not None
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
