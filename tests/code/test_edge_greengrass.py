"""Greengrass v2: the recipe carries the approved artifact and its SHA-256; CreateComponentVersion gets it.

moto 5.2.5 has no greengrassv2, so the exact request is asserted with botocore's Stubber; the package
comes from a moto model registry.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from edge_fixtures import BUCKET, GROUP, TARGET, fake_model, register, registry
from moto import mock_aws

from edge import cli
from edge.greengrass import component

ARCHIVE = fake_model("greengrass")


@pytest.fixture
def package(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        registry(sagemaker, s3)
        arn = register(sagemaker, s3, ARCHIVE, key="compiled/rasp4b/model.tar.gz")
        pending = register(sagemaker, s3, ARCHIVE, key="compiled/2/rasp4b/model.tar.gz", approved=False)
        yield arn, pending


@pytest.fixture
def greengrass(monkeypatch):
    client = boto3.client("greengrassv2", region_name="us-east-1")
    stubber = Stubber(client)
    monkeypatch.setattr(component, "greengrass_client", lambda args: client)
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


def expected_recipe(arn: str) -> dict:
    """The template as the command must fill it, stated field by field."""
    recipe = copy.deepcopy(yaml.safe_load(component.RECIPE_TEMPLATE.read_text()))
    digest = hashlib.sha256(ARCHIVE).hexdigest()
    recipe["ComponentVersion"] = "1.0.1"
    recipe["ComponentConfiguration"]["DefaultConfiguration"].update(
        ModelPackageGroup=GROUP, ModelPackageArn=arn, Target=TARGET, ArtifactSha256=digest
    )
    recipe["Manifests"][0]["Artifacts"] = [
        {  # no Digest/Algorithm: Greengrass computes them from the object (component-recipe-reference)
            "URI": f"s3://{BUCKET}/compiled/rasp4b/model.tar.gz",
            "Unarchive": "NONE",
            "Permission": {"Read": "OWNER"},
        }
    ]
    return recipe


def run_cli(*argv: str) -> int:
    return cli.main(
        ["component", "--aws", "--region", "us-east-1", "--group", GROUP, "--target", TARGET, *argv]
    )


def test_creates_component_version_with_exact_request(package, greengrass, capsys):
    arn, _ = package
    inline = json.dumps(expected_recipe(arn), indent=2).encode()
    greengrass.add_response(
        "create_component_version",
        {
            "arn": "arn:aws:greengrass:us-east-1:123456789012:components:com.robocar.Pilot:versions:1.0.1",
            "componentName": "com.robocar.Pilot",
            "componentVersion": "1.0.1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "status": {"componentState": "REQUESTED"},
        },
        expected_params={
            "inlineRecipe": inline,
            "tags": {"robocar:model-package-arn": arn},
            "clientToken": hashlib.sha256(inline).hexdigest(),
        },
    )
    assert run_cli("--model-package-arn", arn) == 0
    assert "created com.robocar.Pilot 1.0.1" in capsys.readouterr().out


def test_recipe_leaves_the_digest_to_greengrass_and_configures_the_registry_sha256(
    package, greengrass, capsys
):
    arn, _ = package
    assert run_cli("--model-package-arn", arn, "--dry-run") == 0  # no Greengrass call: none stubbed
    recipe = json.loads(capsys.readouterr().out)
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert "Digest" not in artifact and "Algorithm" not in artifact  # read-only: Greengrass replaces them
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket, key = artifact["URI"].removeprefix("s3://").split("/", 1)
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert (
        configuration["ArtifactSha256"]
        == hashlib.sha256(stored).hexdigest()
        == hashlib.sha256(ARCHIVE).hexdigest()
    )
    assert (
        '--sha256 "{configuration:/ArtifactSha256}"' in recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    )
    assert component.version_configuration(recipe) == {
        "ModelPackageGroup": GROUP,
        "ModelPackageArn": arn,
        "Target": TARGET,
        "ArtifactSha256": hashlib.sha256(ARCHIVE).hexdigest(),
    }


def test_recipe_depends_on_the_token_exchange_service_for_aws_credentials():
    """The agent calls SageMaker and S3: credentials come only through this dependency (module comment)."""
    template = yaml.safe_load(component.RECIPE_TEMPLATE.read_text())
    assert template["ComponentDependencies"] == {
        "aws.greengrass.TokenExchangeService": {"VersionRequirement": "^2.0.0", "DependencyType": "HARD"}
    }
    assert "Digest" not in json.dumps(template) and "Algorithm" not in json.dumps(template)


def test_code_wheel_artifact_and_venv_install(package, greengrass, capsys):
    arn, _ = package
    wheel = "robocar_pipeline-0.1.0-py3-none-any.whl"
    uri = f"s3://{BUCKET}/code/{wheel}"
    assert run_cli("--model-package-arn", arn, "--dry-run", "--code-uri", uri) == 0
    manifest = json.loads(capsys.readouterr().out)["Manifests"][0]
    assert manifest["Artifacts"][1] == {"URI": uri, "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}
    assert f"{{artifacts:path}}/{wheel}[edge]" in manifest["Lifecycle"]["Install"]["Script"]
    assert '"{work:path}/venv/bin/robocar-edge" run' in manifest["Lifecycle"]["Run"]["Script"]


def test_unapproved_package_is_refused(package, greengrass, capsys):
    _, pending = package
    assert run_cli("--model-package-arn", pending) == 2
    assert "PendingManualApproval, not Approved" in capsys.readouterr().err


def test_no_artifact_for_target_is_refused(package, greengrass, capsys):
    arn, _ = package
    assert run_cli("--target", "jetson_nano", "--model-package-arn", arn) == 2
    assert "no artifact for target 'jetson_nano'" in capsys.readouterr().err


def test_recipe_environment_is_what_the_cli_reads(monkeypatch):
    """Every Setenv of the recipe must change the corresponding robocar-edge setting."""
    template = yaml.safe_load(component.RECIPE_TEMPLATE.read_text())
    setenv = template["Manifests"][0]["Lifecycle"]["Setenv"]
    expected = {
        "ROBOCAR_EDGE_ROOT": ("edge_root", "/gg/car"),
        "ROBOCAR_MODEL_PACKAGE_GROUP": ("model_package_group", "g-from-env"),
        "ROBOCAR_EDGE_TARGET": ("edge_target", "jetson_nano"),
        "ROBOCAR_EDGE_INTERVAL": ("edge_interval", "42"),
        "ROBOCAR_REGION": ("region", "eu-west-1"),
        "ROBOCAR_EDGE_SOURCE": ("edge_source", "tub:/data/tub"),
        "ROBOCAR_EDGE_PREFER": ("edge_prefer", "litert-int8"),
        "ROBOCAR_MQTT_HOST": ("mqtt_host", "broker.local"),
        "ROBOCAR_MQTT_PORT": ("mqtt_port", "8883"),
        "ROBOCAR_MQTT_TOPIC": ("mqtt_topic", "cars/7"),
    }
    assert setenv.pop("ROBOCAR_EDGE_REGISTRY") == "aws", "cars in the field use AWS, not a local workspace"
    assert set(setenv) == set(expected)
    for name, (_, value) in expected.items():
        monkeypatch.setenv(name, value)
    args = cli.build_parser().parse_args(["run"])
    cli.resolve_settings(args)  # flag > environment > robocar.toml > default (edge/settings.py)
    for name, (attribute, value) in expected.items():
        assert str(getattr(args, attribute)) in (value, f"{float(value)}" if value.isdigit() else value), name
    config = template["ComponentConfiguration"]["DefaultConfiguration"]
    for value in setenv.values():
        if value.startswith("{configuration:/"):
            assert value.removeprefix("{configuration:/").removesuffix("}") in config


def test_code_uri_must_be_a_wheel(package, greengrass, capsys):
    arn, _ = package
    assert run_cli("--model-package-arn", arn, "--dry-run", "--code-uri", f"s3://{BUCKET}/code/x.zip") == 2
    assert "is not a wheel (.whl)" in capsys.readouterr().err


def test_digest_is_base64_of_sha256_bytes():
    assert (
        component.greengrass_digest(hashlib.sha256(b"").hexdigest())
        == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    )
    with pytest.raises(Exception, match="not a SHA-256"):
        component.greengrass_digest("xyz")


def test_parser_accepts_component_flags():
    parser = argparse.ArgumentParser()
    component.add_arguments(parser)
    args = parser.parse_args(["--model-package-arn", "arn:x", "--dry-run"])
    assert (
        args.dry_run
        and args.kind == "drive"
        and component.COMPONENT_KINDS["drive"][1] == component.COMPONENT_NAME
    )
