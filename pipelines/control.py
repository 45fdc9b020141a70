"""The control plane: build the definition, upsert it, start and follow executions.

Every function takes its AWS clients as arguments (boto3, a moto server's, or the local ones), so the
same code runs against AWS, moto and local mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edge.agent import edge_targets_of
from pipelines.code_bundle import CodeBundle
from pipelines.definition_steps import all_steps
from pipelines.parameters import ParameterError, api_string, parameter_value
from pipelines.settings import Settings


@contextlib.contextmanager
def quiet_sdk() -> Iterator[None]:
    """Silence the SDK while it builds, and undo what it does to the process's logging.

    It logs INFO/DEBUG chatter, and importing it calls ``logging.basicConfig(level=INFO)``
    (sagemaker/core/experiments/_metrics.py), which would decide the log format of whatever runs
    next in this process (``robocar demo`` runs every stage in one).
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
            root.handlers[:] = handlers
            root.setLevel(level)


# Each recipe's ``get_pipeline`` (edge.settings.RECIPE_NAMES lists the recipes).
RECIPE_MODULES = {
    "pilot": "pipelines.robocar.pipeline",
    "classifier": "pipelines.classifier.pipeline",
    "detection": "pipelines.detection.pipeline",
}


def build_definition(
    settings: Settings, edge_targets: Sequence[str] | str | None = None, code: CodeBundle | None = None
) -> str:
    """The pipeline definition JSON (offline, deterministic), as upsert sends it.

    Pass the ``code`` that will be uploaded: its contents are read once, so the hashes the definition
    names are the hashes of what goes to S3 even if a file changes in between.
    """
    import importlib

    from pipelines.robocar.targets import DEFAULT_EDGE_TARGETS

    get_pipeline = importlib.import_module(RECIPE_MODULES[settings.recipe]).get_pipeline
    image_recipe = settings.recipe != "pilot"
    recipe_options = {"training_algorithm": settings.training_algorithm} if image_recipe else {}
    with quiet_sdk():
        pipeline = get_pipeline(
            region=settings.region,
            role=settings.role,
            default_bucket=settings.bucket,
            pipeline_name=settings.pipeline_name,
            model_package_group_name=settings.model_package_group,
            base_prefix=settings.prefix,
            edge_targets=edge_targets or DEFAULT_EDGE_TARGETS,
            code=code,
            **recipe_options,
        )
        text = pipeline.definition()
    return json.dumps(json.loads(text), indent=2) + "\n"


def registered_edge_targets(definition: dict[str, Any]) -> tuple[str, ...]:
    """The edge targets the Register step records (its ``edge:<target>:uri`` metadata keys)."""
    for step in all_steps(definition["Steps"]):
        if step["Type"] == "RegisterModel":
            return tuple(edge_targets_of(step["Arguments"].get("CustomerMetadataProperties") or {}))
    return ()


def _positive_int(value: str) -> bool:
    return value.isdigit() and int(value) > 0


# String parameters whose strings have a shape (hyperparameters travel as strings: docs/design.md).
STRING_SHAPES = {
    "Epochs": (_positive_int, "a positive integer"),
    "InputDataUrl": (lambda v: v.startswith("s3://") and len(v) > 5, "an s3:// URI"),
    "ProcessingInstanceType": (lambda v: v.startswith("ml."), "a SageMaker instance type (ml.*)"),
    "TrainingInstanceType": (lambda v: v.startswith("ml."), "a SageMaker instance type (ml.*)"),
}


def parse_parameters(definition: dict[str, Any], assignments: Sequence[str]) -> list[dict[str, str]]:
    """``["Epochs=5", ...]`` -> PipelineParameters, checked against the definition before any AWS call."""
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    result: dict[str, str] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise ParameterError(f"expected NAME=VALUE, got {assignment!r}")
        if name not in declared:
            raise ParameterError(
                f"unknown parameter {name!r}; the pipeline declares: {', '.join(sorted(declared))}"
            )
        if name in result:
            raise ParameterError(f"parameter {name} given twice")
        result[name] = api_string(parameter_value(declared[name], raw))
        check, shape = STRING_SHAPES.get(name, (None, ""))
        if check and not check(raw):
            raise ParameterError(f"parameter {name} must be {shape}; got {raw!r}")
    if "EdgeTargets" in result:
        from pipelines.robocar.targets import parse_edge_targets

        try:
            targets = parse_edge_targets(result["EdgeTargets"])
        except ValueError as exc:
            raise ParameterError(f"parameter EdgeTargets: {exc}") from None
        registered = registered_edge_targets(definition)
        if set(targets) != set(registered):
            raise ParameterError(
                f"parameter EdgeTargets={result['EdgeTargets']} differs from the targets this pipeline "
                f"registers "
                f"({','.join(registered)}): every registered package must carry an artifact for each; "
                "upsert the pipeline with --edge-targets to change the set"
            )
        result["EdgeTargets"] = ",".join(targets)
    return [{"Name": k, "Value": v} for k, v in result.items()]


@dataclass(frozen=True)
class UpsertResult:
    action: str  # "created" | "updated" | "unchanged"
    pipeline_arn: str
    code_objects_uploaded: int


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    # AWS: ResourceNotFound "... does not exist"; moto: ValidationException "Could not find pipeline ..."
    return code == "ResourceNotFound" or "does not exist" in str(exc) or "Could not find pipeline" in str(exc)


def upsert(
    sagemaker: Any, s3: Any, *, definition: str, settings: Settings, code: CodeBundle, description: str = ""
) -> UpsertResult:
    """Upload the code bundles the definition names, then create the pipeline or update it; an unchanged
    pipeline is left alone."""
    uploaded = code.upload(s3, definition)
    try:
        current = sagemaker.describe_pipeline(PipelineName=settings.pipeline_name)
    except Exception as exc:
        if not _is_missing(exc):
            raise
        response = sagemaker.create_pipeline(
            PipelineName=settings.pipeline_name,
            PipelineDefinition=definition,
            PipelineDescription=description
            or "DonkeyCar tubs -> trained, evaluated, compiled, registered pilot",
            RoleArn=settings.role,
        )
        return UpsertResult("created", response["PipelineArn"], uploaded)
    same_definition = json.loads(current["PipelineDefinition"]) == json.loads(definition)
    if same_definition and current.get("RoleArn") == settings.role:
        return UpsertResult("unchanged", current["PipelineArn"], uploaded)
    response = sagemaker.update_pipeline(
        PipelineName=settings.pipeline_name, PipelineDefinition=definition, RoleArn=settings.role
    )
    return UpsertResult("updated", response["PipelineArn"], uploaded)


def start(
    sagemaker: Any, *, pipeline_name: str, parameters: list[dict[str, str]], display_name: str | None = None
) -> str:
    kwargs: dict[str, Any] = {"PipelineName": pipeline_name, "PipelineParameters": parameters}
    if display_name:
        kwargs["PipelineExecutionDisplayName"] = display_name
    return sagemaker.start_pipeline_execution(**kwargs)["PipelineExecutionArn"]


def recent_executions(sagemaker: Any, pipeline_name: str, limit: int = 10) -> list[dict[str, Any]]:
    """Newest first: each execution's summary and, where the API offers them, its steps."""
    summaries = sagemaker.list_pipeline_executions(
        PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending", MaxResults=limit
    )["PipelineExecutionSummaries"]
    result = []
    for summary in summaries:
        try:
            steps = sagemaker.list_pipeline_execution_steps(
                PipelineExecutionArn=summary["PipelineExecutionArn"], SortOrder="Ascending"
            )["PipelineExecutionSteps"]
        except NotImplementedError:  # moto in-process lacks list_pipeline_execution_steps (docs/design.md)
            steps = None
        except Exception as exc:  # the same gap through a moto server arrives as an HTTP 500
            if getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") != 500:
                raise
            steps = None
        result.append({**summary, "Steps": steps})
    return result
