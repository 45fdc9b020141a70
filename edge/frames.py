"""The camera-frame contract: one implementation for preprocessing, training, evaluation, inference, the car.

A frame goes camera JPEG -> ``prepare_frame`` (crop, resize; uint8 HxWx3, stored in the shards) ->
``to_model_input`` (float32 ``x * INPUT_SCALING.scale + INPUT_SCALING.offset``, what the network sees).
Model outputs go back to ``(angle, throttle)`` through ``decode_outputs``. Numpy and Pillow only: this
module runs on the device.

``INPUT_SCALING`` is the one definition of the uint8 -> model input map: training's graph, the int8
artifacts' input quantisation (``InputScaling.quantization``) and the car's runtimes all derive from it.
``preprocessing_digest`` names what a model was trained with (this code's ``PREPROCESSING_VERSION``, the
scaling and the model's ``FrameSpec``); training records it in model.json, compile copies it into every
package, and ``spec_of`` refuses a model whose digest this code does not reproduce (docs/contracts.md
section 1).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

CAMERA_HEIGHT, CAMERA_WIDTH = 120, 160  # donkeycar's default camera (IMAGE_H, IMAGE_W)
ANGLE_BINS = 15  # donkeycar KerasCategorical: linear_bin(angle, N=15, offset=1, R=2.0)
THROTTLE_BINS = 20  # donkeycar KerasCategorical: linear_bin(throttle, N=20, offset=0.0, R=throttle_range)
DEFAULT_THROTTLE_RANGE = 0.5  # donkeycar cfg.MODEL_CATEGORICAL_MAX_THROTTLE_RANGE


# Bump when prepare_frame or to_model_input change what the network is fed for the same FrameSpec (crop,
# resampling, colour order, scaling): models trained before then are refused by cars running the new code.
# tests/code/test_frames_contract.py pins the prepared pixels of version 1 and fails on a silent change.
PREPROCESSING_VERSION = 1


class FrameError(ValueError):
    """A frame that cannot be turned into model input (undecodable, wrong size or channels)."""


class PreprocessingError(ValueError):
    """A model whose preprocessing this code does not reproduce (no frame_spec, or a digest not ours)."""


@dataclass(frozen=True)
class InputScaling:
    """The affine map uint8 pixel -> model input: ``pixel * scale + offset``, in float32."""

    scale: float
    offset: float

    @property
    def normalization(self) -> str:
        """The map as the manifests write it (``"x/255"``)."""
        text = f"x/{1.0 / self.scale:g}"
        return text if self.offset == 0 else f"{text}{self.offset:+g}"

    def quantization(self, dtype: str) -> dict[str, Any]:
        """Quantisation of an integer input that *is* the frame: ``real = scale * (q - zero_point)`` with
        ``q = pixel`` (uint8) or ``q = pixel - 128`` (int8), so the car feeds the frame, or it XOR 0x80,
        without arithmetic."""
        info = np.iinfo(np.dtype(dtype))
        shift = int(info.min) - int(np.iinfo(np.uint8).min)  # q = pixel + shift: 0 for uint8, -128 for int8
        return {"scale": self.scale, "zero_point": shift - round(self.offset / self.scale)}


# donkeycar.utils.normalize_image: ``img * ONE_BYTE_SCALE`` with ONE_BYTE_SCALE = 1.0 / 255.0, into [0, 1].
INPUT_SCALING = InputScaling(scale=1.0 / 255.0, offset=0.0)


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
    """uint8 frame(s) -> float32 model input through ``INPUT_SCALING`` (donkeycar's ``img / 255``)."""
    scaled = np.asarray(frames, dtype=np.float32) * np.float32(INPUT_SCALING.scale)
    return scaled + np.float32(INPUT_SCALING.offset) if INPUT_SCALING.offset else scaled


def preprocessing_document(spec: FrameSpec) -> dict[str, Any]:
    """Everything that decides what the network sees for a camera frame, as JSON."""
    return {
        "version": PREPROCESSING_VERSION,
        "frame_spec": spec.to_dict(),
        "scaling": {"scale": INPUT_SCALING.scale, "offset": INPUT_SCALING.offset},
    }


def preprocessing_digest(spec: FrameSpec) -> str:
    """SHA-256 of ``preprocessing_document`` (canonical JSON: sorted keys, no spaces)."""
    text = json.dumps(preprocessing_document(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def preprocessing_record(spec: FrameSpec) -> dict[str, Any]:
    """What model.json's ``input`` and each compiled manifest carry next to ``frame_spec``."""
    return {"version": PREPROCESSING_VERSION, "digest": preprocessing_digest(spec)}


def spec_of(holder: Mapping[str, Any], what: str = "the model") -> FrameSpec:
    """The FrameSpec a model.json ``input`` or a compiled manifest records, if this code reproduces it.

    PreprocessingError, naming both digests, when ``frame_spec`` is missing or invalid, or when the
    recorded ``preprocessing`` digest is not the one this code computes for it: the model was trained
    with other preprocessing (another ``PREPROCESSING_VERSION``) or the record was altered.
    """
    raw = holder.get("frame_spec")
    if not isinstance(raw, dict):
        raise PreprocessingError(
            f"{what} records no frame_spec: how its frames were prepared is unknown (a model trained "
            "before frame specs were recorded must be retrained)"
        )
    try:
        spec = FrameSpec.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise PreprocessingError(f"{what} records an invalid frame_spec {raw}: {exc}") from exc
    record = holder.get("preprocessing")
    recorded = record.get("digest") if isinstance(record, dict) else None
    recorded_version = record.get("version") if isinstance(record, dict) else None
    ours = preprocessing_digest(spec)
    if recorded != ours:
        raise PreprocessingError(
            f"{what} was trained with preprocessing {recorded or '(none recorded)'} (version "
            f"{recorded_version if recorded_version is not None else '?'}), but this code "
            f"(preprocessing version {PREPROCESSING_VERSION}) prepares its frame_spec as {ours}: its frames "
            "would not be the ones the model learned from. Install the robocar version the model was "
            "trained with (update the car), or retrain the model with this version"
        )
    return spec


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
