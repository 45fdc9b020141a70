"""Hostile input to local mode and the ``robocar`` CLI: each attempt is refused, nothing outside the
workspace is read or written, nothing is registered, and the cost stays bounded (docs/local-mode-safety.md).

Classes tried: S3 keys that are not file names (every entry point of the local S3 client and of the
runners), a killed run (its steps must die with it, the next run cleans up), bad input to every kind of
setting and file (exit 2, one line, no traceback), symbolic links in ``--data``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import sample_pipeline as sample
from botocore.exceptions import ParamValidationError

from edge.aws import clients
from edge.workspace import local_key_problem
from pipelines import cli
from pipelines.cli import main
from pipelines.local import ParameterError, run_local, runners
from pipelines.local.executor import clean_abandoned
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import list_executions

REPO = Path(__file__).resolve().parents[2]
BUCKET = sample.BUCKET
UNMAPPABLE_KEYS = {
    "..": "'..' segment",
    "../outside/secret.txt": "'..' segment",
    "a/../../../outside/secret.txt": "'..' segment",
    ".": "'.' segment",
    "./a": "'.' segment",
    "a/./b": "'.' segment",
    "a//b": "empty segment",
    "/outside/secret.txt": "empty segment",
    "": "empty",
    "dir/": "ends with '/'",
    "a\x00b": "NUL",
    "x" * 256: "longer than 255 bytes",
    ".tmp-1-x": "'.tmp-'",
    "a/\udc80": "not UTF-8",
}


# ---------------------------------------------------------------- helpers
def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, str]:
    """Every file under ``root`` (outside ``skip``) with a digest of its content: what must not change."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        if skip is not None and Path(dirpath).is_relative_to(skip):
            continue
        for name in filenames:
            path = Path(dirpath, name)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "special"
            found[path.relative_to(root).as_posix()] = digest
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the workspace, with a secret: never to be read or written through S3."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("not an S3 object")
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(folder))
    return folder


@pytest.fixture
def definition_file(tmp_path: Path) -> Path:
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(sample.definition()))
    return path


def packages(workspace: Path) -> list[dict]:
    registry = LocalSageMakerClient(workspace)
    if not (workspace / "registry" / "groups").is_dir():
        return []
    return registry.list_model_packages(ModelPackageGroupName=sample.GROUP)["ModelPackageSummaryList"]


def robocar(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """Run ``robocar ARGV`` in this process; returns the exit status and stderr."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_refusal(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robocar: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


def run_args(workspace: Path, definition_file: Path, *extra: str) -> list[str]:
    return [
        "run", "--local", "--workspace", str(workspace), "--definition", str(definition_file),
        "--bucket", BUCKET, "--pipeline-name", "sample", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------- 1. local S3 keys are keys
def test_the_key_rule_names_each_problem() -> None:
    for key, problem in UNMAPPABLE_KEYS.items():
        found = local_key_problem(key)
        assert found is not None and problem in found, (key, found)
    for key in ("a", "a/b.json", "tub_1/images/0_cam.jpg", "..a/b..", "a/.hidden", "名前/ü.txt"):
        assert local_key_problem(key) is None, key
    for prefix in ("", "a/", "a/b", "a/b/"):
        assert local_key_problem(prefix, prefix=True) is None, prefix
    assert local_key_problem("a//", prefix=True) is not None


@pytest.mark.parametrize("validated", [False, True], ids=["plain", "validated"])
def test_every_s3_entry_point_refuses_keys_a_folder_cannot_hold(
    tmp_path: Path, outside: Path, validated: bool
) -> None:
    root = tmp_path / "ws"
    s3 = clients(local_root=root).s3 if validated else LocalS3Client(root)
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="inside.txt", Body=b"inside")
    source = tmp_path / "upload.txt"
    source.write_text("to upload")
    before = snapshot(tmp_path, skip=root)
    calls = {
        "put_object": lambda key: s3.put_object(Bucket="bucket", Key=key, Body=b"x"),
        "get_object": lambda key: s3.get_object(Bucket="bucket", Key=key),
        "head_object": lambda key: s3.head_object(Bucket="bucket", Key=key),
        "delete_object": lambda key: s3.delete_object(Bucket="bucket", Key=key),
        "copy_object (source)": lambda key: s3.copy_object(
            Bucket="bucket", Key="copy.txt", CopySource=f"bucket/{key}"
        ),
        "copy_object (destination)": lambda key: s3.copy_object(
            Bucket="bucket", Key=key, CopySource="bucket/inside.txt"
        ),
        "upload_file": lambda key: s3.upload_file(str(source), "bucket", key),
        "download_file": lambda key: s3.download_file("bucket", key, str(tmp_path / "downloaded")),
    }
    for call in calls.values():
        for key in UNMAPPABLE_KEYS:
            # botocore itself fails to encode a lone surrogate into the request (UnicodeEncodeError).
            surrogate = validated and "\udc80" in key
            with pytest.raises(
                (ParamValidationError, UnicodeEncodeError) if surrogate else ParamValidationError
            ):
                call(key)
            if not validated:  # the local client's own refusal: ValueError too, and it says why
                with pytest.raises(ValueError, match="cannot be kept in local S3"):
                    call(key)
    assert snapshot(tmp_path, skip=root) == before  # nothing outside the workspace was touched
    assert not (tmp_path / "downloaded").exists()
    assert s3.get_object(Bucket="bucket", Key="inside.txt")["Body"].read() == b"inside"


def test_uri_to_path_never_leaves_the_bucket(tmp_path: Path, outside: Path) -> None:
    s3 = LocalS3Client(tmp_path / "ws")
    assert s3.uri_to_path(f"s3://{BUCKET}/") == tmp_path / "ws" / "s3" / BUCKET
    assert s3.uri_to_path(f"s3://{BUCKET}/a/b/") == tmp_path / "ws" / "s3" / BUCKET / "a" / "b"
    for key in [k for k in UNMAPPABLE_KEYS if k not in ("", "dir/")] + ["a//"]:
        with pytest.raises(ValueError, match="cannot be kept in local S3"):
            s3.uri_to_path(f"s3://{BUCKET}/{key}")
    for bucket in ("..", ".", "UPPER", "a_b", "x"):
        with pytest.raises(ValueError, match="Invalid bucket name"):
            s3.uri_to_path(f"s3://{bucket}/key")


def test_listing_a_prefix_with_dot_segments_lists_nothing_outside(tmp_path: Path, outside: Path) -> None:
    s3 = LocalS3Client(tmp_path / "ws")
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="a/b.txt", Body=b"b")
    for prefix in ("../", "../../", "../../../outside/", "a/../", "./a/", "a//", "/a/"):
        listed = s3.list_objects_v2(Bucket="bucket", Prefix=prefix)
        assert listed["KeyCount"] == 0 and "Contents" not in listed, prefix
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="bucket", Prefix="a/")["Contents"]] == ["a/b.txt"]


def test_a_symbolic_link_planted_in_a_bucket_leads_nowhere(tmp_path: Path, outside: Path) -> None:
    s3 = LocalS3Client(tmp_path / "ws")
    s3.create_bucket(Bucket="bucket")
    bucket = tmp_path / "ws" / "s3" / "bucket"
    (bucket / "secret.txt").symlink_to(outside / "secret.txt")
    (bucket / "folder").symlink_to(outside, target_is_directory=True)
    for key in ("secret.txt", "folder/secret.txt"):
        with pytest.raises(ValueError, match="leads outside the bucket's folder"):
            s3.get_object(Bucket="bucket", Key=key)
        with pytest.raises(ValueError, match="leads outside the bucket's folder"):
            s3.put_object(Bucket="bucket", Key=key, Body=b"overwritten")
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket")
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket", Prefix="folder/")
    assert (outside / "secret.txt").read_text() == "not an S3 object"


def test_a_key_and_a_folder_of_the_same_name_are_refused_clearly(tmp_path: Path) -> None:
    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="a/b", Body=b"1")
    with pytest.raises(ValueError, match="keeps keys under 'a/' in a folder"):
        s3.put_object(Bucket="bucket", Key="a", Body=b"2")
    s3.put_object(Bucket="bucket", Key="c", Body=b"3")
    with pytest.raises(ValueError, match="the key 'c' is a file where this key needs a folder"):
        s3.put_object(Bucket="bucket", Key="c/d", Body=b"4")


# ---------------------------------------------------------------- 1b. the runners' entry points
def _processing_input(definition: dict, uri: str) -> None:
    definition["Steps"][0]["Arguments"]["ProcessingInputs"][1]["S3Input"]["S3Uri"] = uri


def _processing_output(definition: dict, uri: str) -> None:
    definition["Steps"][0]["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = uri


def _training_channel(definition: dict, uri: str) -> None:
    channel = definition["Steps"][1]["Arguments"]["InputDataConfig"][0]
    channel["DataSource"]["S3DataSource"]["S3Uri"] = uri


def _training_output(definition: dict, uri: str) -> None:
    definition["Steps"][1]["Arguments"]["OutputDataConfig"]["S3OutputPath"] = uri


def _training_code(definition: dict, uri: str) -> None:
    definition["Steps"][1]["Arguments"]["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(uri)


@pytest.mark.parametrize(
    ("step", "place", "uri"),
    [
        ("Preprocess", _processing_input, f"s3://{BUCKET}/../../../outside/"),
        ("Preprocess", _processing_output, f"s3://{BUCKET}/../../../escaped/train"),
        ("Train", _training_channel, f"s3://{BUCKET}/../../../outside/"),
        ("Train", _training_output, f"s3://{BUCKET}/../../../escaped"),
        ("Train", _training_code, f"s3://{BUCKET}/../../../outside/sourcedir.tar.gz"),
        ("Preprocess", _processing_input, f"s3://{BUCKET}/sample//raw/"),
    ],
    ids=["processing-input", "processing-output", "training-channel", "model-artifacts", "training-code",
         "empty-segment"],
)  # fmt: skip
def test_steps_never_map_an_s3_uri_outside_the_workspace(
    tmp_path: Path, workspace: Path, outside: Path, step: str, place, uri: str
) -> None:
    with tarfile.open(outside / "sourcedir.tar.gz", "w:gz") as tar:  # a usable bundle, never to be used
        tar.add(outside / "secret.txt", arcname="train.py")
    before = snapshot(tmp_path, skip=workspace)
    definition = sample.definition()
    place(definition, uri)
    execution = run_local(definition, workspace, pipeline_name="sample")
    assert execution.status == "Failed"
    assert execution.steps[step].status == "Failed"
    assert "cannot be kept in local S3" in execution.steps[step].failure_reason
    assert "Register" not in execution.steps and packages(workspace) == []
    assert snapshot(tmp_path, skip=workspace) == before
    assert not (tmp_path / "escaped").exists()


def test_a_parameter_naming_an_s3_location_outside_is_refused_before_any_step(
    workspace: Path, outside: Path
) -> None:
    with pytest.raises(ParameterError, match="parameter InputDataUrl: .*'..' segment"):
        run_local(
            sample.definition(), workspace, {"InputDataUrl": f"s3://{BUCKET}/../../../outside/"},
            pipeline_name="sample",
        )  # fmt: skip
    assert not (workspace / "executions").exists()


def test_the_cli_refuses_input_data_url_outside_and_registers_nothing(
    tmp_path: Path, workspace: Path, outside: Path, definition_file: Path, capsys
) -> None:
    before = snapshot(tmp_path, skip=workspace)
    for url in (f"s3://{BUCKET}/../../../outside/", f"s3://{BUCKET}/a//b", "s3://../outside/"):
        code, err = robocar(capsys, *run_args(workspace, definition_file, "--param", f"InputDataUrl={url}"))
        assert_one_line_refusal(code, err, "InputDataUrl")
    assert packages(workspace) == [] and not (workspace / "executions").exists()
    assert snapshot(tmp_path, skip=workspace) == before


def test_a_step_output_linking_outside_fails_the_step_and_copies_nothing(
    tmp_path: Path, outside: Path
) -> None:
    s3 = LocalS3Client(tmp_path / "ws")
    s3.create_bucket(Bucket=BUCKET)
    output = tmp_path / "output"
    output.mkdir()
    (output / "report.json").write_text("{}")
    (output / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(runners.StepFailed, match="outside"):
        runners.upload_folder(s3, output, f"s3://{BUCKET}/out/", move=True)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")
    assert (outside / "secret.txt").read_text() == "not an S3 object"


def test_a_step_output_linking_inside_itself_is_uploaded_under_both_names(tmp_path: Path) -> None:
    s3 = LocalS3Client(tmp_path / "ws")
    s3.create_bucket(Bucket=BUCKET)
    output = tmp_path / "output"
    (output / "plots").mkdir(parents=True)
    (output / "plots" / "loss.png").write_bytes(b"png")
    (output / "latest").symlink_to(output / "plots", target_is_directory=True)
    assert runners.upload_folder(s3, output, f"s3://{BUCKET}/out/", move=True) == 2
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]
    assert [o["Key"] for o in listed] == ["out/latest/loss.png", "out/plots/loss.png"]


# ---------------------------------------------------------------- 2. a killed run kills its steps
def _processes(*markers: str) -> set[int]:
    """Live processes (not zombies) whose command line holds every marker."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and all(marker in cmdline for marker in markers):
            found.add(int(entry.name))
    return found


def _wait_for(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads processes from /proc (Linux)")
def test_kill_9_of_robocar_run_kills_its_step_and_the_next_run_cleans_up(
    workspace: Path, definition_file: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        *run_args(workspace, definition_file, "--prefix", "sample"),
    ]
    cli_process = subprocess.Popen(
        [*command, "--param", "PreprocessSeconds=60"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        step = _wait_for(  # supervise.py and the step's script: both name the script and the workspace
            lambda: len(found := _processes("sample_steps.py", "preprocess", str(workspace))) == 2 and found,
            60,
            "the step to start",
        )
        os.kill(cli_process.pid, signal.SIGKILL)
        cli_process.wait(timeout=10)
        _wait_for(
            lambda: not _processes("sample_steps.py", str(workspace)), 5, "the step to die with the executor"
        )
        assert not step & _processes()  # neither the supervisor nor the script runs (zombies aside)
    finally:
        cli_process.kill()
        for pid in _processes("sample_steps.py", str(workspace)):
            os.kill(pid, signal.SIGKILL)
    (killed_dir,) = (workspace / "executions" / "sample").iterdir()
    assert json.loads((killed_dir / "execution.json").read_text())["status"] == "Executing"  # as left
    assert list((workspace / "tmp").iterdir())  # the killed step's /opt/ml tree

    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    on_disk = json.loads((killed_dir / "execution.json").read_text())
    assert on_disk["status"] == "Failed" and "is gone" in on_disk["failure_reason"]
    assert on_disk["steps"]["Preprocess"]["status"] == "Failed"
    assert list((workspace / "tmp").iterdir()) == []  # removed by the next run, none left by it
    statuses = sorted(e.status for e in list_executions(workspace, "sample"))
    assert statuses == ["Failed", "Succeeded"]


# Unique per run: the cleanup kills every process carrying it, and another checkout's run of this test on
# the same machine must not be one of them.
GRANDCHILD_MARKER = f"grandchild-marker-{os.getpid()}-{time.time_ns()}"
GRANDCHILD = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {GRANDCHILD_MARKER}"])
print(child.pid, flush=True)
time.sleep(60)
"""
EXECUTOR_STANDIN = """
import subprocess, sys
from pipelines.local.runners import supervised
step = subprocess.Popen(supervised([sys.executable, "-c", sys.argv[1]]), start_new_session=True)
step.wait()
"""


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads processes from /proc (Linux)")
def test_what_a_step_started_dies_with_the_executor_too() -> None:
    executor = subprocess.Popen(
        [sys.executable, "-c", EXECUTOR_STANDIN, GRANDCHILD],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        grandchild = int(executor.stdout.readline())
        # alive before the kill; waited for, as under load its command line may not read yet (the pid is
        # printed as soon as Popen returns, and an exec in progress reads as no marker: seen once, 2 cores)
        _wait_for(lambda: grandchild in _processes(GRANDCHILD_MARKER), 5, "the grandchild to start")
        os.kill(executor.pid, signal.SIGKILL)
        executor.wait(timeout=10)
        _wait_for(lambda: grandchild not in _processes(GRANDCHILD_MARKER), 5, "the grandchild to die")
    finally:
        executor.kill()
        for pid in _processes(GRANDCHILD_MARKER):
            os.kill(pid, signal.SIGKILL)


def test_a_step_keeps_its_exit_status_and_its_signal_under_the_supervisor(tmp_path: Path) -> None:
    for code, expected in (("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 9)", -9)):
        result = subprocess.run(runners.supervised([sys.executable, "-c", code]), timeout=30)
        assert result.returncode == expected
    missing = subprocess.run(
        runners.supervised([str(tmp_path / "no-such-program")]), capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 127 and "cannot start" in missing.stderr


def test_the_next_run_removes_only_what_dead_runs_left(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    live, host = os.getpid(), os.uname().nodename
    trees = tmp_path / "tmp"
    for name, owner, kept in (
        ("Dead-1", dead.pid, False), ("Live-1", live, False), ("Kept-1", dead.pid, True),
    ):  # fmt: skip
        (trees / name / "opt" / "ml").mkdir(parents=True)
        (trees / name / runners.TREE_OWNER).write_text(json.dumps({"pid": owner, "host": host}))
        if kept:
            (trees / name / runners.TREE_KEPT).touch()
    staging = tmp_path / "s3" / ".tmp"
    (staging / f".tmp-{dead.pid}-stage-abc" / "x").mkdir(parents=True)
    (staging / f".tmp-{dead.pid}-half.tar.gz").write_bytes(b"half")
    (staging / f".tmp-{live}-writing.part").write_bytes(b"in progress")
    clean_abandoned(tmp_path)
    assert sorted(p.name for p in trees.iterdir()) == ["Kept-1", "Live-1"]
    assert [p.name for p in staging.iterdir()] == [f".tmp-{live}-writing.part"]
    clean_abandoned(tmp_path, max_age_s=-1)  # after a day everything goes, kept trees too
    assert list(trees.iterdir()) == [] and list(staging.iterdir()) == []


# ---------------------------------------------------------------- 3. bad input: exit 2, one line
@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[robocar]\nregion = 5\n", "region must be a string (in quotes), got an integer 5"),
        ('[robocar]\nbucket = ["a"]\n', "bucket must be a string (in quotes), got an array"),
        ("[robocar]\nprefix = true\n", "prefix must be a string (in quotes), got a boolean"),
        ("robocar = 5\n", "[robocar] must be a table"),
        ('[robocar]\nregion = "eu west 1"\n', "not an AWS region name"),
        ('[robocar]\nbucket = "My_Bucket"\n', "not an S3 bucket name"),
        ('[robocar]\nprefix = "../.."\n', "'..' segment"),
        ("[robocar\n", "not valid TOML"),
        ('[robocar]\nregoin = "typo"\n', "unknown key(s) regoin"),
    ],
)
def test_bad_config_files_are_one_line(
    tmp_path: Path, workspace: Path, definition_file: Path, monkeypatch, capsys, toml: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for variable in ("ROBOCAR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):  # they come before the file
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "robocar.toml").write_text(toml)
    args = run_args(workspace, definition_file)
    args.remove("--bucket"), args.remove(BUCKET)
    code, err = robocar(capsys, *args)
    assert_one_line_refusal(code, err, expected)
    assert not (workspace / "executions").exists()


def test_config_files_that_are_not_text_or_not_files_are_one_line(
    tmp_path: Path, workspace: Path, definition_file: Path, capsys
) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1 << 20) + "\n")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would block forever: refused without a read
    for path, expected in (
        (binary, "not UTF-8"), (huge, "larger than"), (fifo, "not a regular file"),
        (tmp_path, "not a regular file"), (tmp_path / "none.toml", "does not exist"),
    ):  # fmt: skip
        code, err = robocar(capsys, *run_args(workspace, definition_file, "--config", path))
        assert_one_line_refusal(code, err, expected)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--prefix", "../.."], "--prefix '../..': not an S3 key prefix"),
        (["--prefix", "/absolute"], "empty segment"),
        (["--prefix", "a//b"], "empty segment"),
        (["--prefix", "a/./b"], "'.' segment"),
        (["--bucket", "UPPER-case"], "--bucket 'UPPER-case': not an S3 bucket name"),
        (["--bucket", "192.168.1.1"], "IP address"),
        (["--bucket", "a..b"], "not an S3 bucket name"),
        (["--bucket", "../x"], "not an S3 bucket name"),
        (["--pipeline-name", "../../x"], "at 'pipelineName' failed to satisfy constraint"),
        (["--model-package-group", "../group"], "at 'modelPackageGroupName' failed"),
        (["--region", "../x"], "not an AWS region name"),
        (["--role", "arn:aws:iam::1:role/x"], "at 'roleArn' failed to satisfy constraint"),
        (["--param", "Epochs"], "NAME=VALUE"),
        (["--param", "PreprocessSeconds=lots"], "PreprocessSeconds"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(
    tmp_path: Path, workspace: Path, definition_file: Path, capsys, flags: list[str], expected: str
) -> None:
    before = snapshot(tmp_path)
    code, err = robocar(capsys, *run_args(workspace, definition_file, *flags))
    assert_one_line_refusal(code, err, expected)
    assert snapshot(tmp_path) == before and packages(workspace) == []


def test_bad_settings_from_the_environment_name_the_variable(
    workspace: Path, definition_file: Path, monkeypatch, capsys
) -> None:
    args = run_args(workspace, definition_file)
    args.remove("--bucket"), args.remove(BUCKET)
    monkeypatch.setenv("ROBOCAR_BUCKET", "Not_A_Bucket")
    code, err = robocar(capsys, *args)
    assert_one_line_refusal(code, err, "$ROBOCAR_BUCKET 'Not_A_Bucket'")


def test_bad_definition_files_are_one_line(tmp_path: Path, workspace: Path, capsys) -> None:
    cases = {
        "text.json": ("not JSON at all", "is not JSON"),
        "binary.json": (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 text"),
        "array.json": ("[1, 2, 3]", "not a pipeline definition (no 'Steps')"),
        "huge.json": ("[" + " " * (4 * 1048576 + 8) + "]", "longer than 1048576 characters"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        code, err = robocar(capsys, *run_args(workspace, path))
        assert_one_line_refusal(code, err, expected)
    for path, expected in ((tmp_path / "none.json", "no such file"), (tmp_path, "not a regular file")):
        code, err = robocar(capsys, *run_args(workspace, path))
        assert_one_line_refusal(code, err, expected)
    assert not (workspace / "executions").exists()


def test_unwritable_workspaces_are_one_line(
    tmp_path: Path, definition_file: Path, monkeypatch, capsys
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, err = robocar(capsys, *run_args(a_file, definition_file))
    assert_one_line_refusal(code, err, f"--workspace {a_file}: not a folder")
    code, err = robocar(capsys, *run_args(a_file / "ws", definition_file))
    assert_one_line_refusal(code, err, "cannot write there (Not a directory)")

    # A read-only file system, as the OS reports it (root ignores permission bits, so it is simulated).
    def read_only(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    code, err = robocar(capsys, *run_args(tmp_path / "ro", definition_file))
    assert_one_line_refusal(code, err, "cannot write there (Read-only file system)")


def test_an_os_error_deep_inside_a_command_is_one_line(
    workspace: Path, definition_file: Path, monkeypatch, capsys
) -> None:
    from pipelines.local.s3 import LocalS3Client as Client

    def full_disk(self, **_kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.base / BUCKET))

    monkeypatch.setattr(Client, "create_bucket", full_disk)
    code, err = robocar(capsys, *run_args(workspace, definition_file))
    assert_one_line_refusal(code, err, "No space left on device: ")


def test_a_missing_or_wrong_data_folder_is_one_line(
    tmp_path: Path, workspace: Path, definition_file: Path, capsys
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for data, expected in (
        (tmp_path / "none", "no such folder"), (a_file, "not a folder"),
        (workspace, "overlaps"), (tmp_path, "overlaps"), (workspace / "s3" / BUCKET, "overlaps"),
    ):  # fmt: skip
        code, err = robocar(capsys, *run_args(workspace, definition_file, "--data", data))
        assert_one_line_refusal(code, err, f"--data {data}", expected)
    tubs = workspace / "tubs" / "tub_1"  # tubs kept in the workspace (as robocar demo does) are fine
    tubs.mkdir(parents=True)
    (tubs / "catalog_0.catalog").write_text("{}\n")
    assert main(run_args(workspace, definition_file, "--data", str(tubs.parent))) == 0


def test_every_command_refuses_bad_settings_in_one_line(tmp_path: Path, capsys) -> None:
    workspace = ["--workspace", str(tmp_path / "ws")]
    for argv, expected in (
        (["pipeline", "status", "--local", *workspace, "--pipeline-name", "../x"], "pipelineName"),
        (["pipeline", "upsert", *workspace, "--prefix", "../.."], "'..' segment"),
        (["pipeline", "definition", "--bucket", "Bad_Bucket"], "not an S3 bucket name"),
        (["trigger", "watch", "--once", *workspace, "--prefix", "/raw"], "empty segment"),
        (["trigger", "watch", "--once", *workspace, "--interval", "0"], "--interval must be positive"),
        (["registry", "describe", "latest", *workspace, "--group", "nobody"], "no model package"),
        (["data", "synth", "--out", str(tmp_path / "t"), "--frames", "0"], "--frames >= --sessions"),
    ):  # fmt: skip
        code, err = robocar(capsys, *argv)
        assert_one_line_refusal(code, err, expected)


def test_a_bug_is_one_line_naming_it_and_debug_shows_the_traceback(
    workspace: Path, definition_file: Path, monkeypatch, capsys
) -> None:
    from pipelines.commands import run as run_command

    def bug(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        return {}["missing"]

    monkeypatch.setattr(run_command, "run_locally", bug)
    code, err = robocar(capsys, *run_args(workspace, definition_file))
    assert code == cli.EXIT_BUG
    assert err.splitlines() == [
        "robocar: internal error: KeyError: 'missing' (a bug: rerun with `robocar --debug ...` to see "
        "where, and report it)"
    ]
    code, err = robocar(capsys, "--debug", *run_args(workspace, definition_file))
    assert code == cli.EXIT_BUG
    assert "Traceback (most recent call last)" in err and "in bug" in err


# ---------------------------------------------------------------- 4. symbolic links in --data
@pytest.fixture
def tubs(tmp_path: Path) -> Path:
    folder = tmp_path / "tubs"
    (folder / "tub_1").mkdir(parents=True)
    (folder / "tub_1" / "catalog_0.catalog").write_text("{}\n")
    return folder


def _uploaded(workspace: Path) -> list[str]:
    s3 = LocalS3Client(workspace)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="sample/raw/").get("Contents", [])
    return sorted(o["Key"].removeprefix("sample/raw/") for o in listed)


def test_data_links_within_the_folder_are_followed_once(
    tmp_path: Path, definition_file: Path, tubs: Path, capsys
) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace), records=0)
    (tubs / "session_2").symlink_to(tubs / "tub_1", target_is_directory=True)
    (tubs / "tub_1" / "alias.catalog").symlink_to(tubs / "tub_1" / "catalog_0.catalog")
    code, err = robocar(capsys, *run_args(workspace, definition_file, "--prefix", "sample", "--data", tubs))
    assert code == 0, err
    assert _uploaded(workspace) == [
        "session_2/alias.catalog", "session_2/catalog_0.catalog",
        "tub_1/alias.catalog", "tub_1/catalog_0.catalog",
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["escape", "loop", "chain", "dangling", "file-escape", "fifo"])
def test_data_links_out_loops_and_special_files_are_refused_with_a_message(
    tmp_path: Path, outside: Path, definition_file: Path, tubs: Path, capsys, kind: str
) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace), records=0)
    culprit = tubs / "tub_1" / "culprit"
    expected = {
        "escape": "outside",
        "loop": "a folder it is in: a loop",
        "chain": "links are followed once, not in chains",
        "dangling": "broken symbolic link",
        "file-escape": "outside",
        "fifo": "neither a file nor a folder",
    }[kind]
    if kind == "escape":
        culprit.symlink_to(outside, target_is_directory=True)
    elif kind == "loop":
        culprit.symlink_to(tubs, target_is_directory=True)
    elif kind == "chain":  # tubs/zz -> tub_1, whose culprit -> tub_2: reached through zz, a second hop
        (tubs / "tub_2").mkdir()
        culprit.symlink_to(tubs / "tub_2", target_is_directory=True)
        (tubs / "zz").symlink_to(tubs / "tub_1", target_is_directory=True)
        culprit = tubs / "zz" / "culprit"
    elif kind == "dangling":
        culprit.symlink_to(tmp_path / "gone")
    elif kind == "file-escape":
        culprit.symlink_to(outside / "secret.txt")
    else:
        os.mkfifo(culprit)  # a reader would block forever: refused without opening it
    code, err = robocar(capsys, *run_args(workspace, definition_file, "--prefix", "sample", "--data", tubs))
    assert_one_line_refusal(code, err, str(culprit), expected)
    assert _uploaded(workspace) == []  # nothing uploaded: the listing is refused before the first copy
    assert not (workspace / "executions").exists()


def test_link_fan_out_cannot_multiply_the_walk(tmp_path: Path) -> None:
    """Without the one-hop rule, two links per level to the next level would walk 2**depth copies."""
    root = tmp_path / "data"
    for level in range(20):
        folder = root / f"level{level}"
        folder.mkdir(parents=True)
        (folder / "frame.jpg").write_text(str(level))
        if level:
            for copy in ("a", "b"):
                (root / f"level{level - 1}" / copy).symlink_to(folder, target_is_directory=True)
    with pytest.raises(runners.FolderError, match="links are followed once, not in chains"):
        runners.folder_files(root)
    (tmp_path / "tree" / "a" / "b").mkdir(parents=True)  # a real tree: every file once, in order
    for name in ("a/1", "a/b/2", "3"):
        (tmp_path / "tree" / name).write_text(name)
    assert [r for r, _ in runners.folder_files(tmp_path / "tree")] == ["3", "a/1", "a/b/2"]
