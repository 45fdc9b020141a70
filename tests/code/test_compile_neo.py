"""The compile step against Neo (moto): the ONNX Neo input, one job per target, a failed job fails the step.

The requests are checked against botocore's SageMaker model (required members, types, enums, lengths and
the patterns of the members the step fills), since moto accepts what AWS would refuse.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.client import BaseClient
from botocore.validate import ParamValidator
from moto import mock_aws

from edge.frames import FrameSpec, preprocessing_record
from processing import compile as compile_step
from processing import edge_package
from processing import neo as neo_step

BUCKET = "robocar-test"
ROLE = "arn:aws:iam::123456789012:role/robocar-neo"
TARGETS = ("jetson_nano", "rasp4b")
SHAPE = [64, 64, 3]  # the smallest frame donkeycar's five valid convolutions take comfortably
SPEC = FrameSpec(crop_top=40, crop_bottom=16, height=64, width=64)
MODEL_JSON = {
    "model_type": "linear",
    "input": {
        "name": "img_in",
        "shape": SHAPE,
        "dtype": "float32",
        "normalization": "x/255",
        "frame_spec": SPEC.to_dict(),
        "preprocessing": preprocessing_record(SPEC),
    },
    "outputs": [{"name": "angle"}, {"name": "throttle"}],
    "throttle_range": 0.5,
    "framework": {"tensorflow": "2.21.0"},
}
NVIDIA_KEYS = {"gpu-code", "trt-ver", "cuda-ver"}  # API_OutputConfig.html, CompilerOptions "NVIDIA"


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> bytes:
    """donkeycar's linear pilot for 64x64 frames, saved as training saves it (model.keras)."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("onnx")
    from training.model import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    build_model("linear", tuple(SHAPE)).save(path)
    return path.read_bytes()


@pytest.fixture
def neo(monkeypatch, tmp_path, keras_file):
    """A moto account holding the trained model and, per target, what Neo would have written."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        model = tar_gz({"model.json": json.dumps(MODEL_JSON).encode(), "model.keras": keras_file})
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "model.tar.gz").write_bytes(model)
        s3.put_object(Bucket=BUCKET, Key="model/model.tar.gz", Body=model)
        # moto completes jobs at once but writes no output: put Neo's archive where the job says Neo puts it.
        compiled = {t: tar_gz({"compiled.so": t.encode() * 8, "compiled.params": b"params"}) for t in TARGETS}
        create_job = BaseClient._make_api_call

        def neo_writes_its_output(self, operation, params):
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
            "--model", str(tmp_path / "model"), "--output", str(tmp_path / "out"),
            "--targets", ",".join(TARGETS), "--model-s3-uri", f"s3://{BUCKET}/model/model.tar.gz",
            "--output-s3-uri", f"s3://{BUCKET}/neo", "--role-arn", ROLE, "--region", "us-east-1",
        ]  # fmt: skip
        yield {
            "argv": argv,
            "out": tmp_path / "out",
            "compiled": compiled,
            "sagemaker": boto3.client("sagemaker"),
            "s3": s3,
        }


def _pattern_matches(pattern: str, value: str) -> bool:
    """AWS patterns match whole values; ``regex`` knows ``\\p{...}`` classes, ``re`` does not."""
    try:
        import regex
    except ImportError:
        assert "\\p{" not in pattern, f"pattern {pattern!r} needs the regex module"
        return re.fullmatch(pattern, value) is not None
    return regex.fullmatch(pattern, value) is not None


def _constraint_errors(shape, value, path: str) -> list[str]:
    """Enum, min/max and pattern of every string, min/max of every integer: what ParamValidator leaves out."""
    errors = []
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                errors += _constraint_errors(member, value[name], f"{path}.{name}")
    elif shape.type_name == "string":
        meta = shape.metadata
        if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
            errors.append(f"{path}: length {len(value)} outside [{meta.get('min')}, {meta.get('max')}]")
        if "pattern" in meta and not _pattern_matches(meta["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {meta['pattern']!r}")
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    elif shape.type_name == "integer":
        meta = shape.metadata
        if not meta.get("min", value) <= value <= meta.get("max", value):
            errors.append(f"{path}: {value} outside [{meta.get('min')}, {meta.get('max')}]")
    return errors


def assert_valid_for_aws(operation: str, params: dict) -> None:
    """The request as botocore's SageMaker model allows it: members, types, enums, lengths, patterns."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()
    assert _constraint_errors(shape, params, operation) == []


def record_requests(monkeypatch, operation: str) -> list[dict]:
    """Every ``operation`` request the step sends through boto3, as sent."""
    sent: list[dict] = []
    original = BaseClient._make_api_call

    def recording(self, name, params):
        if name == operation:
            sent.append(json.loads(json.dumps(params)))
        return original(self, name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return sent


def test_one_onnx_compilation_job_per_target_as_neo_documents_it(neo, monkeypatch):
    sent = record_requests(monkeypatch, "CreateCompilationJob")
    assert compile_step.main(neo["argv"]) == 0  # mode auto: the model is in S3 and no local root is set
    assert sorted(r["OutputConfig"]["TargetDevice"] for r in sent) == sorted(TARGETS)
    inputs = {json.dumps(r["InputConfig"], sort_keys=True) for r in sent}
    assert len(inputs) == 1, "every target compiles the same Neo input"
    for request in sent:
        assert_valid_for_aws("CreateCompilationJob", request)
        target = request["OutputConfig"]["TargetDevice"]
        assert request["RoleArn"] == ROLE
        assert request["InputConfig"]["Framework"] == "ONNX"
        assert "FrameworkVersion" not in request["InputConfig"]  # MXNet/PyTorch/TF/TFLite only
        height, width, channels = SHAPE
        nchw = [1, channels, height, width]
        assert json.loads(request["InputConfig"]["DataInputConfig"]) == {"img_in": nchw}
        digest = request["InputConfig"]["S3Uri"].split("/input/")[1].split("/")[0]  # the Neo input's
        assert request["OutputConfig"]["S3OutputLocation"] == f"s3://{BUCKET}/neo/{digest}/{target}/"
        assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 1800
        options = request["OutputConfig"].get("CompilerOptions")
        if target == "jetson_nano":
            assert set(json.loads(options)) == NVIDIA_KEYS
        else:
            assert options is None
    jobs = neo["sagemaker"].list_compilation_jobs()["CompilationJobSummaries"]
    assert sorted(j["CompilationTargetDevice"] for j in jobs) == sorted(TARGETS)


def test_the_uploaded_neo_input_is_one_onnx_file_and_nothing_else(neo, monkeypatch):
    sent = record_requests(monkeypatch, "CreateCompilationJob")
    assert compile_step.main(neo["argv"]) == 0
    uri = sent[0]["InputConfig"]["S3Uri"]
    assert uri.startswith(f"s3://{BUCKET}/neo/input/") and uri.endswith("/neo-input.tar.gz")
    key = uri.removeprefix(f"s3://{BUCKET}/")
    archive = neo["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
        assert [(m.name, m.isfile()) for m in members] == [("model.onnx", True)]
        onnx_bytes = tar.extractfile(members[0]).read()
    listing = json.loads((neo["out"] / "compiled.json").read_text())
    assert listing["neo_onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert (listing["neo_onnx"]["opset"], listing["neo_onnx"]["ir_version"]) == (12, 7)
    for target in TARGETS:  # each package records which Neo input its compiled model came from
        manifest = json.loads((neo["out"] / target / "manifest.json").read_text())
        assert manifest["artifacts"][0]["neo"]["input_sha256"] == hashlib.sha256(archive).hexdigest()


def test_neo_outputs_are_repackaged_with_a_manifest_and_their_sha256(neo, tmp_path):
    assert compile_step.main(neo["argv"]) == 0
    listing = json.loads((neo["out"] / "compiled.json").read_text())
    assert listing["mode"] == "neo" and set(listing["targets"]) == set(TARGETS)
    for target, entry in listing["targets"].items():
        package = neo["out"] / entry["uri"]
        assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
        assert entry["runtimes"] == ["dlr"] and entry["runtime"] == "dlr"
        with tarfile.open(package) as tar:
            names = sorted(tar.getnames())
            manifest = json.load(tar.extractfile("manifest.json"))
            assert tar.extractfile("neo/compiled.so").read() == target.encode() * 8
        assert names == ["manifest.json", "neo/compiled.params", "neo/compiled.so"]
        assert manifest["target"] == target and manifest["runtime"] == "dlr"
        assert manifest["sha256"] == hashlib.sha256(neo["compiled"][target]).hexdigest()
        assert manifest["artifacts"][0]["neo"]["job_name"].startswith(f"robocar-{target.replace('_', '-')}-")
        # The car feeds [H, W, 3] frames; the DLR pilot transposes them to the NCHW Neo compiled for.
        assert manifest["input"]["shape"] == SHAPE and manifest["input"]["layout"] == "NCHW"


def test_a_failed_compilation_job_fails_the_step_with_neo_s_reason(neo, monkeypatch, capsys):
    reason = "ClientError: InputConfiguration: Unable to load the SavedModel"
    original = BaseClient._make_api_call

    def describe_says_failed(self, operation, params):
        response = original(self, operation, params)
        if operation == "DescribeCompilationJob":
            response = {**response, "CompilationJobStatus": "FAILED", "FailureReason": reason}
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", describe_says_failed)
    assert compile_step.main(neo["argv"]) == 1  # the input was fine: compiling failed
    err = capsys.readouterr().err
    assert (
        err.startswith("compile: failed: ") and "FAILED" in err and reason in err and "Traceback" not in err
    )
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
    done = neo_step.wait_for_compilation(
        client, ["job-a"], 600, first_delay_s=5, max_delay_s=15, sleep=clock.sleep, clock=lambda: clock.now
    )
    assert list(done) == ["job-a"]
    assert clock.sleeps == [5, 10, 15, 15]


def test_a_job_past_the_timeout_is_stopped_and_fails_the_step():
    client, clock = ScriptedSageMaker(["INPROGRESS"]), FakeClock()
    with pytest.raises(edge_package.CompileError, match="timed out after 30 s: job-a"):
        neo_step.wait_for_compilation(client, ["job-a"], 30, sleep=clock.sleep, clock=lambda: clock.now)
    assert client.stopped == ["job-a"]
    assert sum(clock.sleeps) == pytest.approx(30)


def test_vendored_target_list_agrees_with_botocore():
    assert neo_step.vendored_target_devices() == neo_step.botocore_target_devices()


@pytest.mark.parametrize(
    ("text", "message"),
    [("jetson_nan", "did you mean jetson_nano"), ("", "--targets is empty"), ("rasp4b,toaster", "'toaster'")],
)
def test_unknown_or_missing_targets_are_refused_with_a_clear_message(text, message, tmp_path, capsys):
    assert (
        compile_step.main(["--targets", text, "--model", str(tmp_path), "--output", str(tmp_path)]) == 2
    )  # bad input (1 is a failed compilation)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_botocore_the_vendored_list_validates(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "botocore" or m.startswith("botocore.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import botocore...` now raises ImportError
    assert neo_step.botocore_target_devices() is None
    assert neo_step.target_devices() == neo_step.vendored_target_devices()
    assert "rasp4b" in neo_step.target_devices()


def test_targets_are_deduplicated_in_order():
    allowed = neo_step.vendored_target_devices()
    assert neo_step.parse_targets(" rasp4b, jetson_nano,rasp4b ", allowed) == ["rasp4b", "jetson_nano"]


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
    assert (
        compile_step.main([*argv, "--model-s3-uri", "s3://b/model.tar.gz"]) == 2
    )  # bad input (1 is a failed compilation)
    assert "Neo mode needs --output-s3-uri, --role-arn" in capsys.readouterr().err


def test_a_model_archive_without_model_json_is_refused(tmp_path, capsys):
    (tmp_path / "model.tar.gz").write_bytes(tar_gz({"weights.bin": b"x"}))
    assert (
        compile_step.main(["--model", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    )  # bad input (1 is a failed compilation)
    assert "has no model.json" in capsys.readouterr().err


def input_without(*keys: str) -> dict:
    return {k: v for k, v in MODEL_JSON["input"].items() if k not in keys}


@pytest.mark.parametrize(
    "model_input, message",
    [
        (input_without("frame_spec"), "model.json records no frame_spec"),
        (input_without("preprocessing"), "trained with preprocessing (none recorded)"),
        (
            {**MODEL_JSON["input"], "preprocessing": {"version": 1, "digest": "0" * 64}},
            f"trained with preprocessing {'0' * 64} (version 1), but this code (preprocessing version 1) "
            f"prepares its frame_spec as {preprocessing_record(SPEC)['digest']}",
        ),
        (
            {**MODEL_JSON["input"], "frame_spec": {**SPEC.to_dict(), "crop_top": 30}},
            "trained with preprocessing",  # the crop changed under the recorded digest
        ),
    ],
    ids=["no frame_spec", "no digest", "another digest", "a frame_spec edited after training"],
)
def test_a_model_json_without_this_code_s_preprocessing_is_refused(tmp_path, capsys, model_input, message):
    """No default FrameSpec at compile: the artifacts would be calibrated on frames the model never saw."""
    meta = {**MODEL_JSON, "input": model_input}
    (tmp_path / "model.tar.gz").write_bytes(tar_gz({"model.json": json.dumps(meta).encode()}))
    argv = ["--model", str(tmp_path), "--output", str(tmp_path / "out"), "--mode", "local"]
    assert compile_step.main(argv) == 2  # bad input, before any model is loaded
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "compiled.json").exists()


def test_every_manifest_and_compiled_json_carry_the_model_s_preprocessing(neo):
    assert compile_step.main(neo["argv"]) == 0
    record = preprocessing_record(SPEC)
    assert json.loads((neo["out"] / "compiled.json").read_text())["preprocessing"] == record
    for target in TARGETS:
        manifest = json.loads((neo["out"] / target / "manifest.json").read_text())
        assert (manifest["frame_spec"], manifest["preprocessing"]) == (SPEC.to_dict(), record)


def neo_input(tmp_path: Path) -> neo_step.NeoInput:
    return neo_step.write_neo_input(b"onnx bytes", tmp_path / "neo-input.tar.gz", "img_in", [1, 3, 64, 64])


def test_every_target_device_gets_a_request_botocore_s_model_accepts(tmp_path):
    """Job names (the longest target's too), URIs, the role and CompilerOptions within AWS's constraints."""
    targets = neo_step.target_devices()
    requests = neo_step.requests_for_targets(
        targets,
        neo_input(tmp_path),
        input_s3_uri="s3://b/neo/input/x/neo-input.tar.gz",
        output_s3_uri="s3://b/neo/",
        role_arn=ROLE,
        timeout_s=1800,
        now=9_999_999_999,
    )
    assert list(requests) == targets
    for request in requests.values():
        assert_valid_for_aws("CreateCompilationJob", request)
    assert len({r["CompilationJobName"] for r in requests.values()}) == len(targets)


def test_job_names_are_cut_to_63_characters_ending_in_a_letter_or_digit():
    name = neo_step.neo_job_name("x" * 46, "a" * 64, 1_700_000_000)  # the cut falls on a hyphen
    assert len(name) <= 63 and not name.endswith("-")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)


def test_nvidia_targets_carry_the_documented_compiler_options():
    """NVIDIA targets need CompilerOptions (API_OutputConfig.html); values as neo-supported-devices-edge."""
    nvidia = [t for t in neo_step.vendored_target_devices() if t.startswith("jetson_")]
    assert "jetson_nano" in nvidia
    for target in nvidia:
        options = neo_step.compiler_options(target)
        assert options is not None and set(options) == NVIDIA_KEYS, target
        assert re.fullmatch(r"sm_\d+", options["gpu-code"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", options["trt-ver"])  # "x.y.z"
        assert re.fullmatch(r"\d+\.\d+", options["cuda-ver"])  # "x.y"
    nano = {"gpu-code": "sm_53", "trt-ver": "5.0.6", "cuda-ver": "10.0"}
    assert neo_step.compiler_options("jetson_nano") == nano
    assert neo_step.compiler_options("rasp4b") is None  # Neo's table documents no options for it


def test_the_compiler_options_table_names_real_targets_and_cites_its_source():
    table = json.loads(neo_step.NEO_TARGETS.read_text())["compiler_options"]
    assert set(table["targets"]) <= set(neo_step.vendored_target_devices())
    assert "neo-supported-devices-edge-devices.html" in table["source"]
    assert "API_OutputConfig.html" in table["source"]


def test_the_neo_input_archive_is_reproducible_and_holds_only_the_onnx_file(tmp_path):
    first = neo_step.write_neo_input(b"graph", tmp_path / "1" / "a.tar.gz", "img_in", [1, 3, 8, 8])
    second = neo_step.write_neo_input(b"graph", tmp_path / "2" / "a.tar.gz", "img_in", [1, 3, 8, 8])
    assert first.sha256 == second.sha256
    assert first.archive.read_bytes() == second.archive.read_bytes()
    with tarfile.open(first.archive) as tar:
        assert [(m.name, m.isfile(), m.mtime) for m in tar.getmembers()] == [("model.onnx", True, 0)]


def test_packages_are_reproducible(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    first = edge_package.write_package(
        {"a.bin": tmp_path / "a.bin"}, {"target": "rasp4b"}, tmp_path / "1" / "p.tar.gz"
    )
    second = edge_package.write_package(
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


def test_a_bug_is_one_line_unless_debug(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.tar.gz").write_bytes(tar_gz({"model.json": json.dumps(MODEL_JSON).encode()}))

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(compile_step, "run", broken)
    argv = ["--model", str(tmp_path), "--output", str(tmp_path / "out")]
    assert compile_step.main(argv) == 70
    err = capsys.readouterr().err
    assert "internal error (a bug, not your input): KeyError" in err and "Traceback" not in err
    assert compile_step.main([*argv, "--debug"]) == 70
    assert "Traceback" in capsys.readouterr().err
