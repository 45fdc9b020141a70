"""The CloudFormation stack (``infra/template.yaml``): check it against the rule definitions, deploy, show.

The template carries each recipe's two EventBridge rule patterns written out in YAML; ``template_drift``
renders them (resolving ``!Ref``/``!Sub`` for given parameters) and compares with ``pipelines.events``, so
the template and the local trigger cannot silently disagree. ``deploy`` refuses a drifted template.

Clients are arguments (boto3's ``cloudformation`` and ``s3``; a moto server in the tests).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from pipelines import events
from pipelines.datasets import RAW_FOLDERS

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO_ROOT / "infra" / "template.yaml"
ROLLOUT_DIR = REPO_ROOT / "infra" / "rollout"
SNAPSHOT_DIR = REPO_ROOT / "infra" / "snapshot"
DEFAULT_STACK_NAME = "robocar"
# What goes into the rollout function's zip, relative to the repository root (the zip's root): the
# handler renders the recipe with the device package's own builder (standard library only at import).
ROLLOUT_SOURCES = (
    "infra/rollout/handler.py",
    "edge/__init__.py",
    "edge/agent.py",
    "edge/artifacts.py",
    "edge/atomic_files.py",
    "edge/registry.py",
    "edge/s3_uri.py",
    "edge/greengrass/__init__.py",
    "edge/greengrass/component.py",
)
# The snapshot function's zip: its handler and pipelines/datasets.py with what that imports (stdlib only).
SNAPSHOT_SOURCES = (
    "infra/snapshot/handler.py",
    "pipelines/__init__.py",
    "pipelines/datasets.py",
    "pipelines/events.py",
    "edge/__init__.py",
    "edge/s3_uri.py",
)
RECIPE_TEMPLATE = REPO_ROOT / "edge" / "greengrass" / "recipe.yaml"
BUNDLED_TEMPLATE_NAME = "recipe_template.json"  # Lambda's Python has no PyYAML: the template goes as JSON
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip and key
_TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
_IN_PROGRESS = re.compile(r"_IN_PROGRESS$")


# Each recipe's names in the template: its parameters (what TriggerConfig and the settings call them) and
# its two rules. One stack serves every recipe, each rule starting or rolling out only its own.
RECIPE_PARAMETERS = {
    "pilot": {
        "pipeline_name": "PipelineName",
        "model_package_group": "ModelPackageGroupName",
        "thing_group": "DeviceThingGroupName",
        "component_name": "GreengrassComponentName",
    },
    "classifier": {
        "pipeline_name": "ClassifierPipelineName",
        "model_package_group": "ClassifierModelPackageGroupName",
        "thing_group": "ClassifierThingGroupName",
        "component_name": "ClassifierComponentName",
    },
    "detection": {
        "pipeline_name": "DetectionPipelineName",
        "model_package_group": "DetectionModelPackageGroupName",
        "thing_group": "DetectionThingGroupName",
        "component_name": "DetectionComponentName",
    },
}
NEW_DATA_RULES = {
    "pilot": "NewDataRule",
    "classifier": "ClassifierNewDataRule",
    "detection": "DetectionNewDataRule",
}
APPROVED_RULES = {
    "pilot": "ApprovedRule",
    "classifier": "ClassifierApprovedRule",
    "detection": "DetectionApprovedRule",
}


class InfraError(RuntimeError):
    """A user-facing problem with the template or the stack (printed without a traceback)."""


# ---------------------------------------------------------------- reading the template
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation tags: ``!Ref x`` -> ``{"Ref": x}``, ``!Sub s`` -> ``{"Fn::Sub": s}``."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
    except FileNotFoundError as exc:
        raise InfraError(f"no template at {path} (run from a checkout of robocar-pipeline)") from exc
    except yaml.YAMLError as exc:
        raise InfraError(f"{path} is not valid YAML: {exc}") from exc


@dataclass(frozen=True)
class RenderContext:
    """Parameter values and pseudo parameters for resolving intrinsic functions offline."""

    parameters: Mapping[str, str]
    account: str = events.EXAMPLE_ACCOUNT
    region: str = "us-east-1"
    resource_names: Mapping[str, str] = field(default_factory=dict)
    resource_arns: Mapping[str, str] = field(default_factory=dict)
    mappings: Mapping[str, Any] = field(default_factory=dict)  # the template's Mappings section

    def find_in_map(self, map_name: str, top_key: str, second_key: str) -> str:
        try:
            return str(self.mappings[map_name][top_key][second_key])
        except KeyError as exc:
            raise InfraError(f"Fn::FindInMap: mapping {map_name} has no {top_key}.{second_key}") from exc

    def attribute(self, logical_id: str, name: str) -> str:
        if name == "Arn" and logical_id in self.resource_arns:
            return self.resource_arns[logical_id]
        raise InfraError(f"cannot resolve {logical_id}.{name} offline")

    def ref(self, name: str) -> str:
        pseudo = {"AWS::AccountId": self.account, "AWS::Region": self.region, "AWS::Partition": "aws"}
        for table in (pseudo, self.parameters, self.resource_names):
            if name in table:
                return str(table[name])
        raise InfraError(f"cannot resolve !Ref {name} offline (not a parameter or a named resource)")


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """The template's defaults with ``overrides`` applied; unknown names are an error."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise InfraError(f"the template has no parameter(s) {', '.join(unknown)}")
    values = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
    values.update({name: str(value) for name, value in overrides.items()})
    return values


def resolve(node: Any, context: RenderContext) -> Any:
    """Resolve ``Ref``, ``Fn::Sub``, ``Fn::GetAtt`` (Arn) and ``Fn::FindInMap`` in a template fragment."""
    if isinstance(node, list):
        return [resolve(item, context) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return context.ref(node["Ref"])
    if set(node) == {"Fn::Sub"}:
        return _substitute(node["Fn::Sub"], context)
    if set(node) == {"Fn::GetAtt"}:
        return context.attribute(*node["Fn::GetAtt"])
    if set(node) == {"Fn::FindInMap"}:
        return context.find_in_map(*(str(resolve(key, context)) for key in node["Fn::FindInMap"]))
    if len(node) == 1 and next(iter(node)).startswith("Fn::"):
        raise InfraError(f"cannot resolve {next(iter(node))} offline")
    return {key: resolve(value, context) for key, value in node.items()}


def _substitute(argument: str | list[Any], context: RenderContext) -> str:
    text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return str(resolve(variables[name], context))
        if "." in name:  # ${Resource.Attribute}
            return context.attribute(*name.split(".", 1))
        return context.ref(name)

    return re.sub(r"\$\{([^}!]+)\}", replace, text)


def render_context(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    *,
    account: str = events.EXAMPLE_ACCOUNT,
    region: str = "us-east-1",
    stack_name: str = DEFAULT_STACK_NAME,
) -> RenderContext:
    """Parameters (defaults + ``overrides``), pseudo parameters, and the named resources' Ref and Arn."""
    mappings = template.get("Mappings", {})
    context = RenderContext(parameter_values(template, overrides or {}), account, region, mappings=mappings)
    names = _resource_names(template, context)
    resources = template.get("Resources", {})
    arns = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        if kind == "AWS::S3::Bucket" and logical_id in names:
            arns[logical_id] = f"arn:aws:s3:::{names[logical_id]}"
        elif kind == "AWS::IAM::Role":
            role = names.get(logical_id) or generated_name(stack_name, logical_id, IAM_ROLE_NAME_MAX)
            arns[logical_id] = f"arn:aws:iam::{account}:role/{role}"
        elif kind == "AWS::Lambda::Function" and logical_id in names:
            arns[logical_id] = f"arn:aws:lambda:{region}:{account}:function:{names[logical_id]}"
        elif kind == "AWS::ECR::Repository" and logical_id in names:
            arns[logical_id] = f"arn:aws:ecr:{region}:{account}:repository/{names[logical_id]}"
    return RenderContext(context.parameters, account, region, names, arns, mappings)


IAM_ROLE_NAME_MAX = 64  # https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html
RULE_NAME_MAX = 64  # https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutRule.html
_GENERATED_SUFFIX = "Q9X1B2C3D4E5"  # stands for the 12 random characters CloudFormation appends


def generated_name(stack_name: str, logical_id: str, max_length: int) -> str:
    """A name like the one CloudFormation gives an unnamed resource: ``<stack>-<logical id>-<random>``.

    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-name.html
    """
    return f"{stack_name}-{logical_id}"[: max_length - len(_GENERATED_SUFFIX) - 1] + f"-{_GENERATED_SUFFIX}"


def _resource_names(template: Mapping[str, Any], context: RenderContext) -> dict[str, str]:
    """``!Ref`` of the named resources the rules mention (the Ref of each of these types is its name)."""
    name_fields = {
        "AWS::S3::Bucket": "BucketName",
        "AWS::SageMaker::ModelPackageGroup": "ModelPackageGroupName",
        "AWS::IAM::Role": "RoleName",
        "AWS::Lambda::Function": "FunctionName",
        "AWS::Events::Rule": "Name",
        "AWS::ECR::Repository": "RepositoryName",
    }
    names = {}
    for logical_id, resource in template.get("Resources", {}).items():
        name_field = name_fields.get(resource.get("Type"))
        if name_field and name_field in resource.get("Properties", {}):
            names[logical_id] = resolve(resource["Properties"][name_field], context)
    return names


@dataclass(frozen=True)
class RenderedRules:
    bucket: str
    raw_prefix: str
    group: str
    new_data_pattern: dict[str, Any]
    approved_pattern: dict[str, Any]


def render_rules(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    *,
    account: str = events.EXAMPLE_ACCOUNT,
    region: str = "us-east-1",
    recipe: str = "pilot",
) -> RenderedRules:
    """A recipe's rule sections of the template with parameters substituted, as EventBridge will receive
    them."""
    context = render_context(template, overrides, account=account, region=region)
    resources = template.get("Resources", {})
    try:
        new_data = resources[NEW_DATA_RULES[recipe]]["Properties"]
        approved = resources[APPROVED_RULES[recipe]]["Properties"]
    except KeyError as exc:
        raise InfraError(f"the template lacks the rule {exc.args[0]}") from exc
    return RenderedRules(
        bucket=context.ref("DataBucket"),
        raw_prefix=f"{context.ref('Prefix')}/{RAW_FOLDERS[recipe]}/",
        group=context.ref(RECIPE_PARAMETERS[recipe]["model_package_group"]),
        new_data_pattern=resolve(new_data["EventPattern"], context),
        approved_pattern=resolve(approved["EventPattern"], context),
    )


def template_drift(template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> list[str]:
    """Where the template's rules differ from ``pipelines.events`` (empty when they agree)."""
    expected = {}
    for recipe in RECIPE_PARAMETERS:
        rules = render_rules(template, overrides, recipe=recipe)
        expected[f"{NEW_DATA_RULES[recipe]}.EventPattern"] = (
            rules.new_data_pattern,
            events.new_data_pattern(rules.bucket, rules.raw_prefix, recipe),
        )
        expected[f"{APPROVED_RULES[recipe]}.EventPattern"] = (
            rules.approved_pattern,
            events.approved_pattern(rules.group),
        )
    return [
        f"{where}: template has {json.dumps(found, sort_keys=True)}, pipelines/events.py says "
        f"{json.dumps(wanted, sort_keys=True)}"
        for where, (found, wanted) in expected.items()
        if found != wanted
    ]


# ---------------------------------------------------------------- the rules as EventBridge receives them
# CloudFormation's AWS::Events::Rule properties are PutRule's members (EventPattern as a JSON string);
# its Targets are PutTargets' Target structures, same member names:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-events-rule.html
_PUT_RULE_MEMBERS = ("Name", "Description", "State", "ScheduleExpression", "EventBusName", "RoleArn")


def rule_requests(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    *,
    account: str = events.EXAMPLE_ACCOUNT,
    region: str = "us-east-1",
    stack_name: str = DEFAULT_STACK_NAME,
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(logical id, operation, request)``: the PutRule and PutTargets calls each rule of the stack makes."""
    context = render_context(template, overrides, account=account, region=region, stack_name=stack_name)
    requests = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Events::Rule":
            continue
        properties = resolve(resource.get("Properties", {}), context)
        name = properties.get("Name") or generated_name(stack_name, logical_id, RULE_NAME_MAX)
        put_rule = {key: properties[key] for key in _PUT_RULE_MEMBERS if key in properties}
        put_rule["Name"] = name
        if "EventPattern" in properties:
            put_rule["EventPattern"] = json.dumps(properties["EventPattern"])
        requests.append((logical_id, "PutRule", put_rule))
        if properties.get("Targets"):
            put_targets = {"Rule": name, "Targets": properties["Targets"]}
            if "EventBusName" in properties:
                put_targets["EventBusName"] = properties["EventBusName"]
            requests.append((logical_id, "PutTargets", put_targets))
    return requests


def rule_request_problems(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None, **context: str
) -> list[str]:
    """What EventBridge would refuse in the stack's rules (``pipelines/aws_rules.py``); empty when none."""
    from pipelines.aws_rules import request_problems

    return [
        f"{logical_id} {operation}: {problem}"
        for logical_id, operation, request in rule_requests(template, overrides, **context)
        for problem in request_problems("events", operation, request)
    ]


def validate_rule_requests(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None, **context: str
) -> None:
    """Raise what EventBridge would answer to the first refused rule request (as boto3 raises it)."""
    from pipelines.aws_rules import validate_request

    for _, operation, request in rule_requests(template, overrides, **context):
        validate_request("events", operation, request)


# ---------------------------------------------------------------- the rollout function's code
def _function_files(root: Path, sources: Iterable[str], function: str) -> dict[str, bytes]:
    """Zip name -> bytes: ``infra/<function>/*`` at the zip's root, every other source at its own path."""
    files: dict[str, bytes] = {}
    for source in sources:
        path = root / source
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    files[file.relative_to(root).as_posix()] = file.read_bytes()
        elif path.is_file():
            files[path.name if source.startswith(f"infra/{function}/") else source] = path.read_bytes()
        else:
            raise InfraError(f"the {function} function needs {source}, which is missing from {root}")
    return files


def rollout_zip(root: Path = REPO_ROOT, sources: Iterable[str] = ROLLOUT_SOURCES) -> bytes:
    """A deterministic zip: ``handler.py`` and the recipe template (JSON) at the root, plus ``edge/...``."""
    files = _function_files(root, sources, "rollout")
    template = yaml.safe_load((root / RECIPE_TEMPLATE.relative_to(REPO_ROOT)).read_text())
    files[BUNDLED_TEMPLATE_NAME] = json.dumps(template, indent=1, sort_keys=True).encode()
    return _deterministic_zip(files)


def snapshot_zip(root: Path = REPO_ROOT, sources: Iterable[str] = SNAPSHOT_SOURCES) -> bytes:
    """A deterministic zip: ``handler.py`` at the root, plus ``pipelines/datasets.py`` and its imports."""
    return _deterministic_zip(_function_files(root, sources, "snapshot"))


def _deterministic_zip(files: dict[str, bytes]) -> bytes:
    """Fixed names, order, times and modes: the same sources give the same bytes (and the same S3 key)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def load_rollout_handler() -> ModuleType:
    return _load_handler(ROLLOUT_DIR, "rollout")


def load_snapshot_handler() -> ModuleType:
    return _load_handler(SNAPSHOT_DIR, "snapshot")


def _load_handler(directory: Path, function: str) -> ModuleType:
    """``infra/`` is not an installed package: load a function's handler from the checkout, once."""
    name = f"robocar_{function}_handler"
    if name not in sys.modules:
        path = directory / "handler.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise InfraError(f"no {function} handler at {path} (run from a checkout of robocar-pipeline)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------- deploy and show
@dataclass(frozen=True)
class StackSpec:
    stack_name: str
    parameters: dict[str, str]  # template parameters except the rollout code location
    code_bucket: str | None = None  # default: <ProjectName>-infra-<account>-<region>, created if missing


def default_code_bucket(project: str, account: str, region: str) -> str:
    return f"{project}-infra-{account}-{region}"


def ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    """Create the code bucket when it does not exist (private), like ``sam deploy --resolve-s3`` does."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise InfraError(f"cannot use bucket {bucket}: {exc}") from exc
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def upload_function_code(s3: Any, bucket: str, project: str, code: bytes, function: str = "rollout") -> str:
    """Upload a function's zip under a content-addressed key (changed code, a changed key: an update)."""
    key = f"{project}/{function}/{function}-{hashlib.sha256(code).hexdigest()[:16]}.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=code, ServerSideEncryption="AES256")
    return key


def stack_status(cloudformation: Any, stack_name: str) -> str | None:
    """The stack's status, or None when there is no such stack."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    return stacks[0]["StackStatus"] if stacks else None


def deploy(
    cloudformation: Any,
    s3: Any,
    spec: StackSpec,
    *,
    account: str,
    region: str,
    template_path: Path = TEMPLATE_PATH,
    code: bytes | None = None,
    snapshot_code: bytes | None = None,
    wait: bool = True,
    poll_s: float = 5.0,
    timeout_s: float = 1800.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create the stack, or update it; returns ``{"action", "status", "outputs"}``."""
    template = load_template(template_path)
    drift = template_drift(template, spec.parameters)
    if drift:
        raise InfraError("the template's rules differ from pipelines/events.py:\n  " + "\n  ".join(drift))
    refused = rule_request_problems(
        template, spec.parameters, account=account, region=region, stack_name=spec.stack_name
    )
    if refused:
        raise InfraError("EventBridge would refuse the template's rules:\n  " + "\n  ".join(refused))
    parameters = parameter_values(template, spec.parameters)
    project = parameters["ProjectName"]
    bucket = spec.code_bucket or default_code_bucket(project, account, region)
    ensure_bucket(s3, bucket, region)
    key = upload_function_code(s3, bucket, project, code if code is not None else rollout_zip())
    progress(f"rollout code: s3://{bucket}/{key}")
    snapshot = snapshot_code if snapshot_code is not None else snapshot_zip()
    snapshot_key = upload_function_code(s3, bucket, project, snapshot, "snapshot")
    progress(f"snapshot code: s3://{bucket}/{snapshot_key}")
    parameters.update(RolloutCodeBucket=bucket, RolloutCodeKey=key, SnapshotCodeKey=snapshot_key)
    request = {
        "StackName": spec.stack_name,
        "TemplateBody": template_path.read_text(),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
        "Tags": [{"Key": "project", "Value": project}],
    }
    status = stack_status(cloudformation, spec.stack_name)
    if status == "ROLLBACK_COMPLETE":  # a failed first create can only be deleted
        raise InfraError(
            f"stack {spec.stack_name} is ROLLBACK_COMPLETE (its first create failed): delete it, then deploy"
        )
    if status is None:
        action = "create"
        cloudformation.create_stack(**request, OnFailure="ROLLBACK")
    else:
        action = "update"
        try:
            cloudformation.update_stack(**request)
        except cloudformation.exceptions.ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
            progress(f"stack {spec.stack_name}: no changes")
            return {
                "action": "none",
                "status": status,
                "outputs": stack_outputs(cloudformation, spec.stack_name),
            }
    progress(f"stack {spec.stack_name}: {action} started")
    final = wait_for_stack(cloudformation, spec.stack_name, poll_s, timeout_s, progress) if wait else None
    if final is not None and final not in _TERMINAL_OK:
        raise InfraError(
            f"stack {spec.stack_name} ended {final}: {failure_reasons(cloudformation, spec.stack_name)}"
        )
    return {
        "action": action,
        "status": final or stack_status(cloudformation, spec.stack_name),
        "outputs": stack_outputs(cloudformation, spec.stack_name),
    }


def wait_for_stack(
    cloudformation: Any, stack_name: str, poll_s: float, timeout_s: float, progress: Callable[[str], None]
) -> str:
    """Poll until the stack leaves ``*_IN_PROGRESS``, printing each new status."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        status = stack_status(cloudformation, stack_name) or "DELETED"
        if status != last:
            progress(f"stack {stack_name}: {status}")
            last = status
        if not _IN_PROGRESS.search(status):
            return status
        if time.monotonic() > deadline:
            raise InfraError(f"stack {stack_name} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def failure_reasons(cloudformation: Any, stack_name: str) -> str:
    stack_events = cloudformation.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    reasons = [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
        for e in stack_events
        if e.get("ResourceStatus", "").endswith("_FAILED")
    ]
    return "; ".join(reasons[:5]) or "no reason recorded"


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])} if stacks else {}


def describe(cloudformation: Any, stack_name: str) -> dict[str, Any]:
    """Status, parameters, outputs and resources of the stack (raises InfraError when absent)."""
    status = stack_status(cloudformation, stack_name)
    if status is None:
        raise InfraError(f"no stack named {stack_name} (deploy it with `robocar infra deploy`)")
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    resources = [
        summary
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
        for summary in page["StackResourceSummaries"]
    ]
    return {
        "stack_name": stack_name,
        "status": status,
        "parameters": {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])},
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "resources": {
            r["LogicalResourceId"]: {
                "type": r["ResourceType"],
                "id": r.get("PhysicalResourceId", ""),
                "status": r.get("ResourceStatus", ""),
            }
            for r in resources
            if r.get("LogicalResourceId")  # moto lists resources it skipped without one
        },
    }


def settings_snippet(outputs: Mapping[str, str], region: str) -> str:
    """The ``robocar.toml`` lines that point the pipeline commands at this stack."""
    lines = ["[robocar]", f'region = "{region}"']
    for key, output in (
        ("bucket", "DataBucketName"),
        ("role", "PipelineExecutionRoleArn"),
        ("pipeline_name", "PipelineName"),
        ("model_package_group", "ModelPackageGroupName"),
    ):
        if output in outputs:
            lines.append(f'{key} = "{outputs[output]}"')
    return "\n".join(lines)
