"""The TF Serving handler: good payloads give {"angle", "throttle"}; bad ones a 4xx-style PayloadError."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from edge.frames import FrameSpec, decode_image, prepare_frame, preprocessing_record, to_model_input
from inference.inference import PayloadError, predict_payload

REPO = Path(__file__).resolve().parents[2]
SPEC = FrameSpec(crop_top=40)  # 160x120 camera, 40 rows cropped: the handler must crop like training did
LINEAR_JSON = {
    "model_type": "linear",
    "input": {
        "shape": [80, 160, 3],
        "frame_spec": SPEC.to_dict(),
        "preprocessing": preprocessing_record(SPEC),
    },
    "throttle_range": 0.5,
}


def camera_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def encode(frame: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format=fmt)
    return out.getvalue()


class RecordingModel:
    """A stand-in model: angle = mean pixel of the input, throttle = 0.25; remembers what it was fed."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.inputs.append(x)
        return {"angle": x.mean(axis=(1, 2, 3))[:, None], "throttle": np.full((len(x), 1), 0.25, np.float32)}


def test_png_frame_goes_through_edge_frames_exactly():
    frame = camera_frame()
    model = RecordingModel()
    result = predict_payload(encode(frame, "PNG"), "image/png", model, LINEAR_JSON)
    expected_input = to_model_input(prepare_frame(frame, SPEC))[None]
    np.testing.assert_array_equal(model.inputs[0], expected_input)
    assert result == {"angle": pytest.approx(float(expected_input.mean()), rel=1e-6), "throttle": 0.25}


def test_jpeg_frame_uses_the_decoded_pixels():
    jpeg = encode(camera_frame(1), "JPEG")
    model = RecordingModel()
    predict_payload(jpeg, "image/jpeg; charset=binary", model, LINEAR_JSON)
    np.testing.assert_array_equal(model.inputs[0][0], to_model_input(prepare_frame(decode_image(jpeg), SPEC)))


def test_json_batch_gives_lists_and_clips_linear_outputs_to_the_car_range():
    frames = np.stack([np.full((120, 160, 3), 255, np.uint8), np.zeros((120, 160, 3), np.uint8)])

    def saturating(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"angle": np.array([[3.0], [-0.5]]), "throttle": np.array([[0.1], [-2.0]])}

    result = predict_payload(
        json.dumps(frames.tolist()).encode(), "application/json", saturating, LINEAR_JSON
    )
    assert result == {"angle": [1.0, -0.5], "throttle": [pytest.approx(0.1), -1.0]}


def test_categorical_outputs_are_unbinned_like_donkeycar():
    model_json = {**LINEAR_JSON, "model_type": "categorical"}
    angle_probs = np.zeros((1, 15))
    angle_probs[0, 14] = 1.0  # last bin: full right
    throttle_probs = np.zeros((1, 20))
    throttle_probs[0, 19] = 1.0  # last bin: donkeycar unbins it to 19 * 0.5 / 20

    def model(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"angle": angle_probs, "throttle": throttle_probs}

    result = predict_payload(
        json.dumps(camera_frame().tolist()).encode(), "application/json", model, model_json
    )
    assert result == {"angle": pytest.approx(1.0), "throttle": pytest.approx(0.475)}


@pytest.mark.parametrize(
    ("payload", "content_type", "status", "message"),
    [
        (b"not an image", "image/jpeg", 400, "cannot decode image"),
        (b"", "image/jpeg", 400, "empty request body"),
        (b"1,2,3", "text/csv", 415, "unsupported content type"),
        (b"[[1, 2", "application/json", 400, "not valid JSON"),
        (b'{"a": 1}', "application/json", 400, "array"),
        (b"[1, 2, 3]", "application/json", 400, "got 1 dimensions"),
        (json.dumps([[[300, 0, 0]]]).encode(), "application/json", 400, "0..255"),
        (
            json.dumps(np.zeros((2, 2, 3)).tolist()).encode(),
            "application/json",
            400,
            "expected a 160x120 frame",
        ),
    ],
)
def test_bad_payloads_are_client_errors_not_crashes(payload, content_type, status, message):
    with pytest.raises(PayloadError, match=message) as error:
        predict_payload(payload, content_type, RecordingModel(), LINEAR_JSON)
    assert error.value.status_code == status


def test_wrong_sized_image_is_a_client_error():
    small = encode(np.zeros((60, 80, 3), np.uint8), "PNG")
    with pytest.raises(PayloadError, match="expected a 160x120 frame, got 80x60"):
        predict_payload(small, "image/png", RecordingModel(), LINEAR_JSON)


@pytest.fixture
def container_handler(tmp_path, monkeypatch):
    """inference.py as the TF Serving container loads it: <model>/code/inference.py beside code/edge/,
    with code/ on the path (its gunicorn runs with ``--pythonpath /opt/ml/model/code``)."""
    code = tmp_path / "model" / "code"
    (code / "edge").mkdir(parents=True)
    shutil.copyfile(REPO / "inference/inference.py", code / "inference.py")
    shutil.copyfile(REPO / "edge/__init__.py", code / "edge/__init__.py")
    shutil.copyfile(REPO / "edge/frames.py", code / "edge/frames.py")
    (tmp_path / "model" / "model.json").write_text(json.dumps(LINEAR_JSON))
    monkeypatch.syspath_prepend(str(code))
    spec = importlib.util.spec_from_file_location("inference", code / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_container_protocol_round_trip(container_handler):
    frame = camera_frame(2)
    context = SimpleNamespace(request_content_type="image/png", accept_header="application/json")
    body = json.loads(container_handler.input_handler(io.BytesIO(encode(frame, "PNG")), context))
    assert body["signature_name"] == "serving_default"
    np.testing.assert_allclose(
        np.asarray(body["inputs"], np.float32)[0], to_model_input(prepare_frame(frame, SPEC))
    )

    tf_serving = SimpleNamespace(
        status_code=200, content=json.dumps({"outputs": {"angle": [[0.5]], "throttle": [[0.3]]}})
    )
    content, content_type = container_handler.output_handler(tf_serving, context)
    assert content_type == "application/json"
    assert json.loads(content) == {"angle": 0.5, "throttle": pytest.approx(0.3)}


def test_container_protocol_reports_errors_with_their_message(container_handler):
    context = SimpleNamespace(request_content_type="text/plain", accept_header="application/json")
    with pytest.raises(ValueError, match="unsupported content type 'text/plain'"):
        container_handler.input_handler(io.BytesIO(b"hello"), context)
    failed = SimpleNamespace(status_code=400, content=b'{"error": "bad input"}')
    with pytest.raises(ValueError, match="TF Serving returned 400"):
        container_handler.output_handler(failed, context)


def test_a_model_with_other_preprocessing_is_refused():
    other = {
        **LINEAR_JSON,
        "input": {**LINEAR_JSON["input"], "preprocessing": {"version": 0, "digest": "0" * 64}},
    }
    with pytest.raises(ValueError, match="preprocessing"):
        predict_payload(encode(camera_frame(), "PNG"), "image/png", RecordingModel(), other)
