"""The detection recipe end to end on the local backend: boxed photos -> ``robocar run --local --recipe
detection`` (Preprocess, Train the SSD in the MXNet environment, Evaluate mAP, CompileForEdge, Register)
-> approve -> the car pulls the package and reports boxes on photos it never saw.

Tiny on purpose (160 photos, 2 epochs, a threshold any model passes): the plumbing, not the quality,
which benchmarks and tests/model/test_detector_training.py hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main as edge_main
from pipelines.cli import main
from pipelines.local.registry import LocalSageMakerClient
from pipelines.synth_boxes import write_boxes

GROUP = "robocar-detectors"
TARGET = "rasp4b"


@pytest.mark.slow
def test_boxed_photos_to_a_car_that_detects(
    shared_environments: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace, labels = tmp_path / "ws", tmp_path / "labels"
    write_boxes(labels / "set", classes=3, images=160, seed=31)
    run = [
        "run", "--local", "--recipe", "detection", "--workspace", str(workspace), "--data", str(labels),
        "--edge-targets", TARGET, "--param", "Epochs=2", "--param", "MapThreshold=0.0",
    ]  # fmt: skip
    assert main(run) == 0, capsys.readouterr().err[-3000:]
    listed = LocalSageMakerClient(workspace).list_model_packages(ModelPackageGroupName=GROUP)
    (package,) = listed["ModelPackageSummaryList"]
    execution = next((workspace / "executions" / "robocar-detector").iterdir())
    assert "Validation-mAP=" in (execution / "logs" / "Train.log").read_text()

    assert (
        main(["registry", "approve", "latest", "--workspace", str(workspace), "--recipe", "detection"]) == 0
    )
    unseen = tmp_path / "unseen"
    write_boxes(unseen, classes=3, images=6, seed=32)
    car = ["--root", str(tmp_path / "car"), "--local-root", str(workspace), "--recipe", "detection",
           "--target", TARGET]  # fmt: skip
    assert edge_main(["pull", *car]) == 0
    results = tmp_path / "detected.jsonl"
    capsys.readouterr()
    code = edge_main(["run", *car, "--no-pull", "--images", str(unseen / "images"), "--output", str(results)])
    assert code == 0, capsys.readouterr().err[-3000:]
    answers = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(answers) == 6 and all("boxes" in answer for answer in answers), answers[:1]
    assert package["ModelPackageArn"].endswith("/1")
