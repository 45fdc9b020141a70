"""The compile step against Neo (moto): one job per target, a failed job fails the step; target validation."""

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

from processing import compile as compile_step

BUCKET = "robocar-test"
ROLE = "arn:aws:iam::123456789012:role/robocar-neo"
TARGETS = ("jetson_nano", "rasp4b")
MODEL_JSON = {
    "model_type": "linear",
    "input": {"name": "img_in", "shape": [64, 64, 3], "dtype": "float32", "normalization": "x/255"},
    "outputs": [{"name": "angle"}, {"name": "throttle"}],
    "throttle_range": 0.5,
    "framework": {"tensorflow": "2.21.0"},
}


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def neo(monkeypatch, tmp_path):
    """A moto account holding the trained model and, per target, what Neo would have written."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        model = tar_gz({"model.json": json.dumps(MODEL_JSON).encode(), "1/saved_model.pb": b"graph"})
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "model.tar.gz").write_bytes(model)
        s3.put_object(Bucket=BUCKET, Key="model/model.tar.gz", Body=model)
        # moto completes jobs at once but writes no output: put Neo's archive where Neo puts it.
        compiled = {t: tar_gz({"compiled.so": t.encode() * 8, "compiled.params": b"params"}) for t in TARGETS}
        for target, data in compiled.items():
            s3.put_object(Bucket=BUCKET, Key=f"neo/{target}/model-{target}.tar.gz", Body=data)
        argv = [
            "--model", str(tmp_path / "model"), "--output", str(tmp_path / "out"),
            "--targets", ",".join(TARGETS), "--model-s3-uri", f"s3://{BUCKET}/model/model.tar.gz",
            "--output-s3-uri", f"s3://{BUCKET}/neo", "--role-arn", ROLE, "--region", "us-east-1",
        ]  # fmt: skip
        yield {
            "argv": argv,
            "out": tmp_path / "out",
            "compiled": compiled,
            "sagemaker": boto3.client("sagemaker"),
        }


def test_one_compilation_job_per_target_with_the_model_s_framework_and_shape(neo):
    assert compile_step.main(neo["argv"]) == 0  # mode auto: the model is in S3 and no local root is set
    sagemaker = neo["sagemaker"]
    jobs = sagemaker.list_compilation_jobs()["CompilationJobSummaries"]
    assert sorted(j["CompilationTargetDevice"] for j in jobs) == sorted(TARGETS)
    for summary in jobs:
        job = sagemaker.describe_compilation_job(CompilationJobName=summary["CompilationJobName"])
        target = job["OutputConfig"]["TargetDevice"]
        assert job["RoleArn"] == ROLE
        assert job["InputConfig"]["S3Uri"] == f"s3://{BUCKET}/model/model.tar.gz"
        assert job["InputConfig"]["Framework"] == "TENSORFLOW"
        assert json.loads(job["InputConfig"]["DataInputConfig"]) == {"img_in": [1, 64, 64, 3]}
        assert job["OutputConfig"]["S3OutputLocation"] == f"s3://{BUCKET}/neo/{target}/"
        assert job["StoppingCondition"]["MaxRuntimeInSeconds"] > 0


def test_neo_outputs_are_repackaged_with_a_manifest_and_their_sha256(neo, tmp_path):
    assert compile_step.main(neo["argv"]) == 0
    listing = json.loads((neo["out"] / "compiled.json").read_text())
    assert listing["mode"] == "neo" and set(listing["targets"]) == set(TARGETS)
    for target, entry in listing["targets"].items():
        package = neo["out"] / entry["uri"]
        assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
        assert entry["runtimes"] == ["dlr"]
        with tarfile.open(package) as tar:
            names = sorted(tar.getnames())
            manifest = json.load(tar.extractfile("manifest.json"))
            assert tar.extractfile("neo/compiled.so").read() == target.encode() * 8
        assert names == ["manifest.json", "neo/compiled.params", "neo/compiled.so"]
        assert manifest["target"] == target and manifest["runtime"] == "dlr"
        assert manifest["sha256"] == hashlib.sha256(neo["compiled"][target]).hexdigest()
        assert manifest["artifacts"][0]["neo"]["job_name"].startswith(f"robocar-{target.replace('_', '-')}-")


def test_a_failed_compilation_job_fails_the_step_with_neo_s_reason(neo, monkeypatch, capsys):
    reason = "ClientError: InputConfiguration: Unable to load the SavedModel"
    original = BaseClient._make_api_call

    def describe_says_failed(self, operation, params):
        response = original(self, operation, params)
        if operation == "DescribeCompilationJob":
            response = {**response, "CompilationJobStatus": "FAILED", "FailureReason": reason}
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", describe_says_failed)
    assert compile_step.main(neo["argv"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and reason in err and "Traceback" not in err
    assert not (neo["out"] / "compiled.json").exists()


class ScriptedSageMaker:
    """DescribeCompilationJob answers from a script; records stop calls."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.stopped: list[str] = []

    def describe_compilation_job(self, CompilationJobName: str) -> dict:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"CompilationJobName": CompilationJobName, "CompilationJobStatus": status}

    def stop_compilation_job(self, CompilationJobName: str) -> None:
        self.stopped.append(CompilationJobName)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_polling_backs_off_exponentially_until_the_job_completes():
    client, clock = (
        ScriptedSageMaker(["STARTING", "INPROGRESS", "INPROGRESS", "INPROGRESS", "COMPLETED"]),
        FakeClock(),
    )
    done = compile_step.wait_for_compilation(
        client, ["job-a"], 600, first_delay_s=5, max_delay_s=15, sleep=clock.sleep, clock=lambda: clock.now
    )
    assert list(done) == ["job-a"]
    assert clock.sleeps == [5, 10, 15, 15]


def test_a_job_past_the_timeout_is_stopped_and_fails_the_step():
    client, clock = ScriptedSageMaker(["INPROGRESS"]), FakeClock()
    with pytest.raises(compile_step.CompileError, match="timed out after 30 s: job-a"):
        compile_step.wait_for_compilation(client, ["job-a"], 30, sleep=clock.sleep, clock=lambda: clock.now)
    assert client.stopped == ["job-a"]
    assert sum(clock.sleeps) == pytest.approx(30)


def test_vendored_target_list_agrees_with_botocore():
    assert compile_step.vendored_target_devices() == compile_step.botocore_target_devices()


@pytest.mark.parametrize(
    ("text", "message"),
    [("jetson_nan", "did you mean jetson_nano"), ("", "--targets is empty"), ("rasp4b,toaster", "'toaster'")],
)
def test_unknown_or_missing_targets_are_refused_with_a_clear_message(text, message, tmp_path, capsys):
    assert compile_step.main(["--targets", text, "--model", str(tmp_path), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_botocore_the_vendored_list_validates(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "botocore" or m.startswith("botocore.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import botocore...` now raises ImportError
    assert compile_step.botocore_target_devices() is None
    assert compile_step.target_devices() == compile_step.vendored_target_devices()
    assert "rasp4b" in compile_step.target_devices()


def test_targets_are_deduplicated_in_order():
    allowed = compile_step.vendored_target_devices()
    assert compile_step.parse_targets(" rasp4b, jetson_nano,rasp4b ", allowed) == ["rasp4b", "jetson_nano"]


@pytest.mark.parametrize(
    ("mode", "uri", "env", "expected"),
    [
        ("auto", "s3://b/model.tar.gz", {}, "neo"),
        ("auto", "s3://b/model.tar.gz", {"ROBOCAR_LOCAL_ROOT": "/tmp/ws"}, "local"),
        ("auto", None, {}, "local"),
        ("local", "s3://b/model.tar.gz", {}, "local"),
        ("neo", None, {}, "neo"),
    ],
)
def test_mode_resolution(mode, uri, env, expected):
    assert compile_step.resolve_mode(mode, uri, env) == expected


def test_neo_mode_without_a_role_says_what_is_missing(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.tar.gz").write_bytes(tar_gz({"model.json": json.dumps(MODEL_JSON).encode()}))
    argv = ["--model", str(model), "--output", str(tmp_path / "out"), "--mode", "neo"]
    assert compile_step.main([*argv, "--model-s3-uri", "s3://b/model.tar.gz"]) == 1
    assert "Neo mode needs --output-s3-uri, --role-arn" in capsys.readouterr().err


def test_a_model_archive_without_model_json_is_refused(tmp_path, capsys):
    (tmp_path / "model.tar.gz").write_bytes(tar_gz({"weights.bin": b"x"}))
    assert compile_step.main(["--model", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    assert "has no model.json" in capsys.readouterr().err


def test_input_config_uses_the_framework_s_layout():
    tf = compile_step.neo_input_config(MODEL_JSON, "s3://b/m.tar.gz", "2.9")
    assert tf["Framework"] == "TENSORFLOW" and tf["FrameworkVersion"] == "2.9"
    mxnet = compile_step.neo_input_config(
        {**MODEL_JSON, "framework": {"mxnet": "1.9.1"}}, "s3://b/m.tar.gz", None
    )
    assert mxnet["Framework"] == "MXNET" and "FrameworkVersion" not in mxnet
    assert json.loads(mxnet["DataInputConfig"]) == {"img_in": [1, 3, 64, 64]}


def test_packages_are_reproducible(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    first = compile_step.write_package(
        {"a.bin": tmp_path / "a.bin"}, {"target": "rasp4b"}, tmp_path / "1" / "p.tar.gz"
    )
    second = compile_step.write_package(
        {"a.bin": tmp_path / "a.bin"}, {"target": "rasp4b"}, tmp_path / "2" / "p.tar.gz"
    )
    assert first == second
    assert json.loads((tmp_path / "1" / "manifest.json").read_text()) == {"target": "rasp4b"}


def test_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compile_step.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--train", "--test", "--output", "--targets", "--mode", "--model-s3-uri"):
        assert flag in out
    assert Path(compile_step.__file__).name == "compile.py"
