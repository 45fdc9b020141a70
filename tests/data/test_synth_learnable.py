"""The synthetic steering label is visible in the picture: a linear model on tiny frames beats a constant.

A fast stand-in for the real check (the donkeycar linear CNN, 5 epochs on 5,000 frames: test angle MAE
0.047 vs 0.240 for the constant, ratio 0.19; see the issue-3 report): ridge regression on 40x30 grey
frames, with contiguous blocks held out as the test set.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines.synth import write_tub
from processing.records import RecordValidator
from processing.tubs import discover_sources, read_v2_tub


def ridge_mae_ratio(features: np.ndarray, target: np.ndarray, test: np.ndarray) -> float:
    train_x, test_x = features[~test], features[test]
    mean_x, mean_y = train_x.mean(axis=0), target[~test].mean()
    train_x, test_x = train_x - mean_x, test_x - mean_x
    weights = np.linalg.solve(
        train_x.T @ train_x + np.eye(train_x.shape[1]), train_x.T @ (target[~test] - mean_y)
    )
    model_mae = np.abs(test_x @ weights + mean_y - target[test]).mean()
    constant_mae = np.abs(mean_y - target[test]).mean()
    return float(model_mae / constant_mae)


def test_angle_is_learnable_from_the_frames(tmp_path):
    write_tub(tmp_path / "tub", frames=800, sessions=4, seed=3)
    (source,) = discover_sources(tmp_path / "tub")
    _, records = read_v2_tub(source, RecordValidator("tub_v2_record"))
    frames = np.stack(
        [
            np.asarray(Image.open(r.image_path).convert("L").resize((40, 30)), dtype=np.float64).ravel() / 255
            for r in records
        ]
    )
    angle = np.array([r.angle for r in records])
    test = (np.arange(len(angle)) // 50) % 5 == 0  # blocks of 50 frames, never neighbours of training ones
    assert ridge_mae_ratio(frames, angle, test) < 0.4
    shuffled = np.random.default_rng(0).permutation(angle)  # control: labels unrelated to the pictures
    assert ridge_mae_ratio(frames, shuffled, test) > 0.8
