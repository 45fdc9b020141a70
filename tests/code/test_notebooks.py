"""The notebooks are tidy (paired with their jupytext sources, no outputs) and run top to bottom against an
in-process moto server.

moto runs no pipeline step (its executions succeed at once), so the registry holds what the Register
step would have written: a champion (Approved) and a candidate (pending) with their evaluation reports
and real, tiny compiled packages. Notebook 1 upserts and starts against moto and reads the candidate's
metrics; 2 approves the candidate (it beats the champion); 3 plays the car that installs and drives it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jupytext
import nbformat
import pytest
from edge_fixtures import edge_metadata, onnx_pilot_package
from moto.server import ThreadedMotoServer
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
BUCKET = "robocar-data-123456789012"
GROUP = "robocar-pilots"
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution-us-east-1"


def cells(notebook: Any) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_each_notebook_is_its_jupytext_source_without_outputs() -> None:
    """notebooks/*.py (jupytext percent format) are the source; each .ipynb is paired with its .py and
    holds the same cells, no outputs (``jupytext --sync notebooks/*.py`` after editing a .py)."""
    sources = sorted(NOTEBOOKS.glob("*.py"))
    assert [p.stem for p in sources] == [p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
    assert len(sources) == 3
    for source in sources:
        notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent", source.name
        assert cells(notebook) == cells(jupytext.read(source)), f"{source.stem}.ipynb is not {source.name}"
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code), source.name


def test_a_notebook_edited_only_in_its_source_is_found(tmp_path: Path) -> None:
    source = tmp_path / "01_run_pipeline.py"
    source.write_text((NOTEBOOKS / "01_run_pipeline.py").read_text() + "\n# %%\nprint('added')\n")
    notebook = nbformat.read(NOTEBOOKS / "01_run_pipeline.ipynb", as_version=4)
    assert cells(jupytext.read(source))[:-1] == cells(notebook)
    assert cells(jupytext.read(source)) != cells(notebook)


def metrics(angle_mae: float) -> dict[str, Any]:
    value = {"value": angle_mae, "standard_deviation": 0.01}
    return {"angle_mae": value, "throttle_mae": value, "angle_rmse": value, "angle_r2": {"value": 0.5}}


def register(
    sagemaker: Any, s3: Any, version: int, *, angle_mae: float, champion: float | None, status: str
) -> str:
    """Upload what one execution produced and register it, as the Register step does."""
    base = f"robocar/executions/{version}"
    champion_report = (
        None if champion is None else {"model_package_arn": "v1", "regression_metrics": metrics(champion)}
    )
    baseline = {"prediction": {"angle": 0.0, "throttle": 0.3}, "regression_metrics": metrics(0.3)}
    report = {"regression_metrics": metrics(angle_mae), "baseline": baseline, "champion": champion_report}
    report.update(test_frames=200, plots=[])
    s3.put_object(Bucket=BUCKET, Key=f"{base}/evaluation/evaluation.json", Body=json.dumps(report).encode())
    package = onnx_pilot_package(f"v{version}")
    s3.put_object(Bucket=BUCKET, Key=f"{base}/edge/rasp4b/model.tar.gz", Body=package)
    digest = hashlib.sha256(package).hexdigest()
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.19-cpu",
                    "ModelDataUrl": f"s3://{BUCKET}/{base}/model/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://{BUCKET}/{base}/evaluation/evaluation.json",
                }
            }
        },
        CustomerMetadataProperties=edge_metadata(
            "rasp4b", f"s3://{BUCKET}/{base}/edge/rasp4b/model.tar.gz", digest
        ),
        ModelApprovalStatus=status,
    )["ModelPackageArn"]


def _keep_unsent_fields(original: Any) -> Any:
    """moto 5.2.5's UpdateModelPackage wipes CustomerMetadataProperties and AdditionalInferenceSpecifications
    that the request does not mention (AWS keeps them); approving would strip a package's edge artifacts."""

    def update_model_package(self: Any, **request: Any) -> str:
        arn = request["model_package_arn"]
        package = self.model_packages.get(self.model_package_name_mapping.get(arn, arn))
        kept = (
            (package.customer_metadata_properties, package.additional_inference_specifications)
            if package
            else None
        )
        updated = original(self, **request)
        if kept is not None:
            if request.get("customer_metadata_properties") is None:
                package.customer_metadata_properties = kept[0]
            if request.get("additional_inference_specifications_to_add") is None:
                package.additional_inference_specifications = kept[1]
        return updated

    return update_model_package


@pytest.fixture(scope="module")
def moto_aws() -> Iterator[tuple[str, Any, str]]:
    from moto.sagemaker.models import SageMakerModelBackend

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            SageMakerModelBackend,
            "update_model_package",
            _keep_unsent_fields(SageMakerModelBackend.update_model_package),
        )
        yield from _moto_server()


def _moto_server() -> Iterator[tuple[str, Any, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    sagemaker = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)  # what `robocar infra deploy` creates
    s3.put_object(Bucket=BUCKET, Key="robocar/raw/tub_1/manifest.json", Body=b"{}")  # uploaded tubs
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    register(sagemaker, s3, 1, angle_mae=0.10, champion=None, status="Approved")
    candidate = register(sagemaker, s3, 2, angle_mae=0.07, champion=0.09, status="PendingManualApproval")
    yield endpoint, sagemaker, candidate
    server.stop()


def run(name: str, endpoint: str | None, workdir: Path, *, local_root: Path | None = None) -> str:
    """Execute the notebook top to bottom; returns all its text output (an error fails the test)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {
        **os.environ,
        "ROBOCAR_BUCKET": BUCKET,
        "ROBOCAR_ROLE_ARN": ROLE,
        "ROBOCAR_EDGE_ROOT": str(workdir / "car"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.update({"ROBOCAR_ENDPOINT_URL": endpoint} if endpoint else {"ROBOCAR_LOCAL_ROOT": str(local_root)})
    return execute(notebook, env, workdir)


def execute(notebook: Any, env: dict[str, str], workdir: Path) -> str:
    """Each cell's text as Jupyter shows it. ipykernel sends stdout from its IO thread (every 0.2 s), so
    one print of several parts can arrive as two stream outputs: coalesce_streams joins them again (CI
    once saw "installed" and " - ..." apart)."""
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        coalesce_streams=True,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_a_print_the_kernel_sends_in_two_parts_reads_as_one_line(tmp_path: Path) -> None:
    split = "import sys\nsys.stdout.write('installed'); sys.stdout.flush(); print(' - 1 file')"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(split)])
    assert "installed - 1 file" in execute(notebook, dict(os.environ), tmp_path)


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(moto_aws: tuple[str, Any, str], tmp_path: Path) -> None:
    endpoint, sagemaker, candidate_arn = moto_aws

    first = run("01_run_pipeline.ipynb", endpoint, tmp_path)
    assert "created: arn:aws:sagemaker:us-east-1:123456789012:pipeline/robocar-pipeline" in first
    assert "Succeeded" in first
    assert f"dataset s3://{BUCKET}/robocar/datasets/" in first and "1 object(s) under" in first
    assert "angle_mae" in first and "0.07" in first  # the candidate's metrics, next to baseline and champion

    second = run("02_approve_model.ipynb", endpoint, tmp_path)
    assert "1 pending package(s)" in second
    assert "v2: Approved (angle MAE 0.0700 on 200 test frames; baseline 0.3; champion 0.09" in second
    candidate = sagemaker.describe_model_package(ModelPackageName=candidate_arn)
    assert candidate["ModelApprovalStatus"] == "Approved"
    assert candidate["ApprovalDescription"].startswith("angle MAE 0.0700 on 200 test frames")

    third = run("03_edge.ipynb", endpoint, tmp_path)
    assert f"v2 {candidate_arn}" in third
    assert "com.robocar.Pilot 1.0.2" in third
    assert "installed - " in third
    assert "a second check finds nothing newer: up-to-date" in third
    assert (tmp_path / "car" / "current").is_symlink()


@pytest.mark.slow
def test_approving_in_the_local_workspace_rolls_out_from_the_notebook(tmp_path: Path) -> None:
    """Notebook 2 with ROBOCAR_LOCAL_ROOT: the local registry, and the rollout the AWS rule would run."""
    from pipelines.local.registry import LocalSageMakerClient
    from pipelines.local.s3 import LocalS3Client

    workspace = tmp_path / "ws"
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    candidate = register(sagemaker, s3, 1, angle_mae=0.07, champion=None, status="PendingManualApproval")

    output = run("02_approve_model.ipynb", None, tmp_path, local_root=workspace)

    assert "v1: Approved" in output
    assert f"approved {candidate} -> component com.robocar.Pilot 1.0.1 deployed" in output
    assert (workspace / "greengrass" / "components" / "com.robocar.Pilot" / "1.0.1.json").is_file()
