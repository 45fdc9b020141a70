"""Evaluate the trained detector on the test split, against a constant baseline and the champion.

Runs in the MXNet container (locally the MXNet environment: mxnet, numpy 1.23, Pillow; no matplotlib).
The model is the deploy form ``training.detector.deploy_network`` gives (outputs ``cls_prob``,
``loc_preds``, ``anchors``), each photo's heads decoded by ``edge.detect.decode`` (the car's and the
endpoint's decoder) with the NMS settings of the model's ``detector-spec.json``. Writes
``evaluation.json`` (the pipeline's Condition reads ``detection_metrics.map_50.value``),
``precision_recall.png`` and ``detections.png`` next to it:

- ``detection_metrics``: COCO's average precision (https://cocodataset.org/#detection-eval): per class,
  the detections of all photos by score, each matched greedily (best score first) to the unmatched true
  box of its class and photo with the highest IoU, when that IoU is at least the threshold (one match per
  true box: a second detection of a found object is a false positive); precision made monotone and
  read at 101 recall points 0, 0.01, ..., 1 (0 beyond the highest recall reached); at most 100
  detections per photo (COCO's maxDets). ``map_50``: the mean over classes at IoU 0.5;
  ``map_50_95``: the mean over the IoU thresholds 0.5, 0.55, ..., 0.95. A class without a true box in
  the test split has no AP (null in ``per_class_ap_50``) and is left out of the means, as COCO does.
- ``baseline``: a detector that never looks at the photo: in every test photo, one box per class at the
  class's mean box over ``--train``'s objects, scored by the share of train photos holding that class.
  It scores where objects usually are; a model must beat it by finding them.
- ``champion``: the package a car with the first of ``--edge-targets`` installs (processing/evaluate.py's
  ``find_champion``), its model evaluated on the same photos; its ``error`` (and a null mAP) when it
  cannot be (another class list, another recipe).
- ``already_registered``: whether a package of the group already serves ``--model-s3-uri``.
- ``predictions``: ``{"file": "predictions.jsonl", "wrong": n}``; that file has one line per test photo:
  ``image``, ``origin`` (as the classifier's: processing/evaluate_classifier.py), ``true_boxes``,
  ``predicted_boxes`` (score >= the car's 0.5), ``matched`` (IoU >= 0.5, same class) and ``correct``.

    python processing/evaluate_detection.py --model DIR_WITH_model.tar.gz --test DIR/test \
        --train DIR/train --output OUT [--model-package-group NAME --edge-targets T1,T2 --model-s3-uri URI]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic_files import atomic_write_bytes
from edge.detect import DEFAULT_MIN_SCORE, decode, decode_settings
from edge.photos import ANNOTATIONS_FILE, PhotoError, PhotoTransform, prepare
from processing.errors import add_debug_flag, run_main
from processing.evaluate import (
    EvaluationError,
    add_registry_arguments,
    champion_target,
    download,
    extract_model,
    find_champion,
    is_registered,
    registry_clients,
)
from processing.evaluate_classifier import (
    PREDICTIONS_FILE,
    _font,
    _text,
    _text_size,
    photo_origins,
    read_class_names,
    to_json,
)
from training.detector import SPEC_FILE

RECIPE = "detection"
EVALUATION_FILE = "evaluation.json"
PRECISION_RECALL_PNG = "precision_recall.png"
DETECTIONS_PNG = "detections.png"
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # COCO's 0.5:0.05:0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101-point interpolation
MAX_DETECTIONS = 100  # COCO's maxDets per photo
BATCH = 32  # photos per forward pass


@dataclass(frozen=True)
class Detector:
    """A model as evaluation sees it: class names, input transform, the heads, and decode's settings."""

    classes: list[str]
    transform: PhotoTransform
    heads: Callable[[np.ndarray], Sequence[np.ndarray]]  # NCHW -> cls_prob, loc_preds, anchors
    decode_settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """One split's photos and their true boxes (M, 5) ``[class_id, xmin, ymin, xmax, ymax]``."""

    paths: list[Path]
    boxes: list[np.ndarray]
    classes: list[str]


# --- metrics (pure numpy) ----------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of corner boxes a (N, 4) and b (M, 4); 0 where the union has no area."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def match_photo(detections: np.ndarray, truths: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Which of one photo's detections of one class (K, 4 box columns, best score first) are true
    positives against its true boxes (M, 4): each takes the unmatched true box of highest IoU if that
    IoU is >= the threshold (COCO's rule; the first such box on a tie)."""
    hits = np.zeros(len(detections), dtype=bool)
    if len(detections) == 0 or len(truths) == 0:
        return hits
    overlaps = box_iou(detections, truths)
    free = np.ones(len(truths), dtype=bool)
    for i, row in enumerate(overlaps):
        candidates = np.where(free, row, -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            hits[i], free[best] = True, False
    return hits


def average_precision(scores: np.ndarray, hits: np.ndarray, true_count: int) -> float | None:
    """COCO's 101-point interpolated AP of detections (``scores``, ``hits``: true positive or not)
    against ``true_count`` true boxes; None when there are none (AP undefined)."""
    return precision_recall(scores, hits, true_count)[2]


def precision_recall(
    scores: np.ndarray, hits: np.ndarray, true_count: int
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(recall, monotone precision, AP) of detections ranked by score (stable: ties keep their order)."""
    if true_count == 0:
        return np.zeros(0), np.zeros(0), None
    if len(scores) == 0:
        return np.zeros(0), np.zeros(0), 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    found = np.cumsum(np.asarray(hits, bool)[order])
    recall = found / true_count
    precision = found / np.arange(1, len(found) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or more
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return recall, precision, float(sampled.mean())


def _class_ranking(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], class_id: int, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """All photos' detections of a class: their scores, whether each is a hit, and the true box count."""
    scores, hits, count = [], [], 0
    for detected, true in zip(predictions, truths, strict=True):
        mine = detected[detected[:, 0] == class_id]
        mine = mine[np.argsort(-mine[:, 1], kind="stable")]
        true_boxes = true[true[:, 0] == class_id, 1:5]
        count += len(true_boxes)
        scores.append(mine[:, 1])
        hits.append(match_photo(mine[:, 2:6], true_boxes, iou_threshold))
    return np.concatenate(scores), np.concatenate(hits), count


def _as_tables(rows: Sequence[np.ndarray], width: int) -> list[np.ndarray]:
    return [np.asarray(r, np.float64).reshape(-1, width) for r in rows]


def detection_metrics(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], names: Sequence[str]
) -> dict[str, Any]:
    """The ``detection_metrics`` block: ``predictions`` per photo (K, 6) decode's rows, ``truths`` per
    photo (M, 5) ``[class_id, xmin, ymin, xmax, ymax]``; the best ``MAX_DETECTIONS`` of a photo count."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} photos of predictions for {len(truths)} of true boxes")
    predicted = [t[np.argsort(-t[:, 1], kind="stable")][:MAX_DETECTIONS] for t in _as_tables(predictions, 6)]
    true = _as_tables(truths, 5)
    table = {}  # class -> AP per IoU threshold
    for class_id in range(len(names)):
        table[class_id] = [
            average_precision(*_class_ranking(predicted, true, class_id, t)) for t in IOU_THRESHOLDS
        ]
    present = [c for c, aps in table.items() if aps[0] is not None]
    if not present:
        raise EvaluationError("the test split has no true boxes: mAP is undefined")
    ap_50 = {names[c]: table[c][0] for c in table}
    ap_50_95 = {names[c]: (None if aps[0] is None else float(np.mean(aps))) for c, aps in table.items()}
    return {
        "map_50": {"value": float(np.mean([table[c][0] for c in present]))},
        "map_50_95": {"value": float(np.mean([np.mean(table[c]) for c in present]))},
        "per_class_ap_50": ap_50,
        "per_class_ap_50_95": ap_50_95,
        "objects": {names[c]: int(sum((t[:, 0] == c).sum() for t in true)) for c in table},
        "iou_thresholds": list(IOU_THRESHOLDS),
    }


def photo_predictions(
    split: Split, split_dir: Path, predictions: Sequence[np.ndarray], origins: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per test photo: where it is in the split and where it came from, its true boxes, the boxes
    a car would report (score >= ``edge.detect.DEFAULT_MIN_SCORE``), how many of those match a true box
    of their class at IoU >= 0.5 (``match_photo``), and ``correct``: every box found, nothing extra."""
    root = split_dir.resolve()
    rows = []
    for path, truth, found in zip(
        split.paths, _as_tables(split.boxes, 5), _as_tables(predictions, 6), strict=True
    ):
        kept = found[found[:, 1] >= DEFAULT_MIN_SCORE]
        kept = kept[np.argsort(-kept[:, 1], kind="stable")]
        matched = sum(
            int(match_photo(kept[kept[:, 0] == c, 2:6], truth[truth[:, 0] == c, 1:5], 0.5).sum())
            for c in range(len(split.classes))
        )
        image = path.resolve().relative_to(root).as_posix()
        rows.append(
            {
                "image": image,
                "origin": origins.get(image),
                "true_boxes": len(truth),
                "predicted_boxes": len(kept),
                "matched": matched,
                "correct": matched == len(truth) == len(kept),
            }
        )
    return rows


def mean_box_baseline(
    train_truths: Sequence[np.ndarray], photos: int, classes: int
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The constant detector: per class seen in training, its mean box scored by the share of train
    photos holding it, in each of ``photos`` photos; (its predictions per photo, its description)."""
    true = _as_tables(train_truths, 5)
    rows, described = [], {}
    for class_id in range(classes):
        boxes = np.concatenate([t[t[:, 0] == class_id, 1:5] for t in true]) if true else np.zeros((0, 4))
        if len(boxes) == 0:
            continue
        share = float(np.mean([(t[:, 0] == class_id).any() for t in true]))
        mean_box = boxes.mean(axis=0)
        rows.append([class_id, share, *mean_box])
        described[class_id] = {"box": [round(float(v), 6) for v in mean_box], "score": share}
    table = np.array(rows, np.float64).reshape(-1, 6)
    return [table.copy() for _ in range(photos)], described


# --- splits and models -------------------------------------------------------------------------------


def read_split(folder: Path) -> Split:
    """A split of Preprocess: ``annotations.jsonl`` (image path, normalised boxes), ``classes.json``."""
    classes = read_class_names(folder)
    path = folder / ANNOTATIONS_FILE
    paths, boxes = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            table = np.array(record["boxes"], np.float64).reshape(-1, 5)
            image = folder / record["image"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EvaluationError(f"{path} line {number}: not an annotation ({exc})") from exc
        if len(table) and (table[:, 0].min() < 0 or table[:, 0].max() >= len(classes)):
            raise EvaluationError(f"{path} line {number}: a class id outside 0..{len(classes) - 1}")
        paths.append(image)
        boxes.append(table)
    if not paths:
        raise EvaluationError(f"{path} lists no photos")
    return Split(paths, boxes, classes)


def predict(detector: Detector, paths: Sequence[Path], batch: int = BATCH) -> list[np.ndarray]:
    """Decoded detections (K, 6) of each photo, prepared by the detector's own transform."""
    results = []
    for start in range(0, len(paths), batch):
        try:
            inputs = np.concatenate([prepare(p, detector.transform) for p in paths[start : start + batch]])
        except PhotoError as exc:
            raise EvaluationError(str(exc)) from exc
        cls_prob, loc_preds, anchors = (np.asarray(h, np.float32) for h in detector.heads(inputs))
        if cls_prob.shape[0] != len(inputs) or cls_prob.shape[1] != len(detector.classes) + 1:
            raise EvaluationError(
                f"the model answered cls_prob {cls_prob.shape} for {len(inputs)} photos of "
                f"{len(detector.classes)} classes (+ background)"
            )
        for i in range(len(inputs)):
            results.append(
                decode(cls_prob[i], loc_preds[i], anchors.reshape(-1, 4), **detector.decode_settings)
            )
    return results


def read_spec(model_dir: Path) -> tuple[dict[str, Any], list[str], PhotoTransform]:
    """The detector spec of a model directory: (spec, class names, photo transform)."""
    try:
        spec = json.loads((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        return spec, list(spec["classes"]), PhotoTransform.from_dict(spec["input"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # PhotoError is a ValueError
        raise EvaluationError(f"cannot read {model_dir / SPEC_FILE}: {exc}") from exc


def mxnet_heads(symbol: Any, arg_params: Mapping[str, Any], aux_params: Mapping[str, Any]) -> Callable:
    """A forward pass of a deploy symbol (outputs cls_prob, loc_preds, anchors) on NCHW batches."""
    import mxnet as mx

    module = mx.mod.Module(symbol, data_names=["data"], label_names=None, context=mx.cpu())
    bound: list[tuple[int, ...]] = []

    def heads(batch: np.ndarray) -> list[np.ndarray]:
        if not bound:  # bound on the first batch; Module.forward reshapes for other batch sizes
            module.bind(data_shapes=[("data", batch.shape)], for_training=False)
            module.set_params(dict(arg_params), dict(aux_params), allow_missing=False)
            bound.append(batch.shape)
        module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
        return [output.asnumpy() for output in module.get_outputs()[:3]]

    return heads


def load_mxnet_detector(model_dir: Path, deploy: Callable[[Path], tuple] | None = None) -> Detector:
    """A trained detector directory as a ``Detector``: ``deploy`` (``training.detector.deploy_network``
    by default) gives its deploy symbol and weights."""
    spec, classes, transform = read_spec(model_dir)
    if deploy is None:
        from training.detector import deploy_network as deploy
    try:
        symbol, arg_params, aux_params = deploy(model_dir)
    except (OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"cannot load the detector in {model_dir}: {exc}") from exc
    return Detector(classes, transform, mxnet_heads(symbol, arg_params, aux_params), decode_settings(spec))


def champion_report(
    champion: Mapping[str, str] | None,
    s3: Any,
    workdir: Path,
    split: Split,
    loader: Callable[[Path], Detector],
) -> dict[str, Any] | None:
    """The champion's mAP@0.5 on the same photos; ``error`` with a null mAP when it cannot take them."""
    if champion is None:
        return None
    report = {
        "model_package_arn": champion["model_package_arn"],
        "model_data_url": champion["model_data_url"],
    }
    archive = download(s3, champion["model_data_url"], workdir / "champion-model.tar.gz")
    try:
        model = loader(extract_model(archive, workdir, SPEC_FILE))
        if model.classes != split.classes:
            raise EvaluationError(f"the champion knows {model.classes}, the test split {split.classes}")
        metrics = detection_metrics(predict(model, split.paths), split.boxes, split.classes)
    except EvaluationError as exc:
        print(f"champion {champion['model_package_arn']} not comparable: {exc}", flush=True)
        return {**report, "map_50": {"value": None}, "error": str(exc)}
    return {**report, "map_50": metrics["map_50"], "map_50_95": metrics["map_50_95"]}


# --- pictures (Pillow only) --------------------------------------------------------------------------

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip
TRUE_COLOUR = (0, 200, 0)
SHEET_PHOTOS = 12  # photos on the detections sheet: enough to see the model's habits, small to open
SHEET_SIDE = 192  # pixels per photo on the sheet
SHEET_SCORE = 0.5  # detections drawn on the sheet: the confident ones a car would act on


def draw_precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float | None]], path: Path,
                          title: str) -> None:  # fmt: skip
    """One precision-recall curve per class (IoU 0.5, precision made monotone), AP in the legend."""
    from PIL import Image, ImageDraw

    font = _font()
    side, margin = 360, 50
    image = Image.new("RGB", (side + 2 * margin + 180, side + 2 * margin + 20), "white")
    draw = ImageDraw.Draw(image)
    left, top = margin, margin + 20
    _text(image, (margin, 18), title, font, "black")
    draw.rectangle((left, top, left + side, top + side), outline="black")
    for tick in range(0, 11, 2):
        x, y = left + side * tick // 10, top + side - side * tick // 10
        _text(image, (x, top + side + 12), f"{tick / 10:.1f}", font, "black", align="centre")
        _text(image, (left - 6, y), f"{tick / 10:.1f}", font, "black", align="right")
    _text(image, (left + side // 2, top + side + 32), "recall", font, "black", align="centre")
    _text(image, (left + side + 12, top - 8), "precision by class (AP@0.5)", font, "black")
    for i, (name, (recall, precision, ap)) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        if len(recall):
            points = [(left, top + side - side * float(precision[0]))]
            for r, p in zip(recall, precision, strict=True):
                points.append((left + side * float(r), top + side - side * float(p)))
            draw.line(points, fill=colour, width=2)
        label = f"{name}: {'n/a' if ap is None else f'{ap:.3f}'}"
        _text(image, (left + side + 12, top + 16 + 22 * i), label, font, colour)
    image.save(path, format="PNG")


def draw_detections(split: Split, predictions: Sequence[np.ndarray], path: Path, title: str) -> None:
    """A sheet of the first test photos: true boxes in green, detections scoring at least
    ``SHEET_SCORE`` in their class's colour with name and score."""
    from PIL import Image, ImageDraw

    font = _font()
    count = min(SHEET_PHOTOS, len(split.paths))
    columns = min(4, count)
    rows = -(-count // columns)
    pad, head = 6, 30
    sheet = Image.new(
        "RGB", (columns * (SHEET_SIDE + pad) + pad, head + rows * (SHEET_SIDE + pad) + pad), "white"
    )
    _text(sheet, (pad, head // 2), title, font, "black")
    for i in range(count):
        try:
            photo = Image.open(split.paths[i]).convert("RGB").resize((SHEET_SIDE, SHEET_SIDE), Image.BILINEAR)
        except OSError as exc:
            raise EvaluationError(f"photo {split.paths[i]}: {exc}") from exc
        draw = ImageDraw.Draw(photo)
        for box in split.boxes[i]:
            draw.rectangle(tuple(float(v) * (SHEET_SIDE - 1) for v in box[1:5]), outline=TRUE_COLOUR, width=2)
        for row in predictions[i]:
            if row[1] < SHEET_SCORE:
                continue
            colour = PALETTE[int(row[0]) % len(PALETTE)]
            corners = tuple(float(v) * (SHEET_SIDE - 1) for v in row[2:6])
            draw.rectangle(corners, outline=colour, width=1)
            label = f"{split.classes[int(row[0])]} {row[1]:.2f}"
            height = _text_size(font, label)[1]
            _text(photo, (int(corners[0]) + 2, int(corners[1]) + height // 2 + 1), label, font, colour)
        sheet.paste(
            photo,
            (pad + (i % columns) * (SHEET_SIDE + pad), head + pad + (i // columns) * (SHEET_SIDE + pad)),
        )
    sheet.save(path, format="PNG")


# --- wiring ------------------------------------------------------------------------------------------


def evaluate(
    model_source: Path,
    test_dir: Path,
    train_dir: Path,
    out_dir: Path,
    *,
    group: str | None = None,
    sagemaker: Any = None,
    s3: Any = None,
    loader: Callable[[Path], Detector] = load_mxnet_detector,
    model_s3_uri: str | None = None,
    edge_targets: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/evaluation.json`` and the two PNGs; return the evaluation. Clients only with
    ``group``."""
    test, train = read_split(test_dir), read_split(train_dir)
    if train.classes != test.classes:
        raise EvaluationError(
            f"the train split's classes {train.classes} differ from the test's {test.classes}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evaluate-detection-") as tmp:
        workdir = Path(tmp)
        model = loader(extract_model(model_source, workdir, SPEC_FILE))
        if model.classes != test.classes:
            raise EvaluationError(
                f"the model knows the classes {model.classes}, the test split {test.classes}"
            )
        predictions = predict(model, test.paths)
        metrics = detection_metrics(predictions, test.boxes, test.classes)
        champion = champion_report(
            find_champion(sagemaker, group, champion_target(edge_targets)), s3, workdir, test, loader
        )
    baseline_predictions, baseline_boxes = mean_box_baseline(train.boxes, len(test.paths), len(test.classes))
    baseline = detection_metrics(baseline_predictions, test.boxes, test.classes)
    evaluation = {
        "recipe": RECIPE,
        "detection_metrics": metrics,
        "baseline": {
            "kind": "mean box per class at the train set's frequency",
            "boxes": {test.classes[c]: described for c, described in baseline_boxes.items()},
            "map_50": baseline["map_50"],
            "map_50_95": baseline["map_50_95"],
        },
        "champion": champion,
        "already_registered": is_registered(sagemaker, group, model_s3_uri),
        "test_images": len(test.paths),
        "classes": test.classes,
    }
    rows = photo_predictions(test, test_dir, predictions, photo_origins(test_dir))
    evaluation["predictions"] = {"file": PREDICTIONS_FILE, "wrong": sum(not row["correct"] for row in rows)}
    text = to_json(evaluation)
    summary = f"mAP@0.5 {metrics['map_50']['value']:.3f} on {len(test.paths)} test photos"
    curves = {}
    for class_id, name in enumerate(test.classes):
        ranked = _class_ranking(
            [t[:MAX_DETECTIONS] for t in _as_tables(predictions, 6)], _as_tables(test.boxes, 5), class_id, 0.5
        )
        curves[name] = precision_recall(*ranked)
    draw_precision_recall(curves, out_dir / PRECISION_RECALL_PNG, f"detector: {summary}")
    draw_detections(test, predictions, out_dir / DETECTIONS_PNG, f"green: true boxes; {summary}")
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    atomic_write_bytes(out_dir / PREDICTIONS_FILE, lines.encode())
    atomic_write_bytes(out_dir / EVALUATION_FILE, text.encode())  # last: evaluation.json names the rest
    return evaluation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_detection.py",
        description="Evaluate the trained detector on the test split (COCO mAP) against a constant "
        "baseline and the champion; write evaluation.json, precision_recall.png and detections.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    processing = Path("/opt/ml/processing")
    parser.add_argument(
        "--model", type=Path, default=processing / "model", help="model.tar.gz, or a folder with it"
    )
    parser.add_argument("--test", type=Path, default=processing / "test", help="test split folder")
    parser.add_argument("--train", type=Path, default=processing / "train", help="train split (the baseline)")
    parser.add_argument(
        "--output", type=Path, default=processing / "evaluation", help="evaluation.json goes here"
    )
    add_registry_arguments(parser)
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None, loader: Callable[[Path], Detector] = load_mxnet_detector) -> int:
    """``loader``: how a model directory becomes a Detector (a test's stand-in deploy symbol)."""
    args = build_parser().parse_args(argv)
    return run_main("evaluate_detection.py", lambda: _evaluate_and_print(args, loader), debug=args.debug)


def _evaluate_and_print(args: argparse.Namespace, loader: Callable[[Path], Detector]) -> int:
    sagemaker, s3 = registry_clients(args)
    evaluation = evaluate(
        args.model, args.test, args.train, args.output, group=args.model_package_group, sagemaker=sagemaker,
        s3=s3, loader=loader, model_s3_uri=args.model_s3_uri, edge_targets=args.edge_targets,
    )  # fmt: skip
    metrics = evaluation["detection_metrics"]
    line = (
        f"map_50={metrics['map_50']['value']:.6g} map_50_95={metrics['map_50_95']['value']:.6g} "
        f"baseline_map_50={evaluation['baseline']['map_50']['value']:.6g} "
        f"test_images={evaluation['test_images']}"
    )
    champion = evaluation["champion"]
    if champion and champion["map_50"]["value"] is not None:
        line += f" champion_map_50={champion['map_50']['value']:.6g}"
    if evaluation["already_registered"]:
        line += " already_registered=true"
    print(line, flush=True)
    print(
        f"wrote {EVALUATION_FILE}, {PRECISION_RECALL_PNG}, {DETECTIONS_PNG} and {PREDICTIONS_FILE} in "
        f"{args.output}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
