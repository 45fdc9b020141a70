"""The photo contract of the image recipes: one implementation for Preprocess, training, evaluation,
compilation, the endpoint and the car.

A photo of any size, colour or grey, becomes the network's input in three steps (a detector stretches the
whole photo to ``height`` x ``width`` instead of the first two: ``crop="stretch"``):
``resize_shorter_side`` (RGB uint8 HxWx3, bilinear, shorter side ``resize_shorter_side``) ->
``crop`` (``height`` x ``width``: the centre, or a random place and flip while training) ->
``to_input`` (NCHW float32, ``(pixel * scale - mean) / std`` per RGB channel).

An int8 artifact compiled to take pixels (processing/pixel_input.py) gets the cropped photo's uint8 bytes
instead of ``to_input``'s floats, in ``block`` x ``block`` patches side by side (``pixel_blocks``); its
manifest ``input`` says so (``pixel_input_spec``) and ``prepare_for`` feeds each artifact its own form.

``PhotoTransform`` records the numbers; the trainer writes it into ``classifier-spec.json`` (``input``),
compile copies it into each package's manifest (``input_transform``) and the car reads it from there, so
every stage prepares a photo exactly as training did. Numpy and Pillow only: this module runs on the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

INPUT_NAME = "data"  # Neo's MXNet input name ({"data": [1, 3, H, W]})
PIXELS_NAME = "pixels"  # the input of an int8 model fed uint8 pixel blocks (processing/pixel_input.py)
RESIZE_RATIO = 8 / 7  # shorter side before cropping: ImageNet's 256 for a 224 crop
# Class names by id (a JSON list), beside each split's image list: Preprocess writes it, the trainers
# and evaluation read it.
CLASSES_FILE = "classes.json"
# A detection split's boxes: one JSON line per photo, ``{"image", "boxes": [[class id, xmin, ymin, xmax,
# ymax], ...]}`` normalised to the photo's sides (processing/preprocess_detection.py writes it).
ANNOTATIONS_FILE = "annotations.jsonl"
# How a photo becomes height x width: the classifier's centre crop after resizing the shorter side, or the
# detector's stretch of the whole photo (its boxes are normalised to the photo's sides).
CENTRE, STRETCH = "centre", "stretch"
CROPS = (CENTRE, STRETCH)
# Pillow refuses images over ~179 M pixels (decompression bombs); a labelled photo is far smaller.
MAX_PHOTO_PIXELS = 64_000_000


class PhotoError(ValueError):
    """A photo that cannot be prepared (unreadable, truncated, or a transform that does not fit)."""


@dataclass(frozen=True)
class PhotoTransform:
    """How a photo becomes the network's input, ``(pixel * scale - mean) / std`` per RGB channel after
    resizing (shorter side ``resize_shorter_side``) and cropping to ``height`` x ``width``."""

    height: int
    width: int
    resize_shorter_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    name: str = INPUT_NAME
    layout: str = "NCHW"
    colour: str = "RGB"
    crop: str = CENTRE  # or STRETCH (resize_shorter_side is then unused: give max(height, width))
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if min(self.height, self.width) < 1 or self.resize_shorter_side < max(self.height, self.width):
            raise PhotoError(
                f"a {self.height}x{self.width} crop does not fit a shorter side of {self.resize_shorter_side}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PhotoError("mean and std need three values each, std > 0")

    def as_dict(self) -> dict[str, Any]:
        spec = asdict(self)
        spec["mean"], spec["std"] = list(self.mean), list(self.std)
        spec["shape"] = [1, 3, self.height, self.width]
        return spec

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PhotoTransform:
        """The transform ``as_dict`` wrote (``shape`` is derived, other unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known - {"shape"})
        if unknown:
            raise PhotoError(f"unknown input transform fields: {', '.join(unknown)}")
        try:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in known}
            transform = cls(**values)
        except TypeError as exc:
            raise PhotoError(f"input transform: {exc}") from None
        if (transform.layout, transform.colour, transform.interpolation) != ("NCHW", "RGB", "bilinear") or (
            transform.crop not in CROPS
        ):
            raise PhotoError(
                "this code prepares NCHW RGB inputs after a bilinear resize, centre-cropped or stretched "
                f"(crop: {' or '.join(CROPS)})"
            )
        return transform


def resize_side_for(crop_side: int) -> int:
    """The shorter side a photo is resized to before a ``crop_side`` crop (64 -> 73)."""
    return round(crop_side * RESIZE_RATIO)


def open_rgb(source: str | Path | Image.Image) -> Image.Image:
    """The photo as an RGB Pillow image (grey, palette, alpha converted); PhotoError if unreadable."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(source) as image:
            if image.width * image.height > MAX_PHOTO_PIXELS:
                raise PhotoError(
                    f"{source}: {image.width}x{image.height} is over {MAX_PHOTO_PIXELS:,} pixels"
                )
            return image.convert("RGB")  # decodes fully: a truncated file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, PhotoError):
            raise
        raise PhotoError(f"{source}: not a readable image ({exc})") from None


def resize_shorter_side(source: str | Path | Image.Image, side: int) -> np.ndarray:
    """The photo as RGB uint8 HxWx3 with its shorter side ``side`` (bilinear; grey becomes RGB)."""
    image = open_rgb(source)
    scale = side / min(image.size)
    size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.BILINEAR), dtype=np.uint8)


def crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A ``height`` x ``width`` crop: random place and left-right flip with ``rng``, else the centre."""
    top_range, left_range = image.shape[0] - height, image.shape[1] - width
    if top_range < 0 or left_range < 0:
        raise PhotoError(
            f"a {image.shape[0]}x{image.shape[1]} image is smaller than the {height}x{width} crop"
        )
    if rng is None:
        top, left = top_range // 2, left_range // 2
    else:
        top, left = int(rng.integers(0, top_range + 1)), int(rng.integers(0, left_range + 1))
    patch = image[top : top + height, left : left + width]
    return patch[:, ::-1] if rng is not None and rng.random() < 0.5 else patch


def to_input(images: Sequence[np.ndarray], transform: PhotoTransform) -> np.ndarray:
    """NCHW float32 from ``height`` x ``width`` RGB uint8 crops: x * scale, minus mean, over std."""
    batch = np.stack(images).astype(np.float32) * np.float32(transform.scale)
    batch = (batch - np.array(transform.mean, np.float32)) / np.array(transform.std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def stretch(source: str | Path | Image.Image, height: int, width: int) -> np.ndarray:
    """The whole photo resized to ``height`` x ``width`` (bilinear, RGB uint8): what a detector sees, so a
    box in normalised coordinates stays where it was whatever the photo's aspect ratio."""
    return np.asarray(open_rgb(source).resize((width, height), Image.BILINEAR), dtype=np.uint8)


def photo_pixels(source: str | Path | Image.Image | np.ndarray, transform: PhotoTransform) -> np.ndarray:
    """One photo (a file, a Pillow image or an RGB uint8 array) resized and cropped (or stretched) as the
    transform says: RGB uint8 ``height`` x ``width`` x 3, before normalising."""
    if isinstance(source, np.ndarray):
        source = Image.fromarray(np.asarray(source, dtype=np.uint8))
    if transform.crop == STRETCH:
        return stretch(source, transform.height, transform.width)
    resized = resize_shorter_side(source, transform.resize_shorter_side)
    return crop(resized, transform.height, transform.width)


def prepare(source: str | Path | Image.Image | np.ndarray, transform: PhotoTransform) -> np.ndarray:
    """One photo (a file, a Pillow image or an RGB uint8 array) as the network's [1, 3, H, W] input."""
    return to_input([photo_pixels(source, transform)], transform)


def pixel_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """An RGB uint8 H x W x 3 photo as [1, H/block, W/block, 3 * block²] uint8: each block x block patch's
    pixels side by side, row by row, RGB within (the input of processing/pixel_input.py's models)."""
    height, width, _ = image.shape
    if height % block or width % block:
        raise PhotoError(f"a {height}x{width} photo does not split into {block}x{block} blocks")
    rows, columns = height // block, width // block
    blocks = (
        np.asarray(image, np.uint8).reshape(1, rows, block, columns, block, 3).transpose(0, 1, 3, 2, 4, 5)
    )
    return np.ascontiguousarray(blocks).reshape(1, rows, columns, 3 * block * block)


def pixel_input_spec(transform: PhotoTransform, block: int) -> dict[str, Any]:
    """An artifact's ``input`` when it takes ``pixel_blocks`` of the transformed photo, not ``to_input``."""
    shape = [1, transform.height // block, transform.width // block, 3 * block * block]
    return {"name": PIXELS_NAME, "dtype": "uint8", "layout": "NHWC", "block": block, "shape": shape}


def check_input_spec(spec: Mapping[str, Any], transform: PhotoTransform) -> str | None:
    """What is wrong with an artifact's ``input`` for this transform (None: the car can feed it): float32
    of the transform's shape, or ``pixel_input_spec``'s uint8 blocks."""
    expected = transform.as_dict()["shape"]
    if spec.get("dtype", "float32") == "float32":
        shape = spec.get("shape", expected)
        return (
            None if shape == expected else f"takes float32 {shape}, but the input_transform gives {expected}"
        )
    block = spec.get("block")
    if spec.get("dtype") != "uint8" or not isinstance(block, int) or block < 1:
        return f"takes {spec.get('dtype')} input, and the car feeds float32 or uint8 pixel blocks"
    if transform.height % block or transform.width % block or spec != pixel_input_spec(transform, block):
        photo = f"{transform.height}x{transform.width}"
        return f"takes {spec}, which is not {block}x{block} pixel blocks of a {photo} photo"
    return None


def prepare_for(
    source: str | Path | Image.Image | np.ndarray, transform: PhotoTransform, spec: Mapping[str, Any] | None
) -> np.ndarray:
    """One photo as the artifact whose ``input`` is ``spec`` takes it: uint8 pixel blocks or ``prepare``."""
    if spec and spec.get("dtype") == "uint8":
        return pixel_blocks(photo_pixels(source, transform), int(spec["block"]))
    return prepare(source, transform)
