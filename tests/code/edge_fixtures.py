"""Helpers for the edge tests: tar archives built by hand, and model packages in a (moto) registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

SAMPLE_TUBS = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs"  # real donkeycar 5.3.0 tubs
GROUP = "robocar-pilot"
TARGET = "rasp4b"
BUCKET = "robocar-artifacts"


def tar_bytes(members: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A .tar.gz with regular files ``members`` plus hand-made TarInfo entries (links, devices, ...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edge_metadata(target: str, uri: str, digest: str, runtime: str = "litert") -> dict[str, str]:
    """The CustomerMetadataProperties steps/register.py writes for one target's artifact."""
    return {f"edge:{target}:uri": uri, f"edge:{target}:sha256": digest, f"edge:{target}:runtime": runtime}


def register(
    sagemaker: Any,
    s3: Any,
    archive: bytes,
    *,
    key: str,
    approved: bool = True,
    target: str = TARGET,
    registry_sha256: str | None = None,
) -> str:
    """Upload ``archive`` and register a package carrying it for ``target``; returns the package ARN."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=archive)
    uri = f"s3://{BUCKET}/{key}"
    digest = registry_sha256 or sha256(archive)
    response = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/robocar-inference:1",
                    "ModelDataUrl": f"s3://{BUCKET}/model/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata(target, uri, digest),
        ModelApprovalStatus="Approved" if approved else "PendingManualApproval",
    )
    return response["ModelPackageArn"]


def registry(sagemaker: Any, s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)


def fake_model(tag: str) -> bytes:
    """A model archive for tests that replace the smoke test: what matters is the bytes and the tag.

    Its manifest lists ``model.bin`` with its SHA-256, as compile does, so the agent's file check passes.
    """
    model = tag.encode() * 16
    artifact = {"file": "model.bin", "runtime": "litert", "sha256": sha256(model), "size_bytes": len(model)}
    manifest = {"tag": tag, "artifacts": [artifact]}
    return tar_bytes({"manifest.json": json.dumps(manifest).encode(), "model.bin": model})


def onnx_pilot_package(tag: str, *, angle_bias: float = 0.0, throttle: float = 0.3) -> bytes:
    """A real compiled package (manifest.json + pilot.onnx) in edge.runtimes' format, tiny and fast.

    The "network" steers by the frame's mean brightness (angle = mean - 0.5 + angle_bias) at a constant
    throttle; ``angle_bias=float("nan")`` makes a model that loads but answers NaN. Its FrameSpec crops
    and resizes (40x80 input) so the test also proves the car prepares frames as the package says.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    spec = {"camera_height": 120, "camera_width": 160, "crop_top": 40, "crop_bottom": 0}
    spec.update(height=40, width=80)
    constants = {
        "flat_shape": np.array([0, -1], dtype=np.int64),
        "centre": np.array([[angle_bias - 0.5]], dtype=np.float32),
        "zero": np.array([[0.0]], dtype=np.float32),
        "cruise": np.array([[throttle]], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["img", "flat_shape"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Add", ["mean", "centre"], ["angle"]),
        helper.make_node("Mul", ["mean", "zero"], ["still"]),
        helper.make_node("Add", ["still", "cruise"], ["throttle"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_pilot",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 40, 80, 3])],
        [
            helper.make_tensor_value_info("angle", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("throttle", TensorProto.FLOAT, [None, 1]),
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx_bytes = model.SerializeToString()
    manifest = {
        "tag": tag,
        "target": TARGET,
        "model_type": "linear",
        "throttle_range": 0.5,
        "frame_spec": spec,
        "default": "pilot.onnx",
        "artifacts": [
            {
                "file": "pilot.onnx",
                "runtime": "onnxruntime",
                "precision": "float32",
                "input": {"name": "img", "shape": [40, 80, 3], "dtype": "float32", "normalization": "x/255"},
                "outputs": [{"name": "angle", "tensor": "angle"}, {"name": "throttle", "tensor": "throttle"}],
                "sha256": sha256(onnx_bytes),
                "size_bytes": len(onnx_bytes),
            }
        ],
    }
    return tar_bytes({"manifest.json": json.dumps(manifest).encode(), "pilot.onnx": onnx_bytes})
