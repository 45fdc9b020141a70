"""infra/template.yaml: cfn-lint clean, the same rules as pipelines/events.py, deployable (moto)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from pipelines import event_pattern, events, infra
from pipelines.commands import infra as infra_command

# moto models no AWS::S3::BucketPolicy / AWS::SageMaker::ModelPackageGroup in CloudFormation and says so
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto")
ACCOUNT = events.EXAMPLE_ACCOUNT
BUCKET = f"robocar-data-{ACCOUNT}-us-east-1"


def test_template_passes_cfn_lint(tmp_path: Path) -> None:
    from cfnlint.api import lint_file

    assert [str(match) for match in lint_file(infra.TEMPLATE_PATH)] == []
    broken = tmp_path / "broken.yaml"  # the check can fail: an unknown property is reported
    broken.write_text(infra.TEMPLATE_PATH.read_text().replace("VersioningConfiguration:", "Versioning:"))
    assert lint_file(broken)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"Prefix": "team-a/cars", "ModelPackageGroupName": "team-a-pilots", "ProjectName": "teama"}],
)
def test_template_rules_equal_the_one_definition(overrides: dict[str, str]) -> None:
    template = infra.load_template()
    assert infra.template_drift(template, overrides) == []
    rules = infra.render_rules(template, overrides)
    prefix = overrides.get("Prefix", "robocar")
    assert rules.raw_prefix == f"{prefix}/raw/"
    assert rules.new_data_pattern == events.new_data_pattern(rules.bucket, f"{prefix}/raw")


def test_a_changed_template_rule_is_reported() -> None:
    template = copy.deepcopy(infra.load_template())
    rule = template["Resources"]["ApprovedRule"]["Properties"]["EventPattern"]
    rule["detail"]["ModelApprovalStatus"] = ["Approved", "PendingManualApproval"]
    (drift,) = infra.template_drift(template)
    assert drift.startswith("ApprovedRule.EventPattern")


def _object_keys_of_a_v2_tub(prefix: str) -> list[str]:
    """The keys `aws s3 sync` uploads for a donkeycar 5.3 v2 tub, in its (lexical) order."""
    files = [
        "catalog_0.catalog",
        "catalog_0.catalog_manifest",
        "catalog_1.catalog",
        "catalog_1.catalog_manifest",
    ]
    files += [f"images/{i}_cam_image_array_.jpg" for i in range(5)] + ["manifest.json"]
    return sorted(f"{prefix}{name}" for name in files)


def test_one_tub_starts_one_execution() -> None:
    pattern = events.new_data_pattern(BUCKET, "robocar/raw")
    uploads = _object_keys_of_a_v2_tub("robocar/raw/tub_2026_11_21/")
    uploads += ["robocar/raw/tub_v1.tar.gz", "robocar/raw/more/tub_x.zip"]  # archives: one object per tub
    uploads += ["robocar/preprocess/train/dataset.json", "robocar/raw/manifest.json"]  # not tubs
    matched = [
        key for key in uploads if event_pattern.matches(pattern, events.s3_object_created_event(BUCKET, key))
    ]
    assert matched == [
        "robocar/raw/tub_2026_11_21/manifest.json",
        "robocar/raw/tub_v1.tar.gz",
        "robocar/raw/more/tub_x.zip",
    ]
    other_bucket = events.s3_object_created_event("someone-else", "robocar/raw/t/manifest.json")
    assert not event_pattern.matches(pattern, other_bucket)


def test_parameters_resolve_like_eventbridge() -> None:
    event = events.s3_object_created_event(BUCKET, "robocar/raw/t/manifest.json")
    parameters = events.new_data_pipeline_parameters(BUCKET, "robocar/raw")
    parameters.append({"Name": "TriggerKey", "Value": "$.detail.object.key"})
    assert events.resolve_pipeline_parameters(parameters, event) == {
        "InputDataUrl": f"s3://{BUCKET}/robocar/raw/",
        "TriggerKey": "robocar/raw/t/manifest.json",
    }


def test_rollout_zip_is_deterministic_and_has_the_handler_at_its_root() -> None:
    import io
    import zipfile

    first, second = infra.rollout_zip(), infra.rollout_zip()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "handler.py" in names and "edge/agent.py" in names
    assert not any(name.startswith(("pipelines/", "infra/")) for name in names)


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("cloudformation"), boto3.client("s3")


def test_deploy_creates_then_updates_the_stack_and_the_rules_it_deploys_are_the_definition(
    aws: tuple[Any, Any],
) -> None:
    cloudformation, s3 = aws
    spec = infra.StackSpec("robocar", {"EdgeTarget": "rasp4b"})
    created = infra.deploy(
        cloudformation, s3, spec, account=ACCOUNT, region="us-east-1", progress=lambda _: None
    )
    assert (created["action"], created["status"]) == ("create", "CREATE_COMPLETE")
    assert created["outputs"]["RawDataUrl"] == f"s3://{BUCKET}/robocar/raw/"

    rules = boto3.client("events")
    deployed = json.loads(rules.describe_rule(Name="robocar-new-data")["EventPattern"])
    assert deployed == events.new_data_pattern(BUCKET, "robocar/raw/")
    approved = json.loads(rules.describe_rule(Name="robocar-model-approved")["EventPattern"])
    assert approved == events.approved_pattern("robocar-pilots")
    (target,) = rules.list_targets_by_rule(Rule="robocar-new-data")["Targets"]
    assert target["SageMakerPipelineParameters"][
        "PipelineParameterList"
    ] == events.new_data_pipeline_parameters(BUCKET, "robocar/raw")
    boto3.client("s3").head_bucket(Bucket=BUCKET)  # moto applies no bucket settings from CloudFormation

    same = infra.deploy(
        cloudformation, s3, spec, account=ACCOUNT, region="us-east-1", progress=lambda _: None
    )
    assert same["action"] == "none"
    changed = infra.StackSpec("robocar", {"EdgeTarget": "jetson_nano"})
    updated = infra.deploy(
        cloudformation, s3, changed, account=ACCOUNT, region="us-east-1", progress=lambda _: None
    )
    assert (updated["action"], updated["status"]) == ("update", "UPDATE_COMPLETE")
    described = infra.describe(cloudformation, "robocar")
    assert described["parameters"]["EdgeTarget"] == "jetson_nano"
    assert described["resources"]["RolloutFunction"]["type"] == "AWS::Lambda::Function"


def test_show_of_a_missing_stack_says_how_to_create_it(aws: tuple[Any, Any]) -> None:
    cloudformation, _ = aws
    with pytest.raises(infra.InfraError, match="robocar infra deploy"):
        infra.describe(cloudformation, "nope")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _cli(*argv: str) -> int:
    from pipelines.cli import main

    return main(list(argv))


def test_cli_deploys_and_shows_through_an_endpoint(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    endpoint = ["--endpoint-url", moto_endpoint, "--region", "us-east-1", "--stack-name", "cli-stack"]
    assert _cli("infra", "deploy", *endpoint, "--project-name", "clitest", "--prefix", "cars/") == 0
    out = capsys.readouterr().out
    assert f"s3://clitest-data-{ACCOUNT}-us-east-1/cars/raw/" in out
    assert 'prefix = "cars"' in out
    assert _cli("infra", "show", *endpoint, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "CREATE_COMPLETE"
    assert shown["outputs"]["PipelineName"] == "robocar-pipeline"


def test_cli_show_of_a_missing_stack_is_one_clear_line(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    code = _cli(
        "infra", "show", "--endpoint-url", moto_endpoint, "--region", "us-east-1", "--stack-name", "x"
    )
    assert code == 2
    assert (
        capsys.readouterr().err.strip()
        == "robocar: error: no stack named x (deploy it with `robocar infra deploy`)"
    )


def test_cli_check_agrees_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("infra", "check", "--prefix", "fleet") == 0
    assert "fleet/raw/" in capsys.readouterr().out


def test_cli_help_names_the_template_defaults() -> None:
    declared = infra.load_template()["Parameters"]
    for name, (_, _, help_text) in infra_command.TEMPLATE_FLAGS.items():
        assert help_text.endswith(f"({declared[name]['Default']})"), name


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def test_roles_are_least_privilege() -> None:
    resources = infra.load_template()["Resources"]
    roles = {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == {"PipelineExecutionRole", "EventBridgeRole", "RolloutRole"}
    # the only statements on every resource: APIs without resource-level permissions (for Greengrass:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiotgreengrassv2.html)
    unscoped_ok = {
        "sagemaker:ListModelPackages",
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
        "greengrass:ListDeployments",
        "greengrass:CreateDeployment",
    }
    for name, role in roles.items():
        for statement in _statements(role):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert statement["Effect"] == "Allow" and not any("*" in action for action in actions), (
                name,
                actions,
            )
            if statement["Resource"] == "*":
                assert set(actions) <= unscoped_ok, (name, actions)
    (start,) = _statements(roles["EventBridgeRole"])
    assert start["Action"] == "sagemaker:StartPipelineExecution"
    assert start["Resource"]["Fn::Sub"].endswith(":pipeline/${PipelineName}")
    context = infra.render_context(infra.load_template(), {"Prefix": "fleet/a"})
    rendered = infra.resolve(_statements(roles["PipelineExecutionRole"]), context)
    s3_objects = [s for s in rendered if "s3:PutObject" in s["Action"]]
    assert [s["Resource"] for s in s3_objects] == [f"arn:aws:s3:::{BUCKET}/fleet/a/*"]
    (listing,) = [s for s in rendered if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["fleet/a/*", "fleet/a"]


def test_the_rollout_role_allows_exactly_what_the_rollout_calls() -> None:
    """Each Greengrass call the function makes is granted, scoped where the API allows it."""
    role = infra.load_template()["Resources"]["RolloutRole"]
    context = infra.render_context(infra.load_template(), {})
    deploying = [s for s in _statements(role) if s["Sid"] != "OwnLogs"]  # its log group has no offline ARN
    statements = infra.resolve(deploying, context)

    def granted(action: str) -> list[dict[str, Any]]:
        return [
            s
            for s in statements
            if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        ]

    greengrass = {
        action
        for statement in statements
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
        if action.startswith("greengrass:")
    }
    assert greengrass == {
        "greengrass:CreateComponentVersion",
        "greengrass:TagResource",  # CreateComponentVersion and CreateDeployment send tags
        "greengrass:ListDeployments",
        "greengrass:GetDeployment",
        "greengrass:CreateDeployment",
    }
    (get,) = granted("greengrass:GetDeployment")
    assert get["Resource"] == f"arn:aws:greengrass:us-east-1:{ACCOUNT}:deployments:*"
    (create,) = granted("greengrass:CreateDeployment")
    assert create["Resource"] == "*"
    assert create["Condition"] == {"Null": {"aws:RequestTag/robocar:model-package": "false"}}
    from pipelines.infra import load_rollout_handler

    assert load_rollout_handler().MODEL_PACKAGE_TAG == "robocar:model-package"  # the tag the condition needs
    (component,) = granted("greengrass:CreateComponentVersion")
    assert component["Resource"] == [
        f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:com.robocar.Pilot",
        f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:com.robocar.Pilot:versions:*",
    ]
    (job,) = granted("iot:CreateJob")
    assert f"arn:aws:iot:us-east-1:{ACCOUNT}:thinggroup/robocar-cars" in job["Resource"]
