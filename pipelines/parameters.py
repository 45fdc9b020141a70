"""Pipeline parameters: a value checked against its declared type, and the one error for a bad one.

SageMaker types a pipeline parameter as String, Integer, Float or Boolean and takes every value as a
string in StartPipelineExecution's PipelineParameters
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_Parameter.html); ``robocar pipeline
start`` and local mode check the value before anything starts.
"""

from __future__ import annotations

import math
from typing import Any


class ParameterError(ValueError):
    """A parameter the definition does not declare, or whose value does not fit its type or enum."""


def _typed(kind: str, value: Any) -> Any:
    """``value`` as ``kind``; ValueError/TypeError when it is not one (booleans are not numbers)."""
    if kind == "Integer":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value.strip()) if isinstance(value, str) else int(value)
    if kind == "Float":
        if isinstance(value, bool):
            raise ValueError
        result = float(value)
        if not math.isfinite(result):
            raise ValueError
        return result
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError
    if not isinstance(value, str):
        raise TypeError
    return value


def parameter_value(declared: dict[str, Any], value: Any) -> Any:
    """``value`` (a string, or already typed) as the declared parameter's type; ParameterError if it is
    not one, or not one of the parameter's ``EnumValues``."""
    name, kind = declared["Name"], declared.get("Type", "String")
    try:
        typed = _typed(kind, value)
    except (TypeError, ValueError):
        article = "a string" if kind == "String" else f"a valid {kind.lower()}"
        raise ParameterError(f"parameter {name} is {kind}; {value!r} is not {article}") from None
    enum = declared.get("EnumValues")
    if enum and typed not in enum:
        raise ParameterError(f"parameter {name} must be one of {', '.join(enum)}; got {value!r}")
    return typed


def api_string(value: Any) -> str:
    """A typed value as PipelineParameters carries it: ``5``, ``0.25``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
