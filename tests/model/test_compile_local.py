"""Local compilation of a donkeycar pilot: artifacts, manifests, SHA-256s, runtimes that agree with Keras."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")

from compile_fixtures import SPEC, pilot, write_model_dir, write_splits  # noqa: E402

from edge import runtimes  # noqa: E402
from edge.frames import INPUT_SCALING, preprocessing_digest, to_model_input  # noqa: E402
from processing import compile as compile_step  # noqa: E402
from processing import local_compile  # noqa: E402

TARGETS = ("jetson_nano", "rasp4b")
FILES = (
    "pilot_int8.tflite",
    "pilot_int8_wide.tflite",
    "pilot_float32.tflite",
    "pilot_int8.onnx",
    "pilot_float32.onnx",
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile once (the slow part, a few seconds) and let every test look at the result."""
    root = tmp_path_factory.mktemp("compile")
    splits = write_splits(root)
    model = pilot(splits["train"]["images"])
    model_dir = write_model_dir(root, model)
    out = root / "out"
    argv = ["--model", str(model_dir), "--train", str(root / "splits" / "train"), "--test"]
    argv += [
        str(root / "splits" / "test"),
        "--output",
        str(out),
        "--targets",
        ",".join(TARGETS),
        "--mode",
        "local",
    ]
    assert compile_step.main(argv) == 0
    heads = model(to_model_input(splits["test"]["images"]), training=False)
    reference = tuple(np.asarray(h).reshape(-1) for h in heads)
    return {"out": out, "splits": splits, "reference": reference, "model_dir": model_dir, "model": model}


def extract(package: Path, dest: Path) -> Path:
    with tarfile.open(package) as tar:
        assert all(m.isfile() for m in tar.getmembers())
        tar.extractall(dest, filter="data")
    return dest


def test_compiled_json_lists_every_target_with_the_package_sha256(compiled):
    out = compiled["out"]
    listing = json.loads((out / "compiled.json").read_text())
    assert listing["mode"] == "local"
    assert set(listing["targets"]) == set(TARGETS)
    for target, entry in listing["targets"].items():
        package = out / entry["uri"]
        assert entry["uri"] == f"{target}/model.tar.gz"
        assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
        assert entry["size_bytes"] == package.stat().st_size
        assert entry["runtimes"] == ["litert", "onnxruntime"]
        assert entry["default"] == "pilot_int8.tflite"
        assert entry["runtime"] == "litert"  # the default artifact's: the Register step reads it


def test_manifest_describes_each_artifact_inside_the_package(compiled, tmp_path):
    package_dir = extract(compiled["out"] / "rasp4b" / "model.tar.gz", tmp_path)
    manifest = json.loads((package_dir / "manifest.json").read_text())
    assert manifest == json.loads((compiled["out"] / "rasp4b" / "manifest.json").read_text())
    assert manifest["target"] == "rasp4b" and manifest["model_type"] == "linear"
    assert manifest["frame_spec"] == SPEC.to_dict()
    # The one place the car reads the frame contract: the top level, with the digest model.json records.
    assert manifest["preprocessing"] == {"version": 1, "digest": preprocessing_digest(SPEC)}
    assert [a["file"] for a in manifest["artifacts"]] == list(FILES)
    for artifact in manifest["artifacts"]:
        path = package_dir / artifact["file"]
        assert artifact["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert artifact["size_bytes"] == path.stat().st_size
        assert artifact["runtime"] == ("litert" if path.suffix == ".tflite" else "onnxruntime")
        assert [o["name"] for o in artifact["outputs"]] == ["angle", "throttle"]
        assert artifact["input"]["shape"] == list(SPEC.input_shape) and "frame_spec" not in artifact["input"]
        assert artifact["accuracy_delta"]["frames"] == len(compiled["splits"]["test"]["images"])
    int8 = manifest["artifacts"][0]
    # The int8 pilot eats the camera frame shifted by 128: int8 with scale 1/255 and zero point -128.
    assert int8["input"]["dtype"] == "int8"
    assert int8["input"]["quantization"]["zero_point"] == -128
    assert int8["input"]["quantization"]["scale"] == pytest.approx(1 / 255)
    assert int8["input"]["quantization"] == pytest.approx(INPUT_SCALING.quantization("int8"))
    # The ONNX int8 pilot takes the frame itself (its input QuantizeLinear removed).
    wide = manifest["artifacts"][1]  # the same input contract: the car feeds both alike
    assert wide["input"] == int8["input"] and wide["precision"] == "int8" and wide["within_tolerance"]
    onnx_int8 = manifest["artifacts"][3]
    assert onnx_int8["input"]["dtype"] == "uint8" and onnx_int8["input"]["quantization"]["zero_point"] == 0
    # Section 5's top-level fields are the default artifact's.
    assert manifest["default"] == manifest["file"] == "pilot_int8.tflite"
    assert manifest["sha256"] == int8["sha256"] and manifest["runtime"] == "litert"


def test_the_onnx_artifacts_derive_from_the_model_neo_gets(compiled, tmp_path):
    import onnx

    from processing import onnx_export

    neo_model = onnx_export.export_neo_onnx(compiled["model"], "img_in")
    listing = json.loads((compiled["out"] / "compiled.json").read_text())
    assert listing["neo_onnx"]["sha256"] == hashlib.sha256(onnx_export.serialize(neo_model)).hexdigest()
    assert (listing["neo_onnx"]["opset"], listing["neo_onnx"]["ir_version"]) == (12, 7)
    package_dir = extract(compiled["out"] / "rasp4b" / "model.tar.gz", tmp_path)
    car = onnx.load(str(package_dir / "pilot_float32.onnx"))
    # The Neo graph and its weights, behind one Transpose that takes the car's NHWC frames.
    assert [n.op_type for n in car.graph.node] == ["Transpose"] + [n.op_type for n in neo_model.graph.node]
    assert [i.SerializeToString() for i in car.graph.initializer] == [
        i.SerializeToString() for i in neo_model.graph.initializer
    ]
    int8 = onnx.load(str(package_dir / "pilot_int8.onnx"))
    gemms = [n.name for n in int8.graph.node if n.op_type in ("Conv", "Gemm")]
    assert gemms == [n.name for n in neo_model.graph.node if n.op_type in ("Conv", "Gemm")]


@pytest.mark.parametrize("prefer", FILES)
def test_every_runtime_gives_the_keras_answers(compiled, tmp_path, prefer):
    package_dir = extract(compiled["out"] / "jetson_nano" / "model.tar.gz", tmp_path)
    pilot_ = runtimes.load_pilot(package_dir, prefer=prefer)
    images = compiled["splits"]["test"]["images"]
    angle, throttle = pilot_.run_batch(images)
    ref_angle, ref_throttle = (np.clip(r, -1, 1) for r in compiled["reference"])
    assert ref_angle.std() > 0.2  # the outputs spread: agreement below is not agreement on a constant
    tolerance = 0.03 if "int8" in prefer else 1e-4
    assert np.abs(angle - ref_angle).mean() <= tolerance
    assert np.abs(throttle - ref_throttle).mean() <= tolerance
    single = pilot_.run(images[0])
    assert single == pytest.approx((angle[0], throttle[0]), abs=1e-6)
    recorded = next(
        a for a in json.loads((package_dir / "manifest.json").read_text())["artifacts"] if a["file"] == prefer
    )
    assert recorded["accuracy_delta"]["angle_mae"] == pytest.approx(
        np.abs(angle - ref_angle).mean(), abs=1e-5
    )


def test_calibration_sample_is_deterministic_and_from_the_train_split():
    first = local_compile.representative_indices(1000, 200, seed=0)
    assert np.array_equal(first, local_compile.representative_indices(1000, 200, seed=0))
    assert len(set(first.tolist())) == 200 and first.max() < 1000 and np.all(np.diff(first) > 0)
    assert len(local_compile.representative_indices(50, 200, seed=0)) == 50
    with pytest.raises(local_compile.CompileError, match="training split is empty"):
        local_compile.representative_indices(0, 200, seed=0)


def test_a_narrow_training_set_still_gives_the_camera_s_full_input_range(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3), name="img_in")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, {"angle": keras.layers.Dense(1)(x), "throttle": keras.layers.Dense(1)(x)})
    dim = np.random.default_rng(0).integers(40, 200, (8, 8, 8, 3), dtype=np.uint8)  # no 0, no 255
    path = tmp_path / "int8.tflite"
    path.write_bytes(local_compile.convert_litert(model, local_compile.with_full_input_range(dim)))
    input_spec, _ = local_compile.litert_io(path, {"input": {"shape": [8, 8, 3]}})
    assert input_spec["dtype"] == "int8"
    assert input_spec["quantization"]["zero_point"] == -128
    assert input_spec["quantization"]["scale"] == pytest.approx(1 / 255)
    assert dim.min() > 0  # the caller's frames are left alone


def test_artifacts_beyond_the_angle_tolerance_are_not_driven_with():
    artifacts = [
        {"file": "pilot_int8.tflite", "accuracy_delta": {"angle_mae": 0.05}},
        {"file": "pilot_float32.tflite", "accuracy_delta": {"angle_mae": 0.0}},
    ]
    assert local_compile.choose_default(artifacts, 0.03) == "pilot_float32.tflite"
    assert [a["within_tolerance"] for a in artifacts] == [False, True]
    assert local_compile.choose_default(artifacts, 0.06) == "pilot_int8.tflite"
    with pytest.raises(local_compile.CompileError, match="within angle MAE 1e-06"):
        local_compile.choose_default(artifacts[:1], 1e-6)


def test_column_groups_compute_the_same_first_convolution_in_fp32(compiled):
    """The int8 pilot's expression (first convolution over column groups) is the Keras model's function."""
    model = compiled["model"]
    rewritten = local_compile.group_columns_for_first_conv(model)
    conv = rewritten.get_layer("conv2d_1")
    assert conv.kernel.shape == (5, 2, 12, 48) and tuple(conv.strides) == (2, 1)
    assert rewritten.get_layer("conv2d_1_columns").output.shape[1:] == (64, 16, 12)
    assert rewritten.get_layer("conv2d_1_ungrouped").output.shape[1:] == (30, 30, 24)
    held_out = to_model_input(compiled["splits"]["test"]["images"])  # frames the calibration never saw
    for want, got in zip(model(held_out, training=False), rewritten(held_out, training=False), strict=True):
        assert np.abs(np.asarray(want) - np.asarray(got)).max() <= 1e-5
    kernel = np.arange(5 * 5 * 3 * 2, dtype=np.float32).reshape(5, 5, 3, 2)
    grouped = local_compile.column_group_kernel(kernel, stride=2, group=4).reshape(5, 2, 4, 3, 2, 2)
    # second output column of a position (j=1), second tap (b=1), column u=1: original column 4 + 1 - 2
    assert np.array_equal(grouped[:, 1, 1, :, 1, :], kernel[:, 3])
    assert not grouped[:, 1, 3, :, 0, :].any(), "column 7 of the window is past the first output's kernel"


def test_a_model_not_read_by_one_strided_convolution_is_left_as_it_is():
    inputs = keras.Input((8, 8, 3), name="img_in")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, strides=1)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    assert local_compile.group_columns_for_first_conv(model) is model


def test_the_int8_litert_pilot_runs_its_first_convolution_over_column_groups(compiled, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    package_dir = extract(compiled["out"] / "rasp4b" / "model.tar.gz", tmp_path)
    interpreter = Interpreter(model_path=str(package_dir / "pilot_int8.tflite"))
    shapes = [list(t["shape"]) for t in interpreter.get_tensor_details()]
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, *SPEC.input_shape], "the car feeds frames"
    assert [48, 5, 2, 12] in shapes and [24, 5, 5, 3] not in shapes  # OHWI filter over 4-column groups


def test_the_int8_litert_pilot_s_one_frame_path_answers_as_its_batch_path(compiled, tmp_path, monkeypatch):
    package_dir = extract(compiled["out"] / "rasp4b" / "model.tar.gz", tmp_path)
    images = compiled["splits"]["test"]["images"][:8]
    angle, throttle = runtimes.load_pilot(package_dir, prefer="pilot_int8.tflite").run_batch(images)
    one_frame = runtimes.load_pilot(package_dir, prefer="pilot_int8.tflite")

    def general_path(batch):
        raise AssertionError("run() of one int8 frame took the batch path")

    monkeypatch.setattr(one_frame, "_infer", general_path)
    singles = [one_frame.run(image) for image in images]
    assert singles == [(float(a), float(t)) for a, t in zip(angle, throttle, strict=True)]


def test_the_wide_int8_pilot_runs_its_second_convolution_over_column_pairs(compiled, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    package_dir = extract(compiled["out"] / "rasp4b" / "model.tar.gz", tmp_path)
    interpreter = Interpreter(model_path=str(package_dir / "pilot_int8_wide.tflite"))
    shapes = [list(t["shape"]) for t in interpreter.get_tensor_details()]
    assert [48, 5, 2, 12] in shapes, "the first convolution over 4-column groups, as pilot_int8.tflite"
    assert [32, 5, 3, 48] in shapes and [32, 5, 5, 24] not in shapes  # OHWI: 15 taps over column pairs
    assert [1, 30, 30, 24] not in shapes, "the pairs are never read back as single columns"


def test_widening_keeps_the_pilot_s_function_and_leaves_other_networks_alone(compiled):
    model = compiled["model"]
    grouped = local_compile.group_columns_for_first_conv(model)
    widened = local_compile.widen_second_conv(grouped)
    assert widened.get_layer("conv2d_2").kernel.shape == (5, 3, 48, 32)
    assert tuple(widened.get_layer("conv2d_2").strides) == (2, 1)
    held_out = to_model_input(compiled["splits"]["test"]["images"])
    for want, got in zip(model(held_out, training=False), widened(held_out, training=False), strict=True):
        assert np.abs(np.asarray(want) - np.asarray(got)).max() <= 1e-5
    assert local_compile.widen_second_conv(model) is model, "no column groups: nothing to widen"
    inputs = keras.Input((16, 16, 3), name="img_in")
    x = keras.layers.Conv2D(4, 5, strides=2)(inputs)
    x = keras.layers.Conv2D(2, 3, strides=1)(x)  # stride 1: pairs would not line up
    narrow = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    narrow_grouped = local_compile.group_columns_for_first_conv(narrow)
    assert narrow_grouped is not narrow and local_compile.widen_second_conv(narrow_grouped) is narrow_grouped


@pytest.mark.parametrize("model_type", ["linear", "categorical"])
def test_both_donkeycar_pilots_keep_their_function_over_column_groups(model_type):
    from training.model import build_model

    keras.utils.set_random_seed(1)
    shape = (120, 160, 3)  # donkeycar's camera frame: the categorical pilot needs more than SPEC's 64x64
    model = build_model(model_type, shape)
    rewritten = local_compile.group_columns_for_first_conv(model)
    assert rewritten is not model and rewritten.get_layer("conv2d_1").kernel.shape == (5, 2, 12, 48)
    widened = local_compile.widen_second_conv(rewritten)
    assert widened.get_layer("conv2d_2").kernel.shape == (5, 3, 48, 32)
    frames = to_model_input(np.random.default_rng(1).integers(0, 256, (4, *shape), dtype=np.uint8))
    for expression in (rewritten, widened):
        for want, got in zip(model(frames, training=False), expression(frames, training=False), strict=True):
            assert np.abs(np.asarray(want) - np.asarray(got)).max() <= 1e-5
