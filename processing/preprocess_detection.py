"""Preprocess step of the detection recipe: Ground Truth bounding-box manifests and their photos ->
train/validation/test photos with normalised boxes, accounting for every record.

Runs in a SageMaker Processing container and, unchanged, as a local process::

    python processing/preprocess_detection.py --input IN --output OUT [--image-size 128] [--seed 0]
        [--output-uri s3://bucket/prefix]

``IN`` holds one dataset snapshot: any number of bounding-box output manifests (``*.manifest``, at any
depth) and the photos they name, read by ``processing.ground_truth_boxes`` (which records it rejects
and why). ``OUT``, per split:

* ``images/NNNNNN.jpg``: each accepted photo as RGB **stretched** to ``N`` x ``N`` (``edge.photos.stretch``,
  what the detector sees on the car), JPEG quality 95; numbers run from 0 in each split, in the order
  (manifest name, record index). A photo whose real size is not its ``image_size`` is rejected
  (``image wrong size``): its boxes would land elsewhere.
* ``annotations.jsonl``: one line per photo, ``{"image": "images/NNNNNN.jpg", "boxes": [[class id, xmin,
  ymin, xmax, ymax], ...]}``, coordinates normalised to [0, 1] of the photo, so the same numbers hold
  in the stretched one. A photo without objects has ``"boxes": []`` (a negative: valid training data).
* ``classes.json``: class names by id.
* with ``--output-uri``: ``<split>.manifest``, an augmented manifest of the same photos for the built-in
  algorithm's Pipe mode: ``source-ref`` under the URI, the attribute ``boxes`` in Ground Truth's
  bounding-box form in pixels of the stretched photo (``image_size`` N x N x 3), ``boxes-metadata``.

``report/data-report.json``: the classifier's accounting (``processing.preprocess_classifier``: counts,
rejections by reason and by manifest + record index, duplicates, human and machine labels, splits by
the photo's bytes) plus per split its objects, objects per class and negatives, and the built-in
algorithm's hyperparameters ``num_classes`` and ``num_training_samples``. Too little data (no class,
an empty split, a class without a train object) writes the report and fails with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_bytes
from edge.photos import ANNOTATIONS_FILE, CLASSES_FILE, PhotoError, open_rgb, stretch
from processing.ground_truth_boxes import DETECTION_TYPE, read_bounding_boxes
from processing.preprocess_classifier import (
    JPEG_QUALITY,
    Accepted,
    Outcome,
    accounting_report,
    add_preprocess_arguments,
    encode_jpeg,
    image_name,
    preprocess_main,
    run_recipe,
    summary_line,
    too_little_data,
)
from processing.records import Rejection
from processing.splits import SPLITS
from processing.tubs import Candidate

PROG = "preprocess_detection"
DEFAULT_IMAGE_SIZE = 128  # the SSD trainer's input side
REPORT_FORMAT = "robocar-detection-data-report/1"
AUGMENTED_ATTRIBUTE = "boxes"  # the training channel's AttributeNames: ["source-ref", "boxes"]
COORDINATE_DIGITS = 6  # normalised coordinates: 1e-6 of a side, far below a pixel at any size


def stretched_jpeg(candidate: Candidate, side: int) -> bytes:
    """The photo stretched to ``side`` x ``side`` as an RGB JPEG; ``Rejection`` if it cannot be decoded
    or is not the size its manifest declares."""
    try:
        image = open_rgb(candidate.image_path)
    except PhotoError as exc:
        raise Rejection("image unreadable", str(exc)) from None
    if candidate.image_size is not None and image.size != candidate.image_size:
        declared = "x".join(str(v) for v in candidate.image_size)
        raise Rejection(
            "image wrong size",
            f"{Path(candidate.image_path).name} is {image.width}x{image.height}, image_size says {declared}",
        )
    return encode_jpeg(stretch(image, side, side))


def annotation_line(photo: Accepted) -> str:
    """One ``annotations.jsonl`` line: the photo's path in its split and its normalised boxes."""
    boxes = [
        [class_id, *(round(v, COORDINATE_DIGITS) for v in corners)] for class_id, *corners in photo.boxes
    ]
    return json.dumps({"image": image_name(photo.number), "boxes": boxes}, separators=(",", ":")) + "\n"


def augmented_line(output_uri: str, split: str, photo: Accepted, classes: Sequence[str], side: int) -> str:
    """One augmented-manifest line for the built-in algorithm's Pipe mode: the stretched photo and its
    boxes in Ground Truth's bounding-box form, pixels of the ``side`` x ``side`` photo rounded to 0.01
    (https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection.html, augmented manifest;
    https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html)."""

    def pixels(value: float) -> float:
        return round(value * side, 2)

    annotations = [
        {
            "class_id": class_id,
            "left": pixels(xmin),
            "top": pixels(ymin),
            "width": pixels(xmax - xmin),
            "height": pixels(ymax - ymin),
        }
        for class_id, xmin, ymin, xmax, ymax in photo.boxes
    ]
    record = {
        "source-ref": f"{output_uri}/{split}/{image_name(photo.number)}",
        "origin": photo.origin,
        AUGMENTED_ATTRIBUTE: {
            "image_size": [{"width": side, "height": side, "depth": 3}],
            "annotations": annotations,
        },
        f"{AUGMENTED_ATTRIBUTE}-metadata": {
            "class-map": {str(k): classes[k] for k in sorted({box[0] for box in photo.boxes})},
            "type": DETECTION_TYPE,
            "human-annotated": "no" if photo.machine_labelled else "yes",
        },
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def write_outputs(
    split_dirs: dict[str, Path],
    accepted: Sequence[Accepted],
    classes: Sequence[str],
    output_uri: str | None,
    side: int,
) -> None:
    """Each split's annotations.jsonl, classes.json and, with an output URI, augmented manifest."""
    for split, split_dir in split_dirs.items():
        photos = [photo for photo in accepted if photo.split == split]
        atomic_write_bytes(
            split_dir / ANNOTATIONS_FILE, "".join(map(annotation_line, photos)).encode("utf-8")
        )
        atomic_write_bytes(split_dir / CLASSES_FILE, (json.dumps(list(classes)) + "\n").encode("utf-8"))
        if output_uri is not None:
            text = "".join(augmented_line(output_uri, split, p, classes, side) for p in photos)
            atomic_write_bytes(split_dir / f"{split}.manifest", text.encode("utf-8"))


def split_counts(accepted: Sequence[Accepted], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per split: photos, objects, objects per class name (every class listed, 0 included), negatives."""
    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        photos = [photo for photo in accepted if photo.split == split]
        per_class = Counter(box[0] for photo in photos for box in photo.boxes)
        counts[split] = {
            "images": len(photos),
            "objects": sum(per_class.values()),
            "objects_per_class": {name: per_class.get(label, 0) for label, name in enumerate(classes)},
            "negatives": sum(not photo.boxes for photo in photos),
        }
    return counts


def build_report(
    args: argparse.Namespace,
    reports: Sequence[Any],
    outcome: Outcome,
    classes: Sequence[str],
    fractions: Sequence[float],
    output_uri: str | None = None,
) -> dict[str, Any]:
    splits = split_counts(outcome.accepted, classes)
    failure = too_little_data(
        classes, splits, model="detector", min_classes=1, per_class="objects_per_class", unit="object"
    )
    report = accounting_report(
        args,
        reports,
        outcome,
        classes,
        fractions,
        splits,
        failure,
        recipe="detection",
        report_format=REPORT_FORMAT,
    )
    report.update(
        {
            "image_size": args.image_size,
            "resize": "stretch",
            "jpeg_quality": JPEG_QUALITY,
            "output_uri": output_uri,
            "objects_per_photo_max": max((len(p.boxes) for p in outcome.accepted), default=0),
            # The built-in object-detection algorithm requires both as hyperparameters
            # (https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-api-config.html).
            "builtin": {"num_classes": len(classes), "num_training_samples": splits["train"]["images"]},
        }
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess_detection.py",
        description="Turn SageMaker Ground Truth bounding-box manifests and their photos into "
        "train/validation/test photos stretched to a square with normalised boxes, accounting for "
        "every record.",
        epilog="Exit status: 0 ok; 1 too little data (no class, a class without a train object, an "
        "empty split); 2 bad input or options; 70 a bug. The report is written whenever the manifests "
        "could be read.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_preprocess_arguments(
        parser, DEFAULT_IMAGE_SIZE, "the detector's input side; photos are stretched to N x N"
    )
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole step; returns data-report.json's content. Raises PreprocessError / DataQualityError."""
    side = args.image_size
    return run_recipe(
        args,
        read_manifest=read_bounding_boxes,
        split_outputs=(ANNOTATIONS_FILE,),
        convert=lambda candidate: stretched_jpeg(candidate, side),
        write_outputs=lambda dirs, accepted, classes, uri: write_outputs(dirs, accepted, classes, uri, side),
        build_report=build_report,
    )


def summary(report: dict[str, Any], seconds: float) -> str:
    """The classifier's summary line at the stretched side, and the objects."""
    objects = sum(report["splits"][split]["objects"] for split in SPLITS)
    return f"{summary_line(report, seconds, report['image_size'])}; {objects} objects"


def main(argv: Sequence[str] | None = None) -> int:
    return preprocess_main(PROG, build_parser(), run, summary, argv)


if __name__ == "__main__":
    sys.exit(main())
