"""`robocar-edge serve`: requests on a REAL Mosquitto on loopback, answered by a real installed model.

The classifier is test_edge_classifier's colour package (red, green, blue), the pilot edge_fixtures' tiny
ONNX one; requests name a file under --images-root or carry the image in base64; every malformed request
gets an error message and the next request is still answered.
"""

# The fixtures are imported from the tests that define them (broker: the real Mosquitto; the colour
# classifier; the moto registry's package and the stubbed Greengrass) and pytest passes them by name.
# ruff: noqa: F401, F811

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from edge_fixtures import BUCKET, GROUP, TARGET, TINY_FRAME_SPEC, onnx_pilot_package
from PIL import Image
from test_edge_classifier import COLOURS, colour_photos, good_package
from test_edge_greengrass import ARCHIVE, greengrass, package, run_cli
from test_edge_lean import run_on_the_car
from test_edge_mqtt import Subscriber, _free_port, _mosquitto_binary, broker

from edge import artifacts, drive, frames, serve
from edge.cli import build_parser, resolve_settings
from edge.cli import main as edge_main
from edge.greengrass import component
from pipelines.aws_rules import request_problems

REPO = Path(__file__).resolve().parents[2]


def extract(archive: bytes, folder: Path) -> Path:
    packed = folder.with_name(f"{folder.name}.tar.gz")
    packed.parent.mkdir(parents=True, exist_ok=True)
    packed.write_bytes(archive)
    artifacts.safe_extract(packed, folder)
    packed.unlink()
    return folder


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(b"")), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )


class Requester:
    """Publishes requests (QoS 1, waiting for the broker's PUBACK) on ``topic``."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-req-{os.getpid()}-{topic}"
        )
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(self.topic, data, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Service:
    """``robocar-edge serve ARGV`` (or ``target()``) in a thread until it has answered ``--max-requests``;
    ready once subscribed (its "serving:" log line); ``join`` returns the exit status (or what
    ``target`` returned)."""

    def __init__(self, argv: list[str] | Callable[[], Any]) -> None:
        self.ready = threading.Event()
        self.result: Any = None
        handler = logging.Handler()
        handler.emit = lambda record: record.getMessage().startswith("serving:") and self.ready.set()
        self.logger = logging.getLogger("robocar.edge.serve")
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(handler)
        self.handler = handler
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "the service never subscribed"

    def _run(self, argv: list[str] | Callable[[], Any]) -> None:
        self.result = argv() if callable(argv) else edge_main(["serve", *argv])
        self.ready.set()

    def join(self) -> Any:
        self.thread.join(30)
        self.logger.removeHandler(self.handler)
        return self.result


@pytest.fixture
def classifier_model(tmp_path: Path, good_package: bytes) -> Path:
    return extract(good_package, tmp_path / "classifier")


def topics(name: str) -> tuple[str, str]:
    return f"robocar/{name}/requests", f"robocar/{name}/results"


def serve_args(broker_address: tuple[str, int], model: Path, name: str, *extra: str) -> list[str]:
    host, port = broker_address
    requests, results = topics(name)
    return ["--model", str(model), "--mqtt-host", host, "--mqtt-port", str(port),
            "--request-topic", requests, "--result-topic", results, *extra]  # fmt: skip


def test_a_classifier_answers_requests_by_path_and_by_base64(
    broker,
    classifier_model,
    colour_photos,
    tmp_path,
    capsys,
):
    host, port = broker
    requests, results = topics("car-c")
    subscriber = Subscriber(host, port, results)
    summary_json = tmp_path / "summary.json"
    flags = ["--images-root", str(colour_photos), "--max-requests", "3", "--top-k", "2"]
    service = Service(
        serve_args(broker, classifier_model, "car-c", *flags, "--summary-json", str(summary_json))
    )
    requester = Requester(host, port, requests)
    requester.send({"id": "by-path", "image_path": "01-red.png"})
    requester.send({"id": "by-absolute-path", "image_path": str(colour_photos / "02-green.jpg")})
    requester.send({"id": "by-bytes", "image_b64": base64.b64encode(png(COLOURS["blue"])).decode()})
    received = subscriber.wait_for(3)
    requester.close()
    subscriber.close()
    assert service.join() == 0
    assert [m["id"] for m in received] == ["by-path", "by-absolute-path", "by-bytes"]
    for message, colour in zip(received, ("red", "green", "blue"), strict=True):
        assert set(message) == {"id", "model_version", "latency_ms", "prediction"}
        prediction = message["prediction"]
        assert prediction["task"] == "classification"
        assert prediction["class"] == colour and prediction["probability"] > 0.9
        assert [entry["class"] for entry in prediction["top"]][0] == colour and len(prediction["top"]) == 2
        assert message["model_version"] == "classifier" and message["latency_ms"] > 0
    assert set(subscriber.qos) == {1}
    out = capsys.readouterr().out
    assert f"served 3 requests from {requests}" in out and "3 answered, 0 errors" in out
    assert f"mqtt {results}: 3 sent, 3 acknowledged, 0 failed" in out
    assert json.loads(summary_json.read_text())["answered"] == 3


def test_malformed_requests_get_errors_and_the_next_request_is_answered(
    broker,
    classifier_model,
    colour_photos,
    tmp_path,
):
    host, port = broker
    requests, results = topics("car-m")
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(COLOURS["red"]))
    (colour_photos / "leak.png").symlink_to(outside)
    os.mkfifo(colour_photos / "pipe.png")  # a reader that opened it blocking would wait forever
    cut = io.BytesIO()
    Image.new("RGB", (64, 48), COLOURS["red"]).save(cut, format="JPEG")
    bad = [
        (b"{not json", None, "not JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        ({"image_path": "01-red.png"}, None, "needs an id"),
        ({"id": 7, "image_path": "01-red.png"}, None, "needs an id"),
        ({"id": "none"}, "none", "exactly one of image_path and image_b64"),
        ({"id": "both", "image_path": "01-red.png", "image_b64": "AAAA"}, "both", "exactly one of"),
        ({"id": "extra", "image_path": "01-red.png", "reply": "x"}, "extra", "unknown fields reply"),
        ({"id": "abs", "image_path": str(outside)}, "abs", "outside the images root"),
        ({"id": "dots", "image_path": "../outside.png"}, "dots", "outside the images root"),
        ({"id": "link", "image_path": "leak.png"}, "link", "outside the images root"),
        ({"id": "missing", "image_path": "missing.png"}, "missing", "cannot be read"),
        ({"id": "fifo", "image_path": "pipe.png"}, "fifo", "not a regular file"),
        ({"id": "text", "image_path": "notes.txt"}, "text", "not a readable image"),
        ({"id": "b64", "image_b64": "not base64!"}, "b64", "not valid base64"),
        ({"id": "junk", "image_b64": b64(b"\xff\xd8 truncated")}, "junk", "not a readable image"),
        ({"id": "cut", "image_b64": b64(cut.getvalue()[:300])}, "cut", "not a readable image"),
        ({"id": "big", "image_b64": b64(bytes(5000))}, "big", "the 4096-byte limit"),
        ({"id": "bomb", "image_b64": b64(png_header(9000, 8000))}, "bomb", "9000x8000 image is over the"),
        (json.dumps({"id": "huge", "image_b64": "A" * 20000}).encode(), None, "over the 9560-byte limit"),
    ]  # fmt: skip
    subscriber = Subscriber(host, port, results)
    flags = [
        "--images-root",
        str(colour_photos),
        "--max-image-bytes",
        "4096",
        "--max-requests",
        str(len(bad) + 1),
    ]
    service = Service(serve_args(broker, classifier_model, "car-m", *flags))
    requester = Requester(host, port, requests)
    for payload, _, _ in bad:
        requester.send(payload)
    requester.send({"id": "good", "image_path": "03-blue.png"})
    received = subscriber.wait_for(len(bad) + 1)
    requester.close()
    subscriber.close()
    assert service.join() == 0, "the service ended by --max-requests, not a crash"
    assert len(received) == len(bad) + 1
    for message, (payload, request_id, words) in zip(received, bad, strict=False):
        assert set(message) == {"id", "error"} and message["id"] == request_id, (payload, message)
        assert words in message["error"], (payload, message)
    assert received[-1]["id"] == "good" and received[-1]["prediction"]["class"] == "blue"


def test_paths_are_refused_without_an_images_root(broker, classifier_model, colour_photos):
    host, port = broker
    requests, results = topics("car-r")
    subscriber = Subscriber(host, port, results)
    service = Service(serve_args(broker, classifier_model, "car-r", "--max-requests", "1"))
    requester = Requester(host, port, requests)
    requester.send({"id": "p", "image_path": str(colour_photos / "01-red.png")})
    (received,) = subscriber.wait_for(1)
    requester.close()
    subscriber.close()
    assert service.join() == 0
    assert received["id"] == "p" and "without --images-root" in received["error"]


def camera_frame(brightness: int) -> bytes:
    """A JPEG at the tiny pilot's camera size (its FrameSpec: 160x120)."""
    size = (TINY_FRAME_SPEC["camera_width"], TINY_FRAME_SPEC["camera_height"])
    buffer = io.BytesIO()
    Image.new("RGB", size, (brightness,) * 3).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_a_pilot_answers_and_the_agents_new_model_answers_the_next_request(broker, tmp_path):
    """The car's ``current`` link moves to another package: the next request gets the new model."""
    host, port = broker
    models = tmp_path / "car" / "models"
    first = extract(onnx_pilot_package("first"), models / "v1-aaaaaaaaaaaa")
    second = extract(onnx_pilot_package("second", angle_bias=0.25), models / "v2-bbbbbbbbbbbb")
    current = tmp_path / "car" / "current"
    current.symlink_to(first)
    requests, results = topics("car-p")
    subscriber = Subscriber(host, port, results)
    service = Service(
        ["--root", str(tmp_path / "car"), "--no-pull", "--local-root", str(tmp_path / "workspace"),
         *serve_args(broker, current, "car-p", "--max-requests", "3")[2:]]
    )  # fmt: skip
    requester = Requester(host, port, requests)
    frame = camera_frame(200)
    requester.send({"id": "one", "image_b64": base64.b64encode(frame).decode()})
    (one,) = subscriber.wait_for(1)
    replacement = tmp_path / "car" / "current.new"
    replacement.symlink_to(second)
    os.replace(replacement, current)  # how the agent swaps models (Agent._swap)
    time.sleep(1.2)  # LivePilot looks at the link once a second
    requester.send({"id": "two", "image_b64": base64.b64encode(frame).decode()})
    requester.send({"id": "small", "image_b64": base64.b64encode(png((1, 2, 3))).decode()})
    received = subscriber.wait_for(3)
    requester.close()
    subscriber.close()
    assert service.join() == 0
    image = frames.decode_image(frame)
    for message, folder, version in (
        (one, first, "v1-aaaaaaaaaaaa"),
        (received[1], second, "v2-bbbbbbbbbbbb"),
    ):
        angle, throttle = drive.open_pilot(folder)(image)  # what the drive loop answers for this frame
        prediction = message["prediction"]
        assert message["model_version"] == version and prediction["task"] == "pilot"
        assert (prediction["angle"], prediction["throttle"]) == pytest.approx((angle, throttle))
    assert received[1]["prediction"]["angle"] == pytest.approx(one["prediction"]["angle"] + 0.25, abs=1e-5)
    assert received[2]["id"] == "small" and "expected a 160x120 frame, got 16x12" in received[2]["error"]


def test_sigterm_ends_the_service_with_its_summary(broker, classifier_model, tmp_path):
    host, port = broker
    requests, results = topics("car-s")
    subscriber = Subscriber(host, port, results)
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", *serve_args(broker, classifier_model, "car-s")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        for line in process.stderr:  # the "serving:" line comes once subscribed
            if "serving: requests on" in line:
                break
        requester = Requester(host, port, requests)
        requester.send({"id": "one", "image_b64": base64.b64encode(png(COLOURS["green"])).decode()})
        (answer,) = subscriber.wait_for(1)
        requester.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        subscriber.close()
    assert answer["prediction"]["class"] == "green"
    assert process.returncode == 0, err
    assert f"served 1 requests from {requests}" in out and "1 answered, 0 errors" in out


def test_bad_topics_and_no_broker_are_refused_in_one_line(classifier_model, capsys):
    assert edge_main(["serve", "--model", str(classifier_model)]) == 2
    assert "--mqtt-host (or ROBOCAR_MQTT_HOST) is required" in capsys.readouterr().err
    base = ["serve", "--model", str(classifier_model), "--mqtt-host", "127.0.0.1"]
    assert edge_main([*base, "--result-topic", "robocar/+/results"]) == 2
    assert "'+' and '#' are wildcards" in capsys.readouterr().err
    assert edge_main([*base, "--request-topic", "robocar/#/requests"]) == 2
    assert "'#' can only be the last level" in capsys.readouterr().err
    assert edge_main([*base, "--request-topic", "robocar/car+/requests"]) == 2
    assert "a wildcard must be a whole level" in capsys.readouterr().err
    with pytest.raises(serve.ServeError, match="65536 bytes of UTF-8, over MQTT's 65535"):
        serve.check_topic_name("é" * 32768)
    assert serve.check_topic_name("x" * 65535) and serve.check_topic_filter("robocar/+/requests")
    assert serve.topics(None, None, "car7") == ("robocar/car7/requests", "robocar/car7/results")


# ---- the Greengrass component -----------------------------------------------------------------------------
def test_the_serve_component_is_rendered_by_the_component_command(package, greengrass, capsys):
    arn, _ = package
    assert run_cli("--model-package-arn", arn, "--kind", "serve", "--dry-run") == 0  # no Greengrass call
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["ComponentName"] == "com.robocar.InferenceService" and recipe["ComponentVersion"] == "1.0.1"
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert artifact == {"URI": f"s3://{BUCKET}/compiled/rasp4b/model.tar.gz", "Unarchive": "NONE",
                        "Permission": {"Read": "OWNER"}}  # fmt: skip
    assert component.version_configuration(recipe) == {
        "ModelPackageGroup": GROUP, "ModelPackageArn": arn, "Target": TARGET,
        "ArtifactSha256": hashlib.sha256(ARCHIVE).hexdigest(),
    }  # fmt: skip
    script = recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    assert '--sha256 "{configuration:/ArtifactSha256}"' in script and script.endswith(
        "exec robocar-edge serve"
    )
    assert recipe["ComponentDependencies"] == {
        "aws.greengrass.TokenExchangeService": {"VersionRequirement": "^2.0.0", "DependencyType": "HARD"}
    }
    assert "Digest" not in json.dumps(recipe) and "Algorithm" not in json.dumps(recipe)
    request = component.component_request(recipe, arn)
    assert request_problems("greengrassv2", "CreateComponentVersion", request) == []

    wheel = f"s3://{BUCKET}/code/robocar_pipeline-0.1.0-py3-none-any.whl"
    assert run_cli("--model-package-arn", arn, "--kind", "serve", "--dry-run", "--code-uri", wheel) == 0
    script = json.loads(capsys.readouterr().out)["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    assert script.endswith('exec "{work:path}/venv/bin/robocar-edge" serve'), "the component's own venv"


def test_the_serve_recipe_environment_is_what_serve_reads(monkeypatch):
    template = yaml.safe_load(component.COMPONENT_KINDS["serve"][0].read_text())
    setenv = template["Manifests"][0]["Lifecycle"]["Setenv"]
    expected = {
        "ROBOCAR_EDGE_ROOT": ("edge_root", "/gg/car"),
        "ROBOCAR_MODEL_PACKAGE_GROUP": ("model_package_group", "g-from-env"),
        "ROBOCAR_EDGE_TARGET": ("edge_target", "jetson_nano"),
        "ROBOCAR_EDGE_INTERVAL": ("edge_interval", "42.0"),
        "ROBOCAR_REGION": ("region", "eu-west-1"),
        "ROBOCAR_EDGE_PREFER": ("edge_prefer", "int8"),
        "ROBOCAR_CAR_ID": ("car_id", "thing-7"),
        "ROBOCAR_MQTT_HOST": ("mqtt_host", "broker.local"),
        "ROBOCAR_MQTT_PORT": ("mqtt_port", "8883"),
        "ROBOCAR_SERVE_REQUEST_TOPIC": ("serve_request_topic", "fleet/+/requests"),
        "ROBOCAR_SERVE_RESULT_TOPIC": ("serve_result_topic", "fleet/results"),
        "ROBOCAR_SERVE_IMAGES_ROOT": ("serve_images_root", "/gg/photos"),
    }
    assert setenv.pop("ROBOCAR_EDGE_REGISTRY") == "aws"
    assert set(setenv) == set(expected)
    assert setenv["ROBOCAR_CAR_ID"] == "{iot:thingName}"  # the core device's thing name
    for name, (_, value) in expected.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve"])
    resolve_settings(args)
    for name, (attribute, value) in expected.items():
        assert str(getattr(args, attribute)) == value, name
    config = template["ComponentConfiguration"]["DefaultConfiguration"]
    for value in setenv.values():
        if value.startswith("{configuration:/"):
            assert value.removeprefix("{configuration:/").removesuffix("}") in config
    # an empty configuration value is an unset setting: the car's default topics, paths refused
    for name in ("ROBOCAR_SERVE_REQUEST_TOPIC", "ROBOCAR_SERVE_RESULT_TOPIC", "ROBOCAR_SERVE_IMAGES_ROOT"):
        monkeypatch.setenv(name, "")
    args = build_parser().parse_args(["serve"])
    resolve_settings(args)
    assert (args.serve_request_topic, args.serve_result_topic, args.serve_images_root) == (None, None, None)


def test_the_request_limits_follow_the_image_limit() -> None:
    limits = serve.RequestLimits(max_image_bytes=3000)
    assert limits.max_payload_bytes == 4000 + serve.ENVELOPE_BYTES
    image = png(COLOURS["red"])
    assert serve.decode_base64(base64.b64encode(image).decode(), limits) == image
    with pytest.raises(serve.RequestError, match="not valid base64"):
        serve.decode_base64("QUJD\nRA==", limits)  # a newline is not base64's alphabet (RFC 4648 section 3.3)
    assert np.asarray(Image.open(io.BytesIO(image))).shape == (12, 16, 3)


class SlowPilot:
    """A pilot that answers (0.5, 0.25) once ``release`` is set; ``started`` says it has a request."""

    description = "a pilot that waits"

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, image: np.ndarray) -> tuple[float, float]:
        self.started.set()
        assert self.release.wait(30)
        return 0.5, 0.25


class SlowLive:
    """LivePilot's interface over a SlowPilot that never changes."""

    def __init__(self) -> None:
        self.infer, self.names_used = SlowPilot(), ["v9-slow"]

    def refresh(self) -> None:
        pass


def test_a_burst_beyond_the_queue_is_answered_busy_and_the_queue_still_served(broker):
    """While the model works on one request, QUEUE_SIZE more wait and the next is refused at once."""
    host, port = broker
    requests, results = topics("car-b")
    live = SlowLive()
    started, release = live.infer.started, live.infer.release
    inference = serve.InferenceService(live, serve.RequestLimits())  # type: ignore[arg-type]
    total = 1 + serve.QUEUE_SIZE + 1
    config = drive.MqttConfig(host=host, port=port, topic=results)
    subscriber = Subscriber(host, port, results)
    service = Service(lambda: serve.serve(inference, config, requests, max_requests=total))
    requester = Requester(host, port, requests)
    frame = b64(camera_frame(10))
    requester.send({"id": "first", "image_b64": frame})
    assert started.wait(10), "the first request never reached the model"
    for index in range(serve.QUEUE_SIZE):  # the broker delivers in order: these fill the queue
        requester.send({"id": f"r{index}", "image_b64": frame})
    requester.send({"id": "over", "image_b64": frame})
    (busy,) = subscriber.wait_for(1)
    release.set()
    summary = service.join()
    received = subscriber.wait_for(total)
    requester.close()
    subscriber.close()
    assert busy == {"id": "over", "error": f"busy: {serve.QUEUE_SIZE} requests are waiting, try again"}
    assert [m["id"] for m in received[1:]] == ["first", *(f"r{i}" for i in range(serve.QUEUE_SIZE))]
    assert all(m["prediction"] == {"task": "pilot", "angle": 0.5, "throttle": 0.25} for m in received[1:])
    assert (summary.requests, summary.answered, summary.errors, summary.busy) == (total, total - 1, 1, 1)


def test_the_car_serves_without_the_sdk_boto3_or_tensorflow(broker, classifier_model):
    """``robocar-edge serve`` in an interpreter where the control plane's heavy packages cannot be
    imported (test_edge_lean), answering one request from the broker."""
    host, port = broker
    requests, results = topics("car-lean")
    subscriber = Subscriber(host, port, results)
    outcome: dict[str, Any] = {}
    argv = serve_args(broker, classifier_model, "car-lean", "--max-requests", "1")
    thread = threading.Thread(target=lambda: outcome.update(run=run_on_the_car("edge.cli", "serve", *argv)))
    thread.start()
    requester = Requester(host, port, requests)
    while thread.is_alive() and not subscriber.messages:  # requests before it subscribes are not kept
        requester.send({"id": "lean", "image_b64": b64(png(COLOURS["red"]))})
        thread.join(0.5)
    thread.join(60)
    requester.close()
    subscriber.close()
    ran = outcome["run"]
    assert ran.returncode == 0, ran.stderr
    assert subscriber.messages[0]["prediction"]["class"] == "red"
    assert "served 1 requests" in ran.stdout and "HEAVY-MODULES=\n" in ran.stderr + "\n"


def test_requests_waiting_at_sigterm_are_answered_with_an_error(broker):
    host, port = broker
    requests, results = topics("car-t")
    live = SlowLive()
    inference = serve.InferenceService(live, serve.RequestLimits())  # type: ignore[arg-type]
    config = drive.MqttConfig(host=host, port=port, topic=results)
    stop = threading.Event()
    subscriber = Subscriber(host, port, results)
    service = Service(lambda: serve.serve(inference, config, requests, stop=stop.is_set))
    requester = Requester(host, port, requests)
    frame = b64(camera_frame(10))
    requester.send({"id": "first", "image_b64": frame})
    assert live.infer.started.wait(10)
    for index in range(3):
        requester.send({"id": f"w{index}", "image_b64": frame})
    deadline = time.monotonic() + 10
    while inference.waiting.qsize() < 3 and time.monotonic() < deadline:  # delivered to the service
        time.sleep(0.01)
    stop.set()  # what SIGTERM does (edge.cli._stop_on_signals)
    live.infer.release.set()
    summary = service.join()
    received = subscriber.wait_for(4)
    requester.close()
    subscriber.close()
    assert received[0]["id"] == "first" and "prediction" in received[0]
    assert received[1:] == [
        {"id": f"w{index}", "error": "the service stopped before answering; send it again"}
        for index in range(3)
    ]
    assert (summary.requests, summary.answered, summary.errors) == (4, 1, 3)


@contextlib.contextmanager
def mosquitto(port: int, folder: Path) -> Iterator[None]:
    """A broker of this test's own on 127.0.0.1:``port`` (the session's is shared, so not stopped)."""
    config = folder / f"mosquitto-{port}.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([_mosquitto_binary(), "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)


def answered_after_retries(
    requester_of: Callable[[], Requester], subscriber: Subscriber, request_id: str
) -> bool:
    """Send the request until its answer comes (requests sent while the service is away are lost)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        requester = requester_of()
        requester.send({"id": request_id, "image_b64": b64(png(COLOURS["blue"]))})
        requester.close()
        if any(m.get("id") == request_id for m in subscriber.wait_for(len(subscriber.messages) + 1, 2.0)):
            return True
    return False


def test_the_service_subscribes_again_when_the_broker_comes_back(classifier_model, tmp_path):
    port = _free_port()
    requests, results = topics("car-x")
    live = drive.LivePilot(classifier_model, serve.model_opener())
    config = drive.MqttConfig(host="127.0.0.1", port=port, topic=results)
    stop = threading.Event()

    def requester() -> Requester:
        return Requester("127.0.0.1", port, requests)

    with mosquitto(port, tmp_path):
        inference = serve.InferenceService(live, serve.RequestLimits())
        service = Service(lambda: serve.serve(inference, config, requests, stop=stop.is_set))
        subscriber = Subscriber("127.0.0.1", port, results)
        assert answered_after_retries(requester, subscriber, "before")
        subscriber.close()
    with mosquitto(port, tmp_path):  # a new broker: no session, no subscription until the service's
        subscriber = Subscriber("127.0.0.1", port, results)
        assert answered_after_retries(requester, subscriber, "after")
        subscriber.close()
        stop.set()
        summary = service.join()
    assert summary.answered >= 2 and summary.errors == 0
