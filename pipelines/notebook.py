"""What the notebooks (``notebooks/*.py``) share: their settings and clients, and the evaluation report.

A notebook has no flags: its settings come from the environment, else ``robocar.toml``, else the
defaults, and where it acts by the same rule as both CLIs (edge/settings.py): the local workspace by
default (``ROBOCAR_LOCAL_ROOT`` to choose it), AWS with ``ROBOCAR_BACKEND=aws``, a moto server with
``ROBOCAR_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
from argparse import Namespace
from typing import Any

from edge.artifacts import parse_s3_uri
from edge.aws import AwsClients, clients
from pipelines import settings as settings_mod


def connect() -> tuple[settings_mod.Settings, AwsClients]:
    """The settings (no flags: environment > robocar.toml > default) and the clients where they point."""
    settings, where = settings_mod.resolve_with_backend(Namespace())
    aws = clients(local_root=where.local_root, region=settings.region, endpoint_url=where.endpoint_url)
    place = f"local workspace {aws.local_root}" if aws.is_local else (settings.endpoint_url or "AWS")
    print(f"{settings.pipeline_name} in {settings.region} ({place})")
    print(f"data s3://{settings.bucket}/{settings.prefix}/, registry group {settings.model_package_group}")
    return settings, aws


def evaluation_report(s3: Any, package: dict[str, Any]) -> dict[str, Any]:
    """The evaluation.json the Register step recorded in the package (ModelMetrics.ModelQuality)."""
    bucket, key = parse_s3_uri(package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def metric_values(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    """{"angle_mae": {"value": ...}, ...} -> {"angle_mae": value, ...} (None stays None)."""
    return {name: (value or {}).get("value") for name, value in (metrics or {}).items()}


def compared(report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The model's metrics, the constant-prediction baseline's and the champion's (same test frames)."""
    columns = {
        "model": metric_values(report["regression_metrics"]),
        "baseline": metric_values((report.get("baseline") or {}).get("regression_metrics")),
    }
    if report.get("champion"):  # its metrics are None when it could not be evaluated on these frames
        columns["champion"] = metric_values(report["champion"].get("regression_metrics"))
    return columns
