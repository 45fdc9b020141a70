"""Local environments (pipelines/local/environments.py): which Python runs a step, from its image."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import sample_pipeline as sample
from sagemaker.core import image_uris

from pipelines.local import DefinitionError, environments, run_local
from pipelines.local.environments import MXNET, VENV, EnvironmentUnavailable, image_family
from pipelines.local.s3 import LocalS3Client

REGIONS = ("us-east-1", "eu-west-1", "ap-east-1", "cn-north-1", "us-gov-west-1")
DIGEST = "sha256:" + "ab" * 32


def dlc(framework: str, version: str, py_version: str, region: str, scope: str) -> str:
    """A deep learning container's URI, as the SDK names it."""
    return image_uris.retrieve(
        framework=framework, region=region, version=version, py_version=py_version,
        instance_type="ml.m5.xlarge", image_scope=scope,
    )  # fmt: skip


MXNET_IMAGE = dlc("mxnet", "1.9.0", "py38", "us-east-1", "training")


# ---------------------------------------------------------------- the table
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("scope", ["training", "inference"])
def test_deep_learning_containers_map_by_repository_in_every_region(region: str, scope: str) -> None:
    assert image_family(dlc("tensorflow", "2.19", "py312", region, scope)) == VENV
    assert image_family(dlc("mxnet", "1.9.0", "py38", region, scope)) == MXNET


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("algorithm", ["image-classification", "object-detection"])
def test_built_in_mxnet_algorithms_map_from_their_regions_registry(region: str, algorithm: str) -> None:
    uri = image_uris.retrieve(algorithm, region)
    assert image_family(uri) == MXNET
    assert image_family(uri.replace(":1", f"@{DIGEST}")) == MXNET  # the digest form too


def test_a_built_in_algorithm_name_in_another_account_is_not_the_algorithm() -> None:
    mine = "123456789012.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
    with pytest.raises(
        EnvironmentUnavailable, match="registry account in us-east-1 is 811284229777, not 123456789012"
    ):
        image_family(mine)
    # us-east-1's algorithm account is not eu-west-1's (685385470294): the account belongs to the region.
    elsewhere = "811284229777.dkr.ecr.eu-west-1.amazonaws.com/object-detection:1"
    with pytest.raises(EnvironmentUnavailable, match="in eu-west-1 is 685385470294, not 811284229777"):
        image_family(elsewhere)


@pytest.mark.parametrize(
    "uri",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/robocar/tensorflow-training:1",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-image:latest",
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training",  # neither tag nor digest
        "docker.io/library/python:3.11",
        "",
    ],
)
def test_any_other_image_has_no_environment(uri: str) -> None:
    with pytest.raises(EnvironmentUnavailable):
        image_family(uri)


# ---------------------------------------------------------------- refused before the run starts
@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    sample.upload_sample(LocalS3Client(tmp_path / "ws"))
    return tmp_path / "ws"


def test_unmapped_images_are_refused_before_anything_runs(workspace: Path) -> None:
    pytorch = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
    mine = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-image:1"
    definition = sample.definition()
    definition["Steps"][0]["Arguments"]["AppSpecification"]["ImageUri"] = pytorch
    definition["Steps"][1]["Arguments"]["AlgorithmSpecification"]["TrainingImage"] = pytorch
    definition["Steps"][2]["Arguments"]["AppSpecification"]["ImageUri"] = mine
    with pytest.raises(DefinitionError) as refused:
        run_local(definition, workspace, pipeline_name="sample")
    message = str(refused.value)
    assert message.startswith("the definition names images local mode has no environment for: ")
    assert (
        f"{pytorch} (no family for repository 'pytorch-training': step 'Preprocess', step 'Train')" in message
    )
    assert f"{mine} (no family for repository 'my-image': step 'Evaluate')" in message
    assert not (workspace / "executions").exists() and not (workspace / "tmp").exists()


def test_an_image_given_by_a_parameter_is_checked_with_the_value_of_this_run(workspace: Path) -> None:
    definition = sample.definition()
    definition["Parameters"].append(
        {"Name": "ProcessingImage", "Type": "String", "DefaultValue": sample.PROCESSING_IMAGE}
    )
    definition["Steps"][0]["Arguments"]["AppSpecification"]["ImageUri"] = {
        "Get": "Parameters.ProcessingImage"
    }
    other = "123456789012.dkr.ecr.us-east-1.amazonaws.com/preprocess:7"
    with pytest.raises(
        DefinitionError,
        match=f"no environment for: {other} \\(no family for repository 'preprocess': step 'Preprocess'\\)$",
    ):
        run_local(definition, workspace, {"ProcessingImage": other}, pipeline_name="sample")
    assert run_local(definition, workspace, pipeline_name="sample").status == "Succeeded"


def test_an_image_known_only_while_running_is_checked_by_its_step(workspace: Path) -> None:
    definition = sample.definition()
    status = {"Get": "Steps.Preprocess.ProcessingJobStatus"}  # "Completed" once Preprocess has run
    image = {"Std:Join": {"On": ":", "Values": ["123456789012.dkr.ecr.us-east-1.amazonaws.com/eval", status]}}
    definition["Steps"][2]["Arguments"]["AppSpecification"]["ImageUri"] = image
    execution = run_local(definition, workspace, pipeline_name="sample")
    assert execution.status == "Failed" and execution.steps["Train"].status == "Succeeded"
    assert execution.steps["Evaluate"].failure_reason == (
        "local mode has no environment for 123456789012.dkr.ecr.us-east-1.amazonaws.com/eval:Completed: "
        "no family for repository 'eval'"
    )


def test_tensorflow_steps_run_in_this_venv_without_environment_work(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_building(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the TensorFlow family must not look for an environment")

    monkeypatch.setattr(environments, "ensure_environment", no_building)
    execution = run_local(sample.definition(), workspace, pipeline_name="sample")
    assert execution.status == "Succeeded", execution.failure_reason
    for step in ("Preprocess", "Train"):
        log = Path(execution.steps[step].log_path).read_text()
        assert log.startswith(f"$ {sys.executable} ")
    assert not (workspace / "envs").exists()


# ---------------------------------------------------------------- building, offline (a fake pip)
@pytest.fixture
def fake_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MXNet's requirements replaced by a file of this test's (its folder name follows its content)."""
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    (requirements / f"{MXNET}.txt").write_text("robocar-fake==1.0\n")
    monkeypatch.setattr(environments, "REQUIREMENTS_DIR", requirements)
    return requirements / f"{MXNET}.txt"


class FakeBuild:
    """Stands in for ``venv`` and ``pip``: makes ``bin/python``, counts the pip runs, may fail or wait."""

    def __init__(self, fail: bool = False, seconds: float = 0.0) -> None:
        self.installs = 0
        self.fail, self.seconds = fail, seconds
        self.lock = threading.Lock()

    def __call__(self, command: list[str]) -> None:
        if command[1:3] == ["-m", "venv"]:
            (Path(command[3]) / "bin").mkdir(parents=True)
            os.symlink(sys.executable, Path(command[3]) / "bin" / "python")
            return
        with self.lock:
            self.installs += 1
        time.sleep(self.seconds)
        if self.fail:
            raise EnvironmentUnavailable("ERROR: No matching distribution found for robocar-fake==1.0")


def test_an_environment_is_built_once_then_reused(fake_family: Path, tmp_path: Path) -> None:
    build, notes = FakeBuild(), []
    first = environments.ensure_environment(MXNET, tmp_path / "envs", run=build, note=notes.append)
    assert first.parent == tmp_path / "envs" and first.name.startswith("mxnet-")
    marker = json.loads((first / environments.MARKER).read_text())
    assert marker["requirements"] == "robocar-fake==1.0\n" and marker["family"] == MXNET
    inode = first.stat().st_ino
    again = environments.ensure_environment(MXNET, tmp_path / "envs", run=build, note=notes.append)
    assert again == first and again.stat().st_ino == inode and build.installs == 1
    assert [n for n in notes if n.startswith("building")] == [notes[0]]  # the progress shown, once
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.startswith(".")] == [first.name]

    fake_family.write_text("robocar-fake==1.1\n")  # changed requirements: another folder, built anew
    changed = environments.ensure_environment(MXNET, tmp_path / "envs", run=build, note=notes.append)
    assert changed != first and build.installs == 2


def test_a_failed_or_interrupted_build_is_never_used(fake_family: Path, tmp_path: Path) -> None:
    root = tmp_path / "envs"
    with pytest.raises(EnvironmentUnavailable, match="No matching distribution"):
        environments.ensure_environment(MXNET, root, run=FakeBuild(fail=True), note=lambda _: None)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []  # no env, no leftovers
    # A build killed midway (no cleanup ran) leaves its temporary folder; an environment folder without
    # the marker is not an environment either. Both are replaced by the next build.
    target = environments.environment_path(MXNET, root)
    crashed = root / f".tmp-{target.name}-deadbeef"
    (crashed / "bin").mkdir(parents=True)
    (target / "bin").mkdir(parents=True)
    os.symlink(sys.executable, target / "bin" / "python")
    assert not environments.is_built(target)
    build = FakeBuild()
    assert environments.ensure_environment(MXNET, root, run=build, note=lambda _: None) == target
    assert build.installs == 1 and environments.is_built(target) and not crashed.exists()


def test_concurrent_runs_build_it_once(fake_family: Path, tmp_path: Path) -> None:
    build, results = FakeBuild(seconds=0.5), []

    def ensure() -> None:
        results.append(environments.ensure_environment(MXNET, tmp_path / "envs", run=build, note=print))

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert build.installs == 1 and len(set(results)) == 1 and len(results) == 3


def test_the_cache_is_the_workspace_unless_the_variable_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(environments.CACHE_VARIABLE, raising=False)
    assert environments.cache_root(tmp_path / "ws") == tmp_path / "ws" / "envs"
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(tmp_path / "shared"))
    assert environments.cache_root(tmp_path / "ws") == tmp_path / "shared"


def test_the_requirements_pin_every_package_exactly() -> None:
    lines = environments.requirements_file(MXNET).read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert pins["mxnet"] == "1.9.1" and pins["numpy"] == "1.23.5" and pins["onnx"] == "1.18.0"
    major, minor = (int(part) for part in pins["opencv-python-headless"].split(".")[:2])
    assert (major, minor) < (4, 12) and "pillow" in pins
    assert all(version and "*" not in version for version in pins.values())


# -------------------------------------------------- real pip, offline: its message fails the step
def mxnet_definition() -> dict:
    """One Processing step on the MXNet image running ``probe.py`` from local S3, as steps/ write them."""
    code = "/opt/ml/processing/input/code"
    return {
        "Version": "2020-12-01",
        "Parameters": [],
        "Steps": [
            {
                "Name": "Probe",
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {
                        "ClusterConfig": {
                            "InstanceType": "ml.m5.xlarge",
                            "InstanceCount": 1,
                            "VolumeSizeInGB": 30,
                        }
                    },
                    "AppSpecification": {
                        "ImageUri": MXNET_IMAGE,
                        "ContainerEntrypoint": ["python3", f"{code}/probe.py"],
                        "ContainerArguments": ["/opt/ml/processing/result"],
                    },
                    "RoleArn": "arn:aws:iam::123456789012:role/sample",
                    "ProcessingInputs": [
                        sample._processing_input("code", f"s3://{sample.BUCKET}/mx/code/", code)
                    ],
                    "ProcessingOutputConfig": {
                        "Outputs": [
                            sample._processing_output(
                                "result", "/opt/ml/processing/result", f"s3://{sample.BUCKET}/mx/result"
                            )
                        ]
                    },
                    "Environment": {"PYTHONPATH": code, "PYTHONUNBUFFERED": "1"},
                },
            }
        ],
    }


PROBE = """
import json, pathlib, shutil, sys
import mxnet as mx, numpy
from edge import frames  # the project's container code, from the code input (PYTHONPATH)
total = mx.nd.ones((2, 2)).sum().asscalar()
print(f"mxnet {mx.__version__} numpy {numpy.__version__} sum {total}")
print(f"python {sys.prefix}")
print(f"edge {frames.__file__}")
print(f"which {shutil.which('python3')}")  # its environment's, first on PATH as in the image
pathlib.Path(sys.argv[1], "result.json").write_text(json.dumps({"sum": float(total)}))
"""


def upload_probe(workspace: Path) -> None:
    s3 = LocalS3Client(workspace)
    s3.create_bucket(Bucket=sample.BUCKET)
    root = Path(__file__).resolve().parents[2]
    files = {
        "probe.py": PROBE,
        "edge/__init__.py": "",
        "edge/frames.py": (root / "edge/frames.py").read_text(),
    }
    for name, text in files.items():
        s3.put_object(Bucket=sample.BUCKET, Key=f"mx/code/{name}", Body=text.encode())


def test_pips_message_is_the_failed_steps_reason(
    tmp_path: Path, fake_family: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    upload_probe(workspace)
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(tmp_path / "envs"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip as it is when the index cannot be reached, but at once
    execution = run_local(mxnet_definition(), workspace, pipeline_name="mx")
    assert execution.status == "Failed"
    reason = execution.steps["Probe"].failure_reason
    assert reason.startswith(f"building the local environment for {MXNET_IMAGE} failed")
    assert "No matching distribution found for robocar-fake==1.0" in reason
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- real MXNet (downloads ~100 MB once)
@pytest.mark.slow
def test_an_mxnet_step_runs_in_its_own_environment_which_the_next_run_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reused across test runs on this machine; the first one builds it from the package index (pip's
    # message is the step's failure reason when the index cannot be reached).
    cache = Path.home() / ".cache" / "robocar-envs"
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(cache))
    workspace = tmp_path / "ws"
    upload_probe(workspace)
    environment = environments.environment_path(MXNET, cache)

    first = run_local(mxnet_definition(), workspace, pipeline_name="mx")
    assert first.status == "Succeeded", first.failure_reason
    log = Path(first.steps["Probe"].log_path).read_text()
    assert "mxnet 1.9.1 numpy 1.23.5 sum 4.0" in log
    assert f"python {environment}\n" in log and f"which {environment}/bin/python3\n" in log  # not this venv
    assert "edge " + str(workspace / "tmp") in log  # the code input's package, not the installed project
    result = json.loads((workspace / "s3" / sample.BUCKET / "mx/result/result.json").read_text())
    assert result == {"sum": 4.0}
    built = (environment.stat().st_ino, (environment / environments.MARKER).read_text())

    second = run_local(mxnet_definition(), workspace, pipeline_name="mx")
    assert second.status == "Succeeded", second.failure_reason
    log = Path(second.steps["Probe"].log_path).read_text()
    assert "mxnet 1.9.1 numpy 1.23.5 sum 4.0" in log and "building the mxnet environment" not in log
    assert (environment.stat().st_ino, (environment / environments.MARKER).read_text()) == built


def test_the_reason_of_a_failed_build_is_pips_own() -> None:
    output = (
        "$ python -m pip install -r mxnet.txt\nCollecting mxnet==1.9.1\n"
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(refused)'\n"
        "ERROR: Could not find a version that satisfies the requirement mxnet==1.9.1 (from versions: none)\n"
    )
    assert environments.pip_errors(output) == (
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(refused)' "
        "ERROR: Could not find a version that satisfies the requirement mxnet==1.9.1 (from versions: none)"
    )
    assert environments.pip_errors("Killed\n") == "Killed"
