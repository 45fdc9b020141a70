"""The local pattern matcher decides like EventBridge: moto's matcher is the oracle on generated cases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.events.models import EventPattern

from pipelines.event_pattern import EventPatternError, matches

# Each field has one type domain, so generated cases stay inside the semantics EventBridge documents
# (moto, written in Python, lets True equal 1; that corner is tested by hand below, not by the oracle).
# Small pools make values in patterns and events collide often, so many cases match (not only misses).
TEXT = st.one_of(st.sampled_from(["", "a", "ab", "A", "aB", "a/b", "a*b"]), st.text("abAB/*.\\", max_size=5))
NUMBER = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.5, 2.0]), st.floats(-5, 5, allow_nan=False))
FLAG = st.sampled_from([True, False, None])
FIELDS = {"s": TEXT, "n": NUMBER, "f": FLAG}


def _scalar_or_array(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.lists(values, max_size=3))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    def level() -> dict[str, Any]:
        some = st.lists(st.sampled_from(sorted(FIELDS)), unique=True)
        present = draw(st.one_of(st.just(sorted(FIELDS)), some))  # often all: more cases match
        return {name: draw(_scalar_or_array(FIELDS[name])) for name in present}

    event = level()
    if draw(st.integers(0, 3)):
        event["detail"] = level()
    return event


def _string_filter() -> st.SearchStrategy[Any]:
    ignore_case = st.builds(lambda text: {"equals-ignore-case": text}, TEXT)
    return st.one_of(
        st.builds(lambda text: {"prefix": text}, st.one_of(TEXT, ignore_case)),
        st.builds(lambda text: {"suffix": text}, st.one_of(TEXT, ignore_case)),
        st.builds(lambda text: {"equals-ignore-case": text}, TEXT),
        st.builds(lambda text: {"wildcard": text}, TEXT),
    )


def _filters_for(field: str) -> st.SearchStrategy[Any]:
    exists = st.builds(lambda flag: {"exists": flag}, st.booleans())
    if field == "s":
        own = st.one_of(
            TEXT,
            _string_filter(),
            st.builds(lambda values: {"anything-but": values}, st.one_of(TEXT, st.lists(TEXT, min_size=1))),
            st.builds(lambda inner: {"anything-but": inner}, _string_filter()),
            st.builds(lambda number: {"numeric": [">", number]}, st.integers(-5, 5)),  # type mismatch
        )
    elif field == "n":
        operators = st.sampled_from(["<", "<=", "=", ">=", ">"])
        own = st.one_of(
            NUMBER,
            st.builds(lambda op, bound: {"numeric": [op, bound]}, operators, NUMBER),
            st.builds(lambda a, b: {"numeric": [">=", min(a, b), "<", max(a, b)]}, NUMBER, NUMBER),
            st.builds(lambda values: {"anything-but": values}, st.lists(NUMBER, min_size=1)),
            TEXT,  # type mismatch: a string never equals a number
        )
    else:
        own = FLAG
    return st.lists(st.one_of(own, exists), min_size=1, max_size=3)


@st.composite
def patterns(draw: st.DrawFn) -> dict[str, Any]:
    def level() -> dict[str, Any]:
        fields = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=2, unique=True))
        return {name: draw(_filters_for(name)) for name in fields}

    pattern = level()
    if draw(st.booleans()):
        pattern["detail"] = level()
    if draw(st.booleans()):
        pattern["$or"] = [level(), level()]
    return pattern


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=patterns(), event=events())
def test_matches_like_eventbridge_on_generated_cases(pattern: dict[str, Any], event: dict[str, Any]) -> None:
    oracle = EventPattern.load(json.dumps(pattern)).matches_event(event)
    assert matches(pattern, event) == oracle


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"a": ["x"]}, {"a": "x"}, True),
        ({"a": ["x"]}, {"a": ["y", "x"]}, True),  # arrays: any element
        ({"a": ["x"]}, {}, False),
        ({"a": [{"exists": False}]}, {}, True),
        ({"a": [{"exists": True}]}, {"a": None}, True),  # null is a value
        ({"a": [None]}, {"a": None}, True),
        ({"a": [1]}, {"a": 1.0}, True),
        ({"a": [1]}, {"a": True}, False),  # a boolean is not a number (moto says True here)
        ({"a": [{"numeric": [">", 0]}]}, {"a": True}, False),
        ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
        ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": "3"}, False),
        ({"a": [{"anything-but": ["x", "y"]}]}, {"a": "z"}, True),
        ({"a": [{"anything-but": ["x", "y"]}]}, {}, False),
        ({"a": [{"anything-but": {"prefix": "tmp/"}}]}, {"a": "raw/t"}, True),
        ({"a": [{"prefix": {"equals-ignore-case": "RAW/"}}]}, {"a": "raw/t"}, True),
        ({"a": [{"wildcard": "raw/*/manifest.json"}]}, {"a": "raw/car/tub_1/manifest.json"}, True),
        ({"a": [{"wildcard": "raw/*/manifest.json"}]}, {"a": "raw/manifest.json"}, False),
        ({"a": [{"wildcard": "a\\*b"}]}, {"a": "a*b"}, True),
        ({"a": [{"wildcard": "a\\*b"}]}, {"a": "axb"}, False),
        ({"d": {"b": {"name": ["x"]}}}, {"d": {"b": {"name": "x"}}}, True),
        ({"d": {"b": ["x"]}}, {"d": "scalar"}, False),
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
        ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"c": "y"}, False),
    ],
)
def test_documented_semantics(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, event) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"a": []}, "empty arrays"),
        ({"a": "x"}, "must be an object or an array"),
        ({"a": [{"cidr": "10.0.0.0/8"}]}, "unsupported filter 'cidr'"),
        ({"a": [{"numeric": [">"]}]}, "numeric takes"),
        ({"a": [{"numeric": ["~", 1]}]}, "bad numeric comparison"),
        ({"a": [{"prefix": 3}]}, "prefix takes a string"),
        ({"$or": [{"a": ["x"]}]}, "at least two"),
    ],
)
def test_invalid_patterns_are_named(pattern: dict[str, Any], message: str) -> None:
    with pytest.raises(EventPatternError, match=message):
        matches(pattern, {"a": "x"})
