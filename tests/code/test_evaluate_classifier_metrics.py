"""processing/evaluate_classifier.py's metrics (pure numpy): exact figures on hand-made predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing.evaluate_classifier import (
    accuracy_by_name,
    confusion_matrix,
    draw_confusion_matrix,
    majority_baseline,
    multiclass_metrics,
    to_json,
    top_k_accuracy,
)

NAMES = ["circle", "square", "triangle"]


def one_hot(predicted: list[int], classes: int = 3) -> np.ndarray:
    """Probabilities that put 0.8 on the predicted class and share the rest."""
    probabilities = np.full((len(predicted), classes), 0.2 / (classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = 0.8
    return probabilities


def strict_loads(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_perfect_predictions() -> None:
    true = np.array([0, 1, 2, 2, 1, 0])
    metrics = multiclass_metrics(true, one_hot(list(true)), NAMES)
    assert metrics["accuracy"] == {"value": 1.0, "standard_deviation": 0.0}
    assert metrics["top_k_accuracy"] == {"k": 3, "value": 1.0}
    assert metrics["weighted_f1"] == {"value": 1.0}
    assert metrics["per_class"]["square"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert metrics["confusion_matrix"] == {"labels": NAMES, "counts": [[2, 0, 0], [0, 2, 0], [0, 0, 2]]}


def test_all_wrong_predictions() -> None:
    true = np.array([0, 1, 2, 0])
    metrics = multiclass_metrics(true, one_hot([1, 2, 0, 1]), NAMES, k=1)
    assert metrics["accuracy"] == {"value": 0.0, "standard_deviation": 0.0}
    assert metrics["top_k_accuracy"] == {"k": 1, "value": 0.0}
    assert metrics["weighted_f1"] == {"value": 0.0}
    for name in NAMES:
        assert metrics["per_class"][name]["precision"] == 0.0 and metrics["per_class"][name]["f1"] == 0.0
    assert metrics["confusion_matrix"]["counts"] == [[0, 2, 0], [0, 0, 1], [1, 0, 0]]


def test_imbalanced_split_with_a_class_never_predicted() -> None:
    true = np.array([0] * 6 + [1] * 3 + [2])
    predicted = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]  # triangle (2) is never predicted
    metrics = multiclass_metrics(true, one_hot(predicted), NAMES)
    assert metrics["confusion_matrix"]["counts"] == [[5, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert metrics["accuracy"]["value"] == pytest.approx(0.7)
    assert metrics["accuracy"]["standard_deviation"] == pytest.approx(math.sqrt(0.7 * 0.3 / 10))
    circle, square, triangle = (metrics["per_class"][n] for n in NAMES)
    assert circle == pytest.approx({"precision": 5 / 7, "recall": 5 / 6, "f1": 10 / 13, "support": 6})
    assert square == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert triangle == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # 0/0 is 0, not NaN
    assert metrics["weighted_f1"]["value"] == pytest.approx((6 * 10 / 13 + 3 * 2 / 3) / 10)
    strict_loads(to_json(metrics))


def test_a_class_without_test_photos_has_recall_zero_and_the_json_no_nan() -> None:
    true = np.array([0, 0, 1])
    metrics = multiclass_metrics(true, one_hot([0, 2, 1]), NAMES)  # triangle: predicted once, no photo
    assert metrics["per_class"]["triangle"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    document = strict_loads(to_json({"multiclass_classification_metrics": metrics}))
    assert document["multiclass_classification_metrics"]["weighted_f1"]["value"] == pytest.approx(
        (2 * (2 / 3) + 1 * 1.0) / 3
    )
    with pytest.raises(ValueError):
        to_json({"value": float("nan")})


def test_top_k_counts_a_class_among_the_k_most_probable() -> None:
    probabilities = np.array(
        [
            [0.5, 0.3, 0.2, 0.0],  # true 1: second
            [0.1, 0.2, 0.3, 0.4],  # true 0: last
            [0.25, 0.25, 0.25, 0.25],  # true 2: a tie ranks the lower ids first, so third
        ]
    )
    true = np.array([1, 0, 2])
    assert top_k_accuracy(probabilities, true, 1) == {"k": 1, "value": 0.0}
    assert top_k_accuracy(probabilities, true, 2)["value"] == pytest.approx(1 / 3)
    assert top_k_accuracy(probabilities, true, 3)["value"] == pytest.approx(2 / 3)
    assert top_k_accuracy(probabilities, true, 9) == {"k": 4, "value": 1.0}  # k capped at the classes


def test_the_baseline_answers_the_most_frequent_training_class() -> None:
    train = np.array([2, 2, 1, 0, 2])
    test = np.array([2, 0, 0, 2])
    assert majority_baseline(train, test, NAMES) == {"majority_class": "triangle", "accuracy": {"value": 0.5}}
    tied = majority_baseline(np.array([1, 2, 2, 1]), test, NAMES)  # a tie: the lowest class id
    assert tied == {"majority_class": "square", "accuracy": {"value": 0.0}}


def test_accuracy_by_name_compares_a_model_with_another_class_list() -> None:
    true = np.array([0, 1, 2, 1])
    assert accuracy_by_name(true, NAMES, ["circle", "square", "star", "circle"]) == 0.5


def test_confusion_matrix_refuses_ids_out_of_range() -> None:
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_the_picture_shades_each_cell_by_its_share_of_the_row(tmp_path: Path) -> None:
    counts = np.array([[9, 1, 0], [0, 4, 4], [0, 0, 7]])
    path = tmp_path / "confusion_matrix.png"
    names = [*NAMES[:2], "a class name far too long to print whole"]
    layout = draw_confusion_matrix(counts, names, path, "classifier: accuracy 83%")
    with Image.open(path) as image:
        picture = np.asarray(image.convert("RGB"), np.float64)

    def background(row: int, column: int) -> np.ndarray:  # the cell's corner: away from the count
        left, top, _, _ = layout.box(row, column)
        return picture[top + 3, left + 3]

    def ink(row: int, column: int) -> float:  # how much the count's text differs from the cell
        left, top, right, bottom = layout.box(row, column)
        cell = picture[top + 2 : bottom - 1, left + 2 : right - 1]
        return float(np.abs(cell - background(row, column)).sum())

    assert background(0, 0).sum() < background(1, 1).sum() < background(0, 1).sum()  # 90% > 50% > 10%
    assert background(0, 2).tolist() == [255, 255, 255]  # zero: white
    assert background(2, 2).tolist() == [8, 48, 107]  # the whole row: the darkest blue
    assert all(ink(r, c) > 0 for r in range(3) for c in range(3))  # every cell shows its count
    left_of_the_cells = picture[layout.origin[1] :, : layout.origin[0] - 2]
    assert (left_of_the_cells.sum(axis=2) < 300).any()  # the class names are written beside the rows
    right, bottom = layout.box(2, 2)[2:]
    assert picture.shape[1] >= right and picture.shape[0] >= bottom


def test_a_title_wider_than_the_matrix_is_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "confusion_matrix.png"
    draw_confusion_matrix(
        np.eye(2, dtype=int), ["a", "b"], path, "classifier: accuracy 100.0% on 2 test photos"
    )
    with Image.open(path) as image:
        picture = np.asarray(image.convert("L"))
    title_band = picture[:40]
    assert (title_band < 128).any() and (title_band[:, -8:] == 255).all()  # ink, and a blank right margin
