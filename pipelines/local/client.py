"""A local SageMaker control plane with boto3's method names: pipelines, executions and the registry.

``LocalPipelineClient`` adds pipelines and executions to the on-disk Model Registry client, so the same
control-plane code (``pipelines/control.py``, ``robocar pipeline ...``) runs against AWS, a moto server or
this. ``start_pipeline_execution`` runs the execution with the local executor before it returns (there
is no service to run it in the background); ``describe``/``list`` then read its record.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_json, file_lock
from edge.aws_errors import ResourceNotFound, check_params, client_error, response_metadata
from edge.local_readers import Paginator, from_iso, list_response, page_items, to_iso
from pipelines.aws_rules import validated
from pipelines.local import store
from pipelines.local.executor import DefinitionError, LocalExecutor, pipeline_arn
from pipelines.local.registry import LocalSageMakerClient, set_given_fields
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import Execution
from pipelines.parameters import ParameterError

_PIPELINE_PARAMS = (
    "PipelineDefinition",
    "PipelineDefinitionS3Location",
    "PipelineDisplayName",
    "PipelineDescription",
    "RoleArn",
    "Tags",
    "ParallelismConfiguration",
    "ClientRequestToken",
)


def _not_found(message: str, operation: str) -> Exception:
    return client_error("ResourceNotFound", message, operation, cls=ResourceNotFound)


def _time(value: str | None) -> datetime | None:
    return from_iso(value) if value else None


class LocalPipelineClient(LocalSageMakerClient):
    """boto3's ``sagemaker`` client for local pipelines and executions (plus the registry it inherits).

    ``on_event`` receives the executor's progress events during ``start_pipeline_execution``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        region: str | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(root, region)
        self.on_event = on_event
        self.last_execution: Execution | None = None

    # -- pipelines
    def _pipeline(self, name: str, operation: str) -> dict[str, Any]:
        path = store.pipeline_file(self.root, name)
        if not path.is_file():
            raise _not_found(f"Pipeline '{pipeline_arn(self.region, name)}' does not exist.", operation)
        return json.loads(path.read_text())

    def _definition_text(self, kwargs: dict[str, Any], operation: str) -> str | None:
        if kwargs.get("PipelineDefinition") and kwargs.get("PipelineDefinitionS3Location"):
            raise client_error(
                "ValidationException",
                "Both Pipeline Definition and Pipeline Definition S3 Location shouldn't be present",
                operation,
            )
        text = kwargs.get("PipelineDefinition")
        if kwargs.get("PipelineDefinitionS3Location"):
            location = kwargs["PipelineDefinitionS3Location"]
            uri = f"s3://{location['Bucket']}/{location['ObjectKey']}"
            try:
                path = LocalS3Client(self.root, self.region).uri_to_path(uri)  # never outside a bucket
            except ValueError as exc:
                raise client_error("ValidationException", str(exc), operation) from None
            if not path.is_file():
                raise client_error(
                    "ValidationException",
                    f"no definition at s3://{location['Bucket']}/{location['ObjectKey']}",
                    operation,
                )
            text = path.read_text()
        if text is not None:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as exc:
                raise client_error(
                    "ValidationException", f"PipelineDefinition is not valid JSON: {exc}", operation
                ) from None
            if not isinstance(document, dict) or "Steps" not in document:
                raise client_error("ValidationException", "PipelineDefinition has no Steps", operation)
        return text

    def create_pipeline(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803 (boto3 names)
        operation = "CreatePipeline"
        check_params(kwargs, allowed=_PIPELINE_PARAMS)
        text = self._definition_text(kwargs, operation)
        if text is None:
            raise client_error(
                "ValidationException",
                "Either Pipeline Definition or Pipeline Definition S3 location should be provided",
                operation,
            )
        with file_lock(self.root / "pipelines" / ".lock"):
            path = store.pipeline_file(self.root, PipelineName)
            if path.is_file():
                raise client_error(
                    "ValidationException",
                    f"Pipeline names must be unique within an AWS account and region. Pipeline with name "
                    f"({PipelineName}) already exists.",
                    operation,
                )
            now = to_iso(datetime.now(UTC))
            record = {
                "PipelineArn": pipeline_arn(self.region, PipelineName),
                "PipelineName": PipelineName,
                "PipelineDisplayName": kwargs.get("PipelineDisplayName") or PipelineName,
                "PipelineDefinition": text,
                "PipelineDescription": kwargs.get("PipelineDescription"),
                "RoleArn": kwargs.get("RoleArn"),
                "PipelineStatus": "Active",
                "CreationTime": now,
                "LastModifiedTime": now,
                "LastRunTime": None,
                "CreatedBy": {},
                "LastModifiedBy": {},
                "ParallelismConfiguration": kwargs.get("ParallelismConfiguration"),
                "Tags": kwargs.get("Tags") or [],
            }
            atomic_write_json(path, record)
        return {"PipelineArn": record["PipelineArn"], "ResponseMetadata": response_metadata()}

    def update_pipeline(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        operation = "UpdatePipeline"
        check_params(
            kwargs, allowed=tuple(p for p in _PIPELINE_PARAMS if p not in ("Tags", "ClientRequestToken"))
        )
        text = self._definition_text(kwargs, operation)
        with file_lock(self.root / "pipelines" / ".lock"):
            record = self._pipeline(PipelineName, operation)
            if text is not None:
                record["PipelineDefinition"] = text
            set_given_fields(
                record,
                kwargs,
                ("PipelineDisplayName", "PipelineDescription", "RoleArn", "ParallelismConfiguration"),
            )
            record["LastModifiedTime"] = to_iso(datetime.now(UTC))
            atomic_write_json(store.pipeline_file(self.root, PipelineName), record)
        return {"PipelineArn": record["PipelineArn"], "ResponseMetadata": response_metadata()}

    def describe_pipeline(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("PipelineVersionId",))
        record = self._pipeline(PipelineName, "DescribePipeline")
        out = {k: v for k, v in record.items() if v is not None and k != "Tags"}
        for field in ("CreationTime", "LastModifiedTime", "LastRunTime"):
            if field in out:
                out[field] = from_iso(out[field])
        return {**out, "ResponseMetadata": response_metadata()}

    def list_pipelines(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListPipelines"
        check_params(
            kwargs,
            allowed=(
                "PipelineNamePrefix",
                "CreatedAfter",
                "CreatedBefore",
                "SortBy",
                "SortOrder",
                "NextToken",
                "MaxResults",
            ),
        )
        folder = self.root / "pipelines"
        records = (
            [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        )
        prefix = kwargs.get("PipelineNamePrefix")
        if prefix:
            records = [r for r in records if r["PipelineName"].startswith(prefix)]
        for record in records:
            record["CreationTime"] = from_iso(record["CreationTime"])
        if kwargs.get("CreatedAfter"):
            records = [r for r in records if r["CreationTime"] > kwargs["CreatedAfter"]]
        if kwargs.get("CreatedBefore"):
            records = [r for r in records if r["CreationTime"] < kwargs["CreatedBefore"]]
        key = "PipelineName" if kwargs.get("SortBy") == "Name" else "CreationTime"
        records.sort(key=lambda r: r[key], reverse=kwargs.get("SortOrder", "Descending") == "Descending")
        page, token = page_items(records, {"MaxResults": 50, **kwargs}, operation)
        fields = (
            "PipelineArn",
            "PipelineName",
            "PipelineDisplayName",
            "PipelineDescription",
            "RoleArn",
            "CreationTime",
            "LastModifiedTime",
            "LastRunTime",
        )
        summaries = []
        for record in page:
            summary = {f: record[f] for f in fields if record.get(f) is not None}
            for field in ("LastModifiedTime", "LastRunTime"):
                if field in summary:
                    summary[field] = from_iso(summary[field])
            if "LastRunTime" in summary:
                summary["LastExecutionTime"] = summary.pop("LastRunTime")
            summaries.append(summary)
        return list_response("PipelineSummaries", summaries, token)

    def delete_pipeline(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=("ClientRequestToken",))
        record = self._pipeline(PipelineName, "DeletePipeline")
        store.pipeline_file(self.root, PipelineName).unlink()
        return {"PipelineArn": record["PipelineArn"], "ResponseMetadata": response_metadata()}

    # -- executions
    def start_pipeline_execution(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        """Runs the execution to the end, then returns its ARN (describe it for the outcome). A
        ``ClientRequestToken`` used before answers the execution it started, which is not run again."""
        operation = "StartPipelineExecution"
        check_params(
            kwargs,
            allowed=(
                "PipelineExecutionDisplayName",
                "PipelineParameters",
                "PipelineExecutionDescription",
                "ClientRequestToken",
                "ParallelismConfiguration",
                "SelectiveExecutionConfig",
                "PipelineVersionId",
            ),
        )
        if kwargs.get("SelectiveExecutionConfig"):
            raise client_error(
                "ValidationException", "the local executor runs whole pipelines only", operation
            )
        token = kwargs.get("ClientRequestToken")
        with file_lock(self.root / "pipelines" / ".lock"):
            record = self._pipeline(PipelineName, operation)
            started = self._started_by_token(PipelineName).get(token) if token else None
            if started is not None:  # idempotent: the execution this token started, not a second one
                self.last_execution = store.find_execution(self.root, started)
                return {"PipelineExecutionArn": started, "ResponseMetadata": response_metadata()}
            executor = self._executor(record, PipelineName, kwargs, operation)
            if token:
                tokens = {**self._started_by_token(PipelineName), token: executor.execution.arn}
                atomic_write_json(self._token_file(PipelineName), tokens)
            record["LastRunTime"] = executor.execution.start_time
            atomic_write_json(store.pipeline_file(self.root, PipelineName), record)
        self.last_execution = executor.run()
        return {"PipelineExecutionArn": self.last_execution.arn, "ResponseMetadata": response_metadata()}

    def _executor(
        self, record: dict[str, Any], name: str, kwargs: dict[str, Any], operation: str
    ) -> LocalExecutor:
        parallelism = (
            kwargs.get("ParallelismConfiguration") or record.get("ParallelismConfiguration") or {}
        ).get("MaxParallelExecutionSteps")
        try:
            return LocalExecutor(
                json.loads(record["PipelineDefinition"]),
                self.root,
                pipeline_name=name,
                parameters=kwargs.get("PipelineParameters") or [],
                region=self.region,
                on_event=self.on_event,
                max_parallel=parallelism,
                display_name=kwargs.get("PipelineExecutionDisplayName"),
                description=kwargs.get("PipelineExecutionDescription"),
            )
        except (DefinitionError, ParameterError) as exc:
            raise client_error("ValidationException", str(exc), operation) from None

    def _token_file(self, name: str) -> Path:
        """Which execution each ClientRequestToken started: "An idempotent operation completes no more
        than once" (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StartPipelineExecution.html)."""
        return self.root / "pipelines" / "tokens" / f"{name}.json"

    def _started_by_token(self, name: str) -> dict[str, str]:
        path = self._token_file(name)
        return json.loads(path.read_text()) if path.is_file() else {}

    def _execution(self, arn: str, operation: str) -> Execution:
        execution = store.find_execution(self.root, arn or "")
        if execution is None:
            raise _not_found(f"Pipeline execution '{arn}' does not exist.", operation)
        return execution

    def describe_pipeline_execution(self, *, PipelineExecutionArn: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs)
        execution = self._execution(PipelineExecutionArn, "DescribePipelineExecution")
        response = {
            "PipelineArn": execution.pipeline_arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineExecutionStatus": execution.status,
            "PipelineExecutionDescription": execution.description,
            "PipelineExperimentConfig": {
                "ExperimentName": execution.pipeline_name,
                "TrialName": execution.execution_id,
            },
            "FailureReason": execution.failure_reason,
            "CreationTime": from_iso(execution.start_time),
            "LastModifiedTime": from_iso(execution.last_modified_time or execution.start_time),
            "CreatedBy": {},
            "LastModifiedBy": {},
        }
        return {
            **{k: v for k, v in response.items() if v is not None},
            "ResponseMetadata": response_metadata(),
        }

    def list_pipeline_executions(self, *, PipelineName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        operation = "ListPipelineExecutions"
        check_params(
            kwargs,
            allowed=("CreatedAfter", "CreatedBefore", "SortBy", "SortOrder", "NextToken", "MaxResults"),
        )
        self._pipeline(PipelineName, operation)
        executions = store.list_executions(self.root, PipelineName)  # newest first
        if kwargs.get("CreatedAfter"):
            executions = [e for e in executions if from_iso(e.start_time) > kwargs["CreatedAfter"]]
        if kwargs.get("CreatedBefore"):
            executions = [e for e in executions if from_iso(e.start_time) < kwargs["CreatedBefore"]]
        if kwargs.get("SortOrder", "Descending") == "Ascending":
            executions.reverse()
        page, token = page_items(executions, {"MaxResults": 50, **kwargs}, operation)
        summaries = []
        for execution in page:
            summary = {
                "PipelineExecutionArn": execution.arn,
                "StartTime": from_iso(execution.start_time),
                "PipelineExecutionStatus": execution.status,
                "PipelineExecutionDescription": execution.description,
                "PipelineExecutionDisplayName": execution.display_name,
                "PipelineExecutionFailureReason": execution.failure_reason,
            }
            summaries.append({k: v for k, v in summary.items() if v is not None})
        return list_response("PipelineExecutionSummaries", summaries, token)

    def list_pipeline_execution_steps(self, *, PipelineExecutionArn: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        """Steps that started, newest first by default (as AWS); ``LocalLogPath`` is a local extra."""
        operation = "ListPipelineExecutionSteps"
        check_params(kwargs, allowed=("SortOrder", "NextToken", "MaxResults"))
        execution = self._execution(PipelineExecutionArn, operation)
        records = sorted(execution.steps.values(), key=lambda s: s.start_time or "")
        if kwargs.get("SortOrder", "Descending") == "Descending":
            records.reverse()
        page, token = page_items(records, {"MaxResults": 50, **kwargs}, operation)
        steps = []
        for record in page:
            step: dict[str, Any] = {
                "StepName": record.name,
                "StepDisplayName": record.name,
                "StartTime": _time(record.start_time),
                "EndTime": _time(record.end_time),
                "StepStatus": record.status,
                "AttemptCount": record.attempts,
                "FailureReason": record.failure_reason,
                "Metadata": record.metadata or None,
                "LocalLogPath": record.log_path,
            }
            if record.cache_hit_from:
                step["CacheHitResult"] = {"SourcePipelineExecutionArn": record.cache_hit_from}
            steps.append({k: v for k, v in step.items() if v is not None})
        return list_response("PipelineExecutionSteps", steps, token)

    def stop_pipeline_execution(self, *, PipelineExecutionArn: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        """Asks a running executor (another process on this machine) to stop, as Ctrl-C would."""
        operation = "StopPipelineExecution"
        check_params(kwargs, allowed=("ClientRequestToken",))
        execution = self._execution(PipelineExecutionArn, operation)
        if execution.status in store.TERMINAL:
            raise client_error(
                "ValidationException", f"Pipeline execution is already {execution.status}", operation
            )
        if execution.host == socket.gethostname() and execution.pid != os.getpid():
            os.kill(execution.pid, signal.SIGTERM)
        return {"PipelineExecutionArn": execution.arn, "ResponseMetadata": response_metadata()}

    def get_paginator(self, operation_name: str):  # type: ignore[override]
        if operation_name in ("list_pipeline_executions", "list_pipeline_execution_steps", "list_pipelines"):
            return Paginator(getattr(self, operation_name), "NextToken", "NextToken")
        return super().get_paginator(operation_name)


def validated_local_clients(root: str | os.PathLike[str], region: str | None = None) -> tuple[Any, Any]:
    """The local ``s3`` and ``sagemaker`` clients, refusing what AWS refuses (``pipelines/aws_rules.py``)."""
    return (
        validated(LocalS3Client(root, region), "s3"),
        validated(LocalPipelineClient(root, region), "sagemaker"),
    )
