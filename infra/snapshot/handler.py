"""The snapshot function: new data under a recipe's raw folder -> a dataset manifest -> one execution.

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

One function serves every recipe. The pilot's rule passes S3's event as it is: the pilot (``<prefix>/raw/``,
``PIPELINE_NAME``). The classifier's rule passes ``{"recipe": "classifier", "detail": <the event's
detail>}`` through its target's input transformer
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html): the
classifier's raw folder (``pipelines.datasets.RAW_FOLDERS``, ``<prefix>/raw-classifier/``) and
``CLASSIFIER_PIPELINE_NAME``; the detector's rule the same with ``"detection"`` (``<prefix>/raw-detection/``,
``DETECTION_PIPELINE_NAME``). The event names a recipe, never a pipeline or a folder: those come from the
function's own environment and the one table of raw folders.

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


# The environment variable holding each recipe's pipeline name (infra/template.yaml, SnapshotFunction).
PIPELINE_NAME_VARIABLES = {
    "pilot": "PIPELINE_NAME",
    "classifier": "CLASSIFIER_PIPELINE_NAME",
    "detection": "DETECTION_PIPELINE_NAME",
}


class SnapshotError(RuntimeError):
    """The function is misconfigured or the event names no recipe it knows; the message says which."""


@dataclass(frozen=True)
class SnapshotConfig:
    bucket: str
    prefix: str  # raw data under <prefix>/<raw folder>/, manifests under <prefix>/datasets/
    pipeline_name: str
    raw_folder: str = datasets.RAW_FOLDER  # the recipe's (pipelines.datasets.RAW_FOLDERS)

    @classmethod
    def from_env(cls, env: Mapping[str, str], recipe: str = "pilot") -> SnapshotConfig:
        names = {
            "bucket": "DATA_BUCKET",
            "prefix": "PREFIX",
            "pipeline_name": PIPELINE_NAME_VARIABLES[recipe],
        }
        missing = [variable for variable in names.values() if not env.get(variable)]
        if missing:
            raise SnapshotError(f"missing environment variable(s): {', '.join(missing)}")
        values = {field: env[variable] for field, variable in names.items()}
        return cls(**values, raw_folder=datasets.RAW_FOLDERS[recipe])

    @property
    def raw_uri(self) -> str:
        return datasets.folder_uri(self.bucket, self.prefix, self.raw_folder)


def event_recipe(event: Mapping[str, Any]) -> str:
    """The recipe whose new data the event reports: the input transformer's ``recipe``, else the pilot."""
    recipe = event.get("recipe", "pilot")
    if recipe not in PIPELINE_NAME_VARIABLES:
        raise SnapshotError(
            f"the event names recipe {recipe!r}; this function serves {sorted(PIPELINE_NAME_VARIABLES)}"
        )
    return recipe


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
    """Snapshot the recipe's raw prefix and start its pipeline on it; returns what was done (for the logs)."""
    key = (event.get("detail") or {}).get("object", {}).get("key", "")
    taken = datasets.snapshot(s3, config.raw_uri, datasets.datasets_uri(config.bucket, config.prefix))
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

    config = SnapshotConfig.from_env(os.environ, event_recipe(event))
    return snapshot_and_start(
        event, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"), config=config
    )
