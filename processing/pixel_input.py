"""An int8 image model that takes the photo's uint8 pixels, in blocks, instead of the float input.

When the photo transform is ``(pixel - 127) / 128`` on every channel (the classifier's and the detector's:
training/efficientnet_lite.py), quantising that float input at scale 1/128 and zero point 127 gives back
each pixel exactly. So the int8 model's first ``QuantizeLinear`` can go: the car feeds the resized photo's
bytes, with no float conversion, no quantisation and no layout transpose inside ONNX Runtime (32 of the
detector's 532 us in ONNX Runtime's profile on an Intel Xeon, benchmarks/README.md "The int8 heads fed
pixels").

And when the first convolution has stride 2, the pixels arrive as 2 x 2 blocks side by side
(``edge.photos.pixel_blocks``: [1, H/2, W/2, 12]): the 3 x 3 stride-2 convolution over 3 channels
becomes a 2 x 2 stride-1 convolution over 12, whose taps the int8 kernels fill (3 channels use a
quarter of a VNNI lane). The integer sums are the same products, so the outputs are bit for bit those of
the int8 model: ``pixel_input_model`` checks that on every photo it is given before returning.

The float convolution's padding (zeros) is the pixel 127, the input's zero point, which ``QLinearConv``
pads with; the block kernel's taps that the original kernel does not reach hold the weight's zero point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.photos import PIXELS_NAME, PhotoError, PhotoTransform, photo_pixels, pixel_blocks, pixel_input_spec
from processing.edge_package import CompileError, log

PIXEL_LEVELS = np.arange(256, dtype=np.uint8)


def exact_input_quantization(transform: PhotoTransform) -> tuple[float, int] | None:
    """(scale, zero point) under which quantising the transform's float input gives back every pixel
    0..255 exactly, as ONNX Runtime's QuantizeLinear computes it (round half to even); None when no
    uint8 quantisation can (a different mean or std per channel, a mean that is not a whole pixel)."""
    if len(set(transform.mean)) != 1 or len(set(transform.std)) != 1 or transform.scale <= 0:
        return None
    scale = np.float32(transform.scale / transform.std[0])
    zero_point = transform.mean[0] / transform.scale
    if zero_point != round(zero_point) or not 0 <= zero_point <= 255:
        return None
    floats = (
        PIXEL_LEVELS.astype(np.float32) * np.float32(transform.scale) - np.float32(transform.mean[0])
    ) / (np.float32(transform.std[0]))  # edge.photos.to_input's arithmetic
    quantised = np.clip(np.rint(floats / scale) + zero_point, 0, 255)
    return (float(scale), int(zero_point)) if np.array_equal(quantised, PIXEL_LEVELS) else None


def _initializers(graph: Any) -> dict[str, Any]:
    return {tensor.name: tensor for tensor in graph.initializer}


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else default


def block_weights(
    weights: np.ndarray, zero_points: np.ndarray, block: int, pad_begin: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A (O, C, KH, KW) kernel of stride ``block`` -> the kernel over ``block`` x ``block`` pixel blocks
    (O, C * block², KH', KW') of stride 1, and its begin pads: input row ``block * o - pad + k`` is block
    ``o + (k - pad) // block``, row ``(k - pad) % block`` within it. Taps the original kernel does not
    reach hold the weight's zero point (per output channel), so they add nothing."""
    out_channels, channels, kernel_h, kernel_w = weights.shape
    offsets = [
        [(k - pad) // block for k in range(kernel)]
        for kernel, pad in zip((kernel_h, kernel_w), pad_begin, strict=True)
    ]
    low = [min(o) for o in offsets]
    size = [max(o) - lo + 1 for o, lo in zip(offsets, low, strict=True)]
    fill = np.broadcast_to(
        zero_points.reshape(-1, 1, 1, 1, 1, 1), (out_channels, block, block, channels, *size)
    )
    # (O, dy, dx, C, KH', KW'): pixel_blocks' channel order
    blocked = np.array(fill, dtype=weights.dtype)
    for ky in range(kernel_h):
        for kx in range(kernel_w):
            dy, dx = (ky - pad_begin[0]) % block, (kx - pad_begin[1]) % block
            by, bx = offsets[0][ky] - low[0], offsets[1][kx] - low[1]
            blocked[:, dy, dx, :, by, bx] = weights[:, :, ky, kx]
    return blocked.reshape(out_channels, block * block * channels, *size), (-low[0], -low[1])


def _blocks_fit(conv: Any, transform: PhotoTransform) -> bool:
    """Whether the first convolution reads pixel blocks: stride 2, one group, no dilation, explicit pads,
    a photo of even sides."""
    return (
        list(_attribute(conv, "strides", [1, 1])) == [2, 2]
        and _attribute(conv, "group", 1) == 1
        and list(_attribute(conv, "dilations", [1, 1])) == [1, 1]
        and _attribute(conv, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and transform.height % 2 == 0
        and transform.width % 2 == 0
    )


def _to_blocks(conv: Any, inits: Mapping[str, Any], transform: PhotoTransform) -> bool:
    """Rewrite the stride-2 first convolution in place to read 2 x 2 pixel blocks (False: it cannot)."""
    from onnx import helper, numpy_helper

    pads = list(_attribute(conv, "pads", [0, 0, 0, 0]))
    weights = numpy_helper.to_array(inits[conv.input[3]])
    zero_points = numpy_helper.to_array(inits[conv.input[5]])
    blocked, pad_begin = block_weights(weights, zero_points, 2, (pads[0], pads[1]))
    sides = (transform.height, transform.width)
    pad_end = [
        # the output's size unchanged: side / 2 + begin + end - kernel' == (side + pads - kernel) // 2
        (side + pads[axis] + pads[axis + 2] - weights.shape[axis + 2]) // 2
        + blocked.shape[axis + 2]
        - side // 2
        - pad_begin[axis]
        for axis, side in enumerate(sides)
    ]
    if min(pad_end) < 0:
        return False
    inits[conv.input[3]].CopyFrom(numpy_helper.from_array(blocked, conv.input[3]))
    for attribute in [a for a in conv.attribute if a.name in ("kernel_shape", "pads", "strides")]:
        conv.attribute.remove(attribute)
    conv.attribute.extend([
        helper.make_attribute("kernel_shape", list(blocked.shape[2:])),
        helper.make_attribute("pads", [*pad_begin, *pad_end]),
        helper.make_attribute("strides", [1, 1]),
    ])  # fmt: skip
    return True


def pixel_input_model(
    int8_path: Path, dest: Path, transform: PhotoTransform, photos: np.ndarray
) -> tuple[dict[str, Any] | None, str]:
    """Write the int8 model ``int8_path`` taking uint8 pixels to ``dest``: (its input spec for the
    manifest, what was done) or (None, why not). ``photos``: RGB uint8 (N, H, W, 3) on which both models
    must answer bit for bit the same, or nothing is written."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(int8_path))
    graph = model.graph
    inits = _initializers(graph)
    first = graph.input[0].name
    quantize = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == first), None)
    exact = exact_input_quantization(transform)
    if quantize is None or exact is None:
        return None, "not written: its input is not quantised exactly from pixels"
    given = tuple(numpy_helper.to_array(inits[name]).item() for name in quantize.input[1:3])
    if given != exact:
        return None, f"not written: its input is quantised at {given}, not the pixels' {exact}"
    consumers = [n for n in graph.node if quantize.output[0] in n.input]
    conv = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "QLinearConv" else None
    block = (
        2 if conv is not None and _blocks_fit(conv, transform) and _to_blocks(conv, inits, transform) else 1
    )
    spec = pixel_input_spec(transform, block)
    # NHWC in, NCHW for the graph, under the quantised input's name so that its readers are unchanged:
    # ONNX Runtime's layout transformer runs QLinearConv in NHWC and cancels this transpose against its own.
    to_nchw = helper.make_node("Transpose", [PIXELS_NAME], [quantize.output[0]], perm=[0, 3, 1, 2])
    graph.node.remove(quantize)
    graph.node.insert(0, to_nchw)
    graph.input.pop(0)
    graph.input.insert(0, helper.make_tensor_value_info(PIXELS_NAME, TensorProto.UINT8, spec["shape"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    if not _same_answers(int8_path, dest, transform, photos, block):
        dest.unlink()
        return None, "not written: its answers differ from the int8 model's"
    return (
        spec,
        f"{fed_description(spec)}, answers equal to the int8 model's bit for bit on {len(photos)} photos",
    )


def fed_description(spec: Mapping[str, Any]) -> str:
    """What a pixel model takes, for the log and the manifest's quantization_scheme."""
    block = spec["block"]
    return f"uint8 {block} x {block} pixel blocks" if block > 1 else "uint8 NHWC pixels"


def _same_answers(
    int8_path: Path, pixel_path: Path, transform: PhotoTransform, photos: np.ndarray, block: int
) -> bool:
    from edge.photos import to_input
    from edge.runtimes import onnx_session

    reference, candidate = onnx_session(int8_path, 1), onnx_session(pixel_path, 1)
    float_name = reference.get_inputs()[0].name
    for photo in photos:
        expected = reference.run(None, {float_name: to_input([photo], transform)})
        answered = candidate.run(None, {PIXELS_NAME: pixel_blocks(photo, block)})
        if not all(np.array_equal(a, b) for a, b in zip(expected, answered, strict=True)):
            return False
    return True


def input_overrides(transform: PhotoTransform, input_name: str) -> Mapping[str, Any]:
    """quantize_static's extra options that quantise the input at the pixels' exact scale and zero point
    (``exact_input_quantization``), so that ``pixel_input_model`` applies whatever the calibration photos'
    range; empty when the transform has none."""
    exact = exact_input_quantization(transform)
    if exact is None:
        return {}
    scale, zero_point = exact
    override = {"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}
    return {"TensorQuantOverrides": {input_name: [override]}}


@dataclass(frozen=True)
class PixelArtifact:
    """The int8 model fed pixels, written beside the int8 model: its file, manifest ``input`` and the
    test photos as it takes them (to measure its accuracy_delta as every artifact's)."""

    path: Path
    spec: dict[str, Any]
    inputs: np.ndarray
    scheme: str


def pixel_artifact(
    int8_path: Path, transform: PhotoTransform, photos: Sequence[Path], int8_scheme: str
) -> PixelArtifact | None:
    """``<int8 model>-pixels.onnx`` from the compile step's int8 model, checked bit for bit on the test
    ``photos`` (``pixel_input_model``), or None (logged why)."""
    dest = int8_path.with_name(f"{int8_path.stem}-{PIXELS_NAME}.onnx")
    try:
        pixels = np.stack([photo_pixels(path, transform) for path in photos])
    except PhotoError as exc:
        raise CompileError(str(exc)) from exc
    spec, how = pixel_input_model(int8_path, dest, transform, pixels)
    log(f"{dest.name}: {how}")
    if spec is None:
        return None
    inputs = np.concatenate([pixel_blocks(photo, spec["block"]) for photo in pixels])
    return PixelArtifact(dest, spec, inputs, f"{int8_scheme}, fed {fed_description(spec)}")
