"""Check a pipeline definition against AWS's published JSON schema, outside the schema's known gaps.

The published schema (``schemas/pipeline-definition.schema.json``, a copy of AWS's) lags the service:
it rejects fields SageMaker accepts and the SDK emits. Each gap is listed once, below, with its reason;
the definition is normalised past exactly those gaps and everything else must validate.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.definition_steps import all_steps

SCHEMA_PATH = Path(__file__).parent / "schemas" / "pipeline-definition.schema.json"
STEP_DEFINITIONS = {
    "Processing": "ProcessingStep",
    "Training": "TrainingStep",
    "Condition": "ConditionStep",
    "RegisterModel": "RegisterModelStep",
    "Fail": "FailStep",
    "Transform": "TransformStep",
    "Model": "CreateModelStep",
    "Lambda": "LambdaStep",
    "Callback": "CallbackStep",
    "Tuning": "TuningStep",
    "EMR": "EMRStep",
}
EXPRESSION_FUNCTIONS = ("Std:JsonGet", "Std:Join")


@dataclass(frozen=True)
class Gap:
    name: str
    reason: str
    normalise: Callable[[dict[str, Any]], None]


def _drop(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        obj.pop(key, None)


def _steps_of_type(definition: dict[str, Any], step_type: str) -> Iterator[dict[str, Any]]:
    return (s for s in all_steps(definition.get("Steps", [])) if s.get("Type") == step_type)


def _replace_functions(node: Any) -> Any:
    """``{"Std:JsonGet": ...}`` -> ``{"Get": "Std:JsonGet"}`` (and Std:Join): the schema knows only Get."""
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in EXPRESSION_FUNCTIONS:
            return {"Get": next(iter(node))}
        return {k: _replace_functions(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_functions(v) for v in node]
    return node


def _normalise_functions(definition: dict[str, Any]) -> None:
    definition["Steps"] = _replace_functions(definition.get("Steps", []))


def _register_containers(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for step in _steps_of_type(definition, "RegisterModel"):
        yield from step["Arguments"].get("InferenceSpecification", {}).get("Containers", [])


KNOWN_GAPS: tuple[Gap, ...] = (
    Gap(
        "PipelineExperimentConfig and MlflowConfig",
        "top-level fields the service accepts; the SDK writes PipelineExperimentConfig, and v3 adds "
        '"MlflowConfig": null',
        lambda d: _drop(d, "PipelineExperimentConfig", "MlflowConfig"),
    ),
    Gap(
        "Parameter EnumValues",
        "the service accepts EnumValues on a parameter (the SDK's enum_values); the schema has no such field",
        lambda d: [_drop(p, "EnumValues") for p in d.get("Parameters", [])],
    ),
    Gap(
        "PropertyFiles",
        "Processing steps declare property files for Std:JsonGet; the schema has no PropertyFiles",
        lambda d: [_drop(s, "PropertyFiles") for s in _steps_of_type(d, "Processing")],
    ),
    Gap(
        "Std:JsonGet and Std:Join",
        "the schema knows only the Get function (its Std:Join definition admits no value), so each call is "
        "checked as a Get of the same place",
        _normalise_functions,
    ),
    Gap(
        "Training Environment",
        "CreateTrainingJob accepts Environment; the schema's TrainingStep arguments lack it",
        lambda d: [_drop(s["Arguments"], "Environment") for s in _steps_of_type(d, "Training")],
    ),
    Gap(
        "RegisterModel ModelApprovalStatus, SkipModelValidation and CustomerMetadataProperties",
        "CreateModelPackage fields the SDK emits (the metadata carries the edge artifacts, "
        "docs/registry.md); the schema's RegisterModel arguments lack them",
        lambda d: [
            _drop(s["Arguments"], "ModelApprovalStatus", "SkipModelValidation", "CustomerMetadataProperties")
            for s in _steps_of_type(d, "RegisterModel")
        ],
    ),
    Gap(
        "Container Environment",
        "model package containers accept Environment; the schema's ContainerDefinition lacks it",
        lambda d: [_drop(c, "Environment") for c in _register_containers(d)],
    ),
)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def normalise(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy of the definition with every known gap normalised away (and nothing else changed)."""
    result = copy.deepcopy(definition)
    for gap in KNOWN_GAPS:
        gap.normalise(result)
    return result


def schema_errors(definition: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Errors outside the known gaps: the whole document, then each step (nested ones too) on its own."""
    import jsonschema

    schema = schema or load_schema()
    normalised = normalise(definition)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(normalised)
    ]
    for step in all_steps(normalised.get("Steps", [])):
        ref = STEP_DEFINITIONS.get(step.get("Type", ""))
        if ref is None:
            errors.append(f"step {step.get('Name')}: type {step.get('Type')!r} has no schema definition")
            continue
        validator = jsonschema.Draft7Validator(
            {"$ref": f"#/definitions/{ref}", "definitions": schema["definitions"]}
        )
        errors.extend(
            f"step {step['Name']}: {'/'.join(map(str, e.absolute_path)) or '<step>'}: {e.message}"
            for e in validator.iter_errors(step)
        )
    return errors
