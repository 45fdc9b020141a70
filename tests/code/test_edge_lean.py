"""The device stays lean: ``.[edge]`` pulls in no TensorFlow and no SDK, and the car drives without them.

Two offline checks, cheaper than building a venv and still honest:
1. the dependency closure of ``pip install .[edge]``, resolved from setup.py (as it is now) through the
   metadata of the installed distributions, contains neither tensorflow nor sagemaker;
2. ``robocar-edge`` (and ``robocar edge``) run in a fresh interpreter in which importing tensorflow,
   keras, sagemaker, boto3, botocore, pandas or matplotlib raises ImportError: it pulls from the local
   registry, drives a tub replay and reports status.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from edge_fixtures import GROUP, SAMPLE_TUBS, TARGET, onnx_pilot_package, register, registry
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edge.aws import clients

REPO = Path(__file__).resolve().parents[2]
TUB_V2 = SAMPLE_TUBS / "tub_v2"
NOT_ON_THE_CAR = ("tensorflow", "keras", "sagemaker", "boto3", "botocore", "pandas", "matplotlib")


def setup_lists() -> dict[str, list[str]]:
    """Module-level list assignments of setup.py, read without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    lists: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    lists[target.id] = ast.literal_eval(node.value)
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "setup":
            for keyword in call.keywords:
                if keyword.arg == "install_requires":
                    lists["install_requires"] = ast.literal_eval(keyword.value)
    return lists


def closure(requirements: list[str]) -> set[str]:
    """Every distribution that installing ``requirements`` brings, from installed metadata (no network)."""
    seen: set[str] = set()
    queue = [(Requirement(r), "") for r in requirements]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError as exc:
            raise AssertionError(
                f"{requirement.name} is not installed: cannot resolve the edge closure"
            ) from exc
        wanted_extras = requirement.extras or {""}
        for extra_name in wanted_extras:
            queue.extend((Requirement(r), extra_name) for r in requires)
    return seen


def test_edge_extra_resolves_without_tensorflow_or_sdk():
    lists = setup_lists()
    resolved = closure(lists["install_requires"] + lists["EDGE"])
    assert {"onnxruntime", "ai-edge-litert", "paho-mqtt", "numpy", "pillow"} <= resolved
    heavy = resolved & {"tensorflow", "tensorflow-cpu", "keras", "sagemaker", "tf-keras", "torch"}
    assert not heavy, f"pip install .[edge] would pull {sorted(heavy)}"
    assert "tensorflow" in closure(lists["TRAIN"]), "the check can see tensorflow when it is there"


BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {NOT_ON_THE_CAR!r}

    class NotOnTheCar(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed on the car")
            return None

    sys.meta_path.insert(0, NotOnTheCar())
    """
)


def run_on_the_car(module: str, *args: str) -> subprocess.CompletedProcess:
    code = BLOCKER + textwrap.dedent(
        f"""
        import runpy
        sys.argv = [{module!r}, *sys.argv[1:]]
        try:
            runpy.run_module({module!r}, run_name="__main__")
        finally:
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
            print("HEAVY-MODULES=" + ",".join(loaded), file=sys.stderr)
        """
    )
    car_env = {k: v for k, v in os.environ.items() if k != "ROBOCAR_LOCAL_CLIENTS"}  # set by pipelines
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=car_env,
    )


def test_edge_imports_pulls_and_drives_without_tensorflow_sdk_or_boto3(tmp_path):
    aws = clients(local_root=tmp_path / "workspace")
    registry(aws.sagemaker, aws.s3)
    register(aws.sagemaker, aws.s3, onnx_pilot_package("lean"), key="m/1/model.tar.gz")
    car = ["--root", str(tmp_path / "car")]
    registry_flags = ["--local-root", str(tmp_path / "workspace"), "--group", GROUP, "--target", TARGET]

    pulled = run_on_the_car("edge.cli", "pull", *car, *registry_flags)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith("installed:")

    drove = run_on_the_car(
        "edge.cli", "run", *car, *registry_flags, "--source", str(TUB_V2), "--max-frames", "5", "--quiet"
    )
    assert drove.returncode == 0, drove.stderr
    assert "drove 5 frames" in drove.stdout
    assert "HEAVY-MODULES=\n" in drove.stderr + "\n"

    status = run_on_the_car("pipelines.cli", "edge", "status", *car, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current"]["version"] == 1
    assert "HEAVY-MODULES=\n" in status.stderr + "\n"


def test_registry_side_modules_need_only_the_standard_library():
    """The rollout Lambda bundles edge.agent, edge.artifacts and edge.greengrass.component, without numpy."""
    code = BLOCKER.replace(
        repr(NOT_ON_THE_CAR), repr(("numpy", "PIL", "yaml", "boto3", "botocore"))
    ) + textwrap.dedent(
        """
        import edge.agent, edge.artifacts, edge.greengrass.component
        print("imported")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
