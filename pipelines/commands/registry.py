"""``robocar registry list|describe|approve|reject``: the Model Registry, on AWS, a moto server or local.

The same calls go to the local on-disk registry (the default, ``--workspace``) or to boto3's ``sagemaker``
client (``--aws``, ``--endpoint-url``), chosen by the one rule of both CLIs (``edge.settings.choose_backend``)
and made in one place (``edge.aws.clients``). Approving is what releases a pilot to the cars.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge import registry as package_registry
from edge import settings

STATUSES = ("PendingManualApproval", "Approved", "Rejected")
KEYS = ("model_package_group", "recipe", "backend", "workspace", "region", "endpoint_url")


def _add_common(parser: argparse.ArgumentParser) -> None:
    settings.add_arguments(parser, KEYS, "which registry (flag > environment > robocar.toml > default)")
    parser.add_argument("--json", action="store_true", help="print the API response as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("registry", help="list, inspect, approve or reject model packages")
    commands = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="model package versions in a group, newest first")
    listing.add_argument("--status", choices=STATUSES, default=None, help="only packages with this status")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default: 20)")
    _add_common(listing)
    listing.set_defaults(handler=_with_client(_list))

    describe = commands.add_parser("describe", help="one model package version, in full")
    describe.add_argument("package", help="model package ARN, or 'latest' (newest in --group)")
    _add_common(describe)
    describe.set_defaults(handler=_with_client(_describe))

    for action, status in (("approve", "Approved"), ("reject", "Rejected")):
        sub_parser = commands.add_parser(action, help=f"set a model package's status to {status}")
        sub_parser.add_argument(
            "package", help="model package ARN, or 'latest' (newest PendingManualApproval in --group)"
        )
        sub_parser.add_argument("--description", default=None, help="ApprovalDescription (why)")
        _add_common(sub_parser)
        sub_parser.set_defaults(handler=_with_client(_set_status), status=status)


def resolve_registry_settings(args: argparse.Namespace) -> settings.Resolved:
    """The registry commands' settings, resolved as ``robocar-edge`` resolves them (edge/settings.py);
    their values replace the parsed flags in ``args``. The backend is chosen from the flags as given."""
    resolved = settings.resolve_args(args, KEYS)
    args.backend_choice = settings.choose_backend(resolved)
    vars(args).update(settings.with_recipe_names(resolved))
    return resolved


def _local_root(args: argparse.Namespace) -> Path | None:
    return args.backend_choice.local_root


def _client(args: argparse.Namespace) -> Any:
    from edge.aws import clients

    where = args.backend_choice
    return clients(local_root=where.local_root, region=args.region, endpoint_url=where.endpoint_url).sagemaker


def _with_client(handler: Any) -> Any:
    """The handler, given the registry's client (local, AWS or a moto server) as a second argument."""

    def call(args: argparse.Namespace) -> int:
        resolve_registry_settings(args)
        return handler(args, _client(args))

    return call


def _print_json(document: Any) -> None:
    print(json.dumps({k: v for k, v in document.items() if k != "ResponseMetadata"}, indent=2, default=str))


def _resolve(args: argparse.Namespace, sagemaker: Any, status: str | None) -> str:
    if args.package != "latest":
        return args.package
    package = package_registry.newest(sagemaker, args.model_package_group, status)
    if package is None:
        qualifier = f" with status {status}" if status else ""
        raise ValueError(f"no model package{qualifier} in group {args.model_package_group}")
    return package["ModelPackageArn"]


def _list(args: argparse.Namespace, sagemaker: Any) -> int:
    kwargs: dict[str, Any] = {
        "ModelPackageGroupName": args.model_package_group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": max(1, min(args.limit, 100)),
    }
    if args.status:
        kwargs["ModelApprovalStatus"] = args.status
    response = sagemaker.list_model_packages(**kwargs)
    if args.json:
        _print_json(response)
        return 0
    packages = response["ModelPackageSummaryList"]
    if not packages:
        print(
            f"no model packages in {args.model_package_group}"
            + (f" with status {args.status}" if args.status else "")
        )
    for package in packages:
        print(
            f"{package.get('ModelPackageVersion', ''):>4}  {package['ModelApprovalStatus']:<22} "
            f"{package['CreationTime']!s:<32} {package['ModelPackageArn']}"
        )
    return 0


def _describe(args: argparse.Namespace, sagemaker: Any) -> int:
    package = sagemaker.describe_model_package(ModelPackageName=_resolve(args, sagemaker, None))
    if args.json:
        _print_json(package)
        return 0
    print(f"{package['ModelPackageArn']}")
    print(f"  status:   {package['ModelApprovalStatus']}  ({package.get('ApprovalDescription', '')})")
    print(f"  created:  {package['CreationTime']}")
    for container in package.get("InferenceSpecification", {}).get("Containers", []):
        print(f"  model:    {container.get('ModelDataUrl', '')}")
    for key, value in sorted(package.get("CustomerMetadataProperties", {}).items()):
        print(f"  {key} = {value}")
    return 0


def _set_status(args: argparse.Namespace, sagemaker: Any) -> int:
    arn = _resolve(args, sagemaker, "PendingManualApproval")
    kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": args.status}
    if args.description:
        kwargs["ApprovalDescription"] = args.description
    response = sagemaker.update_model_package(**kwargs)
    if args.json:
        _print_json(response)
    else:
        print(f"{args.status}: {response['ModelPackageArn']}")
    root = _local_root(args)
    if root is not None:
        # Locally the registry is a folder, so this command delivers what EventBridge would on AWS: the
        # state-change event, and for an approval the rollout (robocar trigger watch would on its next poll).
        from pipelines.local.trigger import recipe_of_group, rollout_after_registry_change

        group = sagemaker.describe_model_package(ModelPackageName=arn)["ModelPackageGroupName"]
        recipe = recipe_of_group(group, args.recipe or "pilot")  # its component and thing group
        region = args.region or "us-east-1"
        for line in rollout_after_registry_change(root, sagemaker, group, region=region, recipe=recipe):
            print(line)
    return 0
