"""The rollout function against moto's Model Registry, with Greengrass v2 (not in moto) stubbed exactly."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from edge_fixtures import edge_metadata
from moto import mock_aws

from pipelines import aws_rules, event_pattern, events, infra

rollout_handler = infra.load_rollout_handler()
RolloutConfig, RolloutError = rollout_handler.RolloutConfig, rollout_handler.RolloutError
rollout, handler = rollout_handler.rollout, rollout_handler.handler

GROUP = "robocar-pilots"
TARGET = "rasp4b"
DIGEST = "ab" * 32
ARTIFACT = "s3://robocar-data/robocar/edge/rasp4b/model.tar.gz"
THING_GROUP_ARN = "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-cars"
CONFIG = RolloutConfig(GROUP, "com.robocar.Pilot", TARGET, THING_GROUP_ARN)


@pytest.fixture()
def sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("sagemaker")
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        yield client


def register(sagemaker: Any, *, status: str = "Approved", target: str = TARGET) -> str:
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/i:1"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata(target, ARTIFACT, DIGEST),
        ModelApprovalStatus=status,
    )["ModelPackageArn"]


def approval_event(arn: str, version: int = 1) -> dict[str, Any]:
    return events.model_package_state_change_event(
        model_package_arn=arn, group=GROUP, version=version, approval_status="Approved"
    )


SHA_CONFIG = {  # what every deployment of package 1 merges into the component's configuration
    "ModelPackageGroup": GROUP,
    "Target": TARGET,
    "ArtifactSha256": DIGEST,
    "Region": "us-east-1",
}
OTHER_COMPONENTS = {  # what a person deployed to the cars besides the pilot
    "aws.greengrass.Nucleus": {
        "componentVersion": "2.12.6",
        "configurationUpdate": {"merge": '{"jvmOptions":"-Xmx64m"}'},
    },
    "com.example.Lidar": {
        "componentVersion": "1.2.0",
        "runWith": {"posixUser": "lidar:lidar", "systemResourceLimits": {"memory": 65536, "cpus": 0.5}},
    },
}
GROUP_POLICIES = {
    "failureHandlingPolicy": "DO_NOTHING",
    "componentUpdatePolicy": {"timeoutInSeconds": 300, "action": "NOTIFY_COMPONENTS"},
    "configurationValidationPolicy": {"timeoutInSeconds": 45},
}
GROUP_JOB = {
    "jobExecutionsRolloutConfig": {"maximumPerMinute": 5},
    "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
}


def merged_config(arn: str, **extra: str) -> str:
    return json.dumps({**SHA_CONFIG, "ModelPackageArn": arn, **extra}, sort_keys=True, separators=(",", ":"))


def summary(deployment_id: str, status: str = "ACTIVE", **fields: Any) -> dict[str, Any]:
    return {
        "targetArn": THING_GROUP_ARN,
        "revisionId": "3",
        "deploymentId": deployment_id,
        "deploymentName": "fleet",
        "creationTimestamp": 1_700_000_000,
        "deploymentStatus": status,
        "isLatestForTarget": True,
        **fields,
    }


def group_deployment(
    deployment_id: str, components: dict[str, Any], status: str = "ACTIVE"
) -> dict[str, Any]:
    """GetDeployment's answer for the thing group's current deployment."""
    return {
        **summary(deployment_id, status),
        "iotJobId": f"job-{deployment_id}",
        "iotJobArn": f"arn:aws:iot:us-east-1:123456789012:job/job-{deployment_id}",
        "components": components,
        "deploymentPolicies": GROUP_POLICIES,
        "iotJobConfiguration": GROUP_JOB,
        "tags": {"team": "cars", "aws:cloudformation:stack-name": "fleet"},  # aws: tags are AWS's own
    }


class Recorded:
    """Every request the client sends, as sent (before botocore serializes it)."""

    def __init__(self, client: Any) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("provide-client-params.greengrassv2.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests.append((model.name, copy.deepcopy(params)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == operation]


def greengrass_stub(
    *,
    conflict: bool = False,
    current: dict[str, Any] | None = None,
    list_pages: list[list[dict]] | None = None,
) -> tuple[Any, Stubber, Recorded]:
    """A greengrassv2 client whose component version and deployment lookup are stubbed in call order."""
    client = boto3.client("greengrassv2", region_name="us-east-1")
    stubber, recorded = Stubber(client), Recorded(client)
    if conflict:
        stubber.add_client_error("create_component_version", "ConflictException", http_status_code=409)
    else:
        stubber.add_response(
            "create_component_version",
            {
                "componentName": CONFIG.component_name,
                "componentVersion": "1.0.1",
                "creationTimestamp": 0,
                "status": {"componentState": "DEPLOYABLE"},
            },  # fmt: skip
            {"inlineRecipe": ANY, "tags": ANY, "clientToken": ANY},
        )
    pages = list_pages if list_pages is not None else [[summary(current["deploymentId"])] if current else []]
    for index, page in enumerate(pages):
        response: dict[str, Any] = {"deployments": page}
        expected: dict[str, Any] = {"targetArn": THING_GROUP_ARN, "historyFilter": "LATEST_ONLY"}
        if index + 1 < len(pages):
            response["nextToken"] = f"page-{index + 1}"
        if index:
            expected["nextToken"] = f"page-{index}"
        stubber.add_response("list_deployments", response, expected)
    if current:
        stubber.add_response("get_deployment", current, {"deploymentId": current["deploymentId"]})
    return client, stubber, recorded


def expect_deployment(stubber: Stubber, expected: dict[str, Any]) -> None:
    stubber.add_response("create_deployment", {"deploymentId": "d-new"}, {**expected, "clientToken": ANY})


def assert_valid_for_aws(recorded: Recorded) -> None:
    """Patterns, lengths and enums of every request: what the Stubber does not check."""
    assert recorded.requests
    for operation, params in recorded.requests:
        assert aws_rules.request_problems("greengrassv2", operation, params) == [], operation


def test_approved_package_becomes_a_component_version_and_the_groups_first_deployment(sagemaker: Any) -> None:
    arn = register(sagemaker)
    greengrass, stubber, recorded = greengrass_stub(current=None)
    expect_deployment(
        stubber,
        {
            "targetArn": THING_GROUP_ARN,
            "deploymentName": "com.robocar.Pilot-1.0.1",
            "components": {
                "com.robocar.Pilot": {
                    "componentVersion": "1.0.1",
                    "configurationUpdate": {"merge": merged_config(arn)},
                }
            },
            "deploymentPolicies": rollout_handler.DEPLOYMENT_POLICIES,
            "tags": {"robocar:model-package": arn},
        },
    )
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert result["status"] == "deployed"
    assert (result["deploymentId"], result["deploymentCreated"], result["componentCreated"]) == (
        "d-new",
        True,
        True,
    )
    assert (result["revisedDeploymentId"], result["keptComponents"]) == (None, [])
    (request,) = recorded.of("CreateComponentVersion")
    recipe = json.loads(request["inlineRecipe"])
    assert recipe["ComponentName"] == "com.robocar.Pilot"
    assert recipe["ComponentVersion"] == "1.0.1"
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageArn"] == arn
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ArtifactSha256"] == DIGEST
    assert recipe["ComponentDependencies"]["aws.greengrass.TokenExchangeService"]["DependencyType"] == "HARD"
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert artifact["URI"] == ARTIFACT
    assert "Digest" not in artifact and "Algorithm" not in artifact  # Greengrass computes and replaces them
    assert_valid_for_aws(recorded)


def test_a_new_version_keeps_every_other_component_and_the_groups_settings(sagemaker: Any) -> None:
    arn = register(sagemaker)
    pilot_before = {
        "componentVersion": "1.0.0",
        "configurationUpdate": {
            "merge": '{"ArtifactSha256":"' + "0" * 64 + '","MqttHost":"192.168.1.7"}',
            "reset": ["/Source"],
        },
        "runWith": {"posixUser": "pilot"},
    }
    current = group_deployment("d-old", {**OTHER_COMPONENTS, "com.robocar.Pilot": pilot_before})
    greengrass, stubber, recorded = greengrass_stub(current=current)
    expect_deployment(
        stubber,
        {
            "targetArn": THING_GROUP_ARN,
            "deploymentName": "com.robocar.Pilot-1.0.1",
            "components": {
                **OTHER_COMPONENTS,  # versions, configuration updates and runWith as they were
                "com.robocar.Pilot": {
                    "componentVersion": "1.0.1",
                    "configurationUpdate": {
                        "merge": merged_config(arn, MqttHost="192.168.1.7"),  # a person's key stays
                        "reset": ["/Source"],
                    },
                    "runWith": {"posixUser": "pilot"},
                },
            },
            "deploymentPolicies": GROUP_POLICIES,
            "iotJobConfiguration": GROUP_JOB,
            "tags": {"team": "cars", "robocar:model-package": arn},
        },
    )
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert result["revisedDeploymentId"] == "d-old"
    assert result["keptComponents"] == ["aws.greengrass.Nucleus", "com.example.Lidar"]
    assert result["deploymentCreated"] is True
    assert_valid_for_aws(recorded)


def test_the_groups_deployment_is_found_across_pages_and_subdeployments_are_not_it(sagemaker: Any) -> None:
    arn = register(sagemaker)
    current = group_deployment("d-group", dict(OTHER_COMPONENTS))
    subgroup = summary(
        "d-sub",
        targetArn="arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-cars-west",
        parentTargetArn=THING_GROUP_ARN,
    )
    greengrass, stubber, recorded = greengrass_stub(
        current=current, list_pages=[[], [subgroup], [summary("d-group")]]
    )
    stubber.add_response("create_deployment", {"deploymentId": "d-new"}, None)
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert result["revisedDeploymentId"] == "d-group"
    (request,) = recorded.of("CreateDeployment")
    assert set(request["components"]) == {*OTHER_COMPONENTS, "com.robocar.Pilot"}


def test_redelivered_event_when_the_group_runs_this_version_creates_no_deployment(sagemaker: Any) -> None:
    arn = register(sagemaker)
    ours = {"componentVersion": "1.0.1", "configurationUpdate": {"merge": merged_config(arn)}}
    current = group_deployment("d-ours", {**OTHER_COMPONENTS, "com.robocar.Pilot": ours})
    greengrass, stubber, recorded = greengrass_stub(conflict=True, current=current)
    with stubber:  # no create_deployment queued: a second deployment would fail the test
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert result["status"] == "deployed"
    assert (result["componentCreated"], result["deploymentCreated"], result["deploymentId"]) == (
        False,
        False,
        "d-ours",
    )
    assert recorded.of("CreateDeployment") == []


@pytest.mark.parametrize("status", ["CANCELED", "FAILED"])
def test_a_cancelled_or_failed_deployment_of_this_version_is_revised_and_deployed_again(
    sagemaker: Any, status: str
) -> None:
    """Not applied to the group, so not "already deployed"; its other components are still kept."""
    arn = register(sagemaker)
    ours = {"componentVersion": "1.0.1", "configurationUpdate": {"merge": merged_config(arn)}}
    current = group_deployment("d-stopped", {**OTHER_COMPONENTS, "com.robocar.Pilot": ours}, status)
    greengrass, stubber, recorded = greengrass_stub(conflict=True, current=current)
    stubber.add_response("create_deployment", {"deploymentId": "d-again"}, None)
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert (result["deploymentId"], result["deploymentCreated"]) == ("d-again", True)
    (request,) = recorded.of("CreateDeployment")
    assert request["components"] == {**OTHER_COMPONENTS, "com.robocar.Pilot": ours}
    assert_valid_for_aws(recorded)


def test_racing_deliveries_send_the_same_client_token_and_a_new_revision_another() -> None:
    values = {**SHA_CONFIG, "ModelPackageArn": "arn:p/1"}
    current = group_deployment("d-1", dict(OTHER_COMPONENTS))
    first = rollout_handler.deployment_request(current, CONFIG, "1.0.1", values, "arn:p/1")
    again = rollout_handler.deployment_request(copy.deepcopy(current), CONFIG, "1.0.1", values, "arn:p/1")
    later = rollout_handler.deployment_request(
        {**current, "deploymentId": "d-2"}, CONFIG, "1.0.1", values, "arn:p/1"
    )
    assert first["clientToken"] == again["clientToken"] != later["clientToken"]
    assert aws_rules.request_problems("greengrassv2", "CreateDeployment", first) == []


def test_the_shape_check_catches_what_aws_would_refuse() -> None:
    """The pattern/length check itself can fail: values botocore's own validation lets through."""
    bad = {
        "targetArn": "arn:aws:iot:us-east-1:123456789012:group/robocar-cars",  # not thing|thinggroup
        "deploymentName": "x" * 257,
        "components": {"c": {"componentVersion": "1" * 65}},
        "tags": {"k": "v" * 257},
        "clientToken": "not_a_token!",
    }
    found = aws_rules.request_problems("greengrassv2", "CreateDeployment", bad)
    assert len(found) == 5, found
    assert aws_rules.request_problems("greengrassv2", "ListDeployments", {"historyFilter": "NEWEST"})


def test_revoked_approval_is_skipped(sagemaker: Any) -> None:
    arn = register(sagemaker)
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    greengrass = boto3.client("greengrassv2", region_name="us-east-1")
    with Stubber(greengrass):  # no response queued: any Greengrass call would fail the test
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
    assert result["status"] == "skipped"
    assert "Rejected" in result["reason"]


def test_package_without_the_cars_target_is_refused(sagemaker: Any) -> None:
    arn = register(sagemaker, target="jetson_nano")
    greengrass = boto3.client("greengrassv2", region_name="us-east-1")
    with Stubber(greengrass), pytest.raises(RolloutError, match="no artifact for target 'rasp4b'"):
        rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)


def test_the_rule_pattern_selects_exactly_the_events_the_function_acts_on() -> None:
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/3"
    approved = approval_event(arn, 3)
    pending = events.model_package_state_change_event(
        model_package_arn=arn, group=GROUP, version=3, approval_status="PendingManualApproval"
    )
    other_group = events.model_package_state_change_event(
        model_package_arn=arn, group="someone-else", version=3, approval_status="Approved"
    )
    pattern = events.approved_pattern(GROUP)
    assert [event_pattern.matches(pattern, e) for e in (approved, pending, other_group)] == [
        True,
        False,
        False,
    ]


def test_lambda_entry_point_reads_its_configuration_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EDGE_TARGET", raising=False)
    for name, value in {"MODEL_PACKAGE_GROUP": GROUP, "COMPONENT_NAME": "c", "THING_GROUP_ARN": "t"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(RolloutError, match="EDGE_TARGET"):
        handler(approval_event("arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"))


ISOLATED_ROLLOUT = """
import json, sys
sys.path.insert(0, sys.argv[1])
assert "yaml" not in sys.modules and "boto3" not in sys.modules
import handler

class Conflict(Exception):
    pass

class Registry:
    def describe_model_package(self, ModelPackageName):
        return json.loads(sys.argv[2])

class Greengrass:
    exceptions = type("E", (), {"ConflictException": Conflict, "ValidationException": Conflict})
    def create_component_version(self, **request):
        self.recipe = json.loads(request["inlineRecipe"])
    def list_deployments(self, **request):
        return {"deployments": [{"targetArn": request["targetArn"], "deploymentId": "d-0",
                                 "isLatestForTarget": True, "deploymentStatus": "ACTIVE"}]}
    def get_deployment(self, deploymentId):
        return {"deploymentId": deploymentId, "deploymentStatus": "ACTIVE", "targetArn": "arn:thinggroup",
                "components": {"aws.greengrass.Nucleus": {"componentVersion": "2.12.6"}}}
    def create_deployment(self, **request):
        self.deployment = request
        return {"deploymentId": "d-" + request["components"]["com.robocar.Pilot"]["componentVersion"]}

greengrass = Greengrass()
config = handler.RolloutConfig("robocar-pilots", "com.robocar.Pilot", "rasp4b", "arn:thinggroup")
result = handler.rollout(json.loads(sys.argv[3]), sagemaker=Registry(), greengrass=greengrass, config=config)
print(json.dumps({"result": result, "recipe": greengrass.recipe, "deployment": greengrass.deployment,
                  "yaml": "yaml" in sys.modules}))
"""


def test_the_lambda_zip_runs_on_its_own_without_pyyaml_or_the_project(sagemaker: Any, tmp_path: Any) -> None:
    import io
    import subprocess
    import sys
    import zipfile

    zipfile.ZipFile(io.BytesIO(infra.rollout_zip())).extractall(tmp_path)
    arn = register(sagemaker)
    description = {k: v for k, v in sagemaker.describe_model_package(ModelPackageName=arn).items()}
    description.pop("ResponseMetadata")
    run = subprocess.run(  # -S: no site-packages at all, only the zip and the standard library
        [sys.executable, "-S", "-c", ISOLATED_ROLLOUT, str(tmp_path), json.dumps(description, default=str),
         json.dumps(approval_event(arn))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    output = json.loads(run.stdout)
    assert output["result"]["deploymentId"] == "d-1.0.1"
    assert set(output["deployment"]["components"]) == {"aws.greengrass.Nucleus", "com.robocar.Pilot"}
    assert output["recipe"]["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageArn"] == arn
    assert output["yaml"] is False
