"""Property tests of the record parser and validator (hypothesis)."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.records import (
    REASONS,
    RecordValidator,
    Rejection,
    compile_schema,
    load_schema,
    parse_json_object,
)

V2 = RecordValidator("tub_v2_record")
V2_SCHEMA = load_schema("tub_v2_record")
JSONSCHEMA = jsonschema.Draft202012Validator(V2_SCHEMA)
FAST = compile_schema(V2_SCHEMA)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1.5, max_value=1.5),
    st.integers(min_value=-3, max_value=3),
)
values = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=8), st.just([]), st.just({}))
field_values = {
    "_index": st.one_of(st.integers(min_value=-2, max_value=10**6), values),
    "_session_id": st.one_of(st.text(max_size=12), values),
    "_timestamp_ms": st.one_of(st.integers(), values),
    "cam/image_array": st.one_of(
        st.sampled_from(["1_cam_image_array_.jpg", "../x.jpg", "a/b.jpg", ""]), values
    ),
    "user/angle": st.one_of(numbers, values),
    "user/throttle": st.one_of(numbers, values),
    "user/mode": st.one_of(st.sampled_from(["user", "local"]), values),
}
records = st.fixed_dictionaries({}, optional=field_values)


def expected_valid(record: dict) -> bool:
    finite = all(
        not (type(record.get(k)) is float and not math.isfinite(record[k]))
        for k in ("user/angle", "user/throttle")
    )
    return finite and JSONSCHEMA.is_valid(record)


@settings(max_examples=400, deadline=None)
@given(records)
def test_validator_agrees_with_jsonschema_plus_finiteness(record):
    assert V2.is_valid(record) == expected_valid(record)
    if FAST(record):  # the fast predicate never accepts what jsonschema rejects
        assert JSONSCHEMA.is_valid(record)


@settings(max_examples=300, deadline=None)
@given(records)
def test_every_rejection_has_a_known_code(record):
    try:
        V2.check(record)
    except Rejection as rejection:
        assert rejection.code in REASONS and rejection.reason.startswith(rejection.code + ": ")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_parser_raises_only_rejections(text):
    try:
        value = parse_json_object(text)
    except Rejection as rejection:
        assert rejection.code in ("malformed record", "non-finite value")
    else:
        assert isinstance(value, dict)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-1, max_value=1),
    st.floats(min_value=-1, max_value=1),
    st.integers(min_value=0, max_value=10**9),
)
def test_valid_records_round_trip_through_donkeycar_serialisation(angle, throttle, index):
    record = {
        "_index": index,
        "_session_id": "26-11-21_0",
        "_timestamp_ms": 1795245850601,
        "cam/image_array": f"{index}_cam_image_array_.jpg",
        "user/angle": angle,
        "user/mode": "user",
        "user/throttle": throttle,
    }
    line = json.dumps(record, allow_nan=False, sort_keys=True)  # what donkeycar writes
    assert parse_json_object(line) == record
    V2.check(record)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_tokens_are_refused_even_though_python_json_accepts_them(token):
    line = '{"_index": 0, "cam/image_array": "0.jpg", "user/angle": ' + token + ', "user/throttle": 0}'
    assert math.isnan(json.loads(line)["user/angle"]) or math.isinf(json.loads(line)["user/angle"])
    with pytest.raises(Rejection, match="non-finite value"):
        parse_json_object(line)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_angle_is_accepted_exactly_when_in_range(angle):
    record = {"_index": 0, "cam/image_array": "0.jpg", "user/angle": angle, "user/throttle": 0.0}
    assert V2.is_valid(record) == (-1.0 <= angle <= 1.0)


def test_compiled_check_refuses_keywords_it_does_not_know():
    with pytest.raises(ValueError, match="does not support"):
        compile_schema({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}})
