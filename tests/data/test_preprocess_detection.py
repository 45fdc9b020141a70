"""The detection recipe's Preprocess: Ground Truth bounding-box manifests + photos -> stretched photos
with normalised boxes per split, every record accounted for, each bad box rejected by index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.synth_boxes import Box, bounding_box_line, write_boxes
from pipelines.synth_classes import MANIFEST_NAME
from processing.ground_truth_boxes import check_boxes_record
from processing.limits import DEFAULT_LIMITS
from processing.preprocess_detection import main
from processing.records import REASONS, Rejection

SPLITS = ("train", "validation", "test")
CREATED = datetime(2026, 1, 2)
NAMES = ("circle", "square", "triangle")


def bb_line(ref: str, size: tuple[int, int], boxes: list[Box], *, human: bool = True) -> str:
    """A bounding-box manifest line as the service writes it, for a photo of ``size`` (width, height)."""
    return bounding_box_line(
        ref,
        (*size, 3),
        boxes,
        NAMES,
        attribute="bounding-box",
        job_name="extra",
        created=CREATED,
        confidences=[0.9] * len(boxes),
        human=human,
    )


def edited(line: str, edit) -> str:  # noqa: ANN001 - a function of the record
    """``line`` with its record changed by ``edit`` (a malformed annotation, a wrong class-map)."""
    record = json.loads(line)
    edit(record)
    return json.dumps(record) + "\n"


def photo(
    size: tuple[int, int], colour: tuple[int, int, int], *, mark: tuple[int, int, int, int] | None = None
) -> bytes:
    """A JPEG of ``size`` in ``colour``, with a white rectangle ``mark`` (left, top, right, bottom)."""
    image = Image.new("RGB", size, colour)
    if mark is not None:
        image.paste((255, 255, 255), mark)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic photos with objects of 3 classes and their manifest (made once, copied by each test)."""
    root = tmp_path_factory.mktemp("synth") / "labels"
    write_boxes(root, classes=3, images=40, seed=3)
    return root


@pytest.fixture
def dataset(tmp_path: Path, synth_set: Path) -> Path:
    shutil.copytree(synth_set, tmp_path / "in" / "labels")
    return tmp_path / "in"


def run(input_dir: Path, output: Path, *extra: str) -> int:
    return main(["--input", str(input_dir), "--output", str(output), *extra])


def report_of(output: Path) -> dict:
    return json.loads((output / "report" / "data-report.json").read_text())


def annotations(output: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (output / split / "annotations.jsonl").read_text().splitlines()]


def output_digests(output: Path) -> dict[str, set[str]]:
    """Per split, the SHA-256 of every photo written (re-encoding is deterministic)."""
    return {
        split: {
            hashlib.sha256((output / split / a["image"]).read_bytes()).hexdigest()
            for a in annotations(output, split)
        }
        for split in SPLITS
    }


def test_every_record_is_accounted_for_and_each_bad_box_rejected_by_index(
    tmp_path: Path, dataset: Path, capsys
) -> None:
    extra = dataset / "later"
    (extra / "photos").mkdir(parents=True)
    sizes = {}
    for number in range(12):
        size = (60 + 7 * number, 40 + 3 * number)
        sizes[number] = size
        (extra / "photos" / f"{number}.jpg").write_bytes(photo(size, (20 * number, 90, 200 - 10 * number)))
    first_synth = sorted((dataset / "labels" / "images").glob("*.jpg"))[0]
    (extra / "photos" / "copy.jpg").write_bytes(first_synth.read_bytes())

    def ref(number: int) -> str:
        return f"photos/{number}.jpg"

    w1, w2 = sizes[1][0], sizes[2][0]
    lines = [
        bb_line(ref(0), sizes[0], []),  # 0: accepted, a negative
        bb_line(ref(1), sizes[1], [Box(0, 5, 5, 10, 10), Box(1, w1 - 20, 4, 25, 10)]),  # 1: box 1 5 px beyond
        bb_line(ref(2), sizes[2], [Box(0, 0, 0, 10, 10), Box(1, 50, 20, w2 - 49, 5)]),  # 2: 1 px beyond: ok
        bb_line(ref(3), sizes[3], [Box(0, 5, 5, 0, 10)]),  # 3: zero width
        bb_line(ref(4), sizes[4], [Box(0, 5, 5, 10, 10), Box(2, 5, 5, 10, -3)]),  # 4: negative height
        edited(bb_line(ref(5), sizes[5], [Box(2, 5, 5, 10, 10)]),  # 5: class id missing from the class-map
               lambda r: r["bounding-box-metadata"].update({"class-map": {"0": "circle"}})),
        edited(bb_line(ref(6), sizes[6], [Box(0, 5, 5, 10, 10)]),  # 6: malformed annotation
               lambda r: r["bounding-box"]["annotations"][0].update({"left": "5"})),
        edited(bb_line(ref(7), sizes[7], [Box(0, 5, 5, 10, 10)]),  # 7: malformed image_size
               lambda r: r["bounding-box"]["image_size"][0].pop("height")),
        bb_line(ref(8), (sizes[8][0] + 10, sizes[8][1]), [Box(0, 5, 5, 10, 10)]),  # 8: not the photo's size
        '{"source-ref": "photos/9.jpg", "bounding-box": {\n',  # 9: malformed record
        bb_line("photos/copy.jpg", (10, 10), []),  # 10: duplicate photo (read before its size is checked)
        edited(bb_line(ref(11), sizes[11], [Box(0, 5, 5, 10, 10)]),  # 11: label conflict (0 is circle)
               lambda r: r["bounding-box-metadata"].update({"class-map": {"0": "star"}})),
        bb_line("photos/missing.jpg", (10, 10), []),  # 12: image missing
        bb_line(ref(10), sizes[10], [Box(1, -1, -1, 11, 11)]),  # 13: -1 px: ok
        edited(bb_line(ref(10), sizes[10], [Box(0, 5, 5, 10, 10)]),  # 14: annotations not a list
               lambda r: r["bounding-box"].update({"annotations": {"class_id": 0}})),
    ]  # fmt: skip
    (extra / "more.manifest").write_text("".join(lines))
    out = tmp_path / "out"

    assert run(dataset, out) == 0

    report = report_of(out)
    assert report["recipe"] == "detection"
    assert (report["read"], report["accepted"], report["rejected"], report["duplicates"]) == (55, 43, 12, 1)
    reasons = {(r["manifest"], r["index"]): r["reason"] for r in report["rejections"]}
    assert {key: reason.split(":")[0] for key, reason in reasons.items()} == {
        ("later/more.manifest", 1): "box outside image",
        ("later/more.manifest", 3): "empty box",
        ("later/more.manifest", 4): "empty box",
        ("later/more.manifest", 5): "unknown class",
        ("later/more.manifest", 6): "schema",
        ("later/more.manifest", 7): "schema",
        ("later/more.manifest", 8): "image wrong size",
        ("later/more.manifest", 9): "malformed record",
        ("later/more.manifest", 10): "duplicate photo",
        ("later/more.manifest", 11): "label conflict",
        ("later/more.manifest", 12): "image missing",
        ("later/more.manifest", 14): "schema",
    }
    outside = reasons[("later/more.manifest", 1)]
    assert "annotation 1" in outside and "5 px beyond" in outside and "tolerance 1 px" in outside
    assert "annotation 1: width 10 x height -3" in reasons[("later/more.manifest", 4)]
    assert "class id 2 is not in the class-map (ids: 0)" in reasons[("later/more.manifest", 5)]
    assert "annotation 0: left must be a number" in reasons[("later/more.manifest", 6)]
    assert "image_size height" in reasons[("later/more.manifest", 7)]
    assert (
        f"is {sizes[8][0]}x{sizes[8][1]}, image_size says {sizes[8][0] + 10}x{sizes[8][1]}"
        in reasons[("later/more.manifest", 8)]
    )
    assert [(m["manifest"], m["read"], m["accepted"], m["rejected"]) for m in report["manifests"]] == [
        ("labels/output.manifest", 40, 40, 0),
        ("later/more.manifest", 15, 3, 12),
    ]
    written = [a for s in SPLITS for a in annotations(out, s)]
    assert len(written) == 43 == sum(report["splits"][s]["images"] for s in SPLITS)
    assert sum(report["splits"][s]["negatives"] for s in SPLITS) == 1
    assert sum(len(a["boxes"]) for a in written) == sum(report["splits"][s]["objects"] for s in SPLITS)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "total: read 55, accepted 43, rejected 12 [box outside image x1, duplicate photo x1,"
    )


def test_boxes_within_a_pixel_of_the_edge_are_clipped_and_negatives_kept(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for number in range(30):
        (folder / f"{number}.jpg").write_bytes(photo((100, 50), (number * 8, 30, 30)))
        boxes = [] if number % 3 == 0 else [Box(number % 3, -1, 10, 31, 20), Box(0, 70, 30, 31, 21)]
        lines.append(bb_line(f"{number}.jpg", (100, 50), boxes))
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"

    assert run(folder, out) == 0

    written = [a for s in SPLITS for a in annotations(out, s)]
    assert len(written) == 30 and sum(not a["boxes"] for a in written) == 10
    for entry in written:
        for box in entry["boxes"]:
            assert box[1:] in ([0.0, 0.2, 0.3, 0.6], [0.7, 0.6, 1.0, 1.0])  # clipped to the photo
    report = report_of(out)
    assert report["classes"] == list(NAMES)
    assert sum(report["splits"][s]["negatives"] for s in SPLITS) == 10
    assert report["builtin"] == {
        "num_classes": 3,
        "num_training_samples": report["splits"]["train"]["images"],
    }
    objects = {name: sum(report["splits"][s]["objects_per_class"][name] for s in SPLITS) for name in NAMES}
    assert objects == {"circle": 20, "square": 10, "triangle": 10}


@pytest.mark.parametrize(("size", "mark"), [((200, 80), (30, 10, 80, 50)), ((45, 120), (3, 70, 40, 118))])
def test_a_box_lands_where_its_normalised_coordinates_say_in_the_stretched_photo(
    tmp_path: Path, size: tuple[int, int], mark: tuple[int, int, int, int]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = []
    for number in range(40):  # enough photos that every split has one of each class
        (folder / f"{number}.jpg").write_bytes(photo(size, (number * 5, 0, 40), mark=mark))
        left, top, right, bottom = mark
        lines.append(bb_line(f"{number}.jpg", size, [Box(number % 3, left, top, right - left, bottom - top)]))
    (folder / MANIFEST_NAME).write_text("".join(lines))
    out = tmp_path / "out"

    assert run(folder, out, "--image-size", "64", "--output-uri", "s3://b/p") == 0

    for split in SPLITS:
        augmented = [
            json.loads(line) for line in (out / split / f"{split}.manifest").read_text().splitlines()
        ]
        for entry, line in zip(annotations(out, split), augmented, strict=True):
            with Image.open(out / split / entry["image"]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
                white = np.asarray(image.convert("L")) > 160
            rows, cols = np.nonzero(white)
            seen = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)  # the white mark, stretched
            ((class_id, *corners),) = entry["boxes"]
            expected = [v * 64 for v in corners]
            assert np.allclose(seen, expected, atol=1.5), (seen, expected)
            assert corners == pytest.approx(
                [mark[0] / size[0], mark[1] / size[1], mark[2] / size[0], mark[3] / size[1]], abs=1e-6
            )
            (annotation,) = line["boxes"]["annotations"]
            assert annotation["class_id"] == class_id
            pixels = (annotation["left"], annotation["top"], annotation["width"], annotation["height"])
            assert pixels == pytest.approx(
                (expected[0], expected[1], expected[2] - expected[0], expected[3] - expected[1]), abs=0.01
            )


def test_splits_are_deterministic_and_stay_when_a_photo_is_added(tmp_path: Path, dataset: Path) -> None:
    first, again, grown = tmp_path / "first", tmp_path / "again", tmp_path / "grown"
    assert run(dataset, first) == 0
    assert run(dataset, again) == 0
    for split in SPLITS:
        assert (first / split / "annotations.jsonl").read_bytes() == (
            again / split / "annotations.jsonl"
        ).read_bytes()
    before = output_digests(first)

    manifest = dataset / "labels" / MANIFEST_NAME
    (dataset / "labels" / "images" / "added.jpg").write_bytes(photo((77, 55), (1, 2, 250)))
    added = bb_line("s3://robocar-labels/synth-boxes/images/added.jpg", (77, 55), [Box(1, 3, 3, 20, 20)])
    manifest.write_text(added + manifest.read_text())  # first: every other record's index moves by one
    assert run(dataset, grown) == 0

    after = output_digests(grown)
    for split in SPLITS:
        assert before[split] <= after[split]  # every photo kept its split
    assert sum(len(after[s]) for s in SPLITS) == sum(len(before[s]) for s in SPLITS) + 1


def test_augmented_manifests_name_the_uploaded_photos_with_their_boxes(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    assert run(dataset, out, "--output-uri", "s3://robocar-data/runs/7/preprocess/") == 0
    machine = 0
    for split in SPLITS:
        names = json.loads((out / split / "classes.json").read_text())
        assert names == list(NAMES)
        lines = [json.loads(line) for line in (out / split / f"{split}.manifest").read_text().splitlines()]
        entries = annotations(out, split)
        assert [line["source-ref"] for line in lines] == [
            f"s3://robocar-data/runs/7/preprocess/{split}/{entry['image']}" for entry in entries
        ]
        for line, entry in zip(lines, entries, strict=True):
            assert set(line) == {"source-ref", "origin", "boxes", "boxes-metadata"}
            assert (dataset / line["origin"]).is_file()  # the photo the split image came from, under --input
            assert line["boxes"]["image_size"] == [{"width": 128, "height": 128, "depth": 3}]
            assert [a["class_id"] for a in line["boxes"]["annotations"]] == [b[0] for b in entry["boxes"]]
            for annotation in line["boxes"]["annotations"]:
                assert set(annotation) == {"class_id", "left", "top", "width", "height"}
                assert annotation["width"] > 0 and annotation["left"] + annotation["width"] <= 128.01
            metadata = line["boxes-metadata"]
            assert metadata["type"] == "groundtruth/object-detection"
            assert metadata["class-map"] == {str(b[0]): names[b[0]] for b in entry["boxes"]}
            machine += metadata["human-annotated"] == "no"
    assert machine == report_of(out)["labels"]["machine"] > 0


def test_a_rerun_into_the_same_folder_leaves_nothing_stale(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    assert run(dataset, out, "--output-uri", "s3://bucket/data") == 0
    manifest = dataset / "labels" / MANIFEST_NAME
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:25]))
    assert run(dataset, out) == 0
    for split in SPLITS:
        assert len(list((out / split / "images").iterdir())) == len(annotations(out, split))
        assert not (out / split / f"{split}.manifest").exists()
    assert sum(len(annotations(out, s)) for s in SPLITS) == 25


def test_photos_without_any_object_are_too_little_data(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(12):
        (folder / f"{number}.jpg").write_bytes(photo((40 + number, 30), (number * 20, 9, 9)))
    (folder / MANIFEST_NAME).write_text("".join(bb_line(f"{n}.jpg", (40 + n, 30), []) for n in range(12)))
    out = tmp_path / "out"

    assert run(folder, out) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("preprocess_detection: data rejected: too little data: ")
    assert "0 classes in the manifests (12 photos accepted); a detector needs at least 1" in err[-1]
    assert report_of(out)["status"] == "failed"


def test_the_script_runs_as_the_container_runs_it(tmp_path: Path, dataset: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(repo / "processing" / "preprocess_detection.py"), "--input", str(dataset),
         "--output", str(tmp_path / "out"), "--image-size", "96"],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "photos 40/40: 40 accepted" in result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("total: read 40, accepted 40, rejected 0; train ") and " at 96 px; " in last
    assert last.endswith(" objects")


junk = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just([]), st.just({}))
coordinate = st.one_of(
    st.integers(min_value=-60, max_value=260), st.floats(allow_nan=True, allow_infinity=True), junk
)
pixels = st.integers(min_value=-3, max_value=210)
extent = st.integers(min_value=-2, max_value=120)
annotation = st.one_of(
    st.fixed_dictionaries(  # well formed, inside or outside, possibly empty
        {"class_id": st.integers(min_value=-1, max_value=2), "left": pixels, "top": pixels,
         "width": extent, "height": extent}
    ),
    st.fixed_dictionaries(
        {"class_id": st.one_of(st.integers(min_value=-2, max_value=4), junk)},
        optional=dict.fromkeys(("left", "top", "width", "height"), coordinate),
    ),
    junk,
)  # fmt: skip
side = st.integers(min_value=1, max_value=300)
good_size = st.builds(lambda width, height: [{"width": width, "height": height, "depth": 3}], side, side)
image_size = st.one_of(
    good_size,
    st.lists(
        st.fixed_dictionaries({}, optional=dict.fromkeys(("width", "height", "depth"), coordinate)),
        max_size=2,
    ),
    junk,
)
good_class_map = st.just({"0": "circle", "1": "square"})
# A box of class 0 or 1 that fits a photo of 111 px or more (or is 1 px out: clipped).
inside = st.integers(min_value=-1, max_value=50)
good_annotation = st.fixed_dictionaries(
    {"class_id": st.sampled_from([0, 1]), "left": inside, "top": inside,
     "width": st.integers(min_value=1, max_value=60), "height": st.integers(min_value=1, max_value=60)}
)  # fmt: skip
roomy_size = st.builds(
    lambda width, height: [{"width": width, "height": height, "depth": 3}], *[st.integers(111, 300)] * 2
)
class_map = st.one_of(
    good_class_map,
    st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=4), junk), max_size=3),
    junk,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        # a well-formed line whose annotations vary: the accepting path is reached
        st.tuples(
            st.fixed_dictionaries(
                {
                    "image_size": roomy_size,
                    "annotations": st.lists(st.one_of(good_annotation, annotation), max_size=3),
                }
            ),
            good_class_map,
        ),
        # anything in any field
        st.tuples(
            st.fixed_dictionaries(
                {"image_size": image_size, "annotations": st.one_of(st.lists(annotation, max_size=4), junk)}
            ),
            class_map,
        ),
    )
)
def test_a_record_is_normalised_boxes_or_a_named_rejection(line: tuple) -> None:
    """Whatever a line holds, the reader either returns boxes inside [0, 1] of classes the line names,
    or rejects the record with a reason from the report's vocabulary; nothing else escapes."""
    label, names = line
    record = {
        "source-ref": "photos/a.jpg",
        "bounding-box": label,
        "bounding-box-metadata": {"class-map": names, "type": "groundtruth/object-detection"},
    }
    try:
        _, fields = check_boxes_record(record, None, DEFAULT_LIMITS, {})
    except Rejection as rejection:
        assert rejection.code in REASONS and rejection.reason.startswith(rejection.code + ": ")
        return
    for class_id, xmin, ymin, xmax, ymax in fields["boxes"]:
        assert str(class_id) in names
        assert 0.0 <= xmin < xmax <= 1.0 and 0.0 <= ymin < ymax <= 1.0
