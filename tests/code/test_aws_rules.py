"""The local clients refuse what AWS refuses, with botocore's or AWS's own error (pipelines/aws_rules.py).

Each table row is a request a local client receives, the exception type it must raise and the message:
botocore's report for what its client checks, AWS's ``ValidationException`` text for what the service
checks (S3: its own error codes). Patterns in the expected messages are read from botocore's model, so a
newer botocore with a reworded pattern does not break the table, but a missing check does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from moto import mock_aws

from edge.aws import clients
from pipelines import aws_rules, infra
from pipelines.aws_rules import compiled_pattern, matches_pattern, validate_request, validated
from pipelines.local import run_local
from pipelines.local.executor import DefinitionError
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import LocalGreengrassClient

BUCKET = "robocar-data-123456789012"
GROUP = "robocar-pilots"
PACKAGE_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/1"
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution"
CONTAINERS = {"Containers": [{"Image": "tf-serving:2.19", "ModelDataUrl": f"s3://{BUCKET}/m.tar.gz"}]}
BOTOCORE_BUCKET_RULE = (
    'Bucket name must match the regex "^[a-zA-Z0-9.\\-_]{1,255}$" or be an ARN matching the regex '
)


def pattern(service: str, shape: str) -> str:
    return aws_rules.service_model(service).shape_for(shape).metadata["pattern"]


def enum(service: str, shape: str) -> str:
    return "[" + ", ".join(aws_rules.service_model(service).shape_for(shape).enum) + "]"


def one_error(value: str, path: str, constraint: str) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: {constraint}"
    )


def pattern_error(value: str, path: str, service: str, shape: str) -> str:
    return one_error(
        value, path, f"Member must satisfy regular expression pattern: {pattern(service, shape)}"
    )


def enum_error(value: str, path: str, service: str, shape: str) -> str:
    return one_error(value, path, f"Member must satisfy enum value set: {enum(service, shape)}")


METADATA_VALUE = pattern("sagemaker", "CustomerMetadataValue")
METADATA_KEY = pattern("sagemaker", "CustomerMetadataKey")
ENTITY_NAME = pattern("sagemaker", "EntityName")
COMMA_IN_METADATA = one_error(
    "jetson_nano,rasp4b",
    "customerMetadataProperties",
    f"Map value must satisfy constraint: [Member must satisfy regular expression pattern: {METADATA_VALUE}]",
)
THING_GROUP = "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-cars"
PIPELINE_ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/robocar-pipeline"


@pytest.fixture()
def local(tmp_path: Path) -> dict[str, Any]:
    """The clients local mode uses: clients(local_root=...) and the trigger's Greengrass client."""
    aws = clients(local_root=tmp_path, region="us-east-1")
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    greengrass = validated(LocalGreengrassClient(tmp_path), "greengrassv2")
    return {"s3": aws.s3, "sagemaker": aws.sagemaker, "greengrassv2": greengrass}


NOT_VALID = "The specified bucket is not valid."
S3_REFUSED = [
    # (method, request, exception, message)
    ("create_bucket", {"Bucket": "Robocar_Data"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "ab"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "a" * 64}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "192.168.5.4"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "robocar..data"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "xn--robocar"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "robocar-s3alias"}, ClientError, NOT_VALID),
    ("create_bucket", {"Bucket": "robocar/data"}, ParamValidationError,
     f'Invalid bucket name "robocar/data": {BOTOCORE_BUCKET_RULE}'),
    ("put_object", {"Bucket": BUCKET, "Key": ""}, ParamValidationError,
     "Invalid length for parameter Key, value: 0, valid min length: 1"),
    ("put_object", {"Bucket": BUCKET, "Key": "k" * 1025, "Body": b"x"}, ClientError, "Your key is too long."),
    # 1,024 is a byte limit: 342 three-byte characters are 1,026 bytes
    ("put_object", {"Bucket": BUCKET, "Key": "€" * 342, "Body": b"x"}, ClientError, "Your key is too long."),
    ("put_object", {"Bucket": BUCKET, "Key": "k", "Body": 3}, ParamValidationError,
     "Invalid type for parameter Body, value: 3"),
    ("put_object", {"Bucket": BUCKET, "Key": "k", "ServerSideEncryptions": "AES256"}, ParamValidationError,
     'Unknown parameter in input: "ServerSideEncryptions"'),
    ("get_object", {"Bucket": "", "Key": "k"}, ParamValidationError,
     f'Invalid bucket name "": {BOTOCORE_BUCKET_RULE}'),
    ("get_object", {"Bucket": BUCKET, "Key": "k" * 1025}, ClientError, "Your key is too long."),
    ("head_object", {"Bucket": BUCKET, "Key": "k" * 1025}, ClientError, "Bad Request"),
    ("list_objects_v2", {"Bucket": BUCKET, "MaxKeys": "10"}, ParamValidationError,
     "Invalid type for parameter MaxKeys, value: 10, type: <class 'str'>, valid types: <class 'int'>"),
    ("list_objects_v2", {"Bucket": BUCKET, "Prefixes": "raw/"}, ParamValidationError,
     'Unknown parameter in input: "Prefixes", must be one of: Bucket, Delimiter, EncodingType'),
]  # fmt: skip

SAGEMAKER_REFUSED = [
    ("create_model_package_group", {"ModelPackageGroupName": "robocar_pilots"}, ClientError,
     pattern_error("robocar_pilots", "modelPackageGroupName", "sagemaker", "EntityName")),
    ("create_model_package_group", {"ModelPackageGroupName": "r" * 64}, ClientError,
     "2 validation errors detected: "
     f"Value '{'r' * 64}' at 'modelPackageGroupName' failed to satisfy constraint: "
     "Member must have length less than or equal to 63; "
     f"Value '{'r' * 64}' at 'modelPackageGroupName' failed to satisfy constraint: "
     f"Member must satisfy regular expression pattern: {ENTITY_NAME}"),
    ("create_model_package_group",
     {"ModelPackageGroupName": "g2", "Tags": [{"Key": "team", "Value": "a"}, {"Key": "cost!", "Value": "b"}]},
     ClientError, pattern_error("cost!", "tags.2.member.key", "sagemaker", "TagKey")),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": CONTAINERS,
      "CustomerMetadataProperties": {"edge:targets": "jetson_nano,rasp4b"}},
     ClientError, COMMA_IN_METADATA),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": CONTAINERS,
      "CustomerMetadataProperties": {"edge targets?": "rasp4b"}},
     ClientError,
     one_error("edge targets?", "customerMetadataProperties",
               "Map keys must satisfy constraint: "
               f"[Member must satisfy regular expression pattern: {METADATA_KEY}]")),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": CONTAINERS, "ModelApprovalStatus": "Approve"},
     ClientError, enum_error("Approve", "modelApprovalStatus", "sagemaker", "ModelApprovalStatus")),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": CONTAINERS,
      "AdditionalInferenceSpecifications": [
          {"Name": "edge-rasp4b", "Containers": [{"Image": "litert"}]},
          {"Name": "edge_jetson_nano", "Containers": [{"Image": "litert"}]}]},
     ClientError,
     pattern_error("edge_jetson_nano", "additionalInferenceSpecifications.2.member.name", "sagemaker",
                   "EntityName")),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": {"SupportedContentTypes": ["image/jpeg"]}},
     ParamValidationError, 'Missing required parameter in InferenceSpecification: "Containers"'),
    ("create_model_package",
     {"ModelPackageGroupName": GROUP, "InferenceSpecification": CONTAINERS,
      "ModelPackageDescription": "d" * 1025},
     ClientError,
     one_error("d" * 1025, "modelPackageDescription", "Member must have length less than or equal to 1024")),
    ("update_model_package", {"ModelPackageArn": "robocar-pilots/1", "ModelApprovalStatus": "Approved"},
     ClientError, pattern_error("robocar-pilots/1", "modelPackageArn", "sagemaker", "ModelPackageArn")),
    ("update_model_package",
     {"ModelPackageArn": PACKAGE_ARN, "CustomerMetadataPropertiesToRemove": ["ok", "a,b"]},
     ClientError,
     one_error("[ok, a,b]", "customerMetadataPropertiesToRemove",
               "Member must satisfy constraint: "
               f"[Member must satisfy regular expression pattern: {METADATA_KEY}]")),
    ("update_model_package", {"ModelPackageArn": PACKAGE_ARN, "ModelApprovalStatus": "approved"},
     ClientError, enum_error("approved", "modelApprovalStatus", "sagemaker", "ModelApprovalStatus")),
    ("list_model_packages", {"ModelPackageGroupName": GROUP, "MaxResults": 101}, ClientError,
     one_error("101", "maxResults", "Member must have value less than or equal to 100")),
    ("list_model_packages", {"ModelPackageGroupName": GROUP, "MaxResults": 0}, ParamValidationError,
     "Invalid value for parameter MaxResults, value: 0, valid min value: 1"),
    ("list_model_packages", {"ModelPackageGroupName": GROUP, "SortBy": "Version"}, ClientError,
     enum_error("Version", "sortBy", "sagemaker", "ModelPackageSortBy")),
    ("describe_model_package", {"ModelPackageName": "robocar pilots/1"}, ClientError,
     pattern_error("robocar pilots/1", "modelPackageName", "sagemaker", "VersionedArnOrName")),
    ("describe_model_package", {}, ParamValidationError,
     'Missing required parameter in input: "ModelPackageName"'),
    ("create_pipeline", {"PipelineName": "robocar pipeline", "PipelineDefinition": "{}", "RoleArn": ROLE},
     ClientError, pattern_error("robocar pipeline", "pipelineName", "sagemaker", "PipelineName")),
    ("create_pipeline", {"PipelineName": "p", "PipelineDefinition": "", "RoleArn": ROLE},
     ParamValidationError, "Invalid length for parameter PipelineDefinition, value: 0, valid min length: 1"),
    ("start_pipeline_execution",
     {"PipelineName": "p", "PipelineParameters": [{"Name": "Epochs", "Value": 20}]},
     ParamValidationError, "Invalid type for parameter PipelineParameters[0].Value, value: 20"),
    ("start_pipeline_execution",
     {"PipelineName": "p", "PipelineParameters": [{"Name": "Model Type", "Value": "x"}]},
     ClientError,
     pattern_error("Model Type", "pipelineParameters.1.member.name", "sagemaker", "PipelineParameterName")),
    ("start_pipeline_execution", {"PipelineName": "p", "ClientRequestToken": "retry-1"},
     ParamValidationError, "Invalid length for parameter ClientRequestToken, value: 7, valid min length: 32"),
    ("list_pipeline_executions", {"PipelineName": "p", "SortOrder": "Newest"}, ClientError,
     enum_error("Newest", "sortOrder", "sagemaker", "SortOrder")),
]  # fmt: skip

GREENGRASS_REFUSED = [
    ("create_component_version", {"inlineRecipe": b"{}", "tags": {"robocar:model-package": "a" * 257}},
     ClientError,
     one_error("a" * 257, "tags",
               "Map value must satisfy constraint: [Member must have length less than or equal to 256]")),
    ("create_component_version", {"inlineRecipe": b"{}", "clientToken": "retry 1"}, ClientError,
     pattern_error("retry 1", "clientToken", "greengrassv2", "ClientTokenString")),
    ("create_component_version", {"inlineRecipe": {"ComponentName": "x"}}, ParamValidationError,
     "Invalid type for parameter inlineRecipe"),
    ("create_deployment", {"targetArn": "arn:aws:iot:us-east-1:123456789012:group/robocar-cars"}, ClientError,
     pattern_error("arn:aws:iot:us-east-1:123456789012:group/robocar-cars", "targetArn", "greengrassv2",
                   "TargetARN")),
    ("create_deployment",
     {"targetArn": THING_GROUP, "deploymentPolicies": {"failureHandlingPolicy": "ABORT"}},
     ClientError,
     enum_error("ABORT", "deploymentPolicies.failureHandlingPolicy", "greengrassv2",
                "DeploymentFailureHandlingPolicy")),
    ("create_deployment", {"deploymentName": "robocar"}, ParamValidationError,
     'Missing required parameter in input: "targetArn"'),
]  # fmt: skip

LONG_PATTERN = json.dumps({"source": ["x" * 4096]})
EVENTS_REFUSED = [
    ("PutRule", {"Name": "robocar new data", "EventPattern": "{}"}, ClientError,
     pattern_error("robocar new data", "name", "events", "RuleName")),
    ("PutRule", {"Name": "robocar-new-data", "State": "ON"}, ClientError,
     enum_error("ON", "state", "events", "RuleState")),
    ("PutRule", {"Name": "r" * 65}, ClientError,
     one_error("r" * 65, "name", "Member must have length less than or equal to 64")),
    ("PutRule", {"Name": "robocar-new-data", "EventPattern": LONG_PATTERN}, ClientError,
     one_error(LONG_PATTERN, "eventPattern", "Member must have length less than or equal to 4096")),
    ("PutTargets", {"Rule": "robocar-new-data", "Targets": []}, ParamValidationError,
     "Invalid length for parameter Targets, value: 0, valid min length: 1"),
    ("PutTargets", {"Rule": "robocar-new-data", "Targets": [{"Id": "start pipeline", "Arn": PIPELINE_ARN}]},
     ClientError, pattern_error("start pipeline", "targets.1.member.id", "events", "TargetId")),
    ("PutTargets",
     {"Rule": "robocar-new-data",
      "Targets": [{"Id": "t", "Arn": PIPELINE_ARN, "RetryPolicy": {"MaximumEventAgeInSeconds": 90000}}]},
     ClientError,
     one_error("90000", "targets.1.member.retryPolicy.maximumEventAgeInSeconds",
               "Member must have value less than or equal to 86400")),
    ("PutTargets",
     {"Rule": "robocar-new-data",
      "Targets": [{"Id": "t", "Arn": PIPELINE_ARN, "RetryPolicy": {"MaximumEventAgeInSeconds": 30}}]},
     ParamValidationError,
     "Invalid value for parameter Targets[0].RetryPolicy.MaximumEventAgeInSeconds, value: 30, "
     "valid min value: 60"),
]  # fmt: skip


def _assert_refused(exc_info: pytest.ExceptionInfo, error: type, message: str) -> None:
    assert exc_info.type is error or (error is ClientError and issubclass(exc_info.type, ClientError))
    if error is ClientError:
        response = exc_info.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["Error"]["Message"] == message
    else:
        assert message in exc_info.value.kwargs["report"]


@pytest.mark.parametrize(("method", "request_", "error", "message"), S3_REFUSED)
def test_local_s3_refuses_as_aws(
    local: dict[str, Any], method: str, request_: dict, error: type, message: str
) -> None:
    with pytest.raises(Exception) as exc_info:  # noqa: B017 (the type is asserted exactly below)
        getattr(local["s3"], method)(**request_)
    _assert_refused(exc_info, error, message)


@pytest.mark.parametrize(("method", "request_", "error", "message"), SAGEMAKER_REFUSED)
def test_local_sagemaker_refuses_as_aws(
    local: dict[str, Any], method: str, request_: dict, error: type, message: str
) -> None:
    with pytest.raises(Exception) as exc_info:  # noqa: B017
        getattr(local["sagemaker"], method)(**request_)
    _assert_refused(exc_info, error, message)
    if error is ClientError:
        assert exc_info.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(("method", "request_", "error", "message"), GREENGRASS_REFUSED)
def test_local_greengrass_refuses_as_aws(
    local: dict[str, Any], method: str, request_: dict, error: type, message: str
) -> None:
    with pytest.raises(Exception) as exc_info:  # noqa: B017
        getattr(local["greengrassv2"], method)(**request_)
    _assert_refused(exc_info, error, message)


@pytest.mark.parametrize(("operation", "request_", "error", "message"), EVENTS_REFUSED)
def test_eventbridge_rule_requests_are_refused_as_aws(
    operation: str, request_: dict, error: type, message: str
) -> None:
    with pytest.raises(Exception) as exc_info:  # noqa: B017
        validate_request("events", operation, request_)
    _assert_refused(exc_info, error, message)


def test_s3_error_codes_are_s3s(local: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as bucket:
        local["s3"].create_bucket(Bucket="Robocar_Data")
    with pytest.raises(ClientError) as key:
        local["s3"].put_object(Bucket=BUCKET, Key="k" * 1025, Body=b"x")
    with pytest.raises(ClientError) as head:
        local["s3"].head_object(Bucket=BUCKET, Key="k" * 1025)
    codes = [e.value.response["Error"]["Code"] for e in (bucket, key, head)]
    assert codes == ["InvalidBucketName", "KeyTooLongError", "400"]  # HEAD answers have no body


def test_valid_requests_pass_and_reach_the_local_clients(local: dict[str, Any], tmp_path: Path) -> None:
    s3, sagemaker, greengrass = local["s3"], local["sagemaker"], local["greengrassv2"]
    key = "robocar/raw/Zürich/" + "/".join(["€" * 80] * 4)  # 342 characters, 983 bytes: under S3's 1,024
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"frame")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"frame"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="robocar/", MaxKeys=10)["KeyCount"] == 1
    s3.create_bucket(Bucket="robocar.data-2")
    metadata = {"edge:targets": "jetson_nano rasp4b", "edge:rasp4b:sha256": "ab" * 32, "Fahrer": "Zoë 東京"}
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification=CONTAINERS,
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=metadata,
        AdditionalInferenceSpecifications=[{"Name": "edge-rasp4b", "Containers": [{"Image": "litert"}]}],
    )["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"] == metadata
    pages = sagemaker.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=GROUP, MaxResults=100
    )
    assert [p["ModelPackageArn"] for page in pages for p in page["ModelPackageSummaryList"]] == [arn]
    # CreatePipeline's ClientRequestToken is required, and botocore fills it in when it is not given
    sagemaker.create_pipeline(
        PipelineName="robocar-pipeline", PipelineDefinition='{"Steps": []}', RoleArn=ROLE
    )
    recipe = json.dumps({"ComponentName": "com.robocar.Pilot", "ComponentVersion": "1.0.1"}).encode()
    greengrass.create_component_version(inlineRecipe=recipe, tags={"robocar:model-package": arn})
    greengrass.create_deployment(
        targetArn="arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-cars",
        deploymentName="robocar-1",
        components={"com.robocar.Pilot": {"componentVersion": "1.0.1"}},
        deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"},
    )
    assert (tmp_path / "greengrass" / "components" / "com.robocar.Pilot" / "1.0.1.json").is_file()


def test_the_local_clients_refuse_what_moto_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks no patterns: the comma AWS refuses in a metadata value registers fine there."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    request = {
        "ModelPackageGroupName": GROUP,
        "InferenceSpecification": CONTAINERS,
        "CustomerMetadataProperties": {"edge:targets": "jetson_nano,rasp4b"},
    }
    with mock_aws():
        moto = boto3.client("sagemaker")
        moto.create_model_package_group(ModelPackageGroupName=GROUP)
        assert moto.create_model_package(**request)["ModelPackageArn"]
    local = clients(local_root=tmp_path, region="us-east-1").sagemaker
    local.create_model_package_group(ModelPackageGroupName=GROUP)
    with pytest.raises(ClientError, match="at 'customerMetadataProperties' failed to satisfy constraint"):
        local.create_model_package(**request)
    assert (
        LocalSageMakerClient(tmp_path).list_model_packages(ModelPackageGroupName=GROUP)[
            "ModelPackageSummaryList"
        ]
        == []
    )  # nothing was registered


# ---------------------------------------------------------------- patterns
def test_unicode_pattern_classes_accept_letters_and_refuse_punctuation() -> None:
    value = METADATA_VALUE  # ([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,256}: Java repeats the end anchor
    assert "${1,256}" in value, "the quirk this test is about is still in the model"
    for accepted in ("rasp4b", "Zürich 東京 Ωmega", "edge:rasp4b:sha256", "a/b=c+d-e@f", ""):
        assert matches_pattern(value, accepted), accepted
    for refused in ("jetson_nano,rasp4b", "a;b", "x\n", "(rasp4b)"):
        assert not matches_pattern(value, refused), refused


def test_patterns_match_the_whole_value_as_aws_does() -> None:
    # the model's pattern is unanchored; re.search would accept a name with a valid stretch in it
    assert not ENTITY_NAME.startswith("^")
    assert not matches_pattern(ENTITY_NAME, "robocar_pilots")
    assert not matches_pattern(ENTITY_NAME, "-robocar")
    assert matches_pattern(ENTITY_NAME, "robocar-pilots")


def test_java_surrogate_pairs_become_code_points() -> None:
    athena = pattern("sagemaker", "AthenaCatalog")
    assert "\\uD800\\uDC00-\\uDBFF\\uDFFF" in athena  # U+10000..U+10FFFF written as UTF-16 in Java
    assert matches_pattern(athena, "catalog 😀")
    assert not matches_pattern(athena, "catalog\x01")


@pytest.mark.parametrize("service", ["s3", "sagemaker", "greengrassv2", "events"])
def test_every_pattern_of_the_local_services_compiles(service: str) -> None:
    model = aws_rules.service_model(service)
    patterns = {model.shape_for(n).metadata.get("pattern") for n in model.shape_names} - {None}
    assert patterns and [p for p in patterns if compiled_pattern(p) is None] == []


# ---------------------------------------------------------------- the wrapper
def test_the_wrapper_is_transparent_except_for_validation(tmp_path: Path) -> None:
    aws = clients(local_root=tmp_path, region="us-east-1")
    assert isinstance(aws.s3, LocalS3Client) and isinstance(aws.sagemaker, LocalSageMakerClient)
    assert aws.s3.uri_to_path(f"s3://{BUCKET}/k") == tmp_path / "s3" / BUCKET / "k"  # a helper
    assert aws.sagemaker.meta.region_name == "us-east-1"
    aws.sagemaker.on_event = print  # attributes are set on the wrapped client
    assert aws.sagemaker.wrapped.on_event is print
    with pytest.raises(TypeError, match="only accepts keyword arguments"):
        aws.s3.create_bucket(BUCKET)
    with pytest.raises(ClientError, match="at 'sortBy'"):  # a paginator checks its request
        aws.sagemaker.get_paginator("list_model_packages").paginate(SortBy="Version")
    with pytest.raises(ClientError, match="KeyTooLongError"):  # boto3's transfer methods too
        aws.s3.upload_file(__file__, BUCKET, "k" * 1025)


def test_without_botocore_the_car_gets_the_read_only_clients(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['botocore'] = None\n"
        "from edge.aws import clients\n"
        "from edge.local_readers import LocalRegistryReader, LocalS3Reader\n"
        "aws = clients(local_root=sys.argv[1])\n"
        "print(type(aws.s3) is LocalS3Reader, type(aws.sagemaker) is LocalRegistryReader,\n"
        "      any('pipelines' in name.split('.') for name in sys.modules))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    car_env = {k: v for k, v in os.environ.items() if k != "ROBOCAR_LOCAL_CLIENTS"}  # no pipelines there
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=repo, capture_output=True, text=True, check=True,
        env=car_env,
    )  # fmt: skip
    assert result.stdout.split() == ["True", "True", "False"]


def test_local_register_step_fails_with_awss_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "EdgeTargets", "Type": "String", "DefaultValue": "jetson_nano,rasp4b"}],
        "Steps": [
            {
                "Name": "Register",
                "Type": "RegisterModel",
                "Arguments": {
                    "ModelPackageGroupName": GROUP,
                    "InferenceSpecification": CONTAINERS,
                    "CustomerMetadataProperties": {"edge:targets": {"Get": "Parameters.EdgeTargets"}},
                },
            }
        ],
    }
    with pytest.raises(DefinitionError, match="AWS would refuse these step requests") as refused:
        run_local(definition, tmp_path, pipeline_name="robocar-pipeline")  # refused before anything runs
    violation = COMMA_IN_METADATA.removeprefix("1 validation error detected: ")
    assert f"step Register (CreateModelPackage): {violation}" in str(refused.value)
    # A value known only at run time (a property file's) passes that check; the registry call refuses it.
    monkeypatch.setattr("pipelines.step_requests.check_definition", lambda *args, **kwargs: [])
    execution = run_local(definition, tmp_path, pipeline_name="robocar-pipeline")
    assert execution.status == "Failed"
    assert execution.steps["Register"].failure_reason == (
        "CreateModelPackage: An error occurred (ValidationException) when calling the CreateModelPackage "
        f"operation: {COMMA_IN_METADATA}"
    )
    passing = run_local(definition, tmp_path, {"EdgeTargets": "rasp4b"}, pipeline_name="robocar-pipeline")
    assert passing.status == "Succeeded"


# ---------------------------------------------------------------- EventBridge rules of the stack
def test_the_stacks_rule_requests_are_valid_and_a_too_long_prefix_is_refused() -> None:
    template = infra.load_template()
    requests = infra.rule_requests(template)
    assert [(logical_id, operation) for logical_id, operation, _ in requests] == [
        ("NewDataRule", "PutRule"),
        ("NewDataRule", "PutTargets"),
        ("ClassifierNewDataRule", "PutRule"),
        ("ClassifierNewDataRule", "PutTargets"),
        ("DetectionNewDataRule", "PutRule"),
        ("DetectionNewDataRule", "PutTargets"),
        ("ApprovedRule", "PutRule"),
        ("ApprovedRule", "PutTargets"),
        ("ClassifierApprovedRule", "PutRule"),
        ("ClassifierApprovedRule", "PutTargets"),
        ("DetectionApprovedRule", "PutRule"),
        ("DetectionApprovedRule", "PutTargets"),
    ]
    assert infra.rule_request_problems(template) == []  # every recipe's input transformers included
    long_prefix = {"Prefix": "fleet/" + "p" * 1000}
    problems = infra.rule_request_problems(template, long_prefix)
    assert any(
        p.startswith("NewDataRule PutRule: Value '{")
        and "at 'eventPattern'" in p
        and p.endswith("Member must have length less than or equal to 4096")
        for p in problems
    ), problems
    with pytest.raises(ClientError, match="ValidationException"):
        infra.validate_rule_requests(template, long_prefix)


def test_trigger_watch_refuses_settings_eventbridge_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli import main

    argv = [
        "trigger",
        "watch",
        "--once",
        "--workspace",
        str(tmp_path),
        "--bucket",
        BUCKET,
        "--region",
        "us-east-1",
    ]
    assert main([*argv, "--prefix", "fleet/" + "p" * 1100]) == 2
    error = capsys.readouterr().err
    assert "ValidationException" in error and "when calling the PutRule operation" in error
    assert (
        "at 'eventPattern' failed to satisfy constraint: Member must have length less than or equal to 4096"
        in error
    )
