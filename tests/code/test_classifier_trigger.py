"""`robocar trigger watch --recipe classifier`: a landed Ground Truth set starts the classifier's pipeline
once; tubs do not; the pilot's watch ignores raw-classifier/; an approved classifier reaches its own cars."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edge_fixtures import edge_metadata, fake_model
from test_local_trigger import BUCKET, CONFIG, DEFINITION, RecordingSageMaker, upload_tub

from pipelines import event_pattern, events
from pipelines.datasets import read_manifest
from pipelines.local.client import LocalPipelineClient
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import (
    TriggerConfig,
    poll_once,
    recipe_of_group,
    rollout_after_registry_change,
)
from pipelines.synth_classes import ground_truth_line

CLASSIFIER = TriggerConfig(
    BUCKET, "robocar", "robocar-classifier", "robocar-classifiers", recipe="classifier"
)
RAW_CLASSIFIER = "robocar/raw-classifier/"
PHOTOS = 3
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution"


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    LocalS3Client(tmp_path).create_bucket(Bucket=BUCKET)
    return tmp_path


def upload_labelled_set(s3: LocalS3Client, name: str, *, manifest: bool = True) -> list[str]:
    """A labelling job's output as `aws s3 sync` lands it: the photos, then the output manifest naming
    them (relative refs: beside the manifest). Returns the keys in upload order."""
    keys, lines = [], []
    for index in range(PHOTOS):
        key = f"{RAW_CLASSIFIER}{name}/images/{index:06d}.jpg"
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"photo {name} {index}".encode())
        keys.append(key)
        created = datetime(2026, 11, 1, tzinfo=UTC)
        lines.append(
            ground_truth_line(
                f"images/{index:06d}.jpg", index % 2, ("circle", "square")[index % 2],
                attribute="category", job_name="cars", created=created, confidence=0.9,
            )
        )  # fmt: skip
    if manifest:
        key = f"{RAW_CLASSIFIER}{name}/output.manifest"
        s3.put_object(Bucket=BUCKET, Key=key, Body="".join(lines).encode())
        keys.append(key)
    return keys


def test_the_classifiers_rule_matches_ground_truth_manifests_under_its_folder_only() -> None:
    pattern = events.new_data_pattern(BUCKET, RAW_CLASSIFIER, "classifier")
    keys = [
        f"{RAW_CLASSIFIER}set_1/output.manifest",
        f"{RAW_CLASSIFIER}set_1/images/000000.jpg",
        f"{RAW_CLASSIFIER}cars.manifest",
        f"{RAW_CLASSIFIER}set_2/manifest.json",  # a tub's marker: not the classifier's data
        f"{RAW_CLASSIFIER}tubs.tar.gz",
        "robocar/raw/set_1/output.manifest",  # the pilot's folder
        f"robocar/datasets/{'a' * 64}.manifest",  # the snapshot function's own manifests
    ]
    matched = [k for k in keys if event_pattern.matches(pattern, events.s3_object_created_event(BUCKET, k))]
    assert matched == [f"{RAW_CLASSIFIER}set_1/output.manifest", f"{RAW_CLASSIFIER}cars.manifest"]
    assert CLASSIFIER.new_data_pattern() == pattern
    with pytest.raises(ValueError, match="no recipe 'other'"):
        events.new_data_pattern(BUCKET, RAW_CLASSIFIER, "other")


def test_a_labelled_set_starts_one_classifier_execution_and_a_tub_starts_none(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_tub(s3, "tub_1")  # the pilot's data, under raw/
    keys = upload_labelled_set(s3, "set_1")

    first = poll_once(workspace, s3, sagemaker, CLASSIFIER)
    second = poll_once(workspace, s3, sagemaker, CLASSIFIER)

    assert [run["key"] for run in first.started] == [f"{RAW_CLASSIFIER}set_1/output.manifest"]
    assert first.not_matched == PHOTOS  # the photos; the tub is not even listed
    assert (second.started, second.duplicates) == ([], 1)
    (start,) = sagemaker.starts
    assert start["PipelineName"] == "robocar-classifier"
    ((name, dataset),) = [(p["Name"], p["Value"]) for p in start["PipelineParameters"]]
    assert name == "InputDataUrl" and dataset.startswith(f"s3://{BUCKET}/robocar/datasets/")
    assert read_manifest(s3.uri_to_path(dataset).read_bytes()) == (
        f"s3://{BUCKET}/{RAW_CLASSIFIER}",
        sorted(key.removeprefix(RAW_CLASSIFIER) for key in keys),  # the set, never the tub
    )
    assert start["ClientRequestToken"] == dataset.rsplit("/", 1)[1].removesuffix(".manifest")


def test_the_pilots_watch_ignores_raw_classifier(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_labelled_set(s3, "set_1")
    s3.put_object(Bucket=BUCKET, Key=f"{RAW_CLASSIFIER}tubs.tar.gz", Body=b"not the pilot's folder")
    assert poll_once(workspace, s3, sagemaker, CONFIG).started == []
    upload_tub(s3, "tub_1")
    report = poll_once(workspace, s3, sagemaker, CONFIG)
    assert [run["key"] for run in report.started] == ["robocar/raw/tub_1/manifest.json"]
    (start,) = sagemaker.starts
    assert start["PipelineName"] == "robocar-pipeline"
    prefix, listed = read_manifest(s3.uri_to_path(start["PipelineParameters"][0]["Value"]).read_bytes())
    assert prefix == f"s3://{BUCKET}/robocar/raw/" and all(key.startswith("tub_1/") for key in listed)


def _age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_a_manifest_waits_until_the_photos_in_its_folder_have_settled(workspace: Path) -> None:
    """A manifest copied before its photos (`cp -r`, a parallel sync) must not start on half the set."""
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    keys = upload_labelled_set(s3, "set_1")
    manifest, photos = keys[-1], keys[:-1]
    _age(s3.uri_to_path(f"s3://{BUCKET}/{manifest}"), 600)  # the manifest is old, one photo just landed
    for key in photos[:-1]:
        _age(s3.uri_to_path(f"s3://{BUCKET}/{key}"), 600)

    waiting = poll_once(workspace, s3, sagemaker, CLASSIFIER, settle_s=60)
    assert (waiting.deferred, waiting.started, sagemaker.starts) == (1, [], [])

    _age(s3.uri_to_path(f"s3://{BUCKET}/{photos[-1]}"), 600)
    settled = poll_once(workspace, s3, sagemaker, CLASSIFIER, settle_s=60)
    assert [run["key"] for run in settled.started] == [manifest]


def test_photos_without_a_manifest_start_nothing(workspace: Path) -> None:
    s3, sagemaker = LocalS3Client(workspace), RecordingSageMaker(LocalSageMakerClient(workspace))
    upload_labelled_set(s3, "set_1", manifest=False)  # the labelling job has not finished
    report = poll_once(workspace, s3, sagemaker, CLASSIFIER)
    assert (report.started, report.not_matched, sagemaker.starts) == ([], PHOTOS, [])


def _register(registry: LocalSageMakerClient, group: str, tag: str) -> str:
    """An approved package of ``group`` whose compiled artifact is in (local) S3."""
    archive = fake_model(tag)
    key = f"robocar/edge/{tag}/compiled/rasp4b/model.tar.gz"
    LocalS3Client(registry.root).put_object(Bucket=BUCKET, Key=key, Body=archive)
    registry.create_model_package_group(ModelPackageGroupName=group)
    return registry.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/i:1"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata(
            "rasp4b", f"s3://{BUCKET}/{key}", hashlib.sha256(archive).hexdigest()
        ),
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]


def test_an_approved_classifier_goes_to_the_classifiers_cars_as_its_own_component(workspace: Path) -> None:
    """A car runs one model: the classifier's component goes to its own thing group, and the pilot's
    group keeps exactly the pilot."""
    s3, registry = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    pilot = _register(registry, CONFIG.model_package_group, "pilot")
    (pilot_rollout,) = poll_once(workspace, s3, registry, CONFIG).rollouts
    classifier = _register(registry, CLASSIFIER.model_package_group, "classifier")

    (rollout,) = poll_once(workspace, s3, registry, CLASSIFIER).rollouts

    assert pilot_rollout["modelPackageArn"] == pilot
    assert (rollout["status"], rollout["modelPackageArn"]) == ("deployed", classifier)
    assert rollout["componentName"] == "com.robocar.Classifier"
    assert rollout["targetArn"] == "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-classifier-cars"
    assert rollout["keptComponents"] == []  # not the pilot's deployment: another group
    deployments = workspace / "greengrass" / "deployments"
    cars = json.loads((deployments / "latest-robocar-cars.json").read_text())
    classifier_cars = json.loads((deployments / "latest-robocar-classifier-cars.json").read_text())
    assert set(cars["components"]) == {"com.robocar.Pilot"}
    assert set(classifier_cars["components"]) == {"com.robocar.Classifier"}
    recipe = json.loads(
        (workspace / "greengrass" / "components" / "com.robocar.Classifier" / "1.0.1.json").read_text()
    )["recipe"]
    assert (
        recipe["ComponentConfiguration"]["DefaultConfiguration"]["ModelPackageGroup"] == "robocar-classifiers"
    )
    assert poll_once(workspace, s3, registry, CONFIG).rollouts == []  # the pilot's watch: not its group


def test_approving_a_classifier_by_its_arn_rolls_it_out_as_the_classifier(workspace: Path) -> None:
    """`robocar registry approve --local` names the recipe by the package's group when it is a recipe's."""
    assert recipe_of_group("robocar-classifiers") == "classifier"
    assert recipe_of_group("robocar-pilots", "classifier") == "pilot"
    assert recipe_of_group("team-a-classifiers", "classifier") == "classifier"  # the command's --recipe
    registry = LocalSageMakerClient(workspace)
    arn = _register(registry, "robocar-classifiers", "c1")
    (line,) = rollout_after_registry_change(workspace, registry, "robocar-classifiers", recipe="classifier")
    assert line == (
        f"approved {arn} -> component com.robocar.Classifier 1.0.1 deployed to "
        "arn:aws:iot:us-east-1:123456789012:thinggroup/robocar-classifier-cars"
    )


def test_cli_watch_once_for_the_classifier(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    client = LocalPipelineClient(workspace)
    for name in ("robocar-pipeline", "robocar-classifier"):
        client.create_pipeline(PipelineName=name, PipelineDefinition=json.dumps(DEFINITION), RoleArn=ROLE)
    s3 = LocalS3Client(workspace)
    upload_tub(s3, "tub_1")
    upload_labelled_set(s3, "set_1")
    argv = ["trigger", "watch", "--once", "--settle", "0", "--workspace", str(workspace), "--bucket", BUCKET]

    assert main([*argv, "--recipe", "classifier"]) == 0
    out = capsys.readouterr().out
    assert f"watching s3://{BUCKET}/{RAW_CLASSIFIER} " in out
    assert f"new data s3://{BUCKET}/{RAW_CLASSIFIER}set_1/output.manifest -> " in out
    assert "1 execution(s) started" in out
    assert (
        len(client.list_pipeline_executions(PipelineName="robocar-classifier")["PipelineExecutionSummaries"])
        == 1
    )
    assert (
        client.list_pipeline_executions(PipelineName="robocar-pipeline")["PipelineExecutionSummaries"] == []
    )


def test_cli_registry_approve_of_a_classifier_rolls_it_out_to_the_classifiers_cars(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Approving by ARN alone (no --recipe): the package's group names the recipe."""
    from pipelines.cli import main

    registry = LocalSageMakerClient(workspace)
    arn = _register(registry, "robocar-classifiers", "c2")
    registry.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="PendingManualApproval")
    capsys.readouterr()
    assert main(["registry", "approve", arn, "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert f"approved {arn} -> component com.robocar.Classifier 1.0.1 deployed to " in out
    assert "thinggroup/robocar-classifier-cars" in out
    assert not (workspace / "greengrass" / "components" / "com.robocar.Pilot").exists()


def test_the_classifiers_first_watch_is_its_rules_creation_even_after_the_pilots(workspace: Path) -> None:
    """EventBridge reports only objects created after a rule: labelled sets older than the classifier's
    last execution are trained on already, whichever recipe's watch ran first in the workspace."""
    s3, client = LocalS3Client(workspace), LocalPipelineClient(workspace)
    for name in ("robocar-pipeline", "robocar-classifier"):
        client.create_pipeline(PipelineName=name, PipelineDefinition=json.dumps(DEFINITION), RoleArn=ROLE)
    upload_tub(s3, "tub_1")
    assert len(poll_once(workspace, s3, client, CONFIG).started) == 1  # the pilot's rule exists now
    for key in upload_labelled_set(s3, "set_1"):
        _age(s3.uri_to_path(f"s3://{BUCKET}/{key}"), 600)
    client.start_pipeline_execution(  # `robocar run --local --recipe classifier` trained on set_1
        PipelineName="robocar-classifier",
        PipelineParameters=[{"Name": "InputDataUrl", "Value": f"s3://{BUCKET}/{RAW_CLASSIFIER}"}],
    )

    first = poll_once(workspace, s3, client, CLASSIFIER)
    assert (first.started, first.already_processed) == ([], 1)
    upload_labelled_set(s3, "set_2")  # new after the rule: started
    assert [run["key"] for run in poll_once(workspace, s3, client, CLASSIFIER).started] == [
        f"{RAW_CLASSIFIER}set_2/output.manifest"
    ]
