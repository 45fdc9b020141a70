"""``robocar pipeline``: print, check, upsert, start and follow the SageMaker Pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.aws import clients as aws_clients
from pipelines import datasets
from pipelines import settings as settings_mod
from pipelines.code_bundle import CodeBundle


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pipeline", help="build, upsert, start and follow the SageMaker Pipeline")
    commands = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    def add(
        name: str, handler: Any, help_text: str, *, targets: bool = False, local: bool = False
    ) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        settings_mod.add_arguments(p, backend=local)  # local: the workspace's control plane, no AWS
        if targets:
            p.add_argument(
                "--edge-targets", default=None,
                help="comma-separated Neo target devices that Register records (default: jetson_nano,rasp4b)",
            )  # fmt: skip
        p.set_defaults(handler=handler)
        return p

    add(
        "definition",
        _definition,
        "print the pipeline definition JSON (offline; no credentials needed)",
        targets=True,
    )
    add("summary", _summary, "print the parameters and steps of the definition, readably", targets=True)
    add("validate", _validate, "check the definition against AWS's published schema outside its known gaps, "
        "and each step's request against the API's rules", targets=True)  # fmt: skip
    add("upsert", _upsert, "upload the code, then create or update the pipeline", targets=True, local=True)
    start = add(
        "start", _start, "start an execution (parameters are checked before any AWS call; InputDataUrl is "
        "a snapshot of <prefix>/raw/ unless --param InputDataUrl names a manifest or another prefix)",
        targets=True, local=True,
    )  # fmt: skip
    start.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="pipeline parameter, repeatable (e.g. --param Epochs=10 --param ModelType=categorical)",
    )  # fmt: skip
    start.add_argument("--display-name", default=None, help="execution display name")
    status = add("status", _status, "show recent executions and their steps", local=True)
    status.add_argument("--limit", type=int, default=5, help="how many executions (default: 5)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _definition_text(
    args: argparse.Namespace, *, use_examples: bool, code: CodeBundle | None = None
) -> tuple[settings_mod.Settings, str]:
    from pipelines.control import build_definition

    settings = settings_mod.resolve(args, use_examples=use_examples)
    return settings, build_definition(settings, getattr(args, "edge_targets", None), code)


def _definition(args: argparse.Namespace) -> int:
    _, text = _definition_text(args, use_examples=True)
    sys.stdout.write(text)
    return 0


def _summary(args: argparse.Namespace) -> int:
    from pipelines.summary import summarise

    settings, text = _definition_text(args, use_examples=True)
    print(summarise(json.loads(text), settings.pipeline_name))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pipelines.schema_check import KNOWN_GAPS, schema_errors
    from pipelines.step_requests import check_definition

    settings, text = _definition_text(args, use_examples=True)
    definition = json.loads(text)
    errors = schema_errors(definition)
    for error in errors:
        print(error)
    print(f"{len(errors)} schema error(s) outside {len(KNOWN_GAPS)} known gaps:")
    for gap in KNOWN_GAPS:
        print(f"  - {gap.name}: {gap.reason}")
    # The schema is not the whole truth: each step becomes an API request that must pass AWS's own rules.
    problems = check_definition(definition, pipeline_name=settings.pipeline_name, region=settings.region)
    for problem in problems:
        print(problem)
    print(
        f"{len(problems)} step request(s) AWS would refuse (botocore's model, patterns and lengths included)"
    )
    return 1 if errors or problems else 0


def _say_where(where: settings_mod.Backend) -> None:
    """On stderr, so that stdout stays the answer: acting locally is the default, and says so."""
    if where.is_local:
        print(f"in the local workspace {where.local_root} (no AWS; --aws acts on AWS)", file=sys.stderr)


def clients(settings: settings_mod.Settings, local_root: Path | None = None) -> tuple[Any, Any]:
    """SageMaker and S3 clients: the local workspace's, or boto3's for the settings' region and endpoint."""
    aws = aws_clients(local_root=local_root, region=settings.region, endpoint_url=settings.endpoint_url)
    return aws.sagemaker, aws.s3


def _upsert(args: argparse.Namespace) -> int:
    from pipelines.control import upsert

    settings, where = settings_mod.resolve_with_backend(args)
    code = CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    _, text = _definition_text(args, use_examples=where.is_local, code=code)
    sagemaker, s3 = clients(settings, where.local_root)
    _say_where(where)
    if where.is_local:
        s3.create_bucket(Bucket=settings.bucket)
    result = upsert(sagemaker, s3, definition=text, settings=settings, code=code)
    print(f"{result.action}: {result.pipeline_arn}")
    print(f"code: {code.folder_uri} ({result.code_objects_uploaded} object(s) uploaded)")
    return 0


def _start(args: argparse.Namespace) -> int:
    from pipelines.control import parse_parameters, start

    # Checked against the definition upsert deploys, built offline: a bad parameter never reaches AWS.
    settings, where = settings_mod.resolve_with_backend(args)
    _, text = _definition_text(args, use_examples=where.is_local)
    definition = json.loads(text)
    parameters = parse_parameters(definition, args.param)
    sagemaker, s3 = clients(settings, where.local_root)
    _say_where(where)
    # Preprocess reads a dataset named by its content: snapshot the raw prefix (or the given one) first.
    parameters, taken = datasets.start_parameters(
        s3, definition, parameters, bucket=settings.bucket, prefix=settings.prefix, recipe=settings.recipe
    )
    if taken is not None:
        print(taken.line(), file=sys.stderr)
    arn = start(
        sagemaker, pipeline_name=settings.pipeline_name, parameters=parameters, display_name=args.display_name
    )
    print(arn)
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipelines.control import recent_executions

    settings, where = settings_mod.resolve_with_backend(args)
    sagemaker, _ = clients(settings, where.local_root)
    _say_where(where)
    executions = recent_executions(sagemaker, settings.pipeline_name, args.limit)
    if args.json:
        print(json.dumps(executions, indent=2, default=str))
        return 0
    if not executions:
        print(f"no executions of {settings.pipeline_name} yet")
    for execution in executions:
        print(
            f"{execution['PipelineExecutionStatus']:<10} {execution['StartTime']!s:<26} "
            f"{execution.get('PipelineExecutionDisplayName', '')}  {execution['PipelineExecutionArn']}"
        )
        for step in execution["Steps"] or []:
            timing = ""
            if step.get("StartTime") and step.get("EndTime"):
                timing = f"{(step['EndTime'] - step['StartTime']).total_seconds():.1f}s"
            print(f"    {step['StepName']:<16} {step['StepStatus']:<10} {timing}")
        if execution["Steps"] is None:
            print("    (this endpoint does not list execution steps)")
    return 0
