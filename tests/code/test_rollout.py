"""The rollout function against moto's Model Registry, with Greengrass v2 (not in moto) stubbed exactly."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from edge_fixtures import edge_metadata
from moto import mock_aws

from pipelines import event_pattern, events, infra

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


def greengrass_stub(*, conflict: bool = False) -> tuple[Any, Stubber]:
    client = boto3.client("greengrassv2", region_name="us-east-1")
    stubber = Stubber(client)
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
            {"inlineRecipe": ANY, "tags": ANY, "clientToken": ANY},  # botocore fills the token
        )
    stubber.add_response(
        "create_deployment",
        {"deploymentId": "d-1"},
        {
            "targetArn": THING_GROUP_ARN,
            "deploymentName": "com.robocar.Pilot-1.0.1",
            "components": {
                "com.robocar.Pilot": {
                    "componentVersion": "1.0.1",
                    "configurationUpdate": {"merge": json.dumps({"Region": "us-east-1"})},
                }
            },
            "deploymentPolicies": rollout_handler.DEPLOYMENT_POLICIES,
            "tags": ANY,
        },
    )
    return client, stubber


def test_approved_package_becomes_a_component_version_and_a_deployment(sagemaker: Any) -> None:
    arn = register(sagemaker)
    greengrass, stubber = greengrass_stub()
    recipes: list[dict[str, Any]] = []
    greengrass.meta.events.register(
        "provide-client-params.greengrassv2.CreateComponentVersion",
        lambda params, **_: recipes.append(json.loads(params["inlineRecipe"])),
    )
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
        stubber.assert_no_pending_responses()
    assert result["status"] == "deployed"
    assert result["deploymentId"] == "d-1"
    assert result["componentCreated"] is True
    (recipe,) = recipes
    assert recipe["ComponentName"] == "com.robocar.Pilot"
    assert recipe["ComponentVersion"] == "1.0.1"
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageArn"] == arn
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ArtifactSha256"] == DIGEST
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert (artifact["URI"], artifact["Algorithm"]) == (ARTIFACT, "SHA-256")
    assert base64.b64decode(artifact["Digest"]).hex() == DIGEST  # Greengrass checks it on the car


def test_redelivered_event_reuses_the_existing_component_version(sagemaker: Any) -> None:
    arn = register(sagemaker)
    greengrass, stubber = greengrass_stub(conflict=True)
    with stubber:
        result = rollout(approval_event(arn), sagemaker=sagemaker, greengrass=greengrass, config=CONFIG)
    assert result["status"] == "deployed"
    assert result["componentCreated"] is False


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
    exceptions = type("E", (), {"ConflictException": Conflict})
    def create_component_version(self, **request):
        self.recipe = json.loads(request["inlineRecipe"])
    def create_deployment(self, **request):
        return {"deploymentId": "d-" + request["components"]["com.robocar.Pilot"]["componentVersion"]}

greengrass = Greengrass()
config = handler.RolloutConfig("robocar-pilots", "com.robocar.Pilot", "rasp4b", "arn:thinggroup")
result = handler.rollout(json.loads(sys.argv[3]), sagemaker=Registry(), greengrass=greengrass, config=config)
print(json.dumps({"result": result, "recipe": greengrass.recipe, "yaml": "yaml" in sys.modules}))
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
    assert output["recipe"]["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageArn"] == arn
    assert output["yaml"] is False
