"""``robocar run --local`` and ``robocar registry ...`` as a user runs them, plus the execution report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import sample_pipeline as sample

from pipelines.cli import main
from pipelines.local import run_local
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.report import graph_edges, write_report
from pipelines.local.s3 import LocalS3Client

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def definition_file(tmp_path: Path) -> Path:
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(sample.definition()))
    return path


def run_cli(workspace: Path, definition_file: Path, *extra: str) -> int:
    return main(
        ["run", "--local", "--workspace", str(workspace), "--definition", str(definition_file)]
        + ["--bucket", sample.BUCKET, "--prefix", "sample", "--pipeline-name", "sample", *extra]
    )


def test_run_local_prints_progress_and_registers(tmp_path: Path, definition_file: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace))
    assert run_cli(workspace, definition_file, "--param", "Epochs=1") == 0
    out = capsys.readouterr().out
    for step in ("Preprocess", "Train", "Evaluate", "CompileForEdge", "Register"):
        assert f"{step:<18} Succeeded" in out
    assert "CheckQuality       Succeeded  0.0 s -> True" in out
    assert "ShouldRegister     Succeeded  0.0 s -> True" in out
    assert "registered: arn:aws:sagemaker:us-east-1:123456789012:model-package/sample-pilots/1" in out
    assert "report: " in out
    assert f"object(s) under {sample.RAW_URI} (new)" in out  # the run snapshots the raw prefix

    assert run_cli(workspace, definition_file, "--param", "Epochs=1") == 0  # the second run reuses the cache
    again = capsys.readouterr().out
    assert out.count("(cached)") == 0 and again.count("(cached)") == 2  # Preprocess and Train
    assert "(unchanged since an earlier snapshot)" in again
    assert "ShouldRegister     Succeeded  0.0 s -> False" in again and "registered:" not in again

    assert main(["registry", "list", "--workspace", str(workspace), "--group", sample.GROUP]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listed] == [["1", "PendingManualApproval"]]
    assert (
        main(
            [
                "registry",
                "approve",
                "latest",
                "--local",
                "--workspace",
                str(workspace),
                "--group",
                sample.GROUP,
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(
        "Approved: arn:aws:sagemaker:us-east-1:123456789012:model-package/"
    )
    assert (
        main(
            [
                "registry",
                "list",
                "--workspace",
                str(workspace),
                "--group",
                sample.GROUP,
                "--status",
                "Approved",
            ]
        )
        == 0
    )
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["1"]
    arn = LocalSageMakerClient(workspace).list_model_packages(ModelPackageGroupName=sample.GROUP)[
        "ModelPackageSummaryList"
    ][0]["ModelPackageArn"]
    assert main(["registry", "reject", arn, "--workspace", str(workspace), "--description", "wobbles"]) == 0
    capsys.readouterr()
    assert main(["registry", "describe", arn, "--workspace", str(workspace), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["ModelApprovalStatus"] == "Rejected" and described["ApprovalDescription"] == "wobbles"


def test_a_failing_run_shows_the_log_tail_and_exits_1(tmp_path: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace))
    failing = tmp_path / "failing.json"
    failing.write_text(json.dumps(sample.definition(preprocess_extra=["--fail", "exit"])))
    assert run_cli(workspace, failing) == 1
    out = capsys.readouterr().out
    assert "reason: the process exited with status 3" in out
    assert "| simulated failure: bad input data" in out


def test_user_errors_are_one_line_with_exit_2(tmp_path: Path, definition_file: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace))
    assert run_cli(workspace, definition_file, "--param", "Epoch=3") == 2
    assert "unknown parameter 'Epoch'" in capsys.readouterr().err
    assert run_cli(tmp_path / "empty", definition_file) == 2  # no input data in a fresh workspace
    assert "no input data at s3://sample-bucket/sample/raw/" in capsys.readouterr().err
    assert main(["run", "--aws", "--definition", str(definition_file)]) == 2  # run has no AWS backend
    assert "`robocar run` runs locally and the settings choose AWS: add --local" in capsys.readouterr().err
    unknown = json.loads(definition_file.read_text())
    unknown["Steps"].append({"Name": "Notify", "Type": "Callback", "Arguments": {}})
    definition_file.write_text(json.dumps(unknown))
    assert run_cli(workspace, definition_file) == 2
    assert "'Callback', which the local executor cannot run" in capsys.readouterr().err
    assert main(["registry", "describe", "latest", "--workspace", str(workspace), "--group", "nobody"]) == 2
    assert "no model package in group nobody" in capsys.readouterr().err


def test_run_local_puts_data_in_place(tmp_path: Path, definition_file: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    sample.upload_sample(LocalS3Client(workspace), records=0)
    tubs = tmp_path / "tubs" / "tub_1"
    tubs.mkdir(parents=True)
    (tubs / "catalog_0.catalog").write_text("{}\n")
    assert run_cli(workspace, definition_file, "--data", str(tmp_path / "tubs")) == 0
    (execution,) = (workspace / "executions" / "sample").iterdir()
    frames = (
        workspace / "s3" / sample.BUCKET / "sample" / "preprocess" / execution.name / "train" / "frames.json"
    )
    assert json.loads(frames.read_text())["records"] == ["tub_1/catalog_0.catalog"]


def test_report_shows_the_graph_metrics_and_plots(tmp_path: Path) -> None:
    sample.upload_sample(LocalS3Client(tmp_path))
    s3 = LocalS3Client(tmp_path)
    execution = run_local(sample.definition(), tmp_path, pipeline_name="sample")
    # What the real steps write next to their outputs: a plot and the data accounting.
    scoped = f"sample/{{}}/{execution.execution_id}"
    s3.put_object(Bucket=sample.BUCKET, Key=f"{scoped.format('evaluation')}/angle.png", Body=PNG)
    accounting = {
        "tubs": [{"tub": "tub_v2", "format": "v2", "read": 50, "accepted": 48, "rejected": 0, "deleted": 2}]
    }
    s3.put_object(
        Bucket=sample.BUCKET,
        Key=f"{scoped.format('preprocess')}/train/data_report.json",
        Body=json.dumps(accounting),
    )
    html = write_report(execution).read_text()
    for step in (
        "Preprocess",
        "Train",
        "Evaluate",
        "CheckQuality",
        "ShouldRegister",
        "CompileForEdge",
        "Register",
        "QualityTooLow",
    ):
        assert f">{step}</text>" in html
    assert "NotRun" in html  # the Fail step of the branch not taken
    assert "<td>angle_mae</td><td>0.1000</td><td>0.4000</td><td></td>" in html
    assert "data:image/png;base64," in html
    assert "<tr><td>tub_v2</td><td>v2</td><td>50</td><td>48</td><td>0</td><td>2</td></tr>" in html
    names, edges = graph_edges(sample.definition())
    assert ("ShouldRegister", "Register") in edges and ("CompileForEdge", "Register") in edges
    assert ("CheckQuality", "QualityTooLow") in edges
    assert ("Train", "Evaluate") in edges and len(names) == 8
