"""The car drives only a model whose preprocessing it has: the manifest's frame_spec and its digest.

A package records ``frame_spec`` and ``preprocessing`` (``edge.frames.preprocessing_record``: the digest of
PREPROCESSING_VERSION, the input scaling and the frame spec) at its top level, as compile copies them from
model.json. The agent's file check refuses a package whose digest this car's edge/frames.py does not
compute, names both digests and says to update the car; a car update tries the package again.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import (
    GROUP,
    SAMPLE_TUBS,
    TARGET,
    TINY_FRAME_SPEC,
    onnx_pilot_package,
    pull,
    register,
    sha256,
    tar_bytes,
)

from edge import drive, frames
from edge.cli import main as edge_main

TUB_V2 = SAMPLE_TUBS / "tub_v2"
CAR_DIGEST = frames.preprocessing_digest(frames.FrameSpec.from_dict(TINY_FRAME_SPEC))


def members_of(package: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}


def with_manifest(package: bytes, **changes: object) -> bytes:
    """``package`` with top-level manifest fields replaced (``None`` removes the field)."""
    members = members_of(package)
    manifest = json.loads(members["manifest.json"])
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    return tar_bytes(members)


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "car" / "state.json").read_text())


def current_arn(tmp_path: Path) -> str | None:
    current = state(tmp_path)["current"]
    return current["model_package_arn"] if current else None


def drive_two_frames(tmp_path: Path) -> int:
    return edge_main(
        ["run", "--root", str(tmp_path / "car"), "--local-root", str(tmp_path / "workspace"),
         "--group", GROUP, "--target", TARGET, "--source", str(TUB_V2), "--quiet", "--max-frames", "2"]
    )  # fmt: skip


def test_the_package_compile_writes_carries_the_car_s_digest_and_drives(car_workspace, capsys):
    tmp_path, aws = car_workspace
    package = onnx_pilot_package("v1")
    manifest = json.loads(members_of(package)["manifest.json"])
    assert manifest["preprocessing"] == {"version": frames.PREPROCESSING_VERSION, "digest": CAR_DIGEST}
    good = register(aws.sagemaker, aws.s3, package, key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0 and current_arn(tmp_path) == good
    capsys.readouterr()
    assert drive_two_frames(tmp_path) == 0
    assert "drove 2 frames" in capsys.readouterr().out


def test_a_tampered_digest_is_refused_at_pull_naming_both_digests(car_workspace, capsys):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    foreign = {"version": frames.PREPROCESSING_VERSION, "digest": "f" * 64}
    tampered = with_manifest(onnx_pilot_package("v2"), preprocessing=foreign)
    bad = register(aws.sagemaker, aws.s3, tampered, key="m/2/model.tar.gz")
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"refused: {bad}: file check: ") and out.count("\n") == 1
    assert f"trained with preprocessing {'f' * 64}" in out
    assert f"prepares its frame_spec as {CAR_DIGEST}" in out
    assert "update the car" in out and f"keeping {good}" in out
    assert current_arn(tmp_path) == good
    assert [key.split("#")[0] for key in state(tmp_path)["rejected"]] == [bad]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"frame_spec": None}, "records no frame_spec"),
        ({"preprocessing": None}, "trained with preprocessing (none recorded)"),
        ({"frame_spec": {**TINY_FRAME_SPEC, "crop_top": 20}}, "trained with preprocessing"),
        ({"frame_spec": {**TINY_FRAME_SPEC, "crop_top": 500}}, "records an invalid frame_spec"),
    ],
    ids=["no frame_spec", "no digest", "a crop changed under the digest", "an impossible crop"],
)
def test_a_package_without_this_car_s_preprocessing_never_installs(car_workspace, capsys, changes, message):
    """A new car with only such a package installs nothing: no default crop is guessed."""
    tmp_path, aws = car_workspace
    package = with_manifest(onnx_pilot_package("v1"), **changes)
    bad = register(aws.sagemaker, aws.s3, package, key="m/1/model.tar.gz")
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"refused: {bad}: file check: ") and message in out
    assert current_arn(tmp_path) is None


def test_an_artifact_whose_input_is_not_the_frame_spec_s_is_refused(tmp_path):
    manifest = json.loads(members_of(onnx_pilot_package("v1"))["manifest.json"])
    (artifact,) = manifest["artifacts"]
    camera_sized = {**artifact, "input": {**artifact["input"], "shape": [120, 160, 3]}}
    expected = r"takes \[120, 160, 3\], but the package's frame_spec gives \[40, 80, 3\]"
    with pytest.raises(drive.DriveError, match=expected):
        drive.frame_spec_of(manifest, camera_sized)
    assert drive.frame_spec_of(manifest, artifact) == frames.FrameSpec.from_dict(TINY_FRAME_SPEC)


def test_a_package_of_newer_preprocessing_installs_once_the_car_is_updated(
    car_workspace, capsys, monkeypatch
):
    """Refused by the old car (and not downloaded again by it); the updated car installs it."""
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    monkeypatch.setattr(frames, "PREPROCESSING_VERSION", frames.PREPROCESSING_VERSION + 1)
    newer = frames.preprocessing_record(frames.FrameSpec.from_dict(TINY_FRAME_SPEC))
    monkeypatch.undo()
    assert newer["digest"] != CAR_DIGEST
    package = with_manifest(onnx_pilot_package("v2"), preprocessing=newer)
    bad = register(aws.sagemaker, aws.s3, package, key="m/2/model.tar.gz")
    capsys.readouterr()
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert f"version {newer['version']}), but this code (preprocessing version {newer['version'] - 1})" in out
    assert current_arn(tmp_path) == good
    (entry,) = state(tmp_path)["rejected"].values()
    assert entry["preprocessing_version"] == frames.PREPROCESSING_VERSION
    assert pull(tmp_path) == 0 and capsys.readouterr().out.startswith("up-to-date"), "not tried again"

    monkeypatch.setattr(frames, "PREPROCESSING_VERSION", newer["version"])  # the car's software updated
    assert pull(tmp_path) == 0
    assert capsys.readouterr().out.startswith("installed") and current_arn(tmp_path) == bad
    assert state(tmp_path)["rejected"] == {}


def test_open_pilot_prepares_frames_with_the_package_s_spec(car_workspace):
    """What drives: the 120x160 camera frame cropped and resized to the 40x80 the manifest names."""
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    pilot = drive.open_pilot(tmp_path / "car" / "current")
    assert pilot.spec == frames.FrameSpec.from_dict(TINY_FRAME_SPEC)
    camera = np.zeros((120, 160, 3), np.uint8)
    camera[40:] = 255  # the rows the crop keeps are white: a mean of 1.0 gives angle 0.5
    assert pilot(camera)[0] == pytest.approx(0.5, abs=1e-6)


def test_an_archive_delivered_by_greengrass_is_checked_the_same_way(tmp_path, capsys):
    """``pull --archive`` (the Greengrass component's install) refuses a foreign digest and installs ours."""
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-pilot/"
    foreign = {"version": frames.PREPROCESSING_VERSION, "digest": "e" * 64}
    for version, package in ((1, with_manifest(onnx_pilot_package("v1"), preprocessing=foreign)),
                             (2, onnx_pilot_package("v2"))):  # fmt: skip
        archive = tmp_path / f"v{version}.tar.gz"
        archive.write_bytes(package)
        flags = ["pull", "--root", str(tmp_path / "car"), "--archive", str(archive)]
        flags += ["--model-package-arn", f"{arn}{version}", "--sha256", sha256(package)]
        code = edge_main(flags)
        out = capsys.readouterr().out
        if version == 1:
            assert code == 1 and out.startswith(f"refused: {arn}1: file check: ")
            assert f"trained with preprocessing {'e' * 64}" in out and CAR_DIGEST in out
        else:
            assert code == 0 and out.startswith("installed") and current_arn(tmp_path) == f"{arn}2"
