"""The auto-labelling loop closed on the real classifier pipeline (issue 19, "how it will be checked"):
a small classifier trained by the new-data rule -> approved -> ``robocar data synth --unlabelled`` ->
``robocar label predict --via car`` -> the review page in Debian's Chromium, two records corrected (one by
key, one by click), reloaded with the corrections still shown, the rest accepted through the page's API ->
``robocar label land`` -> ``robocar trigger watch --once`` starts exactly one execution, which succeeds
and registers a new package; its data report counts the human labels, its split manifests hold the
corrected photos with the reviewer's classes and its Evaluate's per-photo file judges the one in test by
the reviewer's class.

The two photos corrected are chosen where Preprocess's hash split puts them (one in test, one in train:
``photo_split``, the function Preprocess uses, with the pipeline's seed 0 and 70/15/15), so both ends are
asserted on every run. Each is corrected to its true class where the model was wrong, else to another
class, so that the reviewer's class, not the model's, is what the test finds downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "code"))  # the review page's browser fixtures

from test_classifier_pipeline_local import packages  # noqa: E402
from test_classifier_trigger_local import BUCKET, SETTINGS, land, quick_definition  # noqa: E402
from test_review_page import browser, expect_record, expect_saved, open_page  # noqa: E402, F401 (fixtures)
from test_review_server import decide, get_json  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.code_bundle import CodeBundle  # noqa: E402
from pipelines.control import upsert  # noqa: E402
from pipelines.demo import _s3_json, output_uri  # noqa: E402
from pipelines.labelling import manifest  # noqa: E402
from pipelines.labelling.review import start_review_server  # noqa: E402
from pipelines.local.client import LocalPipelineClient  # noqa: E402
from pipelines.local.s3 import LocalS3Client  # noqa: E402
from pipelines.local.store import list_executions  # noqa: E402
from pipelines.synth_classes import write_classes  # noqa: E402
from processing.preprocess_classifier import photo_split  # noqa: E402
from processing.splits import fractions_from  # noqa: E402

PIPELINE = SETTINGS.pipeline_name
# The trigger test's set (tests/model/test_classifier_trigger_local.py): one epoch from ImageNet weights
# on 120 photos of 3 classes pre-labels new photos of the same shapes ~1.0 right.
PHOTOS, SEED = 120, 7
NEW_PHOTOS, NEW_SEED = 20, 32  # this seed puts 5 of the 20 in test and 15 in train (Preprocess, seed 0)
SPLIT_SEED, FRACTIONS = 0, fractions_from(0.7, 0.15)  # Preprocess's defaults, which the pipeline keeps


def truth_of(unlabelled: Path) -> dict[str, str]:
    """The synthetic set's labels, kept apart from its photos: photo name -> class name."""
    records = manifest.read_records(unlabelled / "truth" / "output.manifest")
    return {Path(r["source-ref"]).name: r["category-metadata"]["class-name"] for r in records}


def split_of(photo: Path) -> str:
    return photo_split(SPLIT_SEED, hashlib.sha256(photo.read_bytes()).hexdigest(), FRACTIONS)


def chosen_corrections(records: list[dict[str, Any]], truth: dict[str, str], classes: list[str]) -> dict:
    """Review index -> (photo, the reviewer's class) for the first record bound for test and the first
    bound for train."""
    chosen = {}
    for wanted in ("test", "train"):
        index = next(i for i, r in enumerate(records) if split_of(Path(r["source-ref"])) == wanted)
        photo = Path(records[index]["source-ref"])
        predicted = records[index]["prelabel-metadata"]["class-name"]
        right = truth[photo.name]
        chosen[index] = (
            photo,
            right if right != predicted else classes[(classes.index(right) + 1) % len(classes)],
        )
    return dict(sorted(chosen.items()))


def review_in_the_page(page: Any, url: str, journal: Path, total: int, corrections: dict) -> None:
    """Walk to each chosen record and correct it (the first by its number key, the second by its
    button), reload, and find both corrections shown."""
    from playwright.sync_api import expect

    page.goto(url)
    expect_record(page, 1, total)
    classes = get_json(url, "/api/state")["classes"]
    at = 0
    for done, (index, (_, name)) in enumerate(corrections.items(), start=1):
        at = walk(page, at, index, total)
        if done == 1:
            page.keyboard.press(str(classes.index(name) + 1))
        else:
            page.get_by_role("button", name=re.compile(rf"\b{name}\b")).click()
        expect_saved(page, journal, done)
        at = index + 1
    page.reload()  # opens at the first undecided record
    expect(page.locator("#progress-text")).to_have_text(f"2 of {total} decided")
    at = get_json(url, "/api/state")["next"]
    expect_record(page, at + 1, total)
    for index, (_, name) in corrections.items():
        at = walk(page, at, index, total)
        expect(page.locator("#decision")).to_have_text(f"Decided: corrected to {name}")


def walk(page: Any, at: int, to: int, total: int) -> int:
    """From record ``at`` to record ``to`` (0-based) with the page's j/k keys, one record at a time."""
    while at != to:
        page.keyboard.press("j" if to > at else "k")
        at += 1 if to > at else -1
        expect_record(page, at + 1, total)
    return at


@pytest.mark.slow
def test_two_corrections_in_the_page_retrain_the_classifier(
    shared_environments: None,
    open_page: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace = tmp_path / "ws"
    s3 = LocalS3Client(workspace)
    s3.create_bucket(Bucket=BUCKET)
    code = CodeBundle(bucket=SETTINGS.bucket, prefix=SETTINGS.prefix)
    upsert(LocalPipelineClient(workspace), s3, definition=quick_definition(), settings=SETTINGS, code=code)
    registry = ["--workspace", str(workspace), "--recipe", "classifier"]
    local = [*registry, "--bucket", BUCKET]
    watch = ["trigger", "watch", "--once", "--settle", "0", *local]

    write_classes(tmp_path / "labels" / "set_1", classes=3, images=PHOTOS, seed=SEED)
    land(s3, tmp_path / "labels", "robocar/raw-classifier/")
    assert main(watch) == 0, capsys.readouterr().err[-3000:]
    (first,) = list_executions(workspace, PIPELINE)
    assert first.status == "Succeeded", first.failure_reason
    assert main(["registry", "approve", "latest", *registry]) == 0

    new = tmp_path / "new-photos"
    synth = [
        "--classifier",
        "--unlabelled",
        "--classes",
        "3",
        "--images",
        str(NEW_PHOTOS),
        "--seed",
        str(NEW_SEED),
    ]
    assert main(["data", "synth", *synth, "--out", str(new)]) == 0
    out = tmp_path / "prelabels"
    predict = ["label", "predict", str(new / "images"), "--out", str(out), "--via", "car"]
    assert main([*predict, "--car-root", str(tmp_path / "labeller"), *local]) == 0
    records = manifest.read_records(out / manifest.TO_REVIEW)
    assert len(records) == NEW_PHOTOS  # --review-below 1 (the default): every photo to review
    classes = json.loads((out / "predict-report.json").read_text())["classes"]
    corrections = chosen_corrections(records, truth_of(new), classes)

    reviewed = out / "to-review.reviewed.manifest"
    with start_review_server(out / manifest.TO_REVIEW, reviewed) as server:
        review_in_the_page(open_page, server.url, Path(f"{reviewed}.journal"), NEW_PHOTOS, corrections)
        for index in sorted(set(range(NEW_PHOTOS)) - set(corrections)):
            decide(server.url, {"index": index, "action": "accept"})
        assert get_json(server.url, "/api/state")["decided"] == NEW_PHOTOS

    assert main(["label", "land", str(reviewed), *local]) == 0
    capsys.readouterr()
    assert main(watch) == 0, capsys.readouterr().err[-3000:]
    assert "1 execution(s) started" in capsys.readouterr().out
    executions = list_executions(workspace, PIPELINE)
    assert len(executions) == 2
    (second,) = [e for e in executions if e.path != first.path]
    assert second.status == "Succeeded", second.failure_reason
    assert len(packages(workspace)) == 2  # the retrained model registered beside the approved one

    before, data = (
        _s3_json(s3, f"{output_uri(e, 'Preprocess', 'report')}/data-report.json") for e in (first, second)
    )
    assert data["accepted"] == PHOTOS + NEW_PHOTOS and data["rejected"] == 0
    # every reviewed photo is a human label (the synthetic set marks some of its own as machine labels)
    assert data["labels"] == {
        "human": before["labels"]["human"] + NEW_PHOTOS,
        "machine": before["labels"]["machine"],
    }
    by_origin = {}
    for split in ("train", "validation", "test"):
        lines = (s3.uri_to_path(output_uri(second, "Preprocess", split)) / f"{split}.manifest").read_text()
        for line in map(json.loads, lines.splitlines()):
            by_origin[line["origin"]] = (split, line)
    evaluation = s3.uri_to_path(output_uri(second, "Evaluate", "evaluation"))
    assert (
        json.loads((evaluation / "evaluation.json").read_text())["predictions"]["file"] == "predictions.jsonl"
    )
    judged = {
        row["origin"]: row
        for row in map(json.loads, (evaluation / "predictions.jsonl").read_text().splitlines())
    }
    for photo, name in corrections.values():
        landed = f"images/{hashlib.sha256(photo.read_bytes()).hexdigest()}{photo.suffix}"
        (origin,) = [o for o in by_origin if o.startswith("labelled/") and o.endswith(landed)]
        split, line = by_origin[origin]
        assert split == split_of(photo)
        assert (line["class-metadata"]["class-name"], line["class-metadata"]["human-annotated"]) == (
            name,
            "yes",
        )
        if split == "test":
            assert judged[origin]["true"] == name
    assert sorted(split_of(photo) for photo, _ in corrections.values()) == ["test", "train"]
