"""The local endpoint picks the handler by the model's own marker file, as the image's ``serve`` does:
one MXNet image serves classifiers and detectors, so the image cannot tell them apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import server
from pipelines.local import endpoint_server as es


@pytest.mark.parametrize(
    ("marker", "recipe"),
    [("classifier-spec.json", "classifier"), ("detector-spec.json", "detection"), ("model.json", "pilot")],
)
def test_the_recipe_is_the_models_marker(tmp_path: Path, marker: str, recipe: str) -> None:
    (tmp_path / marker).write_text("{}")
    assert es.recipe_of_model(tmp_path) == recipe
    assert recipe in server.HANDLERS


def test_a_model_without_a_marker_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "model_algo_1-symbol.json").write_text("{}")
    with pytest.raises(es.EndpointError, match="detector-spec.json"):
        es.recipe_of_model(tmp_path)
