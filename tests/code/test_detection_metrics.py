"""processing/evaluate_detection.py's metrics, pure numpy: COCO-style AP and mAP, the constant baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processing.evaluate import EvaluationError
from processing.evaluate_detection import (
    IOU_THRESHOLDS,
    average_precision,
    box_iou,
    detection_metrics,
    match_photo,
    mean_box_baseline,
    photo_predictions,
)
from processing.evaluate_detection import Split as DetectionSplit

NAMES = ["cone", "car", "sign"]


def truth(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 5)


def detected(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 6)


def as_detections(true: np.ndarray, score: float = 0.9) -> np.ndarray:
    return np.column_stack([true[:, 0], np.full(len(true), score), true[:, 1:]])


TRUTHS = [
    truth([0, 0.1, 0.1, 0.3, 0.3], [1, 0.5, 0.5, 0.9, 0.8]),
    truth([0, 0.6, 0.1, 0.8, 0.4]),
    truth([1, 0.0, 0.0, 0.5, 0.5], [1, 0.5, 0.5, 1.0, 1.0]),
]


def test_perfect_detections_score_one_at_every_threshold() -> None:
    metrics = detection_metrics([as_detections(t) for t in TRUTHS], TRUTHS, NAMES)
    assert metrics["map_50"]["value"] == pytest.approx(1.0)
    assert metrics["map_50_95"]["value"] == pytest.approx(1.0)
    assert metrics["per_class_ap_50"] == {"cone": pytest.approx(1.0), "car": pytest.approx(1.0), "sign": None}
    assert metrics["objects"] == {"cone": 2, "car": 3, "sign": 0}


def test_all_missed_scores_zero() -> None:
    nothing = [detected() for _ in TRUTHS]
    assert detection_metrics(nothing, TRUTHS, NAMES)["map_50"]["value"] == 0.0
    elsewhere = [detected([0, 0.9, 0.9, 0.9, 1.0, 1.0]) for _ in TRUTHS]  # no overlap with any cone
    assert detection_metrics(elsewhere, TRUTHS, NAMES)["per_class_ap_50"]["cone"] == 0.0


def test_the_wrong_class_is_a_miss() -> None:
    swapped = [np.column_stack([1 - t[:, 0], np.full(len(t), 0.9), t[:, 1:]]) for t in TRUTHS]
    assert detection_metrics(swapped, TRUTHS, NAMES)["map_50"]["value"] == 0.0


def test_a_duplicate_detection_is_a_false_positive_after_the_match() -> None:
    true = [truth([0, 0.1, 0.1, 0.5, 0.5])]
    # the duplicate scores lower: recall 1 is reached at precision 1, AP stays 1
    lower = [detected([0, 0.9, 0.1, 0.1, 0.5, 0.5], [0, 0.8, 0.1, 0.1, 0.5, 0.5])]
    assert detection_metrics(lower, true, NAMES)["map_50"]["value"] == pytest.approx(1.0)
    assert match_photo(lower[0][:, 2:], true[0][:, 1:], 0.5).tolist() == [True, False]
    # a wrong box scoring first halves the precision at which the one object is found
    wrong_first = [detected([0, 0.95, 0.7, 0.7, 0.9, 0.9], [0, 0.8, 0.1, 0.1, 0.5, 0.5])]
    assert detection_metrics(wrong_first, true, NAMES)["map_50"]["value"] == pytest.approx(0.5)


def test_a_class_absent_from_the_test_set_is_left_out_of_the_mean() -> None:
    perfect = [as_detections(t) for t in TRUTHS]
    with_sign = [np.vstack([p, detected([2, 0.99, 0.0, 0.0, 0.2, 0.2])]) for p in perfect]
    metrics = detection_metrics(with_sign, TRUTHS, NAMES)
    assert metrics["per_class_ap_50"]["sign"] is None and metrics["per_class_ap_50_95"]["sign"] is None
    assert metrics["map_50"]["value"] == pytest.approx(1.0)


def test_no_true_box_at_all_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="no true boxes"):
        detection_metrics([detected()], [truth()], NAMES)


def test_a_loose_box_counts_at_050_but_not_at_the_strict_thresholds() -> None:
    true = [truth([0, 0.0, 0.0, 0.4, 0.4])]
    loose = [detected([0, 0.9, 0.0, 0.0, 0.4, 0.6])]  # IoU 0.16 / 0.24 = 2/3
    metrics = detection_metrics(loose, true, NAMES)
    assert metrics["map_50"]["value"] == pytest.approx(1.0)
    assert metrics["map_50_95"]["value"] == pytest.approx(sum(t <= 2 / 3 for t in IOU_THRESHOLDS) / 10)


def test_iou_edge_cases() -> None:
    square = np.array([[0.0, 0.0, 0.5, 0.5]])
    assert box_iou(square, square).tolist() == [[1.0]]
    assert box_iou(square, [[0.5, 0.0, 1.0, 0.5]]).tolist() == [[0.0]]  # touching edges
    assert box_iou(square, [[0.0, 0.0, 0.5, 0.25]]).tolist() == [[0.5]]  # inside, half the area
    assert box_iou([[0.3, 0.3, 0.3, 0.3]], [[0.3, 0.3, 0.3, 0.3]]).tolist() == [[0.0]]  # no area
    assert box_iou(square, np.zeros((0, 4))).shape == (1, 0)
    # IoU exactly at the threshold matches (COCO's >=)
    assert match_photo(square, np.array([[0.0, 0.0, 0.5, 0.25]]), 0.5).tolist() == [True]


def test_a_detection_takes_the_best_overlapping_free_box() -> None:
    boxes = np.array([[0.0, 0.0, 0.4, 0.4], [0.05, 0.0, 0.45, 0.4]])
    # the first detection sits on the second true box; the second detection then takes the first
    hits = match_photo(np.array([[0.05, 0.0, 0.45, 0.4], [0.02, 0.0, 0.42, 0.4]]), boxes, 0.5)
    assert hits.tolist() == [True, True]


def test_average_precision_interpolates_at_101_recall_points() -> None:
    # hits at ranks 1 and 3 of 3 detections, 2 true boxes: precision 1 up to recall 0.5, 2/3 up to 1
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    # half the objects never found: the 50 recall points above 0.5 count 0
    assert average_precision(np.array([0.9]), np.array([True]), 2) == pytest.approx(51 / 101)
    assert average_precision(np.array([]), np.array([], bool), 3) == 0.0
    assert average_precision(np.array([0.5]), np.array([False]), 0) is None


def test_only_the_best_100_detections_of_a_photo_count() -> None:
    true = [truth([0, 0.0, 0.0, 0.1, 0.1])]
    noise = [[0, 0.9, 0.5, 0.5, 0.6, 0.6]] * 100
    found_last = [detected(*noise, [0, 0.1, 0.0, 0.0, 0.1, 0.1])]
    assert detection_metrics(found_last, true, NAMES)["map_50"]["value"] == 0.0


def test_the_mean_box_baseline_predicts_each_class_where_it_usually_is() -> None:
    train = [truth([0, 0.0, 0.0, 0.2, 0.2]), truth([0, 0.2, 0.2, 0.4, 0.4], [1, 0.5, 0.5, 1.0, 1.0])]
    predictions, described = mean_box_baseline(train, photos=3, classes=3)
    assert len(predictions) == 3 and predictions[0].shape == (2, 6)
    assert described[0] == {"box": [0.1, 0.1, 0.3, 0.3], "score": 1.0}
    assert described[1]["score"] == 0.5 and 2 not in described
    at_the_mean = [truth([1, 0.5, 0.5, 1.0, 1.0])] * 3
    assert detection_metrics(predictions, at_the_mean, NAMES)["per_class_ap_50"]["car"] == pytest.approx(1.0)


def test_the_per_photo_rows_count_true_found_and_matched_boxes(tmp_path: Path) -> None:
    paths = [tmp_path / "images" / f"{n:06d}.jpg" for n in range(3)]
    split = DetectionSplit(paths, TRUTHS, NAMES)
    found = [
        as_detections(TRUTHS[0]),  # both boxes
        detected([0, 0.9, 0.6, 0.1, 0.8, 0.4], [2, 0.7, 0.0, 0.0, 0.2, 0.2]),  # its box and one extra
        detected([1, 0.9, 0.0, 0.0, 0.5, 0.5], [1, 0.3, 0.5, 0.5, 1.0, 1.0]),  # one found, one under 0.5
    ]
    origins = {"images/000001.jpg": "labelled/d/images/abc.jpg"}
    rows = photo_predictions(split, tmp_path, found, origins)
    assert [row["image"] for row in rows] == ["images/000000.jpg", "images/000001.jpg", "images/000002.jpg"]
    assert [row["origin"] for row in rows] == [None, "labelled/d/images/abc.jpg", None]
    counts = [(row["true_boxes"], row["predicted_boxes"], row["matched"], row["correct"]) for row in rows]
    assert counts == [(2, 2, 2, True), (1, 2, 1, False), (2, 1, 1, False)]
