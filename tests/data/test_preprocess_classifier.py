"""The classifier recipe's Preprocess: Ground Truth manifests + photos -> image lists per split, every
record accounted for."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from pipelines.synth_classes import MANIFEST_NAME, ground_truth_line, write_classes
from processing.preprocess_classifier import main
from training.classifier import read_image_list

SPLITS = ("train", "validation", "test")
CREATED = datetime(2026, 1, 2)


def gt_line(ref: str, label: int, name: str, *, human: bool = True, attribute: str = "category") -> str:
    return ground_truth_line(
        ref, label, name, attribute=attribute, job_name="extra", created=CREATED, confidence=0.9, human=human
    )


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic photos of 3 classes and their manifest (made once, copied by each test)."""
    root = tmp_path_factory.mktemp("synth") / "labels"
    write_classes(root, classes=3, images=40, seed=3)
    return root


@pytest.fixture
def dataset(tmp_path: Path, synth_set: Path) -> Path:
    """``IN`` holding the synthetic set under ``labels/``."""
    shutil.copytree(synth_set, tmp_path / "in" / "labels")
    return tmp_path / "in"


def records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def run(input_dir: Path, output: Path, *extra: str) -> int:
    return main(["--input", str(input_dir), "--output", str(output), *extra])


def report_of(output: Path) -> dict:
    return json.loads((output / "report" / "data-report.json").read_text())


def listed(output: Path, split: str) -> list[tuple[int, Path]]:
    return read_image_list(output / split)


def output_digests(output: Path) -> dict[str, set[str]]:
    """Per split, the SHA-256 of every photo written (re-encoding is deterministic)."""
    return {
        split: {hashlib.sha256(path.read_bytes()).hexdigest() for _, path in listed(output, split)}
        for split in SPLITS
    }


def test_every_record_is_accounted_for_and_each_bad_one_named(tmp_path: Path, dataset: Path, capsys) -> None:
    extra = dataset / "later"  # read after labels/: its copy is the duplicate
    (extra / "photos").mkdir(parents=True)
    good = sorted((dataset / "labels" / "images").glob("*.jpg"))
    (extra / "photos" / "new.jpg").write_bytes(_photo_bytes((90, 40), "RGB", colour=(10, 200, 30)))
    (extra / "photos" / "cut.jpg").write_bytes(good[0].read_bytes()[:300])  # a truncated JPEG
    (extra / "photos" / "copy.jpg").write_bytes(good[1].read_bytes())  # the same bytes as line 1's photo
    names = ["circle", "square", "triangle"]
    first = records(dataset / "labels" / MANIFEST_NAME)[1]["category"]
    other = (first + 1) % 3
    lines = [
        gt_line("photos/new.jpg", 0, "circle"),  # 0: accepted
        gt_line("photos/missing.jpg", 1, "square"),  # 1: image missing
        gt_line("photos/cut.jpg", 1, "square"),  # 2: image unreadable
        gt_line("photos/new.jpg", 1, "star"),  # 3: label conflict (id 1 is square)
        '{"source-ref": "photos/new.jpg", "category": 0\n',  # 4: malformed record
        gt_line("photos/copy.jpg", other, names[other]),  # 5: duplicate photo (labelled otherwise)
    ]
    (extra / "more.manifest").write_text("".join(lines))
    out = tmp_path / "out"

    assert run(dataset, out) == 0

    report = report_of(out)
    assert (report["read"], report["accepted"], report["rejected"], report["duplicates"]) == (46, 41, 5, 1)
    assert report["read"] == report["accepted"] + report["rejected"]
    assert {(r["manifest"], r["index"]): r["reason"].split(":")[0] for r in report["rejections"]} == {
        ("later/more.manifest", 1): "image missing",
        ("later/more.manifest", 2): "image unreadable",
        ("later/more.manifest", 3): "label conflict",
        ("later/more.manifest", 4): "malformed record",
        ("later/more.manifest", 5): "duplicate photo",
    }
    assert report["rejected_by_reason"] == dict.fromkeys(
        ["duplicate photo", "image missing", "image unreadable", "label conflict", "malformed record"], 1
    )
    assert [(m["manifest"], m["read"], m["accepted"]) for m in report["manifests"]] == [
        ("labels/output.manifest", 40, 40),
        ("later/more.manifest", 6, 1),
    ]
    assert sum(report["splits"][s]["images"] for s in SPLITS) == 41
    assert sum(len(listed(out, s)) for s in SPLITS) == 41
    duplicate = next(r["reason"] for r in report["rejections"] if r["index"] == 5)
    assert duplicate == (
        f"duplicate photo: the same bytes as labels/output.manifest record 1 (class id {first} there, "
        f"{other} here)"
    )
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "total: read 46, accepted 41, rejected 5 [duplicate photo x1, image missing x1,"
    )


def _photo_bytes(size: tuple[int, int], mode: str, colour, fmt: str = "JPEG") -> bytes:  # noqa: ANN001
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 3))  # not flat: JPEG keeps some detail
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("image_size", [64, 32])
def test_photos_of_any_size_aspect_and_colour_are_resized_never_rejected(
    tmp_path: Path, image_size: int
) -> None:
    photos = {  # name: (size, mode, format)
        "tiny.jpg": ((5, 3), "RGB", "JPEG"),
        "tall.jpg": ((6, 400), "L", "JPEG"),  # grey, aspect 1:67
        "wide.png": ((500, 60), "P", "PNG"),  # palette
        "big.jpg": ((1200, 900), "RGB", "JPEG"),
        "alpha.png": ((80, 81), "RGBA", "PNG"),
        "grey.jpg": ((73, 200), "L", "JPEG"),
    }
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for number, (name, (size, mode, fmt)) in enumerate(photos.items()):
        colour = (number * 40, 255 - number * 30, 90)
        (folder / name).write_bytes(_photo_bytes(size, mode, colour, fmt))
        lines.append(gt_line(name, number % 2, ["circle", "square"][number % 2]))
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"

    # few photos: the splits may fail the data (exit 1), but every photo is judged and written
    assert run(folder, out, "--image-size", str(image_size)) in (0, 1)

    report = report_of(out)
    side = round(image_size * 8 / 7)
    assert (report["accepted"], report["rejected"], report["image_size"], report["resize_side"]) == (
        6, 0, image_size, side
    )  # fmt: skip
    written = [path for split in SPLITS for path in sorted((out / split / "images").glob("*.jpg"))]
    assert len(written) == 6
    for path in written:
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.format == "JPEG"
            assert min(image.size) == side


def test_a_photo_too_long_for_a_jpeg_keeps_its_middle(tmp_path: Path, dataset: Path) -> None:
    (dataset / "sliver.png").write_bytes(_photo_bytes((20_000, 1), "L", (9, 9, 9), "PNG"))  # 1.46 M x 73
    (dataset / "odd.manifest").write_text(gt_line("sliver.png", 0, "circle"))
    out = tmp_path / "out"
    assert run(dataset, out) == 0
    assert (report_of(out)["accepted"], report_of(out)["rejected"]) == (41, 0)
    sizes = []
    for split in SPLITS:
        for _, path in listed(out, split):
            with Image.open(path) as image:
                sizes.append(image.size)
    assert (65_481, 73) in sizes  # 897 source pixels resized by 73: JPEG's limit is 65,500 a side


def test_several_manifests_are_read_and_machine_labels_counted(tmp_path: Path, synth_set: Path) -> None:
    source = tmp_path / "in"
    shutil.copytree(synth_set, source / "job-a")
    write_classes(source / "job-b" / "output", classes=3, images=30, seed=4, source_prefix="s3://other/b")
    out = tmp_path / "out"

    assert run(source, out) == 0

    report = report_of(out)
    manifests = [source / "job-a" / MANIFEST_NAME, source / "job-b" / "output" / MANIFEST_NAME]
    lines = [record for manifest in manifests for record in records(manifest)]
    machine = sum(r["category-metadata"]["human-annotated"] == "no" for r in lines)
    assert machine > 0
    assert report["labels"] == {"human": 70 - machine, "machine": machine}
    assert [m["manifest"] for m in report["manifests"]] == [
        "job-a/output.manifest",
        "job-b/output/output.manifest",
    ]
    assert (report["read"], report["accepted"]) == (70, 70)
    by_class = Counter(r["category-metadata"]["class-name"] for r in lines)
    assert {
        name: sum(report["splits"][s]["per_class"][name] for s in SPLITS) for name in by_class
    } == by_class


def test_output_is_what_the_trainer_reads_and_classes_agree(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    assert run(dataset, out, "--seed", "5") == 0
    report = report_of(out)
    names = ["circle", "square", "triangle"]
    assert report["classes"] == names and report["recipe"] == "classifier"
    for split in SPLITS:
        assert json.loads((out / split / "classes.json").read_text()) == names
        entries = listed(out, split)
        assert Counter(names[label] for label, _ in entries) == {
            name: n for name, n in report["splits"][split]["per_class"].items() if n
        }
        rows = [line.split("\t") for line in (out / split / "images.lst").read_text().splitlines()]
        assert [int(r[0]) for r in rows] == list(range(len(rows)))
        assert [r[2] for r in rows] == [f"images/{n:06d}.jpg" for n in range(len(rows))]
        assert not (out / split / f"{split}.manifest").exists()  # only with --output-uri
    assert all(report["splits"]["train"]["per_class"][name] > 0 for name in names)
    # what the built-in algorithm's Train step reads as hyperparameters
    assert report["builtin"] == {"num_classes": 3, "num_training_samples": len(listed(out, "train"))}


def test_labels_follow_their_photos(tmp_path: Path, dataset: Path) -> None:
    """Each written photo carries its manifest's class: photos of one colour per class give it away."""
    folder = tmp_path / "coloured"
    folder.mkdir()
    colours = {"red": (230, 20, 20), "green": (20, 230, 20)}
    lines = []
    for number in range(40):
        name = "red" if number % 2 else "green"
        (folder / f"{number}.jpg").write_bytes(_photo_bytes((30 + number, 40), "RGB", colours[name]))
        lines.append(gt_line(f"{number}.jpg", number % 2, ["green", "red"][number % 2]))
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"
    assert run(folder, out) == 0
    for split in SPLITS:
        for label, path in listed(out, split):
            with Image.open(path) as image:
                r, g, _ = image.convert("RGB").getpixel((image.width - 1, image.height - 1))
            assert ("red" if r > g else "green") == ["green", "red"][label]


def test_splits_are_deterministic_and_stay_when_a_photo_is_added(tmp_path: Path, dataset: Path) -> None:
    first, again, grown = tmp_path / "first", tmp_path / "again", tmp_path / "grown"
    assert run(dataset, first) == 0
    assert run(dataset, again) == 0
    for split in SPLITS:
        assert (first / split / "images.lst").read_bytes() == (again / split / "images.lst").read_bytes()
    before = output_digests(first)

    manifest = dataset / "labels" / MANIFEST_NAME
    (dataset / "labels" / "images" / "added.jpg").write_bytes(_photo_bytes((77, 55), "RGB", (1, 2, 250)))
    added = gt_line("s3://robocar-labels/synth-classes/images/added.jpg", 1, "square")
    manifest.write_text(added + manifest.read_text())  # first: every other record's index moves by one
    assert run(dataset, grown) == 0

    after = output_digests(grown)
    for split in SPLITS:
        assert before[split] <= after[split]  # every photo kept its split
    assert sum(len(after[s]) for s in SPLITS) == sum(len(before[s]) for s in SPLITS) + 1
    assert report_of(grown)["accepted"] == 41


def test_the_seed_moves_photos_between_splits(tmp_path: Path, dataset: Path) -> None:
    assert run(dataset, tmp_path / "a", "--seed", "0") == 0
    assert run(dataset, tmp_path / "b", "--seed", "1") == 0
    assert output_digests(tmp_path / "a") != output_digests(tmp_path / "b")


def test_a_rerun_into_the_same_folder_leaves_nothing_stale(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    assert run(dataset, out, "--output-uri", "s3://bucket/data") == 0
    manifest = dataset / "labels" / MANIFEST_NAME
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:30]))
    assert run(dataset, out) == 0
    for split in SPLITS:
        assert len(list((out / split / "images").iterdir())) == len(listed(out, split))
        assert not (out / split / f"{split}.manifest").exists()
    assert sum(len(listed(out, s)) for s in SPLITS) == 30


def test_augmented_manifests_name_the_uploaded_photos(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    assert run(dataset, out, "--output-uri", "s3://robocar-data/runs/7/preprocess/") == 0
    human = {r["source-ref"].rsplit("/", 1)[1]: r for r in records(dataset / "labels" / MANIFEST_NAME)}
    assert human  # the synthetic manifest's lines
    for split in SPLITS:
        lines = records(out / split / f"{split}.manifest")
        rows = [line.split("\t") for line in (out / split / "images.lst").read_text().splitlines()]
        assert [line["source-ref"] for line in lines] == [
            f"s3://robocar-data/runs/7/preprocess/{split}/{row[2]}" for row in rows
        ]
        assert [line["class"] for line in lines] == [int(row[1]) for row in rows]
        names = json.loads((out / split / "classes.json").read_text())
        for line in lines:
            metadata = line["class-metadata"]
            assert metadata["class-name"] == names[line["class"]]
            assert metadata["type"] == "groundtruth/image-classification"
            assert metadata["human-annotated"] in ("yes", "no")
            # where the split image came from: the photo's path under the input, whose record has this class
            assert not Path(line["origin"]).is_absolute() and (dataset / line["origin"]).is_file()
            source = human[Path(line["origin"]).name]
            assert source["category-metadata"]["class-name"] == metadata["class-name"]
    machine = sum(
        line["class-metadata"]["human-annotated"] == "no"
        for s in SPLITS
        for line in records(out / s / f"{s}.manifest")
    )
    assert machine == report_of(out)["labels"]["machine"]


def test_a_verification_jobs_attribute_beside_the_class_is_read(tmp_path: Path) -> None:
    """A line a verification job has seen carries its attribute too; the class is the classification's."""
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for number in range(30):
        (folder / f"{number}.jpg").write_bytes(_photo_bytes((40, 30 + number), "RGB", (number * 8, 50, 90)))
        record = json.loads(gt_line(f"{number}.jpg", number % 2, ["cat", "dog"][number % 2]))
        record["verify-category"] = 0
        record["verify-category-metadata"] = {
            "class-name": "correct",
            "confidence": 0.9,
            "type": "groundtruth/label-verification",
            "job-name": "labeling-job/verify",
            "human-annotated": "yes",
            "creation-date": "2026-01-03T00:00:00.000000",
        }
        lines.append(json.dumps(record) + "\n")
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"
    assert run(folder, out) == 0
    report = report_of(out)
    assert (report["accepted"], report["classes"]) == (30, ["cat", "dog"])


@pytest.mark.parametrize(
    ("photos", "classes", "message"),
    [
        (12, 1, "1 class in the manifests (12 photos accepted); a classifier needs at least 2"),
        (2, 2, "empty (2 photos accepted): add photos, or change --seed"),
    ],
)
def test_too_little_data_fails_in_one_line(
    tmp_path: Path, capsys, photos: int, classes: int, message: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for number in range(photos):
        (folder / f"{number}.jpg").write_bytes(_photo_bytes((40 + number, 30), "RGB", (number * 20, 9, 9)))
        lines.append(gt_line(f"{number}.jpg", number % classes, ["cat", "dog"][number % classes]))
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"

    assert run(folder, out) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("preprocess_classifier: data rejected: too little data: ") and message in err[-1]
    )
    assert not any("Traceback" in line for line in err)
    report = report_of(out)
    assert report["status"] == "failed" and message in report["failure"]


def test_a_class_without_a_train_photo_fails(tmp_path: Path, synth_set: Path, capsys) -> None:
    from processing.preprocess_classifier import photo_split

    folder = tmp_path / "in"
    shutil.copytree(synth_set, folder / "labels")
    lone = _photo_bytes((50, 50), "RGB", (250, 250, 0))
    (folder / "lone.jpg").write_bytes(lone)
    (folder / "lone.manifest").write_text(gt_line("lone.jpg", 3, "cross"))
    digest = hashlib.sha256(lone).hexdigest()
    seed = next(s for s in range(100) if photo_split(s, digest, (0.7, 0.15, 0.15)) != "train")

    assert run(folder, tmp_path / "out", "--seed", str(seed)) == 1

    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no train photo of class cross (1 photos elsewhere)" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output-uri", "https://bucket/x"], "--output-uri: not an s3:// URI"),
        (["--image-size", "0"], "--image-size must be"),
        (["--train-fraction", "0.9", "--validation-fraction", "0.1"], "every split needs a fraction"),
        (["--max-image-bytes", "0"], "--max-image-bytes must be at least 1"),
    ],
)
def test_bad_options_are_refused_in_one_line(tmp_path: Path, dataset: Path, capsys, args, message) -> None:  # noqa: ANN001
    assert run(dataset, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err


def test_an_input_without_a_manifest_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    assert run(tmp_path / "in", tmp_path / "out") == 2
    assert "no Ground Truth output manifest" in capsys.readouterr().err


def test_a_photo_over_the_byte_limit_is_rejected_by_name(tmp_path: Path, dataset: Path) -> None:
    sizes = sorted(path.stat().st_size for path in (dataset / "labels" / "images").glob("*.jpg"))
    limit = sizes[len(sizes) // 2]
    out = tmp_path / "out"
    run(dataset, out, "--max-image-bytes", str(limit))
    report = report_of(out)
    over = sum(size > limit for size in sizes)
    assert (report["rejected"], report["accepted"]) == (over, 40 - over)
    assert all("--max-image-bytes" in r["reason"] for r in report["rejections"])


def test_the_script_runs_as_the_container_runs_it(tmp_path: Path, dataset: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(repo / "processing" / "preprocess_classifier.py"), "--input", str(dataset),
         "--output", str(tmp_path / "out")],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "photos 40/40: 40 accepted" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("total: read 40, accepted 40, rejected 0; train ")
