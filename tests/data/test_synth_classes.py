"""Synthetic labelled photos: a Ground Truth image-classification output manifest the pipeline reads.

Key layout: "Labeling job output data", https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from edge.photos import CLASSES_FILE
from pipelines.cli import main as robocar
from pipelines.synth_classes import CLASS_NAMES, MANIFEST_NAME, write_classes, write_image_list
from processing.ground_truth import class_list, read_ground_truth
from processing.records import RecordValidator
from processing.tubs import Source, discover_sources

METADATA_KEYS = {"class-name", "confidence", "type", "job-name", "human-annotated", "creation-date"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("classes") / "labels"
    write_classes(out, classes=4, images=60, seed=5)
    return out


def manifest_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def test_every_line_has_the_keys_the_service_writes(synth: Path) -> None:
    records = manifest_records(synth)
    assert len(records) == 60
    for record in records:
        assert set(record) == {"source-ref", "category", "category-metadata"}
        assert record["source-ref"].startswith("s3://") and record["source-ref"].endswith(".jpg")
        metadata = record["category-metadata"]
        assert set(metadata) == METADATA_KEYS
        assert metadata["class-name"] == CLASS_NAMES[record["category"]]
        assert metadata["type"] == "groundtruth/image-classification"
        assert metadata["job-name"] == "labeling-job/robocar-synth-classes"
        assert metadata["human-annotated"] in ("yes", "no")
        assert 0.0 <= metadata["confidence"] <= 1.0
        assert datetime.fromisoformat(metadata["creation-date"]).microsecond == 0  # ISO, no zone
        assert "T" in metadata["creation-date"] and "+" not in metadata["creation-date"]
    humans = [r["category-metadata"]["human-annotated"] for r in records]
    assert 1 <= humans.count("no") <= 15  # automated labelling's lines too
    per_class = [sum(r["category"] == k for r in records) for k in range(4)]
    assert per_class == [15, 15, 15, 15]


def test_the_pipelines_ground_truth_reader_accepts_every_record(synth: Path) -> None:
    (source,) = discover_sources(synth)
    assert source.format == "ground-truth"
    classes: dict[int, str] = {}
    report, candidates = read_ground_truth(source, RecordValidator("ground_truth_record"), synth, classes)
    assert (report.read, report.rejected, len(candidates)) == (60, 0, 60)
    assert class_list(classes) == list(CLASS_NAMES[:4])
    for candidate, record in zip(candidates, manifest_records(synth), strict=True):
        assert Path(candidate.image_path).name == record["source-ref"].rsplit("/", 1)[1]
        assert candidate.label == record["category"]


def test_photos_come_in_many_sizes_aspects_and_some_in_grey(synth: Path) -> None:
    images = [Image.open(path) for path in sorted((synth / "images").glob("*.jpg"))]
    sizes = {image.size for image in images}
    assert len(sizes) > 40 and (160, 120) not in sizes
    assert any(w > 1.3 * h for w, h in sizes) and any(h > 1.3 * w for w, h in sizes)
    modes = [image.mode for image in images]
    assert 3 <= modes.count("L") <= 25 and modes.count("RGB") == len(modes) - modes.count("L")


def test_same_seed_same_bytes_other_seed_other_photos(tmp_path: Path, synth: Path) -> None:
    write_classes(tmp_path / "again", classes=4, images=60, seed=5)
    write_classes(tmp_path / "other", classes=4, images=60, seed=6)
    assert (tmp_path / "again" / MANIFEST_NAME).read_bytes() == (synth / MANIFEST_NAME).read_bytes()
    for name in ("000000.jpg", "000059.jpg"):
        assert (tmp_path / "again/images" / name).read_bytes() == (synth / "images" / name).read_bytes()
    assert (tmp_path / "other" / MANIFEST_NAME).read_bytes() != (synth / MANIFEST_NAME).read_bytes()


def test_image_list_is_the_builtin_algorithms_lst(tmp_path: Path, synth: Path) -> None:
    listed = synth / "all.lst"
    try:
        assert write_image_list(synth / MANIFEST_NAME, listed) == list(CLASS_NAMES[:4])
        rows = [line.split("\t") for line in listed.read_text().splitlines()]
        assert json.loads((synth / CLASSES_FILE).read_text()) == list(CLASS_NAMES[:4])
    finally:
        listed.unlink(missing_ok=True)
        (synth / CLASSES_FILE).unlink(missing_ok=True)
    records = manifest_records(synth)
    assert [int(r[0]) for r in rows] == list(range(60))
    assert [int(r[1]) for r in rows] == [r["category"] for r in records]
    assert all((synth / r[2]).is_file() and not Path(r[2]).is_absolute() for r in rows)


def test_image_list_refuses_a_manifest_with_a_rejected_record(tmp_path: Path) -> None:
    write_classes(tmp_path / "d", classes=2, images=4, seed=1)
    manifest = tmp_path / "d" / MANIFEST_NAME
    manifest.write_text(manifest.read_text() + '{"source-ref": "s3://b/missing.jpg", "c": 0}\n')
    with pytest.raises(ValueError, match="1 records rejected"):
        write_image_list(manifest, tmp_path / "d" / "x.lst")


@pytest.mark.parametrize(
    ("classes", "images", "attribute", "message"),
    [(1, 10, "c", "classes must be"), (9, 10, "c", "classes must be"), (3, 2, "c", "at least one image"),
     (2, 4, "c-ref", "may not end in -ref"), (2, 4, "a-metadata", "-metadata")],
)  # fmt: skip
def test_bad_arguments_are_refused(
    tmp_path: Path, classes: int, images: int, attribute: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_classes(tmp_path / "x", classes, images, 0, attribute=attribute)


def test_command_writes_the_labelled_set_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "c")
    argv = ["data", "synth", "--classifier", "--out", out, "--classes", "3", "--images", "9", "--seed", "4"]
    assert robocar(argv) == 0
    assert "wrote 9 labelled photos (3 circle, 3 square, 3 triangle;" in capsys.readouterr().out
    assert len(manifest_records(Path(out))) == 9 and len(list(Path(out, "images").iterdir())) == 9
    assert robocar(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert robocar([*argv[:-4], "--classes", "12", "--images", "20", "--out", str(tmp_path / "d")]) == 2
    assert "classes must be 2..8" in capsys.readouterr().err


def test_a_reader_of_sources_finds_the_manifest_not_the_images(tmp_path: Path) -> None:
    write_classes(tmp_path / "s", classes=2, images=4, seed=0)
    assert discover_sources(tmp_path / "s") == [
        Source(tmp_path / "s" / MANIFEST_NAME, "ground-truth", MANIFEST_NAME)
    ]


@pytest.mark.parametrize("kind", ["--classifier", "--detection"])
def test_an_unlabelled_set_is_the_same_photos_with_the_truth_kept_apart(tmp_path: Path, kind: str) -> None:
    """``--unlabelled``: the photos ``robocar label predict`` reads and nothing else in OUT but the truth
    folder, whose manifest is the labelled set's own (same seed: same photos, same labels)."""
    common = ["data", "synth", kind, "--classes", "3", "--images", "9", "--seed", "4"]
    assert robocar([*common, "--out", str(tmp_path / "labelled")]) == 0
    assert robocar([*common, "--unlabelled", "--out", str(tmp_path / "unlabelled")]) == 0
    labelled, unlabelled = tmp_path / "labelled", tmp_path / "unlabelled"
    assert sorted(p.name for p in unlabelled.iterdir()) == ["images", "truth"]
    assert not list(unlabelled.glob("*.manifest")) and not list((unlabelled / "images").glob("*.manifest"))
    assert (unlabelled / "truth" / MANIFEST_NAME).read_bytes() == (labelled / MANIFEST_NAME).read_bytes()
    photos = sorted(p.name for p in (labelled / "images").iterdir())
    assert photos == sorted(p.name for p in (unlabelled / "images").iterdir()) and len(photos) == 9
    assert all(
        (labelled / "images" / n).read_bytes() == (unlabelled / "images" / n).read_bytes() for n in photos
    )
    assert robocar(["data", "synth", "--unlabelled", "--out", str(tmp_path / "tub")]) == 2
