"""infra/template.yaml: cfn-lint clean, the same rules as pipelines/events.py, deployable (moto)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from edge.s3_uri import split_s3_uri
from pipelines import event_pattern, events, infra
from pipelines.commands import infra as infra_command
from pipelines.control import build_definition
from pipelines.local.executor import pipeline_arn
from pipelines.local.runners import model_artifacts_uri
from pipelines.settings import Settings
from pipelines.step_requests import StepRequest, step_requests
from processing.neo import NEO_INPUT_NAME, NeoInput, neo_input_s3_uri, requests_for_targets

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
    classifier = infra.render_rules(template, overrides, recipe="classifier")
    assert classifier.raw_prefix == f"{prefix}/raw-classifier/"
    assert classifier.new_data_pattern == events.new_data_pattern(
        rules.bucket, f"{prefix}/raw-classifier", "classifier"
    )
    assert classifier.group == "robocar-classifiers"
    assert classifier.approved_pattern == events.approved_pattern("robocar-classifiers")
    detection = infra.render_rules(template, overrides, recipe="detection")
    assert detection.raw_prefix == f"{prefix}/raw-detection/"
    assert detection.new_data_pattern == events.new_data_pattern(
        rules.bucket, f"{prefix}/raw-detection", "detection"
    )
    assert detection.approved_pattern == events.approved_pattern("robocar-detectors")


def test_each_recipe_has_its_rules_and_the_stacks_defaults_are_the_recipes() -> None:
    """One table per concept, the same recipes in each; the template's recipe defaults are theirs."""
    from edge.greengrass.component import COMPONENT_NAMES
    from edge.settings import RECIPE_NAMES
    from pipelines.datasets import RAW_FOLDERS
    from pipelines.local.trigger import THING_GROUPS
    from steps.containers import MXNET_REPOSITORY

    snapshot = infra.load_snapshot_handler()
    rollout = infra.load_rollout_handler()
    tables = [
        RAW_FOLDERS,
        events.NEW_DATA_ENDINGS,
        events.FOLDER_MARKERS,
        COMPONENT_NAMES,
        THING_GROUPS,
        infra.RECIPE_PARAMETERS,
        infra.NEW_DATA_RULES,
        infra.APPROVED_RULES,
        snapshot.PIPELINE_NAME_VARIABLES,
        rollout.ENVIRONMENT_PREFIXES,
    ]
    assert all(list(table) == list(RECIPE_NAMES) for table in tables)  # the stack serves every recipe
    template = infra.load_template()
    declared = template["Parameters"]
    for recipe, parameters in infra.RECIPE_PARAMETERS.items():
        defaults = {key: declared[name]["Default"] for key, name in parameters.items()}
        pipeline, group = RECIPE_NAMES[recipe]
        assert defaults == {
            "pipeline_name": pipeline,
            "model_package_group": group,
            "thing_group": THING_GROUPS[recipe],
            "component_name": COMPONENT_NAMES[recipe],
        }
    repository = template["Resources"]["MXNetImageRepository"]["Properties"]
    assert repository["RepositoryName"] == MXNET_REPOSITORY  # where account_image_uri points the steps


def test_the_image_repository_keeps_the_newest_images() -> None:
    """The lifecycle policy is one ECR accepts (botocore's PutLifecyclePolicy model) and expires all but
    the newest few images, whatever their tags (content-addressed tags pile up)."""
    from pipelines.aws_rules import request_problems

    properties = infra.load_template()["Resources"]["MXNetImageRepository"]["Properties"]
    text = properties["LifecyclePolicy"]["LifecyclePolicyText"]
    request = {"repositoryName": properties["RepositoryName"], "lifecyclePolicyText": text}
    assert request_problems("ecr", "PutLifecyclePolicy", request) == []
    (rule,) = json.loads(text)["rules"]
    assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}
    assert rule["action"] == {"type": "expire"}
    create = {
        "repositoryName": properties["RepositoryName"],
        "imageTagMutability": properties["ImageTagMutability"],
        "imageScanningConfiguration": {"scanOnPush": properties["ImageScanningConfiguration"]["ScanOnPush"]},
        "encryptionConfiguration": {
            "encryptionType": properties["EncryptionConfiguration"]["EncryptionType"]
        },
    }
    assert request_problems("ecr", "CreateRepository", create) == []


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


def test_new_data_invokes_the_snapshot_function_which_alone_starts_the_pipeline() -> None:
    """EventBridge can pass whole event fields only, never a manifest it computed: the rule's one target
    is the snapshot function, allowed to be invoked by this rule alone."""
    template = infra.load_template()
    context = infra.render_context(template, {})
    resources = template["Resources"]
    (target,) = infra.resolve(resources["NewDataRule"]["Properties"]["Targets"], context)
    assert target["Arn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:robocar-snapshot"
    assert not {"RoleArn", "SageMakerPipelineParameters", "Input", "InputPath"} & set(target)
    permission = resources["NewDataRuleInvokesSnapshot"]["Properties"]
    assert (permission["FunctionName"], permission["Principal"]) == (
        {"Ref": "SnapshotFunction"},
        "events.amazonaws.com",
    )
    assert permission["SourceArn"] == {"Fn::GetAtt": ["NewDataRule", "Arn"]}
    function = {
        name: infra.resolve(resources["SnapshotFunction"]["Properties"][name], context)
        for name in ("Environment", "Role")
    }
    assert function["Environment"]["Variables"] == {
        "DATA_BUCKET": BUCKET,
        "PREFIX": "robocar",
        "PIPELINE_NAME": "robocar-pipeline",
        "CLASSIFIER_PIPELINE_NAME": "robocar-classifier",
        "DETECTION_PIPELINE_NAME": "robocar-detector",
    }
    assert function["Role"] == context.attribute("SnapshotRole", "Arn")


def _transformed(target: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """What EventBridge hands the target: the input template with each ``<name>`` replaced by the JSON
    at its path, inserted as JSON where it stands unquoted and as text inside quotes
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html)."""
    transformer = target["InputTransformer"]
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        text = text.replace(f'"<{name}>"', json.dumps(value)).replace(f"<{name}>", json.dumps(value))
    return json.loads(text)


# Each image recipe's names: (rule prefix, raw folder, pipeline, group, component, thing group).
IMAGE_RECIPES = {
    "classifier": (
        "Classifier", "raw-classifier", "robocar-classifier", "robocar-classifiers", "com.robocar.Classifier",
        "robocar-classifier-cars",
    ),
    "detection": (
        "Detection", "raw-detection", "robocar-detector", "robocar-detectors", "com.robocar.Detector",
        "robocar-detector-cars",
    ),
}  # fmt: skip


def _image_recipe_rules() -> list[tuple[str, str, str, dict[str, Any]]]:
    cases = []
    for recipe, (rule, raw, _, group, _, _) in IMAGE_RECIPES.items():
        created = events.s3_object_created_event(BUCKET, f"robocar/{raw}/set_1/output.manifest")
        cases.append((recipe, f"{rule}NewDataRule", "SnapshotFunction", created))
        approved = events.model_package_state_change_event(
            model_package_arn=f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{group}/3",
            group=group,
            version=3,
            approval_status="Approved",
            region="eu-west-1",
        )
        cases.append((recipe, f"{rule}ApprovedRule", "RolloutFunction", approved))
    return cases


@pytest.mark.parametrize(("recipe", "rule", "function", "event"), _image_recipe_rules())
def test_the_image_recipes_rules_tell_the_same_functions_the_recipe(
    recipe: str, rule: str, function: str, event: dict[str, Any]
) -> None:
    """The classifier's and the detector's rules invoke the pilot's functions with ``recipe`` added to the
    event's detail (and region): each function takes the recipe's names from its own environment, none
    from the event."""
    _, raw, pipeline, group, component, thing_group = IMAGE_RECIPES[recipe]
    template = infra.load_template()
    context = infra.render_context(template, {})
    resources = template["Resources"]
    (target,) = infra.resolve(resources[rule]["Properties"]["Targets"], context)
    assert target["Arn"] == context.attribute(function, "Arn")
    delivered = _transformed(target, event)
    assert delivered["recipe"] == recipe and delivered["detail"] == event["detail"]
    permission = resources[f"{rule}Invokes{function.removesuffix('Function')}"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": [rule, "Arn"]}
    assert (permission["FunctionName"], permission["Principal"]) == (
        {"Ref": function},
        "events.amazonaws.com",
    )
    variables = infra.resolve(resources[function]["Properties"]["Environment"], context)["Variables"]
    if function == "SnapshotFunction":
        handler = infra.load_snapshot_handler()
        config = handler.SnapshotConfig.from_env(variables, handler.event_recipe(delivered))
        assert (config.pipeline_name, config.raw_uri) == (pipeline, f"s3://{BUCKET}/robocar/{raw}/")
        assert handler.event_recipe(event) == "pilot"  # the pilot's rule passes the event as it is
    else:
        handler = infra.load_rollout_handler()
        config = handler.RolloutConfig.from_env(variables, handler.event_recipe(delivered))
        assert config == handler.RolloutConfig(
            group, component, "rasp4b", f"arn:aws:iot:us-east-1:{ACCOUNT}:thinggroup/{thing_group}"
        )
        assert delivered["region"] == "eu-west-1"  # the rollout reads the package's region from it
    with pytest.raises(RuntimeError, match="recipe 'other'"):
        handler.event_recipe({**delivered, "recipe": "other"})


@pytest.mark.parametrize(
    ("zipped", "kept"), [("rollout_zip", "edge/agent.py"), ("snapshot_zip", "pipelines/datasets.py")]
)
def test_function_zips_are_deterministic_and_have_the_handler_at_their_root(zipped: str, kept: str) -> None:
    import io
    import zipfile

    first, second = getattr(infra, zipped)(), getattr(infra, zipped)()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "handler.py" in names and kept in names
    assert not any(name.startswith("infra/") for name in names)
    assert not any(name.startswith("pipelines/") for name in names) or zipped == "snapshot_zip"


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
    uploader = created["outputs"]["RawDataUploaderPolicyArn"]
    assert uploader == f"arn:aws:iam::{ACCOUNT}:policy/robocar-raw-data-uploader-us-east-1"
    assert boto3.client("iam").get_policy(PolicyArn=uploader)["Policy"]["AttachmentCount"] == 0

    rules = boto3.client("events")
    deployed = json.loads(rules.describe_rule(Name="robocar-new-data")["EventPattern"])
    assert deployed == events.new_data_pattern(BUCKET, "robocar/raw/")
    approved = json.loads(rules.describe_rule(Name="robocar-model-approved")["EventPattern"])
    assert approved == events.approved_pattern("robocar-pilots")
    (target,) = rules.list_targets_by_rule(Rule="robocar-new-data")["Targets"]
    assert target["Arn"].endswith(":function:robocar-snapshot")  # the function, not the pipeline
    code = boto3.client("s3").list_objects_v2(Bucket=f"robocar-infra-{ACCOUNT}-us-east-1")["Contents"]
    assert {item["Key"].split("/")[1] for item in code} == {"rollout", "snapshot"}
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
    assert described["resources"]["SnapshotFunction"]["type"] == "AWS::Lambda::Function"


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


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of an IAM role's inline policies or of a managed policy's document."""
    properties = resource["Properties"]
    if resource["Type"] == "AWS::IAM::ManagedPolicy":
        return list(properties["PolicyDocument"]["Statement"])
    assert not properties.get("ManagedPolicyArns"), "only inline policies are evaluated"
    return [s for policy in properties.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def test_roles_are_least_privilege() -> None:
    resources = infra.load_template()["Resources"]
    roles = {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == {"PipelineExecutionRole", "SnapshotRole", "RolloutRole", "TelemetryRuleRole"}
    policies = {name: r for name, r in resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"}
    assert set(policies) == {"RawDataUploader"}
    # the only statements on every resource: APIs without resource-level permissions (for Greengrass:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiotgreengrassv2.html)
    unscoped_ok = {
        "sagemaker:ListModelPackages",
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
        "greengrass:ListDeployments",
        "greengrass:CreateDeployment",
    }
    for name, identity in {**roles, **policies}.items():
        for statement in _statements(identity):
            actions = _as_list(statement["Action"])
            assert statement["Effect"] == "Allow" and not any("*" in action for action in actions), (
                name,
                actions,
            )
            if statement["Resource"] == "*":
                assert set(actions) <= unscoped_ok, (name, actions)
    (start,) = [
        s for s in _statements(roles["SnapshotRole"]) if s["Action"] == "sagemaker:StartPipelineExecution"
    ]
    assert [resource["Fn::Sub"].rsplit(":", 1)[1] for resource in start["Resource"]] == [
        "pipeline/${PipelineName}",
        "pipeline/${ClassifierPipelineName}",
        "pipeline/${DetectionPipelineName}",
    ]
    context = infra.render_context(infra.load_template(), {"Prefix": "fleet/a"})
    rendered = infra.resolve(_statements(roles["PipelineExecutionRole"]), context)
    (listing,) = [s for s in rendered if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["fleet/a/*", "fleet/a"]


def test_the_rollout_role_allows_exactly_what_the_rollout_calls() -> None:
    """Each Greengrass call the function makes is granted, scoped where the API allows it."""
    role = infra.load_template()["Resources"]["RolloutRole"]
    context = infra.render_context(infra.load_template(), {})
    deploying = [s for s in _statements(role) if s["Sid"] != "OwnLogs"]  # its log group has no offline ARN
    statements = infra.resolve(deploying, context)

    def granting(action: str) -> list[dict[str, Any]]:
        return [s for s in statements if action in _as_list(s["Action"])]

    greengrass = {
        action
        for statement in statements
        for action in _as_list(statement["Action"])
        if action.startswith("greengrass:")
    }
    assert greengrass == {
        "greengrass:CreateComponentVersion",
        "greengrass:TagResource",  # CreateComponentVersion and CreateDeployment send tags
        "greengrass:ListDeployments",
        "greengrass:GetDeployment",
        "greengrass:CreateDeployment",
    }
    (get,) = granting("greengrass:GetDeployment")
    assert get["Resource"] == f"arn:aws:greengrass:us-east-1:{ACCOUNT}:deployments:*"
    (create,) = granting("greengrass:CreateDeployment")
    assert create["Resource"] == "*"
    assert create["Condition"] == {"Null": {"aws:RequestTag/robocar:model-package": "false"}}
    from pipelines.infra import load_rollout_handler

    assert load_rollout_handler().MODEL_PACKAGE_TAG == "robocar:model-package"  # the tag the condition needs
    (component,) = granting("greengrass:CreateComponentVersion")
    assert component["Resource"] == [
        f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:{name}{version}"
        for name in ("com.robocar.Pilot", "com.robocar.Classifier", "com.robocar.Detector")
        for version in ("", ":versions:*")
    ]
    (job,) = granting("iot:CreateJob")
    for group in ("robocar-cars", "robocar-classifier-cars", "robocar-detector-cars"):
        assert f"arn:aws:iot:us-east-1:{ACCOUNT}:thinggroup/{group}" in job["Resource"]


# ---------------------------------------------------------------- least privilege, measured
# Each identity policy of the template (every role's inline policies, every managed policy), resolved for
# sample parameters, becomes the (action, resource) pairs it allows; `allows` evaluates a request against
# them as IAM matches the Action and Resource elements: `*` any run of characters (`/` and `:` included),
# `?` one character, actions case-insensitive, ARNs case-sensitive
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html,
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html).
# Only Allow statements exist (checked: no Deny, NotAction or NotResource). Conditions are ignored, so the
# evaluator grants at least what IAM grants: a request it refuses, IAM refuses too. The one condition a
# positive case depends on (s3:ListBucket's s3:prefix) is checked on its own.
# The positive cases come from the built definition (each step's request as SageMaker sends it:
# pipelines/step_requests.py), the compile step's Neo requests and the registered package's edge URIs.
Grant = tuple[str, str]  # (action pattern, resource pattern)
SAMPLE_NEO_INPUT_SHA256 = "c0ffee" * 10 + "c0de"


def _wildcard(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, (re.IGNORECASE if ignore_case else 0) | re.DOTALL)


def allowed_pairs(statements: list[dict[str, Any]]) -> set[Grant]:
    pairs = set()
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        actions, resources = _as_list(statement["Action"]), _as_list(statement["Resource"])
        pairs |= {(action, resource) for action in actions for resource in resources}
    return pairs


def allows(pairs: set[Grant], action: str, resource: str) -> bool:
    return any(
        _wildcard(granted_action, ignore_case=True).fullmatch(action)
        and _wildcard(granted_resource, ignore_case=False).fullmatch(resource)
        for granted_action, granted_resource in pairs
    )


def refused(pairs: set[Grant], requests: list[Grant]) -> list[Grant]:
    return [request for request in requests if not allows(pairs, *request)]


def granted(pairs: set[Grant], requests: list[Grant]) -> list[Grant]:
    return [request for request in requests if allows(pairs, *request)]


def test_the_evaluator_matches_like_iam() -> None:
    pairs = {("s3:Get*", "arn:aws:s3:::b/p/*/compiled/*"), ("ecr:GetAuthorizationToken", "*")}
    assert allows(pairs, "s3:GetObject", "arn:aws:s3:::b/p/e1/compiled/rasp4b/model.tar.gz")
    assert allows(pairs, "S3:getobject", "arn:aws:s3:::b/p/x/y/compiled/z")  # actions ignore case
    assert not allows(pairs, "s3:GetObject", "arn:aws:s3:::B/p/e1/compiled/z")  # ARNs do not
    assert not allows(pairs, "s3:GetObject", "arn:aws:s3:::b/p/e1/neo/input.tar.gz")
    assert not allows(pairs, "s3:PutObject", "arn:aws:s3:::b/p/e1/compiled/z")
    assert allows(pairs, "ecr:GetAuthorizationToken", "*")
    assert allows({("iam:PassRole", "arn:aws:iam::1:role/r-?")}, "iam:PassRole", "arn:aws:iam::1:role/r-a")
    assert not allows(
        {("iam:PassRole", "arn:aws:iam::1:role/r-?")}, "iam:PassRole", "arn:aws:iam::1:role/r-ab"
    )
    with pytest.raises(AssertionError):
        allowed_pairs([{"Effect": "Allow", "NotAction": "s3:DeleteObject", "Resource": "*"}])


def _log_group_arns(template: dict[str, Any], context: infra.RenderContext) -> dict[str, str]:
    """A log group's ``Fn::GetAtt`` Arn ends in ``:*`` (every stream of the group):
    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-logs-loggroup.html"""
    return {
        logical_id: f"arn:aws:logs:{context.region}:{context.account}:log-group:"
        f"{infra.resolve(resource['Properties']['LogGroupName'], context)}:*"
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }


@dataclass(frozen=True)
class Deployment:
    """The stack's identity policies and the pipeline built for the same parameters, region and account."""

    context: infra.RenderContext
    statements: dict[str, list[dict[str, Any]]]  # role or managed policy -> resolved statements
    recipes: dict[str, dict[str, StepRequest]]  # recipe -> step name -> the request SageMaker sends for it

    @property
    def requests(self) -> dict[str, StepRequest]:
        """The pilot's pipeline (the stack's first recipe)."""
        return self.recipes["pilot"]

    def every_request(self) -> list[StepRequest]:
        return [request for requests in self.recipes.values() for request in requests.values()]

    @property
    def pairs(self) -> dict[str, set[Grant]]:
        return {name: allowed_pairs(statements) for name, statements in self.statements.items()}

    @property
    def bucket(self) -> str:
        return self.context.ref("DataBucket")

    @property
    def prefix(self) -> str:
        return self.context.ref("Prefix")

    def object_arn(self, key: str, bucket: str | None = None) -> str:
        return f"arn:aws:s3:::{bucket or self.bucket}/{self.prefix}/{key}"

    def sagemaker_arn(self, resource: str) -> str:
        return f"arn:aws:sagemaker:{self.context.region}:{self.context.account}:{resource}"


DEPLOYMENTS = {
    "defaults-us-east-1": ("us-east-1", {}),
    # a region whose DLC registry is another account, and every name changed
    "team-af-south-1": (
        "af-south-1",
        {
            "Prefix": "fleet/a",
            "ProjectName": "teama",
            "PipelineName": "team-a-pipeline",
            "ModelPackageGroupName": "team-a-pilots",
        },
    ),
}


@pytest.fixture(scope="module", params=sorted(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest) -> Deployment:
    region, overrides = DEPLOYMENTS[request.param]
    template = infra.load_template()
    context = infra.render_context(template, overrides, region=region)
    context = dataclasses.replace(
        context, resource_arns={**context.resource_arns, **_log_group_arns(template, context)}
    )
    statements = {
        name: infra.resolve(_statements(resource), context)
        for name, resource in template["Resources"].items()
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy")
    }
    settings = Settings(
        region=region,
        role=context.attribute("PipelineExecutionRole", "Arn"),
        bucket=context.ref("DataBucket"),
        prefix=context.ref("Prefix"),
        pipeline_name=context.ref("PipelineName"),
        model_package_group=context.ref("ModelPackageGroupName"),
        endpoint_url=None,
    )
    recipes = {}
    for recipe, parameters in infra.RECIPE_PARAMETERS.items():  # each recipe's pipeline, its stack's names
        recipe_settings = dataclasses.replace(
            settings,
            recipe=recipe,
            pipeline_name=context.ref(parameters["pipeline_name"]),
            model_package_group=context.ref(parameters["model_package_group"]),
        )
        requests = step_requests(
            json.loads(build_definition(recipe_settings)),
            pipeline_name=recipe_settings.pipeline_name,
            region=region,
        )
        recipes[recipe] = {r.step: r for r in requests}
    return Deployment(context, statements, recipes)


def _image_repository_arn(image_uri: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>`` -> the repository's ARN."""
    match = re.fullmatch(
        r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)[:@].+", image_uri
    )
    assert match, image_uri
    account, region, repository = match.groups()
    return f"arn:aws:ecr:{region}:{account}:repository/{repository}"


def _images(requests: dict[str, StepRequest]) -> set[str]:
    images = set()
    for request in requests.values():
        body = request.request
        images.add(body.get("AppSpecification", {}).get("ImageUri"))
        images.add(body.get("AlgorithmSpecification", {}).get("TrainingImage"))
        images |= {c.get("Image") for c in body.get("InferenceSpecification", {}).get("Containers", [])}
    return images - {None}


def _s3_object(uri: str, sample_name: str = "part-00000") -> str:
    """The ARN of an object a job reads or writes at ``uri``: the object itself, or one under the prefix."""
    bucket, key = split_s3_uri(uri)
    if not re.search(r"\.[a-z]+$", key.rsplit("/", 1)[-1]):
        key = f"{key.rstrip('/')}/{sample_name}"
    return f"arn:aws:s3:::{bucket}/{key}"


def _pull(image_uri: str) -> list[Grant]:
    repository = _image_repository_arn(image_uri)
    return [
        ("ecr:GetAuthorizationToken", "*"),
        ("ecr:BatchGetImage", repository),
        ("ecr:GetDownloadUrlForLayer", repository),
    ]


def _container_argument(arguments: list[str], flag: str) -> str:
    return arguments[arguments.index(flag) + 1]


def _neo_requests(compile_request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What processing/compile.py sends Neo from inside the compile step (processing/neo.py)."""
    arguments = compile_request["AppSpecification"]["ContainerArguments"]
    neo_input = NeoInput(Path(NEO_INPUT_NAME), "input", (1, 3, 120, 160), SAMPLE_NEO_INPUT_SHA256)
    output = _container_argument(arguments, "--output-s3-uri")
    return requests_for_targets(
        _container_argument(arguments, "--targets").split(","),
        neo_input,
        input_s3_uri=neo_input_s3_uri(output, neo_input),
        output_s3_uri=output,
        role_arn=_container_argument(arguments, "--role-arn"),
        timeout_s=900,
        now=1_768_469_400.0,
    )


def _job_needs(deployment: Deployment, request: StepRequest, snapshot_keys: list[str]) -> list[Grant]:
    """What the pipeline role does for one Processing or Training step: create the job, pass itself, pull
    the image, read the inputs and write the outputs (SageMaker uses the job's role for S3 and ECR)."""
    body = request.request
    if request.operation == "CreateProcessingJob":
        job = ("sagemaker:CreateProcessingJob", f"processing-job/{body['ProcessingJobName'].lower()}")
        image = body["AppSpecification"]["ImageUri"]
        reads = [i["S3Input"]["S3Uri"] for i in body.get("ProcessingInputs", [])]
        writes = [o["S3Output"]["S3Uri"] for o in body["ProcessingOutputConfig"]["Outputs"]]
        for spec in body.get("ProcessingInputs", []):
            if spec["S3Input"]["S3DataType"] == "ManifestFile":  # the manifest, then what it lists: raw data
                assert split_s3_uri(spec["S3Input"]["S3Uri"])[1].startswith(f"{deployment.prefix}/datasets/")
                reads += [f"s3://{deployment.bucket}/{deployment.prefix}/{key}" for key in snapshot_keys]
    else:
        job = ("sagemaker:CreateTrainingJob", f"training-job/{body['TrainingJobName'].lower()}")
        image = body["AlgorithmSpecification"]["TrainingImage"]
        reads = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in body["InputDataConfig"]]
        reads.append(json.loads(body["HyperParameters"]["sagemaker_submit_directory"]))
        writes = [model_artifacts_uri(body["OutputDataConfig"]["S3OutputPath"], body["TrainingJobName"])]
    describe = job[0].replace("Create", "Describe")
    return [
        (job[0], deployment.sagemaker_arn(job[1])),
        (describe, deployment.sagemaker_arn(job[1])),
        ("iam:PassRole", body["RoleArn"]),
        *_pull(image),
        *[("s3:GetObject", _s3_object(uri)) for uri in reads],
        *[("s3:PutObject", _s3_object(uri)) for uri in writes],
    ]


SNAPSHOT_KEYS = [*_object_keys_of_a_v2_tub("raw/tub_2026_11_21/"), "raw/tubs.tar.gz"]  # a manifest lists
# What an image recipe's dataset manifest lists: a labelled set, its Ground Truth manifest and photos.
RECIPE_SNAPSHOT_KEYS = {
    "pilot": SNAPSHOT_KEYS,
    **{
        recipe: [f"{raw}/set_1/output.manifest", *(f"{raw}/set_1/images/{i:06d}.jpg" for i in range(3))]
        for recipe, (_, raw, *_) in IMAGE_RECIPES.items()
    },
}
IMAGE_SNAPSHOT_KEYS = [key for recipe in IMAGE_RECIPES for key in RECIPE_SNAPSHOT_KEYS[recipe]]


def _pipeline_role_needs(deployment: Deployment, recipe: str = "pilot") -> list[Grant]:
    requests = deployment.recipes[recipe]
    snapshot_keys = RECIPE_SNAPSHOT_KEYS[recipe]
    needs = []
    for request in requests.values():
        if request.operation in ("CreateProcessingJob", "CreateTrainingJob"):
            needs += _job_needs(deployment, request, snapshot_keys)
    compile_request = requests["CompileForEdge"].request
    for neo in _neo_requests(compile_request).values():
        job = deployment.sagemaker_arn(f"compilation-job/{neo['CompilationJobName'].lower()}")
        output = neo["OutputConfig"]["S3OutputLocation"]
        needs += [
            ("s3:PutObject", _s3_object(neo["InputConfig"]["S3Uri"])),  # compile.py uploads the input
            ("sagemaker:CreateCompilationJob", job),
            ("sagemaker:DescribeCompilationJob", job),
            ("iam:PassRole", neo["RoleArn"]),
            ("s3:GetObject", _s3_object(neo["InputConfig"]["S3Uri"])),  # Neo, as this role
            ("s3:PutObject", _s3_object(output, "model-target.tar.gz")),
            ("s3:GetObject", _s3_object(output, "model-target.tar.gz")),  # compile.py downloads it
        ]
    register = requests["Register"].request
    group = register["ModelPackageGroupName"].lower()
    package = deployment.sagemaker_arn(f"model-package/{group}/1")
    needs += [
        ("sagemaker:CreateModelPackage", package),
        ("sagemaker:CreateModelPackage", deployment.sagemaker_arn(f"model-package-group/{group}")),
        *_pull(register["InferenceSpecification"]["Containers"][0]["Image"]),
        ("s3:GetObject", _s3_object(register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])),
        ("s3:GetObject", _s3_object(register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])),
        # evaluate.py's champion: the group's latest approved package, its model from an earlier run
        ("sagemaker:ListModelPackages", "*"),
        ("sagemaker:DescribeModelPackage", package),
    ]
    return needs


def _compiled_artifact_uris(deployment: Deployment, recipe: str = "pilot") -> dict[str, str]:
    """``edge:<target>:uri`` of the registered package: what the rollout renders into the recipe."""
    requests = deployment.recipes[recipe]
    metadata = requests["Register"].request["CustomerMetadataProperties"]
    return {key: uri for key, uri in metadata.items() if key.startswith("edge:") and key.endswith(":uri")}


def _other_stacks_keys(deployment: Deployment) -> list[str]:
    """Objects no role may touch: another bucket, and a sibling prefix that starts with ours."""
    return [
        deployment.object_arn("raw/tub/manifest.json", bucket=f"{deployment.bucket}-copy"),
        deployment.object_arn("preprocess/e/train/shard-00000.npz", bucket="someone-elses-bucket"),
        f"arn:aws:s3:::{deployment.bucket}/{deployment.prefix}-old/preprocess/e/train/shard-00000.npz",
    ]


def test_the_definition_names_every_s3_uri_under_the_stacks_prefix(deployment: Deployment) -> None:
    """The positive cases below are only as good as this: every URI the steps use is in the stack's bucket."""
    requests = deployment.every_request()
    uris = re.findall(r"s3://[^\"\\\s]+", json.dumps([r.request for r in requests]))
    assert uris
    assert {split_s3_uri(uri)[0] for uri in uris} == {deployment.bucket}
    assert all(split_s3_uri(uri)[1].startswith(f"{deployment.prefix}/") for uri in uris)


@pytest.mark.parametrize("recipe", ["pilot", "classifier", "detection"])
def test_the_pipeline_role_can_run_every_step_and_nothing_more(deployment: Deployment, recipe: str) -> None:
    pairs = deployment.pairs["PipelineExecutionRole"]
    needs = _pipeline_role_needs(deployment, recipe)
    assert {action.split(":")[0] for action, _ in needs} == {"sagemaker", "iam", "ecr", "s3"}
    assert refused(pairs, needs) == []

    execution = "q9x1b2c3d4e5"
    tub_keys = _object_keys_of_a_v2_tub("raw/tub_2026_11_21/") + ["raw/tubs.tar.gz"]
    raw_keys = tub_keys + IMAGE_SNAPSHOT_KEYS
    forbidden = [("s3:PutObject", deployment.object_arn(key)) for key in raw_keys]  # uploaders only
    code = deployment.object_arn(f"code/{'a' * 64}/sourcedir.tar.gz")  # `pipeline upsert` writes it
    forbidden += [
        ("s3:PutObject", code),
        ("s3:PutObject", deployment.object_arn(f"datasets/{'b' * 64}.manifest")),  # the snapshot function's
        ("s3:DeleteObject", deployment.object_arn(f"preprocess/{execution}/train/shard-00000.npz")),
        ("s3:PutObjectAcl", deployment.object_arn(f"edge/{execution}/compiled/rasp4b/model.tar.gz")),
        ("s3:GetObject", deployment.object_arn("notes/secret.txt")),  # not a step folder
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin"),
        ("sagemaker:CreateProcessingJob", deployment.sagemaker_arn("processing-job/anything-else")),
        ("sagemaker:CreateModelPackage", deployment.sagemaker_arn("model-package/another-group/1")),
    ]
    forbidden += [("s3:GetObject", arn) for arn in _other_stacks_keys(deployment)]
    forbidden += [("s3:PutObject", arn) for arn in _other_stacks_keys(deployment)]
    assert granted(pairs, forbidden) == []


def test_the_pipeline_role_pulls_only_the_definitions_images(deployment: Deployment) -> None:
    pairs = deployment.pairs["PipelineExecutionRole"]
    images = set().union(*(_images(requests) for requests in deployment.recipes.values()))
    repositories = {_image_repository_arn(image) for image in images}
    assert {arn.rsplit("/", 1)[1] for arn in repositories} == {
        "tensorflow-training",
        "tensorflow-inference",
        "robocar-mxnet",  # the image recipes' Train, Evaluate, Compile, endpoint: this account's repository
    }
    (own,) = [arn for arn in repositories if arn.endswith("/robocar-mxnet")]
    assert own == deployment.context.attribute("MXNetImageRepository", "Arn")
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert {resource for granted_action, resource in pairs if granted_action == action} == repositories
    assert {resource for action, resource in pairs if action.startswith("ecr:")} - repositories == {"*"}
    assert {action for action, resource in pairs if resource == "*" and action.startswith("ecr:")} == {
        "ecr:GetAuthorizationToken"  # the one ECR action without resource-level permissions
    }

    (training,) = [arn for arn in repositories if arn.endswith("/tensorflow-training")]
    dlc_account = training.split(":")[4]
    region = deployment.context.region
    other_dlc_account = next(
        row["Account"]
        for row in infra.load_template()["Mappings"]["DeepLearningContainers"].values()
        if row["Account"] != dlc_account
    )
    elsewhere = [
        training.replace(f":{dlc_account}:", f":{ACCOUNT}:"),  # our own account's repository of that name
        training.replace(f":{dlc_account}:", f":{other_dlc_account}:"),  # another region's DLC account
        training.replace(f":{region}:", ":us-west-2:" if region != "us-west-2" else ":us-east-1:"),
        training.replace("/tensorflow-training", "/pytorch-training"),  # another DLC repository
    ]
    assert granted(pairs, [("ecr:BatchGetImage", arn) for arn in elsewhere]) == []


def test_the_dlc_mapping_is_the_sdks_registry_table() -> None:
    """The template's per-region DLC account is the one ``image_uris`` puts in the definition's images."""
    from sagemaker.core.image_uris import config_for_framework

    from steps.containers import TF_FRAMEWORK_VERSION

    config = config_for_framework("tensorflow")
    registries = []
    for scope in ("training", "inference"):
        version = config[scope].get("version_aliases", {}).get(TF_FRAMEWORK_VERSION, TF_FRAMEWORK_VERSION)
        registries.append(config[scope]["versions"][version]["registries"])
    assert registries[0] == registries[1]
    mapping = infra.load_template()["Mappings"]["DeepLearningContainers"]
    assert mapping == {region: {"Account": account} for region, account in registries[0].items()}
    assert {row["Account"] for row in mapping.values()} > {"763104351884"}  # some regions differ
    context = infra.render_context(infra.load_template(), {}, region="nowhere-1")
    with pytest.raises(infra.InfraError, match="has no nowhere-1.Account"):
        infra.resolve(_statements(infra.load_template()["Resources"]["PipelineExecutionRole"]), context)


def test_the_jobs_may_list_exactly_the_prefixes_they_read(deployment: Deployment) -> None:
    """The one condition a positive case needs: S3Prefix inputs list under the stack's prefix only."""
    (listing,) = [s for s in deployment.statements["PipelineExecutionRole"] if s["Action"] == "s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{deployment.bucket}"
    patterns = _as_list(listing["Condition"]["StringLike"]["s3:prefix"])
    inputs = [
        split_s3_uri(uri)[1]
        for request in deployment.every_request()
        for uri in re.findall(r"s3://[^\"\\\s]+", json.dumps(request.request))
    ]
    for key in inputs:
        assert any(_wildcard(p, ignore_case=False).fullmatch(key) for p in patterns), key
    for key in (f"{deployment.prefix}-old/raw/", "other/", ""):
        assert not any(_wildcard(p, ignore_case=False).fullmatch(key) for p in patterns), key


def test_the_rollout_reads_only_compiled_artifacts(deployment: Deployment) -> None:
    pairs = deployment.pairs["RolloutRole"]
    artifacts = _compiled_artifact_uris(deployment)
    assert sorted(artifacts) == ["edge:jetson_nano:uri", "edge:rasp4b:uri"]
    group = deployment.context.ref("ModelPackageGroupName")
    needs = [("s3:GetObject", _s3_object(uri)) for uri in artifacts.values()]
    needs += [("sagemaker:DescribeModelPackage", deployment.sagemaker_arn(f"model-package/{group}/7"))]
    for recipe in IMAGE_RECIPES:
        recipe_artifacts = _compiled_artifact_uris(deployment, recipe)
        assert sorted(recipe_artifacts) == sorted(artifacts)
        needs += [("s3:GetObject", _s3_object(uri)) for uri in recipe_artifacts.values()]
        recipe_group = deployment.context.ref(infra.RECIPE_PARAMETERS[recipe]["model_package_group"])
        needs += [
            ("sagemaker:DescribeModelPackage", deployment.sagemaker_arn(f"model-package/{recipe_group}/2"))
        ]
    log_group = deployment.context.attribute("RolloutLogGroup", "Arn")
    needs += [("logs:PutLogEvents", log_group.replace(":*", ":log-stream:2026/01/15/[$LATEST]abc"))]
    assert refused(pairs, needs) == []

    everything_else = []
    for requests in deployment.recipes.values():
        register = requests["Register"].request
        compile_request = requests["CompileForEdge"].request
        neo = next(iter(_neo_requests(compile_request).values()))
        preprocess = requests["Preprocess"].request
        everything_else += [
            *(i["S3Input"]["S3Uri"] for i in preprocess["ProcessingInputs"]),  # the raw data, the code
            *(o["S3Output"]["S3Uri"] for o in preprocess["ProcessingOutputConfig"]["Outputs"]),  # shards
            register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],  # the trained model
            register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"],
            neo["InputConfig"]["S3Uri"],
            neo["OutputConfig"]["S3OutputLocation"],
        ]
    forbidden = [("s3:GetObject", _s3_object(uri)) for uri in everything_else]
    forbidden += [("s3:GetObject", deployment.object_arn("raw/tub_2026_11_21/manifest.json"))]
    forbidden += [("s3:GetObject", deployment.object_arn(key)) for key in IMAGE_SNAPSHOT_KEYS]
    forbidden += [("s3:PutObject", _s3_object(uri)) for uri in artifacts.values()]
    forbidden += [("s3:GetObject", arn) for arn in _other_stacks_keys(deployment)]
    forbidden += [("sagemaker:DescribeModelPackage", deployment.sagemaker_arn("model-package/other/1"))]
    assert granted(pairs, forbidden) == []


def test_only_the_uploader_policy_writes_raw_data(deployment: Deployment) -> None:
    tub = _object_keys_of_a_v2_tub("raw/tub_2026_11_21/") + ["raw/tubs.tar.gz", "raw/more/tub_x.zip"]
    writes = [("s3:PutObject", deployment.object_arn(key)) for key in tub + IMAGE_SNAPSHOT_KEYS]
    for name, pairs in deployment.pairs.items():
        assert granted(pairs, writes) == ([] if name != "RawDataUploader" else writes), name

    uploader = deployment.pairs["RawDataUploader"]
    assert refused(uploader, [("s3:AbortMultipartUpload", deployment.object_arn("raw/tubs.tar.gz"))]) == []
    (listing,) = [s for s in deployment.statements["RawDataUploader"] if s["Action"] == "s3:ListBucket"]
    patterns = [_wildcard(p, ignore_case=False) for p in listing["Condition"]["StringLike"]["s3:prefix"]]

    def listable(prefix: str) -> bool:
        return any(pattern.fullmatch(prefix) for pattern in patterns)

    assert listable(f"{deployment.prefix}/raw/tub_2026_11_21/")  # `aws s3 sync`'s listing
    assert listable(f"{deployment.prefix}/raw-classifier/set_1/")
    assert listable(f"{deployment.prefix}/raw-detection/set_1/")
    assert not listable(f"{deployment.prefix}/preprocess/")
    assert not listable(f"{deployment.prefix}/classifier/preprocess/")
    assert not listable(f"{deployment.prefix}/detection/preprocess/")
    forbidden = [
        ("s3:PutObject", deployment.object_arn("preprocess/e/train/shard-00000.npz")),
        ("s3:PutObject", deployment.object_arn(f"code/{'a' * 64}/sourcedir.tar.gz")),
        ("s3:PutObject", deployment.object_arn("edge/e/compiled/rasp4b/model.tar.gz")),
        ("s3:GetObject", deployment.object_arn("edge/e/compiled/rasp4b/model.tar.gz")),
        ("s3:DeleteObject", deployment.object_arn("raw/tub_2026_11_21/manifest.json")),
    ]
    forbidden += [("s3:PutObject", arn) for arn in _other_stacks_keys(deployment)]
    assert granted(uploader, forbidden) == []


def test_the_snapshot_function_lists_tubs_writes_manifests_and_starts_only_this_pipeline(
    deployment: Deployment,
) -> None:
    pairs = deployment.pairs["SnapshotRole"]
    arn = pipeline_arn(deployment.context.region, deployment.context.ref("PipelineName"))
    classifier = pipeline_arn(deployment.context.region, deployment.context.ref("ClassifierPipelineName"))
    detection = pipeline_arn(deployment.context.region, deployment.context.ref("DetectionPipelineName"))
    manifest = deployment.object_arn(f"datasets/{'c' * 64}.manifest")
    log_group = deployment.context.attribute("SnapshotLogGroup", "Arn")
    needs = [
        ("sagemaker:StartPipelineExecution", arn),
        ("sagemaker:StartPipelineExecution", classifier),
        ("sagemaker:StartPipelineExecution", detection),
        ("s3:ListBucket", f"arn:aws:s3:::{deployment.bucket}"),
        ("s3:PutObject", manifest),
        ("logs:PutLogEvents", log_group.replace(":*", ":log-stream:2026/01/15/[$LATEST]abc")),
    ]
    assert refused(pairs, needs) == []
    (listing,) = [s for s in deployment.statements["SnapshotRole"] if s["Action"] == "s3:ListBucket"]
    patterns = [_wildcard(p, ignore_case=False) for p in listing["Condition"]["StringLike"]["s3:prefix"]]
    listed = [
        f"{deployment.prefix}/raw/",
        f"{deployment.prefix}/raw-classifier/",
        f"{deployment.prefix}/raw-detection/",
        manifest.split(f"{deployment.bucket}/", 1)[1],
    ]  # what it lists
    assert all(any(p.fullmatch(prefix) for p in patterns) for prefix in listed)
    for other in (
        f"{deployment.prefix}/preprocess/",
        f"{deployment.prefix}/",
        f"{deployment.prefix}-old/raw/",
    ):
        assert not any(p.fullmatch(other) for p in patterns), other

    others = [arn + "-copy", arn.replace(":pipeline/", ":pipeline/other-"), classifier + "-copy"]
    others += [detection + "-copy"]
    forbidden = [("sagemaker:StartPipelineExecution", other) for other in others]
    raw_keys = SNAPSHOT_KEYS + IMAGE_SNAPSHOT_KEYS
    forbidden += [("s3:PutObject", deployment.object_arn(key)) for key in raw_keys]  # never the raw data
    forbidden += [("s3:GetObject", deployment.object_arn(key)) for key in raw_keys]  # the listing is enough
    forbidden += [("s3:PutObject", deployment.object_arn("preprocess/e/train/shard-00000.npz"))]
    forbidden += [("s3:PutObject", arn) for arn in _other_stacks_keys(deployment)]
    forbidden += [("sagemaker:CreatePipeline", arn), ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin")]
    assert granted(pairs, forbidden) == []


# IAM quotas botocore's model does not carry: "Role policy size cannot exceed 10,240 characters" (all
# inline policies of a role together) and managed policies 6,144, whitespace not counted
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html).
ROLE_INLINE_POLICIES_MAX = 10_240
MANAGED_POLICY_MAX = 6_144


def _policy_size(document: dict[str, Any]) -> int:
    return len(re.sub(r"\s", "", json.dumps(document)))


def test_iam_accepts_every_policy_the_stack_creates(deployment: Deployment) -> None:
    """Each policy as CloudFormation sends it (PutRolePolicy, CreatePolicy), checked against botocore's
    IAM model (names, lengths, patterns) and the size quotas."""
    from pipelines.aws_rules import request_problems

    template = infra.load_template()
    for name, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Role"):
            continue
        properties = infra.resolve(resource["Properties"], deployment.context)
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            document = properties["PolicyDocument"]
            request = {
                "PolicyName": properties["ManagedPolicyName"],
                "PolicyDocument": json.dumps(document),
                "Description": properties["Description"],
            }
            assert request_problems("iam", "CreatePolicy", request) == [], name
            assert _policy_size(document) <= MANAGED_POLICY_MAX, name
        else:
            role = properties.get("RoleName", infra.generated_name("robocar", name, infra.IAM_ROLE_NAME_MAX))
            for policy in properties["Policies"]:
                request = {
                    "RoleName": role,
                    "PolicyName": policy["PolicyName"],
                    "PolicyDocument": json.dumps(policy["PolicyDocument"]),
                }
                assert request_problems("iam", "PutRolePolicy", request) == [], (name, policy["PolicyName"])
            total = sum(_policy_size(policy["PolicyDocument"]) for policy in properties["Policies"])
            assert total <= ROLE_INLINE_POLICIES_MAX, name
