"""Imports run one way: pipelines -> steps -> container code -> the shared core (edge/).

docs/design.md "Layout": the car imports nothing above edge/, container code nothing of the control plane,
steps nothing of pipelines. Container units (processing, training, inference) share one image and may
import each other. Imports are read from the source (every ``import``, at any depth, guarded or not).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER = {"pipelines": 0, "steps": 1, "processing": 2, "training": 2, "inference": 2, "edge": 3}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(root: Path = REPO) -> list[str]:
    """``file:line: unit -> higher unit`` for every import against the layering."""
    problems = []
    for unit, level in LAYER.items():
        for path in sorted((root / unit).rglob("*.py")):
            for line, package in imported_packages(path.read_text()):
                if package in LAYER and LAYER[package] < level:
                    problems.append(f"{path.relative_to(root)}:{line}: {unit} -> {package}")
    return problems


def test_no_unit_imports_one_above_it() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    for unit in LAYER:
        (tmp_path / unit).mkdir()
    (tmp_path / "edge" / "frames.py").write_text("import numpy\nfrom edge import artifacts\n")
    (tmp_path / "edge" / "sneaky.py").write_text("def f():\n    from pipelines.local import client\n")
    (tmp_path / "steps" / "x.py").write_text(
        "import processing.shards\ntry:\n    import pipelines\nexcept ImportError:\n    pass\n"
    )
    assert upward_imports(tmp_path) == [
        "steps/x.py:3: steps -> pipelines",
        "edge/sneaky.py:2: edge -> pipelines",
    ]


# The Model Registry's write operations (botocore's sagemaker model). The car only reads the registry
# (edge/local_readers.py); the local registry's writer is the control plane's (pipelines/local/registry.py).
REGISTRY_WRITES = frozenset(
    {
        "create_model_package",
        "create_model_package_group",
        "update_model_package",
        "delete_model_package",
        "delete_model_package_group",
        "put_model_package_group_policy",
    }
)


def registry_writers(root: Path = REPO) -> list[str]:
    """``file:line: name`` of every function or method in edge/ that implements a registry write."""
    found = []
    for path in sorted((root / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in REGISTRY_WRITES:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name}")
    return found


def test_edge_holds_no_writer_of_the_registry() -> None:
    assert registry_writers() == []


def test_a_registry_writer_in_edge_is_found(tmp_path: Path) -> None:
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "fake.py").write_text(
        "class Registry:\n    def describe_model_package(self): ...\n"
        "    def create_model_package(self, **kwargs): ...\n"
    )
    assert registry_writers(tmp_path) == ["edge/fake.py:3: create_model_package"]
