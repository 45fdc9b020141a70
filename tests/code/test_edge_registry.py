"""edge.registry: the one reader of "the newest (approved) package (for a target)"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge import registry
from edge.agent import edge_metadata
from pipelines.local.registry import LocalSageMakerClient

GROUP = "robocar-pilots"
DIGEST = "ab" * 32  # a SHA-256 in hex


class CountingClient:
    """The local registry, counting the ListModelPackages calls (one per page)."""

    def __init__(self, inner: LocalSageMakerClient) -> None:
        self.inner = inner
        self.list_calls: list[dict[str, Any]] = []

    def list_model_packages(self, **kwargs: Any) -> dict[str, Any]:
        self.list_calls.append(kwargs)
        return self.inner.list_model_packages(**kwargs)

    def describe_model_package(self, **kwargs: Any) -> dict[str, Any]:
        return self.inner.describe_model_package(**kwargs)


def register(sm: LocalSageMakerClient, status: str, targets: tuple[str, ...]) -> str:
    metadata: dict[str, Any] = {}
    for target in targets:
        metadata |= edge_metadata(target, uri=f"s3://b/{target}.tar.gz", sha256=DIGEST, runtime="dlr")
    kwargs: dict[str, Any] = {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": status}
    if metadata:
        kwargs["CustomerMetadataProperties"] = metadata
    return sm.create_model_package(**kwargs)["ModelPackageArn"]


@pytest.fixture
def sagemaker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CountingClient:
    monkeypatch.setattr(registry, "PAGE_SIZE", 2)  # 6 packages -> 3 pages: paging is exercised
    sm = LocalSageMakerClient(tmp_path, "us-east-1")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    # versions 1..6, oldest first
    register(sm, "Approved", ("jetson_nano", "rasp4b"))  # 1
    register(sm, "Approved", ("jetson_nano",))  # 2
    register(sm, "Rejected", ("jetson_nano", "rasp4b"))  # 3
    register(sm, "Approved", ("rasp4b",))  # 4
    register(sm, "PendingManualApproval", ("jetson_nano", "rasp4b"))  # 5
    register(sm, "Approved", ())  # 6: no artifact at all
    return CountingClient(sm)


def versions(descriptions: Any) -> list[int]:
    return [d["ModelPackageVersion"] for d in descriptions]


def test_lists_every_page_newest_first(sagemaker: CountingClient) -> None:
    arns = list(registry.package_arns_newest_first(sagemaker, GROUP))
    assert [int(arn.rsplit("/", 1)[1]) for arn in arns] == [6, 5, 4, 3, 2, 1]
    assert len(sagemaker.list_calls) == 3 and "NextToken" in sagemaker.list_calls[-1]


def test_status_filter(sagemaker: CountingClient) -> None:
    assert versions(registry.packages_newest_first(sagemaker, GROUP, "Approved")) == [6, 4, 2, 1]
    assert registry.newest(sagemaker, GROUP, "PendingManualApproval")["ModelPackageVersion"] == 5
    assert registry.newest(sagemaker, GROUP)["ModelPackageVersion"] == 6


def test_target_filter_is_the_cars(sagemaker: CountingClient) -> None:
    approved_for = {
        target: versions(registry.packages_newest_first(sagemaker, GROUP, "Approved", target))
        for target in ("jetson_nano", "rasp4b")
    }
    assert approved_for == {"jetson_nano": [2, 1], "rasp4b": [4, 1]}
    assert registry.newest_approved_for_target(sagemaker, GROUP, "jetson_nano")["ModelPackageVersion"] == 2
    assert registry.newest_approved_for_target(sagemaker, GROUP, "no_such_target") is None


def test_unusable_artifact_metadata_is_skipped(tmp_path: Path) -> None:
    sm = LocalSageMakerClient(tmp_path, "us-east-1")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    register(sm, "Approved", ("rasp4b",))
    broken = edge_metadata("rasp4b", uri="s3://b/x.tar.gz", sha256="not-a-digest", runtime="dlr")
    sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved", CustomerMetadataProperties=broken
    )
    assert registry.newest_approved_for_target(sm, GROUP, "rasp4b")["ModelPackageVersion"] == 1


def test_empty_group_has_no_newest(tmp_path: Path) -> None:
    sm = LocalSageMakerClient(tmp_path, "us-east-1")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    assert registry.newest(sm, GROUP) is None
