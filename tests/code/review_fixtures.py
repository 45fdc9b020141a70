"""Pre-labelled manifests as ``robocar label predict`` writes them (docs/labelling-review.md), with tiny
synthetic images, for the review server's and the review page's tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

CLASSES = ["cat", "dog", "bird"]
BOX_CLASSES = ["cone", "car"]
CREATED = "2026-12-02T11:00:00.000000"
PRELABEL_JOB = "labeling-job/robocar-prelabel"
Box = tuple[int, int, int, int]  # left, top, width, height


def write_image(
    path: Path, size: tuple[int, int], colour: tuple[int, int, int], boxes: Sequence[Box] = ()
) -> Path:
    """A flat photo with filled rectangles where ``boxes`` (left, top, width, height) are: something to
    see under a pre-label's box in the screenshots."""
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    for n, (left, top, width, height) in enumerate(boxes):
        draw.rectangle([left, top, left + width - 1, top + height - 1], fill=(230, 120 + 60 * n, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_manifest(path: Path, records: list[dict[str, Any]], classes: list[str]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    categories = {"document-version": "2018-11-28", "labels": [{"label": name} for name in classes]}
    (path.parent / "label-categories.json").write_text(json.dumps(categories))
    return path


def classification_record(ref: str, class_id: int, confidence: float) -> dict[str, Any]:
    return {
        "source-ref": ref,
        "prelabel": class_id,
        "prelabel-metadata": {
            "class-name": CLASSES[class_id], "confidence": confidence,
            "type": "groundtruth/image-classification", "job-name": PRELABEL_JOB, "human-annotated": "no",
            "creation-date": CREATED,
        },
    }  # fmt: skip


def classification_manifest(folder: Path, count: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """``count`` records, least confident first; images PNG and JPEG with a shape in the middle."""
    records = []
    width, height = size
    for i in range(count):
        suffix = ".png" if i % 2 == 0 else ".jpg"
        shape = [(width // 4 + 2 * i, height // 4, width // 2, height // 2)]
        colour = (40 * i % 255, 90, 160)
        image = write_image(folder / "images" / f"photo{i}{suffix}", size, colour, shape)
        records.append(classification_record(str(image), i % len(CLASSES), round(0.3 + 0.1 * i, 2)))
    return write_manifest(folder / "to-review.manifest", records, CLASSES)


def detection_record(
    ref: str, size: tuple[int, int], boxes: list[tuple[int, int, int, int, int, float]]
) -> dict[str, Any]:
    """``boxes``: (class id, left, top, width, height, confidence)."""
    return {
        "source-ref": ref,
        "prelabel": {
            "image_size": [{"width": size[0], "height": size[1], "depth": 3}],
            "annotations": [
                {"class_id": c, "left": x, "top": y, "width": w, "height": h} for c, x, y, w, h, _ in boxes
            ],
        },
        "prelabel-metadata": {
            "objects": [{"confidence": box[5]} for box in boxes],
            "class-map": {str(i): name for i, name in enumerate(BOX_CLASSES)},
            "type": "groundtruth/object-detection", "human-annotated": "no", "creation-date": CREATED,
            "job-name": PRELABEL_JOB,
        },
    }  # fmt: skip


DETECTION_BOXES = [
    [(0, 40, 30, 60, 50, 0.42)],
    [(1, 150, 60, 80, 60, 0.55), (0, 30, 100, 40, 40, 0.9)],
    [],
    [(1, 100, 80, 90, 70, 0.3)],
    [(0, 10, 10, 30, 30, 0.2), (1, 200, 120, 100, 90, 0.61)],
]


def detection_manifest(folder: Path, size: tuple[int, int] = (320, 240)) -> Path:
    records = []
    for i, boxes in enumerate(DETECTION_BOXES):
        rectangles = [box[1:5] for box in boxes]
        image = write_image(folder / "images" / f"scene{i}.png", size, (60, 110 + 30 * i, 70), rectangles)
        records.append(detection_record(str(image), size, boxes))
    return write_manifest(folder / "to-review.manifest", records, BOX_CLASSES)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
