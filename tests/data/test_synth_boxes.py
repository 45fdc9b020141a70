"""Synthetic photos with objects at known boxes: a Ground Truth bounding-box output manifest.

Key layout: "Labeling job output data" (bounding box), https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html;
adjustment jobs' ``adjustment-status``: https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-manifest.html
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.cli import main as robocar
from pipelines.synth_boxes import (
    DETECTION_CLASS_NAMES,
    MAX_OBJECTS,
    MAX_OVERLAP_IOU,
    iou,
    shape_box,
    write_boxes,
)
from pipelines.synth_classes import MANIFEST_NAME, MIN_CONTRAST, draw_shape
from processing.ground_truth import class_list
from processing.ground_truth_boxes import read_bounding_boxes
from processing.records import RecordValidator
from processing.tubs import discover_sources

METADATA_KEYS = {"objects", "class-map", "type", "human-annotated", "creation-date", "job-name"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boxes") / "labels"
    write_boxes(out, classes=4, images=80, seed=5)
    return out


def manifest_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def photo_of(out: Path, record: dict) -> Image.Image:
    return Image.open(out / "images" / record["source-ref"].rsplit("/", 1)[1])


def test_every_line_has_the_keys_the_service_writes(synth: Path) -> None:
    records = manifest_records(synth)
    assert len(records) == 80
    statuses = []
    for record in records:
        assert set(record) == {"source-ref", "bounding-box", "bounding-box-metadata"}
        assert record["source-ref"].startswith("s3://") and record["source-ref"].endswith(".jpg")
        label, metadata = record["bounding-box"], record["bounding-box-metadata"]
        assert set(label) == {"image_size", "annotations"}
        (size,) = label["image_size"]
        assert set(size) == {"width", "height", "depth"}
        for box in label["annotations"]:
            assert set(box) == {"class_id", "left", "top", "width", "height"}
            assert all(type(v) is int for v in box.values())
        assert set(metadata) - {"adjustment-status"} == METADATA_KEYS
        assert metadata["type"] == "groundtruth/object-detection"
        assert len(metadata["objects"]) == len(label["annotations"])
        assert all(0.0 <= o["confidence"] <= 1.0 for o in metadata["objects"])
        ids = {box["class_id"] for box in label["annotations"]}
        assert metadata["class-map"] == {str(k): DETECTION_CLASS_NAMES[k] for k in sorted(ids)}
        assert metadata["human-annotated"] in ("yes", "no")
        assert datetime.fromisoformat(metadata["creation-date"]).tzinfo is None
        if "adjustment-status" in metadata:
            statuses.append(metadata["adjustment-status"])
            assert metadata["job-name"] == "labeling-job/robocar-synth-boxes-adjust"
        else:
            assert metadata["job-name"] == "labeling-job/robocar-synth-boxes"
    humans = [r["bounding-box-metadata"]["human-annotated"] for r in records]
    assert 2 <= humans.count("no") <= 20  # about a tenth, as automated labelling writes them
    assert statuses and set(statuses) <= {"adjusted", "unadjusted"}


def test_photos_hold_one_to_four_objects_inside_overlapping_a_little(synth: Path) -> None:
    counts, touching, overlapping, classes = [], 0, 0, set()
    for record in manifest_records(synth):
        (size,) = record["bounding-box"]["image_size"]
        photo = photo_of(synth, record)
        assert (size["width"], size["height"]) == photo.size
        assert size["depth"] == (1 if photo.mode == "L" else 3)
        boxes = record["bounding-box"]["annotations"]
        counts.append(len(boxes))
        corners = []
        for box in boxes:
            classes.add(box["class_id"])
            right, bottom = box["left"] + box["width"], box["top"] + box["height"]
            assert box["width"] > 0 and box["height"] > 0
            assert box["left"] >= 0 and box["top"] >= 0
            assert right <= size["width"] and bottom <= size["height"]
            touching += box["left"] == 0 or box["top"] == 0
            touching += right == size["width"] or bottom == size["height"]
            corners.append((box["left"], box["top"], right, bottom))
        for n, a in enumerate(corners):
            for b in corners[n + 1 :]:
                assert iou(a, b) <= MAX_OVERLAP_IOU
                overlapping += iou(a, b) > 0
    assert min(counts) >= 1 and max(counts) == MAX_OBJECTS and len(set(counts)) == MAX_OBJECTS
    assert classes == {0, 1, 2, 3}
    assert touching >= 5  # objects cut by the photo's edge
    assert overlapping >= 3  # and some overlapping a little


def test_each_box_holds_its_object_and_the_rest_is_background(synth: Path) -> None:
    for record in manifest_records(synth)[:30]:
        grey = np.asarray(photo_of(synth, record).convert("L"), dtype=np.float32)
        inside = np.zeros(grey.shape, dtype=bool)
        boxes = record["bounding-box"]["annotations"]
        for box in boxes:
            inside[box["top"] : box["top"] + box["height"], box["left"] : box["left"] + box["width"]] = True
        background = np.median(grey[~inside])
        # Outside every box, the photo is background (noise and blur only; a blurred edge leaks 1-2 px).
        far = ~np.asarray(Image.fromarray(inside).filter(_grow(5)))
        assert np.mean(np.abs(grey[far] - background) > MIN_CONTRAST / 2) < 0.02
        for box in boxes:  # inside each box, a good part of the pixels are the object
            patch = grey[box["top"] : box["top"] + box["height"], box["left"] : box["left"] + box["width"]]
            assert np.mean(np.abs(patch - background) > MIN_CONTRAST / 2) > 0.2


def _grow(pixels: int):  # noqa: ANN202 - a Pillow filter
    from PIL import ImageFilter

    return ImageFilter.MaxFilter(2 * pixels + 1)


def test_a_shapes_box_is_its_pixels_and_is_measured_whole_across_an_edge() -> None:
    box, visible = shape_box("circle", (100, 80), (50.0, 40.0, 10.0), 0.0)
    mask = Image.new("L", (100, 80))
    draw_shape(ImageDraw.Draw(mask), "circle", (50.0, 40.0, 10.0), 0.0, 255)
    assert box == mask.getbbox() and visible == 1.0
    assert box == (40, 30, 61, 51)
    cut, visible = shape_box("square", (100, 80), (0.0, 40.0, 10.0), 0.0)  # centred on the left edge
    assert cut[0] == 0 and 0.4 < visible < 0.6


def test_same_seed_same_bytes_other_seed_other_photos(tmp_path: Path, synth: Path) -> None:
    def digest(folder: Path) -> str:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    write_boxes(tmp_path / "again", classes=4, images=80, seed=5)
    assert digest(tmp_path / "again") == digest(synth)
    write_boxes(tmp_path / "other", classes=4, images=80, seed=6)
    assert digest(tmp_path / "other") != digest(synth)


@pytest.mark.parametrize(
    ("classes", "images", "attribute", "message"),
    [(0, 10, "b", "classes must be"), (7, 10, "b", "classes must be"), (2, 0, "b", "images must be"),
     (2, 4, "b-ref", "may not end in -ref")],
)  # fmt: skip
def test_bad_arguments_are_refused(
    tmp_path: Path, classes: int, images: int, attribute: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_boxes(tmp_path / "x", classes, images, 0, attribute=attribute)


def test_command_writes_the_set_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "d")
    argv = ["data", "synth", "--detection", "--out", out, "--classes", "2", "--images", "6", "--seed", "4"]
    assert robocar(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote 6 photos with ") and " circle, " in printed and " square; " in printed
    assert len(manifest_records(Path(out))) == 6 and len(list(Path(out, "images").iterdir())) == 6
    assert robocar(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert robocar([*argv, "--classifier"]) == 2
    assert "one of --classifier and --detection" in capsys.readouterr().err


def test_the_pipelines_bounding_box_reader_accepts_every_record(synth: Path) -> None:
    (source,) = discover_sources(synth)
    assert source.format == "ground-truth"
    classes: dict[int, str] = {}
    report, candidates = read_bounding_boxes(source, RecordValidator("ground_truth_record"), synth, classes)
    assert (report.read, report.rejected, len(candidates)) == (80, 0, 80)
    assert class_list(classes) == list(DETECTION_CLASS_NAMES[:4])
    records = manifest_records(synth)
    assert sum(c.machine_labelled for c in candidates) == sum(
        r["bounding-box-metadata"]["human-annotated"] == "no" for r in records
    )
    for candidate, record in zip(candidates, records, strict=True):
        (size,) = record["bounding-box"]["image_size"]
        assert candidate.image_size == (size["width"], size["height"])
        expected = [
            (a["class_id"], a["left"] / size["width"], a["top"] / size["height"],
             (a["left"] + a["width"]) / size["width"], (a["top"] + a["height"]) / size["height"])
            for a in record["bounding-box"]["annotations"]
        ]  # fmt: skip
        assert np.allclose(candidate.boxes, expected) if expected else candidate.boxes == ()
