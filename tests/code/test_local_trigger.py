"""`robocar trigger watch`: a tub dropped into local S3 starts one execution; an approval rolls out."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from edge_fixtures import edge_metadata

from edge.local_aws import LocalS3Client, LocalSageMakerClient
from pipelines.local.client import LocalPipelineClient
from pipelines.local.trigger import TriggerConfig, poll_once, rollout_after_registry_change, state_path

BUCKET = "robocar-data-123456789012"
CONFIG = TriggerConfig(BUCKET, "robocar", "robocar-pipeline", "robocar-pilots")
RAW = "robocar/raw/"
TUB_FILES = [
    "catalog_0.catalog",
    "catalog_0.catalog_manifest",
    "images/0_cam_image_array_.jpg",
    "manifest.json",
]
# The smallest pipeline the local executor runs: records which InputDataUrl the trigger passed.
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "InputDataUrl", "Type": "String", "DefaultValue": "s3://nowhere/"}],
    "Steps": [
        {
            "Name": "SawData",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {"Type": "Equals", "LeftValue": {"Get": "Parameters.InputDataUrl"}, "RightValue": "x"}
                ],
                "IfSteps": [],
                "ElseSteps": [],
            },
        }
    ],
}


class RecordingSageMaker:
    """The control plane's two calls the trigger makes; slow enough to expose a double start."""

    def __init__(self, registry: LocalSageMakerClient) -> None:
        self.registry = registry
        self.exceptions = registry.exceptions
        self.starts: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def start_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        time.sleep(0.05)
        with self.lock:
            self.starts.append(kwargs)
            return {"PipelineExecutionArn": f"arn:local:execution/{len(self.starts)}"}

    def describe_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        return {"PipelineExecutionStatus": "Succeeded"}

    def __getattr__(self, name: str) -> Any:  # the registry calls go to the local registry
        return getattr(self.registry, name)


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    LocalS3Client(tmp_path).create_bucket(Bucket=BUCKET)
    return tmp_path


def upload_tub(s3: LocalS3Client, name: str) -> None:
    for file in sorted(TUB_FILES):  # `aws s3 sync` order: the manifest comes last
        s3.put_object(Bucket=BUCKET, Key=f"{RAW}{name}/{file}", Body=b"{}")


def test_a_tub_starts_one_execution_however_often_it_is_seen(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_1")
    s3.put_object(Bucket=BUCKET, Key="robocar/preprocess/train/dataset.json", Body=b"{}")  # not raw data

    first = poll_once(workspace, s3, sagemaker, CONFIG)
    second = poll_once(workspace, s3, sagemaker, CONFIG)

    assert [run["key"] for run in first.started] == [f"{RAW}tub_1/manifest.json"]
    assert first.not_matched == 3  # catalog, catalog manifest, image
    assert (second.started, second.duplicates) == ([], 1)
    (start,) = sagemaker.starts
    assert start["PipelineName"] == "robocar-pipeline"
    assert start["PipelineParameters"] == [{"Name": "InputDataUrl", "Value": f"s3://{BUCKET}/{RAW}"}]
    recorded = json.loads(state_path(workspace).read_text())["objects"]
    assert [entry["execution_arn"] for entry in recorded.values()] == ["arn:local:execution/1"]


def test_two_watchers_at_once_start_one_execution(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    s3.put_object(Bucket=BUCKET, Key=f"{RAW}tub_2.tar.gz", Body=b"archive")
    threads = [threading.Thread(target=poll_once, args=(workspace, s3, sagemaker, CONFIG)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sagemaker.starts) == 1


def test_a_rewritten_tub_is_new_data(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_3")
    poll_once(workspace, s3, sagemaker, CONFIG)
    manifest = s3.uri_to_path(f"s3://{BUCKET}/{RAW}tub_3/manifest.json")
    rewritten = manifest.stat().st_mtime - 10  # another modification time (in the past: settled)
    os.utime(manifest, (rewritten, rewritten))  # uploaded again: S3 sends a new event with a new sequencer
    report = poll_once(workspace, s3, sagemaker, CONFIG)
    assert len(report.started) == 1 and len(sagemaker.starts) == 2


def register(registry: LocalSageMakerClient, status: str) -> str:
    digest = "cd" * 32
    return registry.create_model_package(
        ModelPackageGroupName=CONFIG.model_package_group,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/i:1"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata(
            "rasp4b", f"s3://{BUCKET}/robocar/edge/q9x1b2c3d4e5/compiled/rasp4b/model.tar.gz", digest
        ),
        ModelApprovalStatus=status,
    )["ModelPackageArn"]


def test_approving_in_the_local_registry_rolls_out_once(workspace: Path) -> None:
    s3, registry = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    pending = register(registry, "PendingManualApproval")
    assert poll_once(workspace, s3, registry, CONFIG).rollouts == []  # pending: the rule does not match

    registry.update_model_package(ModelPackageArn=pending, ModelApprovalStatus="Approved")
    (rollout,) = poll_once(workspace, s3, registry, CONFIG).rollouts
    assert rollout["status"] == "deployed"
    assert rollout["componentVersion"] == "1.0.1"
    assert poll_once(workspace, s3, registry, CONFIG).rollouts == []  # the same state: no new event

    component = workspace / "greengrass" / "components" / "com.robocar.Pilot" / "1.0.1.json"
    recipe = json.loads(component.read_text())["recipe"]
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageArn"] == pending
    latest = json.loads((workspace / "greengrass" / "deployments" / "latest-robocar-cars.json").read_text())
    assert latest["components"]["com.robocar.Pilot"]["componentVersion"] == "1.0.1"
    assert latest["targetArn"] == CONFIG.thing_group_arn


def test_new_tub_to_execution_to_approval_to_rollout_with_the_local_control_plane(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), LocalPipelineClient(workspace)
    sagemaker.create_pipeline(
        PipelineName=CONFIG.pipeline_name, PipelineDefinition=json.dumps(DEFINITION),
        RoleArn="arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    )  # fmt: skip
    sagemaker.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    upload_tub(s3, "tub_4")

    (run,) = poll_once(workspace, s3, sagemaker, CONFIG).started
    assert run["status"] == "Succeeded"
    executions = sagemaker.list_pipeline_executions(PipelineName=CONFIG.pipeline_name)
    assert len(executions["PipelineExecutionSummaries"]) == 1
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=run["execution_arn"])
    assert described["PipelineExecutionStatus"] == "Succeeded"

    # what the pipeline's Register step does, then a person approves
    arn = register(sagemaker, "PendingManualApproval")
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    report = poll_once(workspace, s3, sagemaker, CONFIG)
    assert report.started == []
    assert [r["status"] for r in report.rollouts] == ["deployed"]


def test_a_pipeline_that_does_not_exist_leaves_the_tub_for_a_later_poll(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), LocalPipelineClient(workspace)
    upload_tub(s3, "tub_5")
    with pytest.raises(sagemaker.exceptions.ClientError, match="does not exist"):
        poll_once(workspace, s3, sagemaker, CONFIG)
    sagemaker.create_pipeline(
        PipelineName=CONFIG.pipeline_name, PipelineDefinition=json.dumps(DEFINITION),
        RoleArn="arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    )  # fmt: skip
    assert len(poll_once(workspace, s3, sagemaker, CONFIG).started) == 1


def test_cli_watch_once(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    LocalPipelineClient(workspace).create_pipeline(
        PipelineName="robocar-pipeline", PipelineDefinition=json.dumps(DEFINITION),
        RoleArn="arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    )  # fmt: skip
    upload_tub(LocalS3Client(workspace), "tub_6")
    argv = [
        "trigger",
        "watch",
        "--once",
        "--workspace",
        str(workspace),
        "--bucket",
        BUCKET,
        "--region",
        "us-east-1",
    ]
    assert main(argv) == 0
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("-> execution") == 1
    assert "1 execution(s) started" in out and "0 execution(s) started, 1 already-delivered" in out


def test_the_registry_hook_rolls_out_at_once_and_the_watcher_does_not_repeat_it(workspace: Path) -> None:
    s3, registry = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    arn = register(registry, "PendingManualApproval")
    registry.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")  # `registry approve`
    (line,) = rollout_after_registry_change(workspace, registry, CONFIG.model_package_group)
    assert line.startswith(f"approved {arn} -> component com.robocar.Pilot 1.0.1 deployed")
    assert poll_once(workspace, s3, registry, CONFIG).rollouts == []


def test_the_watcher_skips_unchanged_objects_but_sees_rewritten_ones(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_7")
    unchanged: dict[str, tuple[int, int]] = {}
    first = poll_once(workspace, s3, sagemaker, CONFIG, unchanged)
    again = poll_once(workspace, s3, sagemaker, CONFIG, unchanged)
    assert (len(first.started), first.not_matched) == (1, 3)
    assert (again.started, again.not_matched, again.duplicates) == ([], 0, 0)  # nothing was looked at
    manifest = s3.uri_to_path(f"s3://{BUCKET}/{RAW}tub_7/manifest.json")
    rewritten = manifest.stat().st_mtime - 10  # another modification time (in the past: settled)
    os.utime(manifest, (rewritten, rewritten))
    assert len(poll_once(workspace, s3, sagemaker, CONFIG, unchanged).started) == 1


def test_a_tub_still_being_copied_in_waits_until_it_has_settled(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_8")
    old = time.time() - 60
    for path in s3.uri_to_path(f"s3://{BUCKET}/{RAW}tub_8/").rglob("*"):
        os.utime(path, (old, old))
    image = s3.uri_to_path(f"s3://{BUCKET}/{RAW}tub_8/images/0_cam_image_array_.jpg")
    os.utime(image, None)  # one image still arriving, after the manifest
    waiting = poll_once(workspace, s3, sagemaker, CONFIG, settle_s=30)
    assert (waiting.started, waiting.deferred) == ([], 1)
    os.utime(image, (old, old))
    assert len(poll_once(workspace, s3, sagemaker, CONFIG, settle_s=30).started) == 1


def test_first_watch_leaves_tubs_the_last_execution_trained_on_and_starts_the_new_one(
    workspace: Path,
) -> None:
    s3, sagemaker = LocalS3Client(workspace), LocalPipelineClient(workspace)
    sagemaker.create_pipeline(
        PipelineName=CONFIG.pipeline_name, PipelineDefinition=json.dumps(DEFINITION),
        RoleArn="arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    )  # fmt: skip
    upload_tub(s3, "trained_on")
    old = time.time() - 60
    for path in s3.uri_to_path(f"s3://{BUCKET}/{RAW}trained_on/").rglob("*"):
        os.utime(path, (old, old))
    sagemaker.start_pipeline_execution(PipelineName=CONFIG.pipeline_name)  # e.g. `robocar run --local`
    upload_tub(s3, "dropped_in")  # after that execution: new data

    first = poll_once(workspace, s3, sagemaker, CONFIG)
    assert [run["key"] for run in first.started] == [f"{RAW}dropped_in/manifest.json"]
    assert first.already_processed == 1
    second = poll_once(workspace, s3, sagemaker, CONFIG)
    assert (second.started, second.already_processed, second.duplicates) == ([], 0, 2)


def test_cli_passes_its_timing_flags_to_the_watcher(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.cli import main
    from pipelines.local import trigger

    seen: dict[str, Any] = {}
    monkeypatch.setattr(trigger, "watch", lambda *args, **kwargs: seen.update(kwargs) or trigger.PollReport())
    assert (
        main(["trigger", "watch", "--workspace", str(workspace), "--interval", "7", "--settle", "0.5"]) == 0
    )
    assert (seen["interval_s"], seen["settle_s"], seen["once"]) == (7.0, 0.5, False)
    assert main(["trigger", "watch", "--workspace", str(workspace), "--settle", "-1"]) == 2


def test_robocar_registry_approve_locally_rolls_out_once(
    workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    from pipelines.cli import main as robocar

    s3, registry = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    arn = register(registry, "PendingManualApproval")
    approve = [
        "registry",
        "approve",
        "latest",
        "--workspace",
        str(workspace),
        "--group",
        CONFIG.model_package_group,
    ]
    assert robocar(approve) == 0
    out = capsys.readouterr().out
    assert f"Approved: {arn}" in out
    assert f"approved {arn} -> component com.robocar.Pilot 1.0.1 deployed" in out
    assert (workspace / "greengrass" / "components" / "com.robocar.Pilot" / "1.0.1.json").is_file()
    assert (
        poll_once(workspace, s3, registry, CONFIG).rollouts == []
    )  # delivered once, not again by the watcher
