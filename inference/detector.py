"""The detector's serving handler: the SageMaker MXNet serving container's four functions, as
``inference/classifier.py`` is the classifier's (whose request and media-type helpers it reuses).

- ``model_fn(model_dir)``: a detector in ``training/detector.py``'s layout (the built-in
  object-detection algorithm's ``model_algo_1-symbol.json`` + ``-0000.params``, and
  ``detector-spec.json``), converted to its deploy heads by ``training.detector.deploy_network``, the one
  conversion (the training symbol still holds ``MultiBoxTarget`` and does not bind without labels).
- ``input_fn(body, content_type)``: one photo (``image/jpeg``, ``image/png`` or ``application/x-image``)
  through ``edge.photos.prepare`` with the spec's transform (``stretch``: the whole photo, so normalised
  boxes on the network's input are normalised boxes on the photo).
- ``predict_fn(data, model)``: the heads (``cls_prob``, ``loc_preds``, ``anchors``) decoded by
  ``edge.detect.decode`` with the spec's variances and NMS settings, the decoder the car and evaluation
  use: rows [class_id, score, xmin, ymin, xmax, ymax], best first.
- ``output_fn(prediction, accept)``: ``application/json``, the built-in object-detection endpoint's answer
  ``{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}``, class ids as floats and
  coordinates normalised to [0, 1]
  (https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-in-formats.html);
  ``application/json; verbose=true`` (or ``application/jsonlines; verbose=true``) adds the class names:
  ``"labels"`` (names by id) and ``"predicted_labels"`` (one per row), as the classifier's verbose answer
  adds its names.

Bad requests raise ``inference.inference.PayloadError`` with the classifier's statuses: 415 for a content
type it does not take, 400 for an empty or unreadable photo, 406 for an ``Accept`` it cannot answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect import decode, decode_settings
from edge.photos import PhotoTransform
from inference.classifier import JSON_TYPE, JSONLINES_TYPE, media_type, photo_input
from inference.inference import PayloadError

_LOADED: dict[str, DetectorModel] = {}  # the model model_fn loaded, for input_fn and output_fn


@dataclass
class DetectorModel:
    """The deploy heads with how to prepare a photo, the class names by id and decode's settings."""

    heads: Callable[[np.ndarray], list[np.ndarray]]  # [1, 3, H, W] -> cls_prob, loc_preds, anchors
    transform: PhotoTransform
    classes: list[str]
    settings: dict[str, Any]
    # MXNet's Module is not safe from several Python threads at once; the server is threaded, so forwards
    # take turns (inference/classifier.py's reason; MXNet's operator threads still use every core).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def model_fn(model_dir: str | Path) -> DetectorModel:
    """The trained detector in ``model_dir``, its deploy heads bound for one photo."""
    import mxnet as mx

    from training.detector import bind_deploy, deploy_network, read_spec

    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    transform = PhotoTransform.from_dict(spec["input"])
    symbol, arg_params, aux_params = deploy_network(model_dir)
    module = bind_deploy(symbol, arg_params, aux_params, transform.height)

    def heads(x: np.ndarray) -> list[np.ndarray]:
        module.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        return [output.asnumpy() for output in module.get_outputs()[:3]]

    model = DetectorModel(heads, transform, list(spec["classes"]), decode_settings(spec))
    _LOADED["model"] = model  # the container calls input_fn and output_fn without the model
    return model


def input_fn(body: bytes, content_type: str) -> np.ndarray:
    """The container calls this without the model: the transform is the one ``model_fn`` loaded."""
    model = _LOADED.get("model")
    if model is None:
        raise RuntimeError("input_fn called before model_fn")
    return photo_input(bytes(body), content_type, model.transform)


def detections(model: DetectorModel, x: np.ndarray) -> np.ndarray:
    """Decoded detections (K, 6) of one prepared photo ``x`` [1, 3, H, W], best first."""
    with model.lock:
        cls_prob, loc_preds, anchors = model.heads(x)
    return decode(cls_prob[0], loc_preds[0], anchors.reshape(-1, 4), **model.settings)


def predict_fn(data: np.ndarray, model: DetectorModel) -> np.ndarray:
    return detections(model, data)


def response(rows: np.ndarray, accept: str | None, classes: list[str]) -> tuple[bytes, str]:
    """(body, content type) for one photo's detections; PayloadError 406 for an Accept it cannot answer."""
    media, parameters = media_type(accept or JSON_TYPE)
    prediction = [[float(v) for v in row] for row in np.asarray(rows, dtype=np.float64).reshape(-1, 6)]
    if media in ("", "*/*", JSON_TYPE) and parameters.get("verbose") != "true":
        return json.dumps({"prediction": prediction}).encode(), JSON_TYPE
    if media in (JSON_TYPE, JSONLINES_TYPE):
        names = [classes[int(row[0])] for row in prediction]
        verbose = {"prediction": prediction, "labels": classes, "predicted_labels": names}
        return json.dumps(verbose).encode(), media
    raise PayloadError(
        f"cannot answer Accept {accept!r}; ask for {JSON_TYPE} (rows [class_id, score, xmin, ymin, xmax, "
        f"ymax]) or {JSON_TYPE}; verbose=true (with class names)",
        status_code=406,
    )


def output_fn(prediction: np.ndarray, accept: str) -> tuple[bytes, str]:
    model = _LOADED.get("model")
    if model is None:
        raise RuntimeError("output_fn called before model_fn")
    return response(prediction, accept, model.classes)
