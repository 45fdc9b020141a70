"""benchmarks/detection.py's arithmetic: per-round ratios to MXNet and the CPU's limit, goal verdicts."""

from __future__ import annotations

import pytest

from benchmarks import detection


def test_ratios_are_medians_of_per_round_ratios_against_mxnet_and_the_limit():
    # Two rounds: MXNet 100 then 50 fps, the artifact 400 then 100 -> per-round 4x and 2x -> median 3x.
    rounds = {
        "mxnet": [{"fps": 100.0, "p99_ms": 12.0}, {"fps": 50.0, "p99_ms": 30.0}],
        "heads-int8.onnx": [{"fps": 400.0, "p99_ms": 3.0}, {"fps": 100.0, "p99_ms": 11.0}],
    }
    # Peaks in G multiply-adds/s, the best kind per precision counts: float32 2 and 1, int8 8 and 4.
    peaks = [
        {"float32": {"a": 2.0, "b": 1.0}, "int8": {"a": 8.0}},
        {"float32": {"a": 1.0}, "int8": {"a": 4.0, "b": 0.5}},
    ]
    macs = 10_000_000  # -> limits float32 200 and 100 fps, int8 800 and 400 fps
    rows, limits = detection.summarise(rounds, peaks, macs, {"mxnet": "float32", "heads-int8.onnx": "int8"})
    assert limits == {"float32": pytest.approx(150.0), "int8": pytest.approx(600.0)}
    assert rows["mxnet"]["x_mxnet"] == pytest.approx(1.0)
    assert rows["mxnet"]["of_limit"] == pytest.approx(0.5)  # 100/200 and 50/100
    assert rows["heads-int8.onnx"]["x_mxnet"] == pytest.approx(3.0)
    assert rows["heads-int8.onnx"]["of_limit"] == pytest.approx(0.375)  # 400/800 and 100/400
    assert rows["heads-int8.onnx"]["fps"] == pytest.approx(250.0)
    assert rows["heads-int8.onnx"]["p99_ms"] == pytest.approx(7.0)
    assert rows["heads-int8.onnx"]["precision"] == "int8"


def _report(map_50: float, x_int8: float, x_float: float, points: float) -> dict:
    return {
        "accuracy": {"map_50": map_50},
        "rows": {
            "mxnet": {"x_mxnet": 1.0},
            "d-int8.onnx": {"x_mxnet": x_int8},
            "d-float32.onnx": {"x_mxnet": x_float},
            "d-int8.onnx car": {"x_mxnet": x_int8 + 0.5},  # decoded at the reporting score: a verdict too
            "d-int8.onnx heads": {"x_mxnet": 99.0},  # the heads alone are no verdict: the car decodes
        },
        "int8": {"points": points},
    }


def test_verdicts_say_which_goals_are_met():
    lines = detection.verdicts(_report(0.86, 3.5, 2.9, 0.4))
    assert lines == [
        "goal mAP@0.5 >= 0.85: met (0.8600)",
        "goal d-int8.onnx >= 3x MXNet: met (3.50x)",
        "goal d-float32.onnx >= 3x MXNet: NOT met (2.90x)",
        "goal d-int8.onnx car >= 3x MXNet: met (4.00x)",
        "goal int8 within 1 mAP point: met (+0.40)",
    ]


def test_verdicts_fail_a_low_map_and_a_large_int8_loss():
    lines = detection.verdicts(_report(0.84, 3.0, 3.0, 1.5))
    assert lines[0] == "goal mAP@0.5 >= 0.85: NOT met (0.8400)"
    assert lines[-1] == "goal int8 within 1 mAP point: NOT met (+1.50)"
    assert [line.split(": ")[1].split(" (")[0] for line in lines[1:4]] == ["met", "met", "met"]


def test_defaults_are_the_recipes():
    from pipelines.detection.pipeline import gluon_hyperparameters

    args = detection.build_parser().parse_args([])
    assert (args.epochs, args.image_size) == (24, 128)
    recipe = gluon_hyperparameters(args.epochs, args.image_size)
    assert recipe["lr_scheduler_step"] == detection.LR_SCHEDULER_STEP
    assert recipe["overlap_threshold"] == detection.OVERLAP_THRESHOLD


def test_each_runner_gets_the_photos_as_it_takes_them(tmp_path):
    """MXNet the float32 NCHW input, each artifact what its manifest ``input`` says: the int8 model fed
    pixels their uint8 blocks, as the car prepares them (benchmarks/classifier_edge.py's fed_photos)."""
    import numpy as np
    from PIL import Image

    from benchmarks.classifier_edge import fed_photos
    from edge.photos import PhotoTransform, pixel_input_spec

    transform = PhotoTransform(8, 8, 8, (127.0,) * 3, (128.0,) * 3, 1.0, crop="stretch")
    Image.fromarray(np.full((12, 10, 3), 200, np.uint8)).save(tmp_path / "a.png")
    artifacts = {"float.onnx": {"input": {"name": "data", "dtype": "float32"}},
                 "pixels.onnx": {"input": pixel_input_spec(transform, 2)}}  # fmt: skip
    fed = fed_photos([tmp_path / "a.png"] * 2, transform, artifacts)
    assert sorted(fed) == ["float.onnx", "mxnet", "pixels.onnx"] and all(len(v) == 2 for v in fed.values())
    assert fed["mxnet"][0].shape == (1, 3, 8, 8) and fed["mxnet"][0].dtype == np.float32
    np.testing.assert_array_equal(fed["float.onnx"][0], fed["mxnet"][0])
    assert fed["pixels.onnx"][0].shape == (1, 4, 4, 12) and fed["pixels.onnx"][0].dtype == np.uint8
    assert np.all(fed["pixels.onnx"][0] == 200)
