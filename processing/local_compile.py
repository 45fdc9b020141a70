"""CompileForEdge locally: LiteRT and ONNX Runtime artifacts, float32 and int8, from the Neo input.

Every artifact derives from the ONNX model Neo would compile (``processing/onnx_export.py``), so a local
run exercises what Neo sees:

* ``pilot_float32.onnx``: the Neo model with a Transpose NHWC -> NCHW in front and any batch
  (``onnx_export.nhwc_input``), so ``edge.runtimes`` feeds the camera frames as they are;
* ``pilot_int8.onnx``: that model, static int8 QDQ (calibrated on a deterministic sample of the
  training split), taking the uint8 frame itself;
* ``pilot_float32.tflite`` and ``pilot_int8.tflite`` (full-integer): the Keras architecture with its
  weights loaded back from the Neo model's initializers (checked equal to the trained weights), then
  converted by TensorFlow Lite; the int8 one with its first convolution re-expressed over column groups
  (``group_columns_for_first_conv``: the same function in the layout XNNPACK's int8 kernels run fast);
* ``pilot_int8_wide.tflite``: the same int8 pilot with its second convolution too over column pairs
  (``widen_second_conv``): fewer, wider kernel taps, which is what AMX tiles want. Which int8 layout is
  faster depends on the CPU, so both ship and the car times them at install (edge/agent.py).

Every artifact is run through the car's own runtime code (``edge.runtimes``) on the test split and
compared with the float Keras model.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifacts import sha256_file
from edge.frames import INPUT_SCALING, decode_outputs, to_model_input
from processing.edge_package import (
    PACKAGE_NAME,
    CompileError,
    CompileFailed,
    base_manifest,
    compiled_entry,
    finish_manifest,
    log,
    write_package,
)

DEFAULT_MAX_ANGLE_DELTA = 0.03  # the bound on an int8 pilot's angle error against the float model
# Per-channel int8 weights need QuantizeLinear/DequantizeLinear's ``axis``, added in opset 13
# (https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html); the Neo model is opset 12.
QUANTIZED_ONNX_OPSET = 13


@dataclass(frozen=True)
class LocalArtifact:
    """One locally compiled model file and how the runtimes must feed it."""

    file: str
    runtime: str
    precision: str
    scheme: str


INT8_TFLITE, FLOAT_TFLITE = "pilot_int8.tflite", "pilot_float32.tflite"
WIDE_INT8_TFLITE = "pilot_int8_wide.tflite"
UNGROUPED = "_ungrouped"  # name suffix of the reshape that reads the grouped columns back (widen_second_conv)
INT8_ONNX, FLOAT_ONNX = "pilot_int8.onnx", "pilot_float32.onnx"
LOCAL_ARTIFACTS = (  # best first: the car drives with the first one within tolerance
    LocalArtifact(
        INT8_TFLITE,
        "litert",
        "int8",
        "full-integer int8 (int8 input = frame - 128, scale 1/255; first convolution over column groups)",
    ),
    LocalArtifact(
        WIDE_INT8_TFLITE,
        "litert",
        "int8",
        "full-integer int8 as pilot_int8.tflite, second convolution over column pairs too (wide taps)",
    ),
    LocalArtifact(FLOAT_TFLITE, "litert", "float32", "float32"),
    LocalArtifact(
        INT8_ONNX, "onnxruntime", "int8", "static QDQ, per-channel int8 weights, uint8 activations and input"
    ),
    LocalArtifact(FLOAT_ONNX, "onnxruntime", "float32", "float32 (the Neo model, NHWC input)"),
)


def representative_indices(total: int, wanted: int, seed: int) -> np.ndarray:
    """A deterministic, sorted sample of frame indices for int8 calibration."""
    if total <= 0:
        raise CompileError("the training split is empty: int8 calibration needs frames")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(total, wanted), replace=False))


def with_full_input_range(frames: np.ndarray) -> np.ndarray:
    """The calibration frames with one pixel of the first set to 0 and one to 255.

    Quantisers take the input's range from what they see; a dim or washed-out training set would give
    the input a narrower range than the camera's, clipping brighter frames on the car and losing the
    exact frame-to-int8 mapping (scale 1/255). Two pixels of one frame fix the range and change the
    activations' statistics negligibly.
    """
    frames = np.array(frames, dtype=np.uint8, copy=True)
    if len(frames):
        frames[0, 0, 0, 0], frames[0, 0, 0, 1] = 0, 255
    return frames


def load_images(split_dir: Path) -> np.ndarray:
    from processing.shards import ShardError, load_split

    try:
        arrays, _ = load_split(split_dir)
    except (ShardError, OSError) as exc:
        raise CompileError(f"cannot read the {split_dir.name} split: {exc}") from exc
    return arrays["images"]


def serving_model(model: Any, output_names: Sequence[str]) -> Any:
    """The Keras model with its outputs keyed by name, so every converter names them angle/throttle."""
    import keras

    outputs = model.outputs
    if len(outputs) != len(output_names):
        raise CompileError(f"the model has {len(outputs)} outputs, model.json names {len(output_names)}")
    return keras.Model(model.inputs, dict(zip(output_names, outputs, strict=True)), name="serving")


def first_conv(model: Any) -> Any | None:
    """The Conv2D that reads the model's input directly, when it is the only layer that does."""
    import keras

    (image,) = model.inputs
    readers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and any(tensor is image for tensor in keras.tree.flatten(layer.input))
    ]
    if len(readers) != 1 or type(readers[0]) is not keras.layers.Conv2D:
        return None
    return readers[0]


def column_group_kernel(kernel: np.ndarray, stride: int, group: int) -> np.ndarray:
    """A [kh, kw, C, F] kernel of width stride ``stride`` as the kernel of a width-stride-1 convolution
    over groups of ``group`` columns that computes ``group / stride`` neighbouring outputs at once.

    Tap (i, b), input channel (u, c), output channel (j, f) is the original tap (i, group*b + u - stride*j)
    channel (c, f) where that lies in [0, kw), zero elsewhere: the same products, laid out differently.
    """
    kh, kw, channels, filters = kernel.shape
    outputs = group // stride
    taps = -(-(kw + stride * (outputs - 1)) // group)
    grouped = np.zeros((kh, taps, group, channels, outputs, filters), kernel.dtype)
    for tap in range(taps):
        for column in range(group):
            for output in range(outputs):
                original = group * tap + column - stride * output
                if 0 <= original < kw:
                    grouped[:, tap, column, :, output, :] = kernel[:, original]
    return grouped.reshape(kh, taps, group * channels, outputs * filters)


def _cloned(model: Any, clone: Any, call: Any, rewritten: str, weights: list[np.ndarray]) -> Any:
    """``model`` rebuilt by ``keras.models.clone_model`` with ``clone`` and ``call``: layer ``rewritten``
    gets ``weights``, every other layer its own weights."""
    import keras

    cloned = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in cloned.layers:
        if layer.name == rewritten:
            layer.set_weights(weights)
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return cloned


def group_columns_for_first_conv(model: Any) -> Any:
    """The same network with its first convolution computed over groups of columns: the layout in which
    XNNPACK's int8 kernels run it fastest.

    With width stride s, the input [H, W, C] is read as [H, W / 2s, 2s*C] (a reshape: the same bytes, no
    copy on the car); one stride-1 convolution over those groups (``column_group_kernel``) computes two
    neighbouring output columns per position, and its output [Ho, Wo / 2, 2F] is read back as [Ho, Wo, F].
    Same products, same sums: the same function (an fp32 test checks it), so int8 quantises it alike.
    Why: XNNPACK's AVX-512 VNNI int8 convolutions read each tap's input channels in blocks of 8 and
    write output channels in tiles of 16, so donkeycar's 5x5 on 3 channels into 24 filters computes
    8 * 25 * 32 products for 75 * 24 useful ones. Measured on an AMD EPYC (Zen 5), one thread: that layer
    took 85 of the int8 pilot's 175 us (96 G multiply-adds/s, the others ~450); over 4-column groups
    (12 channels into 48 filters) the pilot's invoke went from ~181 to ~142 us, column pairs reached ~151
    (benchmarks/README.md). A model whose input is not read by one such convolution is returned as is.
    """
    import keras

    conv = first_conv(model)
    _, height, width, channels = model.inputs[0].shape
    if (
        conv is None
        or conv.padding != "valid"
        or tuple(conv.dilation_rate) != (1, 1)
        or conv.groups != 1
        or conv.data_format != "channels_last"
        or width is None
    ):
        return model
    kernel, *bias = conv.get_weights()
    stride, filters = conv.strides[1], kernel.shape[-1]
    group = 2 * stride
    grouped = column_group_kernel(kernel, stride, group)
    out_height, out_width = conv.output.shape[1:3]
    positions = width // group - grouped.shape[1] + 1
    if stride < 2 or width % group or positions * 2 != out_width:
        return model

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer is conv:
            config.update(
                filters=grouped.shape[-1], kernel_size=grouped.shape[:2], strides=(conv.strides[0], 1)
            )
        return layer.__class__.from_config(config)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer.name != conv.name:
            return layer(*args, **kwargs)
        columns = keras.layers.Reshape(
            (height, width // group, group * channels), name=f"{conv.name}_columns"
        )
        two_per_position = layer(columns(args[0]), **kwargs)
        return keras.layers.Reshape((out_height, out_width, filters), name=f"{conv.name}{UNGROUPED}")(
            two_per_position
        )

    return _cloned(model, clone, call, conv.name, [grouped, *(np.tile(b, 2) for b in bias)])


def widen_second_conv(grouped: Any) -> Any:
    """``group_columns_for_first_conv``'s network with the second convolution over column pairs too, or
    ``grouped`` itself where its layers are not in that shape.

    The first convolution already answers two neighbouring output columns per position ([Ho, Wo/2, 2F]);
    instead of reading that back as [Ho, Wo, F], the second convolution (width stride 2) reads the pairs
    as they are: ``column_group_kernel`` with group 2 turns its kh x kw taps over F channels into
    kh x ceil(kw/2) taps over 2F channels, width stride 1. Same products plus zeros (600 -> 720 a filter
    for donkeycar's 5x5 over 24), same sums: an fp32 test checks the function.
    Why: on a CPU with AMX, XNNPACK's int8 convolution pays per kernel tap for 64 input channels whatever
    the layer has (a 5x5 s2 convolution into 32 filters took 98-108 us for 24, 32, 48 or 64 input channels
    on an Intel Xeon with AMX-INT8), so 15 taps over 48 channels cost less than 25 over 24: the pilot's
    invoke went from 227 to 204 us there. Where int8 kernels pay per channel (AVX-512 VNNI) the extra zeros
    cost instead, so this is a second artifact and the car measures which is faster.
    """
    import keras

    layers = grouped.layers
    ungroup = next((layer for layer in layers if layer.name.endswith(UNGROUPED)), None)
    if ungroup is None:
        return grouped
    following = layers[layers.index(ungroup) + 1 :]
    passthrough = (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU)
    second = next((layer for layer in following if not isinstance(layer, passthrough)), None)
    width = ungroup.output.shape[2]
    if (
        type(second) is not keras.layers.Conv2D
        or second.padding != "valid"
        or tuple(second.strides) != (2, 2)
        or tuple(second.dilation_rate) != (1, 1)
        or second.groups != 1
        or tuple(second.input.shape) != tuple(ungroup.output.shape)
        or width % 2
    ):
        return grouped
    kernel, *bias = second.get_weights()
    paired = column_group_kernel(kernel, stride=2, group=2)
    if width // 2 - paired.shape[1] + 1 != second.output.shape[2]:
        return grouped

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer is second:
            config.update(kernel_size=paired.shape[:2], strides=(second.strides[0], 1))
        return layer.__class__.from_config(config)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer.name == ungroup.name:
            return args[0]  # keep the pairs: [Ho, Wo/2, 2F]
        return layer(*args, **kwargs)

    return _cloned(grouped, clone, call, second.name, [paired, *bias])


def convert_litert(model: Any, calibration: np.ndarray | None = None, *, int8_outputs: bool = False) -> bytes:
    """Keras -> .tflite; with calibration frames, full-integer int8 whose input is the frame minus 128.
    ``int8_outputs`` leaves the outputs quantised (benchmarks/edge_layers.py's sub-models: dequantising a
    feature map would be timed as the layer's)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([to_model_input(frame[None])] for frame in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # x/255 quantises to int8 as frame - 128 (scale 1/255, zero point -128): one XOR on the car. A uint8
        # input would put a uint8->int8 QUANTIZE op in the graph, measured 12% slower at batch 1.
        converter.inference_input_type = tf.int8
        # the car's heads are dequantised in-graph: the angle keeps full precision
        converter.inference_output_type = tf.int8 if int8_outputs else tf.float32
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints every captured variable
        return converter.convert()


def write_float_onnx(neo_onnx: Any, dest: Path) -> None:
    """The Neo model as the car runs it: NHWC frames through a Transpose, any batch."""
    from processing.onnx_export import nhwc_input, serialize

    dest.write_bytes(serialize(nhwc_input(neo_onnx)))


def quantize_onnx(float_path: Path, dest: Path, calibration: np.ndarray) -> None:
    """Static int8 QDQ of the car's float ONNX (per-channel weights, uint8 activations and input)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(float_path))
    input_name = model.graph.input[0].name
    # Opset 12 -> 13 changes none of the exporter's operators for these shapes (Softmax on 2-D, axis 1).
    upgraded = dest.with_suffix(".opset13.onnx")
    onnx.save(version_converter.convert_version(model, QUANTIZED_ONNX_OPSET), str(upgraded))

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._frames = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self._frames, None)
            return None if frame is None else {input_name: to_model_input(frame[None])}

    quantize_static(
        str(upgraded),
        str(dest),
        Frames(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    upgraded.unlink()
    feed_frames_directly(dest)


# The input quantisation under which the uint8 input is the frame itself (edge.frames.INPUT_SCALING).
FRAME_QUANTIZATION = INPUT_SCALING.quantization("uint8")


def feed_frames_directly(path: Path) -> bool:
    """Make a QDQ model take the uint8 frame: drop the input's QuantizeLinear when it is exactly x/255.

    With the calibration's full input range the input quantises with scale 1/255 and zero point 0, so
    ``quantize(frame / 255)`` is the frame itself; feeding it saves the float conversion on the car and
    the QuantizeLinear in the graph (measured 6% at batch 1). Layout-only Transposes between the input
    and the QuantizeLinear stay (they move uint8 as well as float). Returns whether the model changed.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    tensor = graph.input[0].name
    consumers = [n for n in graph.node if tensor in n.input]
    while len(consumers) == 1 and consumers[0].op_type == "Transpose":
        tensor = consumers[0].output[0]
        consumers = [n for n in graph.node if tensor in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        return False
    quantize = consumers[0]
    scale, zero_point = (constants.get(name) for name in quantize.input[1:3])
    if scale is None or zero_point is None or zero_point.dtype != np.uint8:
        return False
    if int(zero_point) != FRAME_QUANTIZATION["zero_point"]:
        return False
    if abs(float(scale) - FRAME_QUANTIZATION["scale"]) > 1e-6 * FRAME_QUANTIZATION["scale"]:
        return False
    for node in graph.node:
        node.input[:] = [tensor if name == quantize.output[0] else name for name in node.input]
    graph.node.remove(quantize)
    stale = [info for info in graph.value_info if info.name == tensor]  # was float, now uint8: re-inferred
    for info in stale:
        graph.value_info.remove(info)
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.save(model, str(path))
    return True


def _quantization(details: Mapping[str, Any]) -> dict[str, float] | None:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def litert_io(path: Path, meta: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Input and named outputs of a .tflite, read from its serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(path)).get_signature_runner()
    (input_details,) = signature.get_input_details().values()
    outputs = signature.get_output_details()
    input_spec = _input_spec(meta, np.dtype(input_details["dtype"]).name, _quantization(input_details))
    output_specs = [
        {
            "name": name,
            "tensor": outputs[name]["name"],
            "dtype": np.dtype(outputs[name]["dtype"]).name,
            "quantization": _quantization(outputs[name]),
        }
        for name in ("angle", "throttle")
    ]
    return input_spec, output_specs


def onnx_io(path: Path, meta: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != ["angle", "throttle"]:
        raise CompileError(f"{path.name}: outputs {names}, expected angle and throttle")
    outputs = [
        {"name": n, "tensor": n, "dtype": "float32", "quantization": None} for n in ("angle", "throttle")
    ]
    if session.get_inputs()[0].type == "tensor(uint8)":  # feed_frames_directly: the frame, scale 1/255
        return _input_spec(meta, "uint8", dict(FRAME_QUANTIZATION)), outputs
    return _input_spec(meta, "float32", None), outputs


def _input_spec(meta: Mapping[str, Any], dtype: str, quantization: dict[str, float] | None) -> dict[str, Any]:
    return {
        "name": meta["input"].get("name", "img_in"),
        "shape": [int(v) for v in meta["input"]["shape"]],
        "dtype": dtype,
        "normalization": INPUT_SCALING.normalization,
        "quantization": quantization,
    }


def keras_reference(model: Any, frames: np.ndarray, meta: Mapping[str, Any], batch: int = 128):
    """The float Keras model's (angle, throttle) on the frames: what every artifact is compared with."""
    angles, throttles = [], []
    for start in range(0, len(frames), batch):
        heads = model(to_model_input(frames[start : start + batch]), training=False)
        heads = [np.asarray(heads[name]) for name in ("angle", "throttle")]
        angle, throttle = decode_outputs(
            heads, meta.get("model_type", "linear"), meta.get("throttle_range", 0.5)
        )
        angles.append(angle)
        throttles.append(throttle)
    return np.concatenate(angles), np.concatenate(throttles)


def accuracy_delta(
    pilot: Any, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], batch: int = 128
):
    """Angle/throttle error of a runtime pilot against the float Keras model on the same frames."""
    outputs = [pilot.run_batch(frames[start : start + batch]) for start in range(0, len(frames), batch)]
    angle = np.concatenate([a for a, _ in outputs])
    throttle = np.concatenate([t for _, t in outputs])
    angle_err, throttle_err = np.abs(angle - reference[0]), np.abs(throttle - reference[1])
    return {
        "frames": len(frames),
        "angle_mae": float(angle_err.mean()),
        "angle_max": float(angle_err.max()),
        "throttle_mae": float(throttle_err.mean()),
        "throttle_max": float(throttle_err.max()),
    }


def choose_default(artifacts: list[dict[str, Any]], max_angle_delta: float) -> str:
    """Marks each artifact ``within_tolerance``; the car drives with the first (best) one that is."""
    for artifact in artifacts:
        artifact["within_tolerance"] = artifact["accuracy_delta"]["angle_mae"] <= max_angle_delta
    usable = [a["file"] for a in artifacts if a["within_tolerance"]]
    if not usable:
        raise CompileFailed(f"no compiled artifact is within angle MAE {max_angle_delta} of the float model")
    return usable[0]


def build_local_files(
    work: Path, litert_model: Any, neo_onnx: Any, calibration: np.ndarray
) -> dict[str, float]:
    """Every local artifact into ``work`` (the int8 ONNX from the float one); seconds each took."""
    seconds: dict[str, float] = {}

    def timed(file: str, build: Any) -> None:
        started = time.perf_counter()
        build(work / file)
        seconds[file] = time.perf_counter() - started

    timed(FLOAT_ONNX, lambda path: write_float_onnx(neo_onnx, path))
    timed(INT8_ONNX, lambda path: quantize_onnx(work / FLOAT_ONNX, path, calibration))
    timed(FLOAT_TFLITE, lambda path: path.write_bytes(convert_litert(litert_model)))
    int8_expression = group_columns_for_first_conv(litert_model)  # the same function, laid out for XNNPACK
    timed(INT8_TFLITE, lambda path: path.write_bytes(convert_litert(int8_expression, calibration)))
    wide_expression = widen_second_conv(int8_expression)
    if wide_expression is not int8_expression:  # else it would be pilot_int8.tflite again
        timed(WIDE_INT8_TFLITE, lambda path: path.write_bytes(convert_litert(wide_expression, calibration)))
    return seconds


def compile_locally(
    keras_model: Any,
    neo_onnx: Any,
    meta: Mapping[str, Any],
    targets: Sequence[str],
    *,
    train_dir: Path,
    test_dir: Path,
    out_dir: Path,
    source_sha256: str | None,
    calibration_frames: int = 200,
    seed: int = 0,
    max_angle_delta: float = DEFAULT_MAX_ANGLE_DELTA,
) -> dict[str, dict[str, Any]]:
    """LiteRT and ONNX artifacts (float32 and int8) from the Neo model, measured on the test split.

    ``keras_model`` is the trained model (the reference every artifact is compared with); ``neo_onnx``
    the model Neo compiles, exported from it. One package per target.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge import runtimes
    from processing.onnx_export import OUTPUT_NAMES, keras_model_from_onnx

    train_images = load_images(train_dir)
    test_images = load_images(test_dir)
    if len(test_images) == 0:
        raise CompileError("the test split is empty: the accuracy delta needs frames")
    calibration = with_full_input_range(
        train_images[representative_indices(len(train_images), calibration_frames, seed)]
    )
    del train_images
    log(f"calibrating on {len(calibration)} training frames, measuring on {len(test_images)} test frames")
    reference = keras_reference(serving_model(keras_model, OUTPUT_NAMES), test_images, meta)
    # LiteRT converts Keras: the architecture with the Neo model's weights (checked equal to the trained).
    from_neo = serving_model(keras_model_from_onnx(keras_model, neo_onnx), OUTPUT_NAMES)

    artifacts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds = build_local_files(work, from_neo, neo_onnx, calibration)
        for spec in LOCAL_ARTIFACTS:
            path = work / spec.file
            if not path.is_file():  # a layout that did not apply to this network
                continue
            read_io = litert_io if spec.runtime == "litert" else onnx_io
            input_spec, output_specs = read_io(path, meta)
            artifact = {
                "file": spec.file,
                "runtime": spec.runtime,
                "precision": spec.precision,
                "quantization_scheme": spec.scheme,
                "input": input_spec,
                "outputs": output_specs,
                "sha256": sha256_file(path),
                "size_bytes": path.stat().st_size,
            }
            # Measured through the car's own code path: edge.runtimes reads model_type from the manifest.
            pilot = runtimes.load_artifact(work, artifact, base_manifest(targets[0], meta, source_sha256))
            artifact["accuracy_delta"] = accuracy_delta(pilot, test_images, reference)
            artifacts.append(artifact)
            delta = artifact["accuracy_delta"]
            log(
                f"{spec.file}: {artifact['size_bytes']:,} bytes in {seconds[spec.file]:.1f} s, "
                f"angle MAE {delta['angle_mae']:.4f}, throttle MAE {delta['throttle_mae']:.4f} vs Keras"
            )
        default = choose_default(artifacts, max_angle_delta)
        files = {a["file"]: work / a["file"] for a in artifacts}
        entries = {}
        for target in targets:
            manifest = base_manifest(target, meta, source_sha256)
            manifest["tolerance"] = {"angle_mae": max_angle_delta}
            manifest = finish_manifest(manifest, artifacts, default)
            package = write_package(files, manifest, out_dir / target / PACKAGE_NAME)
            entries[target] = compiled_entry(target, package, artifacts, default)
            log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']} (drives with {default})")
    return entries
