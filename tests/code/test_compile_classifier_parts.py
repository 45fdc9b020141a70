"""compile_classifier's pure parts: the accuracy delta, the default's choice, bad photos (no MXNet needed)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.photos import PhotoTransform
from processing import compile_classifier
from processing.edge_package import CompileError, CompileFailed

LABELS = np.array([0, 1, 2, 0])
MXNET = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])  # 3 of 4 right


def test_the_accuracy_delta_compares_with_the_labels_and_with_mxnet_s_top_1() -> None:
    artifact = MXNET.copy()
    artifact[1] = [0.6, 0.3, 0.1]  # now wrong where MXNet was right
    artifact[3] = [0.6, 0.3, 0.1]  # now right where MXNet was wrong
    delta = compile_classifier.accuracy_delta(artifact, MXNET, LABELS)
    assert delta["images"] == 4
    assert (delta["accuracy"], delta["reference_accuracy"]) == (0.75, 0.75)
    assert delta["points"] == 0.0 and delta["agreement"] == 0.5
    assert delta["max_abs_difference"] == pytest.approx(0.5)


def artifact(file: str, points: float) -> dict:
    return {"file": file, "accuracy_delta": {"points": points}}


@pytest.mark.parametrize(
    ("int8_points", "expected"),
    [(-0.5, "classifier-int8.onnx"), (1.0, "classifier-int8.onnx"), (1.01, "classifier-float32.onnx")],
)
def test_int8_is_the_default_within_one_point_else_float32(int8_points: float, expected: str) -> None:
    artifacts = [artifact("classifier-int8.onnx", int8_points), artifact("classifier-float32.onnx", 0.0)]
    assert compile_classifier.choose_default(artifacts, 1.0) == expected
    assert [a["within_tolerance"] for a in artifacts] == [int8_points <= 1.0, True]


def test_no_artifact_within_the_tolerance_fails_the_step() -> None:
    artifacts = [artifact("classifier-int8.onnx", 3.0), artifact("classifier-float32.onnx", 1.5)]
    with pytest.raises(CompileFailed, match="within 1.0 accuracy points"):
        compile_classifier.choose_default(artifacts, 1.0)


def test_an_unreadable_photo_is_bad_input_not_a_bug(tmp_path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    transform = PhotoTransform(32, 32, 37, (127.0,) * 3, (128.0,) * 3, 1.0)
    with pytest.raises(CompileError, match="broken.jpg"):
        compile_classifier.prepared([tmp_path / "broken.jpg"], transform)
