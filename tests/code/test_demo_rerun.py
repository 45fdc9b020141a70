"""`make demo` twice on the same tubs: the second execution compiles and registers nothing, and the summary
reads the artifacts of the package that already holds its (cached) model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pipelines import demo
from pipelines.local.registry import LocalSageMakerClient

BUCKET = "robocar-data-123456789012"


def model(execution_id: str) -> str:
    return f"s3://{BUCKET}/robocar/models/{execution_id}/pipelines-{execution_id}-Train-k7m2p9/output/model.tar.gz"


def register(sagemaker: LocalSageMakerClient, execution_id: str) -> str:
    compiled = f"s3://{BUCKET}/robocar/edge/{execution_id}/compiled"
    return sagemaker.create_model_package(
        ModelPackageGroupName=demo.GROUP,
        InferenceSpecification={
            "Containers": [
                {"Image": "1.dkr.ecr.us-east-1.amazonaws.com/i:1", "ModelDataUrl": model(execution_id)}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            f"edge:{demo.EDGE_TARGET}:uri": f"{compiled}/{demo.EDGE_TARGET}/model.tar.gz"
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]


def test_a_rerun_reads_the_compiled_artifacts_of_the_package_holding_its_model(tmp_path: Path) -> None:
    sagemaker = LocalSageMakerClient(tmp_path)
    sagemaker.create_model_package_group(ModelPackageGroupName=demo.GROUP)
    first = register(sagemaker, "aaaaaaaaaaaa")
    register(sagemaker, "bbbbbbbbbbbb")  # newer, another model (other parameters in between)
    train = SimpleNamespace(properties={"ModelArtifacts": {"S3ModelArtifacts": model("aaaaaaaaaaaa")}})
    rerun = SimpleNamespace(steps={"Train": train})  # Train from the cache; no CompileForEdge, no Register

    package = demo.this_models_package(sagemaker, rerun)
    assert package is not None and package["ModelPackageArn"] == first
    assert (
        demo.compiled_report_uri(rerun, package)
        == f"s3://{BUCKET}/robocar/edge/aaaaaaaaaaaa/compiled/compiled.json"
    )
