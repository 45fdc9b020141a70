"""benchmarks/edge.py's arithmetic: multiply-adds counted from the graph, timing rounds, goal verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_benchmark

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("edge")


def test_multiply_adds_are_counted_from_conv_and_matmul_shapes(bench, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    # NCHW 1x3x10x10 -> Conv 4 filters 3x3 valid -> 1x4x8x8 -> flatten 256 -> MatMul 256x5.
    weights = {
        "w": np.zeros((4, 3, 3, 3), np.float32),
        "flat": np.array([-1, 256], np.int64),
        "dense": np.zeros((256, 5), np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Reshape", ["c", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "dense"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    assert bench.count_macs(path) == 4 * 8 * 8 * 27 + 256 * 5


def test_measure_reports_the_median_round(bench):
    """With an injected clock: rounds whose calls take 1, 3 and 2 ms report the 2 ms round (500 fps)."""
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    now = [0]
    # ns per call: 30 warm-up calls, then 10 ms rounds of 10 calls at 1 ms, 4 at 3 ms, 5 at 2 ms
    costs = iter([0] * 30 + [1_000_000] * 10 + [3_000_000] * 4 + [2_000_000] * 5)

    def clock() -> int:
        return now[0]

    def call(frame) -> None:
        now[0] += next(costs)

    result = bench.measure(call, frames, seconds=0.01, repeats=3, clock=clock)
    assert result["fps"] == pytest.approx(500.0) and result["median_ms"] == pytest.approx(2.0)
    assert result["rounds_fps"] == pytest.approx([1000.0, 1000.0 / 3, 500.0])
    assert result["calls"] == 5 and result["p99_ms"] == pytest.approx(2.0)


def test_verdicts_compare_with_the_goals(bench):
    report = {
        "artifacts": [
            {"file": "pilot_int8.tflite", "runtime": "litert", "precision": "int8", "fps": 5000.0,
             "of_limit": 0.72, "x_donkeycar": 10.5, "angle_error": 0.02},
            {"file": "pilot_float32.tflite", "runtime": "litert", "precision": "float32", "fps": 1500.0,
             "of_limit": 0.65, "x_donkeycar": 3.1, "angle_error": 0.0},
        ]
    }  # fmt: skip
    lines = bench.verdicts(report)
    assert lines[0].startswith("PASS fastest (pilot_int8.tflite) >= 10x donkeycar: 10.5x")
    assert lines[1].startswith(
        "PASS LiteRT int8 (pilot_int8.tflite) >= 70% of the int8 limit with angle error <= 0.03: 72%"
    )
    assert lines[2].startswith("MISS best fp32 (pilot_float32.tflite)")
    report["artifacts"][0]["of_limit"] = 0.69
    assert bench.verdicts(report)[1].startswith("MISS LiteRT int8 (pilot_int8.tflite) >= 70%")


def test_the_int8_pilot_is_the_fastest_litert_int8_artifact_as_the_car_picks(bench):
    row = {"precision": "int8", "of_limit": 0.5, "x_donkeycar": None, "angle_error": 0.01}
    report = {
        "artifacts": [
            {**row, "file": "pilot_int8.tflite", "runtime": "litert", "fps": 4000.0},
            {**row, "file": "pilot_int8_wide.tflite", "runtime": "litert", "fps": 4400.0, "of_limit": 0.55},
            {**row, "file": "pilot_int8.onnx", "runtime": "onnxruntime", "fps": 9000.0},  # not LiteRT
        ]
    }
    assert bench.int8_pilot(report)["file"] == "pilot_int8_wide.tflite"
    assert (
        "(pilot_int8_wide.tflite) >= 70% of the int8 limit with angle error <= 0.03: 55%"
        in (bench.verdicts(report)[0])
    )
    report["artifacts"][1]["fps"] = 3000.0
    assert bench.int8_pilot(report)["file"] == "pilot_int8.tflite"


def test_the_int8_summary_states_its_share_of_the_limit_and_its_ratio_to_donkeycar(bench):
    int8 = {"file": "pilot_int8.tflite", "runtime": "litert", "precision": "int8", "fps": 6600.0,
            "of_limit": 0.71, "of_limit_rounds": [0.69, 0.71, 0.73], "x_donkeycar": 33.0,
            "angle_error": 0.0198}  # fmt: skip
    report = {"artifacts": [int8], "limit_fps": {"int8": 9300.0}, "repeats": 3, "donkeycar": {"fps": 200.0}}
    assert bench.int8_summary(report) == (
        "int8 pilot pilot_int8.tflite: 71% of the int8 limit (6,600 of 9,300 fps; median of 3 rounds: "
        "69% 71% 73%), 33.0x donkeycar's pilot (200 fps), angle error 0.0198"
    )
    report["donkeycar"], int8["x_donkeycar"] = None, None
    assert "donkeycar's pilot not measured" in bench.int8_summary(report)


def test_the_peak_includes_xnnpack_s_dense_layers_where_litert_is_installed(bench, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    monkeypatch.setattr(bench, "PEAK_SIZES", (64,))
    monkeypatch.setattr(bench, "PEAK_REPEATS", 2)
    bench._litert_dense_models.cache_clear()
    try:
        peaks = bench.measure_peaks()
    finally:
        bench._litert_dense_models.cache_clear()
    assert set(peaks["int8"]) == {"onnxruntime MatMulInteger u8s8", "litert (XNNPACK) int8 dense"}
    assert set(peaks["float32"]) == {"numpy matmul", "onnxruntime MatMul", "litert (XNNPACK) float32 dense"}
    assert all(value > 0 for kind in peaks.values() for value in kind.values())


def test_a_missing_donkeycar_environment_is_reported_not_fatal(bench, monkeypatch):
    monkeypatch.delenv("ROBOCAR_DONKEYCAR_PYTHON", raising=False)
    assert bench.donkeycar_python("/opt/dk/bin/python") == (Path("/opt/dk/bin/python"), "--donkeycar-python")
    monkeypatch.setattr(bench, "REPO", Path("/nonexistent"))
    python, why = bench.donkeycar_python(None)
    assert python is None and "donkeycar_env.py does not exist" in why


def test_donkeycar_pilot_runs_in_its_own_interpreter_and_reports_json(bench, tmp_path, monkeypatch):
    """The worker protocol, with a stand-in donkeycar package on the child's path (the real one lives
    in the virtualenv benchmarks/donkeycar_env.py builds)."""
    import sys

    fake = tmp_path / "site" / "donkeycar"
    (fake / "parts").mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "5.3.0"\n')
    (fake / "parts" / "__init__.py").write_text("")
    (fake / "parts" / "interpreter.py").write_text("class TfLite:\n    pass\n")
    (fake / "parts" / "keras.py").write_text(
        "class KerasLinear:\n"
        "    def __init__(self, interpreter, input_shape):\n"
        "        self.shape = input_shape\n"
        "    def load(self, path):\n"
        "        assert path.endswith('.tflite')\n"
        "    def run(self, img):\n"
        "        assert img.shape == self.shape\n"
        "        return float(img.mean()) / 255, 0.25\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    frames = np.full((2, 4, 4, 3), 255, np.uint8)
    result = bench.run_donkeycar(
        Path(sys.executable), tmp_path / "pilot.tflite", frames, seconds=0.05, repeats=1
    )
    assert result["donkeycar"] == "5.3.0"
    assert result["fps"] > 0 and result["angles"] == [1.0, 1.0]
