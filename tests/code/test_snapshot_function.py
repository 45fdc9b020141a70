"""infra/snapshot/handler.py: new data -> a dataset manifest -> one StartPipelineExecution per dataset."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from pipelines import datasets, events, infra
from pipelines.aws_rules import request_problems

snapshot_handler = infra.load_snapshot_handler()
BUCKET = f"robocar-data-{events.EXAMPLE_ACCOUNT}-us-east-1"
PIPELINE = "robocar-pipeline"
CONFIG = snapshot_handler.SnapshotConfig(BUCKET, "robocar", PIPELINE)
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution"
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "InputDataUrl", "Type": "String"}],
    "Steps": [{"Name": "Wait", "Type": "Fail", "Arguments": {"ErrorMessage": "x"}}],
}


def new_tub(s3: Any, name: str) -> dict[str, Any]:
    """Upload a tub (manifest.json last) and return the event EventBridge delivers for it."""
    for file in ("catalog_0.catalog", "images/0_cam_image_array_.jpg", "manifest.json"):
        s3.put_object(Bucket=BUCKET, Key=f"robocar/raw/{name}/{file}", Body=f"{name}/{file}".encode())
    return events.s3_object_created_event(BUCKET, f"robocar/raw/{name}/manifest.json")


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
        s3.create_bucket(Bucket=BUCKET)
        sagemaker.create_pipeline(
            PipelineName=PIPELINE, PipelineDefinition=json.dumps(DEFINITION), RoleArn=ROLE
        )
        yield s3, sagemaker


def moto_executions() -> list[Any]:
    """moto's own record of the starts: it keeps ClientRequestToken but, unlike AWS, does not dedupe."""
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[events.EXAMPLE_ACCOUNT]["us-east-1"]
    return list(backend.pipelines[PIPELINE].pipeline_executions.values())


def test_the_lambda_snapshots_the_raw_prefix_and_starts_the_pipeline_on_it(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, sagemaker = aws
    for name, value in {"DATA_BUCKET": BUCKET, "PREFIX": "robocar", "PIPELINE_NAME": PIPELINE}.items():
        monkeypatch.setenv(name, value)
    result = snapshot_handler.handler(new_tub(s3, "tub_1"), None)

    dataset = result["datasetUri"]
    assert dataset.startswith(f"s3://{BUCKET}/robocar/datasets/") and dataset.endswith(".manifest")
    assert (result["objects"], result["datasetWritten"], result["status"]) == (3, True, "started")
    key = dataset.removeprefix(f"s3://{BUCKET}/")
    prefix, keys = datasets.read_manifest(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert prefix == f"s3://{BUCKET}/robocar/raw/" and len(keys) == 3
    parameters = sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["pipelineExecutionArn"]
    )["PipelineParameters"]
    assert parameters == [{"Name": "InputDataUrl", "Value": dataset}]


def test_the_classifiers_event_snapshots_raw_classifier_and_starts_the_classifiers_pipeline(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the classifier's rule delivers (its input transformer: the detail and ``recipe``) snapshots
    <prefix>/raw-classifier/ alone and starts CLASSIFIER_PIPELINE_NAME; the pilot's tubs stay out."""
    s3, sagemaker = aws
    sagemaker.create_pipeline(
        PipelineName="robocar-classifier", PipelineDefinition=json.dumps(DEFINITION), RoleArn=ROLE
    )
    variables = {"DATA_BUCKET": BUCKET, "PREFIX": "robocar", "PIPELINE_NAME": PIPELINE}
    for name, value in {**variables, "CLASSIFIER_PIPELINE_NAME": "robocar-classifier"}.items():
        monkeypatch.setenv(name, value)
    new_tub(s3, "tub_1")
    for key in ("set_1/images/000000.jpg", "set_1/output.manifest"):
        s3.put_object(Bucket=BUCKET, Key=f"robocar/raw-classifier/{key}", Body=key.encode())
    event = events.s3_object_created_event(BUCKET, "robocar/raw-classifier/set_1/output.manifest")

    result = snapshot_handler.handler({"recipe": "classifier", "detail": event["detail"]}, None)

    assert result["trigger"] == f"s3://{BUCKET}/robocar/raw-classifier/set_1/output.manifest"
    assert ":pipeline/robocar-classifier/execution/" in result["pipelineExecutionArn"]
    key = result["datasetUri"].removeprefix(f"s3://{BUCKET}/")
    prefix, keys = datasets.read_manifest(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert (prefix, keys) == (
        f"s3://{BUCKET}/robocar/raw-classifier/",
        ["set_1/images/000000.jpg", "set_1/output.manifest"],
    )
    monkeypatch.delenv("CLASSIFIER_PIPELINE_NAME")
    with pytest.raises(snapshot_handler.SnapshotError, match="CLASSIFIER_PIPELINE_NAME"):
        snapshot_handler.handler({"recipe": "classifier", "detail": event["detail"]}, None)


def test_a_redelivered_event_repeats_the_request_and_new_data_makes_a_new_one(aws: tuple[Any, Any]) -> None:
    s3, sagemaker = aws
    event = new_tub(s3, "tub_1")
    first = snapshot_handler.snapshot_and_start(event, s3=s3, sagemaker=sagemaker, config=CONFIG)
    again = snapshot_handler.snapshot_and_start(event, s3=s3, sagemaker=sagemaker, config=CONFIG)
    assert again["datasetUri"] == first["datasetUri"] and again["datasetWritten"] is False
    second_tub = new_tub(s3, "tub_2")
    newer = snapshot_handler.snapshot_and_start(second_tub, s3=s3, sagemaker=sagemaker, config=CONFIG)
    assert newer["datasetUri"] != first["datasetUri"] and newer["objects"] == 6

    tokens = [execution.client_request_token for execution in moto_executions()]
    digest = first["datasetUri"].rsplit("/", 1)[1].removesuffix(".manifest")
    assert tokens[:2] == [digest, digest]  # AWS completes the second start "no more than once"
    assert tokens[2] != digest


def test_two_events_of_one_dataset_send_the_same_request_one_aws_accepts(aws: tuple[Any, Any]) -> None:
    s3, _ = aws
    tub_event = new_tub(s3, "tub_1")
    s3.put_object(Bucket=BUCKET, Key="robocar/raw/b.tar.gz", Body=b"archive")  # lands with the tub
    archive_event = events.s3_object_created_event(BUCKET, "robocar/raw/b.tar.gz")
    taken = datasets.snapshot(
        s3, datasets.raw_uri(BUCKET, "robocar"), datasets.datasets_uri(BUCKET, "robocar")
    )
    request = snapshot_handler.start_request(CONFIG, taken)
    assert request_problems("sagemaker", "StartPipelineExecution", request) == []  # patterns and lengths
    assert request["ClientRequestToken"] == taken.digest
    sagemaker = boto3.client("sagemaker")
    arn = f"arn:aws:sagemaker:us-east-1:{events.EXAMPLE_ACCOUNT}:pipeline/{PIPELINE}/execution/q9x1b2c3d4e5"
    with Stubber(sagemaker) as stub:  # botocore checks each call against the model and the expected request
        for _ in range(2):
            stub.add_response("start_pipeline_execution", {"PipelineExecutionArn": arn}, request)
        for event in (tub_event, archive_event):
            result = snapshot_handler.snapshot_and_start(event, s3=s3, sagemaker=sagemaker, config=CONFIG)
            assert result["pipelineExecutionArn"] == arn
        stub.assert_no_pending_responses()


def test_the_function_refuses_to_run_unconfigured() -> None:
    with pytest.raises(snapshot_handler.SnapshotError, match="DATA_BUCKET, PIPELINE_NAME"):
        snapshot_handler.SnapshotConfig.from_env({"PREFIX": "robocar"})


# The S3 the zip talks to is local S3 (pipelines/local/s3.py), a test double read from the repository
# (sys.argv[3]), not part of the zip: only its modules may come from there.
ISOLATED_SNAPSHOT = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import handler
import edge
edge.__path__.append(sys.argv[3] + "/edge")
spec = importlib.util.spec_from_file_location("local_s3", sys.argv[3] + "/pipelines/local/s3.py")
local_s3 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(local_s3)
LocalS3Client = local_s3.LocalS3Client
assert "boto3" not in sys.modules and "botocore" not in sys.modules

class Pipelines:
    requests = []
    def start_pipeline_execution(self, **request):
        self.requests.append(request)
        return {"PipelineExecutionArn": "arn:execution/1"}

s3 = LocalS3Client(sys.argv[2])
s3.create_bucket(Bucket="bucket-a")
s3.put_object(Bucket="bucket-a", Key="p/raw/tub/manifest.json", Body=b"{}")
pipelines = Pipelines()
config = handler.SnapshotConfig("bucket-a", "p", "pipe")
result = handler.snapshot_and_start({}, s3=s3, sagemaker=pipelines, config=config)
files = {name: getattr(module, "__file__", None) or "" for name, module in sys.modules.items()}
from_repo = sorted(name for name, file in files.items() if file.startswith(sys.argv[3]))
print(json.dumps({"result": result, "requests": pipelines.requests, "from_repo": from_repo}))
"""


def test_the_lambda_zip_runs_on_its_own_with_the_standard_library(tmp_path: Path) -> None:
    code = tmp_path / "code"
    zipfile.ZipFile(io.BytesIO(infra.snapshot_zip())).extractall(code)
    run = subprocess.run(  # -S: no site-packages at all, only the zip and the standard library
        [sys.executable, "-S", "-c", ISOLATED_SNAPSHOT, str(code), str(tmp_path / "ws"),
         str(infra.REPO_ROOT)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    output = json.loads(run.stdout)
    double = [
        "edge.artifacts",
        "edge.atomic_files",
        "edge.aws_errors",
        "edge.local_readers",
        "edge.workspace",
    ]
    assert output["from_repo"] == double  # the zip's own code came from the zip
    (request,) = output["requests"]
    assert request["PipelineParameters"] == [
        {"Name": "InputDataUrl", "Value": output["result"]["datasetUri"]}
    ]
    assert output["result"]["datasetUri"].startswith("s3://bucket-a/p/datasets/")
