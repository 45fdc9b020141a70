"""The snapshot function: new data under ``<prefix>/raw/`` -> a dataset manifest -> one pipeline execution.

EventBridge's "new data" rule (``pipelines.events.new_data_pattern``: a tub's ``manifest.json`` or a tub
archive created under the raw prefix) invokes ``handler``. A rule can pass only whole event fields to a
pipeline, never a computed manifest, so this function sits between the rule and the pipeline: it
snapshots the raw prefix (``pipelines.datasets.snapshot``: every object, named by the SHA-256 of the
(key, ETag) list, written to ``<prefix>/datasets/<sha256>.manifest``) and starts the pipeline with
``InputDataUrl`` = that manifest. SageMaker's cache keys on S3 paths, so an execution on new data runs
Preprocess and Train, and one on unchanged data takes them from the cache.

Delivery is at least once, and two tubs landing together send two events for one dataset. The start
carries ``ClientRequestToken`` = the manifest's digest, and "an idempotent operation completes no more
than once" (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StartPipelineExecution.html):
a redelivered event, or a second event for the same data, starts no second execution. The request is a
function of the dataset alone (no event field in it), so a repeat is the identical request.

Runs in Lambda (``handler.handler``, Python 3.12, boto3 from the runtime) and locally, where
``robocar trigger watch`` passes local clients to ``snapshot_and_start``. Zip layout
(``pipelines.infra.snapshot_zip``): this file at the root, ``pipelines/datasets.py`` and what it imports.
Standard library only at import.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines import datasets

log = logging.getLogger("robocar.snapshot")
log.setLevel(logging.INFO)
DESCRIPTION_MAX = 3072  # PipelineExecutionDescription: 0 to 3,072 characters (botocore's sagemaker model)


class SnapshotError(RuntimeError):
    """The function is misconfigured; the message says what is missing."""


@dataclass(frozen=True)
class SnapshotConfig:
    bucket: str
    prefix: str  # the pipeline's prefix: tubs under <prefix>/raw/, manifests under <prefix>/datasets/
    pipeline_name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SnapshotConfig:
        names = {"bucket": "DATA_BUCKET", "prefix": "PREFIX", "pipeline_name": "PIPELINE_NAME"}
        missing = [variable for variable in names.values() if not env.get(variable)]
        if missing:
            raise SnapshotError(f"missing environment variable(s): {', '.join(missing)}")
        return cls(**{field: env[variable] for field, variable in names.items()})


def start_request(config: SnapshotConfig, snapshot: datasets.Snapshot) -> dict[str, Any]:
    """StartPipelineExecution for one dataset: the same dataset, the same request, the same token."""
    description = f"dataset {snapshot.digest}: {snapshot.objects} object(s) under {snapshot.prefix_uri}"
    return {
        "PipelineName": config.pipeline_name,
        "PipelineParameters": [{"Name": datasets.INPUT_PARAMETER, "Value": snapshot.manifest_uri}],
        "PipelineExecutionDescription": description[:DESCRIPTION_MAX],
        "ClientRequestToken": datasets.client_request_token(snapshot.digest),
    }


def snapshot_and_start(
    event: Mapping[str, Any], *, s3: Any, sagemaker: Any, config: SnapshotConfig
) -> dict[str, Any]:
    """Snapshot the raw prefix and start the pipeline on it; returns what was done (for the logs)."""
    key = (event.get("detail") or {}).get("object", {}).get("key", "")
    raw = datasets.raw_uri(config.bucket, config.prefix)
    taken = datasets.snapshot(s3, raw, datasets.datasets_uri(config.bucket, config.prefix))
    response = sagemaker.start_pipeline_execution(**start_request(config, taken))
    result = {
        "status": "started",
        "trigger": f"s3://{config.bucket}/{key}",
        "datasetUri": taken.manifest_uri,
        "datasetWritten": taken.written,
        "objects": taken.objects,
        "pipelineExecutionArn": response["PipelineExecutionArn"],
    }
    log.info(json.dumps(result))
    return result


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point. An error propagates: Lambda retries an asynchronous invocation (EventBridge's)
    twice (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html), each with the same token."""
    import boto3  # the Lambda runtime's; not needed to import this module

    config = SnapshotConfig.from_env(os.environ)
    return snapshot_and_start(
        event, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"), config=config
    )
