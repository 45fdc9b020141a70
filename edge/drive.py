"""The drive loop: frames -> the pilot -> angle/throttle to the actuators, JSON lines and MQTT.

``drive`` is the loop; what it reads from (``edge.sources``), what it drives (``Actuator``s) and which
model it drives with (``LivePilot``, which follows the agent's ``current`` link so a newly approved model
takes over between two frames) are passed in. Latency is measured from the camera frame to the command
(preprocess + inference + decode), per frame; the summary gives fps and latency percentiles.

A frame the pilot cannot answer (a bad frame, an inference error, a NaN or infinite command) never
reaches an output: it is skipped and counted, and every actuator that moves the car goes to neutral
(centred steering, motor stopped) until a good command comes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from edge import frames
from edge.settings import default_of
from edge.sources import Frame, FrameSource

log = logging.getLogger("robocar.edge.drive")


class DriveError(Exception):
    """A drive that cannot start (no model, broker unreachable); printed without a traceback."""


class PreprocessingMismatch(DriveError):
    """A package whose preprocessing this car's edge/frames.py does not reproduce: update the car."""


@dataclass(frozen=True)
class Command:
    """What the pilot decided for one frame."""

    frame: int
    origin: str
    angle: float
    throttle: float
    latency_ms: float
    model: str
    time: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class Actuator(Protocol):
    """Anything that takes the pilot's commands: motors, a log, a message bus.

    One that moves the car also has ``neutral()`` (steering centred, motor stopped), which the drive
    loop calls for a frame it skips.
    """

    def apply(self, command: Command) -> None: ...

    def close(self) -> None: ...


def to_neutral(outputs: Iterable[Actuator]) -> None:
    """Put every output that moves the car in neutral; logs and buses (no ``neutral``) get nothing."""
    for output in outputs:
        neutral = getattr(output, "neutral", None)
        if neutral is not None:
            neutral()


# ---- actuators ---------------------------------------------------------------------------------------
def map_range(x: float, x_min: float, x_max: float, y_min: int, y_max: int) -> int:
    """donkeycar.utils.map_range: linear map of ``x`` from one range to an integer in another."""
    return int(round((x - x_min) * (y_max - y_min) / (x_max - x_min) + y_min))


@dataclass(frozen=True)
class PwmCalibration:
    """PCA9685 12-bit pulse lengths; the defaults are donkeycar's ``cfg`` defaults (calibrate per car)."""

    steering_left: int = 460
    steering_right: int = 290
    throttle_forward: int = 500
    throttle_stopped: int = 370
    throttle_reverse: int = 220
    steering_channel: int = 1
    throttle_channel: int = 0


class PCA9685Actuator:
    """Steering servo and ESC on a PCA9685, mapped like donkeycar's PWMSteering/PWMThrottle.

    ``set_pwm(channel, pulse)`` writes one channel; the default records pulses in ``self.pulses`` (a stub
    for benches and tests). On a car pass e.g. ``lambda ch, p: pca.channels[ch].duty_cycle = ...``.
    Closing stops the motor and centres the steering, so an ended drive never leaves the car running.
    """

    def __init__(
        self,
        set_pwm: Callable[[int, int], None] | None = None,
        calibration: PwmCalibration = PwmCalibration(),
    ) -> None:
        self.calibration = calibration
        self.pulses: dict[int, int] = {}
        self._set_pwm = set_pwm or self.pulses.__setitem__

    def pulses_for(self, angle: float, throttle: float) -> tuple[int, int]:
        c = self.calibration
        steering = map_range(angle, -1.0, 1.0, c.steering_left, c.steering_right)
        if throttle > 0:
            motor = map_range(throttle, 0.0, 1.0, c.throttle_stopped, c.throttle_forward)
        else:
            motor = map_range(throttle, -1.0, 0.0, c.throttle_reverse, c.throttle_stopped)
        return steering, motor

    def apply(self, command: Command) -> None:
        """Drive the servo and the ESC; a non-finite command stops the car, one outside [-1, 1] is
        clamped (a pulse beyond the calibration would push the servo against its end stop)."""
        if not (math.isfinite(command.angle) and math.isfinite(command.throttle)):
            self.neutral()
            return
        angle, throttle = (min(1.0, max(-1.0, v)) for v in (command.angle, command.throttle))
        steering, motor = self.pulses_for(angle, throttle)
        self._set_pwm(self.calibration.steering_channel, steering)
        self._set_pwm(self.calibration.throttle_channel, motor)

    def neutral(self) -> None:
        """Motor stopped first, then steering centred."""
        steering, motor = self.pulses_for(0.0, 0.0)
        self._set_pwm(self.calibration.throttle_channel, motor)
        self._set_pwm(self.calibration.steering_channel, steering)

    def close(self) -> None:
        self.neutral()


class JsonLinesWriter:
    """One JSON object per command, to a file (appended) or ``-`` for standard output."""

    def __init__(self, destination: str) -> None:
        self.stream: IO[str] = sys.stdout if destination == "-" else open(destination, "a", encoding="utf-8")  # noqa: SIM115
        self.owned = destination != "-"

    def apply(self, command: Command) -> None:
        self.stream.write(command.to_json() + "\n")

    def close(self) -> None:
        self.stream.flush()
        if self.owned:
            self.stream.close()


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = int(default_of("mqtt_port"))  # the one definition: edge/settings.py
    topic: str = default_of("mqtt_topic")
    client_id: str = ""
    qos: int = 1
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    connect_timeout_s: float = 10.0


class MqttPublisher:
    """Publishes every command as JSON to ``topic`` (QoS 1) with paho-mqtt 2.x.

    A broker that goes away mid-drive does not stop the car: paho reconnects in its network thread and
    queues up to ``max_queued`` messages meanwhile; the summary reports how many were acknowledged.
    """

    max_queued = 1000

    def __init__(self, config: MqttConfig) -> None:
        import paho.mqtt.client as mqtt

        self.config = config
        self.sent = 0
        self.failed = 0
        self.telemetry_sent = 0  # edge/telemetry.py's records share the connection, counted apart
        self._acknowledged_total = 0  # every PUBACK, commands and telemetry
        self._telemetry_in_flight: deque[Any] = deque()  # bounded by paho's max_queued
        self._telemetry_acknowledged = 0
        self._pending: deque[Any] = deque(maxlen=self.max_queued)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or f"robocar-{os.getpid()}"
        )
        client.max_queued_messages_set(self.max_queued)
        client.reconnect_delay_set(1, 30)
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.ca_certs or config.certfile:
            client.tls_set(ca_certs=config.ca_certs, certfile=config.certfile, keyfile=config.keyfile)
        client.on_publish = self._on_publish
        client.on_connect = self._on_connect
        self.client = client
        self._connected = False
        try:
            client.connect(config.host, config.port, keepalive=30)
        except OSError as exc:
            raise DriveError(f"cannot reach the MQTT broker at {config.host}:{config.port}: {exc}") from exc
        client.loop_start()
        deadline = time.monotonic() + config.connect_timeout_s
        while not self._connected and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._connected:
            client.loop_stop()
            raise DriveError(f"the MQTT broker at {config.host}:{config.port} did not accept the connection")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason_code)
        else:
            self._connected = True

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acknowledged_total += 1

    def _collect_telemetry_acks(self) -> None:
        """Count the telemetry messages acknowledged so far from their paho message infos, rather than
        classifying PUBACKs in the callback: that needs a lock held across ``client.publish``, which
        deadlocks against paho's network thread."""
        while self._telemetry_in_flight and self._telemetry_in_flight[0].is_published():
            self._telemetry_in_flight.popleft()
            self._telemetry_acknowledged += 1

    @property
    def telemetry_acknowledged(self) -> int:
        self._collect_telemetry_acks()
        return self._telemetry_acknowledged

    @property
    def acknowledged(self) -> int:
        return self._acknowledged_total - self.telemetry_acknowledged

    def apply(self, command: Command) -> None:
        self.publish(self.config.topic, command.to_json())

    def publish(self, topic: str, payload: str | bytes, *, telemetry: bool = False) -> bool:
        """Publish one message (QoS ``config.qos``); False when paho refused it (its queue is full)."""
        info = self.client.publish(topic, payload, qos=self.config.qos)
        if info.rc != 0:
            self.failed += 1
            return False
        if telemetry:
            self.telemetry_sent += 1
            self._telemetry_in_flight.append(info)
            self._collect_telemetry_acks()  # keeps the deque as short as what is in flight
        else:
            self.sent += 1
        self._pending.append(info)
        return True

    def close(self) -> None:
        deadline = time.monotonic() + 5.0
        for info in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(timeout=remaining)
            except RuntimeError:  # the message was dropped from the queue (disconnected too long)
                continue
        self.client.disconnect()
        self.client.loop_stop()

    def summary(self) -> str:
        line = (
            f"mqtt {self.config.topic}: {self.sent} sent, {self.acknowledged} acknowledged, "
            f"{self.failed} failed"
        )
        if self.telemetry_sent:
            line += f"; telemetry {self.telemetry_sent} sent, {self.telemetry_acknowledged} acknowledged"
        return line


# ---- the pilot the car drives with --------------------------------------------------------------------
def frame_spec_of(manifest: dict[str, Any], artifact: dict[str, Any] | None = None) -> frames.FrameSpec:
    """The FrameSpec the model was trained with: the manifest's top-level ``frame_spec`` (the one place
    compile writes it, copied from ``model.json``), accepted only when its ``preprocessing`` digest is
    the one this car's edge/frames.py computes (``frames.spec_of``). No default: guessing a crop would
    feed the network frames unlike those it learned from. ``artifact``'s input must have its shape.
    """
    try:
        spec = frames.spec_of(manifest, "the package's model")
    except frames.PreprocessingError as exc:
        raise PreprocessingMismatch(str(exc)) from exc
    shape = ((artifact or {}).get("input") or {}).get("shape")
    if shape is not None and shape != list(spec.input_shape):
        raise DriveError(
            f"{artifact.get('file') if artifact else 'the artifact'} takes {shape}, "
            f"but the package's frame_spec gives {list(spec.input_shape)}"
        )
    return spec


class LoadedPilot:
    """A package ready to drive: camera frame -> ``prepare_frame`` (the model's FrameSpec) -> runtime."""

    def __init__(
        self, pilot: Any, spec: frames.FrameSpec, description: str, model_type: str = "linear"
    ) -> None:
        self.pilot = pilot
        self.spec = spec
        self.description = description
        self.model_type = model_type

    def __call__(self, image: np.ndarray) -> tuple[float, float]:
        return self.pilot.run(frames.prepare_frame(image, self.spec))

    def heads(self, image: np.ndarray) -> list[np.ndarray] | None:
        """The network's raw (dequantised) outputs, when the runtime exposes them (``run_heads``)."""
        run_heads = getattr(self.pilot, "run_heads", None)
        return None if run_heads is None else list(run_heads(frames.prepare_frame(image, self.spec)[None]))


def open_pilot(model_dir: Path, *, prefer: str | None = None, threads: int = 1) -> LoadedPilot:
    """An extracted package -> a LoadedPilot; the one adapter between the car and ``edge.runtimes``.

    The agent's smoke test goes through it too, so what is tested is what drives.
    """
    from edge import runtimes

    manifest = runtimes.read_manifest(model_dir)
    artifact = runtimes.choose_artifact(manifest, prefer, chosen=runtimes.read_choice(model_dir))
    spec = frame_spec_of(manifest, artifact)
    pilot = runtimes.load_artifact(model_dir, artifact, manifest, threads)
    description = f"{artifact.get('file')} on {pilot.runtime}"
    return LoadedPilot(pilot, spec, description, str(manifest.get("model_type", "linear")))


class LivePilot:
    """The current model, reloaded when ``model_path`` (the agent's ``current`` link) changes target.

    The link is looked at once a second at most; a new model that fails to load is logged and the car
    keeps driving with the one it has.
    """

    def __init__(
        self, model_path: Path, opener: Callable[[Path], LoadedPilot], recheck_s: float = 1.0
    ) -> None:
        self.model_path = model_path
        self.opener = opener
        self.recheck_s = recheck_s
        if not model_path.exists():
            raise DriveError(f"no model at {model_path}: run `robocar edge pull` first (or pass --model DIR)")
        self.name = self._resolve()
        self.infer = opener(model_path)
        self.names_used = [self.name]
        self._next_check = time.monotonic() + recheck_s

    def _resolve(self) -> str:
        return Path(os.path.realpath(self.model_path)).name

    def refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.recheck_s
        name = self._resolve()
        if name == self.name:
            return
        try:
            infer = self.opener(self.model_path)
        except Exception as exc:  # keep driving with the model that works
            log.warning("new model %s does not load (%s); keeping %s", name, exc, self.name)
            self.name = name  # do not retry it every second
            return
        log.info("switched model %s -> %s", self.name, name)
        self.infer, self.name = infer, name
        self.names_used.append(name)


# ---- live progress and the summary --------------------------------------------------------------------
class Progress:
    """A live status line: rewritten in place on a terminal, one line every ``every_s`` otherwise."""

    def __init__(
        self, stream: IO[str] | None = None, *, tty: bool | None = None, every_s: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = 0.1 if self.tty else every_s
        self._last: float | None = None  # the first update always shows
        self._width = 0

    def update(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class DriveSummary:
    """``skipped``: frames that produced no command, of which ``non_finite`` were NaN/infinite answers
    and ``failed`` inference errors (the rest: frames that could not be prepared)."""

    frames: int
    skipped: int
    seconds: float
    fps: float
    latency_ms: dict[str, float]
    models: list[str]
    artifact: str
    source: str
    non_finite: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lat = self.latency_ms
        skipped = f"{self.skipped} skipped"
        if self.non_finite or self.failed:
            skipped += f" ({self.non_finite} non-finite, {self.failed} inference errors)"
        return (
            f"drove {self.frames} frames from {self.source} in {self.seconds:.2f} s ({self.fps:.1f} fps), "
            f"{skipped}; latency ms mean {lat['mean']:.3f} p50 {lat['p50']:.3f} "
            f"p95 {lat['p95']:.3f} max {lat['max']:.3f}; models {', '.join(self.models)} ({self.artifact})"
        )


class LoopClock:
    """A frame loop's pace: the live fps over the last ``window`` completions (200: about 10 s at a 20 Hz
    camera, so the progress line follows a slowdown within seconds) and the sleep that holds ``rate_hz``."""

    def __init__(self, rate_hz: float = 0.0, window: int = 200) -> None:
        self.started = time.perf_counter()
        self.period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self.recent: deque[float] = deque(maxlen=window)  # completion times

    def done(self, at: float) -> None:
        self.recent.append(at)

    def fps(self) -> float:
        span = self.recent[-1] - self.recent[0] if self.recent else 0.0
        return (len(self.recent) - 1) / span if span > 0 else 0.0

    def wait(self, completed: int) -> None:
        """Sleep until frame ``completed`` is due (a replay at ``rate_hz``); no pacing at 0."""
        if self.period:
            time.sleep(max(0.0, self.started + completed * self.period - time.perf_counter()))

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def latency_stats(latencies_ms: Iterable[float]) -> dict[str, float]:
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if values.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    p50, p95 = np.percentile(values, [50, 95])
    return {"mean": float(values.mean()), "p50": float(p50), "p95": float(p95), "max": float(values.max())}


def drive(
    source: FrameSource,
    pilot: LivePilot,
    outputs: list[Actuator],
    *,
    max_frames: int | None = None,
    rate_hz: float = 0.0,
    progress: Progress | None = None,
    stop: Callable[[], bool] = lambda: False,
    record: Callable[[Frame, Command], Any] | None = None,
) -> DriveSummary:
    """Drive until the source ends, ``max_frames`` frames, or ``stop()``; ``rate_hz`` paces a replay.

    ``record(frame, command)`` is called for each driven frame after the actuators (``--record``:
    ``edge.record.Recorder.submit``, which only queues, so the disk never slows the loop)."""
    latencies = array("d")
    clock = LoopClock(rate_hz)
    skipped = non_finite = failed = 0
    frames_in = iter(source)
    while not stop() and (max_frames is None or len(latencies) < max_frames):
        try:
            frame = next(frames_in, None)
        except KeyboardInterrupt:  # Ctrl-C ends the drive like the end of the source: summary, motors off
            break
        if frame is None:
            break
        pilot.refresh()
        t0 = time.perf_counter()
        try:
            angle, throttle = pilot.infer(frame.image)
            problem = None if math.isfinite(angle) and math.isfinite(throttle) else "non-finite"
        except frames.FrameError as exc:
            problem = f"bad frame: {exc}"
        except Exception as exc:  # a runtime failing on one frame must not end the drive
            problem = f"inference failed: {type(exc).__name__}: {exc}"
            failed += 1
        if problem is not None:
            skipped += 1
            if problem == "non-finite":
                non_finite += 1
                problem = f"the model answered angle {angle}, throttle {throttle}"
            to_neutral(outputs)
            if skipped <= 5:
                log.warning("skipping frame %s (actuators to neutral): %s", frame.origin, problem)
            continue
        t1 = time.perf_counter()
        latency_ms = (t1 - t0) * 1000.0
        command = Command(
            len(latencies), frame.origin, float(angle), float(throttle), latency_ms, pilot.name, time.time()
        )
        for output in outputs:
            output.apply(command)
        if record is not None:
            record(frame, command)
        latencies.append(latency_ms)
        clock.done(t1)
        if progress is not None:
            progress.update(
                f"frames {len(latencies)}  {clock.fps():7.1f} fps  latency {latency_ms:6.3f} ms  "
                f"angle {command.angle:+.3f}  throttle {command.throttle:+.3f}  model {pilot.name}"
            )
        clock.wait(len(latencies))
    seconds = clock.seconds()
    if progress is not None:
        progress.finish()
    return DriveSummary(
        frames=len(latencies),
        skipped=skipped,
        non_finite=non_finite,
        failed=failed,
        seconds=seconds,
        fps=len(latencies) / seconds if seconds > 0 else 0.0,
        latency_ms=latency_stats(latencies),
        models=pilot.names_used,
        artifact=pilot.infer.description,
        source=source.description,
    )
