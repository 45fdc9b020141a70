"""The halves of the auto-labelling loop fit (issue 19): ``robocar label predict`` on the car's runtime
writes what ``robocar label review``'s server opens; decisions sent through its HTTP API (as the page
sends them) give a reviewed manifest that ``robocar label land`` lands and the new-data rule starts one
execution on, and Preprocess's reader takes the reviewer's classes and boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edge_fixtures import register
from PIL import Image
from test_classifier_trigger import CLASSIFIER
from test_edge_classifier import classifier_package
from test_edge_detector import detector_package
from test_local_trigger import BUCKET as TRIGGER_BUCKET
from test_local_trigger import RecordingSageMaker
from test_review_server import decide, get_json

from pipelines.cli import main
from pipelines.labelling import manifest
from pipelines.labelling.review import start_review_server
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import poll_once
from processing.ground_truth import read_ground_truth
from processing.ground_truth_boxes import read_bounding_boxes
from processing.records import RecordValidator
from processing.tubs import Source

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
WORKSPACE_FLAGS = ["--group", "robocar-pilot", "--bucket", TRIGGER_BUCKET]


def photos(folder: Path) -> Path:
    """Solid photos the colour models know, and one half red, half green the classifier is unsure of."""
    folder.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (40, 30), rgb).save(folder / f"{name}.png")
    mixed = np.zeros((30, 40, 3), np.uint8)
    mixed[:, :20], mixed[:, 20:] = COLOURS["red"], COLOURS["green"]
    Image.fromarray(mixed).save(folder / "mixed.png")
    return folder


def predict(tmp_path: Path, folder: Path, recipe: str, *extra: str) -> Path:
    out = tmp_path / f"prelabels-{recipe}"
    where = ["--workspace", str(tmp_path / "workspace"), "--car-root", str(tmp_path / "labeller")]
    argv = [
        "label",
        "predict",
        str(folder),
        "--out",
        str(out),
        "--recipe",
        recipe,
        *where,
        *WORKSPACE_FLAGS,
        *extra,
    ]
    assert main(argv) == 0
    return out


def read(found: Path, reader, root: Path):  # noqa: ANN001, ANN202
    return reader(Source(found, "ground-truth", found.name), RecordValidator("ground_truth_record"), root, {})


def test_predict_review_land_retrains_on_the_reviewers_classes(car_workspace, tmp_path):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz")
    out = predict(tmp_path, photos(tmp_path / "photos"), "classifier", "--review-below", "0.9")
    server = start_review_server(out / manifest.TO_REVIEW, out / "to-review.reviewed.manifest")
    try:
        state = get_json(server.url, "/api/state")
        assert (state["kind"], state["attribute"], state["classes"]) == (
            "classification", "prelabel", ["red", "green", "blue"],
        )  # fmt: skip
        assert state["total"] == 1  # the mixed photo: the model was unsure
        record = get_json(server.url, "/api/records/0")
        assert record["source_ref"].endswith("mixed.png")
        decide(server.url, {"index": 0, "action": "correct", "class": "green"})
    finally:
        server.close()
    reviewed = out / "to-review.reviewed.manifest"
    (line,) = manifest.read_records(reviewed)
    assert line["prelabel-adjusted-metadata"]["adjustment-status"] == "adjusted"

    workspace = tmp_path / "workspace"
    flags = ["--recipe", "classifier", "--workspace", str(workspace), "--bucket", TRIGGER_BUCKET]
    assert main(["label", "land", str(reviewed), str(out / manifest.MACHINE_LABELLED), *flags]) == 0
    s3 = LocalS3Client(workspace)
    report = poll_once(workspace, s3, RecordingSageMaker(LocalSageMakerClient(workspace)), CLASSIFIER)
    assert len(report.started) == 1
    raw = s3.uri_to_path(f"s3://{TRIGGER_BUCKET}/robocar/raw-classifier/")
    (landed,) = raw.glob("labelled/*/output.manifest")
    result, candidates = read(landed, read_ground_truth, raw)
    assert result.rejected == 0
    labels = {Path(r["source-ref"]).name: r for r in manifest.read_records(landed)}
    assert len(labels) == 4
    by_photo = dict(zip(labels, ((c.label, c.machine_labelled) for c in candidates), strict=True))
    mixed = next(n for n, r in labels.items() if "prelabel-adjusted" in r)
    assert by_photo.pop(mixed) == (1, False)  # the reviewer's green, a human label
    assert sorted(by_photo.values()) == [(0, True), (1, True), (2, True)]  # red, green, blue: machine


def test_predict_review_land_keeps_the_reviewers_boxes(car_workspace, tmp_path):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, detector_package("d1"), key="models/d1.tar.gz")
    folder = tmp_path / "boxes"
    folder.mkdir()
    Image.new("RGB", (40, 30), COLOURS["red"]).save(folder / "red.png")
    out = predict(tmp_path, folder, "detection")
    server = start_review_server(out / manifest.TO_REVIEW, out / "to-review.reviewed.manifest")
    try:
        record = get_json(server.url, "/api/records/0")
        (box,) = record["prelabel"]["boxes"]
        assert (box["class"], box["left"], box["top"], box["width"], box["height"]) == ("red", 4, 3, 16, 12)
        moved = {"class": "red", "left": 5, "top": 4, "width": 20, "height": 14}
        decide(
            server.url,
            {
                "index": 0,
                "action": "correct",
                "boxes": [moved, {**moved, "class": "blue", "left": 26, "width": 10}],
            },
        )
    finally:
        server.close()
    workspace = tmp_path / "workspace"
    flags = ["--recipe", "detection", "--workspace", str(workspace), "--bucket", TRIGGER_BUCKET]
    assert main(["label", "land", str(out / "to-review.reviewed.manifest"), *flags]) == 0
    raw = LocalS3Client(workspace).uri_to_path(f"s3://{TRIGGER_BUCKET}/robocar/raw-detection/")
    (landed,) = raw.glob("labelled/*/output.manifest")
    result, (candidate,) = read(landed, read_bounding_boxes, raw)
    assert result.rejected == 0 and not candidate.machine_labelled
    assert [b[0] for b in candidate.boxes] == [0, 2]
    np.testing.assert_allclose(candidate.boxes[0][1:], (5 / 40, 4 / 30, 25 / 40, 18 / 30))
