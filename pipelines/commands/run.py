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
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines import settings as settings_mod


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
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="pipeline parameter, repeatable (e.g. --param Epochs=2 --param ModelType=categorical)",
    )  # fmt: skip
    parser.add_argument(
        "--data", type=Path, default=None, metavar="DIR",
        help="copy this folder of tubs under <prefix>/raw/ in local S3 first (the run snapshots that prefix)",
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
    settings_mod.add_arguments(parser, backend=True)  # local is the only backend `run` has
    parser.set_defaults(handler=main_from_args)


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


def read_definition(path: Path) -> str:
    """A definition file's text: a regular file, no larger than CreatePipeline's PipelineDefinition
    (botocore's model: 1,048,576 characters, so at most 4 bytes each), UTF-8 JSON of an object.

    Raises ValueError naming the file and what is wrong with it.
    """
    from pipelines.aws_rules import operation_model

    limit = operation_model("sagemaker", "CreatePipeline").input_shape.members["PipelineDefinition"]
    max_chars = int(limit.metadata["max"])
    if not path.is_file():
        raise ValueError(
            f"--definition {path}: no such file"
            if not path.exists()
            else f"--definition {path}: not a regular file"
        )
    with open(path, "rb") as handle:
        data = handle.read(4 * max_chars + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--definition {path}: not UTF-8 text, so not a definition (JSON)") from None
    if len(text) > max_chars:
        raise ValueError(f"--definition {path}: longer than {max_chars} characters, AWS's limit")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--definition {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or "Steps" not in document:
        raise ValueError(f"--definition {path} is not a pipeline definition (no 'Steps')")
    return text


def _definition(args: argparse.Namespace, settings: settings_mod.Settings, code: Any) -> str:
    if args.definition is not None:
        return read_definition(args.definition)
    from pipelines.control import build_definition

    print("building the pipeline definition (sagemaker SDK, offline) ...", flush=True)
    return build_definition(settings, args.edge_targets, code)


def _raw_data_url(
    definition: dict[str, Any], parameters: list[dict[str, str]], settings: settings_mod.Settings
) -> str | None:
    """Where ``--data`` goes: a given InputDataUrl prefix, else the recipe's raw folder (<prefix>/raw/ for
    the pilot); None without the parameter."""
    from pipelines import datasets

    if not datasets.declares_input_data_url(definition):
        return None
    given = datasets.given_input_data_url(parameters)
    if given and not datasets.is_manifest_uri(given):
        return given
    return datasets.raw_uri(settings.bucket, settings.prefix, settings.recipe)


def _upload_folder(s3: Any, folder: Path, uri: str) -> int:
    """Put every file under ``folder`` below the S3 prefix ``uri``; returns how many.

    The files are listed first (``runners.folder_files``: symbolic links followed within the folder,
    loops and links out of it refused with a message, the rule Preprocess's tub discovery follows), so
    nothing is uploaded from a folder that holds something refused.
    """
    from edge.s3_uri import split_s3_uri
    from pipelines.local.runners import folder_files

    bucket, prefix = split_s3_uri(uri)
    files = folder_files(folder, skip_in_progress=False)
    s3.create_bucket(Bucket=bucket)
    for relative, path in files:
        key = f"{prefix.rstrip('/')}/{relative}".lstrip("/")
        s3.upload_file(str(path), bucket, key)
    return len(files)


def check_workspace(workspace: Path) -> None:
    """The workspace is a folder this process can write to (created if missing); else a ValueError
    that names it, before anything is built or copied."""
    if workspace.exists() and not workspace.is_dir():
        raise ValueError(f"--workspace {workspace}: not a folder")
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workspace):
            pass
    except OSError as exc:
        raise ValueError(f"--workspace {workspace}: cannot write there ({exc.strerror})") from None


def check_data_folder(data: Path, workspace: Path) -> None:
    """``--data`` is a folder that neither holds the workspace (``--data .`` would copy local S3 into
    itself) nor lies in its local S3 (which the upload writes to). A folder of tubs elsewhere in the
    workspace is fine (``robocar demo`` keeps its tubs there)."""
    if not data.is_dir():
        raise ValueError(f"--data {data}: {'not a folder' if data.exists() else 'no such folder'}")
    folder, inside = data.resolve(), workspace.resolve()
    if inside.is_relative_to(folder) or folder.is_relative_to(inside / "s3"):
        raise ValueError(
            f"--data {data} overlaps the workspace's local S3 ({workspace / 's3'}): the upload would copy "
            "it into itself; pass a folder of tubs outside it"
        )


def prepare_workspace(
    workspace: Path,
    settings: settings_mod.Settings,
    definition_text: str,
    parameters: list[dict[str, str]],
    *,
    data: Path | None = None,
    code: Any = None,
) -> Any:
    """Local S3 ready for the run: the bucket, the code bundles the definition names, the input data.

    ``code`` is the code the definition was built with (its contents were read once); without it, the
    current tree's step bundles are uploaded where the definition names them. ``data`` goes under the
    raw-data prefix (``_raw_data_url``), which ``run_locally`` then snapshots.

    Returns the local clients (``edge.aws.AwsClients``). ValueError names anything missing.
    """
    from edge.aws import clients
    from pipelines import datasets
    from pipelines.code_bundle import CodeBundle

    definition = json.loads(definition_text)
    check_workspace(workspace)
    aws = clients(local_root=workspace, region=settings.region)
    data_url = _raw_data_url(definition, parameters, settings)
    given = datasets.given_input_data_url(parameters)
    for url in dict.fromkeys(u for u in (given, data_url) if u):  # before anything is written
        try:
            aws.s3.uri_to_path(url)
        except ValueError as exc:
            raise ValueError(f"InputDataUrl {url}: {exc}") from None
    aws.s3.create_bucket(Bucket=settings.bucket)
    code = code or CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    uploaded = code.upload(aws.s3, definition_text)  # the bundles the definition names, if any
    if uploaded:
        print(f"code bundles: {uploaded} object(s) put into local S3 ({code.folder_uri})", flush=True)
    if data is not None:
        check_data_folder(data, workspace)
        if data_url is None:
            raise ValueError("--data: the definition has no InputDataUrl parameter to put the data under")
        print(f"data: {_upload_folder(aws.s3, data, data_url)} file(s) from {data} -> {data_url}", flush=True)
    return aws


def snapshot_parameters(
    s3: Any, settings: settings_mod.Settings, definition: dict[str, Any], parameters: list[dict[str, str]]
) -> list[dict[str, str]]:
    """``parameters`` whose InputDataUrl names a snapshot of the tubs (pipelines/datasets.py)."""
    from pipelines import datasets

    try:
        parameters, taken = datasets.start_parameters(
            s3, definition, parameters, bucket=settings.bucket, prefix=settings.prefix,
            recipe=settings.recipe,
        )  # fmt: skip
    except datasets.DatasetError as exc:
        raise datasets.DatasetError(f"{exc} (local S3: {s3.base}); pass --data DIR with your tubs") from None
    if taken is not None:
        print(taken.line(), flush=True)
    return parameters


def run_locally(
    workspace: Path,
    settings: settings_mod.Settings,
    definition_text: str,
    parameters: list[dict[str, str]],
    *,
    data: Path | None = None,
    code: Any = None,
    on_event: Any = None,
    display_name: str | None = None,
) -> Any:
    """The whole local run as ``robocar run --local`` does it (for ``make demo``); returns the Execution.

    Prepares the workspace, upserts the pipeline into the local control plane (so ``robocar pipeline
    status`` sees it) and runs one execution. Raises ValueError (and the local client's ClientError with
    code ValidationException for a definition that cannot run locally) before any step starts.
    """
    from pipelines.code_bundle import CodeBundle
    from pipelines.control import upsert

    code = code or CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    aws = prepare_workspace(workspace, settings, definition_text, parameters, data=data, code=code)
    parameters = snapshot_parameters(aws.s3, settings, json.loads(definition_text), parameters)
    sagemaker = aws.sagemaker
    sagemaker.on_event = on_event
    # The same upsert as on AWS (the bundle is already in local S3, so it uploads nothing here).
    upsert(sagemaker, aws.s3, definition=definition_text, settings=settings, code=code)
    kwargs: dict[str, Any] = {"PipelineName": settings.pipeline_name, "PipelineParameters": parameters}
    if display_name:
        kwargs["PipelineExecutionDisplayName"] = display_name
    sagemaker.start_pipeline_execution(**kwargs)
    return sagemaker.last_execution


def main_from_args(args: argparse.Namespace) -> int:
    from pipelines.code_bundle import CodeBundle
    from pipelines.control import parse_parameters

    if not settings_mod.backend(args).is_local:
        raise ValueError(
            "`robocar run` runs locally and the settings choose AWS: add --local (or --workspace DIR). "
            "On AWS use `robocar pipeline upsert`, then `robocar pipeline start`."
        )
    settings, where = settings_mod.resolve_with_backend(args)  # local: placeholders never reach AWS
    workspace = where.local_root
    check_workspace(workspace)
    if args.data is not None:
        check_data_folder(args.data, workspace)
    code = CodeBundle(bucket=settings.bucket, prefix=settings.prefix)
    text = _definition(args, settings, code)
    parameters = parse_parameters(json.loads(text), args.param)
    execution = run_locally(
        workspace, settings, text, parameters, data=args.data, code=code, on_event=Progress(),
        display_name=args.display_name,
    )  # fmt: skip
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
