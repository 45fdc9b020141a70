"""`robocar trigger watch`: a tub dropped into local S3 starts one execution; an approval rolls out."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from edge_fixtures import edge_metadata, fake_model

from pipelines import aws_rules
from pipelines.datasets import read_manifest
from pipelines.local.client import LocalPipelineClient
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import (
    LocalGreengrassClient,
    TriggerConfig,
    poll_once,
    rollout_after_registry_change,
    state_path,
)

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
    ((parameter, dataset),) = [(p["Name"], p["Value"]) for p in start["PipelineParameters"]]
    assert parameter == "InputDataUrl" and dataset.startswith(f"s3://{BUCKET}/robocar/datasets/")
    assert read_manifest(s3.uri_to_path(dataset).read_bytes()) == (
        f"s3://{BUCKET}/{RAW}",
        [f"tub_1/{file}" for file in sorted(TUB_FILES)],  # the tub, not the step output beside raw/
    )
    assert start["ClientRequestToken"] == dataset.rsplit("/", 1)[1].removesuffix(".manifest")
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


def test_a_rewritten_tub_is_a_new_event_but_new_data_only_when_its_bytes_changed(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_3")
    poll_once(workspace, s3, sagemaker, CONFIG)
    manifest = s3.uri_to_path(f"s3://{BUCKET}/{RAW}tub_3/manifest.json")
    rewritten = manifest.stat().st_mtime - 10  # another modification time (in the past: settled)
    os.utime(manifest, (rewritten, rewritten))  # uploaded again: S3 sends a new event with a new sequencer
    report = poll_once(workspace, s3, sagemaker, CONFIG)
    assert len(report.started) == 1 and len(sagemaker.starts) == 2
    first, again = sagemaker.starts
    assert again == first  # the same bytes, the same dataset: the same request and token (AWS starts one)
    manifest.write_bytes(b'{"paths": ["catalog_0.catalog"]}')
    os.utime(manifest, (rewritten - 10, rewritten - 10))
    poll_once(workspace, s3, sagemaker, CONFIG)
    assert sagemaker.starts[2]["ClientRequestToken"] != first["ClientRequestToken"]  # changed bytes: new data


def artifact_key(tag: str) -> str:
    return f"robocar/edge/{tag}/compiled/rasp4b/model.tar.gz"  # under the execution id (contracts §0)


def register(registry: LocalSageMakerClient, status: str, *, tag: str = "v1", upload: bool = True) -> str:
    """What the Register step leaves behind: the compiled artifact in (local) S3 and the package."""
    archive = fake_model(tag)
    if upload:
        LocalS3Client(registry.root).put_object(Bucket=BUCKET, Key=artifact_key(tag), Body=archive)
    digest = hashlib.sha256(archive).hexdigest()
    return registry.create_model_package(
        ModelPackageGroupName=CONFIG.model_package_group,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/i:1"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata("rasp4b", f"s3://{BUCKET}/{artifact_key(tag)}", digest),
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


def test_two_tubs_of_one_dataset_start_one_execution_with_the_local_control_plane(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), LocalPipelineClient(workspace)
    sagemaker.create_pipeline(
        PipelineName=CONFIG.pipeline_name, PipelineDefinition=json.dumps(DEFINITION),
        RoleArn="arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    )  # fmt: skip
    upload_tub(s3, "tub_a")
    upload_tub(s3, "tub_b")  # both in place before the poll: two events, one dataset
    report = poll_once(workspace, s3, sagemaker, CONFIG)
    assert len(report.started) == 1 and len(report.same_dataset) == 1
    assert report.same_dataset[0]["execution_arn"] == report.started[0]["execution_arn"]
    assert "an unchanged dataset, already started as execution" in "\n".join(report.lines())
    executions = sagemaker.list_pipeline_executions(PipelineName=CONFIG.pipeline_name)
    assert len(executions["PipelineExecutionSummaries"]) == 1  # the token started it once


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


# ---------------------------------------------------------------- the local Greengrass stand-in
FLEET = {  # what a person deployed to the cars besides the pilot
    "aws.greengrass.Nucleus": {
        "componentVersion": "2.12.6",
        "configurationUpdate": {"merge": '{"logging":{}}'},
    },
    "com.example.Lidar": {"componentVersion": "1.2.0", "runWith": {"posixUser": "lidar"}},
}


def approve(registry: LocalSageMakerClient, workspace: Path, tag: str) -> list[str]:
    """`robocar registry approve`: a new package approved, delivered at once."""
    arn = register(registry, "PendingManualApproval", tag=tag)
    registry.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    return rollout_after_registry_change(workspace, registry, CONFIG.model_package_group)


def valid_responses(greengrass: LocalGreengrassClient) -> None:
    """The stand-in's answers have the shapes (and patterns) of botocore's greengrassv2 model."""
    listed = greengrass.list_deployments(targetArn=CONFIG.thing_group_arn, historyFilter="ALL")
    assert aws_rules.response_problems("greengrassv2", "ListDeployments", listed) == []
    for summary in listed["deployments"]:
        described = greengrass.get_deployment(deploymentId=summary["deploymentId"])
        assert aws_rules.response_problems("greengrassv2", "GetDeployment", described) == []


def test_the_stand_in_computes_each_artifact_digest_as_greengrass_does(workspace: Path) -> None:
    registry = LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    (line,) = approve(registry, workspace, "v1")
    assert line.endswith(f"deployed to {CONFIG.thing_group_arn}")
    stored = workspace / "greengrass" / "components" / "com.robocar.Pilot" / "1.0.1.json"
    (artifact,) = json.loads(stored.read_text())["recipe"]["Manifests"][0]["Artifacts"]
    archive = LocalS3Client(workspace).uri_to_path(artifact["URI"]).read_bytes()
    assert artifact["Algorithm"] == "SHA-256"
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(archive).digest()).decode()
    assert archive == fake_model("v1")


def test_the_stand_in_refuses_a_recipe_whose_artifact_is_missing_as_aws_does(workspace: Path) -> None:
    greengrass = LocalGreengrassClient(workspace)
    uri = f"s3://{BUCKET}/robocar/edge/nowhere/model.tar.gz"
    recipe = {
        "ComponentName": "com.example.X",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Artifacts": [{"URI": uri}]}],
    }
    with pytest.raises(greengrass.exceptions.ValidationException) as refused:
        greengrass.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    assert refused.value.response["Error"]["Message"] == (
        "Invalid Input: Encountered following errors in Artifacts: "
        f"{{{uri} = Specified artifact resource cannot be accessed}}"
    )
    assert not (workspace / "greengrass" / "components" / "com.example.X").exists()
    (workspace / "outside").write_bytes(b"not in S3")
    escaping = {**recipe, "Manifests": [{"Artifacts": [{"URI": f"s3://{BUCKET}/../../outside"}]}]}
    with pytest.raises(greengrass.exceptions.ValidationException, match="cannot be accessed"):
        greengrass.create_component_version(inlineRecipe=json.dumps(escaping).encode())

    registry = LocalSageMakerClient(workspace)  # through the rollout: reported, not raised
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    arn = register(registry, "Approved", upload=False)
    (line,) = rollout_after_registry_change(workspace, registry, CONFIG.model_package_group)
    assert line.startswith(f"rollout {arn}: failed: Greengrass refused the component version")
    assert "Specified artifact resource cannot be accessed" in line


def test_a_rollout_keeps_the_groups_other_components_and_replaces_only_the_pilot(workspace: Path) -> None:
    greengrass = LocalGreengrassClient(workspace)
    by_hand = greengrass.create_deployment(
        targetArn=CONFIG.thing_group_arn, deploymentName="fleet", components=FLEET, tags={"team": "cars"}
    )
    registry = LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    approve(registry, workspace, "v1")
    second = register(registry, "PendingManualApproval", tag="v2")
    registry.update_model_package(ModelPackageArn=second, ModelApprovalStatus="Approved")
    (line,) = rollout_after_registry_change(workspace, registry, CONFIG.model_package_group)
    assert "component com.robocar.Pilot 1.0.2 deployed" in line

    (latest,) = greengrass.list_deployments(targetArn=CONFIG.thing_group_arn)["deployments"]  # LATEST_ONLY
    current = greengrass.get_deployment(deploymentId=latest["deploymentId"])
    assert {name: spec for name, spec in current["components"].items() if name in FLEET} == FLEET
    pilot = current["components"]["com.robocar.Pilot"]
    assert pilot["componentVersion"] == "1.0.2"
    merged = json.loads(pilot["configurationUpdate"]["merge"])
    assert (merged["ModelPackageArn"], merged["ArtifactSha256"]) == (
        second,
        hashlib.sha256(fake_model("v2")).hexdigest(),
    )
    assert current["tags"]["team"] == "cars"
    assert (current["revisionId"], current["deploymentStatus"], current["isLatestForTarget"]) == (
        "3",
        "ACTIVE",
        True,
    )
    history = greengrass.list_deployments(targetArn=CONFIG.thing_group_arn, historyFilter="ALL")[
        "deployments"
    ]
    assert [d["deploymentStatus"] for d in history] == ["ACTIVE", "INACTIVE", "INACTIVE"]
    assert history[-1]["deploymentId"] == by_hand["deploymentId"]
    group = json.loads((workspace / "greengrass" / "deployments" / "latest-robocar-cars.json").read_text())
    assert set(group["components"]) == {*FLEET, "com.robocar.Pilot"}
    valid_responses(greengrass)


def test_a_deployment_replaces_the_groups_component_set_as_on_aws(workspace: Path) -> None:
    """What the rollout must avoid: a deployment that omits a component removes it from the group."""
    greengrass = LocalGreengrassClient(workspace)
    greengrass.create_deployment(targetArn=CONFIG.thing_group_arn, components=FLEET)
    greengrass.create_deployment(
        targetArn=CONFIG.thing_group_arn, components={"com.robocar.Pilot": {"componentVersion": "1.0.1"}}
    )
    group = json.loads((workspace / "greengrass" / "deployments" / "latest-robocar-cars.json").read_text())
    assert set(group["components"]) == {"com.robocar.Pilot"}
    valid_responses(greengrass)


def test_a_cancelled_group_deployment_is_revised_not_dropped(workspace: Path) -> None:
    greengrass = LocalGreengrassClient(workspace)
    registry = LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    greengrass.create_deployment(targetArn=CONFIG.thing_group_arn, components=FLEET)
    approve(registry, workspace, "v1")
    (ours,) = greengrass.list_deployments(targetArn=CONFIG.thing_group_arn)["deployments"]
    greengrass.cancel_deployment(deploymentId=ours["deploymentId"])
    assert greengrass.get_deployment(deploymentId=ours["deploymentId"])["deploymentStatus"] == "CANCELED"

    approve(registry, workspace, "v2")
    (latest,) = greengrass.list_deployments(targetArn=CONFIG.thing_group_arn)["deployments"]
    current = greengrass.get_deployment(deploymentId=latest["deploymentId"])
    assert set(current["components"]) == {*FLEET, "com.robocar.Pilot"}
    assert current["components"]["com.robocar.Pilot"]["componentVersion"] == "1.0.2"
    statuses = [
        d["deploymentStatus"] for d in greengrass.list_deployments(historyFilter="ALL")["deployments"]
    ]
    assert statuses == ["ACTIVE", "CANCELED", "INACTIVE"]


def test_a_redelivered_approval_creates_no_second_deployment(workspace: Path) -> None:
    registry = LocalSageMakerClient(workspace)
    registry.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    approve(registry, workspace, "v1")
    handler_result = _redeliver(workspace, registry)
    assert (handler_result["componentCreated"], handler_result["deploymentCreated"]) == (False, False)
    greengrass = LocalGreengrassClient(workspace)
    assert len(greengrass.list_deployments(historyFilter="ALL")["deployments"]) == 1


def _redeliver(workspace: Path, registry: LocalSageMakerClient) -> dict[str, Any]:
    """The same approval event again, straight to the function (EventBridge delivers at least once)."""
    from pipelines import events
    from pipelines.infra import load_rollout_handler

    handler = load_rollout_handler()
    (summary,) = registry.list_model_packages(ModelPackageGroupName=CONFIG.model_package_group)[
        "ModelPackageSummaryList"
    ]
    event = events.model_package_state_change_event(
        model_package_arn=summary["ModelPackageArn"],
        group=CONFIG.model_package_group,
        version=1,
        approval_status="Approved",
    )
    config = handler.RolloutConfig(
        CONFIG.model_package_group, CONFIG.component_name, CONFIG.edge_target, CONFIG.thing_group_arn
    )
    return handler.rollout(
        event, sagemaker=registry, greengrass=LocalGreengrassClient(workspace), config=config
    )


def test_the_same_client_token_answers_the_first_deployment(workspace: Path) -> None:
    greengrass = LocalGreengrassClient(workspace)
    request = {"targetArn": CONFIG.thing_group_arn, "components": FLEET, "clientToken": "abc-123"}
    first, again = greengrass.create_deployment(**request), greengrass.create_deployment(**request)
    assert first["deploymentId"] == again["deploymentId"]
    assert aws_rules.response_problems("greengrassv2", "CreateDeployment", first) == []
    with pytest.raises(greengrass.exceptions.ConflictException):
        greengrass.create_deployment(**{**request, "deploymentName": "other"})
    with pytest.raises(greengrass.exceptions.ResourceNotFoundException):
        greengrass.get_deployment(deploymentId="local-999999")
