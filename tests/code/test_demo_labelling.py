"""The demo's auto-labelling stage, its parts that need no model: the scripted correct reviewer through the
review server's HTTP API, the counts read back from the review's output, the truth of a synthetic
unlabelled set, and the summary lines from what the stages wrote."""

from __future__ import annotations

import shlex
from pathlib import Path

from review_fixtures import classification_manifest, read_lines

from pipelines.demo_labelling import (
    correct_reviewer,
    labelling_lines,
    review_counts,
    truth_classes,
)
from pipelines.labelling.review import start_review_server
from pipelines.synth_classes import write_classes

PREDICTED = {"photos": 100, "predicted": 100, "images_per_second": 412.34}
DATA = {"read": 700, "accepted": 700, "rejected": 0, "labels": {"human": 641, "machine": 59}}
RERUN = {**DATA, "read": 800, "rejected": 100, "rejected_by_reason": {"duplicate photo": 100}}
EVALUATION = {"multiclass_classification_metrics": {"accuracy": {"value": 0.990476}}, "test_images": 105}
PACKAGE = {
    "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-classifiers/2",
    "ModelApprovalStatus": "PendingManualApproval",
}
COMMAND = "robocar label review /ws/prelabels/to-review.manifest"


def test_the_correct_reviewer_accepts_right_prelabels_and_corrects_wrong_ones(tmp_path: Path) -> None:
    to_review = classification_manifest(tmp_path / "cls", count=4)  # pre-labels: cat dog bird cat
    truth = {"photo0.png": "cat", "photo1.jpg": "bird", "photo2.png": "bird"}  # photo3: no known class
    reviewed = tmp_path / "reviewed.manifest"
    with start_review_server(to_review, reviewed) as server:
        correct_reviewer(server.url, truth)
    assert review_counts(reviewed) == {"accepted": 2, "corrected": 1, "rejected": 1}
    classes = {
        Path(r["source-ref"]).name: r["prelabel-adjusted-metadata"]["class-name"]
        for r in read_lines(reviewed)
    }
    assert classes == truth
    (rejected,) = read_lines(Path(f"{reviewed}.rejected"))
    assert Path(rejected["source-ref"]).name == "photo3.jpg"


def test_review_counts_without_rejections(tmp_path: Path) -> None:
    to_review = classification_manifest(tmp_path / "cls", count=2)  # cat dog
    reviewed = tmp_path / "reviewed.manifest"
    with start_review_server(to_review, reviewed) as server:
        correct_reviewer(server.url, {"photo0.png": "dog", "photo1.jpg": "dog"})
    assert read_lines(Path(f"{reviewed}.rejected")) == []  # written, empty
    assert review_counts(reviewed) == {"accepted": 1, "corrected": 1, "rejected": 0}


def test_the_truth_of_an_unlabelled_set_names_each_photo(tmp_path: Path) -> None:
    summary = write_classes(tmp_path / "new", classes=3, images=9, seed=4, unlabelled=True)
    truth = truth_classes(summary.manifest)
    assert sorted(truth) == sorted(p.name for p in (tmp_path / "new" / "images").iterdir())
    assert sorted(set(truth.values())) == ["circle", "square", "triangle"]


def test_the_summary_lines_say_what_each_stage_did() -> None:
    review = {"accepted": 97, "corrected": 3, "rejected": 0}
    lines = labelling_lines(PREDICTED, review, DATA, EVALUATION, COMMAND, PACKAGE)
    assert lines == [
        "auto-labelling",
        "predict   100 of 100 new photos pre-labelled on the car's runtime: 412.3 photos/s",
        "review    97 accepted unchanged, 3 corrected, 0 rejected "
        "(a scripted correct reviewer, through the review page's API)",
        "retrain   700 photos read, 700 accepted: 641 human labels, 59 machine labels",
        "          test accuracy 0.9905 on 105 photos",
        f"          {PACKAGE['ModelPackageArn']} (PendingManualApproval)",
        f"by hand   {COMMAND}   (the same review in your browser)",
    ]
    assert shlex.split(lines[-1].split("   ")[1])[:3] == ["robocar", "label", "review"]
    rerun = labelling_lines(PREDICTED, review, RERUN, EVALUATION, COMMAND, PACKAGE)
    assert rerun[3] == (
        "retrain   800 photos read, 700 accepted (100 rejected: duplicate photo x100): "
        "641 human labels, 59 machine labels"
    )


def test_the_summary_says_when_nothing_was_retrained() -> None:
    review = {"accepted": 100, "corrected": 0, "rejected": 0}
    lines = labelling_lines(PREDICTED, review, None, None, COMMAND)
    assert lines[3] == "retrain   no new execution: these labels had landed already (delete the workspace)"
    assert len(lines) == 5


def test_robocar_demo_runs_the_loop_unless_told_not_to(monkeypatch) -> None:  # noqa: ANN001
    from pipelines import demo
    from pipelines.cli import main

    configs = []
    monkeypatch.setattr(demo, "main", lambda config: configs.append(config) or 0)
    assert main(["demo"]) == 0 and main(["demo", "--no-labelling"]) == 0
    assert [(c.classifier, c.labelling) for c in configs] == [(True, True), (True, False)]
