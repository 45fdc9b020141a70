"""The container contract the steps share: where code and data sit inside a SageMaker container."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sagemaker.core.workflow.execution_variables import ExecutionVariables
from sagemaker.core.workflow.functions import Join

PROCESSING = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING}/input/code"  # the step's code bundle (pipelines.code_bundle) lands here
CODE_ENV = {"PYTHONPATH": CODE_DIR, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
TF_FRAMEWORK_VERSION = "2.19"  # newest TensorFlow with SageMaker CPU training and inference images
TF_PY_VERSION = "py312"


# The project's MXNet image (infra/images/mxnet/Dockerfile): the pins of local mode's MXNet environment on
# Python 3.11, tagged by their digest so a change of pins names a new image.
MXNET_REPOSITORY = "robocar-mxnet"
MXNET_PINS = Path(__file__).resolve().parents[1] / "pipelines" / "local" / "requirements" / "mxnet.txt"
IMAGE_TAG_DIGEST_CHARS = 12


def mxnet_image_tag() -> str:
    return "1.9.1-" + hashlib.sha256(MXNET_PINS.read_bytes()).hexdigest()[:IMAGE_TAG_DIGEST_CHARS]


def account_image_uri(role_arn: str, region: str, repository: str, tag: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>`` in the role's account."""
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    if not (account.isdigit() and len(account) == 12):
        raise ValueError(f"cannot tell the AWS account from the role ARN {role_arn!r}")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"


def script_command(relative_path: str) -> list[str]:
    """Entrypoint running a script of the code bundle through ``processing/bootstrap.py``.

    The bootstrap installs ``processing/requirements.txt`` (what the scripts need beyond the image) first.
    """
    return ["python3", f"{CODE_DIR}/processing/bootstrap.py", relative_path]


def s3_join(*parts: str) -> str:
    """Join S3 URI parts with single slashes (``s3://b/p/`` + ``x`` -> ``s3://b/p/x``)."""
    head, *rest = parts
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest)])


def execution_uri(root: str, *parts: str) -> Join:
    """``root/<pipeline execution id>/parts``: where one execution writes a step's output.

    Every execution writes under its own prefix, so a registered package's URIs and SHA-256s stay valid
    whatever later executions write (a shared key would be overwritten by the next run). On a cache hit
    SageMaker hands the later execution the earlier one's output URIs, which still hold their bytes.
    """
    return Join(on="/", values=[root.rstrip("/"), ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])
