"""The photo transform (edge/photos.py) and training/classifier.py's input side: image lists, batches.

The training itself runs in the MXNet environment: tests/model/test_classifier_training.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.photos import (
    PhotoError,
    PhotoTransform,
    check_input_spec,
    crop,
    photo_pixels,
    pixel_blocks,
    pixel_input_spec,
    prepare,
    prepare_for,
    resize_shorter_side,
    to_input,
)
from training.classifier import ImageList, UsageError, batches, read_image_list

SPEC = PhotoTransform(32, 32, 36, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255)


def channel_with(tmp_path: Path, lines: str, images: dict[str, Image.Image] | None = None) -> Path:
    channel = tmp_path / "train"
    (channel / "images").mkdir(parents=True)
    for name, image in (images or {}).items():
        image.save(channel / name)
    (channel / "images.lst").write_text(lines)
    return channel


def test_an_image_list_gives_class_ids_and_paths_inside_the_channel(tmp_path: Path) -> None:
    images = {"images/a.jpg": Image.new("RGB", (50, 40)), "images/b.png": Image.new("L", (30, 90))}
    channel = channel_with(tmp_path, "0\t2\timages/a.jpg\n\n1\t0.0\timages/b.png\n", images)
    assert read_image_list(channel) == [
        (2, (channel / "images/a.jpg").resolve()),
        (0, (channel / "images/b.png").resolve()),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0\t1\t../outside.jpg\n", "is not a file inside"),
        ("0\t1\timages/missing.jpg\n", "is not a file inside"),
        ("0\t1.5\timages/a.jpg\n", "integer >= 0"),
        ("0\t-1\timages/a.jpg\n", "integer >= 0"),
        ("0\tcat\timages/a.jpg\n", "expected index<TAB>class id<TAB>path"),
        ("images/a.jpg\n", "expected index<TAB>class id<TAB>path"),
        ("", "no images"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "outside.jpg").write_bytes(b"x")
    channel = channel_with(tmp_path, line, {"images/a.jpg": Image.new("RGB", (8, 8))})
    with pytest.raises(UsageError, match=message):
        read_image_list(channel)


def test_a_channel_needs_exactly_one_list(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_image_list(tmp_path / "nowhere")
    channel = channel_with(tmp_path, "")
    (channel / "second.lst").write_text("")
    with pytest.raises(UsageError, match=r"expected one image list \(\*\.lst\), found 2"):
        read_image_list(channel)


def test_any_photo_becomes_rgb_with_the_shorter_side_given(tmp_path: Path) -> None:
    Image.new("L", (300, 100), 200).save(tmp_path / "wide.png")
    Image.new("RGB", (45, 90), (10, 20, 30)).save(tmp_path / "tall.png")
    wide, tall = (
        resize_shorter_side(tmp_path / "wide.png", 36),
        resize_shorter_side(tmp_path / "tall.png", 36),
    )
    assert wide.shape == (36, 108, 3) and wide.dtype == np.uint8 and (wide == 200).all()
    assert tall.shape == (72, 36, 3) and (tall == [10, 20, 30]).all()


def test_evaluation_crops_the_centre_and_training_varies_place_and_flip() -> None:
    image = np.arange(36 * 40 * 3, dtype=np.uint8).reshape(36, 40, 3)
    np.testing.assert_array_equal(crop(image, 32, 32, None), image[2:34, 4:36])
    rng = np.random.default_rng(0)
    crops = {crop(image, 32, 32, rng).tobytes() for _ in range(200)}
    flips = {image[t : t + 32, c : c + 32].tobytes() for t in range(5) for c in range(9)}
    flips |= {image[t : t + 32, c : c + 32][:, ::-1].tobytes() for t in range(5) for c in range(9)}
    assert crops <= flips and len(crops) > 40


def test_batches_are_normalised_nchw_and_training_drops_the_partial_one() -> None:
    images = [np.full((36, 36, 3), 255, np.uint8)] * 5
    data = ImageList(images, np.array([0, 1, 2, 0, 1]))
    batch = to_input([images[0][:32, :32]], SPEC)
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 0, 0], (1 - np.array(SPEC.mean)) / np.array(SPEC.std), rtol=1e-6)
    assert [len(y) for _, y in batches(data, SPEC, 2, None)] == [2, 2, 1]
    assert [len(y) for _, y in batches(data, SPEC, 2, np.random.default_rng(1))] == [2, 2]
    assert [len(y) for _, y in batches(data, SPEC, 8, np.random.default_rng(1))] == [5]  # fewer than a batch


def test_the_transform_round_trips_through_its_dict_and_refuses_what_this_code_cannot_do() -> None:
    assert PhotoTransform.from_dict(SPEC.as_dict()) == SPEC
    with pytest.raises(PhotoError, match="unknown input transform fields: mystery"):
        PhotoTransform.from_dict({**SPEC.as_dict(), "mystery": 1})
    with pytest.raises(PhotoError, match="NCHW RGB"):
        PhotoTransform.from_dict({**SPEC.as_dict(), "crop": "random"})
    with pytest.raises(PhotoError, match="NCHW RGB"):
        PhotoTransform.from_dict({**SPEC.as_dict(), "layout": "NHWC"})
    with pytest.raises(PhotoError, match="does not fit"):
        PhotoTransform(64, 64, 60, (0, 0, 0), (1, 1, 1), 1.0)


def test_prepare_gives_the_same_input_from_a_file_an_image_or_an_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    from_file = prepare(tmp_path / "p.png", SPEC)
    assert from_file.shape == (1, 3, 32, 32) and from_file.dtype == np.float32
    np.testing.assert_array_equal(from_file, prepare(Image.fromarray(pixels), SPEC))
    np.testing.assert_array_equal(from_file, prepare(pixels, SPEC))


def test_a_truncated_photo_is_a_photo_error_not_a_crash(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "torn.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError, match="not a readable image"):
        prepare(tmp_path / "torn.jpg", SPEC)


def test_a_stretched_photo_keeps_all_of_itself_at_the_networks_size(tmp_path: Path) -> None:
    pixels = np.zeros((40, 120, 3), np.uint8)
    pixels[:, :60] = 200  # left half bright: after stretching, still the left half
    transform = PhotoTransform(32, 32, 32, (0, 0, 0), (1, 1, 1), 1.0, crop="stretch")
    assert PhotoTransform.from_dict(transform.as_dict()) == transform
    prepared = prepare(pixels, transform)
    assert prepared.shape == (1, 3, 32, 32)
    assert prepared[0, 0, :, :15].min() > 150 and prepared[0, 0, :, 17:].max() < 50


def test_pixel_blocks_lay_each_patch_side_by_side_row_by_row() -> None:
    photo = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    blocks = pixel_blocks(photo, 2)
    assert blocks.shape == (1, 2, 3, 12) and blocks.dtype == np.uint8
    # block (1, 2): rows 2-3, columns 4-5; channels (row, column, RGB)
    expected = np.concatenate([photo[2, 4], photo[2, 5], photo[3, 4], photo[3, 5]])
    np.testing.assert_array_equal(blocks[0, 1, 2], expected)
    np.testing.assert_array_equal(pixel_blocks(photo, 1)[0], photo)
    with pytest.raises(PhotoError, match="does not split into 4x4 blocks"):
        pixel_blocks(photo, 4)


def test_an_artifact_takes_the_float_input_or_pixel_blocks_of_the_transformed_photo(tmp_path: Path) -> None:
    spec = pixel_input_spec(SPEC, 2)
    assert spec == {
        "name": "pixels",
        "dtype": "uint8",
        "layout": "NHWC",
        "block": 2,
        "shape": [1, 16, 16, 12],
    }
    assert check_input_spec(spec, SPEC) is None
    assert check_input_spec({}, SPEC) is None and check_input_spec({"shape": [1, 3, 32, 32]}, SPEC) is None
    assert "float32 [1, 3, 64, 64]" in check_input_spec({"shape": [1, 3, 64, 64]}, SPEC)
    assert "int8 input" in check_input_spec({"dtype": "int8"}, SPEC)
    assert "not 2x2 pixel blocks" in check_input_spec({**spec, "shape": [1, 32, 32, 12]}, SPEC)
    assert "not 3x3 pixel blocks" in check_input_spec(pixel_input_spec(SPEC, 3), SPEC)  # 32 is not 3s
    pixels = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    fed = prepare_for(pixels, SPEC, spec)
    np.testing.assert_array_equal(fed, pixel_blocks(photo_pixels(pixels, SPEC), 2))
    # the same photo as the float artifact's input: (pixel * scale - mean) / std, back in NCHW
    restored = fed.reshape(16, 16, 2, 2, 3).transpose(0, 2, 1, 3, 4).reshape(1, 32, 32, 3)
    np.testing.assert_array_equal(to_input(list(restored), SPEC), prepare_for(pixels, SPEC, None))
