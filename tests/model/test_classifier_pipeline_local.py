"""The classifier recipe end to end on the local backend, as a user runs it: labelled photos ->
``robocar run --local --recipe classifier`` (Preprocess, Train in the MXNet environment, Evaluate,
CompileForEdge, Register) -> approve -> the car pulls the package and classifies photos it never saw.
The Gluon script here; the built-in algorithm's stand-in runs the same way, started by the new-data
trigger instead (tests/model/test_classifier_trigger_local.py asserts its run with ``car_classifies``).

Tiny on purpose (160 photos, one epoch from ImageNet weights, one edge target): about 30 s per run on 2
busy cores; the MXNet environment comes from the tests' cache (the ``mxnet_python`` fixture builds it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main as edge_main
from pipelines.cli import main
from pipelines.local.registry import LocalSageMakerClient
from pipelines.synth_classes import write_classes

GROUP = "robocar-classifiers"
TARGET = "rasp4b"
PHOTOS, SEED = 160, 21  # one epoch from ImageNet weights classifies unseen photos of this set ~1.0


def packages(workspace: Path) -> list[dict[str, Any]]:
    listed = LocalSageMakerClient(workspace).list_model_packages(ModelPackageGroupName=GROUP)
    return listed["ModelPackageSummaryList"]


def car_classifies(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The workspace's one registered classifier, approved, pulled by a car that classifies 12 photos it
    never saw: at least 9 right."""
    (package,) = packages(workspace)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    local = ["--workspace", str(workspace), "--recipe", "classifier"]
    assert main(["registry", "approve", "latest", *local]) == 0
    unseen = tmp_path / "unseen"
    write_classes(unseen, classes=3, images=12, seed=SEED + 1)
    car = ["--root", str(tmp_path / "car"), "--local-root", str(workspace), "--recipe", "classifier",
           "--target", TARGET]  # fmt: skip
    assert edge_main(["pull", *car]) == 0
    results = tmp_path / "classified.jsonl"
    capsys.readouterr()
    code = edge_main(["run", *car, "--no-pull", "--images", str(unseen / "images"), "--output", str(results)])
    assert code == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert "classified 12 photos" in out
    truth = {}
    for line in (unseen / "output.manifest").read_text().splitlines():
        record = json.loads(line)
        truth[record["source-ref"].rsplit("/", 1)[-1]] = record["category-metadata"]["class-name"]
    answers = [json.loads(line) for line in results.read_text().splitlines()]
    right = sum(answer["top"][0]["class"] == truth[os.path.basename(answer["origin"])] for answer in answers)
    assert len(answers) == 12 and right >= 9, answers  # one epoch from ImageNet weights: ~1.0 on this set


@pytest.mark.slow
def test_labelled_photos_to_a_car_that_classifies(
    shared_environments: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, labels = tmp_path / "ws", tmp_path / "labels"
    write_classes(labels / "set", classes=3, images=PHOTOS, seed=SEED)
    run = [
        "run", "--local", "--recipe", "classifier", "--training-algorithm", "gluon",
        "--workspace", str(workspace), "--data", str(labels), "--edge-targets", TARGET,
        "--param", "Epochs=1", "--param", "AccuracyThreshold=0.5",
    ]  # fmt: skip
    assert main(run) == 0, capsys.readouterr().err[-3000:]
    execution = next((workspace / "executions" / "robocar-classifier").iterdir())
    assert "Epoch[0] Validation-accuracy=" in (execution / "logs" / "Train.log").read_text()
    car_classifies(workspace, tmp_path, capsys)
