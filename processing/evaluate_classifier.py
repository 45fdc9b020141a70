"""Evaluate the trained classifier on the test split, against the majority class and the champion.

Runs in the MXNet container (locally the MXNet environment: mxnet, numpy 1.23, Pillow; no boto3, no
sagemaker, no jsonschema, no matplotlib). Writes ``evaluation.json`` (the pipeline's Condition reads
``multiclass_classification_metrics.accuracy.value``, SageMaker's model-quality metric name for
multiclass models: https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-model-quality-metrics.html)
and ``confusion_matrix.png`` next to it:

- ``multiclass_classification_metrics``: accuracy with its standard deviation ``sqrt(a(1-a)/n)`` (the
  binomial standard error over n photos, defined for any n; Model Monitor's own is a resampling
  estimate, 80% of the data sampled 5 times, given only from 200 samples on: the page above), top-k
  accuracy (k = ``--top-k``, at most the number of classes), weighted F1, per class precision / recall /
  F1 / support, and the confusion matrix (rows: the true class, columns: the predicted one). A class
  never predicted has precision 0 (and a class without test photos recall 0), as scikit-learn's
  ``zero_division=0`` reports it: never NaN.
- ``baseline``: always answering the most frequent class of ``--train``'s image list (ties: the lowest
  class id), scored on the test split.
- ``champion``: the package a car with the first of ``--edge-targets`` installs (processing/evaluate.py's
  ``find_champion``: the newest Approved package with an artifact for that target), its ``ModelDataUrl``
  downloaded and evaluated on the same photos, each prepared by the champion's own input transform and
  its answers compared by class name; null without a group or such a package.
- ``already_registered``: whether a package of the group already serves ``--model-s3-uri``.
- ``predictions``: ``{"file": "predictions.jsonl", "wrong": n}``; that file beside it has one line per test
  photo, in the image list's order: ``image`` (its path in the split), ``origin`` (the photo's key under
  the dataset's prefix, from Preprocess's ``test.manifest``; null without it), ``true``, ``predicted``,
  ``confidence`` (the predicted class's probability) and ``correct``: which photos the model got wrong.

Photos are read from the split's image list and prepared exactly as training evaluated them
(``edge.photos``: shorter side, centre crop, normalisation, from the model's ``classifier-spec.json``).

    python processing/evaluate_classifier.py --model DIR_WITH_model.tar.gz --test DIR/test \
        --train DIR/train --output OUT [--model-package-group NAME --edge-targets T1,T2 --model-s3-uri URI]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic_files import atomic_write_bytes
from edge.photos import CLASSES_FILE, PhotoError, PhotoTransform, crop, resize_shorter_side, to_input
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
from training.classifier import SPEC_FILE, load_exported, read_image_list

RECIPE = "classifier"
EVALUATION_FILE = "evaluation.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.jsonl"
DEFAULT_TOP_K = 3
BATCH = 64  # photos per forward pass, as training.classifier.evaluate_exported


@dataclass(frozen=True)
class Classifier:
    """A model as evaluation sees it: its class names, its input transform, and a forward pass."""

    classes: list[str]
    transform: PhotoTransform
    probabilities: Callable[[np.ndarray], np.ndarray]  # float32 NCHW batch -> [N, classes]


@dataclass(frozen=True)
class Split:
    """One split's photos (paths inside it) with their class ids, and the class names by id."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]


# --- metrics (pure numpy) ----------------------------------------------------------------------------


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts [true class x predicted class] (int64) of ``classes`` classes."""
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"{true.shape[0]} labels for {predicted.shape[0]} predictions")
    if true.size and (min(true.min(), predicted.min()) < 0 or max(true.max(), predicted.max()) >= classes):
        raise ValueError(f"class ids must be in 0..{classes - 1}")
    return np.bincount(true * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def accuracy_metric(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy and its binomial standard error sqrt(a(1-a)/n) from a confusion matrix."""
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("no photos: accuracy is undefined")
    value = float(np.trace(matrix)) / total
    return {"value": value, "standard_deviation": math.sqrt(value * (1.0 - value) / total)}


def top_k_accuracy(probabilities: np.ndarray, true: np.ndarray, k: int) -> dict[str, float | int]:
    """Share of photos whose class is among the ``k`` most probable (k capped at the number of classes;
    among equal probabilities the lower class id ranks first, as argmax picks)."""
    probabilities = np.asarray(probabilities, np.float64)
    k = max(1, min(int(k), probabilities.shape[1]))
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    hits = (ranked == np.asarray(true, np.int64)[:, None]).any(axis=1)
    return {"k": k, "value": float(hits.mean())}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_metrics(matrix: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support of each class; 0 instead of 0/0."""
    hits = np.diag(matrix)
    precision = _ratio(hits, matrix.sum(axis=0))
    recall = _ratio(hits, matrix.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    support = matrix.sum(axis=1)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def weighted_f1(per_class: Mapping[str, Mapping[str, float | int]]) -> float:
    """The per-class F1 averaged with each class weighted by its support (scikit-learn's 'weighted')."""
    support = np.array([c["support"] for c in per_class.values()], np.float64)
    f1 = np.array([c["f1"] for c in per_class.values()], np.float64)
    return float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0


def multiclass_metrics(
    true: np.ndarray, probabilities: np.ndarray, names: Sequence[str], k: int = DEFAULT_TOP_K
) -> dict[str, Any]:
    """The ``multiclass_classification_metrics`` block of evaluation.json (predicted class: argmax)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(names):
        raise ValueError(f"probabilities of shape {probabilities.shape} for {len(names)} classes")
    matrix = confusion_matrix(true, np.argmax(probabilities, axis=1), len(names))
    per_class = per_class_metrics(matrix, names)
    return {
        "accuracy": accuracy_metric(matrix),
        "top_k_accuracy": top_k_accuracy(probabilities, true, k),
        "weighted_f1": {"value": weighted_f1(per_class)},
        "per_class": per_class,
        "confusion_matrix": {"labels": list(names), "counts": matrix.tolist()},
    }


def majority_baseline(
    train_labels: np.ndarray, test_labels: np.ndarray, names: Sequence[str]
) -> dict[str, Any]:
    """Always answering the most frequent training class (ties: the lowest id), scored on the test split."""
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=len(names))
    majority = int(np.argmax(counts))
    return {
        "majority_class": names[majority],
        "accuracy": {"value": float(np.mean(np.asarray(test_labels) == majority))},
    }


def accuracy_by_name(true: np.ndarray, split_classes: Sequence[str], predicted_names: Sequence[str]) -> float:
    """Share of photos whose predicted class name is their class's name (models with other class lists)."""
    truth = [split_classes[label] for label in np.asarray(true, np.int64)]
    return float(np.mean([a == b for a, b in zip(truth, predicted_names, strict=True)]))


def photo_origins(split_dir: Path) -> dict[str, str]:
    """Each split image's origin (its path in the dataset: Preprocess's ``<split>.manifest`` names it),
    by its path in the split (``images/NNNNNN.jpg``); empty without that manifest (Preprocess writes it
    only with ``--output-uri``, as the pipeline always runs it)."""
    origins = {}
    for manifest in sorted(split_dir.glob("*.manifest")):
        for line in manifest.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            ref, origin = record.get("source-ref"), record.get("origin")
            if isinstance(ref, str) and isinstance(origin, str):
                origins["/".join(ref.rsplit("/", 2)[-2:])] = origin
    return origins


def photo_predictions(
    split: Split, split_dir: Path, probabilities: np.ndarray, origins: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per test photo, in the image list's order: where it is in the split and where it came from,
    its true and predicted class, the predicted class's probability, and whether it was right."""
    root = split_dir.resolve()
    rows = []
    for path, label, answer in zip(split.paths, split.labels, probabilities, strict=True):
        image = path.relative_to(root).as_posix()
        predicted = int(np.argmax(answer))
        rows.append(
            {
                "image": image,
                "origin": origins.get(image),
                "true": split.classes[int(label)],
                "predicted": split.classes[predicted],
                "confidence": round(float(answer[predicted]), 6),
                "correct": predicted == int(label),
            }
        )
    return rows


def to_json(document: Any) -> str:
    """evaluation.json's text; a NaN or infinity is a bug here (strict JSON readers refuse them)."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"


# --- splits and models -------------------------------------------------------------------------------


def read_class_names(folder: Path) -> list[str]:
    path = folder / CLASSES_FILE
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read the class names {path}: {exc}") from exc
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise EvaluationError(f"{path}: expected a JSON list of class names")
    if len(set(names)) != len(names):
        raise EvaluationError(f"{path}: class names repeat")
    return names


def read_split(folder: Path) -> Split:
    """A split of Preprocess: ``images.lst`` (index, class id, path), ``classes.json`` and the images."""
    classes = read_class_names(folder)
    entries = read_image_list(folder)  # a UserError (one line) when the list or a photo is missing
    labels = np.array([label for label, _ in entries], np.int64)
    if labels.max() >= len(classes):
        raise EvaluationError(f"{folder}: class id {labels.max()} but {len(classes)} names in {CLASSES_FILE}")
    return Split([path for _, path in entries], labels, classes)


def predict(classifier: Classifier, paths: Sequence[Path], batch: int = BATCH) -> np.ndarray:
    """Probabilities [N, classes] of the photos, each prepared by the classifier's own transform."""
    spec = classifier.transform
    parts = []
    for start in range(0, len(paths), batch):
        crops = []
        for path in paths[start : start + batch]:
            try:
                crops.append(
                    crop(resize_shorter_side(path, spec.resize_shorter_side), spec.height, spec.width)
                )
            except PhotoError as exc:
                raise EvaluationError(f"photo {path}: {exc}") from exc
        parts.append(np.asarray(classifier.probabilities(to_input(crops, spec)), np.float64))
    probabilities = np.concatenate(parts)
    if probabilities.shape != (len(paths), len(classifier.classes)):
        raise EvaluationError(
            f"the model answered {probabilities.shape} for {len(paths)} photos "
            f"of {len(classifier.classes)} classes"
        )
    return probabilities


def load_mxnet_classifier(model_dir: Path) -> Classifier:
    """training/classifier.py's exported model (symbol, params, spec) as a ``Classifier``."""
    import mxnet as mx

    try:
        net, transform, classes = load_exported(model_dir)
    except (OSError, KeyError, ValueError, mx.base.MXNetError) as exc:  # PhotoError, UsageError: ValueErrors
        raise EvaluationError(f"cannot load the classifier in {model_dir}: {exc}") from exc

    def probabilities(batch: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(batch)).asnumpy()

    return Classifier(list(classes), transform, probabilities)


def champion_report(
    champion: Mapping[str, str] | None,
    s3: Any,
    workdir: Path,
    split: Split,
    loader: Callable[[Path], Classifier],
) -> dict[str, Any] | None:
    """The champion's accuracy on the same photos, its answers compared by class name (a champion may
    know other classes); ``error`` with a null accuracy when it cannot take the photos."""
    if champion is None:
        return None
    report = {
        "model_package_arn": champion["model_package_arn"],
        "model_data_url": champion["model_data_url"],
    }
    archive = download(s3, champion["model_data_url"], workdir / "champion-model.tar.gz")
    try:
        model = loader(extract_model(archive, workdir, SPEC_FILE))
        predicted = np.argmax(predict(model, split.paths), axis=1)
    except EvaluationError as exc:
        print(f"champion {champion['model_package_arn']} not comparable: {exc}", flush=True)
        return {**report, "accuracy": {"value": None}, "error": str(exc)}
    names = [model.classes[i] for i in predicted]
    return {**report, "accuracy": {"value": accuracy_by_name(split.labels, split.classes, names)}}


# --- the confusion matrix picture --------------------------------------------------------------------

MAX_LABEL_CHARS = 24
WHITE = 255  # an empty cell: the PNG's background, not a pixel scaling
DARKEST = np.array([8, 48, 107], np.float64)  # the darkest blue of matplotlib's "Blues" shading


@dataclass(frozen=True)
class MatrixLayout:
    """Where the cells of the picture are: cell (row, column) spans ``cell`` pixels from ``origin``."""

    origin: tuple[int, int]
    cell: int

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        left, top = self.origin[0] + column * self.cell, self.origin[1] + row * self.cell
        return left, top, left + self.cell, top + self.cell


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 3] + "..."


def _shade(fraction: float) -> tuple[int, int, int]:
    """White for 0, the darkest blue for 1 (the share of the true class's photos in the cell)."""
    white = np.full(3, WHITE, dtype=np.float64)
    colour = white + (DARKEST - white) * min(max(fraction, 0.0), 1.0)
    return tuple(int(round(c)) for c in colour)


def _font() -> Any:
    """Pillow's own font at 14 px (FreeType, Pillow >= 10.1), else its small bitmap font: no font file."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except (TypeError, ImportError, OSError):  # an older Pillow, or one built without FreeType
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return int(right), int(bottom)


def _text(image: Any, at: tuple[int, int], text: str, font: Any, fill: Any, *, align: str = "left") -> None:
    """``text`` with its left edge (``align="right"``: right edge, ``"centre"``: centre) at ``at``'s x and
    its middle at ``at``'s y; positions computed here, as bitmap fonts take no anchor."""
    from PIL import ImageDraw

    width, height = _text_size(font, text)
    x = at[0] - {"left": 0, "right": width, "centre": width // 2}[align]
    ImageDraw.Draw(image).text((x, at[1] - height // 2), text, fill=fill, font=font)


def _vertical_text(image: Any, centre_x: int, bottom: int, text: str, font: Any) -> None:
    """``text`` read bottom to top, centred on ``centre_x``, ending at ``bottom``."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", tuple(side + 2 for side in _text_size(font, text)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    mask = mask.rotate(90, expand=True)
    image.paste((0, 0, 0), (centre_x - mask.width // 2, bottom - mask.height), mask)


def draw_confusion_matrix(counts: np.ndarray, names: Sequence[str], path: Path, title: str) -> MatrixLayout:
    """A PNG of the matrix: true classes down, predicted across, each cell its count, shaded by the
    share of its row (so a rare class's mistakes stand out as much as a common one's)."""
    from PIL import Image, ImageDraw

    counts = np.asarray(counts, np.int64)
    font = _font()
    labels = [_short(n) for n in names]
    label_width = max(_text_size(font, label)[0] for label in labels) + 12
    cell = max(40, max(_text_size(font, str(int(c)))[0] for c in counts.flat) + 12)
    margin, title_height, axis = 10, 30, 22
    origin = (margin + axis + label_width, margin + title_height + axis + label_width)
    widest_heading = max(_text_size(font, text)[0] for text in (title, "predicted class"))
    size = (
        max(origin[0] + cell * len(names), margin + widest_heading) + margin,
        origin[1] + cell * len(names) + margin,
    )
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    layout = MatrixLayout(origin, cell)

    _text(image, (margin, margin + 8), title, font, "black")
    _text(image, (origin[0], margin + title_height + 8), "predicted class", font, "black")
    _vertical_text(image, margin + 8, origin[1] + _text_size(font, "true class")[0], "true class", font)
    for column, label in enumerate(labels):
        _vertical_text(image, origin[0] + column * cell + cell // 2, origin[1] - 6, label, font)
    rows = counts.sum(axis=1)
    for row, label in enumerate(labels):
        _text(image, (origin[0] - 6, origin[1] + row * cell + cell // 2), label, font, "black", align="right")
        for column in range(len(names)):
            count = int(counts[row, column])
            fraction = count / rows[row] if rows[row] else 0.0
            box = layout.box(row, column)
            draw.rectangle(box, fill=_shade(fraction), outline=(200, 200, 200))
            centre = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
            ink = "white" if fraction > 0.5 else "black"
            _text(image, centre, str(count), font, ink, align="centre")
    image.save(path, format="PNG")
    return layout


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
    loader: Callable[[Path], Classifier] = load_mxnet_classifier,
    top_k: int = DEFAULT_TOP_K,
    model_s3_uri: str | None = None,
    edge_targets: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/evaluation.json`` and the confusion matrix PNG; return the evaluation.
    Clients are needed only with ``group``."""
    test = read_split(test_dir)
    train = read_split(train_dir)
    if train.classes != test.classes:
        raise EvaluationError(
            f"the train split's classes {train.classes} differ from the test split's {test.classes}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evaluate-classifier-") as tmp:
        workdir = Path(tmp)
        model = loader(extract_model(model_source, workdir, SPEC_FILE))
        if model.classes != test.classes:
            raise EvaluationError(
                f"the model knows the classes {model.classes}, the test split {test.classes}"
            )
        probabilities = predict(model, test.paths)
        metrics = multiclass_metrics(test.labels, probabilities, test.classes, top_k)
        champion = champion_report(
            find_champion(sagemaker, group, champion_target(edge_targets)), s3, workdir, test, loader
        )
    evaluation = {
        "recipe": RECIPE,
        "multiclass_classification_metrics": metrics,
        "baseline": majority_baseline(train.labels, test.labels, test.classes),
        "champion": champion,
        "already_registered": is_registered(sagemaker, group, model_s3_uri),
        "test_images": len(test.paths),
        "classes": test.classes,
    }
    rows = photo_predictions(test, test_dir, probabilities, photo_origins(test_dir))
    evaluation["predictions"] = {"file": PREDICTIONS_FILE, "wrong": sum(not row["correct"] for row in rows)}
    text = to_json(evaluation)
    accuracy = metrics["accuracy"]["value"]
    title = f"classifier: accuracy {accuracy:.1%} on {len(test.paths)} test photos"
    draw_confusion_matrix(
        np.array(metrics["confusion_matrix"]["counts"]), test.classes, out_dir / CONFUSION_MATRIX_PNG, title
    )
    lines = "".join(json.dumps(row, sort_keys=True, allow_nan=False) + "\n" for row in rows)
    atomic_write_bytes(out_dir / PREDICTIONS_FILE, lines.encode())
    atomic_write_bytes(out_dir / EVALUATION_FILE, text.encode())  # last: evaluation.json names the rest
    return evaluation


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_classifier.py",
        description="Evaluate the trained classifier on the test split against the majority class and the "
        "champion (the package the car installs); write evaluation.json and confusion_matrix.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    processing = Path("/opt/ml/processing")
    parser.add_argument(
        "--model", type=Path, default=processing / "model", help="model.tar.gz, or a folder with it"
    )
    parser.add_argument("--test", type=Path, default=processing / "test", help="test split folder")
    parser.add_argument(
        "--train",
        type=Path,
        default=processing / "train",
        help="train split folder (majority-class baseline)",
    )
    parser.add_argument(
        "--output", type=Path, default=processing / "evaluation", help="evaluation.json goes here"
    )
    parser.add_argument("--top-k", type=positive_int, default=DEFAULT_TOP_K, help="k of the top-k accuracy")
    add_registry_arguments(parser)
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("evaluate_classifier.py", lambda: _evaluate_and_print(args), debug=args.debug)


def _evaluate_and_print(args: argparse.Namespace) -> int:
    sagemaker, s3 = registry_clients(args)
    evaluation = evaluate(
        args.model, args.test, args.train, args.output, group=args.model_package_group, sagemaker=sagemaker,
        s3=s3, top_k=args.top_k, model_s3_uri=args.model_s3_uri, edge_targets=args.edge_targets,
    )  # fmt: skip
    metrics = evaluation["multiclass_classification_metrics"]
    top = metrics["top_k_accuracy"]
    line = (
        f"accuracy={metrics['accuracy']['value']:.6g} top_{top['k']}_accuracy={top['value']:.6g} "
        f"weighted_f1={metrics['weighted_f1']['value']:.6g} "
        f"baseline_accuracy={evaluation['baseline']['accuracy']['value']:.6g} "
        f"test_images={evaluation['test_images']}"
    )
    champion = evaluation["champion"]
    if champion and champion["accuracy"]["value"] is not None:
        line += f" champion_accuracy={champion['accuracy']['value']:.6g}"
    if evaluation["already_registered"]:
        line += " already_registered=true"
    print(line, flush=True)
    written = (EVALUATION_FILE, CONFUSION_MATRIX_PNG, PREDICTIONS_FILE)
    print(f"wrote {', '.join(str(args.output / name) for name in written)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
