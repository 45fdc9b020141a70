"""Each container step declares, pinned, what its code imports beyond its image, and installs it first."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipelines.code_bundle import (
    CONTAINER_PACKAGES,
    ENTRY_SCRIPTS,
    MXNET_REQUIREMENTS,
    PROCESSING_REQUIREMENTS,
    REQUIREMENTS_OF,
    TRAINING_REQUIREMENTS,
    CodeBundle,
)
from pipelines.import_graph import imported_names, project_modules
from processing import bootstrap

REPO = Path(__file__).resolve().parents[2]
FRAMEWORK = "tensorflow"  # the pilot's steps run in TensorFlow training images (docs/containers.md)
REQUIREMENTS = {"processing": PROCESSING_REQUIREMENTS, "training": TRAINING_REQUIREMENTS}


def requirements_of(script: str) -> str:
    """The file a step's container installs: its image's own pins, else its layout's file."""
    return REQUIREMENTS_OF.get(script, REQUIREMENTS[ENTRY_SCRIPTS[script]])


STEP_SCRIPTS: dict[str, list[str]] = {}
for _script in ENTRY_SCRIPTS:
    STEP_SCRIPTS.setdefault(requirements_of(_script), []).append(_script)
# Imported inside a function that no container calls: Neo's runtime runs Neo artifacts on the car only.
NEVER_IN_A_CONTAINER = {"dlr"}
# Imported only inside the pilot's functions of modules the classifier's scripts share (processing/
# evaluate.py, compile.py, local_compile.py), which those scripts never call. What they do import is run
# in the MXNet environment, which has none of these: test_code_bundles.py imports every module of each
# MXNet bundle and runs its script there, and tests/model runs the scripts end to end.
PILOT_ONLY = {"tensorflow", "keras", "matplotlib", "ai-edge-litert"}
# The car's MQTT client: imported only inside edge.drive.MqttPublisher, which the detector's decoder module
# (edge/detect.py, in the MXNet bundles) names for the car's own run loop and no container constructs.
CAR_ONLY = {"paho-mqtt"}


def required_imports(path: Path) -> set[str]:
    """Dotted names a module imports outside ``try: ... except ImportError`` blocks."""
    return imported_names(path, REPO, optional=False)


def third_party_imports(script: str) -> set[str]:
    """Top-level third-party modules the script needs, following the bundled project modules it imports
    (the walk that decides what a step's code bundle holds, without the optional imports)."""
    modules = project_modules(REPO / script, REPO, CONTAINER_PACKAGES, optional=False)
    tops = {name.split(".")[0] for path in modules for name in required_imports(path)}
    return {top for top in tops if top not in CONTAINER_PACKAGES and top not in sys.stdlib_module_names}


def framework_closure(name: str = FRAMEWORK) -> set[str]:
    """The framework and every distribution it depends on (its image brings them), normalised names."""
    closure, todo = set(), [name]
    while todo:
        dist = todo.pop().lower().replace("_", "-")
        if dist in closure:
            continue
        closure.add(dist)
        for text in importlib.metadata.requires(dist) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return closure


def distributions_of(modules: set[str]) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    return {dist.lower().replace("_", "-") for module in modules for dist in mapping.get(module, [module])}


@pytest.mark.parametrize("requirements", sorted(STEP_SCRIPTS))
def test_every_import_beyond_the_image_is_pinned(requirements: str) -> None:
    pins = {name.lower(): version for name, version in bootstrap.pinned(REPO / requirements).items()}
    needed = set().union(*(distributions_of(third_party_imports(s)) for s in STEP_SCRIPTS[requirements]))
    # The project's MXNet image is built from its pins alone (infra/images/mxnet): nothing else is there.
    brought = PILOT_ONLY | CAR_ONLY if requirements == MXNET_REQUIREMENTS else framework_closure()
    missing = needed - brought - set(pins) - NEVER_IN_A_CONTAINER
    assert not missing, f"{requirements} lacks {sorted(missing)}, imported by {STEP_SCRIPTS[requirements]}"
    assert all(version for version in pins.values())


def test_the_scan_sees_what_a_script_imports() -> None:
    """The scan is not vacuous: compile needs the runtimes, preprocess the schema checker."""
    assert {"onnx", "onnxruntime", "ai_edge_litert"} <= third_party_imports("processing/compile.py")
    assert "jsonschema" in third_party_imports("processing/preprocess.py")
    assert "pipelines" not in third_party_imports("processing/evaluate.py")  # only inside try/ImportError
    assert {"numpy", "keras", "h5py"} <= framework_closure()


def test_a_requirement_not_pinned_exactly_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nPillow==13.0.0  # why\n\njsonschema>=4\n")
    with pytest.raises(ValueError, match="'jsonschema>=4' is not pinned"):
        bootstrap.pinned(path)


def test_the_training_requirements_sit_at_the_source_directory_root() -> None:
    code = CodeBundle("robocar-data-123456789012", "robocar")
    with tarfile.open(fileobj=io.BytesIO(code.step("training/train.py").sourcedir)) as tar:
        root_file = tar.extractfile("requirements.txt").read()
    assert root_file == (REPO / "training" / "requirements.txt").read_bytes()
    for script in STEP_SCRIPTS["processing/requirements.txt"]:
        files = code.step(script).files
        assert "processing/bootstrap.py" in files and "processing/requirements.txt" in files
    # the MXNet image's scripts carry its pins under the contract's names
    with tarfile.open(fileobj=io.BytesIO(code.step("training/classifier.py").sourcedir)) as tar:
        assert tar.extractfile("requirements.txt").read() == (REPO / MXNET_REQUIREMENTS).read_bytes()
    files = code.step("processing/compile_classifier.py").files
    assert files["processing/requirements.txt"] == (REPO / MXNET_REQUIREMENTS).read_bytes()


def test_the_bootstrap_installs_only_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))
    here = importlib.metadata.version("Pillow")
    bootstrap.prepare({"Pillow": here}, environ={})
    assert calls == []  # satisfied: nothing runs
    bootstrap.prepare({"Pillow": "0.0.1", "no-such-dist-robocar": "1.0"}, environ={})
    assert calls[0][:6] == [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--quiet"]
    assert calls[0][6:8] == ["Pillow==0.0.1", "no-such-dist-robocar==1.0"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    assert bootstrap.install_command(["a==1"], wheels)[-3:] == ["--no-index", "--find-links", str(wheels)]


def test_locally_the_bootstrap_never_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("installed into the project's venv"))
    local = {"ROBOCAR_LOCAL_ROOT": "/tmp/ws"}
    bootstrap.prepare({"Pillow": "0.0.1"}, environ=local)  # another version: the venv stands in, no install
    with pytest.raises(
        SystemExit, match=r"no-such-dist-robocar not installed.*pip install no-such-dist-robocar==1"
    ):
        bootstrap.prepare({"no-such-dist-robocar": "1"}, environ=local)


def test_the_bootstrap_runs_the_script_with_its_arguments(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "processing" / "bootstrap.py"), "processing/preprocess.py", "--help"],
        capture_output=True, text=True, timeout=120, env={"ROBOCAR_LOCAL_ROOT": str(tmp_path), "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage: preprocess.py" in result.stdout
    missing = subprocess.run(
        [sys.executable, str(REPO / "processing" / "bootstrap.py"), "processing/nope.py"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "no script" in missing.stderr


@pytest.mark.parametrize("package", CONTAINER_PACKAGES)
def test_container_code_parses_as_the_images_python(package: str) -> None:
    """The TensorFlow images run Python 3.12 (docs/containers.md); nothing imports what 3.12 removed."""
    removed_in_312 = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), feature_version=(3, 12))
        tops = {name.split(".")[0] for name in required_imports(path)}
        assert not tops & removed_in_312, path
        assert isinstance(tree, ast.Module), path
