"""Frame sources, actuators and the drive loop, with a real (tiny) ONNX package run by edge.runtimes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import SAMPLE_TUBS, onnx_pilot_package

from edge import artifacts, drive, frames, sources
from edge.agent import SmokeTestError, smoke_test

TUBS = SAMPLE_TUBS
TUB_V2, TUB_V1 = TUBS / "tub_v2", TUBS / "tub_v1"


def package(tmp_path: Path, tag: str = "v1", **kwargs) -> Path:
    archive = tmp_path / f"{tag}.tar.gz"
    archive.write_bytes(onnx_pilot_package(tag, **kwargs))
    artifacts.safe_extract(archive, tmp_path / tag)
    return tmp_path / tag


def expected_angle(image: np.ndarray) -> float:
    """What the tiny pilot computes, derived independently: crop 40 top rows, halve, mean/255 - 0.5."""
    from PIL import Image

    cropped = Image.fromarray(image[40:]).resize((80, 40), Image.Resampling.BILINEAR)
    return float(np.asarray(cropped, dtype=np.float32).mean() / 255.0 - 0.5)


def test_tub_v2_replay_skips_deleted_records():
    tub = sources.TubSource(TUB_V2)
    replayed = list(tub)
    manifest = (TUB_V2 / "manifest.json").read_text().splitlines()
    catalogs = json.loads(manifest[4])
    assert len(replayed) == catalogs["current_index"] - len(catalogs["deleted_indexes"])
    names = {f.origin.split("/")[-1] for f in replayed}
    for deleted in catalogs["deleted_indexes"]:
        assert f"{deleted}_cam_image_array_.jpg" not in names
    assert replayed[0].image.shape == (120, 160, 3) and replayed[0].image.dtype == np.uint8
    assert replayed[0].recorded["user/angle"] == -1.0


def test_tub_v1_replay_honours_exclude_and_order():
    replayed = list(sources.TubSource(TUB_V1))
    excluded = json.loads((TUB_V1 / "exclude.json").read_text())
    records = len(list(TUB_V1.glob("record_*.json")))
    assert len(replayed) == records - len(excluded)
    numbers = [int(f.origin.split("/")[-1].split("_")[0]) for f in replayed]
    assert numbers == sorted(numbers) and not set(excluded) & set(numbers)


def test_folder_source_natural_order_and_open_source_guessing(tmp_path):
    for n in (10, 2, 1):
        (tmp_path / f"{n}.jpg").write_bytes((TUB_V2 / "images" / "0_cam_image_array_.jpg").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    spec = frames.FrameSpec()
    folder = sources.open_source(str(tmp_path), spec)
    assert [f.origin for f in folder] == ["1.jpg", "2.jpg", "10.jpg"]
    assert isinstance(sources.open_source(str(TUB_V2), spec), sources.TubSource)
    assert isinstance(sources.open_source(f"tub:{TUB_V1}", spec), sources.TubSource)
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.open_source(str(tmp_path / "missing"), spec)
    with pytest.raises(sources.SourceError, match="no .jpg"):
        sources.open_source(f"folder:{tmp_path / 'empty'}", spec) if (
            tmp_path / "empty"
        ).mkdir() is None else None


def test_camera_without_opencv_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError, installed or not
    with pytest.raises(sources.SourceError, match="OpenCV"):
        sources.open_source("camera:0", frames.FrameSpec())


def test_drive_loop_commands_reach_every_output(tmp_path):
    model = package(tmp_path)
    pilot = drive.LivePilot(model, drive.open_pilot)
    pwm = drive.PCA9685Actuator()
    applied: list[drive.Command] = []

    class Recorder:
        def apply(self, command):
            applied.append(command)

        def close(self):
            pass

    jsonl = drive.JsonLinesWriter(str(tmp_path / "drive.jsonl"))
    summary = drive.drive(sources.TubSource(TUB_V2), pilot, [pwm, Recorder(), jsonl], max_frames=12)
    jsonl.close()
    assert summary.frames == 12 and summary.skipped == 0 and summary.models == ["v1"]
    assert summary.latency_ms["p50"] > 0 and summary.fps > 0
    lines = [json.loads(line) for line in (tmp_path / "drive.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12))
    first = next(iter(sources.TubSource(TUB_V2)))
    assert applied[0].angle == pytest.approx(expected_angle(first.image), abs=1e-5)
    assert applied[0].throttle == pytest.approx(0.3)
    steering, motor = pwm.pulses_for(applied[-1].angle, applied[-1].throttle)
    assert pwm.pulses == {1: steering, 0: motor}
    pwm.close()
    assert pwm.pulses == {1: 375, 0: 370}, "closing centres the steering and stops the motor"


def test_pwm_mapping_matches_donkeycar_calibration():
    pwm = drive.PCA9685Actuator()
    assert pwm.pulses_for(-1.0, 1.0) == (460, 500)
    assert pwm.pulses_for(1.0, -1.0) == (290, 220)
    assert pwm.pulses_for(0.0, 0.0) == (375, 370)


def test_bad_frames_are_skipped_not_fatal(tmp_path):
    model = package(tmp_path)
    good = next(iter(sources.TubSource(TUB_V2)))
    small = sources.Frame(np.zeros((60, 80, 3), np.uint8), 1, "small.jpg")

    class Mixed:
        description = "mixed"

        def __iter__(self):
            yield good
            yield small
            yield good

        def close(self):
            pass

    summary = drive.drive(Mixed(), drive.LivePilot(model, drive.open_pilot), [])
    assert (summary.frames, summary.skipped) == (2, 1)


def test_live_pilot_follows_the_current_link(tmp_path):
    first, second = package(tmp_path, "v1"), package(tmp_path, "v2", angle_bias=0.25)
    link = tmp_path / "current"
    link.symlink_to(first.name)
    pilot = drive.LivePilot(link, drive.open_pilot, recheck_s=0.0)
    image = next(iter(sources.TubSource(TUB_V2))).image
    before = pilot.infer(image)[0]
    tmp = tmp_path / "tmp-link"
    tmp.symlink_to(second.name)
    tmp.replace(link)
    pilot.refresh()
    assert pilot.name == "v2" and pilot.names_used == ["v1", "v2"]
    assert pilot.infer(image)[0] == pytest.approx(before + 0.25, abs=1e-5)
    broken = tmp_path / "v3"
    broken.mkdir()
    tmp.symlink_to(broken.name)
    tmp.replace(link)
    pilot.refresh()  # v3 has no manifest: keep driving with v2
    assert pilot.infer(image)[0] == pytest.approx(before + 0.25, abs=1e-5)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(drive.DriveError, match="robocar edge pull"):
        drive.LivePilot(tmp_path / "current", drive.open_pilot)


def test_smoke_test_with_real_runtime(tmp_path):
    result = smoke_test(package(tmp_path, "ok"))
    assert -1 <= result["angle"] <= 1 and result["throttle"] == pytest.approx(0.3)
    with pytest.raises(SmokeTestError, match="not finite"):
        smoke_test(package(tmp_path, "nan", angle_bias=float("nan")))


class HeadsPilot:
    """A runtime pilot exposing raw heads, to check what the decoder's clipping would hide."""

    runtime = "stub"

    def __init__(self, heads):
        self._heads = [np.asarray(h, dtype=np.float32) for h in heads]

    def run(self, frame):
        return 0.0, 0.0

    def run_heads(self, frames_batch):
        return self._heads


@pytest.mark.parametrize(
    ("heads", "model_type", "message"),
    [
        ([[[7.5]], [[0.2]]], "linear", "far outside"),
        ([[[np.inf]], [[0.2]]], "linear", "not finite"),
        ([np.full((1, 15), 2.0), np.full((1, 20), 0.05)], "categorical", "probability"),
    ],
)
def test_smoke_test_checks_raw_heads(tmp_path, monkeypatch, heads, model_type, message):
    stub = drive.LoadedPilot(HeadsPilot(heads), frames.FrameSpec(), "stub", model_type)
    monkeypatch.setattr(drive, "open_pilot", lambda path, prefer=None: stub)
    with pytest.raises(SmokeTestError, match=message):
        smoke_test(tmp_path)
    ok = drive.LoadedPilot(HeadsPilot([[[1.1]], [[0.2]]]), frames.FrameSpec(), "stub", "linear")
    monkeypatch.setattr(drive, "open_pilot", lambda path, prefer=None: ok)
    assert smoke_test(tmp_path)["angle"] == 0.0, "a small overshoot of a linear head is normal"


def test_progress_line_rewrites_in_place_on_a_tty_and_prints_lines_otherwise():
    tty = io.StringIO()
    line = drive.Progress(tty, tty=True)
    line.update("frames 1", force=True)
    line.update("frames 2", force=True)
    line.finish()
    assert tty.getvalue() == "\rframes 1\rframes 2\n"
    log = io.StringIO()
    periodic = drive.Progress(log, tty=False, every_s=3600)
    periodic.update("frames 1")
    periodic.update("frames 2")  # within the period: not printed
    assert log.getvalue() == "frames 1\n"


def write_video(path: Path, images: list[np.ndarray], size: tuple[int, int]) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, size)
    assert writer.isOpened()
    for image in images:
        writer.write(cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), size))
    writer.release()


@pytest.mark.parametrize("size", [(160, 120), (320, 240)])
def test_video_source_replays_rgb_frames_at_camera_size(tmp_path, size):
    # Strongly coloured frames (red high, blue low), so a BGR/RGB mix-up cannot pass unnoticed.
    recorded = [np.full((120, 160, 3), (200, 60 + 10 * i, 20), dtype=np.uint8) for i in range(10)]
    video = tmp_path / "drive.avi"
    write_video(video, recorded, size)
    source = sources.open_source(str(video), frames.FrameSpec())
    replayed = list(source)
    source.close()
    assert len(replayed) == 10
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in replayed)
    # colour order and content survive (MJPG is lossy: compare means per channel)
    for original, frame in zip(recorded, replayed, strict=True):
        assert np.abs(original.mean(axis=(0, 1)) - frame.image.mean(axis=(0, 1))).max() < 6
    model = package(tmp_path)
    summary = drive.drive(
        sources.open_source(f"video:{video}", frames.FrameSpec()),
        drive.LivePilot(model, drive.open_pilot),
        [],
    )
    assert summary.frames == 10


def test_camera_that_cannot_open_is_a_clear_error():
    with pytest.raises(sources.SourceError, match="cannot open camera 7"):
        sources.open_source("camera:7", frames.FrameSpec())


def test_bundled_smoke_frame_is_a_camera_frame():
    from edge.agent import smoke_frame_bytes

    image = frames.decode_image(smoke_frame_bytes())
    assert image.shape == (120, 160, 3)
    frames.prepare_frame(image, frames.FrameSpec())  # the camera size every FrameSpec starts from


def test_loop_clock_fps_follows_the_last_window_of_completions() -> None:
    from edge.drive import LoopClock

    clock = LoopClock(window=3)
    assert clock.fps() == 0.0  # nothing done yet: no division by zero
    for at in (0.0, 10.0, 10.5, 11.0):  # a stall long ago, then 2 frames/s
        clock.done(at)
    assert clock.fps() == pytest.approx(2.0)  # the window forgot the stall


def test_loop_clock_paces_a_replay_and_not_a_live_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge import drive

    slept: list[float] = []
    monkeypatch.setattr(drive.time, "sleep", slept.append)
    paced = drive.LoopClock(rate_hz=10.0)
    paced.wait(5)  # frame 5 is due 0.5 s after the start
    assert slept and 0.4 < slept[0] <= 0.5
    drive.LoopClock().wait(5)
    assert len(slept) == 1  # rate 0: never sleeps
