"""AWS's errors and response framing for the local clients: botocore's classes when botocore is
importable (so ``except botocore.exceptions.ClientError`` works either way), stand-ins with the same
attributes on the car, where it is not (standard library only).

The car's read-only clients (``edge/local_readers.py``) and the control plane's local clients
(``pipelines/local/``) fail through these, as AWS does: ``e.response["Error"]["Code"]``.
"""

from __future__ import annotations

import uuid
from typing import Any


class LocalClientError(Exception):
    """Stand-in for ``botocore.exceptions.ClientError`` where botocore is not installed (same attributes)."""

    def __init__(self, error_response: dict[str, Any], operation_name: str) -> None:
        err = error_response.get("Error", {})
        super().__init__(
            f"An error occurred ({err.get('Code')}) when calling the {operation_name} operation: "
            f"{err.get('Message')}"
        )
        self.response = error_response
        self.operation_name = operation_name


class LocalParamValidationError(ValueError):
    """Stand-in for ``botocore.exceptions.ParamValidationError``."""

    def __init__(self, report: str) -> None:
        super().__init__(f"Parameter validation failed:\n{report}")
        self.kwargs = {"report": report}


def _client_error_base() -> type[Exception]:
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return LocalClientError
    return ClientError


def param_validation_error(report: str) -> Exception:
    try:
        from botocore.exceptions import ParamValidationError
    except ImportError:
        return LocalParamValidationError(report)
    return ParamValidationError(report=report)


def _s3_path_error_class() -> type[Exception]:
    """A bucket or key local S3 cannot hold is refused with botocore's ParamValidationError (what callers
    of S3 catch; not a ValueError in botocore) that is also a ValueError (what local-mode code and the
    CLI treat as bad input), reading as its one-line report."""
    try:
        from botocore.exceptions import ParamValidationError
    except ImportError:
        bases: tuple[type, ...] = (LocalParamValidationError,)
    else:
        bases = (ParamValidationError, ValueError)
    return type("S3PathError", bases, {"__module__": __name__, "__str__": lambda self: self.kwargs["report"]})


ClientError = _client_error_base()
S3PathError = _s3_path_error_class()  # a bucket or key local S3 cannot hold: edge.workspace.local_key_problem
# Modelled exceptions are subclasses of ClientError, exactly as boto3's ``client.exceptions.X``.
NoSuchKey = type("NoSuchKey", (ClientError,), {})
NoSuchBucket = type("NoSuchBucket", (ClientError,), {})
ResourceNotFound = type("ResourceNotFound", (ClientError,), {})
_STATUS = {"ValidationException": 400, "NoSuchKey": 404, "NoSuchBucket": 404, "404": 404}


def client_error(
    code: str, message: str, operation: str, *, cls: type[Exception] | None = None, status: int | None = None
) -> Exception:
    """A ClientError shaped like botocore's (``e.response["Error"]["Code"]``)."""
    http_status = status or _STATUS.get(code, 400)
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": http_status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    return (cls or ClientError)(response, operation)


def response_metadata(status: int = 200) -> dict[str, Any]:
    return {"RequestId": uuid.uuid4().hex, "HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0}


def check_params(
    given: dict[str, Any], *, required: tuple[str, ...] = (), allowed: tuple[str, ...] = ()
) -> None:
    """Reject missing and unknown parameters the way botocore does, before anything is touched."""
    problems = [f'Missing required parameter in input: "{name}"' for name in required if name not in given]
    known = set(required) | set(allowed)
    problems += [
        f'Unknown parameter in input: "{name}", must be one of: {", ".join(sorted(known))}'
        for name in given
        if name not in known
    ]
    if problems:
        raise param_validation_error("\n".join(problems))
