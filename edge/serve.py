"""The car's MQTT inference service (``robocar-edge serve``): a request names an image, the answer goes out.

A request is one JSON object on the request topic: ``{"id": "...", "image_path": "..."}`` (a file on the
car, inside ``--images-root``) or ``{"id": "...", "image_b64": "..."}`` (the image's bytes). The installed
model answers it on the result topic (QoS 1)::

    {"id": "...", "model_version": "v3-0123456789ab", "latency_ms": 1.8, "prediction": {...}}

``prediction`` is a classifier's top-k (``{"task": "classification", "class", "probability", "top":
[{"class", "probability"}, ...]}``, ``edge.classify``), a detector's boxes (``{"task": "detection",
"boxes": [{"class", "class_id", "score", "box": [xmin, ymin, xmax, ymax]}, ...]}``, normalised, best
first, those scoring at least ``edge.detect.DEFAULT_MIN_SCORE`` as ``robocar-edge run`` reports them) or a
pilot's command (``{"task": "pilot", "angle", "throttle"}``, ``edge.drive.open_pilot`` on the photo
decoded as a camera frame).
``model_version`` is the installed package's folder (``v<package version>-<sha256[:12]>``, what
``robocar-edge status`` shows); ``latency_ms`` runs from the request's image bytes to the prediction
(decode, preprocessing, inference). A request the service cannot answer (malformed JSON, no id, a path
outside the images root, an unreadable or oversized image, bad base64, a failed inference) gets
``{"id": <its id, or null>, "error": "..."}`` on the same topic, and the service goes on with the next.

The model is ``edge.drive.LivePilot`` on the agent's ``current`` link, so a model the agent installs
(``robocar-edge pull``, or ``--interval`` polling) answers the next request, as it drives the next frame.
Requests are taken from paho's network thread into a bounded queue and answered in order by one thread:
a burst beyond the queue is answered "busy" at once instead of growing memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import math
import os
import queue
import stat
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge import classify, detect, drive, frames, photos

log = logging.getLogger("robocar.edge.serve")

# MQTT 3.1.1 section 1.5.3: a UTF-8 string is prefixed by its length in two bytes, so at most 65535 bytes;
# section 4.7: "+" and "#" are wildcards, allowed in a subscription's topic filter only (whole levels,
# "#" last) and never in the topic name a message is published to; no topic may be empty or hold U+0000.
# https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html
MQTT_TOPIC_MAX_BYTES = 65535
REQUEST_SUFFIX, RESULT_SUFFIX = "requests", "results"  # robocar/<car id>/requests, robocar/<car id>/results
# 8 MiB: a 12-megapixel camera JPEG is 3-6 MB; anything larger is not a photo the car took.
DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024
REQUEST_ID_MAX_CHARS = 256  # an id is echoed in every answer: a correlation key, not a payload
REQUEST_FIELDS = frozenset({"id", "image_path", "image_b64"})
ENVELOPE_BYTES = 4096  # what a request holds besides its image: the id, the keys, JSON punctuation
QUEUE_SIZE = 64  # requests waiting for the model; at ~2 ms each, a 0.13 s backlog


class ServeError(Exception):
    """A service that cannot start (no broker, a topic MQTT refuses, no model): one line, exit 2."""


class RequestError(ValueError):
    """A request the service answers with an error message; ``request_id`` is echoed when known."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


# ---- topics --------------------------------------------------------------------------------------------
def default_topics(car_id: str) -> tuple[str, str]:
    """(request topic, result topic) of a car when none is configured."""
    return f"robocar/{car_id}/{REQUEST_SUFFIX}", f"robocar/{car_id}/{RESULT_SUFFIX}"


def _check_topic_text(topic: str, what: str) -> list[str]:
    if not topic:
        raise ServeError(f"{what}: an MQTT topic cannot be empty")
    if "\x00" in topic:
        raise ServeError(f"{what} {topic!r}: an MQTT topic cannot hold U+0000")
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > MQTT_TOPIC_MAX_BYTES:
        raise ServeError(f"{what}: {size} bytes of UTF-8, over MQTT's {MQTT_TOPIC_MAX_BYTES}")
    return topic.split("/")


def check_topic_name(topic: str, what: str = "the result topic") -> str:
    """A topic a message can be published to (MQTT 3.1.1 section 4.7: no wildcard); ServeError if not."""
    _check_topic_text(topic, what)
    if "+" in topic or "#" in topic:
        raise ServeError(
            f"{what} {topic!r}: '+' and '#' are wildcards, not allowed where a message is published"
        )
    return topic


def check_topic_filter(topic: str, what: str = "the request topic") -> str:
    """A topic filter to subscribe to: wildcards only as whole levels, '#' only last (section 4.7.1)."""
    levels = _check_topic_text(topic, what)
    for index, level in enumerate(levels):
        if ("+" in level or "#" in level) and level not in ("+", "#"):
            raise ServeError(f"{what} {topic!r}: a wildcard must be a whole level (e.g. robocar/+/requests)")
        if level == "#" and index != len(levels) - 1:
            raise ServeError(f"{what} {topic!r}: '#' can only be the last level")
    return topic


# ---- requests -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """A request whose image is in hand: ``origin`` is its path or ``base64``."""

    id: str
    image: bytes
    origin: str


@dataclass(frozen=True)
class RequestLimits:
    """What a request may ask: image paths only inside ``images_root`` (None: no paths at all), images of
    at most ``max_image_bytes``."""

    images_root: Path | None = None
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @property
    def max_payload_bytes(self) -> int:
        """The largest request: the image in base64 (4 characters per 3 bytes) plus its envelope."""
        return 4 * math.ceil(self.max_image_bytes / 3) + ENVELOPE_BYTES


def _request_id(document: Any) -> str | None:
    """The request's id when it is one the service can echo (a short non-empty string), else None."""
    value = document.get("id") if isinstance(document, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= REQUEST_ID_MAX_CHARS else None


def parse_request(payload: bytes, limits: RequestLimits) -> Request:
    """A request's bytes -> a Request with its image read; RequestError says what is wrong with it."""
    if len(payload) > limits.max_payload_bytes:
        raise RequestError(
            f"the request is {len(payload)} bytes, over the {limits.max_payload_bytes}-byte limit"
        )
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RequestError(f"the request must be a JSON object, got {type(document).__name__}")
    request_id = _request_id(document)
    if request_id is None:
        raise RequestError(f"the request needs an id: a string of 1 to {REQUEST_ID_MAX_CHARS} characters")
    unknown = sorted(set(document) - REQUEST_FIELDS)
    if unknown:
        raise RequestError(
            f"unknown fields {', '.join(unknown)} (a request holds {', '.join(sorted(REQUEST_FIELDS))})",
            request_id,
        )
    given = [key for key in ("image_path", "image_b64") if key in document]
    if len(given) != 1:
        raise RequestError("the request needs exactly one of image_path and image_b64", request_id)
    value = document[given[0]]
    if not isinstance(value, str) or not value:
        raise RequestError(f"{given[0]} must be a non-empty string", request_id)
    try:
        if given[0] == "image_path":
            return Request(request_id, read_image_file(value, limits), value)
        return Request(request_id, decode_base64(value, limits), "base64")
    except RequestError as exc:
        raise RequestError(str(exc), request_id) from None


def read_image_file(path_text: str, limits: RequestLimits) -> bytes:
    """The bytes of a file inside ``images_root`` (a relative path is taken from there), links resolved
    first, so a link cannot lead out; only a regular file (a FIFO would block the service forever)."""
    if limits.images_root is None:
        raise RequestError("image_path is refused: the service runs without --images-root (send image_b64)")
    if "\x00" in path_text:
        raise RequestError("image_path holds U+0000")
    root = Path(os.path.realpath(limits.images_root))
    path = Path(os.path.realpath(limits.images_root / path_text))  # an absolute path_text replaces the root
    if not path.is_relative_to(root):
        raise RequestError(f"image_path {path_text!r} is outside the images root")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise RequestError(f"image_path {path_text!r} cannot be read: {exc.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise RequestError(f"image_path {path_text!r} is not a regular file")
        if status.st_size > limits.max_image_bytes:
            raise RequestError(
                f"image_path {path_text!r} is {status.st_size} bytes, "
                f"over the {limits.max_image_bytes}-byte limit"
            )
        data = handle.read(limits.max_image_bytes + 1)  # the file may have grown since fstat
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"image_path {path_text!r} is over the {limits.max_image_bytes}-byte limit")
    return data


def decode_base64(text: str, limits: RequestLimits) -> bytes:
    """Standard base64 (RFC 4648 section 4, padded), strictly: any other character is an error."""
    if len(text) > 4 * math.ceil(limits.max_image_bytes / 3):
        raise RequestError(f"image_b64 decodes to more than the {limits.max_image_bytes}-byte limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"image_b64 is not valid base64: {exc}") from None
    if len(data) > limits.max_image_bytes:
        raise RequestError(
            f"image_b64 decodes to {len(data)} bytes, over the {limits.max_image_bytes}-byte limit"
        )
    return data


def open_image(data: bytes) -> Any:
    """The image as a Pillow image, its header read but no pixel decoded yet; refused when Pillow cannot
    identify it or it is over edge.photos' pixel limit (a decompression bomb is refused unopened)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RequestError("not a readable image: not a format Pillow reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(f"not a readable image ({exc})") from None
    width, height = image.size
    if width * height > photos.MAX_PHOTO_PIXELS:
        image.close()
        raise RequestError(f"a {width}x{height} image is over the {photos.MAX_PHOTO_PIXELS:,}-pixel limit")
    return image


def decode_rgb(data: bytes) -> Any:
    """The image decoded in full, as RGB; a truncated or corrupt one is a RequestError."""
    with open_image(data) as image:
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise RequestError(f"not a readable image ({exc})") from None


# ---- the model ----------------------------------------------------------------------------------------
def model_opener(prefer: str | None = None, threads: int = 1) -> Callable[[Path], Any]:
    """``LivePilot``'s opener: a classifier or detector package opens as one, anything else as a pilot, so
    the service follows the agent whichever recipe it installs next."""

    def open_model(path: Path) -> Any:
        if detect.is_detector(path):
            return detect.open_detector(
                path, prefer=prefer, threads=threads, min_score=detect.DEFAULT_MIN_SCORE
            )
        if classify.is_classifier(path):
            return classify.open_classifier(path, prefer=prefer, threads=threads)
        return drive.open_pilot(path, prefer=prefer, threads=threads)

    return open_model


def predict(model: Any, image: bytes, top_k: int) -> dict[str, Any]:
    """The prediction of one image: a classifier's top-k classes, a detector's boxes, or a pilot's angle
    and throttle."""
    if isinstance(model, detect.Detector):
        try:
            detections = model(decode_rgb(image))  # edge.photos' transform (stretch), as in training
        except photos.PhotoError as exc:
            raise RequestError(str(exc)) from None
        boxes = detect.reported_boxes(detections, model.classes, detect.DEFAULT_MIN_SCORE)
        return {"task": "detection", "boxes": boxes}
    if isinstance(model, classify.Classifier):
        try:
            probabilities = model(decode_rgb(image))  # then edge.photos' transform, as in training
        except photos.PhotoError as exc:
            raise RequestError(str(exc)) from None
        top = [
            {"class": name, "probability": round(p, 6)}
            for name, p in classify.top_k(probabilities, model.classes, top_k)
        ]
        return {"task": "classification", **top[0], "top": top}
    open_image(image).close()  # the pixel limit, before the camera's decoder decodes anything
    try:
        angle, throttle = model(frames.decode_image(image))  # the camera frame's decoder and preparation
    except frames.FrameError as exc:
        raise RequestError(f"not a camera frame this pilot takes: {exc}") from None
    if not (math.isfinite(angle) and math.isfinite(throttle)):
        raise RequestError(f"the model answered angle {angle}, throttle {throttle}")
    return {"task": "pilot", "angle": float(angle), "throttle": float(throttle)}


@dataclass
class ServeSummary:
    """``errors``: requests answered with an error message (``busy`` of them: refused, the queue full)."""

    requests: int
    answered: int
    errors: int
    busy: int
    seconds: float
    latency_ms: dict[str, float]
    models: list[str]
    request_topic: str
    result_topic: str
    mqtt: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lat = self.latency_ms
        return (
            f"served {self.requests} requests from {self.request_topic} in {self.seconds:.2f} s: "
            f"{self.answered} answered, {self.errors} errors ({self.busy} busy); latency ms mean "
            f"{lat['mean']:.3f} p50 {lat['p50']:.3f} p95 {lat['p95']:.3f} max {lat['max']:.3f}; "
            f"models {', '.join(self.models)}"
        )


class InferenceService:
    """Answers request payloads with the live model; ``answer`` never raises."""

    def __init__(self, live: drive.LivePilot, limits: RequestLimits, top_k: int = 3) -> None:
        if top_k < 1:
            raise ServeError(f"--top-k must be 1 or more, got {top_k}")
        if limits.max_image_bytes < 1:
            raise ServeError(f"--max-image-bytes must be 1 or more, got {limits.max_image_bytes}")
        self.live = live
        self.limits = limits
        self.top_k = top_k
        self.latencies = array("d")
        self.errors = 0
        self.busy = 0
        self.waiting: queue.Queue[bytes] = queue.Queue(maxsize=QUEUE_SIZE)  # requests not yet answered

    def submit(self, payload: bytes) -> dict[str, Any] | None:
        """Queue a request for ``answer``; the busy answer to send at once when the queue is full."""
        try:
            self.waiting.put_nowait(payload)
        except queue.Full:
            return self.refuse_busy(payload)
        return None

    @property
    def model_version(self) -> str:
        """The package answering: the last one that loaded (LivePilot.name moves on to a model that
        failed to load, so it is not retried, while the previous one keeps answering)."""
        return self.live.names_used[-1]

    def error(self, message: str, request_id: str | None) -> dict[str, Any]:
        self.errors += 1
        return {"id": request_id, "error": message}

    def refuse(self, payload: bytes, reason: str) -> dict[str, Any]:
        """The error answer to a request the model will not see (its id, when it has one)."""
        request_id = None
        if len(payload) <= self.limits.max_payload_bytes:
            with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
                request_id = _request_id(json.loads(payload))
        return self.error(reason, request_id)

    def refuse_busy(self, payload: bytes) -> dict[str, Any]:
        """The answer to a request that found the queue full."""
        self.busy += 1
        return self.refuse(payload, f"busy: {QUEUE_SIZE} requests are waiting, try again")

    def answer(self, payload: bytes) -> dict[str, Any]:
        request_id = None
        try:
            request = parse_request(payload, self.limits)
            request_id = request.id
            started = time.perf_counter()
            prediction = predict(self.live.infer, request.image, self.top_k)
            latency_ms = (time.perf_counter() - started) * 1000.0
        except RequestError as exc:
            return self.error(str(exc), exc.request_id or request_id)
        except Exception as exc:  # a runtime failing on one request must not end the service
            log.warning("request %s: inference failed: %s: %s", request_id, type(exc).__name__, exc)
            return self.error(f"inference failed: {type(exc).__name__}: {exc}", request_id)
        self.latencies.append(latency_ms)
        return {
            "id": request.id,
            "model_version": self.model_version,
            "latency_ms": round(latency_ms, 3),
            "prediction": prediction,
        }

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors


# ---- MQTT ---------------------------------------------------------------------------------------------
class MqttRequests(drive.MqttPublisher):
    """The publisher's connection (QoS 1, reconnects, acknowledgement counts), also subscribed to the
    request topic: again on every connect, since a clean session forgets its subscriptions."""

    def __init__(
        self, config: drive.MqttConfig, request_topic: str, on_request: Callable[[bytes], None]
    ) -> None:
        self.request_topic = request_topic
        self.on_request = on_request
        self.subscribed = threading.Event()
        super().__init__(config)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        super()._on_connect(client, userdata, flags, reason_code, properties)
        if not reason_code.is_failure:
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            client.subscribe(self.request_topic, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if any(code.is_failure for code in reason_codes):
            log.warning("the broker refused the subscription to %s: %s", self.request_topic, reason_codes)
        else:
            self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.on_request(bytes(message.payload))


def serve(
    service: InferenceService,
    config: drive.MqttConfig,
    request_topic: str,
    *,
    stop: Callable[[], bool] = lambda: False,
    max_requests: int | None = None,
) -> ServeSummary:
    """Answer requests until ``stop()`` (SIGTERM) or ``max_requests``; publishes on ``config.topic``.
    Requests still waiting when ``stop()`` comes are answered with an error, not left without a word."""
    if max_requests is not None and max_requests < 1:
        raise ServeError(f"--max-requests must be 1 or more, got {max_requests}")
    check_topic_filter(request_topic)
    check_topic_name(config.topic)
    waiting = service.waiting
    connection: MqttRequests | None = None

    def enqueue(payload: bytes) -> None:  # paho's network thread
        busy = service.submit(payload)
        if busy is not None and connection is not None:
            connection.publish(config.topic, json.dumps(busy, separators=(",", ":")))

    try:
        connection = MqttRequests(config, request_topic, enqueue)
    except drive.DriveError as exc:
        raise ServeError(str(exc)) from None
    started = time.perf_counter()
    try:
        if not connection.subscribed.wait(config.connect_timeout_s):
            raise ServeError(
                f"the MQTT broker at {config.host}:{config.port} did not accept the subscription "
                f"to {request_topic}"
            )
        log.info("serving: requests on %s, results on %s, model %s (%s)", request_topic, config.topic,
                 service.model_version, service.live.infer.description)  # fmt: skip
        while not stop() and (max_requests is None or service.requests < max_requests):
            service.live.refresh()  # a model the agent installed answers the next request
            try:
                payload = waiting.get(timeout=0.1)
            except queue.Empty:
                continue
            connection.publish(config.topic, json.dumps(service.answer(payload), separators=(",", ":")))
        while stop() and not waiting.empty():
            payload = waiting.get_nowait()
            refused = service.refuse(payload, "the service stopped before answering; send it again")
            connection.publish(config.topic, json.dumps(refused, separators=(",", ":")))
    finally:
        connection.close()  # waits (5 s at most) for the broker to acknowledge what was published
    return ServeSummary(
        requests=service.requests,
        answered=len(service.latencies),
        errors=service.errors,
        busy=service.busy,
        seconds=time.perf_counter() - started,
        latency_ms=drive.latency_stats(service.latencies),
        models=list(service.live.names_used),
        request_topic=request_topic,
        result_topic=config.topic,
        mqtt={"sent": connection.sent, "acknowledged": connection.acknowledged, "failed": connection.failed},
    )


def topics(request_topic: str | None, result_topic: str | None, car_id: str) -> tuple[str, str]:
    """(request topic, result topic): the configured ones, else the car's defaults; checked for MQTT."""
    request_default, result_default = default_topics(car_id)
    return check_topic_filter(request_topic or request_default), check_topic_name(
        result_topic or result_default
    )
