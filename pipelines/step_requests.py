"""The request SageMaker makes for each step of a pipeline definition, checked against the API model.

A definition is accepted by CreatePipeline long before its steps run: a step whose arguments AWS would
refuse fails only in an execution, after the steps before it have run (hours of training). This module
resolves each step's ``Arguments`` offline into the request SageMaker sends and checks it with
``pipelines/aws_rules.py``:

- Processing -> ``CreateProcessingJob`` (plus ``ProcessingJobName``), Training -> ``CreateTrainingJob``
  (plus ``TrainingJobName``), RegisterModel -> ``CreateModelPackage``, Model -> ``CreateModel`` (plus
  ``ModelName``); steps inside a Condition's ``IfSteps``/``ElseSteps`` too.
- ``Get: Parameters.X`` takes the given value or the default; ``Get: Execution.*`` sample values (an
  execution id like SageMaker's: 12 lowercase letters and digits); ``Get: Steps.X.*`` the properties
  step X would have (its request plus the job's ARN, model artifacts, metrics, as the local runners
  give them); ``Std:JsonGet`` a value shaped by its path (a SHA-256 for ``*.sha256``, a runtime name,
  an S3 URI, a number). The evaluation is the local executor's (``pipelines/local/expressions.py``).

``check_definition(definition, parameters) -> [StepProblem]`` lists what AWS would refuse, naming the
step and the member; ``python -m pipelines.step_requests definition.json [NAME=VALUE ...]`` prints it
(``robocar pipeline definition > definition.json`` writes the definition).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.settings import default_of
from pipelines.aws_rules import request_problems
from pipelines.local import runners
from pipelines.local.executor import bind_parameters, job_name, pipeline_arn, plan
from pipelines.local.expressions import ExpressionError, Scope, parse_path, resolve, step_scope

DEFAULT_PIPELINE_NAME = default_of("pipeline_name")

SAMPLE_EXECUTION_ID = "q9x1b2c3d4e5"  # SageMaker's execution ids: 12 lowercase letters and digits
SAMPLE_JOB_SUFFIX = "k7m2p9"
SAMPLE_TIME = "2026-01-15T09:30:00.000Z"
SAMPLE_NUMBER = 0.05  # a metric value (an MAE, a delta): what most JsonGet paths read
SAMPLE_RUNTIME = "litert"
SAMPLE_BUCKET = "robocar-data-123456789012"

# step type -> (operation, the name member SageMaker adds to the step's Arguments)
STEP_OPERATIONS: dict[str, tuple[str, str | None]] = {
    "Processing": ("CreateProcessingJob", "ProcessingJobName"),
    "Training": ("CreateTrainingJob", "TrainingJobName"),
    "RegisterModel": ("CreateModelPackage", None),
    "Model": ("CreateModel", "ModelName"),
}


@dataclass(frozen=True)
class StepRequest:
    step: str
    step_type: str
    operation: str
    request: dict[str, Any]


@dataclass(frozen=True)
class StepProblem:
    step: str
    operation: str
    message: str

    def __str__(self) -> str:
        return f"step {self.step} ({self.operation}): {self.message}"


# ---------------------------------------------------------------- sample values
def sample_json_value(path: str) -> Any:
    """A plausible value for what a ``Std:JsonGet`` ``path`` reads (``targets.rasp4b.sha256``...)."""
    leaf = str(parse_path(_json_path(path))[-1]).lower()
    if "sha256" in leaf:
        return hashlib.sha256(path.encode()).hexdigest()
    if "runtime" in leaf:
        return SAMPLE_RUNTIME
    if leaf.endswith(("uri", "url")):
        return f"s3://{SAMPLE_BUCKET}/robocar/{leaf}"
    if leaf.endswith(("bytes", "frames", "count", "size")):
        return 123456
    return SAMPLE_NUMBER


def _json_path(path: str) -> str:
    return path[2:] if path.startswith("$.") else path  # as expressions.json_get reads it


def _set_path(document: dict[str, Any], tokens: list[str | int], value: Any) -> None:
    """Put ``value`` at ``tokens`` in ``document``, making the dicts and lists on the way."""
    node: Any = document
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        empty: Any = value if following is None else [] if isinstance(following, int) else {}
        if isinstance(token, int):
            while len(node) <= token:
                node.append(None)
            if node[token] is None or following is None:
                node[token] = empty
        elif token not in node or following is None:
            node[token] = empty
        node = node[token]


def _json_gets(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``Std:JsonGet`` spec in ``value``."""
    if isinstance(value, list):
        for item in value:
            yield from _json_gets(item)
    elif isinstance(value, dict):
        if set(value) == {"Std:JsonGet"} and isinstance(value["Std:JsonGet"], dict):
            yield value["Std:JsonGet"]
        for item in value.values():
            yield from _json_gets(item)


def sample_property_files(definition: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict]:
    """Documents that answer every literal JsonGet path of the definition with ``sample_json_value``.

    Returns (step -> property file name -> document, the document any ``S3Uri`` JsonGet reads).
    """
    files: dict[str, dict[str, Any]] = {}
    s3_document: dict[str, Any] = {}
    for spec in _json_gets(definition.get("Steps", [])):
        path = spec.get("Path")
        if not isinstance(path, str):
            continue
        reference = (spec.get("PropertyFile") or {}).get("Get", "") if "PropertyFile" in spec else ""
        parts = reference.split(".")
        if len(parts) >= 4 and parts[0] == "Steps" and parts[2] == "PropertyFiles":
            document = files.setdefault(parts[1], {}).setdefault(".".join(parts[3:]), {})
        else:
            document = s3_document
        _set_path(document, parse_path(_json_path(path)), sample_json_value(path))
    return files, s3_document


def sample_scope(
    definition: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    *,
    pipeline_name: str,
    region: str,
) -> Scope:
    declared = list(definition.get("Parameters", []))
    arn = pipeline_arn(region, pipeline_name)
    files, s3_document = sample_property_files(definition)
    return Scope(
        parameters=bind_parameters(declared, parameters),
        execution={
            "PipelineExecutionId": SAMPLE_EXECUTION_ID,
            "PipelineExecutionArn": f"{arn}/execution/{SAMPLE_EXECUTION_ID}",
            "PipelineName": pipeline_name,
            "PipelineArn": arn,
            "StartDateTime": SAMPLE_TIME,
            "CurrentDateTime": SAMPLE_TIME,
        },
        property_files=files,
        read_s3_json=lambda uri: s3_document,
    )


def predicted_properties(step_type: str, request: dict[str, Any], region: str) -> dict[str, Any]:
    """What ``Steps.<name>`` would hold after the step ran: the describe shape the local runners give."""
    if step_type == "Processing":
        name = request["ProcessingJobName"]
        return {
            **request,
            "ProcessingJobArn": runners._arn(region, f"processing-job/{name.lower()}"),
            "ProcessingJobStatus": "Completed",
        }
    if step_type == "Training":
        name = request["TrainingJobName"]
        output_path = (request.get("OutputDataConfig") or {}).get("S3OutputPath", f"s3://{SAMPLE_BUCKET}")
        metrics = (request.get("AlgorithmSpecification") or {}).get("MetricDefinitions", [])
        return {
            **request,
            "TrainingJobArn": runners._arn(region, f"training-job/{name.lower()}"),
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": runners.model_artifacts_uri(output_path, name)},
            "FinalMetricDataList": [
                {"MetricName": m.get("Name"), "Value": SAMPLE_NUMBER, "Timestamp": SAMPLE_TIME}
                for m in metrics
            ],
        }
    if step_type == "RegisterModel":
        group = str(request.get("ModelPackageGroupName", "group")).rsplit("/", 1)[-1]
        return {
            **request,
            "ModelPackageArn": runners._arn(region, f"model-package/{group.lower()}/1"),
            "ModelPackageVersion": 1,
            "ModelPackageStatus": "Completed",
        }
    if step_type == "Model":
        return {**request, "ModelArn": runners._arn(region, f"model/{request['ModelName'].lower()}")}
    return {"Outcome": "True"} if step_type == "Condition" else {}


# ---------------------------------------------------------------- requests and their problems
def _resolved_requests(
    definition: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    pipeline_name: str,
    region: str,
) -> Iterator[StepRequest | StepProblem]:
    """Each request step's request, in dependency order, or the problem that stops resolving it."""
    steps = plan(definition)  # checks references and orders the steps (DefinitionError when broken)
    scope = sample_scope(definition, parameters, pipeline_name=pipeline_name, region=region)
    for name in steps.order:
        step = steps.steps[name]
        operation, name_member = STEP_OPERATIONS.get(step.type, ("", None))
        if not operation:
            scope.steps[name] = predicted_properties(step.type, {}, region)
            continue
        sample_job = job_name(SAMPLE_EXECUTION_ID, name, SAMPLE_JOB_SUFFIX)
        try:
            request = resolve(step.spec.get("Arguments", {}), step_scope(scope, step.type, sample_job))
        except ExpressionError as exc:
            yield StepProblem(name, operation, f"cannot resolve its arguments: {exc}")
            continue
        if step.type == "RegisterModel":
            request = runners._stringify_maps(request)  # what the local Register step sends, too
        if name_member:
            request[name_member] = sample_job
        scope.steps[name] = predicted_properties(step.type, request, region)
        yield StepRequest(name, step.type, operation, request)


def step_requests(
    definition: Mapping[str, Any],
    parameters: Mapping[str, Any] | None = None,
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    region: str = "us-east-1",
) -> list[StepRequest]:
    """The request of every Processing, Training, RegisterModel and Model step (raises when unresolvable)."""
    requests = []
    for item in _resolved_requests(definition, parameters, pipeline_name, region):
        if isinstance(item, StepProblem):
            raise ExpressionError(str(item))
        requests.append(item)
    return requests


def check_definition(
    definition: Mapping[str, Any],
    parameters: Mapping[str, Any] | None = None,
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    region: str = "us-east-1",
) -> list[StepProblem]:
    """Everything AWS would refuse in the steps' requests (empty when each would be accepted)."""
    problems = []
    for item in _resolved_requests(definition, parameters, pipeline_name, region):
        if isinstance(item, StepProblem):
            problems.append(item)
            continue
        problems += [
            StepProblem(item.step, item.operation, message)
            for message in request_problems("sagemaker", item.operation, item.request)
        ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.step_requests",
        description="Resolve each step of a pipeline definition into the request SageMaker makes and "
        "check it against the API model; prints what AWS would refuse (exit 1), nothing else (exit 0).",
    )
    parser.add_argument("definition", type=Path, help="the definition JSON (robocar pipeline definition)")
    parser.add_argument("parameters", nargs="*", metavar="NAME=VALUE", help="parameter values")
    parser.add_argument("--show", action="store_true", help="print the resolved requests too")
    args = parser.parse_args(argv)
    definition = json.loads(args.definition.read_text())
    parameters = dict(item.split("=", 1) for item in args.parameters)
    if args.show:
        for item in step_requests(definition, parameters):
            print(json.dumps({"step": item.step, item.operation: item.request}, indent=2, default=str))
    problems = check_definition(definition, parameters)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} step request(s) AWS would refuse", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
