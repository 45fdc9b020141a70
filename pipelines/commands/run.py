"""``robocar run --local``: the whole pipeline on this machine, with no AWS account and no Docker.

Builds the same definition ``robocar pipeline upsert`` sends (or reads one with ``--definition``),
uploads the code bundle (and ``--data``) to the workspace's local S3, upserts the pipeline into the local
control plane and runs an execution with per-step progress. Afterwards ``robocar pipeline status`` and
``robocar registry list`` (with ``--local``) show the result; the HTML report sits next to the execution.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import settings as settings_mod

DEFAULT_WORKSPACE = Path(".robocar")


def register(sub: argparse._SubParsersAction) -> None:
    description = (
        "Run the pipeline locally: the definition's steps as local processes with the SageMaker container "
        "contracts, S3 and the model registry as folders under the workspace. Unchanged steps are reused "
        "from earlier runs (CacheConfig)."
    )
    parser = sub.add_parser(
        "run", help="run the whole pipeline locally (no AWS, no Docker)", description=description
    )
    parser.add_argument(
        "--local", action="store_true", help="run locally (the only mode `run` has; required)"
    )
    parser.add_argument(
        "--workspace", type=Path, default=DEFAULT_WORKSPACE,
        help=f"local S3, registry, executions and cache live here (default: ./{DEFAULT_WORKSPACE})",
    )  # fmt: skip
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="pipeline parameter, repeatable (e.g. --param Epochs=2 --param ModelType=categorical)",
    )  # fmt: skip
    parser.add_argument(
        "--data", type=Path, default=None, metavar="DIR",
        help="copy this folder of tubs to the InputDataUrl prefix in local S3 before running",
    )  # fmt: skip
    parser.add_argument(
        "--definition", type=Path, default=None, metavar="FILE",
        help="run this definition JSON instead of building one (e.g. saved by `robocar pipeline definition`)",
    )  # fmt: skip
    parser.add_argument(
        "--edge-targets",
        default=None,
        help="comma-separated edge targets to register (default: the pipeline's)",
    )
    parser.add_argument("--display-name", default=None, help="execution display name")
    parser.add_argument("--json", action="store_true", help="print the execution record as JSON at the end")
    settings_mod.add_arguments(parser)
    parser.set_defaults(handler=main_from_args)


def _fail(message: str) -> int:
    print(f"robocar run: error: {message}", file=sys.stderr)
    return 2


class Progress:
    """One line per step start and end; a failing step's log tail, indented."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self.started = time.perf_counter()

    @property
    def stream(self) -> Any:
        return self._stream or sys.stdout  # looked up late: stdout may be redirected after construction

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        elapsed = f"[{time.perf_counter() - self.started:7.1f}s]"
        if kind == "execution-started":
            execution = event["execution"]
            print(
                f"{elapsed} execution {execution.execution_id} of {execution.pipeline_name}", file=self.stream
            )
            print(f"{'':10} logs: {execution.path / 'logs'}", file=self.stream)
        elif kind == "step-started":
            print(f"{elapsed} {event['step'].name:<18} started", file=self.stream)
        elif kind == "step-finished":
            step = event["step"]
            seconds = f"{step.seconds:.1f} s" if step.seconds is not None else ""
            note = " (cached)" if step.cache_hit_from else ""
            note += f" (attempts: {step.attempts})" if step.attempts > 1 else ""
            note += f" -> {step.outcome}" if step.outcome else ""
            print(f"{elapsed} {step.name:<18} {step.status:<10} {seconds}{note}", file=self.stream)
            if step.status == "Failed":
                print(f"{'':10} reason: {step.failure_reason}", file=self.stream)
                tail = event.get("log_tail")
                if tail:
                    print(f"{'':10} log ({step.log_path}), last lines:", file=self.stream)
                    for line in tail.splitlines():
                        print(f"{'':12}| {line}", file=self.stream)
        self.stream.flush()


def _definition(args: argparse.Namespace, settings: settings_mod.Settings) -> str:
    if args.definition is not None:
        if not args.definition.is_file():
            raise ValueError(f"--definition {args.definition}: no such file")
        return args.definition.read_text()
    from pipelines.control import build_definition

    print("building the pipeline definition (sagemaker SDK, offline) ...", flush=True)
    return build_definition(settings, args.edge_targets)


def _input_data_url(definition: dict[str, Any], parameters: list[dict[str, str]]) -> str | None:
    given = {p["Name"]: p["Value"] for p in parameters}
    declared = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
    if "InputDataUrl" not in declared:
        return None
    return given.get("InputDataUrl", declared["InputDataUrl"])


def _upload_folder(s3: Any, folder: Path, uri: str) -> int:
    from edge.local_aws import split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    s3.create_bucket(Bucket=bucket)
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}".lstrip("/")
            s3.upload_file(str(path), bucket, key)
            count += 1
    return count


def _has_objects(s3: Any, uri: str) -> bool:
    from edge.local_aws import split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    try:
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents"))
    except Exception:  # no such bucket
        return False


def prepare(args: argparse.Namespace) -> tuple[Any, settings_mod.Settings, str, list[dict[str, str]]]:
    """Everything before the run: definition, parameters, code bundle and data in local S3."""
    from edge.aws import clients
    from pipelines.control import parse_parameters

    settings = settings_mod.resolve(args, use_examples=True)  # local: placeholders never reach AWS
    text = _definition(args, settings)
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the definition is not JSON: {exc}") from None
    parameters = parse_parameters(definition, args.param)
    aws = clients(local_root=args.workspace, region=settings.region)
    aws.s3.create_bucket(Bucket=settings.bucket)
    from pipelines.code_bundle import CodeBundle

    code = CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    if args.definition is None and code.uri not in text:
        # The definition names the code by content; a file edited while it was built changes the name.
        raise ValueError(f"the container code changed while the definition was built ({code.uri}): run again")
    if code.uri in text:
        uploaded = code.upload(aws.s3)
        if uploaded:
            print(f"code bundle: {uploaded} object(s) put into local S3 ({code.uri})", flush=True)
    data_url = _input_data_url(definition, parameters)
    if args.data is not None:
        if not args.data.is_dir():
            raise ValueError(f"--data {args.data}: not a folder")
        if data_url is None:
            raise ValueError("--data: the definition has no InputDataUrl parameter to put the data under")
        print(f"data: {_upload_folder(aws.s3, args.data, data_url)} file(s) from {args.data} -> {data_url}")
    if data_url and not _has_objects(aws.s3, data_url):
        raise ValueError(
            f"no input data at {data_url} (local folder {aws.s3.uri_to_path(data_url)}): "
            "pass --data DIR with your tubs, or --param InputDataUrl=s3://..."
        )
    return aws, settings, text, parameters


def upsert_local(sagemaker: Any, name: str, definition: str, role: str) -> None:
    try:
        sagemaker.describe_pipeline(PipelineName=name)
    except sagemaker.exceptions.ClientError:
        sagemaker.create_pipeline(PipelineName=name, PipelineDefinition=definition, RoleArn=role)
        return
    sagemaker.update_pipeline(PipelineName=name, PipelineDefinition=definition, RoleArn=role)


def main_from_args(args: argparse.Namespace) -> int:
    from pipelines.control import ParameterError
    from pipelines.local import DefinitionError

    if not args.local:
        return _fail(
            "`robocar run` runs locally: add --local. "
            "On AWS use `robocar pipeline upsert`, then `robocar pipeline start`."
        )
    try:
        aws, settings, text, parameters = prepare(args)
    except (settings_mod.SettingsError, ParameterError, DefinitionError, ValueError) as exc:
        return _fail(str(exc))
    sagemaker = aws.sagemaker
    sagemaker.on_event = Progress()
    upsert_local(sagemaker, settings.pipeline_name, text, settings.role)
    kwargs: dict[str, Any] = {"PipelineName": settings.pipeline_name, "PipelineParameters": parameters}
    if args.display_name:
        kwargs["PipelineExecutionDisplayName"] = args.display_name
    try:
        sagemaker.start_pipeline_execution(**kwargs)
    except sagemaker.exceptions.ClientError as exc:  # the definition cannot run here, or a bad parameter
        return _fail(exc.response["Error"]["Message"])
    execution = sagemaker.last_execution
    print(f"{execution.status}: {execution.arn}")
    if execution.failure_reason:
        print(f"reason: {execution.failure_reason}")
    report = execution.path / "report.html"
    if report.is_file():
        print(f"report: {report}")
    for record in execution.steps.values():
        if record.type == "RegisterModel" and record.status == "Succeeded":
            package = record.properties
            print(f"registered: {package['ModelPackageArn']} ({package['ModelApprovalStatus']})")
    if args.json:
        print(json.dumps(execution.to_dict(), indent=2, default=str))
    return {"Succeeded": 0, "Stopped": 130}.get(execution.status, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robocar")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
