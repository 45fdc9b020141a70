"""Synthetic DonkeyCar driving data: a simulated car on a closed track, written as a donkeycar tub v2.

The demo needs data that a model can learn and a metric can judge, so the steering label is a
deterministic function of what the camera sees: a pure-pursuit controller aims at the centre line
``LOOKAHEAD_M`` ahead, i.e. the label depends on the car's lateral offset, its heading error and the
road's curvature, all of which move the road in the picture. The car does not follow its own label
exactly: a slowly varying steering disturbance (an Ornstein-Uhlenbeck process) makes it weave, so the
data covers off-centre poses and the corrections back. The throttle label is what the camera sees too:
full (0.5) where the road ahead in the picture is straight, easing off with how much it bends (down to
0.2 in the tightest curves), lagging the view by a person's reaction time, plus small noise; the car
drives at that speed.

Rendering is a flat-ground pinhole camera (height, pitch, focal length fixed), vectorised with numpy:
each image row below the horizon sees the ground at one forward distance, where the road's centre
lateral position and direction come from the track geometry ahead of the car. Sessions differ in
start position, driving direction (mirrored track), lighting, colours and noise.

The tub layout is byte-for-byte what donkeycar 5.3.0 writes, through the car's own recorder's layout
(``edge/record.py``: ``manifest.json``, ``catalog_N.catalog`` with ``max_len`` 1000,
``catalog_N.catalog_manifest``, ``images/<index>_cam_image_array_.jpg``, 160x120 JPEG); written in one go
here, not record by record. Everything is a function of the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import record as tub_layout

IMAGE_H, IMAGE_W = 120, 160
FPS = 20  # donkeycar DRIVE_LOOP_HZ
CATALOG_MAX_LEN = tub_layout.CATALOG_MAX_LEN
BASE_TIME_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z: timestamps depend on the seed only, never the clock

TRACK_LENGTH_M = 30.0  # a DonkeyCar track: ~5 m across
HARMONIC_SCALE = 2.0
TRACK_STEP_M = 0.02
MAX_TRACK_CURVATURE = 1.3  # 1/m: the tightest curve the car can take with room to correct
ROAD_HALF_WIDTH_M = 0.3
EDGE_LINE_M = 0.035
CENTRE_LINE_M = 0.02
DASH_M = 0.25  # centre line: dash and gap length
MAX_STEER_CURVATURE = 1.5  # 1/m at |angle| = 1 (0.67 m turning radius)
LOOKAHEAD_M = 0.8
VIEW_RANGE_M = 6.0
CAMERA_HEIGHT_M = 0.18
CAMERA_PITCH_RAD = math.radians(20.0)
FOCAL_PX = 67.0  # ~100 degrees horizontal field of view
# Throttle: a person slows for the bend they see. The road 0.2-1.2 m ahead fills image rows 87-46 (of
# 120; beyond 1.2 m the whole rest of the road is squeezed into the 9 rows below the horizon), about a
# second of driving at the mean speed (1.3 m/s).
THROTTLE_VIEW_M = (0.2, 1.2)
THROTTLE_STRAIGHT = 0.5  # top of donkeycar's categorical throttle bins (MODEL_CATEGORICAL_MAX_THROTTLE_RANGE)
THROTTLE_CURVE = 0.2
SLOW_CURVATURE = 0.7  # 1/m (1.4 m radius; the track's tightest is 1.3): throttle is THROTTLE_CURVE from here
THROTTLE_LAG_S = 0.15  # the foot follows the eye like a first-order lag: a person's reaction time
THROTTLE_NOISE = 0.01  # a seventh of the spread of the throttle (std ~0.07): what no camera can see
SPEED_AT_FULL_THROTTLE_MPS = 3.6


@dataclass(frozen=True)
class Track:
    """A closed centre line sampled every ``step`` metres: curvature, heading, position."""

    kappa: np.ndarray
    theta: np.ndarray
    x: np.ndarray
    y: np.ndarray
    step: float

    @property
    def length(self) -> float:
        return len(self.kappa) * self.step

    def at(self, s: np.ndarray | float) -> np.ndarray:
        """Sample numbers for arc lengths ``s`` (wrapping around the lap)."""
        return np.round(np.asarray(s) / self.step).astype(np.int64) % len(self.kappa)


def _polar_loop(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A star-shaped closed curve r(phi) = R + sum of random harmonics: simple (never crosses itself)."""
    phi = np.linspace(0.0, 2 * math.pi, 20_000, endpoint=False)
    radius = np.full_like(phi, TRACK_LENGTH_M / (2 * math.pi))
    base = radius[0]
    for harmonic in range(2, 6):
        amplitude = rng.uniform(0.2, 1.0) * HARMONIC_SCALE * base / harmonic**2
        radius += amplitude * np.cos(harmonic * phi + rng.uniform(0, 2 * math.pi))
    return radius * np.cos(phi), radius * np.sin(phi)


def make_track(seed: int, mirrored: bool = False) -> Track:
    """A closed lap with curves of varying radius (and some bends the other way), resampled by arc length.

    Drawn until its tightest curve is within ``MAX_TRACK_CURVATURE`` (the car can take it).
    """
    rng = np.random.default_rng([seed, 7])
    while True:
        x, y = _polar_loop(rng)
        segment = np.hypot(np.diff(x, append=x[:1]), np.diff(y, append=y[:1]))
        arc = np.concatenate([[0.0], np.cumsum(segment)])
        n = int(round(arc[-1] / TRACK_STEP_M))
        step = arc[-1] / n
        s = np.arange(n) * step
        xs = np.interp(s, arc, np.append(x, x[0]))
        ys = np.interp(s, arc, np.append(y, y[0]))
        theta = np.unwrap(np.arctan2(np.roll(ys, -1) - np.roll(ys, 1), np.roll(xs, -1) - np.roll(xs, 1)))
        kappa = np.gradient(theta, step)
        kappa = np.convolve(np.concatenate([kappa[-10:], kappa, kappa[:10]]), np.ones(21) / 21, "valid")
        if np.abs(kappa).max() <= MAX_TRACK_CURVATURE:
            break
    if mirrored:  # the mirror image of the lap: every curve turns the other way
        ys, theta, kappa = -ys, -theta, -kappa
    return Track(kappa=kappa, theta=theta, x=xs, y=ys, step=step)


def car_frame(track: Track, s: float, e: float, psi: float, ahead: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre-line points at arc lengths ``s + ahead`` in the car's frame: (forward, left, direction)."""
    i = track.at(s)
    normal = track.theta[i] + math.pi / 2
    car_x = track.x[i] + e * math.cos(normal)
    car_y = track.y[i] + e * math.sin(normal)
    heading = track.theta[i] + psi
    j = track.at(s + ahead)
    dx, dy = track.x[j] - car_x, track.y[j] - car_y
    forward = dx * math.cos(heading) + dy * math.sin(heading)
    left = -dx * math.sin(heading) + dy * math.cos(heading)
    direction = np.angle(np.exp(1j * (track.theta[j] - heading)))
    return forward, left, direction


def pure_pursuit_angle(track: Track, s: float, e: float, psi: float) -> float:
    """The label: donkeycar steering in [-1, 1] (negative = left) that reaches the look-ahead point."""
    forward, left, _ = car_frame(track, s, e, psi, np.array([LOOKAHEAD_M]))
    distance_sq = float(forward[0] ** 2 + left[0] ** 2)
    curvature = 2.0 * float(left[0]) / max(distance_sq, 1e-6)  # left positive
    return float(np.clip(-curvature / MAX_STEER_CURVATURE, -1.0, 1.0))


def visible_curvature(track: Track, s: float) -> float:
    """How much the road bends in the part of the picture a driver reads for speed: the mean |curvature|
    of the centre line ``THROTTLE_VIEW_M`` ahead, nearer metres weighted more (they fill more rows)."""
    ahead = np.linspace(*THROTTLE_VIEW_M, 16)
    weights = np.linspace(1.0, 0.5, len(ahead))
    return float(np.average(np.abs(track.kappa[track.at(s + ahead)]), weights=weights))


def throttle_for(track: Track, s: float) -> float:
    """The speed a person picks for the curve they see: full on straights, easing off linearly with the
    visible curvature down to ``THROTTLE_CURVE`` at ``SLOW_CURVATURE`` and beyond."""
    share = min(1.0, visible_curvature(track, s) / SLOW_CURVATURE)
    return float(THROTTLE_STRAIGHT - (THROTTLE_STRAIGHT - THROTTLE_CURVE) * share)


@dataclass(frozen=True)
class Drive:
    """One session's poses and labels, one entry per frame."""

    s: np.ndarray
    e: np.ndarray
    psi: np.ndarray
    angle: np.ndarray
    throttle: np.ndarray


def simulate_drive(track: Track, frames: int, rng: np.random.Generator) -> Drive:
    """Drive ``frames`` steps at ``FPS``: label = pure pursuit + small noise; the car executes the
    label plus a slowly varying disturbance, which makes it weave around the centre line."""
    s, e, psi = rng.uniform(0, track.length), rng.uniform(-0.15, 0.15), rng.uniform(-0.2, 0.2)
    disturbance = 0.0
    out = np.zeros((5, frames))
    dt = 1.0 / FPS
    eased = throttle_for(track, s)
    for k in range(frames):
        angle = float(np.clip(pure_pursuit_angle(track, s, e, psi) + rng.normal(0, 0.02), -1, 1))
        eased += (throttle_for(track, s) - eased) * min(1.0, dt / THROTTLE_LAG_S)
        throttle = float(np.clip(eased + rng.normal(0, THROTTLE_NOISE), 0, 1))
        out[:, k] = (s, e, psi, angle, throttle)
        disturbance += -disturbance * dt / 1.5 + rng.normal(0, 0.08) * math.sqrt(dt)
        executed = float(np.clip(angle + disturbance, -1, 1))
        speed = SPEED_AT_FULL_THROTTLE_MPS * throttle
        kappa_road = float(track.kappa[track.at(s)])
        kappa_car = -executed * MAX_STEER_CURVATURE
        along = speed * math.cos(psi) / max(1.0 - e * kappa_road, 0.2)
        s = (s + along * dt) % track.length
        e = float(np.clip(e + speed * math.sin(psi) * dt, -0.45, 0.45))
        psi = float(np.clip(psi + (kappa_car * speed - kappa_road * along) * dt, -0.6, 0.6))
    return Drive(*out)


@dataclass(frozen=True)
class Camera:
    """Where each pixel row meets the ground: forward distance per row, lateral distance per pixel."""

    horizon_row: int
    forward: np.ndarray  # [rows] forward distance (m) of each ground row (rows from horizon_row down)
    lateral: np.ndarray  # [rows, W] left distance (m) of each ground pixel
    pixel_m: np.ndarray  # [rows] ground width of one pixel (m), for anti-aliasing


def make_camera() -> Camera:
    rows = np.arange(IMAGE_H) + 0.5
    b = (rows - IMAGE_H / 2) / FOCAL_PX  # ray slope below the optical axis
    denominator = math.sin(CAMERA_PITCH_RAD) + b * math.cos(CAMERA_PITCH_RAD)
    first = int(np.argmax(denominator > 0.02))  # rows above look at (or too near) the horizon
    t = CAMERA_HEIGHT_M / denominator[first:]
    forward = t * (math.cos(CAMERA_PITCH_RAD) - b[first:] * math.sin(CAMERA_PITCH_RAD))
    a = (np.arange(IMAGE_W) + 0.5 - IMAGE_W / 2) / FOCAL_PX
    lateral = -t[:, None] * a[None, :]
    return Camera(horizon_row=first, forward=forward, lateral=lateral, pixel_m=t / FOCAL_PX)


@dataclass(frozen=True)
class Look:
    """A session's appearance."""

    road: np.ndarray
    floor: np.ndarray
    wall: np.ndarray
    edge: np.ndarray
    centre: np.ndarray
    gain: float
    noise: float


def make_look(rng: np.random.Generator) -> Look:
    grey = rng.uniform(60, 120)
    return Look(
        road=np.array([grey, grey, grey]) * rng.uniform(0.9, 1.1, 3),
        floor=rng.choice(
            [[60.0, 120.0, 50.0], [140.0, 110.0, 80.0], [70.0, 80.0, 140.0], [150.0, 150.0, 140.0]]
        )
        * rng.uniform(0.8, 1.2, 3),
        wall=rng.uniform(120, 230, 3),
        edge=np.array([235.0, 235.0, 235.0]) * rng.uniform(0.9, 1.0, 3),
        centre=np.array([230.0, 200.0, 40.0]) * rng.uniform(0.9, 1.05, 3),
        gain=float(rng.uniform(0.6, 1.25)),
        noise=float(rng.uniform(2.0, 6.0)),
    )


def _coverage(distance: np.ndarray, half_width: float, pixel: np.ndarray) -> np.ndarray:
    """Fraction of a pixel inside a band |distance| < half_width (a linear ramp one pixel wide)."""
    inside = np.float32(half_width) - np.abs(distance)
    inside /= pixel
    inside += np.float32(0.5)
    return np.clip(inside, 0.0, 1.0, out=inside)


def render_frames(
    track: Track, drive: Drive, frames: slice, camera: Camera, look: Look, rng: np.random.Generator
) -> np.ndarray:
    """Camera images uint8 [n, 120, 160, 3] for ``drive[frames]``."""
    ahead = np.arange(0.0, VIEW_RANGE_M, 0.05)
    poses = range(*frames.indices(len(drive.s)))
    n, rows = len(poses), len(camera.forward)
    centre = np.zeros((n, rows))
    direction = np.zeros((n, rows))
    visible = np.zeros((n, rows), dtype=bool)
    for k, i in enumerate(poses):
        forward, left, road_dir = car_frame(track, drive.s[i], drive.e[i], drive.psi[i], ahead)
        # Stop where the road turns sideways or back: beyond, rows no longer meet it once.
        usable = np.concatenate([[True], np.diff(forward) > 0]) & (np.abs(road_dir) < 1.1)
        stop = max(2, int(np.argmin(usable)) if not usable.all() else len(forward))
        forward, left, road_dir = forward[:stop], left[:stop], road_dir[:stop]
        centre[k] = np.interp(camera.forward, forward, left)
        direction[k] = np.interp(camera.forward, forward, road_dir)
        visible[k] = (camera.forward >= forward[0]) & (camera.forward <= forward[-1])
    f32 = np.float32
    pixel = camera.pixel_m.astype(f32)[None, :, None]
    offset = (camera.lateral.astype(f32)[None] - centre.astype(f32)[:, :, None]) * np.cos(direction).astype(
        f32
    )[:, :, None]
    offset[~visible] = 10.0
    road = _coverage(offset, ROAD_HALF_WIDTH_M, pixel)
    edge = _coverage(np.abs(offset) - f32(ROAD_HALF_WIDTH_M - EDGE_LINE_M / 2), EDGE_LINE_M / 2, pixel)
    along = drive.s[list(poses)][:, None] + camera.forward[None, :]
    dash = ((along % (2 * DASH_M)) < DASH_M)[:, :, None]
    centre_line = _coverage(offset, CENTRE_LINE_M / 2, pixel) * dash
    fog = np.clip(camera.forward / (VIEW_RANGE_M * 1.5), 0, 0.6).astype(f32)[None, :, None]

    # Composite layer by layer, one channel at a time (float32, in place: this is the hot loop).
    flicker = 1.0 + 0.08 * np.sin(drive.s[list(poses)] / 3.0)  # lighting varies along the lap
    light = (look.gain * flicker).astype(f32)[:, None, None]
    image = np.empty((n, IMAGE_H, IMAGE_W, 3), dtype=f32)
    sky = np.linspace(0.8, 1.0, camera.horizon_row, dtype=f32)[None, :, None]
    for c in range(3):
        layer = np.full(road.shape, look.floor[c], dtype=f32)
        layer += road * f32(look.road[c] - look.floor[c])
        layer += edge * (f32(look.edge[c]) - layer)
        layer += centre_line * (f32(look.centre[c]) - layer)
        layer += fog * (f32(look.wall[c]) - layer)
        image[:, camera.horizon_row :, :, c] = layer * light
        image[:, : camera.horizon_row, :, c] = f32(look.wall[c]) * sky * light
    image += rng.standard_normal(image.shape, dtype=f32) * f32(look.noise)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def session_sizes(frames: int, sessions: int) -> list[int]:
    base, extra = divmod(frames, sessions)
    return [base + (1 if k < extra else 0) for k in range(sessions)]


def write_tub(
    out_dir: Path,
    frames: int,
    sessions: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 200,
) -> dict[str, object]:
    """Write a donkeycar tub v2 of ``frames`` frames in ``sessions`` sessions; return a summary."""
    if frames < 1 or sessions < 1 or sessions > frames:
        raise ValueError("need frames >= sessions >= 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    camera = make_camera()
    day = time.strftime("%y-%m-%d", time.gmtime(BASE_TIME_S + seed * 86_400))
    session_ids = [f"{day}_{k}" for k in range(sessions)]
    catalogs: dict[int, list[bytes]] = {}
    index = 0
    angles: list[float] = []
    for number, size in enumerate(session_sizes(frames, sessions)):
        rng = np.random.default_rng([seed, number])
        track = make_track(seed, mirrored=number % 2 == 1)
        drive = simulate_drive(track, size, rng)
        look = make_look(rng)
        start_ms = int((BASE_TIME_S + seed * 86_400 + number * 3_600) * 1000)
        for first in range(0, size, batch):
            images = render_frames(track, drive, slice(first, min(size, first + batch)), camera, look, rng)
            for k, image in enumerate(images):
                i = first + k
                name = tub_layout.image_name(index)
                (out_dir / "images" / name).write_bytes(tub_layout.encode_jpeg(image))
                record = {
                    "_index": index,
                    "_session_id": session_ids[number],
                    "_timestamp_ms": start_ms + i * 1000 // FPS + int(rng.integers(0, 3)),
                    "cam/image_array": name,
                    "user/angle": float(drive.angle[i]),
                    "user/mode": "user",
                    "user/throttle": float(drive.throttle[i]),
                }
                catalogs.setdefault(index // CATALOG_MAX_LEN, []).append(tub_layout.catalog_line(record))
                angles.append(float(drive.angle[i]))
                index += 1
            if progress is not None:
                progress(index, frames)
    created = BASE_TIME_S + seed * 86_400
    paths = []
    for number, lines in sorted(catalogs.items()):
        catalog = f"catalog_{number}.catalog"
        paths.append(catalog)
        (out_dir / catalog).write_bytes(b"".join(lines))
        (out_dir / f"catalog_{number}.catalog_manifest").write_bytes(
            tub_layout.catalog_manifest_line(
                catalog, created + number, number * CATALOG_MAX_LEN, [len(line) for line in lines]
            )
        )
    sessions_meta = {"all_full_ids": session_ids, "last_id": sessions - 1, "last_full_id": session_ids[-1]}
    manifest = tub_layout.TubManifest(
        inputs=[key for key, _ in tub_layout.PERSON_INPUTS],
        types=[kind for _, kind in tub_layout.PERSON_INPUTS],
        metadata={},
        manifest_metadata={"created_at": created, "sessions": sessions_meta},
        paths=paths,
        current_index=index,
        max_len=CATALOG_MAX_LEN,
    )
    (out_dir / "manifest.json").write_bytes(manifest.to_bytes())
    angle_array = np.asarray(angles)
    return {
        "tub": str(out_dir),
        "frames": index,
        "sessions": session_ids,
        "angle_mean": float(angle_array.mean()),
        "angle_std": float(angle_array.std()),
    }
