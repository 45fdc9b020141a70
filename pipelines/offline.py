"""A sagemaker PipelineSession that builds definitions with no network and no credentials.

Each setting below was needed (docs/design.md "Building the definition offline"); without any one of them
the SDK calls STS, IAM, S3 or its telemetry endpoint while merely *building* a definition.
"""

from __future__ import annotations

import os
from typing import Any

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def prepare_environment(region: str) -> None:
    """Must run before ``sagemaker.mlops`` is imported: it creates a boto3 client at import time."""
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"


def pipeline_session(region: str, default_bucket: str) -> Any:
    """A PipelineSession whose boto session holds fake credentials: building never signs a request."""
    prepare_environment(region)
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    boto_session = boto3.Session(region_name=region, **FAKE_CREDENTIALS)
    return PipelineSession(
        boto_session=boto_session, default_bucket=default_bucket, sagemaker_config=SDK_CONFIG
    )
