"""upsert / start / status with the real boto3 calls, against moto (in-process and as a server)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import boto3
import pytest
from definition_fixtures import PILOT_SETTINGS
from moto import mock_aws

from pipelines.cli import main
from pipelines.code_bundle import CodeBundle
from pipelines.control import (
    ParameterError,
    build_definition,
    parse_parameters,
    recent_executions,
    start,
    upsert,
)

SETTINGS = PILOT_SETTINGS  # the settings pilot_definition_text is built with


@pytest.fixture(scope="module")
def definition_text(pilot_definition_text: str) -> str:
    return pilot_definition_text


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=SETTINGS.bucket)
        yield boto3.client("sagemaker", region_name="us-east-1"), s3


def test_upsert_uploads_code_then_creates_then_leaves_unchanged(aws, definition_text: str) -> None:
    sagemaker, s3 = aws
    code = CodeBundle(SETTINGS.bucket, SETTINGS.prefix)
    first = upsert(sagemaker, s3, definition=definition_text, settings=SETTINGS, code=code)
    named = code.named_in(definition_text)
    assert {bundle.script for bundle in named} == {
        "processing/preprocess.py", "processing/evaluate.py", "processing/compile.py", "training/train.py",
    }  # the pilot's steps' bundles, not the classifier's  # fmt: skip
    objects = {key: data for bundle in named for key, data in bundle.objects().items()}
    assert first.action == "created" and first.code_objects_uploaded == len(objects)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=SETTINGS.bucket)["Contents"]}
    assert keys == set(objects)  # every step's bundle, each under its own hash
    train = code.step("training/train.py")
    body = s3.get_object(Bucket=SETTINGS.bucket, Key=f"{train.key_prefix}/sourcedir.tar.gz")["Body"].read()
    assert body == train.sourcedir
    deployed = sagemaker.describe_pipeline(PipelineName=SETTINGS.pipeline_name)
    assert json.loads(deployed["PipelineDefinition"]) == json.loads(definition_text)

    second = upsert(sagemaker, s3, definition=definition_text, settings=SETTINGS, code=code)
    assert (second.action, second.code_objects_uploaded) == ("unchanged", 0)
    after = sagemaker.describe_pipeline(PipelineName=SETTINGS.pipeline_name)
    assert after["LastModifiedTime"] == deployed["LastModifiedTime"]


def test_upsert_updates_a_changed_definition(aws, definition_text: str) -> None:
    sagemaker, s3 = aws
    code = CodeBundle(SETTINGS.bucket, SETTINGS.prefix)
    upsert(sagemaker, s3, definition=definition_text, settings=SETTINGS, code=code)
    changed = build_definition(SETTINGS, "rasp3b")
    result = upsert(sagemaker, s3, definition=changed, settings=SETTINGS, code=code)
    assert result.action == "updated"
    deployed = json.loads(
        sagemaker.describe_pipeline(PipelineName=SETTINGS.pipeline_name)["PipelineDefinition"]
    )
    assert deployed == json.loads(changed)


def test_start_and_status(aws, definition_text: str) -> None:
    sagemaker, s3 = aws
    upsert(
        sagemaker,
        s3,
        definition=definition_text,
        settings=SETTINGS,
        code=CodeBundle(SETTINGS.bucket, "robocar"),
    )
    params = parse_parameters(json.loads(definition_text), ["Epochs=3", "ModelType=categorical"])
    arn = start(sagemaker, pipeline_name=SETTINGS.pipeline_name, parameters=params, display_name="first")
    executions = recent_executions(sagemaker, SETTINGS.pipeline_name)
    assert [e["PipelineExecutionArn"] for e in executions] == [arn]
    assert executions[0]["Steps"] is None  # moto has no list_pipeline_execution_steps
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionArn"] == arn


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("Nope=1", "unknown parameter 'Nope'"),
        ("AngleMaeThreshold=abc", "is Float"),
        ("AngleMaeThreshold=nan", "is Float"),
        ("ModelType=resnet", "must be one of linear, categorical"),
        ("Epochs=ten", "positive integer"),
        ("Epochs=0", "positive integer"),
        ("InputDataUrl=/local/path", "s3:// URI"),
        ("EdgeTargets=jetson_nano,toaster", "unknown Neo target device"),
        ("EdgeTargets=jetson_nano", "differs from the targets this pipeline registers"),
        ("Epochs", "expected NAME=VALUE"),
    ],
)
def test_bad_parameters_are_refused(definition_text: str, assignment: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        parse_parameters(json.loads(definition_text), [assignment])


def test_good_parameters_are_normalised(definition_text: str) -> None:
    params = parse_parameters(
        json.loads(definition_text), ["AngleMaeThreshold=0.1", "EdgeTargets=rasp4b, jetson_nano", "Epochs=5"]
    )
    assert params == [
        {"Name": "AngleMaeThreshold", "Value": "0.1"},
        {"Name": "EdgeTargets", "Value": "rasp4b,jetson_nano"},
        {"Name": "Epochs", "Value": "5"},
    ]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_refuses_a_bad_parameter_before_any_aws_call(monkeypatch) -> None:
    import pipelines.commands.pipeline as commands

    def no_aws(*_a, **_k):
        raise AssertionError("an AWS client was made before the parameters were checked")

    monkeypatch.setattr(commands, "clients", no_aws)
    role = "arn:aws:iam::123456789012:role/r"
    code, _, err = run_cli(
        "pipeline",
        "start",
        "--region",
        "us-east-1",
        "--bucket",
        "robocar-bucket",
        "--role",
        role,
        "--param",
        "Epochs=lots",
    )
    assert code == 2
    assert "parameter Epochs must be a positive integer" in err


def test_cli_names_the_missing_flags(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ROBOCAR_BACKEND", "ROBOCAR_LOCAL_ROOT", "ROBOCAR_ENDPOINT_URL", "ROBOCAR_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_cli("pipeline", "upsert", "--aws", "--region", "us-east-1")
    assert code == 2
    assert "--role (or $ROBOCAR_ROLE_ARN" in err and "--bucket (or $ROBOCAR_BUCKET" in err
    # Without --aws the backend is the default, local: placeholders, the workspace ./.robocar, no AWS.
    code, out, err = run_cli("pipeline", "upsert", "--region", "us-east-1")
    assert code == 0 and out.startswith("created: ") and "local workspace .robocar" in err
    assert (tmp_path / ".robocar" / "s3" / "robocar-data-123456789012").is_dir()  # the code bundles


def test_settings_from_environment_and_config_file(monkeypatch, tmp_path) -> None:
    from argparse import Namespace

    from pipelines.settings import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "robocar.toml").write_text(
        '[robocar]\nregion = "eu-west-1"\n'
        'role = "arn:aws:iam::123456789012:role/cfg"\nbucket = "from-config"\n'
    )
    for variable in ("ROBOCAR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ROBOCAR_BUCKET", "from-env")
    settings = resolve(Namespace(bucket=None, region=None, role=None, prefix="flagged"))
    assert (settings.region, settings.bucket, settings.prefix) == ("eu-west-1", "from-env", "flagged")
    assert settings.role == "arn:aws:iam::123456789012:role/cfg"
    (tmp_path / "robocar.toml").write_text('[robocar]\nregoin = "typo"\n')
    with pytest.raises(ValueError, match="unknown key.*regoin"):
        resolve(Namespace())


@pytest.fixture
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint).create_bucket(Bucket=SETTINGS.bucket)
    yield endpoint
    server.stop()


def test_cli_upsert_start_status_against_a_moto_server(moto_server: str) -> None:
    flags = ["--region", "us-east-1", "--bucket", SETTINGS.bucket, "--role", SETTINGS.role,
             "--endpoint-url", moto_server]  # fmt: skip
    code, out, err = run_cli("pipeline", "upsert", *flags)
    assert code == 0, err
    assert out.startswith("created: arn:aws:sagemaker:us-east-1:123456789012:pipeline/robocar-pipeline")
    code, out, _ = run_cli("pipeline", "upsert", *flags)
    assert code == 0 and out.startswith("unchanged:") and "(0 object(s) uploaded)" in out
    code, _, err = run_cli("pipeline", "start", *flags, "--param", "Epochs=2")
    assert code == 2 and f"no input data at s3://{SETTINGS.bucket}/robocar/raw/" in err  # nothing to train on
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    s3.put_object(Bucket=SETTINGS.bucket, Key="robocar/raw/tub_1/manifest.json", Body=b"{}")
    code, out, err = run_cli("pipeline", "start", *flags, "--param", "Epochs=2", "--display-name", "smoke")
    assert code == 0, err
    arn = out.strip()
    assert "/execution/" in arn
    (manifest,) = s3.list_objects_v2(Bucket=SETTINGS.bucket, Prefix="robocar/datasets/")["Contents"]
    dataset = f"s3://{SETTINGS.bucket}/{manifest['Key']}"
    assert f"dataset {dataset}: 1 object(s) under s3://{SETTINGS.bucket}/robocar/raw/ (new)" in err
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    started = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {"Name": "InputDataUrl", "Value": dataset} in started
    code, out, _ = run_cli("pipeline", "status", *flags)
    assert code == 0 and arn in out and "Succeeded" in out
    code, out, _ = run_cli("pipeline", "status", *flags, "--json")
    assert json.loads(out)[0]["PipelineExecutionArn"] == arn


def test_cli_upsert_and_status_against_the_local_workspace(tmp_path) -> None:
    workspace = ["--workspace", str(tmp_path / "ws")]
    code, out, err = run_cli("pipeline", "upsert", *workspace)
    assert code == 0, err
    assert out.startswith("created: arn:aws:sagemaker:us-east-1:123456789012:pipeline/robocar-pipeline")
    bundles = list((tmp_path / "ws" / "s3" / SETTINGS.bucket / "robocar" / "code").iterdir())
    assert len(bundles) == 4  # one per step: Preprocess, Train, Evaluate, CompileForEdge
    assert sum((bundle / "sourcedir.tar.gz").is_file() for bundle in bundles) == 1
    assert sum((bundle / "processing" / "preprocess.py").is_file() for bundle in bundles) == 1
    code, out, _ = run_cli("pipeline", "upsert", *workspace)
    assert code == 0 and out.startswith("unchanged:")
    code, out, _ = run_cli("pipeline", "status", *workspace)
    assert code == 0 and "no executions of robocar-pipeline yet" in out
