"""Local pipelines and executions on disk: what ``describe``/``list`` read and the executor writes.

Layout under the workspace::

    pipelines/<name>.json                      # create_pipeline / update_pipeline
    executions/<pipeline>/<id>/execution.json  # the Execution record (status, parameters, steps)
    executions/<pipeline>/<id>/definition.json # the definition this execution ran
    executions/<pipeline>/<id>/logs/<step>.log # each step's stdout and stderr
    executions/<pipeline>/<id>/heartbeat       # touched by the running executor

Every file is written to a temporary name and renamed. An execution that reads as ``Executing`` but whose
executor process is gone (killed, machine rebooted) or whose heartbeat went stale is reported as
``Failed``: nothing stays "running" forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_json
from edge.local_readers import from_iso

TERMINAL = ("Succeeded", "Failed", "Stopped")
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0


@dataclass
class StepRecord:
    """One step of one execution, as ``list_pipeline_execution_steps`` reports it (plus local detail)."""

    name: str
    type: str
    status: str = "Starting"  # Starting | Executing | Succeeded | Failed | Stopped
    start_time: str | None = None
    end_time: str | None = None
    attempts: int = 0
    log_path: str | None = None
    failure_reason: str | None = None
    cache_hit_from: str | None = None  # the execution ARN whose result was reused
    script_seconds: float = 0.0  # the step's own process time (wall), for the overhead benchmark
    outcome: str | None = None  # Condition steps: "True" / "False"
    properties: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # the AWS Metadata block (job ARNs, ...)

    @property
    def seconds(self) -> float | None:
        if not self.start_time or not self.end_time:
            return None
        return (from_iso(self.end_time) - from_iso(self.start_time)).total_seconds()


@dataclass
class Execution:
    """One pipeline execution; ``directory`` holds its record, definition, logs and report."""

    arn: str
    execution_id: str
    pipeline_name: str
    pipeline_arn: str
    directory: str
    status: str = "Executing"
    parameters: dict[str, Any] = field(default_factory=dict)
    start_time: str = ""
    end_time: str | None = None
    last_modified_time: str = ""
    failure_reason: str | None = None
    display_name: str | None = None
    description: str | None = None
    pid: int = 0
    host: str = ""
    steps: dict[str, StepRecord] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Execution:
        known = {f.name for f in fields(cls)}
        execution = cls(**{k: v for k, v in data.items() if k in known and k != "steps"})
        step_fields = {f.name for f in fields(StepRecord)}
        execution.steps = {
            name: StepRecord(**{k: v for k, v in step.items() if k in step_fields})
            for name, step in data.get("steps", {}).items()
        }
        return execution


def pipeline_file(workspace: Path, name: str) -> Path:
    return workspace / "pipelines" / f"{name}.json"


def executions_dir(workspace: Path, pipeline_name: str) -> Path:
    return workspace / "executions" / pipeline_name


def save(execution: Execution) -> None:
    atomic_write_json(execution.path / "execution.json", execution.to_dict())


def touch_heartbeat(execution: Execution) -> None:
    heartbeat = execution.path / "heartbeat"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def abandoned_reason(execution: Execution, now: float | None = None) -> str | None:
    """Why an ``Executing`` record is not really running any more, or None if it may well be."""
    if execution.status in TERMINAL:
        return None
    if execution.host == socket.gethostname() and not process_alive(execution.pid):
        return f"the executor process (pid {execution.pid}) is gone: it was killed or crashed"
    heartbeat = execution.path / "heartbeat"
    with contextlib.suppress(FileNotFoundError):
        age = (now or time.time()) - heartbeat.stat().st_mtime
        if age > STALE_AFTER_S:
            return f"no heartbeat from the executor for {age:.0f} s"
    return None


def load(directory: Path) -> Execution:
    """Read an execution record; an abandoned ``Executing`` one reads as ``Failed`` (and its steps too)."""
    execution = Execution.from_dict(json.loads((directory / "execution.json").read_text()))
    reason = abandoned_reason(execution)
    if reason:
        execution.status = "Failed"
        execution.failure_reason = reason
        for step in execution.steps.values():
            if step.status not in TERMINAL:
                step.status = "Failed"
                step.failure_reason = reason
    return execution


def settle_abandoned(workspace: Path) -> list[Execution]:
    """Record as ``Failed`` on disk every execution an executor left ``Executing`` and no longer runs
    (``abandoned_reason``), so its record stops depending on who reads it and when; returns them."""
    settled = []
    for record in sorted(workspace.glob("executions/*/*/execution.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            on_disk = json.loads(record.read_text())
            if on_disk.get("status") in TERMINAL:
                continue
            execution = load(record.parent)
            if execution.status == "Failed":
                atomic_write_json(record, execution.to_dict())  # where it was read: the folder may have moved
                settled.append(execution)
    return settled


def list_executions(workspace: Path, pipeline_name: str) -> list[Execution]:
    """Every execution of the pipeline, newest first."""
    folder = executions_dir(workspace, pipeline_name)
    if not folder.is_dir():
        return []
    found = [load(p) for p in folder.iterdir() if (p / "execution.json").is_file()]
    return sorted(found, key=lambda e: e.start_time, reverse=True)


def find_execution(workspace: Path, arn: str) -> Execution | None:
    """The execution with this ARN (``.../pipeline/<name>/execution/<id>``), or None."""
    parts = arn.split("/")
    if len(parts) < 4 or parts[-2] != "execution":
        return None
    folder = workspace / "executions"
    if not folder.is_dir():
        return None
    for pipeline_dir in folder.iterdir():  # the ARN lower-cases the pipeline name; folders keep its case
        candidate = pipeline_dir / parts[-1]
        if pipeline_dir.name.lower() == parts[-3].lower() and (candidate / "execution.json").is_file():
            return load(candidate)
    return None
