"""The camera-frame contract: one implementation for preprocessing, training, evaluation, inference, the car.

A frame goes camera JPEG -> ``prepare_frame`` (crop, resize; uint8 HxWx3, stored in the shards) ->
``to_model_input`` (float32 in [0, 1], what the network sees). Model outputs go back to
``(angle, throttle)`` through ``decode_outputs``. Numpy and Pillow only: this module runs on the device.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

CAMERA_HEIGHT, CAMERA_WIDTH = 120, 160  # donkeycar's default camera (IMAGE_H, IMAGE_W)
ANGLE_BINS = 15  # donkeycar KerasCategorical: linear_bin(angle, N=15, offset=1, R=2.0)
THROTTLE_BINS = 20  # donkeycar KerasCategorical: linear_bin(throttle, N=20, offset=0.0, R=throttle_range)
DEFAULT_THROTTLE_RANGE = 0.5  # donkeycar cfg.MODEL_CATEGORICAL_MAX_THROTTLE_RANGE


class FrameError(ValueError):
    """A frame that cannot be turned into model input (undecodable, wrong size or channels)."""


@dataclass(frozen=True)
class FrameSpec:
    """How a camera frame becomes model input; recorded in ``model.json`` so every consumer agrees.

    ``crop_top``/``crop_bottom`` are rows removed like donkeycar's ``ROI_CROP_TOP``/``ROI_CROP_BOTTOM``;
    ``height``/``width`` is the size after cropping and (optional) resizing.
    """

    camera_height: int = CAMERA_HEIGHT
    camera_width: int = CAMERA_WIDTH
    crop_top: int = 0
    crop_bottom: int = 0
    height: int = CAMERA_HEIGHT
    width: int = CAMERA_WIDTH

    def __post_init__(self) -> None:
        if self.crop_top < 0 or self.crop_bottom < 0:
            raise ValueError("crop_top and crop_bottom must be >= 0")
        if self.crop_top + self.crop_bottom >= self.camera_height:
            raise ValueError(
                f"cropping {self.crop_top}+{self.crop_bottom} rows leaves nothing of a "
                f"{self.camera_height}-row frame"
            )
        if self.height <= 0 or self.width <= 0:
            raise ValueError("height and width must be positive")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameSpec:
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


# Start-of-frame markers of the Huffman-coded JPEGs cameras write: baseline, extended, progressive.
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2))
# Markers after which no SOF can come (scan, end of image), or JPEG kinds left to Pillow's parser.
_JPEG_STOP = frozenset((0xDA, 0xD9, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_colour_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit, 3-component Huffman JPEG, read from its SOF segment; else None.

    A few byte reads: Pillow's own header parser walks every marker in Python and costs a quarter of
    a camera frame's decode. None means "not this simple case": the caller lets Pillow decide.
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_SOF:
            if pos + 10 > end or data[pos + 4] != 8 or data[pos + 9] != 3:
                return None
            return (data[pos + 7] << 8) | data[pos + 8], (data[pos + 5] << 8) | data[pos + 6]
        if marker in _JPEG_STOP:
            return None
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 HxWx3 RGB. Raises FrameError on anything undecodable.

    Colour JPEGs (every camera frame) go straight to Pillow's libjpeg decoder with the arguments
    Pillow's JPEG plugin would pass it, so the pixels are the same; anything else goes through
    ``Image.open``.
    """
    size = jpeg_colour_size(data)
    if size is not None and (Image.MAX_IMAGE_PIXELS is None or size[0] * size[1] <= Image.MAX_IMAGE_PIXELS):
        try:
            rgb = Image.frombytes("RGB", size, data, "jpeg", "RGB", "")
        except Exception as exc:  # libjpeg errors and truncation surface as ValueError / OSError
            raise FrameError(f"cannot decode image: {exc}") from exc
        return np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(size[1], size[0], 3)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            # frombuffer over tobytes: a third cheaper than np.asarray(img) per frame, the same pixels.
            return np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(rgb.height, rgb.width, 3)
    except Exception as exc:  # Pillow raises several unrelated types for bad input
        raise FrameError(f"cannot decode image: {exc}") from exc


def prepare_frame(image: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """Camera frame (uint8 HxWx3, the camera's size) -> cropped, resized uint8 frame of spec.input_shape."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"expected an RGB frame HxWx3, got shape {tuple(image.shape)}")
    if image.shape[:2] != (spec.camera_height, spec.camera_width):
        got = f"{image.shape[1]}x{image.shape[0]}"
        raise FrameError(f"expected a {spec.camera_width}x{spec.camera_height} frame, got {got}")
    end = image.shape[0] - spec.crop_bottom
    cropped = image[spec.crop_top : end]
    if cropped.shape[:2] != (spec.height, spec.width):
        cropped = np.asarray(
            Image.fromarray(cropped).resize((spec.width, spec.height), Image.Resampling.BILINEAR)
        )
    return np.ascontiguousarray(cropped, dtype=np.uint8)


def to_model_input(frames: np.ndarray) -> np.ndarray:
    """uint8 frame(s) -> float32 in [0, 1], donkeycar's normalisation (``img / 255``)."""
    return np.asarray(frames, dtype=np.float32) * np.float32(1.0 / 255.0)


def linear_bin(value: float, n: int = ANGLE_BINS, offset: float = 1.0, r: float = 2.0) -> np.ndarray:
    """donkeycar.utils.linear_bin: one-hot of ``value`` over ``n`` bins covering range ``r``."""
    b = round((value + offset) / (r / (n - offset)))
    out = np.zeros(n, dtype=np.float32)
    out[int(min(max(b, 0), n - 1))] = 1.0
    return out


def linear_unbin(arr: np.ndarray, n: int = ANGLE_BINS, offset: float = -1.0, r: float = 2.0) -> np.ndarray:
    """donkeycar.utils.linear_unbin, vectorised over the leading axes."""
    b = np.argmax(np.asarray(arr), axis=-1)
    return (b * (r / (n + offset)) + offset).astype(np.float32)


def decode_outputs(
    outputs: list[np.ndarray] | tuple[np.ndarray, ...],
    model_type: str,
    throttle_range: float = DEFAULT_THROTTLE_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """The network's outputs (batch-first) -> (angle[N], throttle[N]) in the car's units.

    ``linear``: two heads of shape [N, 1]; ``categorical``: softmax heads [N, 15] and [N, 20].
    Outputs are identified by their width, since runtimes do not keep the heads' order.
    """
    if model_type == "linear":
        angle, throttle = (np.asarray(o, dtype=np.float32).reshape(-1) for o in outputs)
        # minimum/maximum rather than np.clip: a third of the cost on the car's one-element arrays.
        return np.minimum(np.maximum(angle, -1.0), 1.0), np.minimum(np.maximum(throttle, -1.0), 1.0)
    if model_type == "categorical":
        by_width = {np.asarray(o).shape[-1]: np.asarray(o) for o in outputs}
        if set(by_width) != {ANGLE_BINS, THROTTLE_BINS}:
            raise ValueError(f"categorical outputs must have widths 15 and 20, got {sorted(by_width)}")
        angle = linear_unbin(by_width[ANGLE_BINS], n=ANGLE_BINS, offset=-1.0, r=2.0)
        throttle = linear_unbin(by_width[THROTTLE_BINS], n=THROTTLE_BINS, offset=0.0, r=throttle_range)
        return angle, throttle
    raise ValueError(f"unknown model type {model_type!r} (expected 'linear' or 'categorical')")
