"""The definition validates against AWS's published schema outside the named gaps, and only there."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipelines.control import build_definition
from pipelines.schema_check import KNOWN_GAPS, SCHEMA_PATH, normalise, schema_errors
from pipelines.settings import EXAMPLE_VALUES, Settings

SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "pipeline-definition.schema.json"


@pytest.fixture(scope="module")
def definition() -> dict:
    settings = Settings(
        **EXAMPLE_VALUES, prefix="robocar", pipeline_name="p", model_package_group="g", endpoint_url=None
    )
    return json.loads(build_definition(settings))


def test_definition_passes_outside_known_gaps(definition: dict) -> None:
    assert schema_errors(definition) == []


def test_without_normalising_the_gaps_the_schema_rejects_it(definition: dict) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(definition)), "every gap is real"


@pytest.mark.parametrize("gap", KNOWN_GAPS, ids=lambda g: g.name)
def test_each_gap_has_a_reason_and_changes_something(gap, definition: dict) -> None:
    assert len(gap.reason) > 20
    before = copy.deepcopy(definition)
    gap.normalise(before)
    assert before != definition, f"gap {gap.name!r} matches nothing in the definition: drop it"


def test_a_real_error_outside_the_gaps_is_reported(definition: dict) -> None:
    broken = copy.deepcopy(definition)
    broken["Steps"][0]["Arguments"]["AppSpecification"]["ImageUrl"] = "typo"  # misspelled field
    broken["Steps"][1]["Arguments"]["StoppingCondition"] = "forever"  # wrong type
    errors = schema_errors(broken)
    assert any("Preprocess" in e and "ImageUrl" in e for e in errors)
    assert any("Train" in e and "StoppingCondition" in e for e in errors)


def test_normalise_leaves_the_input_alone(definition: dict) -> None:
    snapshot = copy.deepcopy(definition)
    normalise(definition)
    assert definition == snapshot


# CI-only: CI checks the vendored schema against its upstream copy, which a developer's checkout lacks.
@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="CI-only: no upstream copy of the schema here")
def test_vendored_schema_is_the_shared_one() -> None:
    assert SCHEMA_PATH.read_bytes() == SHARED_SCHEMA.read_bytes()
