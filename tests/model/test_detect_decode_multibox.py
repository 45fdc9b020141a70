"""edge.detect.decode equals MXNet's contrib.MultiBoxDetection within 1e-5 (its kept rows, in its order).

The cases are built here, MultiBoxDetection answers them in the MXNet environment
(tests/model/multibox_reference.py, one process for all), and the decoder answers them in this
interpreter: random heads, and adversarial ones (score ties across anchors and across classes,
stacks of overlapping boxes, many classes, force_suppress both ways, scores exactly at the threshold,
IoU exactly at the NMS threshold, top-k cuts, boxes outside the photo, boxes of no area).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.detect import decode

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # the contract's: float32 decoding in the operator's order agrees to about 1e-7


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (shifted / shifted.sum(axis=0, keepdims=True)).astype(np.float32)


def random_anchors(rng: np.random.Generator, count: int) -> np.ndarray:
    centres = rng.uniform(0.0, 1.0, (count, 2))
    sizes = rng.uniform(0.05, 0.6, (count, 2))
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)


def case(cls_prob: np.ndarray, loc_preds: np.ndarray, anchors: np.ndarray, **params: Any) -> dict:
    return {
        "cls_prob": np.asarray(cls_prob, np.float32),
        "loc_preds": np.asarray(loc_preds, np.float32).reshape(-1),
        "anchors": np.asarray(anchors, np.float32),
        "params": params,
    }


def random_case(seed: int, classes: int, anchors: int, **params: Any) -> dict:
    rng = np.random.default_rng(seed)
    return case(
        softmax(rng.normal(0.0, 2.0, (classes + 1, anchors))),
        rng.normal(0.0, 0.5, anchors * 4),
        random_anchors(rng, anchors),
        **params,
    )


def stacked_case(force_suppress: bool) -> dict:
    """60 anchors on 4 spots, small offsets: every box overlaps its spot's others; 3 classes."""
    rng = np.random.default_rng(7)
    spots = np.array([[0.1, 0.1, 0.4, 0.4], [0.2, 0.2, 0.5, 0.5], [0.6, 0.1, 0.9, 0.3], [0.5, 0.5, 1.0, 1.0]])
    anchors = spots[rng.integers(0, 4, 60)]
    return case(
        softmax(rng.normal(0.0, 1.5, (4, 60))), rng.normal(0.0, 0.3, 240), anchors,
        threshold=0.05, nms_threshold=0.3, force_suppress=force_suppress, nms_topk=-1,
    )  # fmt: skip


def tie_case() -> dict:
    """Equal scores across anchors (the stable sort keeps anchor order) and across classes (the lower
    class wins), on identical boxes so NMS decides by that order."""
    probabilities = np.zeros((4, 12), np.float32)
    probabilities[0] = 0.2
    probabilities[1:, :6] = [[0.4], [0.4], [0.0]]  # classes 0 and 1 tie at 0.4
    probabilities[1:, 6:] = [[0.0], [0.4], [0.4]]  # classes 1 and 2 tie at 0.4
    anchors = np.tile([[0.2, 0.2, 0.6, 0.6]], (12, 1))
    anchors[::3] = [0.25, 0.2, 0.65, 0.6]
    return case(probabilities, np.zeros(48), anchors, threshold=0.01, nms_threshold=0.5)


def many_ties_case() -> dict:
    """300 anchors whose scores take 4 values, on 6 overlapping spots: the sort's order among equals
    (the operator's std::stable_sort keeps anchor order) decides which box survives NMS."""
    rng = np.random.default_rng(21)
    scores = rng.choice(np.array([0.3, 0.5, 0.7, 0.9], np.float32), 300)
    spots = random_anchors(rng, 6)
    return case(
        np.stack([1 - scores, scores]), rng.normal(0.0, 0.2, 1200), spots[rng.integers(0, 6, 300)],
        nms_threshold=0.5,
    )  # fmt: skip


def threshold_case() -> dict:
    """Scores exactly at float32(threshold), one ulp below and above it."""
    limit = np.float32(0.01)
    scores = np.array([limit, np.nextafter(limit, 0), np.nextafter(limit, 1), 0.5, 0.0], np.float32)
    probabilities = np.stack([1 - scores, scores]).astype(np.float32)
    anchors = np.array([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.4, 0.4, 0.5, 0.5],
                        [0.6, 0.6, 0.7, 0.7], [0.8, 0.8, 0.9, 0.9]])  # fmt: skip
    return case(probabilities, np.zeros(20), anchors, threshold=0.01)


def iou_edge_case(nms_threshold: float) -> dict:
    """Pairs whose IoU is 1/3 and 1/2 (as float32 computes them) against thresholds at those values, a
    box of no area twice (union 0), a box touching another at an edge (IoU 0)."""
    anchors = np.array([
        [0.0, 0.0, 0.5, 1.0], [0.25, 0.0, 0.75, 1.0],      # IoU 1/3
        [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25],       # IoU 1/2
        [0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3],        # no area: union 0
        [0.6, 0.0, 0.8, 0.2], [0.8, 0.0, 1.0, 0.2],        # touching: IoU 0
    ])  # fmt: skip
    scores = np.linspace(0.9, 0.5, 8).astype(np.float32)
    return case(np.stack([1 - scores, scores]), np.zeros(32), anchors, nms_threshold=nms_threshold)


def outside_case() -> dict:
    """Large offsets push boxes outside the photo: the operator clips them to [0, 1]."""
    rng = np.random.default_rng(3)
    return case(softmax(rng.normal(0.0, 2.0, (3, 40))), rng.normal(0.0, 6.0, 160), random_anchors(rng, 40))


CASES = {
    **{f"random-{seed}": random_case(seed, 5, 300) for seed in range(4)},
    "random-defaults-of-contract": random_case(9, 3, 500, nms_threshold=0.45, nms_topk=400),
    "random-force-suppress": random_case(11, 4, 300, force_suppress=True, nms_threshold=0.45),
    "many-classes": random_case(12, 60, 400, threshold=0.02, nms_threshold=0.5),
    "many-classes-force": random_case(13, 60, 400, threshold=0.02, force_suppress=True),
    "topk-cut": random_case(14, 3, 300, nms_topk=25),
    "topk-one": random_case(15, 3, 50, nms_topk=1),
    "threshold-zero": random_case(16, 2, 100, threshold=0.0),
    "threshold-above-all": random_case(17, 2, 100, threshold=0.999),
    "nms-one": random_case(18, 2, 200, nms_threshold=1.0),
    "stacked": stacked_case(False),
    "stacked-force": stacked_case(True),
    "ties": tie_case(),
    "ties-many": many_ties_case(),
    "ties-force": {**tie_case(), "params": {"force_suppress": True}},
    "threshold-edge": threshold_case(),
    "iou-third": iou_edge_case(float(np.float32(1 / 3))),
    "iou-half": iou_edge_case(0.5),
    "outside": outside_case(),
}


@pytest.fixture(scope="module")
def reference(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("multibox")
    arrays: dict[str, Any] = {}
    for name, given in CASES.items():
        arrays.update({f"{name}/{key}": given[key] for key in ("cls_prob", "loc_preds", "anchors")})
        arrays[f"{name}/params"] = np.array(json.dumps(given["params"]))
    np.savez(folder / "cases.npz", **arrays)
    done = subprocess.run(
        [mxnet_python, str(REPO / "tests" / "model" / "multibox_reference.py"),
         str(folder / "cases.npz"), str(folder / "answers.npz")],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(folder / "answers.npz") as answers:
        return {name: answers[name] for name in answers.files}


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """MultiBoxDetection's defaults where a case names none (decode's own defaults are the contract's)."""
    defaults = {"threshold": 0.01, "nms_threshold": 0.5, "nms_topk": -1, "force_suppress": False}
    return {**defaults, **params}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_equals_multibox_detection(name: str, reference: dict[str, np.ndarray]) -> None:
    given = CASES[name]
    expected = reference[name]
    expected = expected[expected[:, 0] >= 0]  # the operator marks dropped and suppressed rows -1
    got = decode(given["cls_prob"], given["loc_preds"], given["anchors"], **decode_params(given["params"]))
    assert got.shape == expected.shape, (name, got[:, :2], expected[:, :2])
    np.testing.assert_array_equal(got[:, 0], expected[:, 0])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_the_adversarial_cases_exercise_what_they_name(reference: dict[str, np.ndarray]) -> None:
    """Guards the cases themselves: each must reach the behaviour it is named for."""
    kept = {name: (rows[rows[:, 0] >= 0]) for name, rows in reference.items()}
    assert len(kept["stacked-force"]) < len(kept["stacked"])  # cross-class suppression happened
    assert len(kept["threshold-edge"]) == 3  # at, above, 0.5 kept; one ulp below and 0 dropped
    assert len(kept["threshold-above-all"]) == 0
    assert len(kept["topk-cut"]) <= 25 and len(kept["topk-one"]) == 1
    assert set(kept["ties"][:, 0]) == {0.0, 1.0}  # the lower class wins each tie
    assert len(kept["iou-half"]) != len(kept["iou-third"])
    assert len(kept["many-classes"]) > 20
    assert kept["outside"][:, 2:].min() == 0.0 and kept["outside"][:, 2:].max() == 1.0
