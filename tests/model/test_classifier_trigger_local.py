"""The classifier's new-data rule, locally and for real: a labelled set landing under
<prefix>/raw-classifier/ starts one execution of the classifier's pipeline, which trains on it and
registers a classifier; a tub landing under raw/ starts nothing for it.

The pipeline is the classifier's real definition with defaults for a quick execution (one epoch, one edge
target, a threshold any model passes), because the trigger starts the stored pipeline with nothing but
``InputDataUrl``, as the snapshot function does on AWS. It trains with the built-in algorithm's local
stand-in, and the car classifies with what it registered: the built-in trainer's end-to-end run
(tests/model/test_classifier_pipeline_local.py runs the Gluon one), one pipeline run for both checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_classifier_pipeline_local import PHOTOS, SEED, car_classifies

from pipelines.cli import main
from pipelines.code_bundle import CodeBundle
from pipelines.control import build_definition, upsert
from pipelines.local.client import LocalPipelineClient
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import list_executions
from pipelines.settings import EXAMPLE_VALUES, Settings
from pipelines.synth import write_tub
from pipelines.synth_classes import write_classes

BUCKET = EXAMPLE_VALUES["bucket"]
TARGET = "rasp4b"
SETTINGS = Settings(
    **EXAMPLE_VALUES,
    prefix="robocar",
    pipeline_name="robocar-classifier",
    model_package_group="robocar-classifiers",
    endpoint_url=None,
    recipe="classifier",
    training_algorithm="builtin",
)
QUICK_DEFAULTS = {"Epochs": "1", "AccuracyThreshold": 0.0}


def quick_definition() -> str:
    definition = json.loads(build_definition(SETTINGS, [TARGET]))
    for parameter in definition["Parameters"]:
        parameter["DefaultValue"] = QUICK_DEFAULTS.get(parameter["Name"], parameter.get("DefaultValue"))
    return json.dumps(definition)


def land(s3: LocalS3Client, folder: Path, prefix: str) -> None:
    """`aws s3 sync`: every file under ``folder`` to ``prefix``, in key order (the manifest after images/)."""
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        if path.is_file():
            key = f"{prefix}{path.relative_to(folder).as_posix()}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())


@pytest.mark.slow
def test_a_landed_labelled_set_trains_and_registers_a_classifier_and_a_tub_does_not(
    shared_environments: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "ws"
    s3, pipelines = LocalS3Client(workspace), LocalPipelineClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    code = CodeBundle(bucket=SETTINGS.bucket, prefix=SETTINGS.prefix)
    upsert(pipelines, s3, definition=quick_definition(), settings=SETTINGS, code=code)
    watch = ["trigger", "watch", "--once", "--settle", "0", "--workspace", str(workspace), "--bucket", BUCKET]

    write_tub(tmp_path / "tubs" / "day_1", frames=20, sessions=1, seed=1)  # the pilot's data
    land(s3, tmp_path / "tubs", "robocar/raw/")
    assert main([*watch, "--recipe", "classifier"]) == 0
    assert "0 execution(s) started" in capsys.readouterr().out
    assert list_executions(workspace, "robocar-classifier") == []

    write_classes(tmp_path / "labels" / "set_1", classes=3, images=PHOTOS, seed=SEED)
    land(s3, tmp_path / "labels", "robocar/raw-classifier/")
    assert main([*watch, "--recipe", "classifier"]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert "new data s3://" + BUCKET + "/robocar/raw-classifier/set_1/output.manifest -> " in out
    assert "1 execution(s) started" in out
    (execution,) = list_executions(workspace, "robocar-classifier")
    assert execution.status == "Succeeded", execution.failure_reason
    (package,) = LocalSageMakerClient(workspace).list_model_packages(
        ModelPackageGroupName="robocar-classifiers"
    )["ModelPackageSummaryList"]
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    train_log = (execution.path / "logs" / "Train.log").read_text()
    assert "Epoch[0] Validation-accuracy=" in train_log
    # the stand-in got the algorithm's own hyperparameters, named as it names them
    assert "--num_layers 18" in train_log and "--num_training_samples" in train_log

    assert main([*watch, "--recipe", "classifier"]) == 0  # seen again: nothing new
    assert "0 execution(s) started, 1 already-delivered" in capsys.readouterr().out
    assert len(list_executions(workspace, "robocar-classifier")) == 1

    car_classifies(workspace, tmp_path, capsys)
