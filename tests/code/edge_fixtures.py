"""Helpers for the edge tests: tar archives built by hand, and model packages in a (moto) registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

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


def edge_spec(target: str, uri: str, digest: str) -> dict[str, Any]:
    """An AdditionalInferenceSpecifications entry as steps/register.py writes it."""
    return {
        "Name": "edge-" + target.replace("_", "-"),
        "Containers": [
            {
                "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/robocar-inference:1",
                "ModelDataUrl": uri,
                "Environment": {"ROBOCAR_ARTIFACT_SHA256": digest, "ROBOCAR_EDGE_TARGET": target},
            }
        ],
        "SupportedContentTypes": ["image/jpeg"],
        "SupportedResponseMIMETypes": ["application/json"],
    }


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
        AdditionalInferenceSpecifications=[edge_spec(target, uri, digest)],
        CustomerMetadataProperties={f"edge:{target}:sha256": digest},
        ModelApprovalStatus="Approved" if approved else "PendingManualApproval",
    )
    return response["ModelPackageArn"]


def registry(sagemaker: Any, s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)


def fake_model(tag: str) -> bytes:
    """A model archive for tests that replace the smoke test: what matters is the bytes and the tag."""
    return tar_bytes({"manifest.json": json.dumps({"tag": tag}).encode(), "model.bin": tag.encode() * 16})
