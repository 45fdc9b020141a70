"""The pilot's definition as the definition tests build it, built once per session: each build runs the
SageMaker SDK's pipeline construction, seconds of CPU that five test files paid for the same JSON."""

from __future__ import annotations

import pytest

from pipelines.settings import EXAMPLE_VALUES, Settings

PILOT_SETTINGS = Settings(**EXAMPLE_VALUES, prefix="robocar", pipeline_name="robocar-pipeline",
                          model_package_group="robocar-pilots", endpoint_url=None)  # fmt: skip


@pytest.fixture(scope="session")
def pilot_definition_text() -> str:
    """``build_definition(PILOT_SETTINGS)``: the default edge targets, no code bundle (a str: tests parse
    their own copy)."""
    from pipelines.control import build_definition

    return build_definition(PILOT_SETTINGS)
