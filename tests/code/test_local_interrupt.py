"""Robustness: an interrupted or killed executor leaves a consistent state, never "Executing" forever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sample_pipeline as sample

from pipelines.local.client import LocalPipelineClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import list_executions

RUNNER = """
import sys
sys.path.insert(0, sys.argv[3])  # tests/code: the sample pipeline is a test fixture
from pipelines.local import run_local
import sample_pipeline as sample
seconds = {"PreprocessSeconds": float(sys.argv[2])}
execution = run_local(sample.definition(), sys.argv[1], seconds, pipeline_name="sample")
print(execution.status)
"""
REPO = Path(__file__).resolve().parents[2]


def start_executor(workspace: Path, step_seconds: float) -> subprocess.Popen:
    sample.upload_sample(LocalS3Client(workspace))
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(workspace), str(step_seconds), str(Path(__file__).parent)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C reaches a foreground program; a harness running us in the background may ignore SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_running_step(workspace: Path, timeout_s: float = 30.0) -> Path:
    """The execution folder, once its first step's process has started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in workspace.glob("executions/sample/*/execution.json"):
            with open(record) as handle:
                steps = json.load(handle).get("steps", {})
            log = record.parent / "logs" / "Preprocess.log"
            if (
                steps.get("Preprocess", {}).get("attempts")
                and log.is_file()
                and "preprocess: input" in log.read_text()
            ):
                return record.parent
        time.sleep(0.05)
    raise AssertionError("the executor never started its first step")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_marks_the_execution_stopped_and_uploads_nothing(
    tmp_path: Path, sig: signal.Signals
) -> None:
    executor = start_executor(tmp_path, step_seconds=30)
    try:
        wait_for_running_step(tmp_path)
        executor.send_signal(sig)
        output, _ = executor.communicate(timeout=20)
    finally:
        executor.kill()
    assert output.strip().splitlines()[-1] == "Stopped", output
    (execution,) = list_executions(tmp_path, "sample")
    assert execution.status == "Stopped"
    assert execution.steps["Preprocess"].status == "Stopped"
    assert list(execution.steps) == ["Preprocess"]
    assert not (tmp_path / "s3" / sample.BUCKET / "sample" / "preprocess").exists()
    assert (execution.path / "report.html").is_file()


def test_a_killed_executor_reads_as_failed(tmp_path: Path) -> None:
    executor = start_executor(tmp_path, step_seconds=1.5)
    execution_dir = wait_for_running_step(tmp_path)
    os.kill(executor.pid, signal.SIGKILL)
    executor.wait(timeout=10)
    (execution,) = list_executions(tmp_path, "sample")
    assert execution.status == "Failed"
    assert "is gone" in execution.failure_reason
    assert execution.steps["Preprocess"].status == "Failed"
    client = LocalPipelineClient(tmp_path)
    described = client.describe_pipeline_execution(PipelineExecutionArn=execution.arn)
    assert described["PipelineExecutionStatus"] == "Failed"
    time.sleep(2.0)  # the step died with its executor (supervise.py); its outputs never reach local S3
    assert not (tmp_path / "s3" / sample.BUCKET / "sample" / "preprocess").exists()
    assert (
        json.loads((execution_dir / "execution.json").read_text())["status"] == "Executing"
    )  # as left on disk


def test_stop_pipeline_execution_stops_a_run_in_another_process(tmp_path: Path) -> None:
    executor = start_executor(tmp_path, step_seconds=30)
    try:
        execution_dir = wait_for_running_step(tmp_path)
        client = LocalPipelineClient(tmp_path)
        arn = json.loads((execution_dir / "execution.json").read_text())["arn"]
        client.stop_pipeline_execution(PipelineExecutionArn=arn)
        output, _ = executor.communicate(timeout=20)
    finally:
        executor.kill()
    assert output.strip().splitlines()[-1] == "Stopped", output
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Stopped"
    assert described["FailureReason"] == "interrupted (SIGTERM)"
