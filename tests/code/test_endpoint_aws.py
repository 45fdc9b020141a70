"""``robocar endpoint`` on AWS: moto where it implements the API (SageMaker's model, configuration and
endpoint calls, Application Auto Scaling, CloudWatch), botocore's Stubber where it does not
(UpdateEndpoint, sagemaker-runtime) or where a state must be forced (a failing endpoint). The local
routing is tested with a fake ``pipelines.local.endpoint_server``."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from pipelines import aws_rules
from pipelines import endpoint as ep
from pipelines.cli import main

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/robocar-endpoint"
GROUP = "robocar-classifiers"
BUCKET = "robocar-data-123456789012"
NO_WAIT = {"Delay": 1, "MaxAttempts": 2}


def _client(service: str) -> Any:
    return aws_rules.validated(boto3.client(service, region_name=REGION), service)


def _clients() -> ep.EndpointClients:
    return ep.EndpointClients(
        sagemaker=_client("sagemaker"),
        runtime=_client("sagemaker-runtime"),
        autoscaling=_client("application-autoscaling"),
        cloudwatch=_client("cloudwatch"),
        s3=_client("s3"),
    )


def _register(sagemaker: Any, status: str = "Approved") -> str:
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/robocar-classifier:1",
                    "ModelDataUrl": f"s3://{BUCKET}/model/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["application/x-image"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus=status,
    )["ModelPackageArn"]


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    with mock_aws():
        clients = _clients()
        clients.sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
        yield clients


def _async_options(**overrides: Any) -> ep.AsyncOptions:
    values: dict[str, Any] = {
        "output_path": f"s3://{BUCKET}/robocar/endpoints/e/output/",
        "failure_path": f"s3://{BUCKET}/robocar/endpoints/e/failure/",
        "max_concurrent_invocations": 4,
        "success_topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:robocar-done",
        "max_capacity": 3,
    }
    return ep.AsyncOptions(**{**values, **overrides})


def _names(clients: ep.EndpointClients) -> tuple[list[str], list[str]]:
    configs = clients.sagemaker.list_endpoint_configs()["EndpointConfigs"]
    models = clients.sagemaker.list_models()["Models"]
    return sorted(c["EndpointConfigName"] for c in configs), sorted(m["ModelName"] for m in models)


# ---------------------------------------------------------------- names
def test_default_names_fit_sagemaker_s_pattern_and_length() -> None:
    assert ep.default_endpoint_name(GROUP) == GROUP
    assert ep.default_endpoint_name(GROUP, asynchronous=True) == f"{GROUP}-async"
    long = ep.default_endpoint_name("g" * 63, asynchronous=True)
    assert len(long) == 63 and long.endswith("-async") and ep.endpoint_name_problem(long) is None
    plan = ep.EndpointPlan("e" * 63, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/1", ROLE)
    model = ep.model_request(plan)
    config = ep.endpoint_config_request(plan, model["ModelName"])
    for operation, request in (("CreateModel", model), ("CreateEndpointConfig", config)):
        assert aws_rules.request_problems("sagemaker", operation, request) == []
    assert ep.endpoint_name_problem("e" * 64)  # botocore's model: at most 63
    assert ep.endpoint_name_problem("bad_name")


def test_config_names_follow_their_content() -> None:
    plan = ep.EndpointPlan("e", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/1", ROLE)
    other = ep.EndpointPlan("e", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/2", ROLE)
    name = ep.model_request(plan)["ModelName"]
    assert name == ep.model_request(plan)["ModelName"] != ep.model_request(other)["ModelName"]
    config = ep.endpoint_config_request(plan, name)["EndpointConfigName"]
    bigger = ep.EndpointPlan(plan.endpoint_name, plan.model_package_arn, ROLE, instance_count=2)
    assert config != ep.endpoint_config_request(bigger, name)["EndpointConfigName"]
    assert ep.is_versioned_name_of("e", config) and not ep.is_versioned_name_of("e-async", config)


# ---------------------------------------------------------------- deploy (moto)
def test_deploy_creates_model_config_and_endpoint_from_the_package(aws) -> None:
    arn = _register(aws.sagemaker)
    plan = ep.EndpointPlan(GROUP, arn, ROLE, instance_type="ml.c5.xlarge", instance_count=2)
    result = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    assert result.action == "created" and result.status["EndpointStatus"] == "InService"
    model = aws.sagemaker.describe_model(ModelName=result.model_name)
    assert model["Containers"] == [{"ModelPackageName": arn}] and model["ExecutionRoleArn"] == ROLE
    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=result.config_name)
    variant = config["ProductionVariants"][0]
    assert {k: variant[k] for k in ("VariantName", "ModelName", "InstanceType", "InitialInstanceCount")} == {
        "VariantName": "AllTraffic",
        "ModelName": result.model_name,
        "InstanceType": "ml.c5.xlarge",
        "InitialInstanceCount": 2,
    }
    assert "AsyncInferenceConfig" not in config or not config["AsyncInferenceConfig"]
    endpoint = aws.sagemaker.describe_endpoint(EndpointName=GROUP)
    assert endpoint["EndpointConfigName"] == result.config_name
    assert result.created == [f"model {result.model_name}", f"endpoint-config {result.config_name}"]


def test_a_rerun_with_the_same_package_creates_nothing(aws) -> None:
    plan = ep.EndpointPlan(GROUP, _register(aws.sagemaker), ROLE)
    first = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    before = _names(aws)
    again = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    assert (again.action, again.created, again.config_name) == ("unchanged", [], first.config_name)
    assert _names(aws) == before == ([first.config_name], [first.model_name])


def test_only_an_approved_package_is_deployed(aws) -> None:
    pending = _register(aws.sagemaker, "PendingManualApproval")
    with pytest.raises(ep.EndpointError, match="PendingManualApproval.*only an Approved package"):
        ep.deploy(aws, ep.EndpointPlan(GROUP, pending, ROLE), waiter_config=NO_WAIT)
    assert _names(aws) == ([], [])


def test_approved_and_latest_resolve_through_the_registry(aws) -> None:
    approved = _register(aws.sagemaker)
    newest = _register(aws.sagemaker, "PendingManualApproval")
    assert ep.resolve_package_arn(aws.sagemaker, GROUP, "approved") == approved
    assert ep.resolve_package_arn(aws.sagemaker, GROUP, "latest") == newest
    assert ep.resolve_package_arn(aws.sagemaker, GROUP, approved) == approved
    aws.sagemaker.create_model_package_group(ModelPackageGroupName="empty")
    with pytest.raises(ValueError, match="no Approved model package in group empty"):
        ep.resolve_package_arn(aws.sagemaker, "empty", "approved")


def test_a_request_aws_would_refuse_is_refused_before_sending(aws) -> None:
    plan = ep.EndpointPlan(
        GROUP, _register(aws.sagemaker), ROLE, async_options=_async_options(output_path="out/")
    )
    with pytest.raises(Exception, match="S3OutputPath|s3OutputPath"):
        ep.deploy(aws, plan, waiter_config=NO_WAIT)
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []


# ---------------------------------------------------------------- async: config and scaling to zero
def test_async_deploy_configures_results_and_scaling_to_zero(aws) -> None:
    name = f"{GROUP}-async"
    options = _async_options()
    plan = ep.EndpointPlan(name, _register(aws.sagemaker), ROLE, async_options=options)
    result = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=result.config_name)
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": options.output_path,
            "S3FailurePath": options.failure_path,
            "NotificationConfig": {"SuccessTopic": options.success_topic},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    resource = f"endpoint/{name}/variant/AllTraffic"
    targets = aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [
        (t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets
    ] == [(resource, "sagemaker:variant:DesiredInstanceCount", 0, 3)]
    policies = {
        p["PolicyName"]: p
        for p in aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    }
    assert policies[ep.TARGET_TRACKING_POLICY]["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 5.0,
        "CustomizedMetricSpecification": {
            "MetricName": "ApproximateBacklogSizePerInstance",
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": name}],
            "Statistic": "Average",
        },
        "ScaleInCooldown": 600,
        "ScaleOutCooldown": 300,
    }
    step = policies[ep.STEP_SCALING_POLICY]
    assert step["PolicyType"] == "StepScaling"
    assert step["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "Cooldown": 300,
        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
    }
    (alarm,) = aws.cloudwatch.describe_alarms(AlarmNames=[f"{name}-HasBacklogWithoutCapacity"])[
        "MetricAlarms"
    ]
    assert {
        k: alarm[k]
        for k in (
            "MetricName",
            "Namespace",
            "Statistic",
            "Period",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "Threshold",
            "ComparisonOperator",
            "TreatMissingData",
            "Dimensions",
            "AlarmActions",
        )
    } == {  # fmt: skip
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "Dimensions": [{"Name": "EndpointName", "Value": name}],
        "AlarmActions": [step["PolicyARN"]],
    }

    again = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    assert (again.action, again.created) == ("unchanged", [])
    assert (
        len(aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]) == 1
    )
    assert (
        len(aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]) == 2
    )
    assert len(aws.cloudwatch.describe_alarms()["MetricAlarms"]) == 1
    assert _names(aws) == ([result.config_name], [result.model_name])


def test_delete_removes_everything_and_a_second_delete_finds_nothing(aws) -> None:
    name = f"{GROUP}-async"
    arn = _register(aws.sagemaker)
    plan = ep.EndpointPlan(name, arn, ROLE, async_options=_async_options())
    result = ep.deploy(aws, plan, waiter_config=NO_WAIT)
    other = ep.deploy(aws, ep.EndpointPlan(GROUP, arn, ROLE), waiter_config=NO_WAIT)  # not to be touched
    deleted = ep.delete(aws, name)
    config, model = result.config_name, result.model_name
    assert sorted(deleted) == sorted([
        f"alarm {name}-HasBacklogWithoutCapacity",
        f"scaling-policy {ep.TARGET_TRACKING_POLICY}",
        f"scaling-policy {ep.STEP_SCALING_POLICY}",
        f"scalable-target endpoint/{name}/variant/AllTraffic",
        f"endpoint {name}",
        f"endpoint-config {config}",
        f"model {model}",
    ])  # fmt: skip
    assert deleted[-3:] == [f"endpoint {name}", f"endpoint-config {config}", f"model {model}"]
    assert [e["EndpointName"] for e in aws.sagemaker.list_endpoints()["Endpoints"]] == [GROUP]
    assert _names(aws) == ([other.config_name], [other.model_name])
    assert aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert aws.cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert ep.delete(aws, name) == []


def test_a_failed_endpoint_reports_its_failure_reason(aws) -> None:
    from moto.sagemaker.models import sagemaker_backends

    plan = ep.EndpointPlan(GROUP, _register(aws.sagemaker), ROLE)
    ep.deploy(aws, plan, waiter_config=NO_WAIT)
    fake = sagemaker_backends[ACCOUNT][REGION].endpoints[GROUP]
    fake.endpoint_status, fake.failure_reason = (
        "Failed",
        "The primary container did not pass the ping health check.",
    )
    status = ep.endpoint_status(aws, GROUP)
    assert status["EndpointStatus"] == "Failed"
    with pytest.raises(
        ep.EndpointError, match="Failed: The primary container did not pass the ping health check"
    ):
        ep.deploy(aws, plan, waiter_config=NO_WAIT)


# ---------------------------------------------------------------- what moto lacks: Stubber
def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return aws_rules.validated(client, service), Stubber(client)


def _missing(stub: Stubber, method: str, what: str) -> None:
    stub.add_client_error(method, "ValidationException", f'Could not find {what} "arn:aws:sagemaker:...".')


def _endpoint(name: str, config: str, status: str = "InService", reason: str | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    answer = {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": now,
        "LastModifiedTime": now,
    }
    return answer | ({"FailureReason": reason} if reason else {})


def _package(arn: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "ModelPackageName": GROUP,
        "ModelPackageArn": arn,
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
        "ModelApprovalStatus": "Approved",
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
    }


def _expect_new_model_and_config(stub: Stubber, plan: ep.EndpointPlan) -> tuple[str, str]:
    model = ep.model_request(plan)
    config = ep.endpoint_config_request(plan, model["ModelName"])
    stub.add_response(
        "describe_model_package",
        _package(plan.model_package_arn),
        {"ModelPackageName": plan.model_package_arn},
    )
    _missing(stub, "describe_model", "model")
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/m"}, model)
    _missing(stub, "describe_endpoint_config", "endpoint configuration")
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/c"},
        config,
    )
    return model["ModelName"], config["EndpointConfigName"]


def test_a_new_package_makes_a_new_config_and_updates_the_endpoint_blue_green() -> None:
    sagemaker, stub = _stubbed("sagemaker")
    scaling, scaling_stub = _stubbed("application-autoscaling")
    plan = ep.EndpointPlan(GROUP, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/2", ROLE)
    _, config = _expect_new_model_and_config(stub, plan)
    stub.add_response("describe_endpoint", _endpoint(GROUP, f"{GROUP}-000000000000"), {"EndpointName": GROUP})
    scaling_stub.add_response(
        "describe_scalable_targets", {"ScalableTargets": []},
        {"ServiceNamespace": "sagemaker", "ResourceIds": [f"endpoint/{GROUP}/variant/AllTraffic"],
         "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"},
    )  # fmt: skip
    # No DeploymentConfig: SageMaker's default blue/green, all at once.
    stub.add_response(
        "update_endpoint", {"EndpointArn": _endpoint(GROUP, config)["EndpointArn"]},
        {"EndpointName": GROUP, "EndpointConfigName": config},
    )  # fmt: skip
    stub.add_response("describe_endpoint", _endpoint(GROUP, config, "Updating"), {"EndpointName": GROUP})
    stub.add_response("describe_endpoint", _endpoint(GROUP, config), {"EndpointName": GROUP})
    stub.add_response("describe_endpoint", _endpoint(GROUP, config), {"EndpointName": GROUP})
    with stub, scaling_stub:
        result = ep.deploy(
            ep.EndpointClients(sagemaker=sagemaker, autoscaling=scaling),
            plan,
            waiter_config={"Delay": 0, "MaxAttempts": 3},
        )
        stub.assert_no_pending_responses()
    assert result.action == "updated" and result.config_name == config


def test_a_rolled_back_update_reports_the_failure_reason() -> None:
    sagemaker, stub = _stubbed("sagemaker")
    plan = ep.EndpointPlan(GROUP, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/3", ROLE)
    _, config = _expect_new_model_and_config(stub, plan)
    old = f"{GROUP}-000000000000"
    reason = "Received server error (500) from primary: the model could not be loaded."
    stub.add_response("describe_endpoint", _endpoint(GROUP, old), {"EndpointName": GROUP})
    stub.add_response("update_endpoint", {"EndpointArn": _endpoint(GROUP, old)["EndpointArn"]}, None)
    stub.add_response("describe_endpoint", _endpoint(GROUP, old, reason=reason), {"EndpointName": GROUP})
    stub.add_response("describe_endpoint", _endpoint(GROUP, old, reason=reason), {"EndpointName": GROUP})
    with stub, pytest.raises(ep.EndpointError, match=r"rolled back.*the model could not be loaded"):
        ep.deploy(ep.EndpointClients(sagemaker=sagemaker), plan, waiter_config={"Delay": 0, "MaxAttempts": 2})


def test_an_endpoint_that_fails_to_create_reports_its_failure_reason() -> None:
    sagemaker, stub = _stubbed("sagemaker")
    plan = ep.EndpointPlan(GROUP, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/1", ROLE)
    _, config = _expect_new_model_and_config(stub, plan)
    _missing(stub, "describe_endpoint", "endpoint")
    stub.add_response("create_endpoint", {"EndpointArn": _endpoint(GROUP, config)["EndpointArn"]},
                      {"EndpointName": GROUP, "EndpointConfigName": config})  # fmt: skip
    reason = "Image size 12 GB is greater than supported size 10 GB for ml.m5.large"
    failed = _endpoint(GROUP, config, "Failed", reason)
    stub.add_response("describe_endpoint", failed, {"EndpointName": GROUP})  # the waiter: Failed
    stub.add_response("describe_endpoint", failed, {"EndpointName": GROUP})  # the error's details
    with stub, pytest.raises(ep.EndpointError) as caught:
        ep.deploy(ep.EndpointClients(sagemaker=sagemaker), plan, waiter_config={"Delay": 0, "MaxAttempts": 2})
    assert str(caught.value) == f"endpoint {GROUP} did not come into service: Failed: {reason}"


def test_invoke_sends_the_body_with_its_content_type() -> None:
    runtime, stub = _stubbed("sagemaker-runtime")
    answer = b"[0.1, 0.9]"
    stub.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/json"},
        {
            "EndpointName": GROUP,
            "Body": b"\xff\xd8jpeg",
            "ContentType": "image/jpeg",
            "Accept": "application/json",
        },
    )
    with stub:
        assert ep.invoke(runtime, GROUP, b"\xff\xd8jpeg", ep.content_type_of("car.JPG")) == (
            "application/json",
            answer,
        )
    assert ep.content_type_of("x.bin", "application/x-image") == "application/x-image"
    with pytest.raises(ValueError, match="--content-type"):
        ep.content_type_of("x.bin")


def test_cli_async_invoke_uploads_the_file_then_asks_for_it(aws, tmp_path, monkeypatch, capsys) -> None:
    aws.s3.create_bucket(Bucket=BUCKET)
    runtime, stub = _stubbed("sagemaker-runtime")
    clients = ep.EndpointClients(
        sagemaker=aws.sagemaker,
        runtime=runtime,
        autoscaling=aws.autoscaling,
        cloudwatch=aws.cloudwatch,
        s3=aws.s3,
    )
    monkeypatch.setattr(ep, "aws_endpoint_clients", lambda region, url=None: clients)
    photo = tmp_path / "car.png"
    photo.write_bytes(b"\x89PNG fake")
    import hashlib

    key = f"robocar/endpoints/{GROUP}-async/input/{hashlib.sha256(photo.read_bytes()).hexdigest()}.png"
    output = f"s3://{BUCKET}/robocar/endpoints/{GROUP}-async/output/abc.out"
    stub.add_response(
        "invoke_endpoint_async",
        {"InferenceId": "abc", "OutputLocation": output},
        {
            "EndpointName": f"{GROUP}-async",
            "InputLocation": f"s3://{BUCKET}/{key}",
            "ContentType": "image/png",
            "Accept": "application/json; verbose=true",  # a classifier answers with its class names
        },
    )
    argv = ["endpoint", "invoke", "--aws", "--async", "--recipe", "classifier", "--region", REGION,
            "--role", ROLE, "--bucket", BUCKET, str(photo)]  # fmt: skip
    with stub:
        assert main(argv) == 0
    assert aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == photo.read_bytes()
    assert output in capsys.readouterr().out


# ---------------------------------------------------------------- the CLI against moto
def test_cli_deploy_status_delete_on_aws(aws, capsys) -> None:
    arn = _register(aws.sagemaker)
    common = ["--aws", "--recipe", "classifier", "--region", REGION, "--role", ROLE, "--bucket", BUCKET]
    assert main(["endpoint", "deploy", *common, "--async", "--max-capacity", "2", "--wait-delay", "1"]) == 0
    out = capsys.readouterr().out
    assert f"created: endpoint {GROUP}-async (InService) serving {arn}" in out
    assert main(["endpoint", "deploy", *common, "--async", "--max-capacity", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"unchanged: endpoint {GROUP}-async")
    assert (
        main(
            ["endpoint", "status", "--aws", "--recipe", "classifier", "--region", REGION, "--async", "--json"]
        )
        == 0
    )
    status = json.loads(capsys.readouterr().out)
    assert status["EndpointStatus"] == "InService"
    output = status["Config"]["AsyncInferenceConfig"]["OutputConfig"]
    assert output["S3OutputPath"] == f"s3://{BUCKET}/robocar/endpoints/{GROUP}-async/output/"
    assert output["S3FailurePath"] == f"s3://{BUCKET}/robocar/endpoints/{GROUP}-async/failure/"
    assert [t["MinCapacity"] for t in status["ScalableTargets"]] == [0]
    assert main(["endpoint", "delete", "--aws", "--recipe", "classifier", "--region", REGION, "--async"]) == 0
    assert f"deleted endpoint {GROUP}-async" in capsys.readouterr().out
    assert main(["endpoint", "status", "--aws", "--recipe", "classifier", "--region", REGION, "--async"]) == 2
    assert f"no endpoint {GROUP}-async" in capsys.readouterr().err


# ---------------------------------------------------------------- --local: routed to the local server
@pytest.fixture
def fake_server(monkeypatch):
    calls: list[tuple[Any, ...]] = []
    state: dict[str, dict[str, Any]] = {}

    def deploy(
        workspace: Path,
        name: str,
        model_package_arn: str,
        *,
        port: int = 0,
        async_output: str | None = None,
        async_failure: str | None = None,
    ):
        calls.append(("deploy", workspace, name, model_package_arn, port, async_output, async_failure))
        state[name] = {
            "name": name,
            "url": "http://127.0.0.1:9",
            "pid": 1,
            "package": model_package_arn,
            "recipe": "classifier",
        }
        return state[name]

    def invoke(url: str, body: bytes, content_type: str, accept: str = "application/json"):
        calls.append(("invoke", url, body, content_type, accept))
        if content_type == "text/csv":
            return 415, "application/json", b'{"error": "bad content type"}'
        return 200, "application/json", b'{"sports": 0.9}'

    def invoke_async(
        workspace: Path, name: str, input_uri: str, *, content_type: str, accept: str = "application/json"
    ) -> str:
        calls.append(("invoke_async", workspace, name, input_uri, content_type, accept))
        return input_uri.replace("/input/", "/output/") + ".out"

    module = types.SimpleNamespace(
        deploy=deploy, invoke=invoke, invoke_async=invoke_async,
        status=lambda workspace, name: state.get(name),
        delete=lambda workspace, name: state.pop(name, None) is not None,
    )  # fmt: skip
    import pipelines.local

    monkeypatch.setitem(sys.modules, "pipelines.local.endpoint_server", module)
    monkeypatch.setattr(pipelines.local, "endpoint_server", module, raising=False)
    return calls


def test_local_commands_go_to_the_local_server(fake_server, tmp_path, monkeypatch, capsys) -> None:
    from edge.aws import clients

    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    workspace = tmp_path / "ws"
    sagemaker = clients(local_root=workspace, region=REGION).sagemaker
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = _register(sagemaker)
    local = ["--workspace", str(workspace), "--recipe", "classifier"]
    assert main(["endpoint", "deploy", *local, "--async"]) == 0
    folder = f"s3://{BUCKET}/robocar/endpoints/{GROUP}-async"
    assert fake_server[-1] == (
        "deploy",
        workspace,
        f"{GROUP}-async",
        arn,
        0,
        f"{folder}/output/",
        f"{folder}/failure/",
    )
    assert main(["endpoint", "deploy", *local, "--port", "8080"]) == 0
    assert fake_server[-1] == ("deploy", workspace, GROUP, arn, 8080, None, None)
    photo = tmp_path / "car.jpg"
    photo.write_bytes(b"\xff\xd8 not really")
    capsys.readouterr()
    assert main(["endpoint", "invoke", *local, str(photo)]) == 0
    assert fake_server[-1] == (
        "invoke",
        "http://127.0.0.1:9",
        photo.read_bytes(),
        "image/jpeg",
        "application/json; verbose=true",  # the classifier's default: probabilities with class names
    )
    assert json.loads(capsys.readouterr().out) == {"sports": 0.9}
    assert main(["endpoint", "invoke", *local, "--content-type", "text/csv", str(photo)]) == 2
    assert "answered 415" in capsys.readouterr().err
    assert main(["endpoint", "invoke", *local, "--async", str(photo)]) == 0
    (_, _, name, input_uri, content_type, _) = fake_server[-1]
    assert content_type == "image/jpeg"
    assert name == f"{GROUP}-async" and input_uri.startswith(
        f"s3://{BUCKET}/robocar/endpoints/{GROUP}-async/input/"
    )
    stored = clients(local_root=workspace, region=REGION).s3.get_object(
        Bucket=BUCKET, Key=input_uri.split("/", 3)[3]
    )
    assert stored["Body"].read() == photo.read_bytes()
    assert main(["endpoint", "delete", *local]) == 0
    assert main(["endpoint", "status", *local]) == 2


def test_an_update_changing_a_scaled_variant_s_instance_type_removes_its_scaling_first(aws) -> None:
    """moto runs everything but UpdateEndpoint (it has none: a stand-in records it); the scaling calls
    are moto's, so what was registered when the update was asked for, and after, is real."""
    name = f"{GROUP}-async"
    arn = _register(aws.sagemaker)
    first = ep.deploy(
        aws, ep.EndpointPlan(name, arn, ROLE, async_options=_async_options()), waiter_config=NO_WAIT
    )
    bigger = ep.EndpointPlan(name, arn, ROLE, instance_type="ml.c5.2xlarge", async_options=_async_options())
    seen: list[tuple[str, int]] = []

    class Updating:
        """moto's sagemaker client plus UpdateEndpoint (moto has none): the endpoint moves to the new
        configuration, after checking the scaling was removed, as AWS requires."""

        def __getattr__(self, attribute: str) -> Any:
            return getattr(aws.sagemaker, attribute)

        def update_endpoint(self, **request: Any) -> dict[str, Any]:
            aws_rules.validate_request("sagemaker", "UpdateEndpoint", request)
            targets = aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
                "ScalableTargets"
            ]
            seen.append((request["EndpointConfigName"], len(targets)))
            from moto.sagemaker.models import sagemaker_backends

            fake = sagemaker_backends[ACCOUNT][REGION].endpoints[request["EndpointName"]]
            fake.endpoint_config_name = request["EndpointConfigName"]
            return {"EndpointArn": fake.arn}

    clients = ep.EndpointClients(
        sagemaker=Updating(), autoscaling=aws.autoscaling, cloudwatch=aws.cloudwatch, runtime=None, s3=None
    )
    result = ep.deploy(clients, bigger, waiter_config=NO_WAIT)
    assert result.action == "updated" and result.config_name != first.config_name
    assert seen == [(result.config_name, 0)]  # no scalable target while the update was asked for
    targets = aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(0, 3)]
    assert (
        len(aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]) == 2
    )
    assert len(aws.cloudwatch.describe_alarms()["MetricAlarms"]) == 1


def test_cli_against_a_moto_server_over_http(monkeypatch, capsys) -> None:
    """--endpoint-url: the same boto3 clients over HTTP (what a real endpoint URL gets)."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=url)
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
        arn = _register(sagemaker)
        where = ["--endpoint-url", url, "--recipe", "classifier", "--region", REGION]
        assert main(["endpoint", "deploy", *where, "--role", ROLE, "--bucket", BUCKET]) == 0
        assert f"created: endpoint {GROUP} (InService) serving {arn}" in capsys.readouterr().out
        assert main(["endpoint", "status", *where]) == 0
        assert capsys.readouterr().out.startswith(f"{GROUP}: InService")
        assert main(["endpoint", "delete", *where]) == 0
        assert sagemaker.list_endpoints()["Endpoints"] == []
        assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    finally:
        server.stop()
