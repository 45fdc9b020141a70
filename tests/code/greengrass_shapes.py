"""What a greengrassv2 request or response breaks in botocore's service model, beyond what Stubber checks.

botocore's parameter validation (which ``Stubber`` runs on requests) checks required members, types and
minimum lengths; the service also enforces each shape's ``pattern``, ``max`` and ``enum``. This walks a
request (or a response) against the model and reports every violation, so tests can assert that what the
rollout sends and what the local stand-in answers would pass AWS too.

Smithy patterns are not anchored: a value matches when the pattern matches anywhere in it
(https://smithy.io/2.0/spec/constraint-traits.html#pattern-trait). The ``regex`` module, when installed,
reads the Java-flavoured patterns of the models closer to the service; ``re`` reads every pattern here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

import botocore.session

try:
    import regex as pattern_engine
except ImportError:  # regex comes with cfn-lint (dev extra); re reads these patterns too
    import re as pattern_engine

SERVICE = "greengrassv2"
RESPONSE_ONLY_KEYS = {"ResponseMetadata"}  # boto3 adds it to every response; not in the model


@cache
def _model() -> Any:
    return botocore.session.get_session().get_service_model(SERVICE)


def problems(operation: str, params: Mapping[str, Any], *, output: bool = False) -> list[str]:
    """Every way ``params`` (input, or ``output=True`` for a response) breaks ``operation``'s shape."""
    model = _model().operation_model(operation)
    shape = model.output_shape if output else model.input_shape
    found: list[str] = []
    document = {k: v for k, v in params.items() if not (output and k in RESPONSE_ONLY_KEYS)}
    _check(shape, document, operation, found)
    return found


def _check(shape: Any, value: Any, where: str, found: list[str]) -> None:
    checker = {
        "structure": _structure,
        "list": _list,
        "map": _map,
        "string": _string,
        "blob": _blob,
        "boolean": _boolean,
        "timestamp": _timestamp,
    }.get(shape.type_name, _number)
    checker(shape, value, where, found)


def _length(shape: Any, size: int, where: str, found: list[str]) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        found.append(f"{where}: length {size} < min {low} ({shape.name})")
    if high is not None and size > high:
        found.append(f"{where}: length {size} > max {high} ({shape.name})")


def _structure(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, Mapping):
        found.append(f"{where}: {type(value).__name__}, not a structure ({shape.name})")
        return
    for name in shape.required_members:
        if name not in value:
            found.append(f"{where}: required {name} missing ({shape.name})")
    for name, member in value.items():
        if name not in shape.members:
            found.append(f"{where}: unknown member {name} ({shape.name})")
        else:
            _check(shape.members[name], member, f"{where}.{name}", found)


def _list(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, list | tuple):
        found.append(f"{where}: {type(value).__name__}, not a list ({shape.name})")
        return
    _length(shape, len(value), where, found)
    for index, item in enumerate(value):
        _check(shape.member, item, f"{where}[{index}]", found)


def _map(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, Mapping):
        found.append(f"{where}: {type(value).__name__}, not a map ({shape.name})")
        return
    _length(shape, len(value), where, found)
    for key, item in value.items():
        _check(shape.key, key, f"{where}<key {key!r}>", found)
        _check(shape.value, item, f"{where}[{key!r}]", found)


def _string(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, str):
        found.append(f"{where}: {type(value).__name__}, not a string ({shape.name})")
        return
    _length(shape, len(value), where, found)
    pattern = shape.metadata.get("pattern")
    if pattern and not pattern_engine.search(pattern, value):
        found.append(f"{where}: {value!r} does not match {pattern!r} ({shape.name})")
    if shape.enum and value not in shape.enum:
        found.append(f"{where}: {value!r} not in {shape.enum} ({shape.name})")


def _blob(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, bytes | bytearray | str):
        found.append(f"{where}: {type(value).__name__}, not a blob ({shape.name})")
        return
    _length(shape, len(value), where, found)


def _boolean(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, bool):
        found.append(f"{where}: {type(value).__name__}, not a boolean ({shape.name})")


def _timestamp(shape: Any, value: Any, where: str, found: list[str]) -> None:
    if not isinstance(value, datetime | int | float) or isinstance(value, bool):
        found.append(f"{where}: {type(value).__name__}, not a timestamp ({shape.name})")


def _number(shape: Any, value: Any, where: str, found: list[str]) -> None:
    integral = shape.type_name in ("integer", "long")
    kinds = (int,) if integral else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        found.append(f"{where}: {type(value).__name__}, not {shape.type_name} ({shape.name})")
        return
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        found.append(f"{where}: {value} < min {low} ({shape.name})")
    if high is not None and value > high:
        found.append(f"{where}: {value} > max {high} ({shape.name})")
