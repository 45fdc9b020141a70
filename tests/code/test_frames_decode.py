"""edge.frames.decode_image: the colour-JPEG fast path gives Pillow's pixels; all else still decodes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edge.frames import FrameError, decode_image, jpeg_colour_size


def pillow_rgb(data: bytes) -> np.ndarray:
    """The reference: Pillow's JPEG plugin (Image.open), converted to RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode(array: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 200),
    height=st.integers(1, 150),
    quality=st.integers(5, 100),
    subsampling=st.sampled_from([0, 1, 2]),
    progressive=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_colour_jpegs_take_the_fast_path_and_match_pillow(
    width, height, quality, subsampling, progressive, seed
):
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = encode(array, quality=quality, subsampling=subsampling, progressive=progressive)
    assert jpeg_colour_size(data) == (width, height)
    np.testing.assert_array_equal(decode_image(data), pillow_rgb(data))


SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def test_donkeycar_sample_frames_match_pillow():
    frames = sorted(SAMPLES.rglob("*.jpg"))[:40]
    assert frames, "the shared samples hold camera JPEGs"
    for path in frames:
        data = path.read_bytes()
        assert jpeg_colour_size(data) == (160, 120)
        np.testing.assert_array_equal(decode_image(data), pillow_rgb(data))


def cmyk_jpeg() -> bytes:
    array = np.random.default_rng(1).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


OTHER_IMAGES = {
    "grey JPEG": lambda rng: encode(rng.integers(0, 256, (12, 16), dtype=np.uint8)),
    "CMYK JPEG": lambda rng: cmyk_jpeg(),
    "RGB PNG": lambda rng: encode(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "PNG"),
    "RGBA PNG": lambda rng: encode(rng.integers(0, 256, (12, 16, 4), dtype=np.uint8), "PNG"),
    "grey PNG": lambda rng: encode(rng.integers(0, 256, (12, 16), dtype=np.uint8), "PNG"),
}


@pytest.mark.parametrize("kind", sorted(OTHER_IMAGES))
def test_other_images_go_through_pillow_and_come_out_rgb(kind):
    data = OTHER_IMAGES[kind](np.random.default_rng(0))
    assert jpeg_colour_size(data) is None
    decoded = decode_image(data)
    assert decoded.shape == (12, 16, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pillow_rgb(data))


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.9, 0.999])
def test_truncated_jpegs_are_refused(keep):
    data = encode(np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8), quality=90)
    with pytest.raises(FrameError, match="cannot decode image"):
        decode_image(data[: int(len(data) * keep)])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_after_a_jpeg_start_are_refused_with_frame_error_or_decoded(tail):
    try:
        decoded = decode_image(b"\xff\xd8" + tail)
    except FrameError:
        return  # the one error callers handle; anything else (or a hang) fails the test
    assert decoded.ndim == 3 and decoded.shape[2] == 3 and decoded.dtype == np.uint8


def test_header_walk_handles_fill_bytes_and_refuses_12_bit_and_lossless():
    data = encode(np.zeros((8, 8, 3), dtype=np.uint8))
    padded = data[:2] + b"\xff\xff\xff" + data[2:]  # fill bytes before a marker are legal
    assert jpeg_colour_size(padded) == (8, 8)
    sof = data.index(b"\xff\xc0")
    twelve_bit = data[: sof + 4] + b"\x0c" + data[sof + 5 :]
    assert jpeg_colour_size(twelve_bit) is None
    lossless = data[:sof] + b"\xff\xc3" + data[sof + 2 :]
    assert jpeg_colour_size(lossless) is None
    assert jpeg_colour_size(b"\x89PNG\r\n\x1a\n") is None
