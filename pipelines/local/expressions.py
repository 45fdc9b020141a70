"""The pipeline definition's expression language: ``Get``, ``Std:Join``, ``Std:JsonGet`` and conditions.

A definition refers to values that exist only during an execution (parameters, execution variables, the
properties of steps that ran, the JSON property files they wrote). ``resolve`` replaces every such
reference with its value; ``evaluate_condition`` decides a Condition step. Pure functions over a
``Scope``; the executor fills the scope as steps finish.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

CONDITION_TYPES = (
    "Equals",
    "GreaterThan",
    "GreaterThanOrEqualTo",
    "LessThan",
    "LessThanOrEqualTo",
    "In",
    "Not",
    "Or",
)
# What ``Get: Execution.<name>`` may name: the variables of the SDK's ``ExecutionVariables``
# (sagemaker.core.workflow.execution_variables, SDK v3.27 defines these eight).
EXECUTION_VARIABLES = (
    "PipelineExecutionId",
    "PipelineExecutionArn",
    "PipelineName",
    "PipelineArn",
    "StartDateTime",
    "CurrentDateTime",
    "ProcessingJobName",
    "TrainingJobName",
)
# A job-name variable is the name of the job its own step starts, so only a step of that type has one.
JOB_NAME_VARIABLES = {"Processing": "ProcessingJobName", "Training": "TrainingJobName"}
_PATH_TOKEN = re.compile(r"""\.?([A-Za-z0-9_:\-]+)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")
# SageMaker lists addressed by a string index are looked up by their name field, e.g.
# ``Outputs['train']`` is the output whose OutputName is "train".
_LIST_KEYS = ("OutputName", "InputName", "ChannelName", "MetricName", "Name", "PropertyFileName")


class ExpressionError(ValueError):
    """A reference that cannot be resolved, or a condition that cannot be evaluated; names the culprit."""


@dataclass
class Scope:
    """Everything an expression may refer to during one execution."""

    parameters: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)  # Execution.<name> variables
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step name -> its properties
    property_files: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> file name -> JSON
    read_s3_json: Callable[[str], Any] | None = None  # for Std:JsonGet with an S3Uri


def step_scope(scope: Scope, step_type: str, job_name: str) -> Scope:
    """``scope`` as one step's arguments see it: ``Execution.ProcessingJobName`` (a Processing step) or
    ``Execution.TrainingJobName`` (a Training step) is the name of the job that step starts."""
    variable = JOB_NAME_VARIABLES.get(step_type)
    if variable is None:
        return scope
    return replace(scope, execution={**scope.execution, variable: job_name})


def parse_path(path: str) -> list[str | int]:
    """``Outputs['train'].S3Output.S3Uri`` -> ``["Outputs", "train", "S3Output", "S3Uri"]``."""
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if not match or match.end() == position:
            raise ExpressionError(f"cannot parse property path {path!r} at {path[position:]!r}")
        name, index, single, double = match.groups()
        tokens.append(
            int(index) if index is not None else name if name is not None else single or double or ""
        )
        position = match.end()
    return tokens


def walk(value: Any, tokens: list[str | int], where: str) -> Any:
    """Follow ``tokens`` into nested dicts and lists; lists take an int or a name (see _LIST_KEYS)."""
    for token in tokens:
        if (
            isinstance(value, dict)
            and isinstance(token, str)
            and token in value
            or isinstance(value, list)
            and isinstance(token, int)
            and -len(value) <= token < len(value)
        ):
            value = value[token]
        elif isinstance(value, list) and isinstance(token, str):
            found = [
                item
                for item in value
                if isinstance(item, dict) and token in (item.get(k) for k in _LIST_KEYS)
            ]
            if not found:
                raise ExpressionError(f"{where}: no item named {token!r}")
            value = found[0]
        else:
            raise ExpressionError(f"{where}: no {token!r} here")
    return value


def _get(reference: str, scope: Scope) -> Any:
    kind, _, rest = reference.partition(".")
    if kind == "Parameters":
        if rest not in scope.parameters:
            raise ExpressionError(f"unknown parameter {rest!r} in {{'Get': {reference!r}}}")
        return scope.parameters[rest]
    if kind == "Execution":
        if rest not in scope.execution:
            raise ExpressionError(f"unknown execution variable {rest!r} in {{'Get': {reference!r}}}")
        return scope.execution[rest]
    if kind == "Steps":
        step, _, path = rest.partition(".")
        if step not in scope.steps:
            raise ExpressionError(f"step {step!r} has not run, so {{'Get': {reference!r}}} has no value")
        return walk(scope.steps[step], parse_path(path), f"{{'Get': {reference!r}}}")
    raise ExpressionError(
        f"cannot resolve {{'Get': {reference!r}}}: expected Parameters., Execution. or Steps."
    )


def _property_file(reference: Any, scope: Scope) -> Any:
    match = re.fullmatch(
        r"Steps\.([^.]+)\.PropertyFiles\.(.+)",
        reference.get("Get", "") if isinstance(reference, dict) else "",
    )
    if not match:
        raise ExpressionError(f"Std:JsonGet: unsupported PropertyFile reference {reference!r}")
    step, name = match.groups()
    files = scope.property_files.get(step, {})
    if name not in files:
        raise ExpressionError(f"Std:JsonGet: step {step!r} has no property file {name!r} (has it run?)")
    return files[name]


def json_get(document: Any, path: str, where: str) -> Any:
    """SageMaker's JsonPath subset: ``a.b[0].c`` (a leading ``$.`` is allowed)."""
    path = path[2:] if path.startswith("$.") else path
    return walk(document, parse_path(path), where)


def to_string(value: Any) -> str:
    """How values are spelled when joined or passed as strings (JSON spelling for booleans and None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def resolve(value: Any, scope: Scope) -> Any:
    """``value`` with every expression replaced by its current value (recursively)."""
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Get"}:
        return _get(value["Get"], scope)
    if set(value) == {"Std:Join"}:
        join = value["Std:Join"]
        return str(join.get("On", "")).join(to_string(resolve(v, scope)) for v in join.get("Values", []))
    if set(value) == {"Std:JsonGet"}:
        spec = value["Std:JsonGet"]
        path = resolve(spec.get("Path", ""), scope)
        if "PropertyFile" in spec:
            document = _property_file(spec["PropertyFile"], scope)
        elif "S3Uri" in spec:
            uri = resolve(spec["S3Uri"], scope)
            if scope.read_s3_json is None:
                raise ExpressionError(f"Std:JsonGet: cannot read {uri} here")
            document = scope.read_s3_json(uri)
        else:
            raise ExpressionError(f"Std:JsonGet needs a PropertyFile or an S3Uri: {spec!r}")
        return json_get(document, path, f"Std:JsonGet {path!r}")
    return {key: resolve(item, scope) for key, item in value.items()}


def references(value: Any) -> Iterator[str]:
    """Every ``Get`` reference in ``value`` (including those inside JsonGet's PropertyFile)."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        if set(value) == {"Get"} and isinstance(value["Get"], str):
            yield value["Get"]
            return
        for item in value.values():
            yield from references(item)


def referenced_steps(value: Any) -> set[str]:
    return {
        ref.split(".")[1] for ref in references(value) if ref.startswith("Steps.") and ref.count(".") >= 1
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(kind: str, left: Any, right: Any) -> bool:
    if kind == "Equals":
        if isinstance(left, bool) or isinstance(right, bool):
            return to_string(left).lower() == to_string(right).lower()
        a, b = _number(left), _number(right)
        if a is not None and b is not None and not (isinstance(left, str) and isinstance(right, str)):
            return a == b
        return left == right
    if isinstance(left, str) and isinstance(right, str):
        a, b = left, right
    else:
        a, b = _number(left), _number(right)  # type: ignore[assignment]
        if a is None or b is None:
            raise ExpressionError(f"{kind}: cannot compare {left!r} with {right!r}")
    return {
        "GreaterThan": a > b,
        "GreaterThanOrEqualTo": a >= b,
        "LessThan": a < b,
        "LessThanOrEqualTo": a <= b,
    }[kind]


def evaluate_condition(condition: dict[str, Any], scope: Scope) -> bool:
    kind = condition.get("Type")
    if kind == "Not":
        return not evaluate_condition(condition["Condition"], scope)
    if kind == "Or":
        return any(evaluate_condition(c, scope) for c in condition["Conditions"])
    if kind == "In":
        query = resolve(condition["QueryValue"], scope)
        return any(_compare("Equals", query, resolve(v, scope)) for v in condition["Values"])
    if kind in CONDITION_TYPES:
        return _compare(kind, resolve(condition["LeftValue"], scope), resolve(condition["RightValue"], scope))
    raise ExpressionError(f"unsupported condition type {kind!r} (supported: {', '.join(CONDITION_TYPES)})")


def evaluate_conditions(conditions: list[dict[str, Any]], scope: Scope) -> bool:
    """A Condition step's outcome: all of its conditions hold (SageMaker ANDs the list)."""
    return all(evaluate_condition(c, scope) for c in conditions)


def condition_types(condition: dict[str, Any]) -> Iterator[str]:
    yield condition.get("Type", "?")
    if condition.get("Type") == "Not":
        yield from condition_types(condition["Condition"])
    for inner in condition.get("Conditions", []) if condition.get("Type") == "Or" else []:
        yield from condition_types(inner)
