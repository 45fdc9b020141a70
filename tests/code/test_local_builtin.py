"""The built-in algorithms' local stand-ins: an augmented-manifest Pipe channel becomes the files the
stand-in reads, and the runner picks the stand-in by the image's repository and registry account."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.local import builtin
from pipelines.local.runners import built_in_stand_in
from pipelines.local.s3 import LocalS3Client

BUCKET = "robocar-data-123456789012"


def put(s3: LocalS3Client, key: str, body: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def s3(tmp_path: Path) -> LocalS3Client:
    client = LocalS3Client(tmp_path / "ws")
    client.create_bucket(Bucket=BUCKET)
    return client


def line(ref: str, label: object, name: str | None = "cat") -> str:
    record: dict[str, object] = {"source-ref": ref, "class": label}
    if name is not None:
        record["class-metadata"] = {"class-name": name}
    return json.dumps(record)


def test_a_manifest_becomes_photos_an_image_list_and_class_names(s3: LocalS3Client, tmp_path: Path) -> None:
    refs = [put(s3, f"p/train/images/{i}.jpg", bytes([i]) * 10) for i in range(3)]
    manifest = put(
        s3, "p/train/train.manifest",
        "\n".join([line(refs[0], 1, "dog"), "", line(refs[1], 0, "cat"), line(refs[2], 1, None)]).encode(),
    )  # fmt: skip
    channel = tmp_path / "train"
    assert builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "class"], channel) == 3
    assert (channel / "images.lst").read_text().splitlines() == [
        "0\t1\timages/000000.jpg", "1\t0\timages/000001.jpg", "2\t1\timages/000002.jpg",
    ]  # fmt: skip
    assert (channel / "images" / "000001.jpg").read_bytes() == bytes([1]) * 10
    assert json.loads((channel / "classes.json").read_text()) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b'["a list"]', "not a JSON object"),
        (line("s3://robocar-data-123456789012/p/x.jpg", 0).encode(), "does not exist"),
        (line("s3://robocar-data-123456789012/p/a.jpg", -1).encode(), "a class id >= 0"),
        (line("s3://robocar-data-123456789012/p/a.jpg", "0").encode(), "a class id >= 0"),
        (b"\n\n", "no records"),
    ],
)
def test_what_the_algorithm_would_refuse_fails_the_channel_naming_the_line(
    s3: LocalS3Client, tmp_path: Path, body: bytes, message: str
) -> None:
    put(s3, "p/a.jpg", b"photo")
    manifest = put(s3, "p/train.manifest", body)
    with pytest.raises(builtin.ChannelError, match=message):
        builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "class"], tmp_path / "c")


def test_attribute_names_must_be_the_photo_and_its_label(s3: LocalS3Client, tmp_path: Path) -> None:
    with pytest.raises(builtin.ChannelError, match="expected the photo's and the label's"):
        builtin.materialise_augmented_manifest(s3, "s3://b/m", ["source-ref"], tmp_path / "c")


def test_the_stand_in_is_chosen_by_repository_and_the_regions_registry_account() -> None:
    assert built_in_stand_in("811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1") == (
        "training/classifier.py"
    )
    assert (
        built_in_stand_in("763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38")
        is None
    )
    from pipelines.local.environments import EnvironmentUnavailable

    with pytest.raises(EnvironmentUnavailable, match="registry account"):  # someone's own repository
        built_in_stand_in("123456789012.dkr.ecr.us-east-1.amazonaws.com/image-classification:1")


def boxed_line(ref: str, annotations: list[dict[str, object]], size: tuple[int, int] = (200, 100)) -> str:
    """A Ground Truth bounding-box job's output line (attribute ``boxes``)."""
    return json.dumps({
        "source-ref": ref,
        "boxes": {
            "image_size": [{"width": size[0], "height": size[1], "depth": 3}], "annotations": annotations,
        },
        "boxes-metadata": {
            "objects": [{"confidence": 0.9} for _ in annotations], "class-map": {"0": "cone", "1": "car"},
            "type": "groundtruth/object-detection", "human-annotated": "yes",
            "creation-date": "2026-12-01T10:00:00.000000", "job-name": "labeling-job/cones",
        },
    })  # fmt: skip


def test_a_bounding_box_manifest_becomes_photos_normalised_annotations_and_the_class_map(
    s3: LocalS3Client, tmp_path: Path
) -> None:
    refs = [put(s3, f"p/train/images/{i}.jpg", bytes([i]) * 10) for i in range(2)]
    cone = {"class_id": 0, "left": 20, "top": 10, "width": 100, "height": 50}
    car = {"class_id": 1, "left": 150, "top": 50, "width": 50, "height": 50}  # touches the corner
    manifest = put(
        s3,
        "p/train/train.manifest",
        "\n".join([boxed_line(refs[0], [cone, car]), boxed_line(refs[1], [])]).encode(),
    )
    channel = tmp_path / "train"
    assert builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "boxes"], channel) == 2
    lines = [json.loads(x) for x in (channel / "annotations.jsonl").read_text().splitlines()]
    assert lines == [
        {"image": "images/000000.jpg", "boxes": [[0, 0.1, 0.1, 0.6, 0.6], [1, 0.75, 0.5, 1.0, 1.0]]},
        {"image": "images/000001.jpg", "boxes": []},
    ]
    assert (channel / "images" / "000001.jpg").read_bytes() == bytes([1]) * 10
    assert json.loads((channel / "classes.json").read_text()) == ["cone", "car"]
    assert not (channel / "images.lst").exists()


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"class_id": 0, "left": 150, "top": 10, "width": 60, "height": 10}, "box outside image"),
        ({"class_id": 0, "left": 0, "top": 95, "width": 10, "height": 10}, "box outside image"),
        ({"class_id": 0, "left": -5, "top": 0, "width": 10, "height": 10}, "box outside image"),
        ({"class_id": 0, "left": 0, "top": 0, "width": 0, "height": 10}, "empty box"),
        ({"class_id": 7, "left": 0, "top": 0, "width": 10, "height": 10}, "unknown class"),
        ({"class_id": "0", "left": 0, "top": 0, "width": 10, "height": 10}, "schema"),
        ({"class_id": 0, "left": "0", "top": 0, "width": 10, "height": 10}, "schema"),
    ],
)
def test_a_box_the_algorithm_would_refuse_fails_the_channel_naming_the_line(
    s3: LocalS3Client, tmp_path: Path, annotation: dict[str, object], message: str
) -> None:
    ref = put(s3, "p/a.jpg", b"photo")
    good = {"class_id": 1, "left": 0, "top": 0, "width": 10, "height": 10}
    manifest = put(
        s3, "p/train.manifest", f"{boxed_line(ref, [good])}\n{boxed_line(ref, [good, annotation])}".encode()
    )
    with pytest.raises(builtin.ChannelError, match=rf"^{message}: .*train\.manifest:2: annotation 1"):
        builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "boxes"], tmp_path / "c")


def test_a_manifest_mixing_class_ids_and_boxes_fails_the_channel(s3: LocalS3Client, tmp_path: Path) -> None:
    ref = put(s3, "p/a.jpg", b"photo")
    mixed = json.dumps({"source-ref": ref, "boxes": 0})
    manifest = put(s3, "p/train.manifest", f"{boxed_line(ref, [])}\n{mixed}".encode())
    with pytest.raises(builtin.ChannelError, match="mixes class ids and bounding boxes"):
        builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "boxes"], tmp_path / "c")


def test_the_object_detection_algorithm_is_stood_in_for_by_the_detector() -> None:
    assert built_in_stand_in("811284229777.dkr.ecr.us-east-1.amazonaws.com/object-detection:1") == (
        "training/detector.py"
    )


def test_a_box_within_a_pixel_of_the_edge_is_clipped_as_preprocess_clips_it(
    s3: LocalS3Client, tmp_path: Path
) -> None:
    ref = put(s3, "p/a.jpg", b"photo")
    rounded_out = {"class_id": 0, "left": 100, "top": -0.5, "width": 101, "height": 50}
    manifest = put(s3, "p/train.manifest", boxed_line(ref, [rounded_out]).encode())
    builtin.materialise_augmented_manifest(s3, manifest, ["source-ref", "boxes"], tmp_path / "c")
    (record,) = map(json.loads, (tmp_path / "c" / "annotations.jsonl").read_text().splitlines())
    assert record["boxes"] == [[0, 0.5, 0.0, 1.0, 0.495]]
