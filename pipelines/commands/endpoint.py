"""``robocar endpoint deploy|invoke|status|delete``: a registered model package behind an endpoint.

On AWS (``--aws``, ``--endpoint-url``) the calls are SageMaker's (``pipelines/endpoint.py``); locally (the
default, ``--workspace``) a real HTTP server on 127.0.0.1 speaks the same inference container contract
(``pipelines.local.endpoint_server``). Where the command acts is the one rule of both CLIs
(``pipelines.settings.backend``). The package is an ARN, ``approved`` (the newest Approved package of the
recipe's group: the default) or ``latest``; the endpoint's name defaults to the group's name (``-async``
for an asynchronous one). docs/serving.md has the whole story.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from edge import settings as core
from pipelines import settings as settings_mod

DEFAULT_INSTANCE_TYPE = "ml.m5.large"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("endpoint", help="deploy a model package to an endpoint, invoke it, inspect it")
    commands = parser.add_subparsers(dest="endpoint_command", metavar="ACTION", required=True)

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", default=None, help="endpoint name (default: the model package group's)")
        p.add_argument(
            "--async", dest="asynchronous", action="store_true",
            help="the asynchronous endpoint (default name: the group's + '-async')",
        )  # fmt: skip
        p.add_argument("--json", action="store_true", help="print JSON")
        settings_mod.add_arguments(p, backend=True)
        p.set_defaults(handler=handler)
        return p

    deploy = add("deploy", _deploy, "create or update an endpoint serving a model package (idempotent)")
    deploy.add_argument(
        "package", nargs="?", default="approved",
        help="model package ARN, 'approved' (newest Approved in the group; default) or 'latest'",
    )  # fmt: skip
    deploy.add_argument(
        "--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"default: {DEFAULT_INSTANCE_TYPE}"
    )
    deploy.add_argument("--instance-count", type=int, default=1, help="initial instances (default: 1)")
    deploy.add_argument(
        "--output-path", default=None, help="--async: S3 results (default: <prefix>/endpoints/NAME/output/)"
    )
    deploy.add_argument(
        "--failure-path",
        default=None,
        help="--async: S3 failures (default: <prefix>/endpoints/NAME/failure/)",
    )
    deploy.add_argument(
        "--max-concurrent", type=int, default=None, help="--async: invocations per instance at once"
    )
    deploy.add_argument("--success-topic", default=None, help="--async: SNS topic ARN told of each result")
    deploy.add_argument("--error-topic", default=None, help="--async: SNS topic ARN told of each failure")
    deploy.add_argument("--min-capacity", type=int, default=0, help="--async: fewest instances (default: 0)")
    deploy.add_argument("--max-capacity", type=int, default=1, help="--async: most instances (default: 1)")
    deploy.add_argument(
        "--backlog-per-instance", type=float, default=None,
        help="--async: the queued requests per instance target tracking holds (default: 5)",
    )  # fmt: skip
    deploy.add_argument(
        "--port", type=int, default=0, help="local: the server's port (default: any free one)"
    )
    deploy.add_argument(
        "--wait-delay", type=int, default=None, help="AWS: seconds between status checks (default: 30)"
    )

    invoke = add("invoke", _invoke, "send a file to an endpoint and print (or --output) the answer")
    invoke.add_argument("file", type=Path, help="the request body (e.g. a JPEG)")
    invoke.add_argument(
        "--content-type", default=None, help="default: from the file's suffix (.jpg: image/jpeg)"
    )
    invoke.add_argument(
        "--accept", default=None,
        help="default: application/json; a classifier's with class names: application/json; verbose=true",
    )  # fmt: skip
    invoke.add_argument("--output", type=Path, default=None, help="write the answer's body here")

    add("status", _status, "the endpoint, its configuration and scaling")
    add("delete", _delete, "delete the endpoint, its configurations, models and scaling (idempotent)")


# ---------------------------------------------------------------- settings
KEYS = settings_mod.KEYS + core.BACKEND_KEYS[:2]  # + backend, workspace


def _where(args: argparse.Namespace) -> tuple[dict[str, Any], settings_mod.Backend]:
    """The settings as given (the recipe's group filled in) and where to act. Only ``deploy`` and an
    async ``invoke`` need the role or bucket, and they resolve them in full (``_full_settings``)."""
    resolved = core.resolve_args(args, KEYS)
    where = settings_mod.backend(args)
    values = core.with_recipe_names(resolved)
    group = str(values["model_package_group"])
    problem = settings_mod.setting_problem("model_package_group", group, values)
    if problem:
        raise settings_mod.SettingsError(f"model package group {group!r}: {problem}")
    return values, where


def _full_settings(args: argparse.Namespace, where: settings_mod.Backend) -> settings_mod.Settings:
    """Every setting, each checked; locally the placeholders stand in for region, role and bucket."""
    return settings_mod.resolve(args, use_examples=where.is_local)


def endpoint_name(args: argparse.Namespace, group: str) -> str:
    from pipelines.endpoint import default_endpoint_name, endpoint_name_problem

    name = args.name or default_endpoint_name(group, asynchronous=args.asynchronous)
    problem = endpoint_name_problem(name)
    if problem:
        raise ValueError(f"--name {name!r}: {problem}")
    return name


def _aws(values: dict[str, Any], where: settings_mod.Backend) -> Any:
    from pipelines.endpoint import aws_endpoint_clients

    return aws_endpoint_clients(values.get("region"), where.endpoint_url)


def _local_clients(where: settings_mod.Backend, region: str | None) -> Any:
    from edge.aws import clients

    return clients(local_root=where.local_root, region=region or "us-east-1")


def endpoint_folder(settings: settings_mod.Settings, name: str, folder: str) -> str:
    """``s3://<bucket>/<prefix>/endpoints/<name>/<folder>/``: where an endpoint's objects go by default."""
    from pipelines.datasets import folder_uri

    return folder_uri(settings.bucket, settings.prefix, f"endpoints/{name}/{folder}")


def _print(document: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(document, indent=2, default=str))
    else:
        for line in lines:
            print(line)


# ---------------------------------------------------------------- deploy
def _async_options(args: argparse.Namespace, settings: settings_mod.Settings, name: str) -> Any:
    from pipelines.endpoint import DEFAULT_BACKLOG_PER_INSTANCE, AsyncOptions

    if args.min_capacity < 0 or args.max_capacity < max(1, args.min_capacity):
        raise ValueError("--min-capacity must be >= 0 and --max-capacity >= max(1, --min-capacity)")
    return AsyncOptions(
        output_path=args.output_path or endpoint_folder(settings, name, "output"),
        failure_path=args.failure_path or endpoint_folder(settings, name, "failure"),
        max_concurrent_invocations=args.max_concurrent,
        success_topic=args.success_topic,
        error_topic=args.error_topic,
        min_capacity=args.min_capacity,
        max_capacity=args.max_capacity,
        backlog_per_instance=args.backlog_per_instance or DEFAULT_BACKLOG_PER_INSTANCE,
    )


def _deploy(args: argparse.Namespace) -> int:
    from pipelines import endpoint

    values, where = _where(args)
    settings = _full_settings(args, where)
    name = endpoint_name(args, settings.model_package_group)
    if where.is_local:
        return _deploy_local(args, settings, where, name)
    clients = _aws(values, where)
    arn = endpoint.resolve_package_arn(clients.sagemaker, settings.model_package_group, args.package)
    plan = endpoint.EndpointPlan(
        endpoint_name=name,
        model_package_arn=arn,
        role_arn=settings.role,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        async_options=_async_options(args, settings, name) if args.asynchronous else None,
    )
    waiter = {"Delay": args.wait_delay} if args.wait_delay else None
    result = endpoint.deploy(clients, plan, waiter_config=waiter)
    lines = [f"{result.action}: endpoint {name} ({result.status.get('EndpointStatus', '')}) serving {arn}"]
    lines += [f"  created {item}" for item in result.created]
    _print({"Plan": endpoint.plan_document(plan), **vars(result)}, args.json, lines)
    return 0


def _deploy_local(
    args: argparse.Namespace, settings: settings_mod.Settings, where: settings_mod.Backend, name: str
) -> int:
    from pipelines import endpoint
    from pipelines.local import endpoint_server  # written alongside: imported only when used

    sagemaker = _local_clients(where, settings.region).sagemaker
    arn = endpoint.resolve_package_arn(sagemaker, settings.model_package_group, args.package)
    endpoint.approved_package(sagemaker, arn)
    paths: dict[str, str | None] = {"async_output": None}
    if args.asynchronous:  # AsyncInferenceConfig's S3OutputPath and S3FailurePath, as on AWS
        paths = {
            "async_output": args.output_path or endpoint_folder(settings, name, "output"),
            "async_failure": args.failure_path or endpoint_folder(settings, name, "failure"),
        }
    info = endpoint_server.deploy(where.local_root, name, arn, port=args.port, **paths)
    _print(info, args.json, [f"local endpoint {name} at {info.get('url')} serving {arn}"])
    return 0


# ---------------------------------------------------------------- invoke
def _invoke(args: argparse.Namespace) -> int:
    from pipelines import endpoint

    values, where = _where(args)
    name = endpoint_name(args, str(values["model_package_group"]))
    content_type = endpoint.content_type_of(args.file.name, args.content_type)
    # A classifier answers probabilities by class id; verbose adds the class names (inference/classifier.py).
    classifier = values.get("recipe") == "classifier"
    args.accept = args.accept or ("application/json; verbose=true" if classifier else "application/json")
    body = args.file.read_bytes()
    if args.asynchronous:
        settings = _full_settings(args, where)
        key_name = hashlib.sha256(body).hexdigest() + args.file.suffix.lower()
        input_uri = endpoint_folder(settings, name, "input") + key_name
        return _invoke_async(args, where, values, name, input_uri, body, content_type)
    if where.is_local:
        from pipelines.local import endpoint_server

        url = _local_endpoint(where, name)["url"]
        status, answer_type, answer = endpoint_server.invoke(url, body, content_type, args.accept)
        if status >= 400:
            text = answer[:500].decode("utf-8", "replace")
            raise endpoint.EndpointError(f"endpoint {name} answered {status}: {text}")
    else:
        answer_type, answer = endpoint.invoke(
            _aws(values, where).runtime, name, body, content_type, args.accept
        )
    _write_answer(args, answer_type, answer)
    return 0


def _local_endpoint(where: settings_mod.Backend, name: str) -> dict[str, Any]:
    from pipelines.local import endpoint_server

    info = endpoint_server.status(where.local_root, name)
    if info is None:
        raise ValueError(f"no local endpoint {name} in {where.local_root}: robocar endpoint deploy --local")
    return info


def _write_answer(args: argparse.Namespace, content_type: str, body: bytes) -> None:
    if args.output is not None:
        args.output.write_bytes(body)
        print(f"{len(body)} bytes ({content_type}) -> {args.output}", file=sys.stderr)
        return
    try:
        print(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"the answer is {len(body)} bytes of {content_type}: give --output FILE") from None


def _invoke_async(
    args: argparse.Namespace,
    where: settings_mod.Backend,
    values: dict[str, Any],
    name: str,
    input_uri: str,
    body: bytes,
    content_type: str,
) -> int:
    """Upload the body to ``input_uri``, then ask for it to be processed: prints where the result goes."""
    from edge.s3_uri import split_s3_uri
    from pipelines import endpoint

    bucket, key = split_s3_uri(input_uri)
    if where.is_local:
        from pipelines.local import endpoint_server

        _local_endpoint(where, name)
        s3 = _local_clients(where, values.get("region")).s3
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        answer = {
            "InputLocation": input_uri,
            "OutputLocation": endpoint_server.invoke_async(
                where.local_root, name, input_uri, content_type=content_type, accept=args.accept
            ),
        }
    else:
        clients = _aws(values, where)
        clients.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        answer = {
            "InputLocation": input_uri,
            **endpoint.invoke_async(clients.runtime, name, input_uri, content_type, args.accept),
        }
    lines = [f"{name}: {input_uri} -> {answer.get('OutputLocation')}"]
    if answer.get("FailureLocation"):
        lines.append(f"  on failure: {answer['FailureLocation']}")
    _print(answer, args.json, lines)
    return 0


# ---------------------------------------------------------------- status, delete
def _status(args: argparse.Namespace) -> int:
    from pipelines import endpoint

    values, where = _where(args)
    name = endpoint_name(args, str(values["model_package_group"]))
    if where.is_local:
        from pipelines.local import endpoint_server

        info = endpoint_server.status(where.local_root, name)
        if info is None:
            raise ValueError(f"no local endpoint {name} in {where.local_root}")
        state = info.get("status", "")  # InService while its server answers /ping
        _print(
            info,
            args.json,
            [f"local endpoint {name}: {state} at {info.get('url')} serving {info.get('package')}"],
        )
        return 0
    described = endpoint.endpoint_status(_aws(values, where), name)
    if described is None:
        raise ValueError(f"no endpoint {name}")
    _print(described, args.json, _status_lines(described))
    return 0


def _status_lines(described: dict[str, Any]) -> list[str]:
    lines = [f"{described['EndpointName']}: {described['EndpointStatus']}"]
    if described.get("FailureReason"):
        lines.append(f"  failure: {described['FailureReason']}")
    config = described.get("Config", {})
    lines.append(f"  config:  {described['EndpointConfigName']}")
    for variant in config.get("ProductionVariants", []):
        lines.append(
            f"  variant: {variant['VariantName']} {variant.get('InstanceType', '')} x"
            f"{variant.get('InitialInstanceCount', '')} model {variant['ModelName']}"
        )
    output = config.get("AsyncInferenceConfig", {}).get("OutputConfig")
    if output:
        lines.append(
            f"  async:   {output.get('S3OutputPath')} (failures: {output.get('S3FailurePath', '-')})"
        )
    for target in described.get("ScalableTargets", []):
        lines.append(f"  scaling: {target['MinCapacity']}..{target['MaxCapacity']} instances")
    for policy in described.get("ScalingPolicies", []):
        lines.append(f"  policy:  {policy['PolicyName']} ({policy['PolicyType']})")
    return lines


def _delete(args: argparse.Namespace) -> int:
    from pipelines import endpoint

    values, where = _where(args)
    name = endpoint_name(args, str(values["model_package_group"]))
    if where.is_local:
        from pipelines.local import endpoint_server

        deleted = endpoint_server.delete(where.local_root, name)
        _print(
            {"Deleted": deleted},
            args.json,
            [f"deleted local endpoint {name}" if deleted else f"no local endpoint {name}"],
        )
        return 0
    removed = endpoint.delete(_aws(values, where), name)
    _print(
        {"Deleted": removed},
        args.json,
        [f"deleted {item}" for item in removed] or [f"nothing to delete for {name}"],
    )
    return 0
