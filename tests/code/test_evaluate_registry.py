"""processing/evaluate.py's registry lookups: is this exact model (its S3ModelArtifacts) in the group,
and which package is the champion (the one the car installs)?"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from edge.agent import edge_metadata, find_newest
from pipelines.local.registry import LocalSageMakerClient
from processing.evaluate import champion_target, find_champion, is_registered

GROUP = "robocar-pilots"
MODEL = "s3://robocar-data-123456789012/robocar/models/q9x1b2c3d4e5/pipelines-q9x1-Train-k7m2p9/output/model.tar.gz"


@pytest.fixture(params=["local", "moto"])
def sagemaker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        yield LocalSageMakerClient(tmp_path)
        return
    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-east-1")


def register(
    sagemaker: Any, url: str, status: str = "PendingManualApproval", targets: tuple[str, ...] = ()
) -> str:
    metadata: dict[str, Any] = {}
    for target in targets:  # what the Register step records for each compiled target
        metadata |= edge_metadata(target, uri=f"{url}.{target}", sha256="ab" * 32, runtime="dlr")
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        **({"CustomerMetadataProperties": metadata} if metadata else {}),
        InferenceSpecification={
            "Containers": [
                {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/tf:2", "ModelDataUrl": url}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_a_model_is_registered_when_a_package_of_the_group_serves_it(sagemaker: Any) -> None:
    assert not is_registered(sagemaker, GROUP, MODEL)  # no group yet
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    assert not is_registered(sagemaker, GROUP, MODEL)  # an empty group
    register(sagemaker, MODEL.replace("q9x1b2c3d4e5", "a1b2c3d4e5f6"))  # another execution's model
    assert not is_registered(sagemaker, GROUP, MODEL)
    register(sagemaker, MODEL, "Rejected")  # any approval status: it was registered
    register(sagemaker, MODEL.replace("q9x1b2c3d4e5", "z9y8x7w6v5u4"))
    assert is_registered(sagemaker, GROUP, MODEL)
    assert not is_registered(sagemaker, None, MODEL) and not is_registered(sagemaker, GROUP, None)


def test_every_page_of_the_group_is_searched(tmp_path: Path) -> None:
    sagemaker = LocalSageMakerClient(tmp_path)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    register(sagemaker, MODEL)  # the oldest: on the last page, newest first
    for index in range(100):  # ListModelPackages answers at most 100 per page
        register(sagemaker, MODEL.replace("q9x1b2c3d4e5", f"{index:012d}"))
    assert is_registered(sagemaker, GROUP, MODEL)
    assert not is_registered(sagemaker, GROUP, MODEL.replace("model.tar.gz", "other.tar.gz"))


def test_the_champion_is_the_package_the_car_installs(sagemaker: Any) -> None:
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    car_target = champion_target("jetson_nano,rasp4b")
    assert car_target == "jetson_nano"
    drives = register(sagemaker, "s3://models/v1/model.tar.gz", "Approved", ("jetson_nano", "rasp4b"))
    # newer and approved, but without an artifact for the car's target: the car skips it
    register(sagemaker, "s3://models/v2/model.tar.gz", "Approved", ("rasp4b",))
    register(sagemaker, "s3://models/v3/model.tar.gz", "PendingManualApproval", ("jetson_nano",))

    installed = find_newest(sagemaker, GROUP, car_target)
    champion = find_champion(sagemaker, GROUP, car_target)
    assert installed is not None and installed.model_package_arn == drives
    assert champion == {"model_package_arn": drives, "model_data_url": "s3://models/v1/model.tar.gz"}
    # without targets (a direct run of evaluate.py) the newest Approved package is the champion
    assert find_champion(sagemaker, GROUP)["model_data_url"] == "s3://models/v2/model.tar.gz"


def test_no_targets_no_champion_target() -> None:
    assert champion_target(None) is None and champion_target("") is None
