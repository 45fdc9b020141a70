"""EventBridge event-pattern matching, so the local trigger decides exactly as the AWS rule would.

Pure and standard library only. Supported: exact values (strings, numbers, booleans, null), ``prefix``,
``suffix`` (both also with ``equals-ignore-case``), ``equals-ignore-case``, ``anything-but`` (a value, a
list, or a ``prefix``/``suffix``/``equals-ignore-case``/``wildcard`` filter), ``numeric``, ``exists``,
``wildcard``, ``$or`` and nested objects. Semantics follow the EventBridge user guide ("Event patterns"):

- every field of the pattern must match (AND); the filters listed for one field are alternatives (OR);
- an event field holding an array matches when any of its elements matches;
- only ``exists: false`` matches a field the event lacks;
- numbers compare as numbers (``1`` equals ``1.0``), never equal to a string or a boolean.

Not supported: ``cidr``, and patterns that reach into arrays of objects (the rules here need neither;
``PutRule`` accepts them, so a pattern using them is refused with a clear error or does not match).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

_MISSING = object()  # a field the event does not have (distinct from JSON null)
_NUMERIC_OPERATORS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}
_STRING_FILTERS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
_FILTERS = (*_STRING_FILTERS, "anything-but", "numeric", "exists")


class EventPatternError(ValueError):
    """A pattern EventBridge would reject; the message names the offending field."""


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True when ``event`` (a decoded EventBridge event) matches ``pattern``; raises on an invalid pattern."""
    return matcher(pattern)(event)


def matcher(pattern: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """``matches`` with the pattern validated once, for matching many events (a folder of objects)."""
    validate(pattern)
    return lambda event: _match_object(pattern, event)


def validate(pattern: Mapping[str, Any], path: str = "") -> None:
    """Raise :class:`EventPatternError` for what EventBridge's ``PutRule`` refuses."""
    if not isinstance(pattern, Mapping):
        raise EventPatternError(f"pattern{_at(path)} must be an object, got {type(pattern).__name__}")
    for key, spec in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(spec, list) or len(spec) < 2:
                raise EventPatternError(f"'$or'{_at(path)} needs a list of at least two patterns")
            for index, alternative in enumerate(spec):
                validate(alternative, f"{where}[{index}]")
        elif isinstance(spec, Mapping):
            validate(spec, where)
        elif isinstance(spec, list):
            if not spec:
                raise EventPatternError(f"'{where}': empty arrays are not allowed")
            for value_filter in spec:
                _validate_filter(value_filter, where)
        else:
            raise EventPatternError(f"'{where}' must be an object or an array, got {spec!r}")


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _validate_filter(value_filter: Any, where: str) -> None:
    if value_filter is None or isinstance(value_filter, (str, bool, int, float)):
        return
    if not isinstance(value_filter, Mapping) or len(value_filter) != 1:
        raise EventPatternError(
            f"'{where}': a filter is a value or an object with one key, got {value_filter!r}"
        )
    ((name, argument),) = value_filter.items()
    if name not in _FILTERS:
        raise EventPatternError(f"'{where}': unsupported filter {name!r} (supported: {', '.join(_FILTERS)})")
    if name == "exists" and not isinstance(argument, bool):
        raise EventPatternError(f"'{where}': exists takes true or false")
    if name == "numeric":
        _numeric_comparisons(argument, where)
    if name in ("prefix", "suffix") and isinstance(argument, Mapping):
        if set(argument) != {"equals-ignore-case"} or not isinstance(argument["equals-ignore-case"], str):
            raise EventPatternError(f"'{where}': {name} takes a string or {{'equals-ignore-case': string}}")
    elif name in _STRING_FILTERS and not _is_string_or_strings(argument):
        raise EventPatternError(f"'{where}': {name} takes a string")
    if name == "anything-but" and isinstance(argument, Mapping):
        _validate_filter(argument, where)
        if next(iter(argument)) not in _STRING_FILTERS:
            raise EventPatternError(f"'{where}': anything-but accepts values or {', '.join(_STRING_FILTERS)}")


def _is_string_or_strings(argument: Any) -> bool:
    return isinstance(argument, str) or (
        isinstance(argument, list) and bool(argument) and all(isinstance(item, str) for item in argument)
    )


def _numeric_comparisons(argument: Any, where: str) -> list[tuple[str, float]]:
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise EventPatternError(f"'{where}': numeric takes [op, number] or [op, number, op, number]")
    comparisons = list(zip(argument[::2], argument[1::2], strict=True))
    for operator, bound in comparisons:
        if operator not in _NUMERIC_OPERATORS or not _is_number(bound):
            raise EventPatternError(f"'{where}': bad numeric comparison {operator!r} {bound!r}")
    return comparisons


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _match_object(pattern: Mapping[str, Any], node: Any) -> bool:
    fields = node if isinstance(node, Mapping) else {}
    for key, spec in pattern.items():
        if key == "$or":
            if not any(_match_object(alternative, node) for alternative in spec):
                return False
        elif isinstance(spec, Mapping):
            if not _match_object(spec, fields.get(key, {})):
                return False
        elif not _match_filters(fields.get(key, _MISSING), spec):
            return False
    return True


def _match_filters(value: Any, filters: list[Any]) -> bool:
    return any(_match_filter(value, value_filter) for value_filter in filters)


def _match_filter(value: Any, value_filter: Any) -> bool:
    if isinstance(value_filter, Mapping) and "exists" in value_filter:
        return (value is not _MISSING) == value_filter["exists"]
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return any(_match_scalar(element, value_filter) for element in value)
    return _match_scalar(value, value_filter)


def _match_scalar(value: Any, value_filter: Any) -> bool:
    if not isinstance(value_filter, Mapping):
        return _json_equal(value, value_filter)
    ((name, argument),) = value_filter.items()
    if name == "anything-but":
        if isinstance(argument, Mapping):
            return isinstance(value, str) and not _match_scalar(value, argument)
        excluded = argument if isinstance(argument, list) else [argument]
        return not any(_json_equal(value, item) for item in excluded)
    if name == "numeric":
        return _is_number(value) and all(
            _NUMERIC_OPERATORS[operator](value, bound)
            for operator, bound in _numeric_comparisons(argument, "")
        )
    if not isinstance(value, str):
        return False
    return any(
        _match_string(name, value, item) for item in (argument if isinstance(argument, list) else [argument])
    )


def _match_string(name: str, value: str, argument: Any) -> bool:
    if isinstance(argument, Mapping):  # prefix/suffix with equals-ignore-case
        value, argument = value.lower(), argument["equals-ignore-case"].lower()
    if name == "prefix":
        return value.startswith(argument)
    if name == "suffix":
        return value.endswith(argument)
    if name == "equals-ignore-case":
        return value.lower() == argument.lower()
    return _wildcard_regex(argument).fullmatch(value) is not None


@functools.lru_cache(maxsize=256)
def _wildcard_regex(wildcard: str) -> re.Pattern[str]:
    r"""``*`` matches any run of characters (``/`` included); ``\*`` and ``\\`` are literal."""
    parts: list[str] = []
    index = 0
    while index < len(wildcard):
        char = wildcard[index]
        if char == "\\" and index + 1 < len(wildcard) and wildcard[index + 1] in "*\\":
            parts.append(re.escape(wildcard[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _json_equal(value: Any, expected: Any) -> bool:
    """JSON equality: booleans are not numbers, numbers compare by value, strings exactly."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    if _is_number(value) and _is_number(expected):
        return value == expected
    return type(value) is type(expected) and value == expected
