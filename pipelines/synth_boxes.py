"""Synthetic photos for the detection recipe: objects at known boxes plus a Ground Truth bounding-box
output manifest.

Each photo (any size and aspect, some greyscale: ``pipelines.synth_classes.photo_size``) holds 1 to
``MAX_OBJECTS`` objects; an object's class is its shape (drawn by ``synth_classes.draw_shape``), its
colour random but contrasting with the background, so the shape alone tells the class. Objects may
overlap a little (IoU up to ``MAX_OVERLAP_IOU``) and ``EDGE_FRACTION`` of them are cut by the photo's
edge (at least ``MIN_VISIBLE`` of the object still inside). A box is the tight box of the object's
pixels inside the photo, measured on a mask drawn with the same call, so it is exact to the pixel.

The manifest is what a bounding-box labeling job writes ("Labeling job output data", bounding box,
https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html): per line ``source-ref``, the
label attribute ``K`` = ``{"image_size": [{"width", "height", "depth"}], "annotations": [{"class_id",
"left", "top", "width", "height"}]}`` in pixels of the photo, and ``K-metadata`` = ``{"objects":
[{"confidence"}] (one per annotation), "class-map" (the line's classes, id as a string -> name),
"type": "groundtruth/object-detection", "human-annotated", "creation-date", "job-name"}``.
``AUTO_LABELLED_FRACTION`` of the lines are as automated data labeling writes them (``"human-annotated":
"no"``, https://docs.aws.amazon.com/sagemaker/latest/dg/sms-automated-labeling.html) and
``ADJUSTED_FRACTION`` as an adjustment job writes them: its own job name and ``"adjustment-status":
"adjusted"`` or ``"unadjusted"`` (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-manifest.html).
``depth`` is the photo's channels (1 for a greyscale JPEG, 3 otherwise).

Everything is a function of the seed (no clock, no global random state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipelines.labelling.manifest import box_label, job_metadata
from pipelines.synth_classes import (
    AUTO_LABELLED_FRACTION,
    GREY_FRACTION,
    MIN_CONTRAST,
    blur_and_noise,
    check_attribute,
    contrasting_colours,
    creation_date,
    draw_shape,
    jpeg_bytes,
    luminance,
    manifest_path,
    new_output_folder,
    photo_size,
)

# Shapes whose boxes do not look alike at 128 px (a diamond is a rotated square, stripes have no outline).
DETECTION_CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring", "star")
DETECTION_TYPE = "groundtruth/object-detection"
MAX_OBJECTS = 4
MAX_OVERLAP_IOU = 0.15  # "a little": at most about a quarter of the smaller object hidden
EDGE_FRACTION = 0.2  # objects placed across the photo's edge
MIN_VISIBLE = 0.5  # of an object's box area that stays inside the photo
RADIUS_RANGE = (0.12, 0.24)  # of the photo's shorter side: 2-4 objects fit side by side
MIN_RADIUS = 5.0  # pixels: a 24 px side still shows a recognisable shape
PLACEMENT_TRIES = 30  # per object; an object that finds no place is left out (the photo has fewer)
ADJUSTED_FRACTION = 0.05
DEFAULT_LABEL_ATTRIBUTE = "bounding-box"
DEFAULT_JOB_NAME = "robocar-synth-boxes"
DEFAULT_SOURCE_PREFIX = "s3://robocar-labels/synth-boxes"


@dataclass(frozen=True)
class Box:
    """One object in pixels of its photo, as Ground Truth writes it (right/bottom exclusive)."""

    class_id: int
    left: int
    top: int
    width: int
    height: int

    def corners(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.left + self.width, self.top + self.height


@dataclass(frozen=True)
class BoxesSummary:
    manifest: Path
    images: int
    classes: tuple[str, ...]
    objects_per_class: tuple[int, ...]
    grey: int
    machine_labelled: int
    adjusted_lines: int


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def shape_box(name: str, size: tuple[int, int], place: tuple[float, float, float], angle: float) -> tuple:
    """(box inside the photo, fraction of the whole shape's box that is inside) of shape ``name`` at
    ``place`` (cx, cy, radius): measured on a mask with a margin, so a shape cut by the edge is seen whole."""
    width, height = size
    margin = int(math.ceil(place[2])) + 2
    mask = Image.new("L", (width + 2 * margin, height + 2 * margin), 0)
    draw_shape(ImageDraw.Draw(mask), name, (place[0] + margin, place[1] + margin, place[2]), angle, 255)
    whole = mask.getbbox()
    inside = mask.crop((margin, margin, margin + width, margin + height)).getbbox()
    if whole is None or inside is None:
        return None, 0.0
    area = (whole[2] - whole[0]) * (whole[3] - whole[1])
    return inside, (inside[2] - inside[0]) * (inside[3] - inside[1]) / area


def _object_colour(background: Sequence[int], rng: np.random.Generator) -> tuple[int, ...]:
    """A colour whose luminance differs from the background's by at least ``MIN_CONTRAST``."""
    while True:
        _, colour = contrasting_colours(rng)
        if abs(luminance(colour) - luminance(background)) >= MIN_CONTRAST:
            return colour


def _place(size: tuple[int, int], rng: np.random.Generator) -> tuple[float, float, float]:
    """(cx, cy, radius): anywhere inside, or (``EDGE_FRACTION``) centred near an edge."""
    width, height = size
    radius = max(MIN_RADIUS, min(width, height) * rng.uniform(*RADIUS_RANGE))
    if rng.random() < EDGE_FRACTION:
        side = int(rng.integers(0, 4))  # left, top, right, bottom
        along = rng.uniform(radius, (width if side % 2 else height) - radius)
        across = rng.uniform(-0.2, 0.5) * radius  # the centre a little outside to half a radius in
        across = across if side < 2 else (width if side == 2 else height) - across
        return (across, along, radius) if side % 2 == 0 else (along, across, radius)
    return (
        rng.uniform(radius, max(radius, width - radius)),
        rng.uniform(radius, max(radius, height - radius)),
        radius,
    )


def render_objects(
    class_names: Sequence[str], count: int, rng: np.random.Generator
) -> tuple[Image.Image, list[Box]]:
    """A photo with up to ``count`` objects of random classes, and their boxes in drawing order."""
    size = photo_size(rng)
    background, _ = contrasting_colours(rng)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    boxes: list[Box] = []
    for _ in range(count):
        class_id = int(rng.integers(0, len(class_names)))
        for _ in range(PLACEMENT_TRIES):
            place, angle = _place(size, rng), float(rng.uniform(0, 2 * math.pi))
            inside, visible = shape_box(class_names[class_id], size, place, angle)
            if inside is None or visible < MIN_VISIBLE:
                continue
            if all(iou(inside, other.corners()) <= MAX_OVERLAP_IOU for other in boxes):
                draw_shape(draw, class_names[class_id], place, angle, _object_colour(background, rng))
                left, top, right, bottom = inside
                boxes.append(Box(class_id, left, top, right - left, bottom - top))
                break
    return blur_and_noise(image, rng), boxes


def bounding_box_line(
    source_ref: str,
    image_size: tuple[int, int, int],
    boxes: Sequence[Box],
    class_names: Sequence[str],
    *,
    attribute: str,
    job_name: str,
    created: datetime,
    confidences: Sequence[float],
    human: bool = True,
    adjustment_status: str | None = None,
) -> str:
    """One bounding-box output-manifest line, keys in the service's order
    (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html); ``image_size`` is
    (width, height, depth); ``adjustment_status`` makes it an adjustment job's line."""
    metadata: dict = {
        "objects": [{"confidence": confidence} for confidence in confidences],
        "class-map": {str(k): class_names[k] for k in sorted({box.class_id for box in boxes})},
        "type": DETECTION_TYPE,
    }
    common = job_metadata(job_name, created, human)
    for key in ("human-annotated", "creation-date", "job-name"):  # the bounding-box example's order
        metadata[key] = common[key]
    if adjustment_status is not None:
        metadata["adjustment-status"] = adjustment_status
    record = {
        "source-ref": source_ref,
        attribute: box_label(image_size, boxes),
        f"{attribute}-metadata": metadata,
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def write_boxes(
    out_dir: Path,
    classes: int,
    images: int,
    seed: int,
    *,
    attribute: str = DEFAULT_LABEL_ATTRIBUTE,
    job_name: str = DEFAULT_JOB_NAME,
    source_prefix: str = DEFAULT_SOURCE_PREFIX,
    progress: Callable[[int, int], None] | None = None,
    unlabelled: bool = False,
) -> BoxesSummary:
    """Write ``images`` photos with objects of ``classes`` classes and ``OUT/output.manifest``
    (``unlabelled``: the photos alone, the manifest kept apart as the truth, ``manifest_path``)."""
    if not 1 <= classes <= len(DETECTION_CLASS_NAMES):
        raise ValueError(f"classes must be 1..{len(DETECTION_CLASS_NAMES)}, got {classes}")
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    check_attribute(attribute)
    out_dir = new_output_folder(out_dir)
    names = DETECTION_CLASS_NAMES[:classes]
    rng = np.random.default_rng([seed, classes, images, 18])  # 18: not the classifier synth's stream
    lines: list[str] = []
    per_class = np.zeros(classes, dtype=int)
    grey = machine = adjusted = 0
    for index in range(images):
        photo, boxes = render_objects(names, int(rng.integers(1, MAX_OBJECTS + 1)), rng)
        depth = 3
        if rng.random() < GREY_FRACTION:
            photo, depth, grey = photo.convert("L"), 1, grey + 1
        name = f"{index:06d}.jpg"
        (out_dir / "images" / name).write_bytes(jpeg_bytes(photo))
        human = bool(rng.random() >= AUTO_LABELLED_FRACTION)
        status = None
        if human and rng.random() < ADJUSTED_FRACTION:
            status, adjusted = ("adjusted" if rng.random() < 0.5 else "unadjusted"), adjusted + 1
        low = 0.8 if human else 0.6  # automated labelling keeps labels above its own threshold
        lines.append(
            bounding_box_line(
                f"{source_prefix.rstrip('/')}/images/{name}",
                (photo.width, photo.height, depth),
                boxes,
                names,
                attribute=attribute,
                job_name=f"{job_name}-adjust" if status else job_name,
                created=creation_date(seed, index, rng),
                confidences=[round(float(rng.uniform(low, 0.99)), 2) for _ in boxes],
                human=human,
                adjustment_status=status,
            )
        )
        machine += not human
        for box in boxes:
            per_class[box.class_id] += 1
        if progress is not None:
            progress(index + 1, images)
    manifest = manifest_path(out_dir, unlabelled)
    manifest.write_text("".join(lines))
    return BoxesSummary(manifest, images, names, tuple(int(c) for c in per_class), grey, machine, adjusted)
