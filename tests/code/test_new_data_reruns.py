"""Issue 13's scenario, locally: a run, an identical rerun that registers nothing, then a new tub that
`robocar trigger watch` turns into an execution that preprocesses, trains and registers anew.

The sample pipeline (trivial scripts, seconds) with the pilot's own Preprocess input: the ``tubs``
ManifestFile input the real definition builds, transplanted as it is; and the pilot's own Preprocess
step on a snapshot of synthetic tubs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sample_pipeline as sample
from definition_fixtures import PILOT_SETTINGS

from pipelines import datasets
from pipelines.cli import main
from pipelines.code_bundle import CodeBundle
from pipelines.local import run_local
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import list_executions

SETTINGS = PILOT_SETTINGS  # the settings pilot_definition_text is built with
FLAGS = ["--bucket", sample.BUCKET, "--prefix", "sample", "--pipeline-name", "sample"]


@pytest.fixture(scope="module")
def pilot(pilot_definition_text: str) -> dict[str, Any]:
    return json.loads(pilot_definition_text)


@pytest.fixture(scope="module")
def pilot_tubs_input(pilot: dict[str, Any]) -> dict[str, Any]:
    (preprocess,) = [step for step in pilot["Steps"] if step["Name"] == "Preprocess"]
    (tubs,) = [i for i in preprocess["Arguments"]["ProcessingInputs"] if i["InputName"] == "tubs"]
    assert tubs["S3Input"]["S3DataType"] == "ManifestFile"
    return tubs


@pytest.fixture()
def definition_file(tmp_path: Path, pilot_tubs_input: dict[str, Any]) -> Path:
    definition = sample.definition()
    inputs = definition["Steps"][0]["Arguments"]["ProcessingInputs"]
    (data,) = [i for i in inputs if i["InputName"] == "data"]
    assert data["S3Input"]["LocalPath"] == pilot_tubs_input["S3Input"]["LocalPath"]  # where the script reads
    inputs[inputs.index(data)] = pilot_tubs_input
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    return path


def steps_run(workspace: Path) -> dict[str, str | None]:
    """Each step of the newest execution -> the execution it came from (None: it ran)."""
    newest = list_executions(workspace, "sample")[0]
    assert newest.status == "Succeeded", newest.failure_reason
    return {name: record.cache_hit_from for name, record in newest.steps.items()}


def packages(workspace: Path) -> list[str]:
    listed = LocalSageMakerClient(workspace).list_model_packages(ModelPackageGroupName=sample.GROUP)
    return [p["ModelPackageArn"] for p in listed["ModelPackageSummaryList"]]


def test_a_rerun_registers_nothing_and_a_new_tub_is_trained_on_and_registered(
    tmp_path: Path, definition_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "ws"
    s3 = LocalS3Client(workspace)
    sample.upload_sample(s3)
    run = ["run", "--local", "--workspace", str(workspace), "--definition", str(definition_file), *FLAGS]

    assert main(run) == 0
    first = list_executions(workspace, "sample")[0]
    assert all(hit is None for hit in steps_run(workspace).values())
    assert len(packages(workspace)) == 1

    assert main(run) == 0  # the same data, the same code and parameters
    rerun = steps_run(workspace)
    assert (rerun["Preprocess"], rerun["Train"]) == (first.arn, first.arn)
    assert rerun["Evaluate"] is None and "Register" not in rerun and "CompileForEdge" not in rerun
    assert list_executions(workspace, "sample")[0].steps["ShouldRegister"].outcome == "False"
    assert len(packages(workspace)) == 1  # no second copy of the same model
    capsys.readouterr()

    for name in ("catalog_0.catalog", "images/0_cam_image_array_.jpg", "manifest.json"):  # a new tub
        s3.put_object(Bucket=sample.BUCKET, Key=f"sample/raw/tub_2/{name}", Body=b"{}")
    watch = ["trigger", "watch", "--once", "--settle", "0", "--workspace", str(workspace), *FLAGS]
    assert main(watch) == 0
    out = capsys.readouterr().out
    assert (
        "new data s3://sample-bucket/sample/raw/tub_2/manifest.json -> s3://sample-bucket/sample/datasets/"
        in out
    )
    assert "1 execution(s) started" in out
    triggered = list_executions(workspace, "sample")[0]
    assert triggered.parameters["InputDataUrl"] != first.parameters["InputDataUrl"]  # a new dataset
    assert {name: hit for name, hit in steps_run(workspace).items() if hit} == {}  # everything ran
    assert len(packages(workspace)) == 2
    frames = s3.uri_to_path(
        triggered.steps["Preprocess"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    )
    assert "tub_2/manifest.json" in json.loads((frames / "frames.json").read_text())["records"]

    assert main(watch) == 0  # seen again: nothing new
    assert "0 execution(s) started" in capsys.readouterr().out and len(packages(workspace)) == 2


def test_the_pilots_own_preprocess_reads_the_tubs_a_snapshot_lists(
    tmp_path: Path, pilot: dict[str, Any]
) -> None:
    """processing/preprocess.py, run by the executor as the pilot's Preprocess step, finds every tub."""
    assert (
        main(["data", "synth", "--out", str(tmp_path / "tubs" / "synth"), "--frames", "60", "--seed", "3"])
        == 0
    )
    workspace = tmp_path / "ws"
    s3 = LocalS3Client(workspace)
    s3.create_bucket(Bucket=SETTINGS.bucket)
    CodeBundle(SETTINGS.bucket, SETTINGS.prefix).upload(s3, json.dumps(pilot))  # the bundles it names
    for path in sorted((tmp_path / "tubs").rglob("*")):
        if path.is_file():
            key = f"robocar/raw/{path.relative_to(tmp_path / 'tubs').as_posix()}"
            s3.upload_file(str(path), SETTINGS.bucket, key)
    dataset = datasets.snapshot(
        s3, datasets.raw_uri(SETTINGS.bucket, "robocar"), datasets.datasets_uri(SETTINGS.bucket, "robocar")
    )
    preprocess_only = {**pilot, "Steps": [step for step in pilot["Steps"] if step["Name"] == "Preprocess"]}
    execution = run_local(
        preprocess_only, workspace, {"InputDataUrl": dataset.manifest_uri}, pipeline_name="robocar-pipeline"
    )
    assert execution.status == "Succeeded", execution.failure_reason
    outputs = execution.steps["Preprocess"].properties["ProcessingOutputConfig"]["Outputs"]
    (report,) = [o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == "report"]
    total = json.loads((s3.uri_to_path(report) / "data_report.json").read_text())["total"]
    assert (total["read"], total["accepted"]) == (60, 60)
