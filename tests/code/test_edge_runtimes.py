"""edge.runtimes: choosing an artifact, (de)quantising, outputs found by name, no TensorFlow on the car."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import runtimes
from edge.frames import to_model_input

EDGE_DIR = Path(runtimes.__file__).resolve().parent
SHAPE = [4, 4, 3]


def heads_model(path: Path, output_order: tuple[str, str]) -> None:
    """A two-head ONNX pilot: angle = mean(x) * 2 - 1, throttle = mean(x) / 2, listed in ``output_order``.

    Both heads have width 1, as in donkeycar's linear pilot, so only their names tell them apart.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["img_in", "axes"], ["mean"], keepdims=0),
        helper.make_node("Reshape", ["mean", "column"], ["m"]),
        helper.make_node("Mul", ["m", "two"], ["m2"]),
        helper.make_node("Sub", ["m2", "one"], ["angle"]),
        helper.make_node("Mul", ["m", "half"], ["throttle"]),
    ]
    constants = {
        "axes": np.array([1, 2, 3], np.int64),
        "column": np.array([-1, 1], np.int64),
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "pilot",
        [helper.make_tensor_value_info("img_in", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1]) for name in output_order],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))


def package(tmp_path: Path, artifacts: list[dict], default: str | None = None) -> Path:
    manifest = {"model_type": "linear", "throttle_range": 0.5, "artifacts": artifacts, "default": default}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def onnx_artifact(file: str = "pilot.onnx") -> dict:
    return {
        "file": file,
        "runtime": "onnxruntime",
        "precision": "float32",
        "input": {"name": "img_in", "shape": SHAPE, "dtype": "float32", "quantization": None},
        "outputs": [{"name": "angle", "tensor": "angle"}, {"name": "throttle", "tensor": "throttle"}],
    }


@pytest.mark.parametrize("order", [("angle", "throttle"), ("throttle", "angle")])
def test_outputs_are_found_by_name_whatever_the_graph_order(tmp_path, order):
    heads_model(tmp_path / "pilot.onnx", order)
    pilot = runtimes.load_pilot(package(tmp_path, [onnx_artifact()]))
    frames = np.stack([np.full(SHAPE, 255, np.uint8), np.zeros(SHAPE, np.uint8)])
    angle, throttle = pilot.run_batch(frames)
    assert angle.tolist() == pytest.approx([1.0, -1.0])
    assert throttle.tolist() == pytest.approx([0.5, 0.0])
    assert pilot.run(frames[0]) == pytest.approx((1.0, 0.5))
    assert isinstance(pilot, runtimes.Pilot) and pilot.runtime == "onnxruntime"


def test_a_manifest_naming_outputs_the_model_lacks_is_refused(tmp_path):
    heads_model(tmp_path / "pilot.onnx", ("angle", "throttle"))
    artifact = onnx_artifact()
    artifact["outputs"][1]["tensor"] = "StatefulPartitionedCall:1"
    with pytest.raises(runtimes.PilotError, match="do not match the model's outputs"):
        runtimes.load_pilot(package(tmp_path, [artifact]))


def test_wrong_frames_are_refused_with_the_expected_shape(tmp_path):
    heads_model(tmp_path / "pilot.onnx", ("angle", "throttle"))
    pilot = runtimes.load_pilot(package(tmp_path, [onnx_artifact()]))
    with pytest.raises(runtimes.PilotError, match=r"expected frames \[N, 4, 4, 3\]"):
        pilot.run_batch(np.zeros((1, 5, 4, 3), np.uint8))
    with pytest.raises(runtimes.PilotError, match="must be uint8"):
        pilot.run(np.zeros(SHAPE, np.float32))


def test_camera_frame_is_the_int8_pilot_s_input_without_a_copy():
    frames = np.arange(48, dtype=np.uint8).reshape(1, *SHAPE)
    spec = {"dtype": "uint8", "quantization": {"scale": 1 / 255, "zero_point": 0}}
    assert runtimes.quantize_frames(frames, spec) is frames


def test_frame_minus_128_fast_path_equals_the_general_quantisation():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    spec = {"dtype": "int8", "quantization": {"scale": 1 / 255, "zero_point": -128}}
    fast = runtimes.quantize_frames(frames, spec)
    assert fast.dtype == np.int8 and fast.reshape(-1).tolist() == list(range(-128, 128))
    general = np.clip(np.rint(frames.astype(np.float64) / 255 / (1 / 255)) - 128, -128, 127).astype(np.int8)
    assert np.array_equal(fast, general)


def test_quantised_inputs_follow_scale_and_zero_point():
    frames = np.array([[0, 128, 255]], np.uint8)
    int8 = runtimes.quantize_frames(
        frames, {"dtype": "int8", "quantization": {"scale": 1 / 255, "zero_point": -128}}
    )
    assert int8.dtype == np.int8 and int8.tolist() == [[-128, 0, 127]]
    coarse = runtimes.quantize_frames(
        frames, {"dtype": "uint8", "quantization": {"scale": 3 / 255, "zero_point": 10}}
    )
    assert coarse.tolist() == [[10, 53, 95]]
    floats = runtimes.quantize_frames(frames, {"dtype": "float32"})
    assert floats.dtype == np.float32 and floats[0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    with pytest.raises(runtimes.PilotError, match="needs quantization parameters"):
        runtimes.quantize_frames(frames, {"dtype": "int8", "quantization": None})


def test_integer_outputs_are_dequantised():
    spec = {"name": "angle", "quantization": {"scale": 0.01, "zero_point": 3}}
    assert runtimes.dequantize(np.array([3, 103], np.int8), spec).tolist() == pytest.approx([0.0, 1.0])
    assert runtimes.dequantize(np.array([0.25], np.float32), {}).tolist() == [0.25]
    with pytest.raises(runtimes.PilotError, match="no quantization parameters"):
        runtimes.dequantize(np.array([1], np.uint8), {"name": "angle"})


ARTIFACTS = [
    {"file": "a.dlr", "runtime": "dlr", "precision": "float32"},
    {"file": "b_int8.tflite", "runtime": "litert", "precision": "int8"},
    {"file": "c.tflite", "runtime": "litert", "precision": "float32"},
    {"file": "d.onnx", "runtime": "onnxruntime", "precision": "float32"},
]


def test_the_manifest_default_is_driven_when_its_runtime_is_here():
    manifest = {"artifacts": ARTIFACTS, "default": "c.tflite"}
    assert runtimes.choose_artifact(manifest, available=lambda r: True)["file"] == "c.tflite"


def test_without_its_runtime_the_next_listed_artifact_is_driven():
    manifest = {"artifacts": ARTIFACTS, "default": "a.dlr"}
    only_onnx = runtimes.choose_artifact(manifest, available=lambda r: r == "onnxruntime")
    assert only_onnx["file"] == "d.onnx"
    no_dlr = runtimes.choose_artifact(manifest, available=lambda r: r != "dlr")
    assert no_dlr["file"] == "b_int8.tflite"


def test_a_preference_picks_by_file_runtime_or_precision():
    manifest = {"artifacts": ARTIFACTS, "default": "b_int8.tflite"}
    here = {"litert", "onnxruntime"}.__contains__
    assert runtimes.choose_artifact(manifest, "onnxruntime", available=here)["file"] == "d.onnx"
    assert runtimes.choose_artifact(manifest, "litert-float32", available=here)["file"] == "c.tflite"
    assert runtimes.choose_artifact(manifest, "c.tflite", available=here)["file"] == "c.tflite"
    with pytest.raises(runtimes.PilotError, match="no artifact matching 'dlr'"):
        runtimes.choose_artifact(manifest, "dlr", available=here)


def test_among_the_preferred_artifacts_the_one_measured_fastest_on_the_car_drives():
    wide = {"file": "b_int8_wide.tflite", "runtime": "litert", "precision": "int8"}
    manifest = {"artifacts": [*ARTIFACTS[:2], wide, *ARTIFACTS[2:]], "default": "b_int8.tflite"}
    here = {"litert", "onnxruntime"}.__contains__
    pick = runtimes.choose_artifact
    assert pick(manifest, "litert-int8", available=here, chosen="b_int8_wide.tflite") is wide
    assert pick(manifest, "litert-int8", available=here)["file"] == "b_int8.tflite", "nothing measured"
    assert pick(manifest, "litert-float32", available=here, chosen="b_int8_wide.tflite")["file"] == "c.tflite"


def test_the_choice_measured_on_the_car_beats_the_default_but_not_a_preference(tmp_path):
    manifest = {"artifacts": ARTIFACTS, "default": "b_int8.tflite"}
    here = {"litert", "onnxruntime"}.__contains__
    assert runtimes.read_choice(tmp_path) is None, "nothing measured yet"
    (tmp_path / runtimes.CHOICE_FILE).write_text(json.dumps({"file": "d.onnx", "reason": "fastest"}))
    chosen = runtimes.read_choice(tmp_path)
    assert chosen == "d.onnx"
    assert runtimes.choose_artifact(manifest, available=here, chosen=chosen)["file"] == "d.onnx"
    assert (
        runtimes.choose_artifact(manifest, "litert", available=here, chosen=chosen)["file"] == "b_int8.tflite"
    )
    gone = runtimes.choose_artifact(manifest, available={"litert"}.__contains__, chosen=chosen)
    assert gone["file"] == "b_int8.tflite", (
        "a choice whose runtime is no longer here falls back to the default"
    )
    (tmp_path / runtimes.CHOICE_FILE).write_text("not json")
    assert runtimes.read_choice(tmp_path) is None


def test_no_usable_runtime_says_what_to_install():
    with pytest.raises(runtimes.PilotError, match=r"none of the package's runtimes \['dlr'\] is installed"):
        runtimes.choose_artifact({"artifacts": ARTIFACTS[:1]}, available=lambda r: False)


def test_dlr_is_only_used_when_installed(tmp_path, monkeypatch):
    real = runtimes.runtime_available
    monkeypatch.setattr(runtimes, "runtime_available", lambda r: r != "dlr" and real(r))  # a car without DLR
    (tmp_path / "neo").mkdir()
    artifact = {**ARTIFACTS[0], "file": "neo"}
    with pytest.raises(runtimes.PilotError, match="'dlr' is not installed"):
        runtimes.load_artifact(tmp_path, artifact, {"model_type": "linear"})


def test_missing_or_empty_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(runtimes.PilotError, match="not a compiled pilot package"):
        runtimes.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"artifacts": []}')
    with pytest.raises(runtimes.PilotError, match="lists no artifacts"):
        runtimes.read_manifest(tmp_path)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_tensorflow_or_keras_import_anywhere_in_edge():
    offenders = {
        str(path.relative_to(EDGE_DIR)): sorted(
            _imports(path) & {"tensorflow", "keras", "tf_keras", "sagemaker"}
        )
        for path in EDGE_DIR.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_pilot_runs_without_tensorflow_being_loaded(tmp_path):
    heads_model(tmp_path / "pilot.onnx", ("angle", "throttle"))
    package(tmp_path, [onnx_artifact()])
    code = (
        "import sys, numpy as np; from edge import runtimes; "
        f"p = runtimes.load_pilot({str(tmp_path)!r}); p.run(np.zeros((4, 4, 3), np.uint8)); "
        "import ai_edge_litert.interpreter; "
        "bad = sorted(m for m in ('tensorflow', 'keras', 'sagemaker') if m in sys.modules); print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def install_stand_in_dlr(monkeypatch, model_class: type) -> list[str]:
    """A stand-in ``dlr`` package (the PyPI wheel has no native library); returns the calls it saw."""
    import importlib.machinery
    import types

    calls: list[str] = []

    class PhoneHome:
        @staticmethod
        def disable_feature() -> None:
            calls.append("phone home disabled")

    modules = {name: types.ModuleType(name) for name in ("dlr", "dlr.counter", "dlr.counter.phone_home")}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    modules["dlr"].DLRModel = lambda path, dev_type, dev_id: model_class(path, dev_type, dev_id, calls)
    modules["dlr.counter.phone_home"].PhoneHome = PhoneHome
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    return calls


def test_dlr_pilot_disables_phone_home_before_loading_and_maps_outputs_by_position(tmp_path, monkeypatch):
    """What the pilot asks of DLR: phone home off before loading, outputs by the manifest's indices."""

    class DLRModel:
        def __init__(self, path: str, dev_type: str, dev_id: int, calls: list[str]) -> None:
            calls.append(f"load {Path(path).name} on {dev_type}")

        def run(self, inputs: dict) -> list[np.ndarray]:
            mean = inputs["img_in"].mean(axis=(1, 2, 3)).reshape(-1, 1)
            return [mean / 2, mean * 2 - 1]  # throttle first: the manifest's indices must sort it out

    calls = install_stand_in_dlr(monkeypatch, DLRModel)
    (tmp_path / "neo").mkdir()
    artifact = {
        "file": "neo",
        "runtime": "dlr",
        "precision": "float32",
        "input": {"name": "img_in", "shape": SHAPE, "dtype": "float32"},
        "outputs": [{"name": "angle", "index": 1}, {"name": "throttle", "index": 0}],
    }
    pilot = runtimes.load_artifact(tmp_path, artifact, {"model_type": "linear"}, threads=1)
    assert calls == ["phone home disabled", "load neo on cpu"]
    assert os.environ["TVM_NUM_THREADS"] == "1"
    assert pilot.run(np.full(SHAPE, 255, np.uint8)) == pytest.approx((1.0, 0.5))


def test_dlr_pilot_feeds_an_nchw_neo_model_the_frame_transposed(tmp_path, monkeypatch):
    """Neo compiles the ONNX pilot for [1, 3, H, W] (processing/neo.py): the manifest says NCHW."""
    seen: list[np.ndarray] = []

    class DLRModel:
        def __init__(self, path: str, dev_type: str, dev_id: int, calls: list[str]) -> None:
            pass

        def run(self, inputs: dict) -> list[np.ndarray]:
            seen.append(inputs["img_in"])
            return [np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)]

    install_stand_in_dlr(monkeypatch, DLRModel)
    (tmp_path / "neo").mkdir()
    artifact = {
        "file": "neo",
        "runtime": "dlr",
        "precision": "float32",
        "input": {"name": "img_in", "shape": SHAPE, "dtype": "float32", "layout": "NCHW"},
        "outputs": [{"name": "angle", "index": 0}, {"name": "throttle", "index": 1}],
    }
    frame = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    runtimes.load_artifact(tmp_path, artifact, {"model_type": "linear"}).run(frame)
    (fed,) = seen
    assert fed.shape == (1, 3, *SHAPE[:2]) and fed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(fed[0], to_model_input(frame).transpose(2, 0, 1))
