"""processing/evaluate.py's registry lookup: is this exact model (its S3ModelArtifacts) in the group?"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from edge.local_aws import LocalSageMakerClient
from processing.evaluate import is_registered

GROUP = "robocar-pilots"
MODEL = "s3://robocar-data-123456789012/robocar/models/q9x1b2c3d4e5/pipelines-q9x1-Train-k7m2p9/output/model.tar.gz"


@pytest.fixture(params=["local", "moto"])
def sagemaker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        yield LocalSageMakerClient(tmp_path)
        return
    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-east-1")


def register(sagemaker: Any, url: str, status: str = "PendingManualApproval") -> str:
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
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
