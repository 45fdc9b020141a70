"""Preprocess step of the classifier recipe: Ground Truth image-classification manifests and their
photos -> train/validation/test image lists, accounting for every record.

Runs in a SageMaker Processing container and, unchanged, as a local process::

    python processing/preprocess_classifier.py --input IN --output OUT [--image-size 64] [--seed 0]
        [--output-uri s3://bucket/prefix]

``IN`` holds one dataset snapshot: any number of output manifests (``*.manifest``, at any depth) and
the photos they name, found by ``processing.ground_truth.read_ground_truth``'s rules. ``OUT``:

* ``{train,validation,test}/images/NNNNNN.jpg``: each accepted photo as RGB (grey converted), its shorter
  side ``round(N * 8/7)`` for crop side ``N`` (``edge.photos.RESIZE_RATIO``), JPEG quality 95.
  No photo is rejected for its size or aspect ratio (one ~900 times longer than wide keeps its middle:
  a JPEG side is at most 65,500 pixels); numbers run from 0 in each split, in the order (manifest
  name, record index).
* ``<split>/images.lst``: ``index<TAB>class id<TAB>images/NNNNNN.jpg``, the built-in algorithm's list
  (https://docs.aws.amazon.com/sagemaker/latest/dg/image-classification.html), which
  ``training.classifier.read_image_list`` reads; ``<split>/classes.json``: class names by id.
* with ``--output-uri``: ``<split>/<split>.manifest``, an augmented manifest of the same photos for the
  built-in algorithm's Pipe mode (``source-ref`` under the URI, ``class``, ``class-metadata``).
* ``report/data-report.json``: counts, rejections by reason (manifest + record index, the first
  ``MAX_LISTED_REJECTIONS``), classes per split, human and machine labels, image size.

Splits. A photo's split is decided by its bytes alone (SHA-256, through ``processing.splits``), so it
keeps its split when photos are added or removed and whatever manifest or name it comes under; the
same bytes a second time are one photo, the later record rejected as ``duplicate photo``. Each class
is split in expectation like the whole (70/15/15): a class of n photos has no train photo with
probability 0.3^n. Too little data (fewer than 2 classes, a class with no train photo, an empty split)
writes the report and fails in one line with exit status 1, like the pilot's quality gate.

Speed (2 shared cores, Python 3.11): hashing, decoding, resizing to 73 px and encoding 600 synthetic
photos (48-320 px) took 0.58-0.66 s in this process and 0.59-0.87 s with a 2-process pool (fork, load
average 3.3), so there is no pool: about 1 ms a photo, 100,000 photos in 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge.atomic_files import atomic_write_bytes, atomic_write_json
from edge.photos import CLASSES_FILE, PhotoError, open_rgb, resize_shorter_side, resize_side_for
from edge.s3_uri import split_s3_uri
from processing.errors import add_debug_flag, run_main
from processing.ground_truth import CLASSIFICATION_TYPE, class_list, read_ground_truth
from processing.limits import DEFAULT_LIMITS, DataLimits, FileTooLarge, LimitError, limit_text, read_limited
from processing.preprocess import (
    DEFAULT_INPUT,
    DEFAULT_OUTPUT,
    DataQualityError,
    PreprocessError,
    add_limit_flags,
    limits_from,
    read_sources,
)
from processing.records import Rejection
from processing.splits import SPLITS, fractions_from, split_at, unit_point
from processing.tubs import Candidate, Source, SourceReport, discover_sources

PROG = "preprocess_classifier"
DEFAULT_IMAGE_SIZE = 64  # the trainer's default crop (image_shape 3,64,64)
MAX_IMAGE_SIZE = 1024  # crop side; ImageNet models use 224-600
JPEG_QUALITY = 95  # the resized photo is decoded again by the trainer: keep JPEG's loss small
MAX_JPEG_SIDE = 65_500  # libjpeg's largest image side (JPEG_MAX_DIMENSION), as Pillow reports it
IMAGES_DIR = "images"
IMAGE_LIST = "images.lst"
REPORT_NAME = "data-report.json"
REPORT_FORMAT = "robocar-classifier-data-report/1"
MAX_LISTED_REJECTIONS = 1_000  # the report stays small whatever the input; the counts cover every one
PROGRESS_EVERY = 1_000  # photos between progress lines on stderr
PHOTO_UNIT = "photo"  # the split unit's kind (processing.splits.unit_point): a photo named by its SHA-256
STALE_IMAGE = re.compile(r"\d{6,}\.jpg")


@dataclasses.dataclass(frozen=True)
class Accepted:
    """One photo written to a split: ``images/<number>.jpg`` with class ``label``."""

    manifest: str
    index: int
    label: int
    machine_labelled: bool
    split: str
    number: int
    boxes: tuple[tuple[int, float, float, float, float], ...] = ()  # a detector's photo: its objects
    origin: str = ""  # the photo's path relative to --input: its key under the dataset's prefix


def resize_side(image_size: int) -> int:
    """The shorter side a photo is resized to before an ``image_size`` crop (64 -> 73)."""
    return resize_side_for(image_size)


def image_name(number: int) -> str:
    return f"{IMAGES_DIR}/{number:06d}.jpg"


def origin_of(image_path: str, input_dir: Path) -> str:
    """The photo's path relative to Preprocess's input, which is its key relative to the dataset's prefix
    (``<prefix>/raw-classifier/``: the ManifestFile's objects keep their relative keys), so a user finds
    the photo a split image came from; an absolute path for a photo outside the input."""
    path = Path(image_path)
    try:
        return path.relative_to(input_dir).as_posix()
    except ValueError:
        return path.as_posix()


def photo_bytes(path: str, limits: DataLimits = DEFAULT_LIMITS) -> bytes:
    """The photo file's bytes, or ``Rejection`` (missing, unreadable, over the size limit)."""
    name = Path(path).name
    try:
        return read_limited(path, limits.image_bytes)
    except FileNotFoundError:
        raise Rejection("image missing", name) from None
    except FileTooLarge:
        raise Rejection("image unreadable", f"{name} is over {limit_text(limits, 'image_bytes')}") from None
    except OSError as exc:
        raise Rejection("image unreadable", f"{name}: {exc.strerror or exc}") from None


def within_jpeg_limit(image: Image.Image, side: int) -> Image.Image:
    """``image``, or its middle along the longer side, so that resized to shorter side ``side`` it fits a
    JPEG (at most ``MAX_JPEG_SIDE`` pixels a side): only a photo ~900 times longer than wide is cut."""
    width, height = image.size
    longest = MAX_JPEG_SIDE * min(width, height) // side  # the longer side that resizes to <= the limit
    if max(width, height) <= longest:
        return image
    if width > height:
        left = (width - longest) // 2
        return image.crop((left, 0, left + longest, height))
    top = (height - longest) // 2
    return image.crop((0, top, width, top + longest))


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """RGB uint8 pixels as a JPEG of quality ``JPEG_QUALITY``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def resized_jpeg(path: str, side: int) -> bytes:
    """The photo as an RGB JPEG with shorter side ``side``, or ``Rejection`` if it cannot be decoded."""
    try:
        pixels = resize_shorter_side(within_jpeg_limit(open_rgb(path), side), side)
    except PhotoError as exc:
        raise Rejection("image unreadable", str(exc)) from None
    return encode_jpeg(pixels)


def photo_split(seed: int, digest: str, fractions: Sequence[float]) -> str:
    """The split of the photo whose bytes have SHA-256 ``digest``: its bytes and the seed decide."""
    return SPLITS[split_at(unit_point(seed, PHOTO_UNIT, digest, None), fractions)]


def image_list_text(entries: Sequence[tuple[int, int, str]]) -> str:
    """An image list (``.lst``): ``index<TAB>class id<TAB>path`` per (index, class id, relative path)."""
    return "".join(f"{index}\t{label}\t{path}\n" for index, label, path in entries)


def write_image_list(
    list_path: Path, entries: Sequence[tuple[int, int, str]], classes: Sequence[str]
) -> None:
    """``list_path`` (an image list of ``entries``) and ``classes.json`` (names by id) beside it."""
    atomic_write_bytes(list_path, image_list_text(entries).encode("utf-8"))
    atomic_write_bytes(list_path.parent / CLASSES_FILE, (json.dumps(list(classes)) + "\n").encode("utf-8"))


def augmented_line(output_uri: str, split: str, photo: Accepted, classes: Sequence[str]) -> str:
    """One augmented-manifest line for the built-in algorithm's Pipe mode (the contract's form, with
    the Ground Truth metadata the class carries: https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html)."""
    record = {
        "source-ref": f"{output_uri}/{split}/{image_name(photo.number)}",
        "origin": photo.origin,
        "class": photo.label,
        "class-metadata": {
            "class-name": classes[photo.label],
            "type": CLASSIFICATION_TYPE,
            "human-annotated": "no" if photo.machine_labelled else "yes",
        },
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def output_uri_from(text: str | None) -> str | None:
    """``--output-uri`` without a trailing slash; PreprocessError unless ``s3://bucket[/prefix]``."""
    if text is None:
        return None
    try:
        split_s3_uri(text)
    except ValueError as exc:
        raise PreprocessError(f"--output-uri: {exc}") from None
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess_classifier.py",
        description="Turn SageMaker Ground Truth image-classification manifests and their photos into "
        "train/validation/test image lists of resized photos, accounting for every record.",
        epilog="Exit status: 0 ok; 1 too little data (fewer than 2 classes, a class without a train "
        "photo, an empty split); 2 bad input or options; 70 a bug. The report is written whenever the "
        "manifests could be read.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_preprocess_arguments(
        parser,
        DEFAULT_IMAGE_SIZE,
        "the training crop's side; photos are resized to a shorter side of round(N * 8/7)",
    )
    return parser


def add_preprocess_arguments(parser: argparse.ArgumentParser, image_size: int, image_size_help: str) -> None:
    """The options of a Preprocess that reads Ground Truth manifests: input/output, the photos' size,
    the splits, debug and the data limits."""
    io_group = parser.add_argument_group("input and output")
    io_group.add_argument("--input", type=Path, default=Path(DEFAULT_INPUT), help="manifests and photos")
    io_group.add_argument("--output", type=Path, default=Path(DEFAULT_OUTPUT), help="splits and report")
    io_group.add_argument(
        "--output-uri",
        default=None,
        metavar="S3_URI",
        help="where --output is uploaded; writes <split>/<split>.manifest, augmented manifests for Pipe mode",
    )
    io_group.add_argument(
        "--label-attribute", default=None, help="Ground Truth label attribute (default: detect)"
    )
    photos = parser.add_argument_group("photos")
    photos.add_argument("--image-size", type=int, default=image_size, metavar="N", help=image_size_help)
    split = parser.add_argument_group("splits")
    split.add_argument("--train-fraction", type=float, default=0.7)
    split.add_argument("--validation-fraction", type=float, default=0.15, help="test gets the remainder")
    split.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    add_debug_flag(parser)
    add_limit_flags(parser)


def check_options(args: argparse.Namespace) -> tuple[float, float, float]:
    """The split fractions; PreprocessError on options that cannot work."""
    if not 1 <= args.image_size <= MAX_IMAGE_SIZE:
        raise PreprocessError(f"--image-size must be 1..{MAX_IMAGE_SIZE}, got {args.image_size}")
    if args.seed < 0:
        raise PreprocessError(f"--seed must be >= 0, got {args.seed}")
    try:
        fractions = fractions_from(args.train_fraction, args.validation_fraction)
    except ValueError as exc:
        raise PreprocessError(str(exc)) from None
    if min(fractions) <= 0:
        raise PreprocessError(
            "every split needs a fraction above 0 (training, evaluation and the gate read all three)"
        )
    if not args.input.is_dir():
        raise PreprocessError(f"--input {args.input} is not a folder")
    return fractions


def prepare_split_dirs(output: Path, outputs: Sequence[str] = (IMAGE_LIST,)) -> dict[str, Path]:
    """``OUT/<split>/images`` created, with nothing left that an earlier run wrote there (its photos,
    ``outputs``, classes.json, the augmented manifest)."""
    dirs = {}
    for split in SPLITS:
        split_dir = output / split
        (split_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        for stale in (split_dir / IMAGES_DIR).iterdir():
            if STALE_IMAGE.fullmatch(stale.name) and stale.is_file():
                stale.unlink()
        for name in (*outputs, CLASSES_FILE, f"{split}.manifest"):
            (split_dir / name).unlink(missing_ok=True)
        dirs[split] = split_dir
    return dirs


@dataclasses.dataclass
class Outcome:
    """What the photos became: the accepted ones in order, and how many were duplicates."""

    accepted: list[Accepted]
    duplicates: int


def write_photos(
    candidates: Sequence[Candidate],
    owners: Sequence[int],
    reports: Sequence[SourceReport],
    split_dirs: dict[str, Path],
    convert: Callable[[Candidate], bytes],
    fractions: Sequence[float],
    seed: int,
    limits: DataLimits,
    input_dir: Path,
) -> Outcome:
    """Judge every candidate in order: read, deduplicate by bytes, ``convert`` (the JPEG the split
    holds, or ``Rejection``) and write it into its split."""
    first_seen: dict[str, tuple[str, int, int]] = {}  # SHA-256 -> (manifest, record index, class id) kept
    numbers = dict.fromkeys(SPLITS, 0)
    accepted: list[Accepted] = []
    duplicates = 0
    for done, (candidate, owner) in enumerate(zip(candidates, owners, strict=True), start=1):
        report = reports[owner]
        try:
            data = photo_bytes(candidate.image_path, limits)
            digest = hashlib.sha256(data).hexdigest()
            if digest in first_seen:
                manifest, index, label = first_seen[digest]
                duplicates += 1
                other = (
                    f" (class id {label} there, {candidate.label} here)" if label != candidate.label else ""
                )
                raise Rejection("duplicate photo", f"the same bytes as {manifest} record {index}{other}")
            jpeg = convert(candidate)
        except Rejection as rejection:
            report.reject(candidate.index, rejection.reason)
        else:
            first_seen[digest] = (report.tub, candidate.index, candidate.label)
            split = photo_split(seed, digest, fractions)
            photo = Accepted(
                report.tub,
                candidate.index,
                candidate.label,
                candidate.machine_labelled,
                split,
                numbers[split],
                candidate.boxes,
                origin_of(candidate.image_path, input_dir),
            )
            atomic_write_bytes(split_dirs[split] / image_name(photo.number), jpeg)
            numbers[split] += 1
            accepted.append(photo)
            report.accepted += 1
        if done % PROGRESS_EVERY == 0 or done == len(candidates):
            print(f"  photos {done}/{len(candidates)}: {len(accepted)} accepted", file=sys.stderr, flush=True)
    return Outcome(accepted, duplicates)


def write_outputs(
    split_dirs: dict[str, Path], accepted: Sequence[Accepted], classes: Sequence[str], output_uri: str | None
) -> None:
    """Each split's image list, classes.json and, with an output URI, augmented manifest."""
    for split, split_dir in split_dirs.items():
        photos = [photo for photo in accepted if photo.split == split]
        write_image_list(
            split_dir / IMAGE_LIST, [(p.number, p.label, image_name(p.number)) for p in photos], classes
        )
        if output_uri is not None:
            text = "".join(augmented_line(output_uri, split, p, classes) for p in photos)
            atomic_write_bytes(split_dir / f"{split}.manifest", text.encode("utf-8"))


def rejection_summary(reports: Sequence[SourceReport]) -> tuple[dict[str, int], list[dict[str, Any]], int]:
    """(rejections by reason code, the first ``MAX_LISTED_REJECTIONS`` by manifest and index, how many
    more were left out of the list)."""
    listed = [
        {"manifest": report.tub, "index": entry["index"], "reason": entry["reason"]}
        for report in reports
        for entry in report.to_dict()["rejections"]
    ]
    by_reason = Counter(entry["reason"].split(":", 1)[0] for entry in listed)
    return (
        dict(sorted(by_reason.items())),
        listed[:MAX_LISTED_REJECTIONS],
        max(len(listed) - MAX_LISTED_REJECTIONS, 0),
    )


def split_counts(accepted: Sequence[Accepted], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per split: photos, and photos per class name (every class listed, 0 included)."""
    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        per_class = Counter(photo.label for photo in accepted if photo.split == split)
        counts[split] = {
            "images": sum(per_class.values()),
            "per_class": {name: per_class.get(label, 0) for label, name in enumerate(classes)},
        }
    return counts


def too_little_data(
    classes: Sequence[str],
    splits: dict[str, dict[str, Any]],
    *,
    model: str = "classifier",
    min_classes: int = 2,
    per_class: str = "per_class",
    unit: str = "photo",
) -> str | None:
    """Why the data cannot train and evaluate a ``model``, or None: fewer than ``min_classes`` classes,
    an empty split, or a class with no ``unit`` in train (``splits[split][per_class]`` counts them)."""
    accepted = sum(entry["images"] for entry in splits.values())
    if len(classes) < min_classes:
        return (
            f"{len(classes)} class{'es' if len(classes) != 1 else ''} in the manifests ({accepted} photos "
            f"accepted); a {model} needs at least {min_classes}"
        )
    empty = [split for split, entry in splits.items() if entry["images"] == 0]
    if empty:
        named = " and ".join([", ".join(empty[:-1]), empty[-1]] if len(empty) > 1 else empty)
        return (
            f"the {named} split{'s are' if len(empty) > 1 else ' is'} empty ({accepted} photos "
            "accepted): add photos, or change --seed"
        )
    missing = [name for name, count in splits["train"][per_class].items() if count == 0]
    if missing:
        others = {name: sum(splits[s][per_class][name] for s in SPLITS) for name in missing}
        detail = ", ".join(f"{name} ({others[name]} {unit}s elsewhere)" for name in missing)
        return f"no train {unit} of class {detail}: add photos of it, or change --seed"
    return None


def accounting_report(
    args: argparse.Namespace,
    reports: Sequence[SourceReport],
    outcome: Outcome,
    classes: Sequence[str],
    fractions: Sequence[float],
    splits: dict[str, dict[str, Any]],
    failure: str | None,
    *,
    recipe: str,
    report_format: str,
) -> dict[str, Any]:
    """The report's accounting, common to the recipes that read Ground Truth manifests: every record
    read is accepted or rejected (anything else is a bug here), rejections by reason and by manifest +
    index, human and machine labels, the splits and how they were drawn."""
    broken = [r.tub for r in reports if r.unaccounted()]
    if broken:
        raise RuntimeError(f"read != accepted + rejected for {', '.join(broken)}")
    by_reason, listed, unlisted = rejection_summary(reports)
    machine = sum(photo.machine_labelled for photo in outcome.accepted)
    return {
        "format": report_format,
        "recipe": recipe,
        "input": str(args.input),
        "status": "failed" if failure else "ok",
        "failure": failure,
        "classes": list(classes),
        "read": sum(r.read for r in reports),
        "accepted": len(outcome.accepted),
        "rejected": sum(r.rejected for r in reports),
        "duplicates": outcome.duplicates,
        "manifests": [
            {"manifest": r.tub, "read": r.read, "accepted": r.accepted, "rejected": r.rejected}
            for r in reports
        ],
        "rejected_by_reason": by_reason,
        "rejections": listed,
        "rejections_not_listed": unlisted,
        "labels": {"human": len(outcome.accepted) - machine, "machine": machine},
        "splits": splits,
        "split": {
            "by": "photo bytes (SHA-256)",
            "seed": args.seed,
            "target_fractions": dict(zip(SPLITS, (round(f, 4) for f in fractions), strict=True)),
        },
    }


def build_report(
    args: argparse.Namespace,
    reports: Sequence[SourceReport],
    outcome: Outcome,
    classes: Sequence[str],
    fractions: Sequence[float],
    output_uri: str | None = None,
) -> dict[str, Any]:
    splits = split_counts(outcome.accepted, classes)
    report = accounting_report(
        args,
        reports,
        outcome,
        classes,
        fractions,
        splits,
        too_little_data(classes, splits),
        recipe="classifier",
        report_format=REPORT_FORMAT,
    )
    report.update(
        {
            "image_size": args.image_size,
            "resize_side": resize_side(args.image_size),
            "jpeg_quality": JPEG_QUALITY,
            "output_uri": output_uri,
            # The built-in image-classification algorithm requires both as hyperparameters
            # (https://docs.aws.amazon.com/sagemaker/latest/dg/IC-Hyperparameter.html); its Train step reads
            # them from here (pipelines/classifier/pipeline.py).
            "builtin": {"num_classes": len(classes), "num_training_samples": splits["train"]["images"]},
        }
    )
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole step; returns data-report.json's content. Raises PreprocessError / DataQualityError."""
    side = resize_side(args.image_size)
    return run_recipe(
        args,
        read_manifest=read_ground_truth,
        split_outputs=(IMAGE_LIST,),
        convert=lambda candidate: resized_jpeg(candidate.image_path, side),
        write_outputs=write_outputs,
        build_report=build_report,
    )


def run_recipe(
    args: argparse.Namespace,
    *,
    read_manifest: Callable[..., tuple[SourceReport, list[Candidate]]],
    split_outputs: Sequence[str],
    convert: Callable[[Candidate], bytes],
    write_outputs: Callable[[dict[str, Path], Sequence[Accepted], Sequence[str], str | None], None],
    build_report: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """A Preprocess of Ground Truth manifests: check the options, read every manifest with
    ``read_manifest``, judge and ``convert`` every photo into its split, ``write_outputs`` (the
    ``split_outputs`` files beside ``images/``), then the report (``build_report``)."""
    fractions = check_options(args)
    limits = limits_from(args)
    output_uri = output_uri_from(args.output_uri)
    sources = manifest_sources(args.input, limits)
    reports, candidates, owners, found_classes = read_sources(sources, args, limits, read_manifest)
    classes = class_list(found_classes)
    split_dirs = prepare_split_dirs(args.output, split_outputs)
    outcome = write_photos(
        candidates, owners, reports, split_dirs, convert, fractions, args.seed, limits, args.input
    )
    write_outputs(split_dirs, outcome.accepted, classes, output_uri)
    report = build_report(args, reports, outcome, classes, fractions, output_uri)
    return finish(args.output, reports, report)


def manifest_sources(input_dir: Path, limits: DataLimits) -> list[Source]:
    """The Ground Truth output manifests under ``input_dir``; PreprocessError if none, LimitError if
    more than the limit."""
    sources = [s for s in discover_sources(input_dir) if s.format == "ground-truth"]
    if not sources:
        raise PreprocessError(f"no Ground Truth output manifest (*.manifest) under {input_dir}")
    if len(sources) > limits.sources:
        raise LimitError(
            f"the input holds {len(sources):,} manifests, more than {limit_text(limits, 'sources')}"
        )
    return sources


def finish(output: Path, reports: Sequence[SourceReport], report: dict[str, Any]) -> dict[str, Any]:
    """Write ``report/data-report.json``, print each manifest's line; DataQualityError on too little data."""
    atomic_write_json(output / "report" / REPORT_NAME, report)
    for source in reports:
        print(source.summary_line(), flush=True)
    if report["failure"]:
        raise DataQualityError(f"too little data: {report['failure']}; see report/{REPORT_NAME}")
    return report


def summary_line(report: dict[str, Any], seconds: float, side: int | None = None) -> str:
    """``read N, accepted M, rejected K [reason xN, ...]; train a, validation b, test c photos ...``
    (at ``side`` px: the classifier's resize side by default)."""
    reasons = ", ".join(f"{code} x{n}" for code, n in report["rejected_by_reason"].items())
    splits = ", ".join(f"{split} {report['splits'][split]['images']}" for split in SPLITS)
    return (
        f"total: read {report['read']}, accepted {report['accepted']}, rejected {report['rejected']}"
        + (f" [{reasons}]" if reasons else "")
        + f"; {splits} photos of {len(report['classes'])} classes at {side or report['resize_side']} px"
        + f"; {seconds:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return preprocess_main(PROG, build_parser(), run, summary_line, argv)


def preprocess_main(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    summary: Callable[[dict[str, Any], float], str],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, ``run`` the step and print its ``summary`` line, with the exit statuses of
    ``processing.errors.run_main``."""
    args = parser.parse_args(argv)

    def run_and_summarise() -> int:
        started = time.perf_counter()
        report = run(args)
        print(summary(report, time.perf_counter() - started), flush=True)
        return 0

    return run_main(prog, run_and_summarise, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
