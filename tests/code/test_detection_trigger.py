"""`robocar trigger watch --recipe detection`: a landed bounding-box set under raw-detection/ starts the
detector's pipeline once (the classifier's sets do not); an approved detector reaches its own cars as
com.robocar.Detector, the stack's rules on AWS (infra/template.yaml) doing the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_classifier_trigger import _register, upload_labelled_set
from test_local_trigger import BUCKET, CONFIG, RecordingSageMaker

from pipelines.datasets import read_manifest
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import TriggerConfig, poll_once, recipe_of_group, rollout_after_registry_change
from pipelines.synth_boxes import Box, bounding_box_line

DETECTION = TriggerConfig(BUCKET, "robocar", "robocar-detector", "robocar-detectors", recipe="detection")
RAW_DETECTION = "robocar/raw-detection/"


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    LocalS3Client(tmp_path).create_bucket(Bucket=BUCKET)
    return tmp_path


def upload_boxed_set(s3: LocalS3Client, name: str) -> list[str]:
    """A bounding-box labelling job's output as `aws s3 sync` lands it: two photos, then the manifest."""
    keys, lines = [], []
    for index in range(2):
        key = f"{RAW_DETECTION}{name}/images/{index:06d}.jpg"
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"photo {name} {index}".encode())
        keys.append(key)
        lines.append(
            bounding_box_line(
                f"images/{index:06d}.jpg", (64, 48, 3), [Box(index, 4, 4, 20, 16)], ("circle", "square"),
                attribute="bounding-box", job_name="boxes", created=datetime(2026, 11, 1, tzinfo=UTC),
                confidences=[0.9],
            )
        )  # fmt: skip
    key = f"{RAW_DETECTION}{name}/output.manifest"
    s3.put_object(Bucket=BUCKET, Key=key, Body="".join(lines).encode())
    return [*keys, key]


def test_a_boxed_set_starts_one_detector_execution_and_a_classifier_set_starts_none(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_labelled_set(s3, "set_1")  # the classifier's data, under raw-classifier/
    keys = upload_boxed_set(s3, "boxes_1")

    first = poll_once(workspace, s3, sagemaker, DETECTION)
    second = poll_once(workspace, s3, sagemaker, DETECTION)

    assert [run["key"] for run in first.started] == [f"{RAW_DETECTION}boxes_1/output.manifest"]
    assert (second.started, second.duplicates) == ([], 1)
    (start,) = sagemaker.starts
    assert start["PipelineName"] == "robocar-detector"
    dataset = start["PipelineParameters"][0]["Value"]
    assert read_manifest(s3.uri_to_path(dataset).read_bytes()) == (
        f"s3://{BUCKET}/{RAW_DETECTION}",
        sorted(key.removeprefix(RAW_DETECTION) for key in keys),  # the boxed set, never the classifier's
    )


def test_an_approved_detector_goes_to_the_detectors_cars_as_its_own_component(workspace: Path) -> None:
    s3, registry = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    _register(registry, CONFIG.model_package_group, "pilot")
    poll_once(workspace, s3, registry, CONFIG)
    detector = _register(registry, DETECTION.model_package_group, "detector")

    (rollout,) = poll_once(workspace, s3, registry, DETECTION).rollouts

    assert (rollout["status"], rollout["modelPackageArn"]) == ("deployed", detector)
    assert rollout["componentName"] == "com.robocar.Detector"
    assert rollout["targetArn"] == "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-detector-cars"
    deployments = workspace / "greengrass" / "deployments"
    assert set(json.loads((deployments / "latest-robocar-cars.json").read_text())["components"]) == {
        "com.robocar.Pilot"
    }
    detector_cars = json.loads((deployments / "latest-robocar-detector-cars.json").read_text())
    assert set(detector_cars["components"]) == {"com.robocar.Detector"}
    recipe = json.loads(
        (workspace / "greengrass" / "components" / "com.robocar.Detector" / "1.0.1.json").read_text()
    )["recipe"]
    assert (
        recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageGroup"] == "robocar-detectors"
    )


def test_approving_a_detector_by_its_arn_rolls_it_out_as_the_detector(workspace: Path) -> None:
    """`robocar registry approve --local` (its registry hook) names the recipe by the package's group."""
    assert recipe_of_group("robocar-detectors") == "detection"
    registry = LocalSageMakerClient(workspace)
    arn = _register(registry, "robocar-detectors", "d1")
    (line,) = rollout_after_registry_change(workspace, registry, "robocar-detectors", recipe="detection")
    assert line == (
        f"approved {arn} -> component com.robocar.Detector 1.0.1 deployed to "
        "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-detector-cars"
    )


def test_cli_watch_once_for_the_detector(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_classifier_trigger import ROLE
    from test_local_trigger import DEFINITION

    from pipelines.cli import main
    from pipelines.local.client import LocalPipelineClient

    client = LocalPipelineClient(workspace)
    for name in ("robocar-classifier", "robocar-detector"):
        client.create_pipeline(PipelineName=name, PipelineDefinition=json.dumps(DEFINITION), RoleArn=ROLE)
    s3 = LocalS3Client(workspace)
    upload_labelled_set(s3, "set_1")
    upload_boxed_set(s3, "boxes_1")
    argv = ["trigger", "watch", "--once", "--settle", "0", "--workspace", str(workspace), "--bucket", BUCKET]

    assert main([*argv, "--recipe", "detection"]) == 0
    out = capsys.readouterr().out
    assert f"watching s3://{BUCKET}/{RAW_DETECTION} " in out
    assert f"new data s3://{BUCKET}/{RAW_DETECTION}boxes_1/output.manifest -> " in out
    executions = {
        name: client.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"]
        for name in ("robocar-classifier", "robocar-detector")
    }
    assert (len(executions["robocar-detector"]), executions["robocar-classifier"]) == (1, [])
