"""Live telemetry: rate-limited records (values, optionally a small frame) over MQTT, under IoT's 128 KB,
and the stack's IoT rule that lands them in S3 with a role that can write only there."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_edge_mqtt import TUB_V2, Subscriber, broker, model  # noqa: F401 (fixtures)
from test_infra import allowed_pairs, granted, refused

from edge import telemetry
from edge.cli import main as edge_main
from edge.drive import Command
from pipelines import infra


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def command(frame: int, now: float) -> Command:
    return Command(frame, f"f{frame}", 0.25, 0.5, 1.5, "model-7", now)


def test_records_go_out_at_the_configured_rate_whatever_the_frame_rate() -> None:
    clock, sent = FakeClock(), []
    publisher = telemetry.TelemetryPublisher(
        lambda topic, payload: sent.append((topic, json.loads(payload))) or True,
        "robocar/telemetry/car-1", "car-1", rate_hz=2.0, clock=clock,
    )  # fmt: skip
    for frame in range(30):  # 20 fps for 1.5 s
        clock.now = 50.0 + frame * 0.05
        publisher.apply(command(frame, clock.now))
    assert [record["frame"] for _, record in sent] == [0, 10, 20]
    assert publisher.counts.published == 3 and publisher.counts.skipped == 27
    topic, record = sent[0]
    assert topic == "robocar/telemetry/car-1"
    assert record == {"car": "car-1", "time": 50.0, "frame": 0, "angle": 0.25, "throttle": 0.5,
                      "mode": "local", "model": "model-7", "latency_ms": 1.5}  # fmt: skip
    clock.now += 10  # a stall: one record now, then the rate again (no burst to catch up)
    for frame in range(30, 34):
        publisher.apply(command(frame, clock.now))
        clock.now += 0.05
    assert [record["frame"] for _, record in sent][3:] == [30]


def test_the_frame_is_downscaled_and_a_record_never_passes_128_kb() -> None:
    rng = np.random.default_rng(0)
    camera = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    jpeg = telemetry.encode_frame(camera)
    assert Image.open(io.BytesIO(jpeg)).size == (80, 60)

    class Source:
        description = "test"

        def __init__(self, images: list[np.ndarray]) -> None:
            self.images = images

        def __iter__(self) -> Any:
            from edge.sources import Frame

            return iter(Frame(image, i, f"f{i}") for i, image in enumerate(self.images))

        def close(self) -> None:
            pass

    huge = rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)  # noise does not compress
    sent: list[bytes] = []
    tap = telemetry.FrameTap(Source([camera, huge]))
    clock = FakeClock()
    publisher = telemetry.TelemetryPublisher(
        lambda topic, payload: sent.append(payload) or True, "t", "car-1", rate_hz=100, tap=tap,
        frame_width=1600, clock=clock,
    )  # fmt: skip
    for frame in tap:
        clock.now += 1
        publisher.apply(command(frame.index, clock.now))
    small, big = (json.loads(payload) for payload in sent)
    assert Image.open(io.BytesIO(base64.b64decode(small["image"]))).size == (160, 120)
    assert "image" not in big and publisher.counts.frames_dropped == 1  # a 1600 px noise frame is ~3 MB
    assert max(len(payload) for payload in sent) <= telemetry.IOT_MAX_PAYLOAD_BYTES
    with pytest.raises(telemetry.TelemetryError):
        telemetry.RateLimiter(101)  # over IoT Core's 100 publishes per second per connection


def test_cli_run_publishes_telemetry_with_frames_next_to_the_commands(broker, model, capsys) -> None:  # noqa: F811
    host, port = broker
    commands = Subscriber(host, port, "car9/pilot")
    records = Subscriber(host, port, "robocar/telemetry/car-9")
    code = edge_main(
        ["run", "--model", str(model), "--source", str(TUB_V2), "--max-frames", "5", "--quiet",
         "--mqtt-host", host, "--mqtt-port", str(port), "--mqtt-topic", "car9/pilot",
         "--telemetry-rate", "100", "--telemetry-frame", "--car-id", "car-9", "--rate", "50"]
    )  # fmt: skip
    received = records.wait_for(1)
    commands.wait_for(5)
    records.close()
    commands.close()
    assert code == 0
    out = capsys.readouterr().out
    assert "car9/pilot: 5 sent, 5 acknowledged" in out  # the commands are counted apart from telemetry
    assert len(commands.messages) == 5 and 1 <= len(received) <= 5
    first = received[0]
    assert {"angle", "throttle", "mode", "image"} <= set(first) and first["car"] == "car-9"
    assert Image.open(io.BytesIO(base64.b64decode(first["image"]))).width == 80


# ---------------------------------------------------------------- the IoT rule in the stack
def test_the_iot_rule_lands_telemetry_under_the_prefix_with_a_role_that_writes_only_there() -> None:
    template = infra.load_template()
    resources = template["Resources"]
    rule = resources["TelemetryToS3"]["Properties"]["TopicRulePayload"]
    assert rule["Sql"] == f"SELECT * FROM '{telemetry.TOPIC_PREFIX}/+'"
    assert rule["RuleDisabled"] is False and rule["AwsIotSqlVersion"] == "2016-03-23"
    (action,) = rule["Actions"]
    assert action["S3"]["BucketName"] == {"Ref": "DataBucket"}
    assert action["S3"]["Key"]["Fn::Sub"].startswith("${Prefix}/telemetry/${!topic(3)}/")

    role = resources["TelemetryRuleRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "iot.amazonaws.com"}
    context = infra.render_context(template, {"Prefix": "fleet/a"})
    statements = infra.resolve(
        [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]], context
    )
    pairs = allowed_pairs(statements)
    bucket = context.ref("DataBucket")
    writes = [("s3:PutObject", f"arn:aws:s3:::{bucket}/fleet/a/telemetry/car-1/1767312000000-x.json")]
    assert refused(pairs, writes) == []
    forbidden = [
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/fleet/a/raw/car-1/{'a' * 64}.tar.gz"),  # would start a run
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/fleet/a/edge/e/compiled/rasp4b/model.tar.gz"),
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/fleet/a/telemetry/car-1/x.json"),
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/robocar/telemetry/car-1/x.json"),  # another stack's prefix
    ]
    assert granted(pairs, forbidden) == []
