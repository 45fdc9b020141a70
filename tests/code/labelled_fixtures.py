"""Pre-labelled and reviewed manifests built by hand in the contract's format (docs/labelling.md,
"Formats"): what ``robocar label predict`` writes and ``robocar label review`` adds, on synthetic photos
whose truth is known, so a test can tell the reviewed label from the model's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.labelling import manifest
from pipelines.synth_boxes import write_boxes
from pipelines.synth_classes import write_classes

ATTRIBUTE = manifest.DEFAULT_ATTRIBUTE
REVIEWED = ATTRIBUTE + manifest.REVIEWED_SUFFIX
CREATED = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def truth_of(output_manifest: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output_manifest.read_text().splitlines()]


def local_ref(folder: Path, record: dict[str, Any]) -> str:
    return str((folder / "images" / record["source-ref"].rsplit("/", 1)[1]).resolve())


def reviewed(record: dict[str, Any], label: Any, *, adjusted: bool, objects: int = 0) -> dict[str, Any]:
    """``record`` plus the reviewer's ``label`` under ``<A>-adjusted``, its metadata the pre-label's shape
    with ``human-annotated: yes``, ``adjustment-status`` and confidence 1.0."""
    metadata = dict(record[ATTRIBUTE + "-metadata"])
    if "objects" in metadata:
        metadata["objects"] = [{"confidence": 1.0} for _ in range(objects)]
    else:
        metadata["confidence"] = 1.0  # the caller names the class (class-name)
    metadata.update(manifest.job_metadata("review-1", CREATED, human=True))
    metadata["adjustment-status"] = "adjusted" if adjusted else "unadjusted"
    return {**record, REVIEWED: label, REVIEWED + "-metadata": metadata}


def classification_sets(folder: Path, photos: int = 40) -> tuple[list[dict], list[dict], list[int]]:
    """(reviewed records, machine-labelled records, true class ids by photo) of ``photos`` synthetic
    photos of 3 classes: the first three quarters are reviewed, the model wrong on every fourth of them
    and the reviewer correcting it; the last quarter is accepted as machine labels (and right)."""
    write_classes(folder, classes=3, images=photos, seed=3)
    truth = truth_of(folder / "output.manifest")
    names = [""] * 3
    for line in truth:
        names[line["category"]] = line["category-metadata"]["class-name"]
    reviewed_records, machine = [], []
    for index, line in enumerate(truth):
        true = line["category"]
        predicted = (true + 1) % 3 if index % 4 == 0 and index < photos * 3 // 4 else true
        record = manifest.classification_record(
            local_ref(folder, line), predicted, names[predicted], 0.6 if predicted != true else 0.95,
            attribute=ATTRIBUTE, job_name="prelabel-1", created=CREATED,
        )  # fmt: skip
        if index < photos * 3 // 4:
            review = reviewed(record, true, adjusted=predicted != true)
            review[REVIEWED + "-metadata"]["class-name"] = names[true]
            reviewed_records.append(review)
        else:
            machine.append(record)
    return reviewed_records, machine, [line["category"] for line in truth]


def detection_sets(folder: Path, photos: int = 40) -> tuple[list[dict], list[dict], list[list[dict]]]:
    """As ``classification_sets`` for boxes: the model misses the last box of every fourth reviewed
    photo, the reviewer draws it back."""
    write_boxes(folder, classes=3, images=photos, seed=3)
    truth = truth_of(folder / "output.manifest")
    classes = ["circle", "square", "triangle"]
    reviewed_records, machine, true_boxes = [], [], []
    for index, line in enumerate(truth):
        size = line["bounding-box"]["image_size"][0]
        annotations = line["bounding-box"]["annotations"]
        predicted = annotations[:-1] if index % 4 == 0 and index < photos * 3 // 4 else annotations
        boxes = [manifest.PixelBox(a["class_id"], a["left"], a["top"], a["width"], a["height"], 0.8)
                 for a in predicted]  # fmt: skip
        record = manifest.detection_record(
            local_ref(folder, line), (size["width"], size["height"], size["depth"]), boxes, classes,
            attribute=ATTRIBUTE, job_name="prelabel-1", created=CREATED,
        )  # fmt: skip
        label = {"image_size": [size], "annotations": annotations}
        if index < photos * 3 // 4:
            reviewed_records.append(
                reviewed(record, label, adjusted=predicted != annotations, objects=len(annotations))
            )
        else:
            machine.append(record)
        true_boxes.append(annotations)
    return reviewed_records, machine, true_boxes
