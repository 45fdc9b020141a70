"""SageMaker Ground Truth bounding-box output manifests -> validated candidate photos with boxes.

A line (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html, bounding box)::

    {"source-ref": "s3://bucket/img.jpg",
     "K": {"image_size": [{"width": W, "height": H, "depth": 3}],
           "annotations": [{"class_id": 0, "left": x, "top": y, "width": w, "height": h}, ...]},
     "K-metadata": {"objects": [{"confidence": 0.9}, ...], "class-map": {"0": "cone"},
                    "type": "groundtruth/object-detection", "human-annotated": "yes", ...}}

Coordinates are pixels of the photo as ``image_size`` declares it. Lines are read, and their photos
found, by ``processing.ground_truth``'s rules (record index = line number, ``source-ref`` resolution,
bounds, the label attribute detected unless named: of several, the one of type object detection).

A record is rejected, with the annotation's position in the reason, for: ``image_size`` that is not one
``{width, height[, depth]}`` of positive integers (``schema``); an annotation that is not an object of
finite numbers with an integer ``class_id`` (``schema``, ``non-finite value``, ``out of range``); a class
id the record's ``class-map`` does not name (``unknown class``); zero or negative width or height
(``empty box``); a box reaching more than ``EDGE_TOLERANCE_PX`` beyond the image (``box outside image``).
A box within the tolerance is clipped to the image. A record with no annotation is a valid photo
(a negative: nothing to detect in it). The classes are the union of the class-maps; an id named
differently in two records rejects the later one (``label conflict``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from processing.ground_truth import (
    HUMAN_ANNOTATED,
    METADATA_SUFFIX,
    check_class_id,
    check_source_ref,
    checked_class_name,
    label_attribute,
    read_manifest,
    register_classes,
)
from processing.limits import DEFAULT_LIMITS, DataLimits, RecordBudget
from processing.records import RecordValidator, Rejection
from processing.tubs import Candidate, Source, SourceReport

DETECTION_TYPE = "groundtruth/object-detection"  # K-metadata's type for a bounding-box job
# Labelling tools may round a box drawn up to the edge outward by a pixel; more than that is a box that
# does not belong to this photo (another size, a wrong image_size).
EDGE_TOLERANCE_PX = 1.0
MAX_DEPTH = 4  # channels: grey 1, RGB 3, RGBA 4
CLASS_KEY = re.compile(r"0|[1-9][0-9]{0,8}")  # class-map keys are class ids written as decimal strings
BOX_FIELDS = ("left", "top", "width", "height")

NormalisedBox = tuple[int, float, float, float, float]


def read_bounding_boxes(
    source: Source,
    validator: RecordValidator,
    input_root: Path,
    classes: dict[int, str],
    attribute: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
    budget: RecordBudget | None = None,
) -> tuple[SourceReport, list[Candidate]]:
    """Read one bounding-box manifest; ``classes`` (id -> name, from the class-maps) is shared across
    manifests and filled in. Each candidate's ``boxes`` are normalised to [0, 1]."""

    def check(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return check_boxes_record(record, attribute, limits, classes)

    return read_manifest(source, validator, input_root, check, limits, budget)


def check_boxes_record(
    record: dict[str, Any], attribute: str | None, limits: DataLimits, classes: dict[int, str]
) -> tuple[str, dict[str, Any]]:
    """(source-ref, Candidate fields: boxes, image_size, machine_labelled) of a valid record; registers
    its class-map; ``Rejection`` otherwise."""
    name = label_attribute(record, attribute, DETECTION_TYPE)
    label, metadata = record[name], record[name + METADATA_SUFFIX]
    if not isinstance(label, dict):
        raise Rejection("schema", f"{name}: not an object with image_size and annotations")
    if not isinstance(metadata, dict):
        raise Rejection("schema", f"{name}{METADATA_SUFFIX}: not an object")
    width, height = declared_size(label.get("image_size"), name)
    class_map = checked_class_map(metadata.get("class-map", {}), f"{name}{METADATA_SUFFIX}", limits)
    annotations = label.get("annotations")
    if not isinstance(annotations, list):
        raise Rejection("schema", f"{name}: annotations must be a list (empty for a photo without objects)")
    boxes = tuple(
        normalised_box(annotation, f"{name}: annotation {n}", (width, height), class_map, limits)
        for n, annotation in enumerate(annotations)
    )
    ref = record["source-ref"]
    check_source_ref(ref)
    register_classes(classes, class_map)
    return ref, {
        "boxes": boxes,
        "image_size": (width, height),
        "machine_labelled": metadata.get(HUMAN_ANNOTATED) == "no",
    }


def declared_size(value: Any, where: str) -> tuple[int, int]:
    """(width, height) of ``image_size``, a list of one ``{width, height, depth}``; else ``Rejection``."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise Rejection("schema", f"{where}: image_size must be a list of one {{width, height, depth}}")
    size = value[0]
    for key in ("width", "height"):
        if type(size.get(key)) is not int or size[key] < 1:
            raise Rejection(
                "schema", f"{where}: image_size {key} must be an integer >= 1, got {size.get(key)!r}"
            )
    depth = size.get("depth", 3)
    if type(depth) is not int or not 1 <= depth <= MAX_DEPTH:
        raise Rejection(
            "schema", f"{where}: image_size depth must be an integer 1..{MAX_DEPTH}, got {depth!r}"
        )
    return size["width"], size["height"]


def checked_class_map(value: Any, where: str, limits: DataLimits) -> dict[int, str]:
    """``class-map`` as {class id: name}; ``Rejection`` unless an object of decimal ids to class names."""
    if not isinstance(value, dict):
        raise Rejection("schema", f"{where}: class-map must be an object of class id -> class name")
    class_map: dict[int, str] = {}
    for key, class_name in value.items():
        if not CLASS_KEY.fullmatch(key):
            raise Rejection("schema", f"{where}: class-map key {key[:20]!r} is not a class id")
        check_class_id(int(key), f"{where}: class-map", limits)
        class_map[int(key)] = checked_class_name(class_name, f"{where}: class-map {key}")
    return class_map


def normalised_box(
    annotation: Any, where: str, size: tuple[int, int], class_map: dict[int, str], limits: DataLimits
) -> NormalisedBox:
    """(class id, xmin, ymin, xmax, ymax) in [0, 1] of one annotation in pixels of a ``size`` photo."""
    if not isinstance(annotation, dict):
        raise Rejection("schema", f"{where}: not an object with class_id, left, top, width, height")
    class_id = annotation.get("class_id")
    check_class_id(class_id, where, limits)
    if class_id not in class_map:
        known = ", ".join(str(k) for k in sorted(class_map)) or "none"
        raise Rejection(
            "unknown class", f"{where}: class id {class_id} is not in the class-map (ids: {known})"
        )
    numbers = []
    for key in BOX_FIELDS:
        value = annotation.get(key)
        if type(value) not in (int, float):
            raise Rejection("schema", f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise Rejection("non-finite value", f"{where}: {key} is {value}")
        numbers.append(float(value))
    left, top, box_width, box_height = numbers
    if box_width <= 0 or box_height <= 0:
        raise Rejection("empty box", f"{where}: width {box_width:g} x height {box_height:g}")
    width, height = size
    right, bottom = left + box_width, top + box_height
    beyond = max(-left, -top, right - width, bottom - height)
    if beyond > EDGE_TOLERANCE_PX:
        raise Rejection(
            "box outside image",
            f"{where}: (left {left:g}, top {top:g}, right {right:g}, bottom {bottom:g}) reaches "
            f"{beyond:g} px beyond the {width}x{height} image (tolerance {EDGE_TOLERANCE_PX:g} px)",
        )
    xmin, xmax = max(left, 0.0) / width, min(right, width) / width
    ymin, ymax = max(top, 0.0) / height, min(bottom, height) / height
    if xmax <= xmin or ymax <= ymin:
        raise Rejection("empty box", f"{where}: nothing of it left inside the {width}x{height} image")
    return class_id, xmin, ymin, xmax, ymax
