"""What CompileForEdge writes (docs/contracts.md section 5): reproducible archives, manifests, compiled.json.

Shared by both ways of compiling (``processing/neo.py`` and ``processing/local_compile.py``); no
TensorFlow, no ONNX, no AWS here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.artifacts import sha256_file
from edge.frames import FrameSpec
from processing.archives import deterministic_targz
from processing.errors import UserError

PACKAGE_NAME = "model.tar.gz"
MANIFEST_NAME = "manifest.json"
COMPILED_NAME = "compiled.json"
MANIFEST_FORMAT = "robocar-edge/1"
COMPILED_FORMAT = "robocar-compiled/1"


class CompileError(UserError):
    """Bad input to the step (model, splits, targets, options): one line, exit status 2."""


class CompileFailed(CompileError):
    """The input was fine but compiling failed (a Neo job failed or timed out, no artifact within the
    accuracy tolerance): one line, exit status 1, as preprocess's quality gate."""

    exit_status = 1
    label = "failed"


def log(message: str) -> None:
    print(f"compile: {message}", flush=True)


def json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def write_reproducible_tar_gz(members: Mapping[str, bytes], dest: Path) -> dict[str, Any]:
    """``dest``: a ``deterministic_targz`` of ``members`` (same members, same sha256), and its digest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(deterministic_targz(members.items()))
    return {"sha256": sha256_file(dest), "size_bytes": dest.stat().st_size}


def write_package(files: Mapping[str, Path], manifest: Mapping[str, Any], dest: Path) -> dict[str, Any]:
    """``model.tar.gz``: the files and ``manifest.json`` (also written next to it), reproducibly."""
    members = {MANIFEST_NAME: json_bytes(manifest)}
    members.update({name: path.read_bytes() for name, path in files.items()})
    package = write_reproducible_tar_gz(members, dest)
    (dest.parent / MANIFEST_NAME).write_bytes(members[MANIFEST_NAME])
    return package


def base_manifest(target: str, meta: Mapping[str, Any], source_sha256: str | None) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "target": target,
        "model_type": meta.get("model_type", "linear"),
        "throttle_range": float(meta.get("throttle_range", 0.5)),
        "frame_spec": meta["input"].get("frame_spec") or FrameSpec().to_dict(),
        "source_model": {"sha256": source_sha256, "dataset_fingerprint": meta.get("dataset_fingerprint")},
    }


def finish_manifest(
    manifest: dict[str, Any], artifacts: list[dict[str, Any]], default: str
) -> dict[str, Any]:
    """Adds the artifacts and, at the top level, contract section 5's fields of the default artifact."""
    chosen = next(a for a in artifacts if a["file"] == default)
    manifest.update({"artifacts": artifacts, "default": default})
    for key in ("runtime", "file", "input", "outputs", "sha256", "size_bytes", "accuracy_delta"):
        manifest[key] = chosen[key]
    return manifest


def compiled_entry(
    target: str, package: Mapping[str, Any], artifacts: list[dict[str, Any]], default: str
) -> dict[str, Any]:
    """compiled.json's entry of one target; ``runtime`` is the default artifact's (Register reads it)."""
    return {
        "uri": f"{target}/{PACKAGE_NAME}",
        "sha256": package["sha256"],
        "size_bytes": package["size_bytes"],
        "runtime": next(a["runtime"] for a in artifacts if a["file"] == default),
        "runtimes": sorted({a["runtime"] for a in artifacts}),
        "artifacts": [a["file"] for a in artifacts],
        "default": default,
        "manifest": f"{target}/{MANIFEST_NAME}",
    }
