"""MQTT: the drive loop publishes to a REAL Mosquitto on loopback, and a subscriber receives every command.

The broker (system-packages.txt, installed by ``make system``, which ``make test`` runs) is started on a
free 127.0.0.1 port with a generated config, and stopped after the session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edge_fixtures import SAMPLE_TUBS, onnx_pilot_package

from edge import artifacts, drive, sources
from edge.cli import main as edge_main

TUB_V2 = SAMPLE_TUBS / "tub_v2"


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("mosquitto is not installed: run `make system` (system-packages.txt lists it)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A Mosquitto on 127.0.0.1:<free port>; yields (host, port)."""
    binary = _mosquitto_binary()
    port = _free_port()
    folder = tmp_path_factory.mktemp("mosquitto")
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    log = open(folder / "mosquitto.log", "w")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail(f"mosquitto did not start: {(folder / 'mosquitto.log').read_text()[-2000:]}")
            time.sleep(0.05)
    yield "127.0.0.1", port
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


class Subscriber:
    """Collects the JSON payloads published on ``topic``; ready once the broker acknowledged SUBSCRIBE."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[dict] = []
        self.qos: list[int] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{topic}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber never got SUBACK"

    def _on_message(self, client, userdata, message) -> None:
        self.qos.append(message.qos)
        self.messages.append(json.loads(message.payload))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def model(tmp_path) -> Path:
    archive = tmp_path / "pkg.tar.gz"
    archive.write_bytes(onnx_pilot_package("mqtt"))
    artifacts.safe_extract(archive, tmp_path / "model")
    return tmp_path / "model"


def test_drive_loop_publishes_every_command_with_qos1(broker, model):
    host, port = broker
    subscriber = Subscriber(host, port, "robocar/test/loop")
    publisher = drive.MqttPublisher(drive.MqttConfig(host=host, port=port, topic="robocar/test/loop"))
    summary = drive.drive(sources.TubSource(TUB_V2), drive.LivePilot(model, drive.open_pilot), [publisher])
    publisher.close()
    received = subscriber.wait_for(summary.frames)
    subscriber.close()
    assert summary.frames == 48
    assert [m["frame"] for m in received] == list(range(48))
    assert set(subscriber.qos) == {1}
    assert publisher.sent == publisher.acknowledged == 48
    assert {"angle", "throttle", "latency_ms", "model", "origin"} <= set(received[0])


def test_cli_run_publishes_to_the_configured_topic(broker, model, tmp_path, capsys):
    host, port = broker
    subscriber = Subscriber(host, port, "car7/pilot")
    code = edge_main(
        ["run", "--model", str(model), "--source", str(TUB_V2), "--max-frames", "5", "--quiet",
         "--mqtt-host", host, "--mqtt-port", str(port), "--mqtt-topic", "car7/pilot"]
    )  # fmt: skip
    received = subscriber.wait_for(5)
    subscriber.close()
    assert code == 0
    assert len(received) == 5
    assert "5 sent, 5 acknowledged" in capsys.readouterr().out


def test_unreachable_broker_is_a_clear_error(model, capsys):
    code = edge_main(
        ["run", "--model", str(model), "--source", str(TUB_V2), "--quiet",
         "--mqtt-host", "127.0.0.1", "--mqtt-port", str(_free_port())]
    )  # fmt: skip
    assert code == 2
    assert "cannot reach the MQTT broker at 127.0.0.1" in capsys.readouterr().err
