"""The classifier's serving handler: the SageMaker MXNet serving container's four functions.

The MXNet inference container (sagemaker-mxnet-inference-toolkit) loads a module with ``model_fn``,
``input_fn``, ``predict_fn`` and ``output_fn``
(https://sagemaker.readthedocs.io/en/stable/frameworks/mxnet/using_mxnet.html#serve-an-mxnet-model); the
local endpoint (pipelines/local/endpoint_server.py) calls the same four, so one handler serves both.

- ``model_fn(model_dir)``: the trainer's artifact (``image-classification-symbol.json`` + ``-NNNN.params``
  + ``classifier-spec.json``), loaded by ``training.classifier.load_exported``, the one loader.
- ``input_fn(body, content_type)``: one photo, ``application/x-image``, ``image/jpeg`` or ``image/png``
  (what the built-in image-classification algorithm takes), through ``edge.photos.prepare`` with the
  transform of the model's ``classifier-spec.json``: every stage prepares a photo as training did.
- ``predict_fn(data, model)``: the network's softmax, float32 [1, classes].
- ``output_fn(prediction, accept)``: ``application/json``, a JSON list of probabilities by class id, as
  the built-in algorithm answers; ``application/json; verbose=true`` (or ``application/jsonlines;
  verbose=true``, the built-in algorithm's verbose form) adds the class names:
  ``{"prediction": [...], "labels": [names by id], "predicted_label": name}``, the keys of the built-in
  algorithm's verbose answer as its inference page shows them
  (https://docs.aws.amazon.com/sagemaker/latest/dg/IC-inference.html; not re-read offline).

Bad requests raise ``inference.inference.PayloadError`` with the status they deserve: 415 for a content
type this handler does not take, 400 for an empty, truncated or unreadable photo, 406 for an ``Accept``
it cannot answer.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.photos import PhotoError, PhotoTransform, prepare
from inference.inference import PayloadError

IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png")
JSON_TYPE = "application/json"
JSONLINES_TYPE = "application/jsonlines"
_LOADED: dict[str, ClassifierModel] = {}  # the model model_fn loaded, for input_fn and output_fn


@dataclass
class ClassifierModel:
    """The loaded network with how to prepare its photos and its class names by id."""

    net: Any
    transform: PhotoTransform
    classes: list[str]
    # MXNet's imperative calls are not safe from several Python threads at once (its engine pushes ops
    # from one thread per context); the server is threaded, so forwards take turns. MXNet's own operator
    # threads still use every core for each forward.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"application/json; verbose=true"`` -> ("application/json", {"verbose": "true"})."""
    media, *parameters = (content_type or "").split(";")
    pairs = (p.split("=", 1) for p in parameters if "=" in p)
    return media.strip().lower(), {k.strip().lower(): v.strip().strip('"').lower() for k, v in pairs}


def model_fn(model_dir: str | Path) -> ClassifierModel:
    """The trainer's exported classifier in ``model_dir``."""
    from training.classifier import load_exported

    net, transform, classes = load_exported(Path(model_dir))
    model = ClassifierModel(net, transform, classes)
    _LOADED["model"] = model  # the container calls input_fn and output_fn without the model
    return model


def photo_input(body: bytes, content_type: str | None, transform: PhotoTransform) -> np.ndarray:
    """Request body -> the network's [1, 3, H, W] float32 input (what ``input_fn`` returns)."""
    media, _ = media_type(content_type)
    if media not in IMAGE_TYPES:
        raise PayloadError(
            f"unsupported content type {content_type!r}; send one photo as one of {', '.join(IMAGE_TYPES)}",
            status_code=415,
        )
    if not body:
        raise PayloadError("empty request body")
    try:
        return prepare(io.BytesIO(body), transform)  # Image.open reads a file object as it reads a path
    except PhotoError as exc:
        reason = str(exc).split(": ", 1)[-1]  # drop the BytesIO's repr that stands for the path
        raise PayloadError(f"the request body is not a readable photo: {reason}") from None


def input_fn(body: bytes, content_type: str) -> np.ndarray:
    """The container calls this after ``model_fn`` and before ``predict_fn``, without the model: the
    transform is the one ``model_fn`` loaded."""
    model = _LOADED.get("model")
    if model is None:
        raise RuntimeError("input_fn called before model_fn")
    return photo_input(bytes(body), content_type, model.transform)


def probabilities(model: ClassifierModel, x: np.ndarray) -> np.ndarray:
    """Class probabilities [N, classes] for the prepared input ``x``."""
    import mxnet as mx

    with model.lock:
        return model.net(mx.nd.array(x)).asnumpy()


def predict_fn(data: np.ndarray, model: ClassifierModel) -> np.ndarray:
    return probabilities(model, data)


def response(prediction: np.ndarray, accept: str | None, classes: list[str]) -> tuple[bytes, str]:
    """(body, content type) for one photo's probabilities; PayloadError 406 for an Accept it cannot answer."""
    media, parameters = media_type(accept or JSON_TYPE)
    scores = [float(p) for p in np.asarray(prediction, dtype=np.float64).reshape(-1)]
    if media in ("", "*/*", JSON_TYPE) and parameters.get("verbose") != "true":
        return json.dumps(scores).encode(), JSON_TYPE
    if media in (JSON_TYPE, JSONLINES_TYPE):
        best = int(np.argmax(scores))
        verbose = {"prediction": scores, "labels": classes, "predicted_label": classes[best]}
        return json.dumps(verbose).encode(), media
    raise PayloadError(
        f"cannot answer Accept {accept!r}; ask for {JSON_TYPE} (probabilities by class id) or "
        f"{JSON_TYPE}; verbose=true (with class names)",
        status_code=406,
    )


def output_fn(prediction: np.ndarray, accept: str) -> tuple[bytes, str]:
    model = _LOADED.get("model")
    classes = model.classes if model else [str(i) for i in range(np.asarray(prediction).size)]
    return response(prediction, accept, classes)
