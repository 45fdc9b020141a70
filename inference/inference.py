"""TF Serving container handler: camera frame in, ``{"angle", "throttle"}`` out.

Deployed as ``code/inference.py`` inside ``model.tar.gz`` (training/export.py copies it there with
``code/edge/frames.py``), it serves a SageMaker real-time endpoint, batch transform or async endpoint
with the TensorFlow Serving container's ``input_handler``/``output_handler`` protocol.

Requests:
- ``image/jpeg``, ``image/png``, ``application/x-image`` (or ``application/octet-stream``): one camera
  frame (160x120) as encoded bytes;
- ``application/json``: a camera frame as a nested array [H][W][3] of 0..255 values, or a batch
  [N][H][W][3].
The frame goes through ``edge.frames`` (decode_image -> prepare_frame -> to_model_input), the same
code as preprocessing, training, evaluation and the car. Response: ``{"angle": a, "throttle": t}``
for one frame, lists for a batch of several.

Bad payloads raise ``PayloadError`` (a ValueError) whose message names the problem and whose
``status_code`` is 400 (malformed) or 415 (unsupported content type). The TF Serving container turns any
handler exception into an error response carrying that message (it reports the status as 500; the
container has no way for a handler to choose its status); ``predict_payload`` callers get the code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# code/edge/ sits beside this file: the TF Serving container starts its Python service with
# ``gunicorn --pythonpath /opt/ml/model/code`` (serve.py of aws/sagemaker-tensorflow-serving-container,
# ``_setup_gunicorn``), so ``edge`` imports as a package with no path change of ours.
from edge.frames import (
    FrameError,
    FrameSpec,
    decode_image,
    decode_outputs,
    prepare_frame,
    spec_of,
    to_model_input,
)

_HERE = Path(__file__).resolve().parent  # <model>/code: model.json is one level up

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")
JSON_TYPE = "application/json"
MAX_BATCH = 256  # bounds the memory a single request can take

PredictFn = Callable[[np.ndarray], Mapping[str, Any]]


class PayloadError(ValueError):
    """A request the handler refuses; ``status_code`` is the HTTP status it deserves."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _frames_from_json(payload: bytes) -> tuple[np.ndarray, bool]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"request body is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and "instances" in data:  # TF Serving's own request shape
        data = data["instances"]
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PayloadError("JSON body must be a numeric array [H][W][3] or [N][H][W][3]") from exc
    if array.ndim not in (3, 4):
        raise PayloadError(
            f"JSON body must be an array [H][W][3] or [N][H][W][3], got {array.ndim} dimensions"
        )
    if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise PayloadError("pixel values must be finite numbers in 0..255")
    single = array.ndim == 3
    return (array[None] if single else array).astype(np.uint8), single


def payload_to_model_input(
    payload: bytes, content_type: str | None, spec: FrameSpec
) -> tuple[np.ndarray, bool]:
    """Request body -> (float32 [N,H,W,3] model input, whether it was a single frame)."""
    media = _media_type(content_type)
    if not payload:
        raise PayloadError("empty request body")
    if media in IMAGE_TYPES:
        try:
            frames, single = decode_image(payload)[None], True
        except FrameError as exc:
            raise PayloadError(str(exc)) from exc
    elif media == JSON_TYPE:
        frames, single = _frames_from_json(payload)
    else:
        raise PayloadError(
            f"unsupported content type {content_type!r}; send one of {', '.join((*IMAGE_TYPES, JSON_TYPE))}",
            status_code=415,
        )
    if len(frames) == 0 or len(frames) > MAX_BATCH:
        raise PayloadError(f"a request carries 1 to {MAX_BATCH} frames, got {len(frames)}")
    try:
        prepared = np.stack([prepare_frame(frame, spec) for frame in frames])
    except FrameError as exc:
        raise PayloadError(str(exc)) from exc
    return to_model_input(prepared), single


def outputs_to_response(
    outputs: Mapping[str, Any], model_json: Mapping[str, Any], single: bool
) -> dict[str, Any]:
    """The serving signature's ``{"angle", "throttle"}`` heads -> the car's units."""
    angle, throttle = decode_outputs(
        [np.asarray(outputs["angle"]), np.asarray(outputs["throttle"])],
        model_json["model_type"],
        float(model_json.get("throttle_range", 0.5)),
    )
    if single:
        return {"angle": float(angle[0]), "throttle": float(throttle[0])}
    return {"angle": angle.astype(float).tolist(), "throttle": throttle.astype(float).tolist()}


def predict_payload(
    payload: bytes, content_type: str | None, predict_fn: PredictFn, model_json: Mapping[str, Any]
) -> dict[str, Any]:
    """Request body -> response dict; ``predict_fn`` maps a float32 batch to {"angle", "throttle"}."""
    spec = spec_of(model_json["input"])
    x, single = payload_to_model_input(payload, content_type, spec)
    return outputs_to_response(predict_fn(x), model_json, single)


# --- the TF Serving container's protocol -------------------------------------------------------------

_MODEL_JSON: dict[str, Any] | None = None


def _model_json() -> dict[str, Any]:
    """model.json from the model root (this file is ``<root>/code/inference.py``), read once."""
    global _MODEL_JSON
    if _MODEL_JSON is None:
        _MODEL_JSON = json.loads((_HERE.parent / "model.json").read_text())
    return _MODEL_JSON


def _read(data: Any) -> bytes:
    if data is None:
        return b""
    if hasattr(data, "read"):
        data = data.read()
    return data.encode() if isinstance(data, str) else bytes(data)


def input_handler(data: Any, context: Any) -> str:
    """Request -> TF Serving REST body (columnar ``inputs``) for the ``serving_default`` signature."""
    model_json = _model_json()
    spec = spec_of(model_json["input"])
    x, _ = payload_to_model_input(_read(data), getattr(context, "request_content_type", None), spec)
    return json.dumps({"signature_name": "serving_default", "inputs": x.tolist()})


def output_handler(response: Any, context: Any) -> tuple[str, str]:
    """TF Serving's response -> ``{"angle", "throttle"}`` JSON (numbers for one frame, lists for several)."""
    if response.status_code != 200:
        raise ValueError(f"TF Serving returned {response.status_code}: {_read(response.content).decode()}")
    outputs = json.loads(_read(response.content))["outputs"]
    single = len(outputs["angle"]) == 1
    return json.dumps(outputs_to_response(outputs, _model_json(), single)), JSON_TYPE
