"""Train a small SSD (``training/ssd.py``) on boxed photos: Gluon script mode for a SageMaker Training job.

The script-mode contract is the classifier's (``training/classifier.py``): channels ``train`` and
``validation`` at ``SM_CHANNEL_*``, the model to ``SM_MODEL_DIR``, hyperparameters as flags and in
``SM_HPS``. They carry the names of the built-in object-detection algorithm where they mean the same
(https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-api-config.html): ``base_network``,
``use_pretrained_model``, ``num_classes``, ``num_training_samples``, ``epochs``, ``learning_rate``,
``mini_batch_size``, ``image_shape`` (one side, square input), ``optimizer``, ``overlap_threshold``,
``nms_threshold``, ``lr_scheduler_step``, ``lr_scheduler_factor``; the algorithm's others
(``momentum``, ``weight_decay``, ``label_width``, ``freeze_layer_pattern``) are accepted and recorded,
not obeyed.

Input, per channel (what ``processing/preprocess_detection.py`` writes): ``images/``, ``annotations.jsonl``
(one line per photo: ``{"image": "images/NNNNNN.jpg", "boxes": [[class_id, xmin, ymin, xmax, ymax], ...]}``,
coordinates normalised to [0, 1]) and ``classes.json``. Each photo is stretched whole to
``image_shape`` x ``image_shape`` (``edge.photos.stretch``: normalised boxes stay where they are) and
flipped left-right at random while training.

Output, the built-in algorithm's artifact layout:

- ``model_algo_1-symbol.json`` and ``model_algo_1-0000.params``: the training symbol as the built-in
  algorithm writes it (its inputs ``data`` and ``label``; ``MultiBoxTarget``, the class softmax against its
  targets, the box loss and ``MultiBoxDetection``), so both trainers' artifacts go through the same
  conversion, ``deploy_network``, before anything serves them;
- ``model-shapes.json``: ``[{"name": "data", "shape": [1, 3, S, S]}]``;
- ``detector-spec.json`` (``SPEC_FILE``): classes, input transform, anchors, variances, NMS settings and
  a training summary;
- ``code/``: the inference server and the detector's handler (``inference/detector.py``) with what they
  import (``SERVING_MODULES``), so the endpoint image's ``serve`` serves the model with its own code.

Each epoch prints ``Epoch[N] Train-CrossEntropy=...``, ``Epoch[N] Train-SmoothL1=...`` and
``Epoch[N] Validation-mAP=...`` (mAP at IoU 0.5 on the validation channel), scraped by ``METRIC_DEFINITIONS``.

    python training/detector.py --train DIR/train --validation DIR/validation --sm-model-dir OUT --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.photos import ANNOTATIONS_FILE, CLASSES_FILE, STRETCH, PhotoTransform, stretch, to_input
from processing.errors import add_debug_flag
from training.classifier import (
    OPTIMIZERS,
    SERVING_CODE_DIR,
    SHAPES_FILE,
    add_weights_argument,
    copy_serving_code,
    default_weights,
    make_trainer,
    parameters_snapshot,
    pretrained_weights,
    restore_parameters,
)
from training.classifier import SERVING_MODULES as CLASSIFIER_SERVING_MODULES
from training.script_mode import (
    UsageError,
    add_container_paths,
    parse_script_args,
    positive,
    run_training_script,
    typed,
)

ARTIFACT_PREFIX = "model_algo_1"  # the built-in object-detection algorithm's file names
ARTIFACT_EPOCH = 0  # it always writes model_algo_1-0000.params
SPEC_FILE = "detector-spec.json"
SPEC_SCHEMA = "robocar/detector-spec/1"
# What code/ holds: the classifier's serving modules (the server, the request helpers the detector's
# handler reuses) and the detector's handler, loader and decoder.
SERVING_MODULES = (
    *CLASSIFIER_SERVING_MODULES, "edge.detect", "edge.runtimes", "inference.detector", "training.detector",
)  # fmt: skip
DEFAULT_IMAGE_SHAPE = 128
BUILTIN_BASE_NETWORKS = (
    "resnet-50",
    "vgg-16",
)  # the built-in algorithm's; locally DEFAULT_BACKBONE stands in
# The small conv net from random weights beat EfficientNet-Lite0 from ImageNet weights on 200 synthetic
# photos at 128 px, 2 busy cores: validation mAP@0.5 0.97 after 4 epochs at 67 photos/s, against 0.57
# after 4 epochs at 12 photos/s (adam 1e-3, batch 16).
DEFAULT_BACKBONE = "small"
NMS_TOPK = 400
DETECTION_THRESHOLD = 0.01  # scores below are not detections (MultiBoxDetection's default)
MAP_IOU = 0.5
MAX_IMAGES = 1_000_000
METRIC_DEFINITIONS = [
    {"Name": "train:cross_entropy", "Regex": r"Epoch\[\d+\] Train-CrossEntropy=([0-9.eE+-]+)"},
    {"Name": "train:smooth_l1", "Regex": r"Epoch\[\d+\] Train-SmoothL1=([0-9.eE+-]+)"},
    {"Name": "validation:mAP", "Regex": r"Epoch\[\d+\] Validation-mAP=([0-9.eE+-]+)"},
]
# Recorded when given (the built-in algorithm's), not obeyed by this script.
RECORDED_ONLY = ("momentum", "weight_decay", "label_width", "freeze_layer_pattern")


@dataclass(frozen=True)
class DetectorConfig:
    train_dir: Path
    validation_dir: Path
    model_dir: Path
    weights: Path | None
    base_network: str = DEFAULT_BACKBONE
    use_pretrained_model: bool = True
    num_classes: int = 0
    epochs: int = 10
    learning_rate: float = 0.001
    mini_batch_size: int = 16
    image_shape: int = DEFAULT_IMAGE_SHAPE
    optimizer: str = "adam"
    overlap_threshold: float = 0.5
    nms_threshold: float = 0.45
    negative_mining_ratio: float = 3.0
    lr_scheduler_step: tuple[int, ...] = ()
    lr_scheduler_factor: float = 0.1
    seed: int = 0
    debug: bool = False
    builtin: dict[str, Any] = field(default_factory=dict)


# --- hyperparameters ---------------------------------------------------------------------------------


def _image_shape(raw: Any) -> int:
    """The built-in's ``image_shape`` (one side, e.g. ``300``): at least 32, so the stride-32 map exists."""
    side = typed(int)(raw)
    if side < 32:
        raise argparse.ArgumentTypeError(f"expected a side of at least 32 pixels, got {raw!r}")
    return side


def _epochs(raw: Any) -> tuple[int, ...]:
    """The built-in's ``lr_scheduler_step``: ``"10,20"`` -> (10, 20), epochs after which the rate drops."""
    text = str(typed(str)(raw)).strip()
    try:
        steps = tuple(int(part) for part in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs, got {raw!r}") from None
    if any(step <= 0 for step in steps) or list(steps) != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"expected increasing positive epochs, got {raw!r}")
    return steps


def _fraction(raw: Any) -> float:
    value = typed(float)(raw)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {raw!r}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    from training.ssd import BACKBONES

    parser = argparse.ArgumentParser(
        prog="detector.py",
        description="Train a small SSD on boxed photos; export the built-in object-detection algorithm's "
        "artifact layout.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    paths = add_container_paths(parser, environ, f"images/, {ANNOTATIONS_FILE}, {CLASSES_FILE}")
    add_weights_argument(paths)
    hps = parser.add_argument_group("hyperparameters (the built-in algorithm's names; flags override SM_HPS)")
    hps.add_argument(
        "--base_network", "--base-network", dest="base_network", type=typed(str),
        choices=(*BACKBONES, *BUILTIN_BASE_NETWORKS), default=DEFAULT_BACKBONE,
        help="feature extractor; the built-in's resnet-50 and vgg-16 are recorded and run as "
        f"{DEFAULT_BACKBONE}",
    )  # fmt: skip
    hps.add_argument(
        "--use_pretrained_model", "--use-pretrained-model", dest="use_pretrained_model",
        type=typed(bool), default=True,
        help="1: efficientnet-lite0 starts from ImageNet weights; 0: random (small always is)",
    )  # fmt: skip
    hps.add_argument(
        "--num_classes", "--num-classes", dest="num_classes", type=typed(int), default=0,
        help=f"object classes (0: the length of {CLASSES_FILE}, else one more than the largest class id)",
    )  # fmt: skip
    hps.add_argument(
        "--num_training_samples", "--num-training-samples", dest="num_training_samples", type=typed(int),
        default=None, help="photos in the train channel (checked: a different count is an error)",
    )  # fmt: skip
    hps.add_argument("--epochs", type=positive(int), default=10, help="passes over the train channel")
    hps.add_argument(
        "--learning_rate", "--learning-rate", dest="learning_rate", type=positive(float), default=0.001,
        help="learning rate",
    )  # fmt: skip
    hps.add_argument(
        "--mini_batch_size", "--mini-batch-size", dest="mini_batch_size", type=positive(int), default=16,
        help="photos per step",
    )  # fmt: skip
    hps.add_argument(
        "--image_shape", "--image-shape", dest="image_shape", type=_image_shape, default=DEFAULT_IMAGE_SHAPE,
        help="side of the square network input (the built-in's minimum is 300; 128 trains on 2 cores)",
    )  # fmt: skip
    hps.add_argument(
        "--optimizer", type=typed(str), choices=OPTIMIZERS, default="adam",
        help="as the classifier's: sgd and nag with momentum 0.9; all with weight decay 1e-4",
    )  # fmt: skip
    hps.add_argument(
        "--overlap_threshold", "--overlap-threshold", dest="overlap_threshold", type=_fraction, default=0.5,
        help="IoU at which an anchor is a positive of a true box (MultiBoxTarget)",
    )  # fmt: skip
    hps.add_argument(
        "--nms_threshold", "--nms-threshold", dest="nms_threshold", type=_fraction, default=0.45,
        help="IoU above which non-maximum suppression drops the weaker box (MultiBoxDetection)",
    )  # fmt: skip
    hps.add_argument(
        "--negative_mining_ratio", "--negative-mining-ratio", dest="negative_mining_ratio",
        type=positive(float), default=3.0, help="hard negatives kept per positive anchor (SSD's 3:1)",
    )  # fmt: skip
    hps.add_argument(
        "--lr_scheduler_step", "--lr-scheduler-step", dest="lr_scheduler_step", type=_epochs, default="",
        help="epochs after which the learning rate is multiplied by lr_scheduler_factor (e.g. 20,26)",
    )  # fmt: skip
    hps.add_argument(
        "--lr_scheduler_factor", "--lr-scheduler-factor", dest="lr_scheduler_factor", type=_fraction,
        default=0.1, help="what the learning rate is multiplied by at each lr_scheduler_step",
    )  # fmt: skip
    hps.add_argument("--seed", type=typed(int), default=0, help="seeds weights, shuffling and flips")
    recorded = parser.add_argument_group("the built-in algorithm's other hyperparameters: recorded only")
    for name in RECORDED_ONLY:
        recorded.add_argument(f"--{name}", type=typed(str), default=None, help="recorded in the spec")
    add_debug_flag(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DetectorConfig:
    environ = os.environ if environ is None else environ
    args = parse_script_args(build_parser(environ), argv, environ)
    weights = pretrained_weights(args.weights, environ)
    builtin = {name: getattr(args, name) for name in RECORDED_ONLY if getattr(args, name) is not None}
    if args.num_training_samples is not None:
        builtin["num_training_samples"] = args.num_training_samples
    if args.base_network in BUILTIN_BASE_NETWORKS:
        builtin["base_network"] = args.base_network
    return DetectorConfig(
        train_dir=args.train,
        validation_dir=args.validation,
        model_dir=args.model_dir,
        weights=weights,
        base_network=DEFAULT_BACKBONE if args.base_network in BUILTIN_BASE_NETWORKS else args.base_network,
        use_pretrained_model=args.use_pretrained_model,
        num_classes=args.num_classes,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        image_shape=args.image_shape,
        optimizer=args.optimizer,
        overlap_threshold=args.overlap_threshold,
        nms_threshold=args.nms_threshold,
        negative_mining_ratio=args.negative_mining_ratio,
        lr_scheduler_step=args.lr_scheduler_step,
        lr_scheduler_factor=args.lr_scheduler_factor,
        seed=args.seed,
        debug=args.debug,
        builtin=builtin,
    )


# --- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxedPhotos:
    """One channel decoded once: ``side`` x ``side`` RGB uint8 photos and their boxes, (K, 5) rows
    [class_id, xmin, ymin, xmax, ymax] normalised."""

    images: list[np.ndarray]
    boxes: list[np.ndarray]


def _boxes(raw: Any, where: str) -> np.ndarray:
    try:
        boxes = np.array(raw, dtype=np.float64).reshape(-1, 5)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: boxes must be [[class_id, xmin, ymin, xmax, ymax], ...]") from None
    if not isinstance(raw, list) or len(boxes) != len(raw):
        raise UsageError(f"{where}: boxes must be [[class_id, xmin, ymin, xmax, ymax], ...]")
    ids, corners = boxes[:, 0], boxes[:, 1:]
    if np.any(ids < 0) or np.any(ids != np.round(ids)):
        raise UsageError(f"{where}: a class id is not an integer >= 0")
    if np.any(corners < 0) or np.any(corners > 1) or np.any(corners[:, 2:] <= corners[:, :2]):
        raise UsageError(f"{where}: a box is not 0 <= xmin < xmax <= 1, 0 <= ymin < ymax <= 1")
    return boxes.astype(np.float32)


def read_annotations(channel: Path) -> list[tuple[Path, np.ndarray]]:
    """(photo path, boxes) per line of the channel's ``annotations.jsonl``; paths stay inside the channel."""
    source = channel / ANNOTATIONS_FILE
    if not source.is_file():
        raise UsageError(f"{channel}: no {ANNOTATIONS_FILE} (expected images/ and {ANNOTATIONS_FILE})")
    root = channel.resolve()
    entries = []
    with open(source, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if number > MAX_IMAGES:
                raise UsageError(f"{source}: more than {MAX_IMAGES:,} lines")
            where = f"{source}:{number}"
            try:
                record = json.loads(line)
                path = (root / record["image"]).resolve()
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UsageError(f'{where}: expected {{"image": PATH, "boxes": [...]}}') from None
            if not path.is_relative_to(root) or not path.is_file():
                raise UsageError(f"{where}: {record['image']} is not a file inside {channel}")
            entries.append((path, _boxes(record.get("boxes"), where)))
    if not entries:
        raise UsageError(f"{source}: no photos")
    return entries


def load_channel(channel: Path, side: int) -> BoxedPhotos:
    entries = read_annotations(channel)
    return BoxedPhotos([stretch(path, side, side) for path, _ in entries], [boxes for _, boxes in entries])


def pad_labels(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """(N, M, 5) MultiBoxTarget labels: each photo's boxes, then rows of -1 (no object)."""
    labels = np.full((len(boxes), max(1, max(len(b) for b in boxes)), 5), -1.0, dtype=np.float32)
    for row, photo in enumerate(boxes):
        labels[row, : len(photo)] = photo
    return labels


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    flipped = boxes.copy()
    flipped[:, 1], flipped[:, 3] = 1.0 - boxes[:, 3], 1.0 - boxes[:, 1]
    return flipped


def batches(data: BoxedPhotos, spec: PhotoTransform, size: int, rng: np.random.Generator | None) -> Any:
    """(inputs, labels, boxes) numpy batches; shuffled and half flipped left-right when ``rng`` is given
    (training then drops the last partial batch, as the classifier's does)."""
    count = len(data.images)
    order = rng.permutation(count) if rng is not None else np.arange(count)
    stop = count - count % size if rng is not None and count >= size else count
    for start in range(0, stop, size):
        chosen = order[start : start + size]
        images, boxes = [data.images[i] for i in chosen], [data.boxes[i] for i in chosen]
        if rng is not None:
            flips = rng.random(len(chosen)) < 0.5
            images = [im[:, ::-1] if flip else im for im, flip in zip(images, flips, strict=True)]
            boxes = [flip_boxes(b) if flip else b for b, flip in zip(boxes, flips, strict=True)]
        yield to_input(images, spec), pad_labels(boxes), boxes


# --- mAP ---------------------------------------------------------------------------------------------


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one [xmin, ymin, xmax, ymax] box with each row of ``others``."""
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    overlap = width * height
    areas = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (
        others[:, 3] - others[:, 1]
    )
    return overlap / np.maximum(areas - overlap, 1e-12)


def mean_average_precision(
    detections: Sequence[np.ndarray], truths: Sequence[np.ndarray], classes: int, iou: float = MAP_IOU
) -> float:
    """COCO-style mAP at one IoU (101-point interpolated precision, averaged over the classes that have
    true boxes). ``detections``: per photo (K, 6) [class_id, score, xmin, ymin, xmax, ymax];
    ``truths``: per photo (M, 5) [class_id, xmin, ymin, xmax, ymax].

    TODO(issue 18): use processing.evaluate_detection's mAP (on edge.detect.decode's boxes) once it lands,
    so training and evaluation share one implementation."""
    precisions = []
    for cls in range(classes):
        found = [
            (float(d[1]), p, d[2:6]) for p, dets in enumerate(detections) for d in dets if int(d[0]) == cls
        ]
        wanted = [t[t[:, 0] == cls, 1:5] for t in truths]
        total = sum(len(w) for w in wanted)
        if total == 0:
            continue
        used = [np.zeros(len(w), dtype=bool) for w in wanted]
        hits = []
        for _, photo, box in sorted(found, key=lambda f: -f[0]):
            candidates = wanted[photo]
            overlaps = box_iou(box, candidates) if len(candidates) else np.zeros(0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            hit = best >= 0 and overlaps[best] >= iou and not used[photo][best]
            if hit:
                used[photo][best] = True
            hits.append(hit)
        true_positives = np.cumsum(hits)
        recall = true_positives / total
        precision = true_positives / np.arange(1, len(hits) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(hits) else precision
        points = np.linspace(0, 1, 101)
        where = np.searchsorted(recall, points, side="left")
        sampled = np.array([precision[i] if i < len(precision) else 0.0 for i in where])
        precisions.append(float(sampled.mean()))
    return float(np.mean(precisions)) if precisions else 0.0


def validation_map(net: Any, data: BoxedPhotos, spec: PhotoTransform, config: DetectorConfig) -> float:
    """mAP@0.5 of ``net`` on ``data`` through contrib.MultiBoxDetection.

    TODO(issue 18): decode with edge.detect.decode (numpy, equal to MultiBoxDetection) once it lands."""
    import mxnet as mx

    from training.ssd import detect

    detections = []
    for inputs, _, _ in batches(data, spec, config.mini_batch_size, None):
        found = detect(net, mx.nd.array(inputs), nms_threshold=config.nms_threshold, nms_topk=NMS_TOPK,
                       threshold=DETECTION_THRESHOLD).asnumpy()  # fmt: skip
        detections.extend(rows[rows[:, 0] >= 0] for rows in found)
    classes = 1 + int(max(b[:, 0].max(initial=0) for b in data.boxes))
    return mean_average_precision(detections, data.boxes, classes)


# --- training ----------------------------------------------------------------------------------------


def make_spec(config: DetectorConfig) -> PhotoTransform:
    from training.efficientnet_lite import INPUT_MEAN, INPUT_SCALE, INPUT_STD

    side = config.image_shape
    return PhotoTransform(side, side, side, INPUT_MEAN, INPUT_STD, INPUT_SCALE, crop=STRETCH)


def class_names(channel: Path, boxes: Sequence[np.ndarray], num_classes: int) -> list[str]:
    """Names by class id from the channel's ``classes.json``, else ``class_<id>`` up to the largest id."""
    listed = channel / CLASSES_FILE
    largest = int(max(b[:, 0].max(initial=-1) for b in boxes))
    if listed.is_file():
        names = json.loads(listed.read_text())
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise UsageError(f"{listed}: expected a JSON list of class names")
    else:
        names = [f"class_{i}" for i in range(max(num_classes, largest + 1))]
    if num_classes and num_classes != len(names):
        raise UsageError(f"num_classes is {num_classes} but {listed.name} names {len(names)} classes")
    if largest >= len(names):
        raise UsageError(f"class id {largest} is not below the {len(names)} classes")
    return names


def build_network(config: DetectorConfig, classes: int) -> tuple[Any, Path | None]:
    from training.ssd import EFFICIENTNET, AnchorSpec, build_ssd

    weights = None
    if config.base_network == EFFICIENTNET and config.use_pretrained_model:
        weights = config.weights or default_weights()
    net = build_ssd(classes, config.base_network, AnchorSpec(), config.image_shape, weights)
    net.hybridize()
    return net, weights


def train_epoch(
    net: Any,
    trainer: Any,
    loss: Any,
    data: BoxedPhotos,
    spec: PhotoTransform,
    config: DetectorConfig,
    rng: np.random.Generator,
) -> dict[str, float]:
    """One pass: mean cross-entropy and smooth L1 per photo, photos and seconds."""
    import mxnet as mx
    from mxnet import autograd

    started, seen, totals = time.perf_counter(), 0, np.zeros(2)
    for inputs, labels, _ in batches(data, spec, config.mini_batch_size, rng):
        with autograd.record():
            cls_preds, loc_preds, anchors = net(mx.nd.array(inputs))
            cross_entropy, smooth_l1 = loss(cls_preds, loc_preds, anchors, mx.nd.array(labels))
            total = cross_entropy + smooth_l1
        total.backward()
        trainer.step(len(inputs))
        totals += [float(cross_entropy.sum().asscalar()), float(smooth_l1.sum().asscalar())]
        seen += len(inputs)
    return {"cross_entropy": totals[0] / seen, "smooth_l1": totals[1] / seen, "images": seen,
            "seconds": time.perf_counter() - started}  # fmt: skip


def train(config: DetectorConfig) -> dict[str, Any]:
    """Train, keep the epoch of the best validation mAP, export; returns the summary written into the spec."""
    import mxnet as mx

    from training.efficientnet_lite import INPUT_MULTIPLE
    from training.ssd import EFFICIENTNET, AnchorSpec, MultiBoxLoss

    if config.base_network == EFFICIENTNET and config.image_shape % INPUT_MULTIPLE:
        raise UsageError(f"efficientnet-lite0 needs an image_shape that is a multiple of {INPUT_MULTIPLE}")
    spec = make_spec(config)
    train_data = load_channel(config.train_dir, config.image_shape)
    validation = load_channel(config.validation_dir, config.image_shape)
    expected = config.builtin.get("num_training_samples")
    if expected is not None and expected != len(train_data.images):
        raise UsageError(
            f"num_training_samples is {expected} but the train channel holds {len(train_data.images)} photos"
        )
    names = class_names(config.train_dir, [*train_data.boxes, *validation.boxes], config.num_classes)
    mx.random.seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net, weights = build_network(config, len(names))
    trainer = make_trainer(net, config)
    loss = MultiBoxLoss(config.overlap_threshold, config.negative_mining_ratio)
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, {})
    started = time.perf_counter()
    for epoch in range(config.epochs):
        if epoch in config.lr_scheduler_step:
            trainer.set_learning_rate(trainer.learning_rate * config.lr_scheduler_factor)
        stats = train_epoch(net, trainer, loss, train_data, spec, config, rng)
        score = validation_map(net, validation, spec, config)
        print(f"Epoch[{epoch}] Train-CrossEntropy={stats['cross_entropy']:.6f}", flush=True)
        print(f"Epoch[{epoch}] Train-SmoothL1={stats['smooth_l1']:.6f}", flush=True)
        rate = stats["images"] / stats["seconds"]
        print(f"Epoch[{epoch}] Time cost={stats['seconds']:.3f} ({rate:.1f} images/s)", flush=True)
        print(f"Epoch[{epoch}] Validation-mAP={score:.6f}", flush=True)
        if score > best[0]:  # keep the first epoch of the best mAP
            best = (score, epoch + 1, parameters_snapshot(net))
    score, best_epoch, snapshot = best
    restore_parameters(net, snapshot)
    summary = {
        "backbone": config.base_network,
        "pretrained": "imagenet" if weights is not None else None,
        "epochs": config.epochs,
        "epoch": best_epoch,
        "validation_map_50": score,
        "seconds": round(time.perf_counter() - started, 1),
        "train_images": len(train_data.images),
        "validation_images": len(validation.images),
        "hyperparameters": {
            "base_network": config.base_network,
            "use_pretrained_model": int(config.use_pretrained_model),
            "num_classes": len(names),
            "learning_rate": config.learning_rate,
            "mini_batch_size": config.mini_batch_size,
            "image_shape": config.image_shape,
            "optimizer": config.optimizer,
            "overlap_threshold": config.overlap_threshold,
            "nms_threshold": config.nms_threshold,
            "negative_mining_ratio": config.negative_mining_ratio,
            "lr_scheduler_step": ",".join(str(step) for step in config.lr_scheduler_step),
            "lr_scheduler_factor": config.lr_scheduler_factor,
            "seed": config.seed,
        },
        "stands_in_for": {"algorithm": "object-detection", **config.builtin} if config.builtin else None,
    }
    export(net, config, spec, AnchorSpec(), names, summary)
    return summary


# --- the artifact ------------------------------------------------------------------------------------


def training_symbol(net: Any, config: DetectorConfig) -> Any:
    """The built-in algorithm's training graph around ``net``'s heads: inputs ``data`` and ``label``;
    outputs the class softmax against MultiBoxTarget's targets, the box loss, the class targets and
    MultiBoxDetection's boxes (the MXNet SSD example's ``get_symbol_train``, which the algorithm's
    artifact follows: its heads are named ``multibox_cls_pred``, ``multibox_loc_pred`` and
    ``multibox_anchors``)."""
    import mxnet as mx

    from training.ssd import VARIANCES

    data, label = mx.sym.var("data"), mx.sym.var("label")
    cls_preds, loc_preds, anchors = net(data)
    cls_preds = mx.sym.transpose(cls_preds, axes=(0, 2, 1), name="multibox_cls_pred")
    loc_preds = mx.sym.identity(loc_preds, name="multibox_loc_pred")
    anchors = mx.sym.identity(anchors, name="multibox_anchors")
    loc_target, loc_mask, cls_target = mx.sym.contrib.MultiBoxTarget(
        anchors, label, cls_preds, overlap_threshold=config.overlap_threshold, ignore_label=-1,
        negative_mining_ratio=config.negative_mining_ratio, negative_mining_thresh=0.5,
        variances=VARIANCES, name="multibox_target",
    )  # fmt: skip
    cls_prob = mx.sym.SoftmaxOutput(
        cls_preds, cls_target, ignore_label=-1, use_ignore=True, multi_output=True,
        normalization="valid", name="cls_prob",
    )  # fmt: skip
    loc_loss = mx.sym.MakeLoss(
        mx.sym.smooth_l1(loc_mask * (loc_preds - loc_target), scalar=1.0), normalization="valid",
        name="loc_loss",
    )  # fmt: skip
    cls_label = mx.sym.MakeLoss(cls_target, grad_scale=0, name="cls_label")
    det = mx.sym.contrib.MultiBoxDetection(
        cls_prob, loc_preds, anchors, nms_threshold=config.nms_threshold, force_suppress=False,
        variances=VARIANCES, nms_topk=NMS_TOPK, name="detection",
    )  # fmt: skip
    return mx.sym.Group([cls_prob, loc_loss, cls_label, mx.sym.MakeLoss(det, grad_scale=0, name="det_out")])


def export(net: Any, config: DetectorConfig, spec: PhotoTransform, anchors: Any, classes: list[str],
           summary: dict) -> None:  # fmt: skip
    """The built-in algorithm's layout (module docstring) in ``config.model_dir``."""
    import mxnet as mx

    from training.ssd import VARIANCES

    model_dir = config.model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    symbol = training_symbol(net, config)
    symbol.save(str(model_dir / f"{ARTIFACT_PREFIX}-symbol.json"))
    arguments, auxiliary = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    params = {}
    for name, param in net.collect_params().items():
        if name in arguments:
            params[f"arg:{name}"] = param.data()
        elif name in auxiliary:
            params[f"aux:{name}"] = param.data()
    mx.nd.save(str(model_dir / f"{ARTIFACT_PREFIX}-{ARTIFACT_EPOCH:04d}.params"), params)
    side = config.image_shape
    shapes = [{"name": spec.name, "shape": [1, 3, side, side]}]
    (model_dir / SHAPES_FILE).write_text(json.dumps(shapes) + "\n")
    document = {
        "schema": SPEC_SCHEMA,
        "classes": classes,
        "input": spec.as_dict(),
        "anchors": anchors.as_dict(),
        "variances": list(VARIANCES),
        "nms": {"threshold": config.nms_threshold, "topk": NMS_TOPK},
        "training": summary,
    }
    (model_dir / SPEC_FILE).write_text(json.dumps(document, indent=2) + "\n")
    copy_serving_code(model_dir / SERVING_CODE_DIR, SERVING_MODULES)


def read_spec(model_dir: Path) -> dict[str, Any]:
    document = json.loads((Path(model_dir) / SPEC_FILE).read_text())
    if document.get("schema") != SPEC_SCHEMA:
        raise UsageError(f"{model_dir}/{SPEC_FILE}: schema is not {SPEC_SCHEMA}")
    return document


def _head_outputs(symbol: Any) -> tuple[Any, Any, Any]:
    """(class scores (N, C+1, A), box offsets (N, A*4), anchors (1, A, 4)) inside a training symbol: the
    inputs of its MultiBoxTarget (anchors, label, class scores) and of its MultiBoxDetection (offsets
    second), else the nodes named as the MXNet SSD example names them."""
    graph = json.loads(symbol.tojson())
    nodes, internals = graph["nodes"], symbol.get_internals()
    outputs = set(internals.list_outputs())

    def output_of(entry: list[int]) -> Any:
        node = nodes[entry[0]]
        name = node["name"] if node["op"] == "null" else f"{node['name']}_output"
        if name not in outputs:  # a node with several outputs
            name = f"{node['name']}_output{entry[1]}"
        return internals[name]

    found: dict[str, Any] = {}
    for node in nodes:
        if node["op"] == "_contrib_MultiBoxTarget":
            found["anchors"], found["cls"] = output_of(node["inputs"][0]), output_of(node["inputs"][2])
        elif node["op"] == "_contrib_MultiBoxDetection":
            found["loc"] = output_of(node["inputs"][1])
    for key, name in (
        ("cls", "multibox_cls_pred"),
        ("loc", "multibox_loc_pred"),
        ("anchors", "multibox_anchors"),
    ):
        if key not in found and f"{name}_output" in outputs:
            found[key] = internals[f"{name}_output"]
    missing = [k for k in ("cls", "loc", "anchors") if k not in found]
    if missing:
        raise UsageError(f"the symbol has no SSD heads ({', '.join(missing)} not found)")
    return found["cls"], found["loc"], found["anchors"]


def deploy_network(model_dir: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(symbol, arg_params, aux_params) of the deploy form: outputs ``cls_prob`` (N, C+1, A) (softmax over
    the classes, background first), ``loc_preds`` (N, A*4) and ``anchors`` (1, A, 4), MultiBoxDetection's
    inputs, with ``data`` the only input: the training-only MultiBoxTarget and its ``label`` are gone."""
    import mxnet as mx

    model_dir = Path(model_dir)
    symbol = mx.sym.load(str(model_dir / f"{ARTIFACT_PREFIX}-symbol.json"))
    params = sorted(model_dir.glob(f"{ARTIFACT_PREFIX}-[0-9][0-9][0-9][0-9].params"))
    if len(params) != 1:
        raise UsageError(f"{model_dir}: expected one {ARTIFACT_PREFIX}-NNNN.params, found {len(params)}")
    cls_preds, loc_preds, anchors = _head_outputs(symbol)
    deploy = mx.sym.Group([
        mx.sym.softmax(cls_preds, axis=1, name="cls_prob"),
        mx.sym.identity(loc_preds, name="loc_preds"),
        mx.sym.identity(anchors, name="anchors"),
    ])  # fmt: skip
    saved = mx.nd.load(str(params[0]))
    arguments, auxiliary = set(deploy.list_arguments()), set(deploy.list_auxiliary_states())
    arg_params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:") and k[4:] in arguments}
    aux_params = {k[4:]: v for k, v in saved.items() if k.startswith("aux:") and k[4:] in auxiliary}
    unbound = sorted(arguments - set(arg_params) - {"data"})
    if unbound or set(aux_params) != auxiliary:
        raise UsageError(f"{params[0]}: no values for {unbound or sorted(auxiliary - set(aux_params))}")
    return deploy, arg_params, aux_params


def deploy_detections(model_dir: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``deploy_network`` + contrib.MultiBoxDetection with the spec's NMS settings: one output (N, A, 6)
    rows [class_id (-1: none), score, xmin, ymin, xmax, ymax], what Neo compiles on AWS and the
    reference the numpy decoder is tested against."""
    import mxnet as mx

    spec = read_spec(Path(model_dir))
    heads, arg_params, aux_params = deploy_network(model_dir)
    cls_prob, loc_preds, anchors = heads[0], heads[1], heads[2]
    detections = mx.sym.contrib.MultiBoxDetection(
        cls_prob, loc_preds, anchors, nms_threshold=spec["nms"]["threshold"], nms_topk=spec["nms"]["topk"],
        threshold=DETECTION_THRESHOLD, variances=tuple(spec["variances"]), force_suppress=False,
        name="detection",
    )  # fmt: skip
    return detections, arg_params, aux_params


def bind_deploy(symbol: Any, arg_params: dict, aux_params: dict, side: int, batch: int = 1) -> Any:
    """A Module bound for inference with ``data`` (batch, 3, side, side) only."""
    import mxnet as mx

    module = mx.mod.Module(symbol, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", (batch, 3, side, side))], for_training=False)
    module.set_params(arg_params, aux_params)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    return run_training_script(
        "detector.py", parse_args(argv), train, lambda s: f"validation mAP@0.5 {s['validation_map_50']:.4f}"
    )


if __name__ == "__main__":
    sys.exit(main())
