"""Live telemetry: while the car drives, a record of its values (and optionally a small camera frame) is
published over MQTT at a fixed rate, as the original workload did through AWS IoT.

A record is one JSON object: ``car``, ``time`` (Unix seconds), ``frame`` (the drive's frame number),
``angle``, ``throttle``, ``mode`` (donkeycar's drive mode: ``local`` when the pilot steers and throttles),
``model`` and ``latency_ms``; with ``--telemetry-frame`` also ``image``: the camera frame downscaled to
``frame_width`` pixels wide, JPEG, base64. Published on ``robocar/telemetry/<car-id>``, where the stack's
IoT rule (``infra/template.yaml``, ``TelemetryToS3``) lands each one in S3; docs/telemetry.md has the
sizes and rates.

Limits (AWS IoT Core quotas, https://docs.aws.amazon.com/general/latest/gr/iot-core.html): a message is at
most 128 KB, so a record whose frame would make it larger goes without the frame (counted); a connection
publishes at most 100 messages per second, which is why the rate is capped here and the commands (one
per frame, ``MqttPublisher``) are for a local broker.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from edge.sources import Frame, FrameSource

IOT_MAX_PAYLOAD_BYTES = 128 * 1024  # iot-core.html: "Message size: 128 KB"
IOT_MAX_PUBLISH_PER_S = 100  # iot-core.html: publish requests per second per connection
DEFAULT_RATE_HZ = 2.0
DEFAULT_FRAME_WIDTH = 80  # half of donkeycar's 160x120 camera: about 2 KB of JPEG
DEFAULT_JPEG_QUALITY = 75
TOPIC_PREFIX = "robocar/telemetry"  # the IoT rule selects robocar/telemetry/+ (infra/template.yaml)
DRIVE_MODE = "local"  # donkeycar's modes: user, local_angle, local (the pilot drives)


class TelemetryError(ValueError):
    """A telemetry setting out of range: one line, exit status 2."""


def topic_for(car_id: str) -> str:
    return f"{TOPIC_PREFIX}/{car_id}"


class RateLimiter:
    """At most ``rate_hz`` events per second: ``ready()`` says whether one may go now (and counts it)."""

    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < rate_hz <= IOT_MAX_PUBLISH_PER_S:
            raise TelemetryError(
                f"--telemetry-rate must be in (0, {IOT_MAX_PUBLISH_PER_S}] Hz, got {rate_hz}"
            )
        self.period = 1.0 / rate_hz
        self.clock = clock
        self.next_at: float | None = None

    def ready(self) -> bool:
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            return False
        behind = self.next_at is None or now - self.next_at > self.period
        # on schedule (no drift from frame jitter); after a stall, start again from now instead of
        # catching up with a burst
        self.next_at = now + self.period if behind else self.next_at + self.period
        return True


class FrameTap:
    """A frame source that remembers the frame it handed out last, so telemetry can send the frame a
    command was computed from (the drive loop applies a frame's command before reading the next)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.description = source.description
        self.latest: np.ndarray | None = None

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.source:
            self.latest = frame.image
            yield frame

    def close(self) -> None:
        self.source.close()


def encode_frame(
    image: np.ndarray, width: int = DEFAULT_FRAME_WIDTH, quality: int = DEFAULT_JPEG_QUALITY
) -> bytes:
    """The frame as a JPEG ``width`` pixels wide (aspect ratio kept; never enlarged)."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if picture.width > width:
        height = max(1, round(picture.height * width / picture.width))
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def telemetry_record(command: Any, car_id: str, jpeg: bytes | None = None) -> dict[str, Any]:
    record = {
        "car": car_id,
        "time": round(float(command.time), 3),
        "frame": int(command.frame),
        "angle": round(float(command.angle), 4),
        "throttle": round(float(command.throttle), 4),
        "mode": DRIVE_MODE,
        "model": command.model,
        "latency_ms": round(float(command.latency_ms), 3),
    }
    if jpeg is not None:
        record["image"] = base64.b64encode(jpeg).decode("ascii")
    return record


def payload_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


@dataclass
class TelemetryCounts:
    published: int = 0
    skipped: int = 0  # commands between two records (the rate)
    frames_dropped: int = 0  # records sent without their frame: it would have passed 128 KB
    refused: int = 0  # the MQTT client's queue was full


class TelemetryPublisher:
    """An output of the drive loop (``apply``/``close``, like the actuators): every command is offered, at
    most ``rate_hz`` per second become a record on ``topic`` through ``publish(topic, payload)``."""

    def __init__(
        self,
        publish: Callable[[str, bytes], bool],
        topic: str,
        car_id: str,
        *,
        rate_hz: float = DEFAULT_RATE_HZ,
        tap: FrameTap | None = None,
        frame_width: int = DEFAULT_FRAME_WIDTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if frame_width < 8:
            raise TelemetryError(f"--telemetry-frame-width must be at least 8 pixels, got {frame_width}")
        self.publish = publish
        self.topic = topic
        self.car_id = car_id
        self.limiter = RateLimiter(rate_hz, clock)
        self.tap = tap
        self.frame_width = frame_width
        self.counts = TelemetryCounts()

    def apply(self, command: Any) -> None:
        if not self.limiter.ready():
            self.counts.skipped += 1
            return
        jpeg = None
        if self.tap is not None and self.tap.latest is not None:
            jpeg = encode_frame(self.tap.latest, self.frame_width)
        payload = payload_bytes(telemetry_record(command, self.car_id, jpeg))
        if len(payload) > IOT_MAX_PAYLOAD_BYTES:
            self.counts.frames_dropped += 1
            payload = payload_bytes(telemetry_record(command, self.car_id))
        if self.publish(self.topic, payload):
            self.counts.published += 1
        else:
            self.counts.refused += 1

    def close(self) -> None:
        """Nothing of its own to close: the MQTT connection belongs to ``MqttPublisher``."""

    def summary(self) -> str:
        c = self.counts
        return (
            f"telemetry {self.topic}: {c.published} record(s) published, {c.skipped} command(s) between "
            f"records, {c.frames_dropped} without their frame (over 128 KB), {c.refused} refused"
        )
