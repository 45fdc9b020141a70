"""`robocar label review`'s HTTP API without a browser: every action saved in Ground Truth's adjustment
output format, bad input refused with nothing saved, resume after a restart, and a killed writer that
never leaves a torn output (the journal is the truth)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from review_fixtures import (
    BOX_CLASSES,
    CLASSES,
    classification_manifest,
    classification_record,
    detection_manifest,
    detection_record,
    read_lines,
    write_image,
    write_manifest,
)

from pipelines.labelling.review import start_review_server
from pipelines.labelling.review_session import ReviewError
from pipelines.local.endpoint_server import request

REPO = Path(__file__).resolve().parents[2]


def call(
    url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request; a body that is not bytes is sent as JSON."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
    return request(url, method, path, data or b"", sent, timeout=30)


def get_json(url: str, path: str) -> Any:
    status, _, body = call(url, "GET", path)
    assert status == 200, body
    return json.loads(body)


def decide(url: str, decision: dict[str, Any]) -> dict[str, Any]:
    status, _, body = call(url, "POST", "/api/decision", decision)
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def classification(tmp_path: Path) -> Path:
    return classification_manifest(tmp_path / "cls")


@pytest.fixture
def detection(tmp_path: Path) -> Path:
    return detection_manifest(tmp_path / "det")


def test_the_state_records_images_and_page_files_are_served(classification: Path, tmp_path: Path) -> None:
    with start_review_server(classification, tmp_path / "out.manifest") as server:
        assert get_json(server.url, "/api/state") == {
            "kind": "classification", "attribute": "prelabel", "output_attribute": "prelabel-adjusted",
            "classes": CLASSES, "total": 4, "decided": 0, "next": 0,
        }  # fmt: skip
        record = get_json(server.url, "/api/records/1")
        photo = str(classification.parent / "images/photo1.jpg")
        assert record == {
            "index": 1, "source_ref": photo, "image_url": "/image/1",
            "width": 64, "height": 48, "prelabel": {"class": "dog", "confidence": 0.4}, "decision": None,
        }  # fmt: skip
        assert call(server.url, "GET", "/image/0")[1] == "image/png"
        status, content_type, body = call(server.url, "GET", "/image/1")
        assert (status, content_type) == (200, "image/jpeg")
        assert body == (classification.parent / "images/photo1.jpg").read_bytes()
        for path, wanted in [("/", "text/html"), ("/static/review.js", "text/javascript")]:
            status, content_type, _ = call(server.url, "GET", path)
            assert (status, content_type.split(";")[0]) == (200, wanted)
        for path in [
            "/static/../review.py",
            "/static/review.py",
            "/image/4",
            "/image/-1",
            "/api/records/x",
            "/x",
        ]:
            status, content_type, body = call(server.url, "GET", path)
            assert (status, content_type) == (404, "application/json") and "error" in json.loads(body)


def test_images_are_read_from_the_workspace_s3(tmp_path: Path) -> None:
    from edge.aws import clients

    aws = clients(local_root=tmp_path / "ws")
    aws.s3.create_bucket(Bucket="photos")
    image = write_image(tmp_path / "a.png", (20, 10), (1, 2, 3))
    aws.s3.put_object(Bucket="photos", Key="new/a.png", Body=image.read_bytes())
    manifest = write_manifest(
        tmp_path / "m.manifest", [classification_record("s3://photos/new/a.png", 2, 0.2)], CLASSES
    )
    with start_review_server(manifest, tmp_path / "out.manifest", clients=aws) as server:
        assert call(server.url, "GET", "/image/0")[::2] == (200, image.read_bytes())
        assert get_json(server.url, "/api/records/0")["width"] == 20


def test_a_file_that_is_not_an_image_is_never_served(tmp_path: Path) -> None:
    secret = tmp_path / "notes.txt"
    secret.write_text("not for the page")
    records = [
        classification_record(str(secret), 0, 0.1),
        classification_record(str(tmp_path / "gone.png"), 0, 0.1),
    ]
    manifest = write_manifest(tmp_path / "m.manifest", records, CLASSES)
    with start_review_server(manifest, tmp_path / "out.manifest") as server:
        for index, says in [(0, "not an image"), (1, "No such file")]:
            status, _, body = call(server.url, "GET", f"/image/{index}")
            assert status == 502 and says in json.loads(body)["error"] and b"not for the page" not in body
            assert get_json(server.url, f"/api/records/{index}")["width"] is None
        decide(server.url, {"index": 0, "action": "reject", "reason": "no photo"})  # what a person does


def test_every_action_is_saved_in_ground_truths_adjustment_output(classification: Path) -> None:
    output = classification.with_name("to-review.reviewed.manifest")  # the default output
    with start_review_server(classification, output, output_attribute="checked") as server:
        assert decide(server.url, {"index": 0, "action": "accept"}) == {
            "saved": True, "decided": 1, "total": 4, "next": 1,
        }  # fmt: skip
        decide(server.url, {"index": 1, "action": "correct", "class": "bird"})
        decide(server.url, {"index": 3, "action": "correct", "class": "cat"})  # the pre-label is cat
        answer = decide(server.url, {"index": 2, "action": "reject", "reason": "blurred"})
        assert (answer["decided"], answer["next"]) == (4, None)
        assert get_json(server.url, "/api/records/1")["decision"] == {
            "index": 1, "action": "correct", "class": "bird",
        }  # fmt: skip
    inputs = read_lines(classification)
    reviewed = read_lines(output)
    assert [r["source-ref"] for r in reviewed] == [inputs[i]["source-ref"] for i in (0, 1, 3)]
    for record, original in zip(reviewed, [inputs[0], inputs[1], inputs[3]], strict=True):
        assert {k: record[k] for k in original} == original  # the input record is kept unchanged
        meta = record["checked-metadata"]
        assert meta["type"] == "groundtruth/image-classification"
        assert (meta["human-annotated"], meta["confidence"], meta["job-name"]) == (
            "yes", 1.0, "labeling-job/checked",
        )  # fmt: skip
        assert len(meta["creation-date"]) == len("2026-12-02T11:00:00.000000")
    assert [(r["checked"], r["checked-metadata"]["class-name"]) for r in reviewed] == [
        (0, "cat"), (2, "bird"), (0, "cat"),
    ]  # fmt: skip
    statuses = [r["checked-metadata"]["adjustment-status"] for r in reviewed]
    assert statuses == [
        "unadjusted",
        "adjusted",
        "unadjusted",
    ]  # a correction to the pre-label changes nothing
    rejected = read_lines(Path(f"{output}.rejected"))
    assert rejected == [{**inputs[2], "rejected-reason": "blurred"}]


def test_a_changed_decision_replaces_the_old_one(classification: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.manifest"
    with start_review_server(classification, output) as server:
        decide(server.url, {"index": 0, "action": "reject"})
        decide(server.url, {"index": 0, "action": "correct", "class": "dog"})
        assert get_json(server.url, "/api/state")["decided"] == 1
    assert [r["prelabel-adjusted"] for r in read_lines(output)] == [1]
    assert Path(f"{output}.rejected").read_text() == ""
    assert len(Path(f"{output}.journal").read_text().splitlines()) == 2  # the history stays


def test_detection_corrections_are_whole_pixel_boxes_of_the_class_map(
    detection: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.manifest"
    with start_review_server(detection, output) as server:
        record = get_json(server.url, "/api/records/1")
        assert (record["width"], record["height"]) == (320, 240)
        assert record["prelabel"]["boxes"] == [
            {"class": "car", "left": 150, "top": 60, "width": 80, "height": 60, "confidence": 0.55},
            {"class": "cone", "left": 30, "top": 100, "width": 40, "height": 40, "confidence": 0.9},
        ]
        moved = [
            {"class": "car", "left": 160.4, "top": 59.6, "width": 80, "height": 60.2},
            {"class": "cone", "left": -0.6, "top": 200, "width": 40, "height": 40.8, "confidence": 0.9},
        ]  # the second overhangs the image by under a pixel: clipped
        decide(server.url, {"index": 1, "action": "correct", "boxes": moved})
        decide(server.url, {"index": 0, "action": "accept"})
        decide(server.url, {"index": 2, "action": "correct", "boxes": []})  # nothing to detect: a negative
    accepted, corrected, negative = read_lines(output)
    assert corrected["prelabel-adjusted"] == {
        "image_size": [{"width": 320, "height": 240, "depth": 3}],
        "annotations": [
            {"class_id": 1, "left": 160, "top": 60, "width": 80, "height": 60},
            {"class_id": 0, "left": 0, "top": 200, "width": 39, "height": 40},  # edges -0.6..39.4, 200..240.8
        ],
    }
    meta = corrected["prelabel-adjusted-metadata"]
    assert meta["objects"] == [{"confidence": 1.0}, {"confidence": 1.0}]
    assert meta["class-map"] == {"0": "cone", "1": "car"}
    assert (meta["type"], meta["human-annotated"], meta["adjustment-status"]) == (
        "groundtruth/object-detection", "yes", "adjusted",
    )  # fmt: skip
    assert accepted["prelabel-adjusted"] == accepted["prelabel"]
    assert accepted["prelabel-adjusted-metadata"]["adjustment-status"] == "unadjusted"
    assert negative["prelabel-adjusted"]["annotations"] == []
    assert negative["prelabel-adjusted-metadata"]["adjustment-status"] == "unadjusted"  # it had no box


BAD_CLASSIFICATION = [
    (b"{not json", "not JSON"),
    (b"[1]", "JSON object"),
    ({"index": 9, "action": "accept"}, "index"),
    ({"index": True, "action": "accept"}, "index"),
    ({"index": "0", "action": "accept"}, "index"),
    ({"index": 0, "action": "approve"}, "action"),
    ({"index": 0, "action": "correct"}, "class"),
    ({"index": 0, "action": "correct", "class": "horse"}, "class"),
    ({"index": 0, "action": "accept", "class": "dog"}, "takes no class"),
    ({"index": 0, "action": "reject", "reason": 7}, "reason"),
    ({"index": 0, "action": "reject", "reason": "x" * 1001}, "reason"),
]
BOX = {"class": "car", "left": 1, "top": 1, "width": 5, "height": 5}
BAD_DETECTION = [
    ({"index": 0, "action": "correct", "boxes": {"class": "car"}}, "boxes"),
    ({"index": 0, "action": "correct", "class": "car"}, "takes no class"),
    ({"index": 0, "action": "correct", "boxes": [{**BOX, "height": None}]}, "finite"),
    ({"index": 0, "action": "correct", "boxes": [{**BOX, "class": "bus"}]}, "class"),
    ({"index": 0, "action": "correct", "boxes": [{"class": "car", "left": 1, "top": 1, "width": math.nan,
                                                  "height": 5}]}, "finite"),
    ({"index": 0, "action": "correct", "boxes": [{"class": "car", "left": 300, "top": 1, "width": 30,
                                                  "height": 5}]}, "outside"),
    ({"index": 0, "action": "correct", "boxes": [{"class": "car", "left": 3, "top": 1, "width": 0.2,
                                                  "height": 5}]}, "empty"),
    ({"index": 0, "action": "correct", "boxes": [{"class": "car", "left": 3, "top": 1, "width": 2,
                                                  "height": 5, "colour": "red"}]}, "object of"),
    ({"index": 0, "action": "correct", "boxes": [{"class": "car", "left": 1, "top": 1, "width": 2,
                                                  "height": 2}] * 1001}, "at most"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["classification", "detection"])
def test_bad_input_is_400_nothing_is_saved_and_the_server_goes_on(kind: str, tmp_path: Path) -> None:
    manifest = (classification_manifest if kind == "classification" else detection_manifest)(tmp_path / kind)
    output = tmp_path / "out.manifest"
    journal = Path(f"{output}.journal")
    with start_review_server(manifest, output) as server:
        decide(server.url, {"index": 1, "action": "accept"})
        before = [output.read_bytes(), journal.read_bytes()]
        for body, says in BAD_CLASSIFICATION if kind == "classification" else BAD_DETECTION:
            status, content_type, answer = call(server.url, "POST", "/api/decision", body)
            assert (status, content_type) == (400, "application/json"), (body, answer)
            assert says in json.loads(answer)["error"], (body, answer)
        refused = [
            ({"Content-Type": "text/plain"}, 415),  # what a form of another site could send
            ({"Content-Length": str(2 << 20)}, 413),
            ({"Host": "evil.example:80"}, 403),  # DNS rebinding
        ]
        for headers, wanted in refused:
            status, _, answer = call(
                server.url, "POST", "/api/decision", {"index": 0, "action": "accept"}, headers
            )
            assert status == wanted and "error" in json.loads(answer)
        assert [output.read_bytes(), journal.read_bytes()] == before
        assert get_json(server.url, "/api/state")["decided"] == 1


def test_a_restart_resumes_with_the_decisions_made(classification: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.manifest"
    with start_review_server(classification, output) as server:
        decide(server.url, {"index": 0, "action": "correct", "class": "bird"})
        decide(server.url, {"index": 2, "action": "reject"})
    saved = output.read_bytes()
    with start_review_server(classification, output) as server:
        state = get_json(server.url, "/api/state")
        assert (state["decided"], state["next"]) == (2, 1)
        assert get_json(server.url, "/api/records/0")["decision"] == {
            "index": 0,
            "action": "correct",
            "class": "bird",
        }
        assert get_json(server.url, "/api/records/2")["decision"] == {"index": 2, "action": "reject"}
        assert output.read_bytes() == saved
        decide(server.url, {"index": 1, "action": "accept"})
    assert len(read_lines(output)) == 2


def test_the_journal_is_the_truth_after_a_killed_write(classification: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.manifest"
    journal = Path(f"{output}.journal")
    with start_review_server(classification, output) as server:
        decide(server.url, {"index": 0, "action": "accept"})
        decide(server.url, {"index": 1, "action": "correct", "class": "cat"})
    wanted = output.read_bytes()
    # Killed between the journal's append and the output's rename: the output is the one before.
    output.write_bytes(wanted.splitlines(keepends=True)[0])
    # Killed mid-append: half a line, never answered "saved".
    with open(journal, "ab") as handle:
        handle.write(b'{"creation-date": "2026-12-02T12:00:00.000000", "decision": {"index": 3, "act')
    with start_review_server(classification, output) as server:
        assert get_json(server.url, "/api/state")["decided"] == 2
        assert output.read_bytes() == wanted
        decide(server.url, {"index": 3, "action": "accept"})  # appended after the torn line was dropped
    assert [json.loads(line)["decision"]["index"] for line in journal.read_text().splitlines()] == [0, 1, 3]


def test_a_journal_of_another_manifest_or_a_second_review_is_refused(
    classification: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.manifest"
    with start_review_server(classification, output) as server:
        decide(server.url, {"index": 0, "action": "accept"})
        with pytest.raises(ReviewError, match="another review"):
            start_review_server(classification, output)
    other = classification_manifest(tmp_path / "other")
    with pytest.raises(ReviewError, match="another manifest"):
        start_review_server(other, output)
    with start_review_server(classification, output):  # the refusal above released its lock
        pass
    with pytest.raises(ReviewError, match="cannot replace its input"):
        start_review_server(classification, classification)
    with pytest.raises(ReviewError, match="must differ"):
        start_review_server(classification, tmp_path / "x.manifest", output_attribute="prelabel")
    with pytest.raises(ReviewError, match="1-127 of"):
        start_review_server(classification, tmp_path / "x.manifest", output_attribute="bad_name")


def test_a_pre_label_preprocess_would_reject_is_refused_with_its_record(tmp_path: Path) -> None:
    image = str(write_image(tmp_path / "a.png", (20, 10), (1, 2, 3)))
    good = classification_record(image, 1, 0.5)
    unnamed = {**good, "prelabel": 7, "prelabel-metadata": {**good["prelabel-metadata"], "class-name": "fox"}}
    renamed = {**good, "prelabel-metadata": {**good["prelabel-metadata"], "class-name": "wolf"}}
    boxes = detection_record(image, (20, 10), [(0, 15, 2, 9, 5, 0.5)])  # 4 pixels beyond the right edge
    cases = [
        ([good, unnamed], CLASSES, "class 7 is 'fox' in the manifest, None here"),  # 3 categories
        ([good, renamed], None, "record 1: label conflict"),
        ([renamed], CLASSES, "class 1 is 'wolf' in the manifest, 'dog' here"),
        ([boxes], BOX_CLASSES, "record 0: box outside image"),
    ]
    for records, classes, says in cases:
        manifest = write_manifest(tmp_path / "m.manifest", records, classes or CLASSES)
        if classes is None:
            (tmp_path / "label-categories.json").unlink()
        with pytest.raises(ReviewError, match=says):
            start_review_server(manifest, tmp_path / "out.manifest")


KILLED_REVIEWER = """
import sys
from pathlib import Path
from pipelines.labelling.review_session import ReviewSession

session = ReviewSession(Path(sys.argv[1]), Path(sys.argv[2]))
for n in range(100_000):
    session.decide({"index": n % 40, "action": "correct", "class": ["cat", "dog", "bird"][n % 3]})
    if n == 50:
        print("deciding", flush=True)
"""


def test_a_killed_reviewer_never_leaves_a_torn_output(tmp_path: Path) -> None:
    manifest = classification_manifest(tmp_path / "many", count=40)
    output = tmp_path / "out.manifest"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_REVIEWER), str(manifest), str(output)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == "deciding\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    records = read_lines(output)  # every line whole, whatever the moment of the kill
    assert 1 <= len(records) <= 40
    with start_review_server(manifest, output) as server:
        decided = get_json(server.url, "/api/state")["decided"]
    entries = [json.loads(line) for line in Path(f"{output}.journal").read_text().splitlines()]
    last = {e["decision"]["index"]: e["decision"]["class"] for e in entries}
    assert decided == len(last)
    assert {CLASSES.index(c) for c in last.values()} <= {0, 1, 2}
    assert [(r["prelabel-adjusted-metadata"]["class-name"]) for r in read_lines(output)] == [
        last[i] for i in sorted(last)
    ]


def test_the_command_prints_the_url_and_what_was_saved_on_ctrl_c(
    classification: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.manifest"
    command = [sys.executable, "-m", "pipelines.cli", "label", "review", str(classification),
               "--output", str(output), "--no-browser", "--workspace", str(tmp_path / "ws")]  # fmt: skip
    child = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.startswith("reviewing 4 classification records of ")
        url = first.rsplit(" ", 1)[-1].strip()
        assert urlsplit(url).hostname == "127.0.0.1"
        decide(url, {"index": 0, "action": "reject"})
        decide(url, {"index": 1, "action": "correct", "class": "cat"})
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0
    assert f"saved 2 of 4 decisions (0 accepted, 1 corrected, 1 rejected) to {output}" in rest
    assert [r["prelabel-adjusted"] for r in read_lines(output)] == [0]


def test_a_bad_manifest_is_one_line_and_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli import main

    manifest = tmp_path / "m.manifest"
    manifest.write_text('{"source-ref": "/x.png"}\n')
    assert main(["label", "review", str(manifest), "--no-browser", "--workspace", str(tmp_path)]) == 2
    assert "record 0: expected one label attribute with metadata" in capsys.readouterr().err
