"""`robocar-edge serve` with a detector installed: requests on a REAL Mosquitto on loopback answered with
boxes and class names by test_edge_detector's colour detector (anchor 0 top left answers red and green,
anchor 1 bottom right blue); a broken image gets an error and the next request is still answered."""

# The fixtures are imported from the tests that define them (broker: the real Mosquitto; the colour
# detector's package) and pytest passes them by name.
# ruff: noqa: F401, F811

from __future__ import annotations

from pathlib import Path

import pytest
from test_edge_detector import ANCHORS, CLASSES, COLOURS, good_package
from test_edge_mqtt import Subscriber, broker
from test_edge_serve import Requester, Service, b64, extract, png, serve_args, topics

from edge import detect, serve


@pytest.fixture
def detector_model(tmp_path: Path, good_package: bytes) -> Path:
    return extract(good_package, tmp_path / "detector")


def test_the_serve_opener_opens_a_detector_package(detector_model):
    assert isinstance(serve.model_opener()(detector_model), detect.Detector)


def test_a_detector_answers_requests_with_named_boxes(broker, detector_model, tmp_path):
    host, port = broker
    requests, results = topics("car-d")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "red.png").write_bytes(png(COLOURS["red"]))
    subscriber = Subscriber(host, port, results)
    flags = ["--images-root", str(photos), "--max-requests", "4"]
    service = Service(serve_args(broker, detector_model, "car-d", *flags))
    requester = Requester(host, port, requests)
    requester.send({"id": "red", "image_path": "red.png"})
    requester.send({"id": "broken", "image_b64": b64(b"\xff\xd8 truncated")})
    requester.send({"id": "blue", "image_b64": b64(png(COLOURS["blue"]))})
    requester.send({"id": "green", "image_b64": b64(png(COLOURS["green"], size=(40, 20)))})
    received = subscriber.wait_for(4)
    requester.close()
    subscriber.close()
    assert service.join() == 0
    assert [m["id"] for m in received] == ["red", "broken", "blue", "green"]
    assert set(received[1]) == {"id", "error"} and "not a readable image" in received[1]["error"]
    for message in (received[0], *received[2:]):
        colour = message["id"]
        assert set(message) == {"id", "model_version", "latency_ms", "prediction"}
        assert message["model_version"] == "detector" and message["latency_ms"] > 0
        prediction = message["prediction"]
        assert prediction["task"] == "detection"
        (box,) = prediction["boxes"]  # the other anchor scores below edge.detect.DEFAULT_MIN_SCORE
        assert box["class"] == colour and box["class_id"] == CLASSES.index(colour) and box["score"] > 0.9
        assert box["box"] == pytest.approx(ANCHORS[1 if colour == "blue" else 0].tolist(), abs=1e-6)
