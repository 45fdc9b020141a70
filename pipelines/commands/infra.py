"""``robocar infra``: check, deploy and show the CloudFormation stack (``infra/template.yaml``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from edge import settings as core

# Template parameter <- (flag, the setting (edge/settings.py) whose environment and robocar.toml key it
# shares, help). Sharing the settings keeps the stack and `robocar pipeline` naming the same things.
TEMPLATE_FLAGS = {
    "ProjectName": ("--project-name", None, "prefix of resource names, at most 24 characters (robocar)"),
    "Prefix": ("--prefix", "prefix", "key prefix in the bucket; tubs go under PREFIX/raw/ (robocar)"),
    "PipelineName": ("--pipeline-name", "pipeline_name", "the pipeline new data starts (robocar-pipeline)"),
    "ModelPackageGroupName": (
        "--model-package-group",
        "model_package_group",
        "registry group (robocar-pilots)",
    ),
    "DeviceThingGroupName": ("--thing-group", None, "the cars' IoT thing group (robocar-cars)"),
    "GreengrassComponentName": ("--component-name", None, "Greengrass component (com.robocar.Pilot)"),
    "EdgeTarget": ("--edge-target", "edge_target", "the compiled artifact the cars run (rasp4b)"),
    # The classifier recipe's names (its raw data: PREFIX/raw-classifier/). Not shared with the pipeline
    # settings: those name one recipe's pipeline at a time, the stack serves every recipe.
    "ClassifierPipelineName": (
        "--classifier-pipeline-name",
        None,
        "the pipeline a Ground Truth manifest starts (robocar-classifier)",
    ),
    "ClassifierModelPackageGroupName": (
        "--classifier-model-package-group",
        None,
        "the classifier's registry group (robocar-classifiers)",
    ),
    "ClassifierThingGroupName": (
        "--classifier-thing-group",
        None,
        "the IoT thing group of the cars that run the classifier (robocar-classifier-cars)",
    ),
    "ClassifierComponentName": (
        "--classifier-component-name",
        None,
        "the classifier's Greengrass component (com.robocar.Classifier)",
    ),
    # The detection recipe's names (its raw data: PREFIX/raw-detection/), as the classifier's.
    "DetectionPipelineName": (
        "--detection-pipeline-name",
        None,
        "the pipeline a Ground Truth bounding-box manifest starts (robocar-detector)",
    ),
    "DetectionModelPackageGroupName": (
        "--detection-model-package-group",
        None,
        "the detector's registry group (robocar-detectors)",
    ),
    "DetectionThingGroupName": (
        "--detection-thing-group",
        None,
        "the IoT thing group of the cars that run the detector (robocar-detector-cars)",
    ),
    "DetectionComponentName": (
        "--detection-component-name",
        None,
        "the detector's Greengrass component (com.robocar.Detector)",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("infra", help="the AWS stack: bucket, registry group, roles, EventBridge rules")
    commands = parser.add_subparsers(dest="infra_command", metavar="ACTION", required=True)

    check = commands.add_parser(
        "check",
        help="check offline that the template's rules equal pipelines/events.py",
        description="Render the template's EventBridge rules for the given parameters, compare them with "
        "the one definition in pipelines/events.py and check the PutRule/PutTargets requests they make "
        "against EventBridge's API model (no AWS call).",
    )
    _template_arguments(check)
    check.set_defaults(handler=_check)

    deploy = commands.add_parser(
        "deploy",
        help="create or update the stack (uploads the snapshot and rollout functions' code first)",
        description="Create or update the CloudFormation stack from infra/template.yaml. The snapshot "
        "and rollout functions' zips are uploaded to --code-bucket (default <project>-infra-<account>-"
        "<region>, created if missing). Prints the robocar.toml lines for the stack when done.",
    )
    _template_arguments(deploy)
    _aws_arguments(deploy)
    deploy.add_argument("--code-bucket", default=None, help="bucket for the functions' zips")
    deploy.add_argument("--no-wait", action="store_true", help="return once the change has started")
    deploy.set_defaults(handler=_deploy)

    show = commands.add_parser(
        "show",
        help="status, outputs and resources of the stack, and the robocar.toml lines for it",
        description="Describe the stack: status, parameters, outputs, resources.",
    )
    _aws_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)


def _template_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "template parameters (default: the template's, or the pipeline settings')"
    )
    for name, (flag, setting_key, help_text) in TEMPLATE_FLAGS.items():
        env = f"; env {core.setting(setting_key).env[0]}" if setting_key else ""
        group.add_argument(flag, dest=name, metavar="NAME", default=None, help=f"{name}: {help_text}{env}")


def _aws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack-name", default="robocar", help="CloudFormation stack name (default: robocar)"
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS environment's)")
    parser.add_argument(
        "--endpoint-url", default=os.environ.get("ROBOCAR_ENDPOINT_URL"),
        help="AWS endpoint, e.g. a moto server http://127.0.0.1:5000 (env ROBOCAR_ENDPOINT_URL)",
    )  # fmt: skip


def template_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Flags, else the shared setting's environment variable or robocar.toml key (the one resolver);
    parameters given nowhere keep the template's defaults."""
    shared = {key: name for name, (_, key, _) in TEMPLATE_FLAGS.items() if key}
    resolved = core.resolve({key: getattr(args, name, None) for key, name in shared.items()}, keys=shared)
    overrides = {}
    for name, (_, setting_key, _) in TEMPLATE_FLAGS.items():
        value = getattr(args, name, None)
        if value is None and setting_key and resolved.given(setting_key):
            value = resolved[setting_key]
        if value is not None:
            overrides[name] = value.strip("/") if name == "Prefix" else value
    return overrides


def _session(args: argparse.Namespace) -> tuple[Any, str]:
    import boto3

    session = boto3.session.Session(region_name=args.region) if args.region else boto3.session.Session()
    if not session.region_name:
        raise ValueError("no AWS region: pass --region or set AWS_REGION")
    return session, session.region_name


def _check(args: argparse.Namespace) -> int:
    from pipelines import infra

    template = infra.load_template()
    overrides = template_overrides(args)
    drift = infra.template_drift(template, overrides)
    if drift:
        print("the template's rules differ from pipelines/events.py:", *drift, sep="\n  ", file=sys.stderr)
        return 1
    refused = infra.rule_request_problems(template, overrides)
    if refused:
        print("EventBridge would refuse the template's rules:", *refused, sep="\n  ", file=sys.stderr)
        return 1
    print(f"{infra.TEMPLATE_PATH.name}: rules agree with pipelines/events.py")
    for recipe in infra.RECIPE_PARAMETERS:
        rules = infra.render_rules(template, overrides, recipe=recipe)
        print(f"{recipe}:")
        print(f"  new data  ({rules.bucket}, {rules.raw_prefix}): {json.dumps(rules.new_data_pattern)}")
        print(f"  approved  ({rules.group}): {json.dumps(rules.approved_pattern)}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from pipelines import infra

    session, region = _session(args)
    cloudformation = session.client("cloudformation", endpoint_url=args.endpoint_url)
    s3 = session.client("s3", endpoint_url=args.endpoint_url)
    account = session.client("sts", endpoint_url=args.endpoint_url).get_caller_identity()["Account"]
    spec = infra.StackSpec(args.stack_name, template_overrides(args), args.code_bucket)
    result = infra.deploy(cloudformation, s3, spec, account=account, region=region, wait=not args.no_wait)
    for key, value in result["outputs"].items():
        print(f"  {key:26} {value}")
    if result["outputs"]:
        print("\nrobocar.toml for this stack:\n" + _snippet(result["outputs"], region, spec.parameters))
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipelines import infra

    session, region = _session(args)
    cloudformation = session.client("cloudformation", endpoint_url=args.endpoint_url)
    described = infra.describe(cloudformation, args.stack_name)
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
        return 0
    print(f"stack {described['stack_name']}: {described['status']}")
    for title in ("parameters", "outputs"):
        print(f"{title}:")
        for key, value in described[title].items():
            print(f"  {key:26} {value}")
    print("resources:")
    for logical_id, resource in described["resources"].items():
        print(f"  {logical_id:26} {resource['type']:32} {resource['status']:18} {resource['id']}")
    print(
        "\nrobocar.toml for this stack:\n" + _snippet(described["outputs"], region, described["parameters"])
    )
    return 0


def _snippet(outputs: dict[str, str], region: str, parameters: dict[str, str]) -> str:
    from pipelines.infra import settings_snippet

    snippet = settings_snippet(outputs, region)
    snippet += f'\nprefix = "{parameters["Prefix"]}"' if parameters.get("Prefix") else ""
    return snippet + '\nbackend = "aws"  # the stack is on AWS; commands act locally by default'
