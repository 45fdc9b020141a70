"""Parse and validate one record (a catalog line, a v1 record file, a Ground Truth manifest line).

Every problem becomes a ``Rejection`` with a reason ``"<code>: <detail>"``; the codes are the fixed
vocabulary of ``data_report.json`` (``REASONS``). Validation is a JSON Schema (``processing/*.schema.json``)
checked with ``jsonschema``. Because ``jsonschema`` costs ~40 us a record (a third of a JPEG decode), a
record is first checked by a predicate compiled from the same schema; ``jsonschema`` runs when that
predicate fails, and it decides (and words the reason). The compiled predicate only understands the
keywords the schemas use and refuses any other, so the schema files cannot silently outgrow it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent
REASONS = {
    "malformed record": "a catalog line or record file that is not a JSON object (truncated, garbage, empty)",
    "non-finite value": "NaN or +-Infinity (Python's json accepts them; the data must not)",
    "out of range": "a number outside its schema range (user/angle, user/throttle in [-1, 1])",
    "schema": "a required field missing or of the wrong type",
    "duplicate index": "a second record with an index already read from this tub",
    "record missing": "an index below manifest.json's current_index that no catalog line holds",
    "image missing": "the record's image file does not exist",
    "image unreadable": "the image file cannot be read or decoded",
    "image wrong size": "the decoded image is not the camera size of the frame spec, or not the size a "
    "bounding-box manifest's image_size declares",
    "label conflict": "a class id whose class-name differs from the one seen first",
    "duplicate photo": "a photo whose bytes an accepted record already holds (the classifier's Preprocess)",
    "box outside image": "a bounding box reaching more than 1 pixel beyond its image's declared size",
    "empty box": "a bounding box of zero or negative width or height",
    "unknown class": "a bounding box whose class id the record's class-map does not name",
}


class Rejection(ValueError):
    """One record that cannot become a training frame; ``reason`` is ``"<code>: <detail>"``."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in REASONS:
            raise KeyError(f"unknown rejection code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"


def _refuse_constant(name: str) -> float:
    raise Rejection("non-finite value", f"{name} in the JSON text")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    """Strict JSON object parsing: no NaN/Infinity, no trailing garbage, an object at the top."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejection("malformed record", f"not UTF-8 ({exc.reason})") from None
    if not text.strip():
        raise Rejection("malformed record", "empty")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise Rejection("malformed record", f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise Rejection("malformed record", "nested too deeply") from None
    except Rejection:  # NaN/Infinity, refused by _refuse_constant
        raise
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int/str conversion cap)
        raise Rejection("malformed record", str(exc)) from None
    if not isinstance(value, dict):
        raise Rejection("malformed record", f"a JSON {type(value).__name__}, not an object")
    return value


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``processing/<name>.schema.json``, checked against its metaschema."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


_IGNORED_KEYWORDS = {"$schema", "$id", "title", "description"}
_PROPERTY_KEYWORDS = {"type", "minimum", "maximum", "pattern", "minLength", "maxLength"}
# JSON types as the Python types ``json`` produces; jsonschema's semantics: bool is neither an integer
# nor a number, and a float with no fraction (1.0) is an integer.
_PYTHON_TYPES = {"integer": (int, float), "number": (int, float), "string": (str,), "boolean": (bool,)}
_MISSING = object()


def _compile_property(name: str, spec: dict[str, Any]) -> tuple[Any, ...]:
    unknown = set(spec) - _PROPERTY_KEYWORDS - _IGNORED_KEYWORDS
    if unknown or spec.get("type") not in _PYTHON_TYPES:
        raise ValueError(
            f"the fast record check does not support {sorted(unknown) or spec.get('type')} ({name!r})"
        )
    pattern = re.compile(spec["pattern"]).search if "pattern" in spec else None
    return (
        name,
        _PYTHON_TYPES[spec["type"]],
        spec["type"] == "integer",
        spec.get("minimum", -math.inf),
        spec.get("maximum", math.inf),
        spec.get("minLength", 0),
        spec.get("maxLength", math.inf),
        pattern,
    )


def compile_schema(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """A fast predicate equivalent to ``jsonschema`` for the keywords our record schemas use.

    One flat loop over precomputed tuples, no call per property: this runs for every record.
    """
    unknown = set(schema) - {"type", "required", "properties"} - _IGNORED_KEYWORDS
    if unknown or schema.get("type") != "object":
        raise ValueError(f"the fast record check supports object schemas only, not {sorted(unknown)}")
    required = tuple(schema.get("required", ()))
    properties = tuple(_compile_property(name, spec) for name, spec in schema["properties"].items())

    def is_valid(record: dict[str, Any]) -> bool:
        for name in required:
            if name not in record:
                return False
        for name, types, integral, low, high, min_length, max_length, pattern in properties:
            value = record.get(name, _MISSING)
            if value is _MISSING:
                continue
            kind = type(value)
            if kind not in types:
                return False
            if kind is str:
                if not min_length <= len(value) <= max_length or (pattern is not None and not pattern(value)):
                    return False
            elif not low <= value <= high or (integral and kind is float and not value.is_integer()):
                return False
        return True

    return is_valid


class RecordValidator:
    """Validates parsed records against one schema; ``check`` raises ``Rejection`` with the reason."""

    def __init__(self, schema_name: str) -> None:
        self.schema = load_schema(schema_name)
        self._fast = compile_schema(self.schema)
        self._validator = jsonschema.Draft202012Validator(self.schema)
        self._numbers = tuple(
            name for name, spec in self.schema["properties"].items() if spec.get("type") == "number"
        )

    def check(self, record: dict[str, Any]) -> None:
        for name in self._numbers:  # 1e999 parses to inf: non-finite, not merely out of range
            value = record.get(name)
            if type(value) is float and not math.isfinite(value):
                raise Rejection("non-finite value", f"{name} is {value}")
        if self._fast(record):
            return
        errors = sorted(self._validator.iter_errors(record), key=lambda e: (list(e.path), e.validator))
        if not errors:
            return  # jsonschema is the authority; the fast predicate is only allowed to be stricter
        error = errors[0]
        field = "/".join(str(p) for p in error.path) or "record"
        if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            raise Rejection("out of range", f"{field}={error.instance!r} ({error.message})")
        raise Rejection("schema", f"{field}: {error.message}")

    def is_valid(self, record: dict[str, Any]) -> bool:
        try:
            self.check(record)
        except Rejection:
            return False
        return True
