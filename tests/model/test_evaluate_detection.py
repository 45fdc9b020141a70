"""processing/evaluate_detection.py in the MXNet environment on a stand-in deploy symbol
(tests/model/detection_standin.py) until training/detector.py's deploy_network lands: the heads run
through MXNet, are decoded by edge.detect.decode, scored, and drawn; the champion comes from the local
registry through the read-only readers, as in tests/model/test_evaluate_classifier.py."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
from mxnet_fixtures import REPO, run_in_mxnet
from PIL import Image
from test_evaluate_classifier import MODEL_URI, register_champion

from edge import aws

sys.path.insert(0, str(Path(__file__).parent))
from detection_standin import write_model, write_photos  # noqa: E402


def test_the_evaluation_of_a_detector(mxnet_python: str, tmp_path: Path) -> None:
    write_photos(tmp_path / "train", 30, seed=1)
    write_photos(tmp_path / "test", 14, seed=2)
    write_model(tmp_path / "model")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "model" / "detector-spec.json", arcname="detector-spec.json")
    out, workspace = tmp_path / "evaluation", tmp_path / "workspace"
    champion = register_champion(workspace, archive)
    done = run_in_mxnet(
        mxnet_python,
        [str(REPO / "tests" / "model" / "detection_standin.py"), "evaluate",
         *("--model", str(tmp_path / "model"), "--test", str(tmp_path / "test")),
         *("--train", str(tmp_path / "train"), "--output", str(out)),
         *("--model-package-group", "robocar-classifiers", "--edge-targets", "jetson_nano"),
         *("--model-s3-uri", MODEL_URI)],
        env={aws.LOCAL_ROOT_ENV: str(workspace), aws.LOCAL_CLIENTS_ENV: os.environ[aws.LOCAL_CLIENTS_ENV]},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "map_50=1 " in done.stdout and "champion_map_50=1 " in done.stdout
    evaluation = json.loads((out / "evaluation.json").read_text())
    metrics = evaluation["detection_metrics"]
    assert evaluation["recipe"] == "detection" and evaluation["test_images"] == 14
    assert evaluation["classes"] == ["red", "blue", "never"]
    # the stand-in finds every square at its exact box: AP 1 at every IoU threshold
    assert metrics["map_50"]["value"] == 1.0 and metrics["map_50_95"]["value"] == 1.0
    assert metrics["per_class_ap_50"] == {"red": 1.0, "blue": 1.0, "never": None}
    # the mean boxes of the train set are the squares' boxes too (they never move), but the baseline
    # predicts both in every photo: each class's absent photos are false positives tied with the hits
    baseline = evaluation["baseline"]
    assert baseline["boxes"]["red"]["box"] == [0.1, 0.1, 0.4, 0.4]
    assert 0.0 < baseline["map_50"]["value"] < 1.0
    # the champion is this very model, downloaded from the local registry's S3 and evaluated again
    assert evaluation["champion"] == {
        "model_package_arn": champion, "model_data_url": MODEL_URI,
        "map_50": {"value": 1.0}, "map_50_95": {"value": 1.0},
    }  # fmt: skip
    assert evaluation["already_registered"] is True
    for name in ("precision_recall.png", "detections.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
            assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 3
