"""``robocar pipeline``: print, check, upsert, start and follow the SageMaker Pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipelines import settings as settings_mod


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pipeline", help="build, upsert, start and follow the SageMaker Pipeline")
    commands = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    def add(name: str, handler: Any, help_text: str, *, targets: bool = False) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        settings_mod.add_arguments(p)
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
    add("validate", _validate, "check the definition against AWS's published schema outside its known gaps",
        targets=True)  # fmt: skip
    add("upsert", _upsert, "upload the code bundle, then create or update the pipeline", targets=True)
    start = add(
        "start", _start, "start an execution (parameters are checked before any AWS call)", targets=True
    )
    start.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="pipeline parameter, repeatable (e.g. --param Epochs=10 --param ModelType=categorical)",
    )  # fmt: skip
    start.add_argument("--display-name", default=None, help="execution display name")
    status = add("status", _status, "show recent executions and their steps")
    status.add_argument("--limit", type=int, default=5, help="how many executions (default: 5)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _fail(message: str) -> int:
    print(f"robocar: error: {message}", file=sys.stderr)
    return 2


def _definition_text(args: argparse.Namespace, *, use_examples: bool) -> tuple[settings_mod.Settings, str]:
    from pipelines.control import build_definition

    settings = settings_mod.resolve(args, use_examples=use_examples)
    return settings, build_definition(settings, getattr(args, "edge_targets", None))


def _guarded(fn: Any) -> Any:
    """User errors (settings, parameters, targets) become one clear line and exit code 2."""

    def wrapper(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        from pipelines.control import ParameterError

        try:
            return fn(args)
        except (settings_mod.SettingsError, ParameterError, ValueError) as exc:
            return _fail(str(exc))
        except (BotoCoreError, ClientError) as exc:
            return _fail(f"AWS: {exc}")

    return wrapper


@_guarded
def _definition(args: argparse.Namespace) -> int:
    _, text = _definition_text(args, use_examples=True)
    sys.stdout.write(text)
    return 0


@_guarded
def _summary(args: argparse.Namespace) -> int:
    from pipelines.summary import summarise

    settings, text = _definition_text(args, use_examples=True)
    print(summarise(json.loads(text), settings.pipeline_name))
    return 0


@_guarded
def _validate(args: argparse.Namespace) -> int:
    from pipelines.schema_check import KNOWN_GAPS, schema_errors

    _, text = _definition_text(args, use_examples=True)
    errors = schema_errors(json.loads(text))
    for error in errors:
        print(error)
    print(f"{len(errors)} schema error(s) outside {len(KNOWN_GAPS)} known gaps:")
    for gap in KNOWN_GAPS:
        print(f"  - {gap.name}: {gap.reason}")
    return 1 if errors else 0


def clients(settings: settings_mod.Settings) -> tuple[Any, Any]:
    """boto3 SageMaker and S3 clients for the settings' region and endpoint."""
    import boto3

    session = boto3.Session(region_name=settings.region)
    kwargs = {"endpoint_url": settings.endpoint_url} if settings.endpoint_url else {}
    return session.client("sagemaker", **kwargs), session.client("s3", **kwargs)


@_guarded
def _upsert(args: argparse.Namespace) -> int:
    from pipelines.code_bundle import CodeBundle
    from pipelines.control import upsert

    settings, text = _definition_text(args, use_examples=False)
    sagemaker, s3 = clients(settings)
    code = CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    result = upsert(sagemaker, s3, definition=text, settings=settings, code=code)
    print(f"{result.action}: {result.pipeline_arn}")
    print(f"code: {code.uri} ({result.code_objects_uploaded} object(s) uploaded)")
    return 0


@_guarded
def _start(args: argparse.Namespace) -> int:
    from pipelines.control import parse_parameters, start

    # Checked against the definition upsert deploys, built offline: a bad parameter never reaches AWS.
    settings, text = _definition_text(args, use_examples=False)
    parameters = parse_parameters(json.loads(text), args.param)
    sagemaker, _ = clients(settings)
    arn = start(
        sagemaker, pipeline_name=settings.pipeline_name, parameters=parameters, display_name=args.display_name
    )
    print(arn)
    return 0


@_guarded
def _status(args: argparse.Namespace) -> int:
    from pipelines.control import recent_executions

    settings = settings_mod.resolve(args)
    sagemaker, _ = clients(settings)
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
