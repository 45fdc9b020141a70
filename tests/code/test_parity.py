"""Parity: one scenario suite against moto (in process) and the local clients; they must agree.

Where moto 5.2.5 is not faithful to AWS (docs/design.md "moto 5.2.5") the scenario avoids the difference
and names it:
- moto gives no ModelApprovalStatus when none is set (AWS: PendingManualApproval): statuses are explicit;
- moto's UpdateModelPackage replaces CustomerMetadataProperties (AWS merges): updates pass the full map;
- moto lower-cases names in model package ARNs only (AWS: in every SageMaker ARN): names are lower case;
- moto answers a missing pipeline with ValidationException (AWS: ResourceNotFound): only ClientError is
  asserted; moto has no ListPipelineExecutionSteps and its executions are Succeeded at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import sample_pipeline as sample
from botocore.exceptions import ClientError
from moto import mock_aws

from edge.aws import clients

GROUP = "parity-pilots"
CONTAINERS = {
    "Containers": [{"Image": "tf-serving:2.19", "ModelDataUrl": "s3://parity-bucket/models/model.tar.gz"}],
    "SupportedContentTypes": ["application/json"],
    "SupportedResponseMIMETypes": ["application/json"],
}
ROLE = "arn:aws:iam::123456789012:role/parity"


@pytest.fixture(params=["moto", "local"])
def aws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "moto":
        with mock_aws():
            yield clients(region="us-east-1")
    else:
        yield clients(local_root=tmp_path, region="us-east-1")


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _create_versions(sm: Any, statuses: list[str]) -> list[str]:
    arns = []
    for status in statuses:
        arns.append(
            sm.create_model_package(
                ModelPackageGroupName=GROUP,
                ModelPackageDescription=f"a {status} pilot",
                InferenceSpecification=CONTAINERS,
                ModelApprovalStatus=status,
                CustomerMetadataProperties={"edge:targets": "rasp4b"},
                AdditionalInferenceSpecifications=[
                    {
                        "Name": "edge-rasp4b",
                        "Containers": [{"Image": "litert", "ModelDataUrl": "s3://b/e.tar.gz"}],
                    }
                ],
            )["ModelPackageArn"]
        )
        time.sleep(0.002)  # distinct creation times, as real registrations have
    return arns


def test_registry_scenario(aws: Any) -> None:
    sm = aws.sagemaker
    group_arn = sm.create_model_package_group(ModelPackageGroupName=GROUP, ModelPackageGroupDescription="d")
    assert (
        group_arn["ModelPackageGroupArn"]
        == f"arn:aws:sagemaker:us-east-1:123456789012:model-package-group/{GROUP}"
    )
    group = sm.describe_model_package_group(ModelPackageGroupName=GROUP)
    assert {
        k: group[k]
        for k in ("ModelPackageGroupName", "ModelPackageGroupDescription", "ModelPackageGroupStatus")
    } == {
        "ModelPackageGroupName": GROUP,
        "ModelPackageGroupDescription": "d",
        "ModelPackageGroupStatus": "Completed",
    }
    assert isinstance(group["CreationTime"], datetime)
    assert [
        g["ModelPackageGroupName"] for g in sm.list_model_package_groups()["ModelPackageGroupSummaryList"]
    ] == [GROUP]

    arns = _create_versions(sm, ["Approved", "PendingManualApproval", "Approved", "Rejected"])
    assert arns == [
        f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/{n}" for n in (1, 2, 3, 4)
    ]

    newest_approved = sm.list_model_packages(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in newest_approved] == [arns[2], arns[0]]
    summary = newest_approved[0]
    assert summary["ModelPackageGroupName"] == GROUP and summary["ModelPackageVersion"] == 3
    assert summary["ModelApprovalStatus"] == "Approved" and isinstance(summary["CreationTime"], datetime)

    ascending = sm.list_model_packages(
        ModelPackageGroupName=GROUP, SortBy="CreationTime", SortOrder="Ascending"
    )
    assert [p["ModelPackageArn"] for p in ascending["ModelPackageSummaryList"]] == arns
    first_page = sm.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=3)
    assert len(first_page["ModelPackageSummaryList"]) == 3 and first_page["NextToken"]
    rest = sm.list_model_packages(
        ModelPackageGroupName=GROUP, MaxResults=3, NextToken=first_page["NextToken"]
    )
    assert [p["ModelPackageArn"] for p in rest["ModelPackageSummaryList"]] == [arns[3]]

    sm.update_model_package(
        ModelPackageArn=arns[1],
        ModelApprovalStatus="Approved",
        ApprovalDescription="drove three laps",
        CustomerMetadataProperties={"edge:targets": "rasp4b", "edge:rasp4b:sha256": "ab" * 32},
        AdditionalInferenceSpecificationsToAdd=[
            {"Name": "edge-jetson", "Containers": [{"Image": "onnx", "ModelDataUrl": "s3://b/j.tar.gz"}]}
        ],
    )
    package = sm.describe_model_package(ModelPackageName=arns[1])
    assert package["ModelPackageArn"] == arns[1]
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ApprovalDescription"] == "drove three laps"
    assert package["ModelPackageDescription"] == "a PendingManualApproval pilot"
    assert package["InferenceSpecification"] == CONTAINERS
    assert package["CustomerMetadataProperties"] == {
        "edge:targets": "rasp4b",
        "edge:rasp4b:sha256": "ab" * 32,
    }
    assert [s["Name"] for s in package["AdditionalInferenceSpecifications"]] == ["edge-rasp4b", "edge-jetson"]
    assert package["ModelPackageStatus"] == "Completed"
    assert isinstance(package["LastModifiedTime"], datetime)

    newest = sm.list_model_packages(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in newest] == [arns[2], arns[1], arns[0]]


def test_registry_errors(aws: Any) -> None:
    sm = aws.sagemaker
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    missing = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/42"
    calls = [
        lambda: sm.describe_model_package(ModelPackageName=missing),
        lambda: sm.update_model_package(ModelPackageArn=missing, ModelApprovalStatus="Approved"),
        lambda: sm.describe_model_package_group(ModelPackageGroupName="no-such-group"),
        lambda: sm.create_model_package(
            ModelPackageGroupName="no-such-group", InferenceSpecification=CONTAINERS
        ),
        lambda: sm.create_model_package(
            ModelPackageGroupName=GROUP, InferenceSpecification=CONTAINERS, ModelApprovalStatus="Maybe"
        ),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert excinfo.value.response["Error"]["Code"] == "ValidationException"


def test_pipeline_scenario(aws: Any) -> None:
    sm, s3 = aws.sagemaker, aws.s3
    sample.upload_sample(s3)  # the local executor really runs it; moto only records it
    definition = json.dumps(sample.definition())
    created = sm.create_pipeline(PipelineName="parity-pipeline", PipelineDefinition=definition, RoleArn=ROLE)
    assert created["PipelineArn"] == "arn:aws:sagemaker:us-east-1:123456789012:pipeline/parity-pipeline"
    described = sm.describe_pipeline(PipelineName="parity-pipeline")
    assert json.loads(described["PipelineDefinition"]) == json.loads(definition)
    assert described["PipelineStatus"] == "Active" and described["RoleArn"] == ROLE
    with pytest.raises(ClientError) as excinfo:
        sm.create_pipeline(PipelineName="parity-pipeline", PipelineDefinition=definition, RoleArn=ROLE)
    assert excinfo.value.response["Error"]["Code"] == "ValidationException"

    changed = sample.definition()
    changed["Parameters"][1]["DefaultValue"] = "1"
    sm.update_pipeline(PipelineName="parity-pipeline", PipelineDefinition=json.dumps(changed), RoleArn=ROLE)
    assert json.loads(sm.describe_pipeline(PipelineName="parity-pipeline")["PipelineDefinition"]) == changed

    arns = [
        sm.start_pipeline_execution(
            PipelineName="parity-pipeline",
            PipelineExecutionDisplayName=f"run-{n}",
            PipelineParameters=[{"Name": "Epochs", "Value": str(n + 1)}],
        )["PipelineExecutionArn"]
        for n in range(2)
    ]
    for arn in arns:
        assert arn.startswith("arn:aws:sagemaker:us-east-1:123456789012:pipeline/parity-pipeline/execution/")
        execution = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        assert execution["PipelineExecutionArn"] == arn
        assert execution["PipelineArn"] == created["PipelineArn"]
        assert execution["PipelineExecutionStatus"] == "Succeeded"
        assert isinstance(execution["CreationTime"], datetime)
    summaries = sm.list_pipeline_executions(PipelineName="parity-pipeline")["PipelineExecutionSummaries"]
    assert {s["PipelineExecutionArn"] for s in summaries} == set(arns)
    assert {s["PipelineExecutionDisplayName"] for s in summaries} == {"run-0", "run-1"}
    assert all(s["PipelineExecutionStatus"] == "Succeeded" for s in summaries)

    with pytest.raises(ClientError):
        sm.describe_pipeline(PipelineName="no-such-pipeline")
    with pytest.raises(ClientError):
        sm.start_pipeline_execution(PipelineName="no-such-pipeline")


def test_local_lists_steps_where_moto_cannot(tmp_path: Path) -> None:
    sm = clients(local_root=tmp_path, region="us-east-1").sagemaker
    sample.upload_sample(clients(local_root=tmp_path).s3)
    sm.create_pipeline(PipelineName="p", PipelineDefinition=json.dumps(sample.definition()), RoleArn=ROLE)
    arn = sm.start_pipeline_execution(PipelineName="p")["PipelineExecutionArn"]
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    names = [s["StepName"] for s in steps]
    assert names[:2] + names[4:] == ["Register", "CompileForEdge", "Evaluate", "Train", "Preprocess"]
    assert set(names[2:4]) == {"CheckQuality", "ShouldRegister"}  # both start once Evaluate is done
    assert all(s["StepStatus"] == "Succeeded" and s["EndTime"] >= s["StartTime"] for s in steps)
    assert steps[5]["Metadata"]["TrainingJob"]["Arn"].startswith(
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/"
    )
    assert steps[0]["Metadata"]["RegisterModel"]["Arn"].endswith("/sample-pilots/1")
    assert Path(steps[6]["LocalLogPath"]).is_file()
    with mock_aws():
        moto_client = boto3.client("sagemaker", region_name="us-east-1")
        with pytest.raises(NotImplementedError):
            moto_client.list_pipeline_execution_steps(PipelineExecutionArn=arn)
    with pytest.raises(ClientError) as excinfo:  # a bad parameter is refused at start, as AWS does
        sm.start_pipeline_execution(PipelineName="p", PipelineParameters=[{"Name": "Epoch", "Value": "1"}])
    assert excinfo.value.response["Error"]["Code"] == "ValidationException"
