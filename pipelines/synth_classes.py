"""Synthetic labelled photos for the classifier recipe: images plus a Ground Truth output manifest.

Each class is a shape (circle, square, triangle, ...) drawn at a random place, scale, rotation and
colour on a random background with noise, so the class is what the picture shows and nothing else (no
class has its own colour: a greyscale photo is as classifiable as a colour one). Photos come in any
size and aspect ratio, as labelled photos do: sides of ``MIN_SIDE``..``MAX_SIDE`` pixels, aspect 1:2 to
2:1, and ``GREY_FRACTION`` of them greyscale JPEGs.

The manifest is what an image-classification labeling job writes to
``s3://<output>/<job>/manifests/output/output.manifest`` ("Labeling job output data",
https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html): one JSON object per line with
``source-ref`` (the image's S3 URI), the label attribute ``K`` (the class index in the job's label list)
and ``K-metadata`` with ``class-name``, ``confidence``, ``type`` (``groundtruth/image-classification``),
``job-name``, ``human-annotated`` and ``creation-date`` (ISO 8601 without a zone, microseconds). The
docs' example shows ``job-name`` as the bare job name; jobs write ``labeling-job/<name>``, the form
written here. ``source-ref`` points at ``s3://<bucket>/<prefix>/images/<file>``; the images are written
under ``OUT/images/`` so that ``processing/ground_truth.py`` finds each by its key's suffix.

Everything is a function of the seed (no clock, no global random state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipelines.labelling.manifest import classification_record, dumps

CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring", "stripes", "star", "diamond")
MIN_SIDE, MAX_SIDE = 48, 320  # a phone photo downscaled by a labelling tool up to a thumbnail
MAX_ASPECT = 2.0
GREY_FRACTION = 0.2
# Automated data labeling marks the objects it labelled itself "human-annotated": "no" with its own
# confidence (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-automated-labeling.html); a tenth of the
# lines look like that so readers meet both forms.
AUTO_LABELLED_FRACTION = 0.1
MIN_CONTRAST = 90  # grey levels between shape and background: visible at 64 px after JPEG
DEFAULT_LABEL_ATTRIBUTE = "category"
DEFAULT_JOB_NAME = "robocar-synth-classes"
DEFAULT_SOURCE_PREFIX = "s3://robocar-labels/synth-classes"
MANIFEST_NAME = "output.manifest"  # the service's name for the consolidated output manifest
# An unlabelled set (``unlabelled=True``: photos for ``robocar label predict``) keeps its truth apart, in
# OUT/truth/output.manifest, where nothing reading OUT/images finds it: benchmarks and tests score
# pre-labels against it.
TRUTH_FOLDER = "truth"
BASE_DATE = datetime(2026, 1, 1, tzinfo=UTC)  # creation dates depend on the seed only
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SynthSummary:
    manifest: Path
    images: int
    classes: tuple[str, ...]
    per_class: tuple[int, ...]
    grey: int


def luminance(colour: Sequence[int]) -> float:
    """ITU-R BT.601 luma of an RGB colour (what a greyscale conversion keeps)."""
    return float(np.asarray(colour) @ np.array([0.299, 0.587, 0.114]))


def contrasting_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(background, shape) RGB colours whose luminances differ by at least ``MIN_CONTRAST``."""
    while True:
        background, shape = rng.integers(0, 256, size=(2, 3))
        if abs(luminance(background) - luminance(shape)) >= MIN_CONTRAST:
            return tuple(int(v) for v in background), tuple(int(v) for v in shape)


def _polygon(cx: float, cy: float, radius: float, angle: float, points: list[tuple[float, float]]) -> list:
    """``points`` (unit polar: (radius fraction, angle)) rotated by ``angle`` and placed at (cx, cy)."""
    return [(cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle)) for r, a in points]


def _regular(corners: int, inner: float | None = None) -> list[tuple[float, float]]:
    """A regular polygon (``inner`` None) or a star alternating radius 1 and ``inner``."""
    if inner is None:
        return [(1.0, 2 * math.pi * k / corners) for k in range(corners)]
    return [(1.0 if k % 2 == 0 else inner, math.pi * k / corners) for k in range(2 * corners)]


def draw_shape(
    draw: ImageDraw.ImageDraw, name: str, box: tuple[float, float, float], angle: float, fill
) -> None:  # noqa: ANN001
    """Draw class ``name`` centred at (cx, cy) with radius r (``box``), rotated by ``angle``."""
    cx, cy, r = box
    width = max(2, int(r * 0.28))
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=width)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, r, angle, _regular(4)), fill=fill)
    elif name == "diamond":  # a rhombus: long diagonal twice the short one
        draw.polygon(
            _polygon(cx, cy, r, angle, [(1.0, 0), (0.5, math.pi / 2), (1.0, math.pi), (0.5, -math.pi / 2)]),
            fill=fill,
        )
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, r, angle, _regular(3)), fill=fill)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, r, angle, _regular(5, inner=0.4)), fill=fill)
    elif name == "cross":
        for turn in (0.0, math.pi / 2):
            ends = _polygon(cx, cy, r, angle + turn, [(1.0, 0.0), (1.0, math.pi)])
            draw.line(ends, fill=fill, width=width)
    elif name == "stripes":
        for offset in (-0.66, 0.0, 0.66):
            dx, dy = -math.sin(angle) * offset * r, math.cos(angle) * offset * r
            ends = _polygon(cx + dx, cy + dy, r, angle, [(1.0, 0.0), (1.0, math.pi)])
            draw.line(ends, fill=fill, width=max(2, int(r * 0.18)))
    else:
        raise ValueError(f"unknown class {name!r}")


def photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) of a photo: longer side ``MIN_SIDE``..``MAX_SIDE``, aspect up to ``MAX_ASPECT``."""
    aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
    longer = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    shorter = max(MIN_SIDE // 2, int(round(longer / max(aspect, 1 / aspect))))
    return (longer, shorter) if aspect >= 1 else (shorter, longer)


def blur_and_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` blurred half the time and with Gaussian noise of a random strength, as a camera adds."""
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noise = rng.normal(0, rng.uniform(2, 12), size=(image.height, image.width, 3))
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(photo: Image.Image) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def render_photo(name: str, rng: np.random.Generator) -> Image.Image:
    """One photo of class ``name``: random size, aspect, colours, place, scale, rotation, blur and noise."""
    width, height = photo_size(rng)
    background, colour = contrasting_colours(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    radius = side * rng.uniform(0.25, 0.42)  # the shape fills a centre crop of the shorter side
    cx = width / 2 + rng.uniform(-0.1, 0.1) * side
    cy = height / 2 + rng.uniform(-0.1, 0.1) * side
    draw_shape(draw, name, (cx, cy, radius), rng.uniform(0, 2 * math.pi), colour)
    return blur_and_noise(image, rng)


def ground_truth_line(
    source_ref: str,
    class_id: int,
    class_name: str,
    *,
    attribute: str,
    job_name: str,
    created: datetime,
    confidence: float,
    human: bool = True,
) -> str:
    """One output-manifest line (``pipelines.labelling.manifest.classification_record``)."""
    record = classification_record(
        source_ref, class_id, class_name, confidence,
        attribute=attribute, job_name=job_name, created=created, human=human,
    )  # fmt: skip
    return dumps(record) + "\n"


def check_attribute(attribute: str) -> None:
    """ValueError for a label attribute name Ground Truth refuses (augmented manifests read ``-ref``
    as a reference to data: https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html)."""
    if attribute.endswith("-ref") or "-metadata" in attribute or not attribute:
        raise ValueError(f"{attribute!r}: a label attribute may not end in -ref or contain -metadata")


def new_output_folder(out_dir: Path) -> Path:
    """``out_dir`` with an empty ``images/`` in it; FileExistsError if it holds anything already."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    return out_dir


def manifest_path(out_dir: Path, unlabelled: bool) -> Path:
    """OUT/output.manifest, or for an unlabelled set the truth kept apart: OUT/truth/output.manifest."""
    if not unlabelled:
        return Path(out_dir) / MANIFEST_NAME
    (Path(out_dir) / TRUTH_FOLDER).mkdir(exist_ok=True)
    return Path(out_dir) / TRUTH_FOLDER / MANIFEST_NAME


def creation_date(seed: int, index: int, rng: np.random.Generator) -> datetime:
    """The creation date of line ``index``: a few seconds apart, a function of the seed only."""
    return BASE_DATE + timedelta(days=seed, seconds=int(index * 7 + rng.integers(0, 5)))


def write_classes(
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
) -> SynthSummary:
    """Write ``images`` photos of ``classes`` classes (balanced, shuffled) and ``OUT/output.manifest``
    (``unlabelled``: the photos alone, the manifest kept apart as the truth, ``manifest_path``)."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be 2..{len(CLASS_NAMES)}, got {classes}")
    if images < classes:
        raise ValueError(f"need at least one image per class: {images} images for {classes} classes")
    check_attribute(attribute)
    out_dir = new_output_folder(out_dir)
    rng = np.random.default_rng([seed, classes, images])
    labels = rng.permutation(np.arange(images) % classes)
    lines, grey = [], 0
    for index, label in enumerate(labels):
        photo = render_photo(CLASS_NAMES[label], rng)
        if rng.random() < GREY_FRACTION:
            photo, grey = photo.convert("L"), grey + 1
        name = f"{index:06d}.jpg"
        (out_dir / "images" / name).write_bytes(jpeg_bytes(photo))
        created = creation_date(seed, index, rng)
        human = bool(rng.random() >= AUTO_LABELLED_FRACTION)
        lines.append(
            ground_truth_line(
                f"{source_prefix.rstrip('/')}/images/{name}",
                int(label),
                CLASS_NAMES[label],
                attribute=attribute,
                job_name=job_name,
                created=created,
                confidence=round(float(rng.uniform(0.8, 0.99) if human else rng.uniform(0.6, 0.95)), 2),
                human=human,
            )
        )
        if progress is not None:
            progress(index + 1, images)
    manifest = manifest_path(out_dir, unlabelled)
    manifest.write_text("".join(lines))
    counts = np.bincount(labels, minlength=classes)
    return SynthSummary(manifest, images, CLASS_NAMES[:classes], tuple(int(c) for c in counts), grey)


def write_image_list(manifest: Path, list_path: Path) -> list[str]:
    """The images of a Ground Truth manifest as an image list (``.lst``) and ``classes.json`` beside it.

    The tests' and benchmarks' shortcut to a training channel: the photos are listed where they are, as
    they are, all in one list. The recipe's Preprocess (``processing/preprocess_classifier.py``) is the
    real path: it resizes, deduplicates and splits, and this function writes the list with its code
    (``write_image_list`` there: index, class id, path relative to the list's folder, the built-in
    algorithm's File-mode format). The manifest is read by the pipeline's own Ground Truth reader, so
    a record it rejects is not listed (``ValueError`` names the first one). Returns the class names.
    """
    from processing.ground_truth import class_list, read_ground_truth
    from processing.preprocess_classifier import write_image_list as write_list_and_classes
    from processing.records import RecordValidator
    from processing.tubs import Source

    manifest, list_path = Path(manifest), Path(list_path)
    classes: dict[int, str] = {}
    report, candidates = read_ground_truth(
        Source(manifest, "ground-truth", manifest.name),
        RecordValidator("ground_truth_record"),
        manifest.parent,
        classes,
    )
    if report.rejected:
        raise ValueError(f"{manifest}: {report.rejected} records rejected, e.g. {report.rejections[0]}")
    root = list_path.parent.resolve()
    entries = [
        (n, c.label, Path(c.image_path).resolve().relative_to(root).as_posix())
        for n, c in enumerate(candidates)
    ]
    names = class_list(classes)
    write_list_and_classes(list_path, entries, names)
    return names
