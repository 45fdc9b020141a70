"""The classifier's compile step against Neo (moto) and as a dry run: MXNET requests AWS would accept.

No MXNet here: Neo gets the trainer's symbol and params files as they are, so stand-in bytes serve.
Requests are checked against botocore's SageMaker model as the pilot's (test_compile_neo.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws
from test_compile_neo import BUCKET, ROLE, assert_valid_for_aws, record_requests, tar_gz

from edge.photos import PhotoTransform
from processing import compile_classifier, neo

TARGETS = ("jetson_nano", "rasp4b")
CLASSES = ["circle", "square", "triangle"]
TRANSFORM = PhotoTransform(64, 96, 110, (127.0,) * 3, (128.0,) * 3, 1.0)
SYMBOL, PARAMS = b'{"nodes": [], "attrs": {"mxnet_version": ["int", 10901]}}', b"\x12\x01params" * 64
EDGE_FRAMEWORKS = "https://docs.aws.amazon.com/sagemaker/latest/dg/neo-supported-devices-edge-frameworks.html"


def model_archive(folder: Path) -> Path:
    spec = {"schema": "robocar/classifier-spec/1", "classes": CLASSES, "input": TRANSFORM.as_dict()}
    members = {
        "image-classification-symbol.json": SYMBOL,
        "image-classification-0002.params": PARAMS,
        "classifier-spec.json": json.dumps(spec).encode(),
        "model-shapes.json": b'[{"name": "data", "shape": [1, 3, 64, 96]}]',
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tar.gz").write_bytes(tar_gz(members))
    return folder


@pytest.fixture
def neo_account(monkeypatch, tmp_path):
    """A moto account holding the trained model and, per target, what Neo would have written."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        model = model_archive(tmp_path / "model")
        s3.put_object(Bucket=BUCKET, Key="model/model.tar.gz", Body=(model / "model.tar.gz").read_bytes())
        compiled = {t: tar_gz({"compiled.so": t.encode() * 8, "compiled.meta": b"{}"}) for t in TARGETS}
        create_job = BaseClient._make_api_call

        def neo_writes_its_output(self, operation, params):  # moto completes jobs but writes nothing
            response = create_job(self, operation, params)
            if operation == "CreateCompilationJob":
                output, target = (
                    params["OutputConfig"]["S3OutputLocation"],
                    params["OutputConfig"]["TargetDevice"],
                )
                key = f"{output.removeprefix(f's3://{BUCKET}/')}model-{target}.tar.gz"
                s3.put_object(Bucket=BUCKET, Key=key, Body=compiled[target])
            return response

        monkeypatch.setattr(BaseClient, "_make_api_call", neo_writes_its_output)
        argv = [
            "--model", str(model), "--output", str(tmp_path / "out"), "--edge-targets", ",".join(TARGETS),
            "--model-s3-uri", f"s3://{BUCKET}/model/model.tar.gz", "--output-s3-uri", f"s3://{BUCKET}/neo",
            "--role-arn", ROLE, "--region", "us-east-1",
        ]  # fmt: skip
        yield {"argv": argv, "out": tmp_path / "out", "compiled": compiled, "s3": s3, "model": model}


def test_one_mxnet_compilation_job_per_target_with_the_data_input_shape(neo_account, monkeypatch):
    sent = record_requests(monkeypatch, "CreateCompilationJob")
    assert compile_classifier.main(neo_account["argv"]) == 0  # auto: the model is in S3, no local root
    assert sorted(r["OutputConfig"]["TargetDevice"] for r in sent) == sorted(TARGETS)
    for request in sent:
        assert_valid_for_aws("CreateCompilationJob", request)
        config = request["InputConfig"]
        assert config["Framework"] == "MXNET"
        assert config["FrameworkVersion"] == "1.8"  # Neo's edge frameworks: MXNet 1.8 (EDGE_FRAMEWORKS)
        assert json.loads(config["DataInputConfig"]) == {"data": [1, 3, 64, 96]}
        assert request["RoleArn"] == ROLE and request["StoppingCondition"]["MaxRuntimeInSeconds"] == 1800
    assert len({json.dumps(r["InputConfig"], sort_keys=True) for r in sent}) == 1


def test_neo_gets_exactly_the_symbol_and_the_params(neo_account, monkeypatch):
    sent = record_requests(monkeypatch, "CreateCompilationJob")
    assert compile_classifier.main(neo_account["argv"]) == 0
    key = sent[0]["InputConfig"]["S3Uri"].removeprefix(f"s3://{BUCKET}/")
    archive = neo_account["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members == {"image-classification-symbol.json": SYMBOL, "image-classification-0002.params": PARAMS}


def test_neo_outputs_become_classifier_packages(neo_account):
    assert compile_classifier.main(neo_account["argv"]) == 0
    out = neo_account["out"]
    listing = json.loads((out / "compiled.json").read_text())
    assert listing["mode"] == "neo" and listing["task"] == "classification"
    source = hashlib.sha256((neo_account["model"] / "model.tar.gz").read_bytes()).hexdigest()
    for target, entry in listing["targets"].items():
        package = out / entry["uri"]
        assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
        assert entry["runtime"] == "dlr" and entry["default"] == "neo"
        with tarfile.open(package) as tar:
            assert sorted(tar.getnames()) == ["manifest.json", "neo/compiled.meta", "neo/compiled.so"]
            manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest["task"] == "classification" and manifest["classes"] == CLASSES
        assert manifest["input_transform"] == TRANSFORM.as_dict()
        assert manifest["source_model"] == {"sha256": source}
        assert manifest["sha256"] == hashlib.sha256(neo_account["compiled"][target]).hexdigest()
        assert manifest["input"] == {"name": "data", "shape": [1, 3, 64, 96], "dtype": "float32"}
        assert manifest["outputs"][0]["meaning"] == "probabilities"
        assert manifest["artifacts"][0]["neo"]["framework_version"] == "1.8"


def test_a_dry_run_writes_every_request_and_calls_nothing(monkeypatch, tmp_path):
    def no_aws(self, operation, params):
        raise AssertionError(f"the dry run called {operation}")

    monkeypatch.setattr(BaseClient, "_make_api_call", no_aws)
    model = model_archive(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--output", str(out), "--mode", "dry-run"]
    assert compile_classifier.main([*argv, "--edge-targets", ",".join(neo.target_devices())]) == 0
    with tarfile.open(out / "neo-input.tar.gz") as tar:
        assert sorted(tar.getnames()) == [
            "image-classification-0002.params",
            "image-classification-symbol.json",
        ]
    digest = hashlib.sha256((out / "neo-input.tar.gz").read_bytes()).hexdigest()
    for target in neo.target_devices():  # the longest target's job name too
        request = json.loads((out / target / "create_compilation_job.json").read_text())
        assert_valid_for_aws("CreateCompilationJob", request)
        assert request["InputConfig"]["Framework"] == "MXNET"
        assert f"/input/{digest[:16]}/neo-input.tar.gz" in request["InputConfig"]["S3Uri"]
    assert not (out / "compiled.json").exists()


def test_the_neo_input_is_reproducible(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "image-classification-symbol.json").write_bytes(SYMBOL)
    (folder / "image-classification-0002.params").write_bytes(PARAMS)
    spec = {"classes": CLASSES, "input": TRANSFORM.as_dict()}
    (folder / "classifier-spec.json").write_text(json.dumps(spec))
    model = compile_classifier.read_model(folder)
    first = compile_classifier.write_neo_input(model, tmp_path / "a.tar.gz")
    second = compile_classifier.write_neo_input(model, tmp_path / "b.tar.gz")
    assert first.sha256 == second.sha256 and first.framework == "MXNET"


def test_neo_mode_without_a_role_says_what_is_missing(tmp_path, capsys):
    model = model_archive(tmp_path / "model")
    argv = ["--model", str(model), "--output", str(tmp_path / "out"), "--mode", "neo"]
    assert compile_classifier.main([*argv, "--model-s3-uri", "s3://b/m.tar.gz"]) == 2
    assert "--output-s3-uri, --role-arn" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"classifier-spec.json": b"{}"}, "expected image-classification-symbol.json"),
        (
            {
                "image-classification-symbol.json": SYMBOL,
                "image-classification-0001.params": PARAMS,
                "classifier-spec.json": b'{"classes": ["a", "b"], "input": {"height": 64}}',
            },
            "is not a classifier spec",
        ),
        ({"model.json": b"{}"}, "has no classifier-spec.json"),
    ],
)
def test_a_model_that_is_not_a_trained_classifier_is_refused(members, message, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.tar.gz").write_bytes(tar_gz(members))
    argv = ["--model", str(tmp_path / "model"), "--output", str(tmp_path / "out"), "--mode", "dry-run"]
    assert compile_classifier.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
