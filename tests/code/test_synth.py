"""Synthetic tubs: shaped like donkeycar's, readable by our reader, deterministic, labels from the pose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main as robocar
from pipelines.synth import (
    LOOKAHEAD_M,
    MAX_STEER_CURVATURE,
    SLOW_CURVATURE,
    THROTTLE_CURVE,
    THROTTLE_STRAIGHT,
    THROTTLE_VIEW_M,
    Track,
    make_track,
    pure_pursuit_angle,
    throttle_for,
    write_tub,
)
from processing.records import RecordValidator
from processing.tubs import discover_sources, read_v2_tub

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs" / "tub_v2"


@pytest.fixture(scope="module")
def tub(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "data"
    write_tub(path, frames=1030, sessions=3, seed=11)  # > 1000: two catalogs, like donkeycar's max_len
    return path


def test_layout_matches_what_donkeycar_writes(tub):
    manifest = (tub / "manifest.json").read_text().splitlines()
    sample = (SAMPLE / "manifest.json").read_text().splitlines()
    assert len(manifest) == 5 and json.loads(manifest[0]) == json.loads(sample[0])
    assert json.loads(manifest[1]) == json.loads(sample[1])
    sessions = json.loads(manifest[3])["sessions"]
    assert set(sessions) == set(json.loads(sample[3])["sessions"]) and len(sessions["all_full_ids"]) == 3
    catalogs = json.loads(manifest[4])
    assert catalogs == {
        "paths": ["catalog_0.catalog", "catalog_1.catalog"],
        "current_index": 1030,
        "max_len": 1000,
        "deleted_indexes": [],
    }
    for number, start in ((0, 0), (1, 1000)):
        lines = (tub / f"catalog_{number}.catalog").read_text().splitlines(keepends=True)
        meta = json.loads((tub / f"catalog_{number}.catalog_manifest").read_text())
        assert set(meta) == set(json.loads((SAMPLE / "catalog_0.catalog_manifest").read_text()))
        assert meta["start_index"] == start and meta["line_lengths"] == [len(line) for line in lines]
        assert meta["path"] == f"catalog_{number}.catalog_manifest"  # donkeycar's own quirk
        record = json.loads(lines[0])
        assert list(record) == sorted(record)  # sort_keys=True
        assert set(record) == set(json.loads((SAMPLE / "catalog_0.catalog").read_text().splitlines()[0]))
        assert record["cam/image_array"] == f"{start}_cam_image_array_.jpg"
    with Image.open(tub / "images" / "1029_cam_image_array_.jpg") as image:
        assert image.format == "JPEG" and image.size == (160, 120) and image.mode == "RGB"


def test_round_trip_through_the_tub_reader(tub):
    (source,) = discover_sources(tub)
    report, candidates = read_v2_tub(source, RecordValidator("tub_v2_record"))
    assert (report.read, report.rejected, report.deleted, report.warnings) == (1030, 0, 0, [])
    assert [c.index for c in candidates] == list(range(1030))
    assert len({c.session for c in candidates}) == 3
    angles = np.array([c.angle for c in candidates])
    assert angles.std() > 0.1 and np.abs(angles).max() <= 1  # steering varies: curves and corrections
    throttles = np.array([c.throttle for c in candidates])
    assert throttles.std() > 0.04  # throttle varies too: straights and curves
    assert throttles.min() > THROTTLE_CURVE - 0.05 and throttles.max() < THROTTLE_STRAIGHT + 0.05


def test_same_seed_same_bytes(tmp_path):
    write_tub(tmp_path / "a", frames=40, sessions=2, seed=3)
    write_tub(tmp_path / "b", frames=40, sessions=2, seed=3)
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


@pytest.mark.parametrize("s", [1.0, 17.0, 33.0, 49.0])
def test_label_steers_back_towards_the_centre_line(s):
    track = make_track(0)
    centred = pure_pursuit_angle(track, s, e=0.0, psi=0.0)
    # left of the centre line, or heading left of the road: steer more to the right (positive)
    assert pure_pursuit_angle(track, s, e=+0.15, psi=0.0) > centred + 0.05
    assert pure_pursuit_angle(track, s, e=-0.15, psi=0.0) < centred - 0.05
    assert pure_pursuit_angle(track, s, e=0.0, psi=+0.2) > centred + 0.05
    assert (
        abs(centred - np.clip(track.kappa[track.at(s + LOOKAHEAD_M / 2)] / -MAX_STEER_CURVATURE, -1, 1))
        < 0.15
    )  # follows the curve


def straight_then_bend(kappa: float, bend_from_m: float = 10.0, bend_m: float = 3.0) -> Track:
    """A 20 m track (only its curvature matters to the throttle): straight, then one bend."""
    step = 0.02
    s = np.arange(1000) * step
    curvature = np.where((s >= bend_from_m) & (s < bend_from_m + bend_m), kappa, 0.0)
    zeros = np.zeros_like(s)
    return Track(kappa=curvature, theta=zeros, x=s, y=zeros, step=step)


def test_throttle_eases_off_for_the_bend_in_view_whichever_way_it_turns():
    track = straight_then_bend(SLOW_CURVATURE)
    assert throttle_for(track, 5.0) == pytest.approx(THROTTLE_STRAIGHT)  # nothing but straight road ahead
    assert throttle_for(track, 10.0 - THROTTLE_VIEW_M[1] - 0.1) == pytest.approx(
        THROTTLE_STRAIGHT
    )  # not in view yet
    approaching = [throttle_for(track, s) for s in np.arange(9.05, 9.8, 0.1)]  # the bend fills the view
    assert all(later < earlier for earlier, later in zip(approaching, approaching[1:], strict=False))
    assert throttle_for(track, 10.5) == pytest.approx(THROTTLE_CURVE)  # in the bend, all of the view bends
    gentle = straight_then_bend(SLOW_CURVATURE / 2)
    assert throttle_for(gentle, 10.5) == pytest.approx((THROTTLE_STRAIGHT + THROTTLE_CURVE) / 2)
    mirrored = straight_then_bend(-SLOW_CURVATURE)
    assert [throttle_for(mirrored, s) for s in (9.5, 10.5)] == [throttle_for(track, s) for s in (9.5, 10.5)]


def test_command_writes_a_tub_and_refuses_to_overwrite(tmp_path, capsys):
    assert robocar(["data", "synth", "--out", str(tmp_path / "t"), "--frames", "12", "--sessions", "2"]) == 0
    assert "12 frames in 2 sessions" in capsys.readouterr().out
    assert robocar(["data", "synth", "--out", str(tmp_path / "t"), "--frames", "12"]) == 2
    assert "not empty" in capsys.readouterr().err
