"""What Neo gets: one ONNX model within ONNX 1.7 that computes what the Keras pilot computes (docs/neo.md).

``compile.py --dry-run`` writes the archive and each target's CreateCompilationJob request without
calling AWS; the ONNX model is checked against the documented version limit, run in onnxruntime on
real donkeycar frames and compared with Keras.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from compile_fixtures import SPEC, pilot, write_model_dir, write_splits  # noqa: E402

from edge.frames import FrameSpec, decode_image, prepare_frame, to_model_input  # noqa: E402
from processing import compile as compile_step  # noqa: E402
from processing import onnx_export  # noqa: E402
from training.model import build_model  # noqa: E402

TUB_IMAGES = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs" / "tub_v2" / "images"
TARGETS = ("jetson_nano", "rasp4b")
# Neo's edge frameworks page: ONNX "1.7 or earlier". onnx's own release table gives 1.7.0's IR and opset.
ONNX_1_7 = next(row for row in onnx.helper.VERSION_TABLE if row[0] == "1.7.0")
ONNX_1_7_IR_VERSION, ONNX_1_7_OPSET = ONNX_1_7[1], ONNX_1_7[2]


def real_frames(spec: FrameSpec) -> np.ndarray:
    """The sample donkeycar tub's camera frames, prepared as the car prepares them."""
    paths = sorted(TUB_IMAGES.glob("*.jpg"), key=lambda p: int(p.name.split("_")[0]))
    return np.stack([prepare_frame(decode_image(p.read_bytes()), spec) for p in paths])


def run_neo_model(model_bytes: bytes, frames: np.ndarray) -> list[np.ndarray]:
    """The Neo model on NHWC uint8 frames, one at a time (it is compiled for batch 1), outputs stacked."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    nchw = to_model_input(frames).transpose(0, 3, 1, 2)
    per_frame = [session.run(["angle", "throttle"], {graph_input.name: x[None]}) for x in nchw]
    return [np.concatenate([outputs[i] for outputs in per_frame]) for i in range(2)]


def keras_heads(model, frames: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(h) for h in model(to_model_input(frames), training=False)]


def read_archive(path: Path) -> tuple[list[tarfile.TarInfo], bytes]:
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        return members, tar.extractfile(members[0]).read()


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Two dry runs of the same trained model, with every botocore API call made to fail."""
    from botocore.client import BaseClient

    root = tmp_path_factory.mktemp("neo-input")
    splits = write_splits(root)
    model = pilot(splits["train"]["images"])
    model_dir = write_model_dir(root, model)

    def no_aws(self, operation, params):
        raise AssertionError(f"the dry run called {operation}")

    outs = [root / "first", root / "second"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", no_aws)
        for out in outs:
            argv = ["--model", str(model_dir), "--train", str(root / "splits" / "train")]
            argv += ["--test", str(root / "splits" / "test"), "--output", str(out)]
            assert compile_step.main([*argv, "--targets", ",".join(TARGETS), "--dry-run"]) == 0
    return {"outs": outs, "model": model}


def test_the_dry_run_writes_the_archive_and_one_request_per_target_and_nothing_else(dry_runs):
    out = dry_runs["outs"][0]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "jetson_nano/create_compilation_job.json",
        "neo-input.tar.gz",
        "rasp4b/create_compilation_job.json",
    ]  # no compiled.json: nothing was compiled


def test_the_archive_holds_exactly_one_onnx_file_written_reproducibly(dry_runs):
    first, second = (out / "neo-input.tar.gz" for out in dry_runs["outs"])
    members, _ = read_archive(first)
    assert [(m.name, m.isfile()) for m in members] == [("model.onnx", True)]
    assert first.read_bytes() == second.read_bytes()  # same weights, same bytes


def test_the_neo_model_is_within_onnx_1_7(dry_runs):
    _, model_bytes = read_archive(dry_runs["outs"][0] / "neo-input.tar.gz")
    model = onnx.load_from_string(model_bytes)
    assert model.ir_version <= ONNX_1_7_IR_VERSION == 7
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert max(o.version for o in model.opset_import) <= ONNX_1_7_OPSET == 12
    onnx.checker.check_model(model, full_check=True)


def test_the_neo_model_computes_what_keras_computes_on_real_frames(dry_runs):
    _, model_bytes = read_archive(dry_runs["outs"][0] / "neo-input.tar.gz")
    frames = real_frames(SPEC)
    assert len(frames) >= 40
    expected = keras_heads(dry_runs["model"], frames)
    assert expected[0].std() > 0.05, "the heads spread: agreement is not agreement on a constant"
    for got, want in zip(run_neo_model(model_bytes, frames), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_each_request_declares_the_model_s_own_input_and_the_target_s_options(dry_runs):
    out = dry_runs["outs"][0]
    _, model_bytes = read_archive(out / "neo-input.tar.gz")
    (graph_input,) = onnx.load_from_string(model_bytes).graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == [1, 3, SPEC.height, SPEC.width]  # NCHW, batch 1
    for target in TARGETS:
        request = json.loads((out / target / "create_compilation_job.json").read_text())
        inputs = request["InputConfig"]
        assert inputs["Framework"] == "ONNX" and "FrameworkVersion" not in inputs
        assert json.loads(inputs["DataInputConfig"]) == {graph_input.name: dims}
        assert inputs["S3Uri"].endswith("/neo-input.tar.gz")
        assert request["OutputConfig"]["TargetDevice"] == target
        options = request["OutputConfig"].get("CompilerOptions")
        if target == "jetson_nano":
            assert set(json.loads(options)) == {"gpu-code", "trt-ver", "cuda-ver"}
        else:
            assert options is None


def test_a_categorical_pilot_s_softmax_heads_match_keras():
    keras.utils.set_random_seed(3)
    spec = FrameSpec()  # donkeycar's categorical needs the full 120x160 frame (its 4th conv has stride 2)
    model = build_model("categorical", spec.input_shape)
    proto = onnx_export.export_neo_onnx(model, "img_in")
    onnx_export.check_neo_onnx_limits(proto)
    frames = real_frames(spec)[:12]
    got = run_neo_model(onnx_export.serialize(proto), frames)
    for heads, want, bins in zip(got, keras_heads(model, frames), (15, 20), strict=True):
        assert heads.shape == (len(frames), bins)
        np.testing.assert_allclose(heads, want, rtol=0, atol=1e-4)
        np.testing.assert_allclose(heads.sum(axis=1), 1.0, atol=1e-5)


def test_the_car_s_float_model_is_the_neo_model_behind_a_transpose():
    keras.utils.set_random_seed(4)
    spec = FrameSpec()  # full frames: the last convolution leaves 8x13 positions, so flatten order counts
    model = build_model("linear", spec.input_shape)
    proto = onnx_export.export_neo_onnx(model, "img_in")
    car = onnx_export.nhwc_input(proto)
    assert [n.op_type for n in car.graph.node] == ["Transpose"] + [n.op_type for n in proto.graph.node]
    assert list(car.graph.node[0].attribute[0].ints) == [0, 3, 1, 2]
    assert [i.SerializeToString() for i in car.graph.initializer] == [
        i.SerializeToString() for i in proto.graph.initializer
    ]
    frames = real_frames(spec)[:8]
    session = ort.InferenceSession(onnx_export.serialize(car), providers=["CPUExecutionProvider"])
    angle, throttle = session.run(["angle", "throttle"], {"img_in": to_model_input(frames)})  # a batch
    for got, want in zip((angle, throttle), keras_heads(model, frames), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def _tiny(*layers, inputs=(8, 8, 3)):
    x = img_in = keras.Input(inputs, name="img_in")
    for layer in layers:
        x = layer(x)
    return keras.Model(img_in, [keras.layers.Dense(1, name="a")(x), keras.layers.Dense(1, name="t")(x)])


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ((keras.layers.MaxPooling2D(name="pool"), keras.layers.Flatten()), "'pool' (MaxPooling2D)"),
        ((keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten()), "'bn' (BatchNormalization)"),
        ((keras.layers.Conv2D(2, 3, padding="same", name="c"), keras.layers.Flatten()), "padding='same'"),
        ((keras.layers.Flatten(), keras.layers.Dense(4, activation="tanh", name="d")), "'tanh'"),
    ],
)
def test_layers_the_exporter_does_not_write_are_refused_by_name(layers, message):
    with pytest.raises(onnx_export.OnnxExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        onnx_export.export_neo_onnx(_tiny(*layers), "img_in")


def test_weights_loaded_back_from_the_neo_model_are_the_trained_ones_and_a_changed_one_is_caught():
    keras.utils.set_random_seed(5)
    model = build_model("linear", SPEC.input_shape)
    proto = onnx_export.export_neo_onnx(model, "img_in")
    rebuilt = onnx_export.keras_model_from_onnx(model, proto)
    assert rebuilt is not model
    for got, want in zip(rebuilt.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(got, want)
    tampered = next(i for i in proto.graph.initializer if i.name == "conv2d_3/kernel")
    values = onnx.numpy_helper.to_array(tampered).copy()
    values.flat[0] += 1e-3
    tampered.CopyFrom(onnx.numpy_helper.from_array(values, tampered.name))
    with pytest.raises(onnx_export.OnnxExportError, match="'conv2d_3'"):
        onnx_export.keras_model_from_onnx(model, proto)
