"""processing/pixel_input.py: an int8 model fed the photo's uint8 pixels answers exactly what the int8
model answers on the float input, for first convolutions of any kernel and padding, or is not written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.photos import PIXELS_NAME, PhotoTransform, pixel_blocks, to_input
from edge.runtimes import onnx_session
from processing.compile_classifier import INT8_SCHEME, quantize_int8
from processing.pixel_input import block_weights, exact_input_quantization, input_overrides, pixel_input_model

SIDE = 16
PIXEL_SCALED = PhotoTransform(SIDE, SIDE, SIDE, (127.0,) * 3, (128.0,) * 3, 1.0)  # the image recipes'
IMAGENET = PhotoTransform(SIDE, SIDE, SIDE, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), 1.0)


def float_model(path: Path, kernel: int, stride: int, pads: list[int], seed: int = 0) -> None:
    """data [1, 3, 16, 16] -> Conv(3 -> 8, kernel, stride, pads) -> Relu -> Conv(8 -> 4, 3x3) -> out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    first = rng.normal(0, 0.3, (8, 3, kernel, kernel)).astype(np.float32)
    second = rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], kernel_shape=[kernel] * 2,
                         strides=[stride] * 2, pads=pads),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "first-convolution",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2"),
         numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))


def photos(count: int, seed: int = 1) -> np.ndarray:
    """Random photos with the extremes the padding meets: all black, all white, bright edges."""
    batch = np.random.default_rng(seed).integers(0, 256, (count, SIDE, SIDE, 3), dtype=np.uint8)
    batch[0], batch[1] = 0, 255
    batch[2, 0, :], batch[2, :, 0], batch[2, -1, :], batch[2, :, -1] = 255, 255, 0, 0
    return batch


def int8_model(tmp_path: Path, transform: PhotoTransform, **conv: object) -> Path:
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    float_model(float_path, **conv)  # type: ignore[arg-type]
    calibration = to_input(list(photos(6, seed=7)), transform)
    quantize_int8(float_path, int8_path, calibration, INT8_SCHEME, input_overrides(transform, "data"))
    return int8_path


@pytest.mark.parametrize(
    ("kernel", "stride", "pads", "block"),
    [
        (3, 2, [1, 1, 1, 1], 2),  # the detector's and the classifier's first layer
        (3, 2, [0, 0, 1, 1], 2),  # TensorFlow's SAME for an even side
        (5, 2, [2, 2, 2, 2], 2),
        (4, 2, [1, 1, 1, 1], 2),
        (1, 2, [0, 0, 0, 0], 2),
        (3, 1, [1, 1, 1, 1], 1),  # stride 1: NHWC pixels, no blocks
    ],
)
def test_the_pixel_model_answers_bit_for_bit_what_the_int8_model_answers(
    tmp_path: Path, kernel: int, stride: int, pads: list[int], block: int
) -> None:
    int8_path = int8_model(tmp_path, PIXEL_SCALED, kernel=kernel, stride=stride, pads=pads)
    spec, how = pixel_input_model(int8_path, tmp_path / "pixels.onnx", PIXEL_SCALED, photos(4))
    assert spec is not None, how
    assert spec == {"name": PIXELS_NAME, "dtype": "uint8", "layout": "NHWC", "block": block,
                    "shape": [1, SIDE // block, SIDE // block, 3 * block * block]}  # fmt: skip
    reference, candidate = onnx_session(int8_path, 1), onnx_session(tmp_path / "pixels.onnx", 1)
    for photo in photos(12, seed=3):  # other photos than those the compile step checked
        (expected,) = reference.run(None, {"data": to_input([photo], PIXEL_SCALED)})
        (answered,) = candidate.run(None, {PIXELS_NAME: pixel_blocks(photo, block)})
        np.testing.assert_array_equal(answered, expected)
    kinds = [node.op_type for node in __import__("onnx").load(str(tmp_path / "pixels.onnx")).graph.node]
    assert "QuantizeLinear" not in kinds and kinds[0] == "Transpose"


def test_block_weights_put_each_tap_where_its_pixel_lands() -> None:
    """A 3x3 stride-2 kernel padded 1 on top: its row 0 reads row 1 of the block above, rows 1 and 2 rows
    0 and 1 of the output's own block; the block above's row 0 is no tap of it (the zero point)."""
    weights = np.arange(1, 28, dtype=np.int8).reshape(1, 3, 3, 3)
    blocked, pad_begin = block_weights(weights, np.array([5], np.int8), 2, (1, 1))
    assert blocked.shape == (1, 12, 2, 2) and pad_begin == (1, 1)
    taps = blocked.reshape(2, 2, 3, 2, 2)  # (dy, dx, channel, block row, block column)
    for ky in range(3):
        for kx in range(3):
            dy, dx, by, bx = (ky + 1) % 2, (kx + 1) % 2, (ky + 1) // 2, (kx + 1) // 2
            np.testing.assert_array_equal(taps[dy, dx, :, by, bx], weights[0, :, ky, kx])
    assert np.all(taps[0, :, :, 0, :] == 5) and np.all(taps[:, 0, :, :, 0] == 5)


def test_only_a_pixel_exact_input_quantisation_qualifies() -> None:
    assert exact_input_quantization(PIXEL_SCALED) == (0.0078125, 127)
    assert exact_input_quantization(PhotoTransform(8, 8, 8, (0.0,) * 3, (255.0,) * 3, 1.0)) == (
        pytest.approx(1 / 255),
        0,
    )
    assert exact_input_quantization(IMAGENET) is None  # a mean and std per channel
    assert exact_input_quantization(PhotoTransform(8, 8, 8, (127.5,) * 3, (128.0,) * 3, 1.0)) is None
    assert input_overrides(IMAGENET, "data") == {}


def test_a_model_whose_input_is_not_pixel_exact_is_not_rewritten(tmp_path: Path) -> None:
    int8_path = int8_model(tmp_path, IMAGENET, kernel=3, stride=2, pads=[1, 1, 1, 1])
    spec, how = pixel_input_model(int8_path, tmp_path / "pixels.onnx", IMAGENET, photos(3))
    assert spec is None and "not quantised exactly from pixels" in how
    assert not (tmp_path / "pixels.onnx").exists()


def test_a_model_calibrated_on_a_narrow_range_still_gets_the_pixels_quantisation(tmp_path: Path) -> None:
    """The calibration photos here are dark (0..63): without the override the input's scale would be
    theirs, and the pixel model would not apply."""
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    float_model(float_path, kernel=3, stride=2, pads=[1, 1, 1, 1])
    dark = to_input(list(photos(4) // 4), PIXEL_SCALED)
    quantize_int8(float_path, int8_path, dark, INT8_SCHEME, input_overrides(PIXEL_SCALED, "data"))
    spec, how = pixel_input_model(int8_path, tmp_path / "pixels.onnx", PIXEL_SCALED, photos(3))
    assert spec is not None, how
    quantize_int8(float_path, tmp_path / "plain.onnx", dark, INT8_SCHEME)
    spec, how = pixel_input_model(tmp_path / "plain.onnx", tmp_path / "none.onnx", PIXEL_SCALED, photos(3))
    assert spec is None and "not the pixels'" in how
