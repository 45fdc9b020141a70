"""The one place that decides between real AWS (boto3, or a moto server) and the local folder clients.

Code that talks to S3 or SageMaker takes these clients as arguments; the CLI and the car call ``clients()``
once (docs/contracts.md section 6).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_ROOT_ENV = "ROBOCAR_LOCAL_ROOT"
LOCAL_CLIENTS_ENV = "ROBOCAR_LOCAL_CLIENTS"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwsClients:
    """An ``s3`` and a ``sagemaker`` client with boto3's method names; ``local_root`` is set when local."""

    s3: Any
    sagemaker: Any
    local_root: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_root is not None


def local_root_from_env() -> Path | None:
    value = os.environ.get(LOCAL_ROOT_ENV)
    return Path(value) if value else None


def _local_clients(root: Path, region: str | None) -> tuple[Any, Any]:
    """The local ``s3`` and ``sagemaker`` clients: the car's read-only readers, or the ones the control
    plane names in ``$ROBOCAR_LOCAL_CLIENTS`` (``module:function(root, region) -> (s3, sagemaker)``).

    The car imports nothing above ``edge/``: importing ``pipelines`` sets the variable to its clients
    (``pipelines/local/``), which write S3 and the registry, add pipeline executions and check every
    request against botocore's model as AWS does (``pipelines/aws_rules.py``); local steps inherit it.
    On the car (no pipelines, no botocore) it is unset, and the car only reads: the newest package and
    its artifact (``edge/local_readers.py``).

    A local step whose environment lacks the control plane inherits the variable all the same: the MXNet
    environment (no botocore) or a step's code bundle (no ``pipelines/``). There the factory's module
    cannot be found and the step gets the read-only readers, which is all a step reads (the registry's
    champion, a model's archive); any other failure of the factory is a bug and raises.
    """
    factory = os.environ.get(LOCAL_CLIENTS_ENV)
    if factory:
        module, _, function = factory.partition(":")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # the module or one it imports is not installed here
            logger.info("%s=%s not importable (%s): read-only clients", LOCAL_CLIENTS_ENV, factory, exc)
        else:
            return getattr(imported, function)(root, region)
    from edge.local_readers import LocalRegistryReader, LocalS3Reader

    return LocalS3Reader(root, region), LocalRegistryReader(root, region)


def clients(
    *,
    local_root: str | os.PathLike[str] | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> AwsClients:
    """Local clients when ``local_root`` (or ``$ROBOCAR_LOCAL_ROOT``) is set, else boto3 clients.

    ``endpoint_url`` points boto3 at another endpoint (a moto server in tests); it makes no sense locally.
    """
    root = Path(local_root) if local_root is not None else local_root_from_env()
    if root is not None:
        if endpoint_url:
            raise ValueError(
                "endpoint_url and a local root exclude each other: choose AWS (or moto) or local"
            )
        s3, sagemaker = _local_clients(root, region)
        return AwsClients(s3=s3, sagemaker=sagemaker, local_root=root)

    import boto3  # imported here: the car may run local-only without boto3

    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    return AwsClients(
        s3=session.client("s3", endpoint_url=endpoint_url),
        sagemaker=session.client("sagemaker", endpoint_url=endpoint_url),
    )
