"""The local executor (pipelines/local/): runs a definition end to end with the container contracts."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest
import sample_pipeline as sample

from pipelines.datasets import manifest_document, snapshot
from pipelines.local import DefinitionError, ParameterError, run_local, runners
from pipelines.local.executor import bind_parameters, parse_duration, plan
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import load


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    sample.upload_sample(LocalS3Client(tmp_path))
    return tmp_path


def run(workspace: Path, parameters: dict | None = None, **kwargs):
    events: list[dict] = []
    execution = run_local(
        kwargs.pop("definition", None) or sample.definition(**kwargs),
        workspace,
        parameters or {},
        pipeline_name="sample",
        on_event=events.append,
    )
    return execution, events


def s3_path(workspace: Path, uri: str) -> Path:
    return workspace / "s3" / uri.removeprefix("s3://")


def test_whole_pipeline_runs_and_registers(workspace: Path) -> None:
    execution, events = run(workspace, {"Epochs": "3", "ModelApprovalStatus": "Approved"})
    assert execution.status == "Succeeded", execution.failure_reason
    assert list(execution.steps) == [
        "Preprocess",
        "Train",
        "Evaluate",
        "CheckQuality",
        "ShouldRegister",
        "CompileForEdge",
        "Register",
    ]
    assert execution.steps["CheckQuality"].outcome == "True"
    assert execution.steps["ShouldRegister"].outcome == "True"  # a model the group does not hold yet
    assert "QualityTooLow" not in execution.steps  # the branch not taken does not run

    scoped = f"s3/sample-bucket/sample/{{}}/{execution.execution_id}"  # every output under the execution's id
    frames = json.loads((workspace / scoped.format("preprocess") / "train/frames.json").read_text())
    assert frames["records"] == [f"tub/record_{i}.json" for i in range(3)]

    model_uri = execution.steps["Train"].properties["ModelArtifacts"]["S3ModelArtifacts"]
    job_name = execution.steps["Train"].properties["TrainingJobName"]
    assert model_uri == (
        f"s3://sample-bucket/sample/models/{execution.execution_id}/{job_name}/output/model.tar.gz"
    )
    with tarfile.open(s3_path(workspace, model_uri)) as tar:
        model = json.load(tar.extractfile("model.json"))
    # Hyperparameters reach the script decoded as the framework container decodes them.
    assert model["epochs"] == 3 and model["model_type"] == "linear"
    assert model["hps"] == {"epochs": 3, "model-type": "linear"}
    assert model["channels"] == ["train"] and model["train_files"] == ["frames.json"]
    assert model["cwd"].endswith("/opt/ml/code") and model["num_cpus"] >= 1
    metrics = execution.steps["Train"].properties["FinalMetricDataList"]
    assert metrics[0]["MetricName"] == "validation:loss" and metrics[0]["Value"] == pytest.approx(
        0.5 / 3, abs=1e-4
    )

    registry = LocalSageMakerClient(workspace)
    arn = execution.steps["Register"].properties["ModelPackageArn"]
    package = registry.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == model_uri
    compiled_uri = f"s3://sample-bucket/sample/edge/{execution.execution_id}/compiled"
    compiled = json.loads(s3_path(workspace, f"{compiled_uri}/compiled.json").read_text())
    assert package["CustomerMetadataProperties"] == {
        "angle_mae": "0.1",
        "source": "sample",
        "edge:rasp4b:uri": f"{compiled_uri}/rasp4b/model.tar.gz",
        "edge:rasp4b:sha256": compiled["targets"]["rasp4b"]["sha256"],
        "edge:rasp4b:runtime": "litert",
    }
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == (
        f"s3://sample-bucket/sample/evaluation/{execution.execution_id}/evaluation.json"
    )

    assert [e["event"] for e in events][0] == "execution-started"
    assert [e["step"].name for e in events if e["event"] == "step-finished"] == list(execution.steps)
    record = load(execution.path)
    assert record.status == "Succeeded" and record.steps["Train"].log_path.endswith("logs/Train.log")
    assert "val_loss" in Path(record.steps["Train"].log_path).read_text()
    assert (execution.path / "report.html").is_file()
    assert not any((workspace / "tmp").iterdir())  # temporary /opt/ml trees are cleaned up


def test_else_branch_fails_the_execution_with_the_resolved_message(workspace: Path) -> None:
    execution, _ = run(workspace, {"SimulatedMae": 0.9})
    assert execution.status == "Failed"
    assert execution.steps["QualityTooLow"].failure_reason == "angle MAE 0.9 is above 0.2"
    assert "angle MAE 0.9 is above 0.2" in execution.failure_reason
    assert "Register" not in execution.steps
    assert execution.steps["ShouldRegister"].outcome == "False"  # the same bar: never registered meanwhile
    assert LocalSageMakerClient(workspace).list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_a_failing_step_stops_the_run_shows_its_log_and_uploads_nothing(workspace: Path) -> None:
    execution, events = run(workspace, preprocess_extra=["--fail", "exit"])
    assert execution.status == "Failed"
    assert list(execution.steps) == ["Preprocess"]
    step = execution.steps["Preprocess"]
    assert step.failure_reason == "the process exited with status 3" and step.attempts == 1
    finished = [e for e in events if e["event"] == "step-finished"][0]
    assert "simulated failure: bad input data" in finished["log_tail"]
    assert not (workspace / "s3/sample-bucket/sample/preprocess").exists()  # no execution's folder either
    assert any((workspace / "tmp").iterdir())  # kept for a look inside after a failure


def test_unchanged_steps_come_from_the_cache_and_a_new_dataset_reruns(workspace: Path) -> None:
    first, _ = run(workspace)
    second, _ = run(workspace)
    assert second.status == "Succeeded"
    for name in ("Preprocess", "Train"):
        assert second.steps[name].cache_hit_from == first.arn, name
        assert second.steps[name].properties == first.steps[name].properties
    assert second.steps["Evaluate"].cache_hit_from is None  # uncached: it reads the registry
    assert second.steps["ShouldRegister"].outcome == "False"  # the same model: registered once
    assert "Register" not in second.steps and "CompileForEdge" not in second.steps
    registry = LocalSageMakerClient(workspace)
    assert (
        len(registry.list_model_packages(ModelPackageGroupName=sample.GROUP)["ModelPackageSummaryList"]) == 1
    )

    s3 = LocalS3Client(workspace)
    s3.put_object(Bucket=sample.BUCKET, Key="sample/raw/tub/record_9.json", Body=b"{}")
    third, _ = run(workspace)  # the same manifest: AWS keys on the path, never on what lies under it
    assert third.steps["Preprocess"].cache_hit_from == first.arn

    dataset = snapshot(s3, sample.RAW_URI, f"s3://{sample.BUCKET}/sample/datasets/")
    fourth, _ = run(workspace, {"InputDataUrl": dataset.manifest_uri})
    assert fourth.steps["Preprocess"].cache_hit_from is None
    assert fourth.steps["Train"].cache_hit_from is None  # its input path (the new execution's) changed
    assert fourth.steps["Register"].properties["ModelPackageVersion"] == 2
    frames = workspace / f"s3/sample-bucket/sample/preprocess/{fourth.execution_id}/train/frames.json"
    assert json.loads(frames.read_text())["records"][-1] == "tub/record_9.json"  # the new object is in

    fifth, _ = run(workspace, {"InputDataUrl": dataset.manifest_uri, "Epochs": "4"})
    assert fifth.steps["Preprocess"].cache_hit_from == fourth.arn
    assert fifth.steps["Train"].cache_hit_from is None  # a changed argument


def test_retry_policy_reruns_neither_a_killed_step_nor_a_script_error(workspace: Path, monkeypatch) -> None:
    """A step process that dies is an AlgorithmError, as a container that dies is on AWS: the policy's
    SageMaker.CAPACITY_ERROR (EC2 capacity) does not cover it (tests/code/test_local_divergences.py)."""
    monkeypatch.setenv("SAMPLE_KILL_ONCE_MARKER", str(workspace / "killed-once"))
    execution, _ = run(workspace, preprocess_extra=["--fail", "kill-once"], retry=True)
    assert execution.status == "Failed"
    assert execution.steps["Preprocess"].attempts == 1
    assert execution.steps["Preprocess"].failure_reason == "the process was killed by SIGKILL"
    assert "retrying" not in Path(execution.steps["Preprocess"].log_path).read_text()

    failing, _ = run(workspace, preprocess_extra=["--fail", "exit"], retry=True)
    assert failing.steps["Preprocess"].attempts == 1


def test_unrunnable_definitions_are_refused_before_anything_starts(workspace: Path) -> None:
    definition = sample.definition()
    definition["Steps"].append({"Name": "Notify", "Type": "Lambda", "Arguments": {}})
    definition["Steps"][1]["DependsOn"] = ["Nowhere"]
    with pytest.raises(DefinitionError) as excinfo:
        run_local(definition, workspace, pipeline_name="sample")
    assert "'Lambda'" in str(excinfo.value) and "'Nowhere'" in str(excinfo.value)
    assert not (workspace / "executions").exists()

    cyclic = sample.definition()
    cyclic["Steps"][0]["DependsOn"] = ["Evaluate"]
    with pytest.raises(DefinitionError, match="cycle: Preprocess -> Evaluate -> Train -> Preprocess"):
        plan(cyclic)


def test_parameters_are_type_checked() -> None:
    declared = sample.definition()["Parameters"]
    values = bind_parameters(declared, [{"Name": "SimulatedMae", "Value": "0.25"}])
    assert values["SimulatedMae"] == 0.25 and values["Epochs"] == "2"
    with pytest.raises(ParameterError, match="unknown parameter"):
        bind_parameters(declared, {"Epoch": "3"})
    with pytest.raises(ParameterError, match="Float"):
        bind_parameters(declared, {"SimulatedMae": "low"})
    with pytest.raises(ParameterError, match="must be one of"):
        bind_parameters(declared, {"ModelType": "transformer"})
    integer = [{"Name": "N", "Type": "Integer", "DefaultValue": 1}, {"Name": "B", "Type": "Boolean"}]
    assert bind_parameters(integer, {"N": "7", "B": "TRUE"}) == {"N": 7, "B": True}
    with pytest.raises(ParameterError, match="no default"):
        bind_parameters(integer, {"N": 2})


def test_iso_durations() -> None:
    assert parse_duration("P30D").days == 30
    assert parse_duration("PT1H30M").total_seconds() == 5400
    with pytest.raises(DefinitionError):
        parse_duration("30 days")


def test_independent_steps_run_in_parallel(workspace: Path) -> None:
    definition = sample.definition()
    twin = json.loads(json.dumps(definition["Steps"][0]))
    twin["Name"] = "PreprocessTwin"
    for output in twin["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
        output["S3Output"]["S3Uri"]["Std:Join"]["Values"][0] = f"s3://{sample.BUCKET}/sample/twin"
    definition["Steps"] = [definition["Steps"][0], twin]
    execution, _ = run(workspace, {"PreprocessSeconds": 0.5}, definition=definition)
    first, second = execution.steps["Preprocess"], execution.steps["PreprocessTwin"]
    assert execution.status == "Succeeded"
    assert second.start_time < first.end_time and first.start_time < second.end_time  # they overlapped


def test_an_expired_cache_entry_is_not_used(workspace: Path) -> None:
    first, _ = run(workspace)
    for entry in (workspace / "cache" / "sample" / "Train").glob("*.json"):
        document = json.loads(entry.read_text())
        document["created"] = "2020-01-01T00:00:00+00:00"  # older than ExpireAfter P30D
        entry.write_text(json.dumps(document))
    second, _ = run(workspace)
    assert second.steps["Train"].cache_hit_from is None
    assert second.steps["Preprocess"].cache_hit_from == first.arn  # same arguments, still fresh


def test_a_step_that_ran_again_makes_its_consumers_run_again(workspace: Path) -> None:
    """Its outputs are under the new execution's id, so the consumer's InputDataConfig differs (as on AWS)."""
    first, _ = run(workspace)
    for entry in (workspace / "cache" / "sample" / "Preprocess").glob("*.json"):
        entry.unlink()
    second, _ = run(workspace)
    assert second.steps["Preprocess"].cache_hit_from is None
    assert second.steps["Train"].cache_hit_from is None


def test_an_abandoned_execution_on_another_host_reads_failed_once_its_heartbeat_is_stale(
    workspace: Path,
) -> None:
    execution, _ = run(workspace)
    record = json.loads((execution.path / "execution.json").read_text())
    record.update(status="Executing", host="another-machine")
    (execution.path / "execution.json").write_text(json.dumps(record))
    assert load(execution.path).status == "Executing"  # a fresh heartbeat: it may still be running
    old = time.time() - 3600
    os.utime(execution.path / "heartbeat", (old, old))
    stale = load(execution.path)
    assert stale.status == "Failed" and "no heartbeat" in stale.failure_reason


def test_hyperparameters_decode_and_become_arguments_as_in_the_framework_container() -> None:
    raw = {
        "epochs": "3",
        "lr": "0.01",
        "name": '"pilot"',
        "flag": "true",
        "plain": "linear",
        "opts": '{"b": 2, "a": 1}',
    }
    decoded = runners.decode_hyperparameters(raw)
    assert decoded == {
        "epochs": 3,
        "lr": 0.01,
        "name": "pilot",
        "flag": True,
        "plain": "linear",
        "opts": {"b": 2, "a": 1},
    }
    assert runners.to_cmd_args(decoded) == [
        "--epochs", "3", "--flag", "True", "--lr", "0.01", "--name", "pilot",
        "--opts", "a=1,b=2", "--plain", "linear",
    ]  # fmt: skip
    command = runners.command_line(
        ["python3", "/opt/ml/processing/code/x.py"], ["--out=/opt/ml/processing/o"], Path("/t/opt/ml")
    )
    assert command == [sys.executable, "/t/opt/ml/processing/code/x.py", "--out=/t/opt/ml/processing/o"]


def test_temporary_trees_of_old_failures_are_pruned(workspace: Path) -> None:
    old_tree = workspace / "tmp" / "Preprocess-old"
    old_tree.mkdir(parents=True)
    long_ago = time.time() - 2 * 24 * 3600
    os.utime(old_tree, (long_ago, long_ago))
    recent_tree = workspace / "tmp" / "Preprocess-recent"
    recent_tree.mkdir()
    run(workspace)
    assert not old_tree.exists() and recent_tree.exists()


def test_overlapping_outputs_each_get_every_file(workspace: Path) -> None:
    definition = sample.definition()
    outputs = definition["Steps"][0]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    outputs.append(
        {
            "OutputName": "everything",
            "S3Output": {
                "S3Uri": f"s3://{sample.BUCKET}/sample/everything",
                "LocalPath": "/opt/ml/processing/output",
                "S3UploadMode": "EndOfJob",
            },
        }
    )
    definition["Steps"] = definition["Steps"][:1]
    execution, _ = run(workspace, definition=definition)
    assert execution.status == "Succeeded"
    root = workspace / "s3" / sample.BUCKET / "sample"
    assert (root / "preprocess" / execution.execution_id / "train/frames.json").is_file()
    assert (root / "everything/train/frames.json").is_file()
    assert (root / "everything/test/frames.json").is_file()


def test_a_registered_package_stays_valid_after_later_executions(workspace: Path) -> None:
    """Each execution writes under its own id: package 1's artifact keeps its bytes and its SHA-256."""
    registry = LocalSageMakerClient(workspace)
    first, _ = run(workspace, {"Epochs": "1"})
    package = registry.describe_model_package(
        ModelPackageName=first.steps["Register"].properties["ModelPackageArn"]
    )
    metadata = package["CustomerMetadataProperties"]
    artifact = s3_path(workspace, metadata["edge:rasp4b:uri"])
    original = artifact.read_bytes()
    assert hashlib.sha256(original).hexdigest() == metadata["edge:rasp4b:sha256"]

    for epochs in ("2", "3"):  # new models: Train, Evaluate and CompileForEdge run again and write anew
        later, _ = run(workspace, {"Epochs": epochs})
        assert later.steps["CompileForEdge"].cache_hit_from is None
        later_uri = registry.describe_model_package(
            ModelPackageName=later.steps["Register"].properties["ModelPackageArn"]
        )["CustomerMetadataProperties"]["edge:rasp4b:uri"]
        assert later_uri != metadata["edge:rasp4b:uri"]
        assert s3_path(workspace, later_uri).read_bytes() != original
    assert artifact.read_bytes() == original
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == metadata["edge:rasp4b:sha256"]


def test_a_manifest_input_lands_under_its_keys_and_a_missing_object_fails_the_step(workspace: Path) -> None:
    s3 = LocalS3Client(workspace)
    manifest = f"s3://{sample.BUCKET}/sample/datasets/hand-made.manifest"
    keys = ["tub/record_2.json", "tub/record_0.json"]  # a subset of the prefix, in any order
    s3.put_object(
        Bucket=sample.BUCKET,
        Key="sample/datasets/hand-made.manifest",
        Body=manifest_document(sample.RAW_URI, keys),
    )
    execution, _ = run(workspace, {"InputDataUrl": manifest})
    scoped = workspace / f"s3/sample-bucket/sample/preprocess/{execution.execution_id}/train/frames.json"
    assert json.loads(scoped.read_text())["records"] == sorted(keys)  # LocalPath/<key relative to prefix>

    missing = manifest_document(sample.RAW_URI, [*keys, "tub/record_8.json"])
    s3.put_object(Bucket=sample.BUCKET, Key="sample/datasets/missing.manifest", Body=missing)
    failed, _ = run(workspace, {"InputDataUrl": manifest.replace("hand-made", "missing")})
    assert failed.status == "Failed" and list(failed.steps) == ["Preprocess"]
    reason = failed.steps["Preprocess"].failure_reason
    assert reason.startswith(f"input {manifest.replace('hand-made', 'missing')} lists ")
    assert f"{sample.RAW_URI}tub/record_8.json, which does not exist" in reason

    nowhere, _ = run(workspace, {"InputDataUrl": manifest.replace("hand-made", "nowhere")})
    assert "no such manifest file" in nowhere.steps["Preprocess"].failure_reason
