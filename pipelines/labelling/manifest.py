"""The records of the auto-labelling loop: Ground Truth output-manifest lines with a model's pre-labels.

``robocar label predict`` writes, ``robocar label review`` and a Ground Truth adjustment job read and
extend, ``robocar label land`` and the recipes' Preprocess read (docs/labelling.md, "Formats"). A record is
exactly what the matching Ground Truth task writes ("Labeling job output data",
https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html), the labels marked
``"human-annotated": "no"`` as automated data labeling marks its own
(https://docs.aws.amazon.com/sagemaker/latest/dg/sms-automated-labeling.html):

- classification: ``A: <class id>``, ``A-metadata: {"class-name", "confidence", "type":
  "groundtruth/image-classification", "job-name": "labeling-job/<job>", "human-annotated", "creation-date"}``;
- detection: ``A: {"image_size": [{"width", "height", "depth"}], "annotations": [{"class_id", "left",
  "top", "width", "height"}]}`` in pixels, ``A-metadata: {"objects": [{"confidence"}], "class-map",
  "type": "groundtruth/object-detection", "human-annotated", "creation-date", "job-name"}``.

A record's confidence (what ``--review-below`` routes on) is the class's, or a detection's lowest box
confidence; a photo with no box scores 0, so a person looks at it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_bytes
from processing.ground_truth import ADJUSTMENT_STATUS, CLASSIFICATION_TYPE, METADATA_SUFFIX
from processing.ground_truth_boxes import DETECTION_TYPE

CLASSIFICATION, DETECTION = "classification", "detection"
TASK_TYPES = {CLASSIFICATION: CLASSIFICATION_TYPE, DETECTION: DETECTION_TYPE}
RECIPE_TASKS = {"classifier": CLASSIFICATION, "detection": DETECTION}
# The pre-label's attribute; a review writes ``<A>-adjusted`` beside it (an adjustment job's attribute must
# differ from the original's: https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-start-api.html).
DEFAULT_ATTRIBUTE = "prelabel"
REVIEWED_SUFFIX = "-adjusted"
# CreateLabelingJob's LabelAttributeName and LabelingJobName (botocore's sagemaker model): 1-127 / 1-63
# characters of this pattern.
ATTRIBUTE_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}")
JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
TO_REVIEW = "to-review.manifest"
MACHINE_LABELLED = "machine-labelled.manifest"
CATEGORIES = "label-categories.json"
PREDICT_REPORT = "predict-report.json"
CATEGORIES_VERSION = "2018-11-28"  # the label category configuration file's document-version


def check_attribute(name: str) -> str:
    """``name`` if CreateLabelingJob takes it as LabelAttributeName and Ground Truth can read it back
    (not ending in -metadata, nor -ref: a data reference in an augmented manifest,
    https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html); else ValueError."""
    if not ATTRIBUTE_PATTERN.fullmatch(name) or name.endswith(("-metadata", "-ref")):
        raise ValueError(
            f"label attribute {name!r}: 1-127 of [a-zA-Z0-9-], starting and ending alphanumeric, "
            "not ending in -metadata or -ref"
        )
    return name


def check_job_name(name: str) -> str:
    if not JOB_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"job name {name!r}: 1-63 of [a-zA-Z0-9-], starting and ending alphanumeric")
    return name


def creation_date(when: datetime) -> str:
    """Ground Truth's creation-date: ISO 8601 without a zone, microseconds; an aware time in UTC, a naive
    one as it is."""
    return (when.astimezone(UTC) if when.tzinfo else when).strftime("%Y-%m-%dT%H:%M:%S.%f")


def job_metadata(job_name: str, created: datetime, human: bool) -> dict[str, str]:
    """The metadata keys every labeling job writes: ``job-name`` (``labeling-job/<name>``, as jobs write
    it; the output page's example shows the bare name), ``human-annotated`` and ``creation-date``."""
    return {
        "job-name": f"labeling-job/{job_name}",
        "human-annotated": "yes" if human else "no",
        "creation-date": creation_date(created),
    }


def classification_record(
    source_ref: str,
    class_id: int,
    class_name: str,
    confidence: float,
    *,
    attribute: str,
    job_name: str,
    created: datetime,
    human: bool = False,
) -> dict[str, Any]:
    """An image-classification job's output line for one photo, keys in the service's order."""
    return {
        "source-ref": source_ref,
        attribute: int(class_id),
        attribute + METADATA_SUFFIX: {
            "class-name": class_name,
            "confidence": round(float(confidence), 4),
            "type": CLASSIFICATION_TYPE,
            **job_metadata(job_name, created, human),
        },
    }


@dataclass(frozen=True)
class PixelBox:
    """One pre-labelled box in pixels of the photo, as a bounding-box job writes it."""

    class_id: int
    left: int
    top: int
    width: int
    height: int
    confidence: float


def pixel_box(row: Sequence[float], size: tuple[int, int]) -> PixelBox:
    """A decoded detection ``[class_id, score, xmin, ymin, xmax, ymax]`` (normalised) -> a PixelBox of a
    ``size`` (width, height) photo, rounded to whole pixels inside it and at least 1 pixel wide and high."""
    width, height = size
    left = min(max(round(float(row[2]) * width), 0), width - 1)
    top = min(max(round(float(row[3]) * height), 0), height - 1)
    right = min(max(round(float(row[4]) * width), left + 1), width)
    bottom = min(max(round(float(row[5]) * height), top + 1), height)
    return PixelBox(int(row[0]), left, top, right - left, bottom - top, float(row[1]))


def box_label(size: tuple[int, int, int], boxes: Sequence[Any]) -> dict[str, Any]:
    """A bounding-box job's label: ``image_size`` (width, height, depth) and each box's ``class_id``,
    ``left``, ``top``, ``width``, ``height`` in pixels (``boxes``: anything with those attributes)."""
    width, height, depth = size
    return {
        "image_size": [{"width": width, "height": height, "depth": depth}],
        "annotations": [
            {"class_id": b.class_id, "left": b.left, "top": b.top, "width": b.width, "height": b.height}
            for b in boxes
        ],
    }


def detection_record(
    source_ref: str,
    size: tuple[int, int, int],
    boxes: Sequence[PixelBox],
    classes: Sequence[str],
    *,
    attribute: str,
    job_name: str,
    created: datetime,
) -> dict[str, Any]:
    """A bounding-box job's output line for one photo of ``size`` (width, height, depth); the class-map
    names every class of the model, so ids keep their names whatever a photo shows."""
    metadata = job_metadata(job_name, created, human=False)
    return {
        "source-ref": source_ref,
        attribute: box_label(size, boxes),
        attribute + METADATA_SUFFIX: {
            "objects": [{"confidence": round(b.confidence, 4)} for b in boxes],
            "class-map": {str(i): name for i, name in enumerate(classes)},
            "type": DETECTION_TYPE,
            **{key: metadata[key] for key in ("human-annotated", "creation-date", "job-name")},
        },
    }


def record_confidence(record: dict[str, Any], attribute: str) -> float:
    """The confidence ``--review-below`` routes on: the class's, or the lowest box's (0 with no box)."""
    metadata = record[attribute + METADATA_SUFFIX]
    if metadata.get("type") == DETECTION_TYPE:
        scores = [float(o.get("confidence", 0.0)) for o in metadata.get("objects", [])]
        return min(scores) if scores else 0.0
    return float(metadata.get("confidence", 0.0))


def categories_document(classes: Sequence[str]) -> dict[str, Any]:
    """Ground Truth's label category configuration: class id = position in ``labels``
    (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-label-cat-config-attributes.html)."""
    return {"document-version": CATEGORIES_VERSION, "labels": [{"label": name} for name in classes]}


def classes_of_categories(document: dict[str, Any]) -> list[str]:
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, dict) and x.get("label") for x in labels):
        raise ValueError('a label category file is {"document-version", "labels": [{"label": name}, ...]}')
    return [str(x["label"]) for x in labels]


def find_attribute(record: dict[str, Any]) -> str:
    """The pre-label attribute of a record ``predict`` wrote: the one with metadata and no adjustment."""
    names = [
        k for k in record
        if k != "source-ref" and isinstance(record.get(k + METADATA_SUFFIX), dict)
        and ADJUSTMENT_STATUS not in record[k + METADATA_SUFFIX]
    ]  # fmt: skip
    if len(names) != 1:
        raise ValueError(f"expected one label attribute with metadata, found {names or 'none'}")
    return names[0]


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines manifest (blank lines skipped); ValueError names a bad line."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("source-ref"), str):
            raise ValueError(f"{path}:{number}: not a manifest record (no source-ref)")
        records.append(record)
    return records


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """JSON Lines, written atomically."""
    atomic_write_bytes(Path(path), "".join(dumps(r) + "\n" for r in records).encode())
