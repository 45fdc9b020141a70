"""Requests checked against botocore's service model, so local mode refuses what AWS refuses.

botocore's client checks only part of a request before sending it (``botocore.validate.ParamValidator``:
required and unknown members, types, minimum lengths and values; for S3 also the bucket name); AWS checks
the rest on the server: maximum lengths, maximum values, enums and ``pattern`` traits. The local clients
are not AWS, so both halves run here, from the model botocore loads (never a copy kept by hand):

- ``validate_request(service, operation, params)`` raises what AWS would: botocore's own
  ``ParamValidationError`` (its report text) for the client-side half, else a ``ClientError``
  ``ValidationException`` (HTTP 400) with AWS's message, e.g. ``1 validation error detected: Value 'a,b'
  at 'customerMetadataProperties' failed to satisfy constraint: Map value must satisfy constraint:
  [Member must satisfy regular expression pattern: ...]``. S3 is not a ``ValidationException`` service:
  its server-side rules here are the bucket naming rules (``InvalidBucketName``, CreateBucket) and the
  key length (``KeyTooLongError``).
- ``request_problems(service, operation, params)`` lists every problem as a line (definition checks).
- ``validated(client, service)`` wraps a local client: each boto3-named API method validates its
  keyword arguments, then delegates; everything else (helpers, ``exceptions``, ``meta``) passes through
  and paginators validate their first request.

Error format: https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html
(ValidationException, 400); the message shape is what AWS's services answer (``Value '...' at
'member.path' failed to satisfy constraint: ...``; members named lowerCamelCase, list items 1-based as
``tags.1.member.key``; several problems ``N validation errors detected: a; b``).
Pattern semantics: AWS matches a ``pattern`` against the whole value (Java ``Pattern.matches``), so
unanchored model patterns such as ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` are applied with
``regex.fullmatch``; the ``regex`` package understands the model's ``\\p{L}``-style classes.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import ipaddress
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.session
import regex
from botocore import xform_name
from botocore.exceptions import ParamValidationError
from botocore.handlers import validate_bucket_name
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator

from edge.aws_errors import client_error

VALIDATION_EXCEPTION = "ValidationException"
S3_KEY_MAX_BYTES = 1024  # UTF-8 bytes: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
# A Java regex writes a character outside the BMP as its UTF-16 surrogate pair (\uD800\uDC00 is
# U+10000); Python's regex engines need the code point itself. Seen in SageMaker's Athena/Redshift
# names: [\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*.
_SURROGATE_PAIR = regex.compile(r"\\u(D[89AB][0-9A-Fa-f]{2})\\u(D[C-Fc-f][0-9A-Fa-f]{2})")
_NUMBER_TYPES = ("integer", "long", "float", "double")


# ---------------------------------------------------------------- the model, loaded once
@functools.lru_cache(maxsize=1)
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def service_model(service: str) -> ServiceModel:
    """botocore's model of ``service`` (``s3``, ``sagemaker``, ``greengrassv2``, ``events``...)."""
    return _session().get_service_model(service)


@functools.cache
def operation_model(service: str, operation: str) -> OperationModel:
    return service_model(service).operation_model(operation)


@functools.cache
def method_operations(service: str) -> dict[str, str]:
    """boto3's method names -> operation names (``create_model_package`` -> ``CreateModelPackage``)."""
    return {xform_name(name): name for name in service_model(service).operation_names}


def operation_for_method(service: str, method: str) -> str | None:
    return method_operations(service).get(method)


@functools.cache
def compiled_pattern(pattern: str) -> regex.Pattern[str] | None:
    """A model ``pattern`` compiled once; Java surrogate-pair escapes become code points (see above).

    None for the few Java-only constructs ``regex`` cannot compile (``\\p{all}``, ``\\x{60}``: in other
    services' models, none in the four the local clients speak, which a test compiles in full); such a
    pattern is not checked rather than failing every request.
    """

    def code_point(match: regex.Match[str]) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    try:
        return regex.compile(_SURROGATE_PAIR.sub(code_point, pattern))
    except regex.error:
        return None


def matches_pattern(pattern: str, value: str) -> bool:
    compiled = compiled_pattern(pattern)
    return compiled is None or compiled.fullmatch(value) is not None


# ---------------------------------------------------------------- AWS's server-side checks
@dataclass(frozen=True)
class Violation:
    """One failed constraint, in AWS's words."""

    path: str  # lowerCamelCase member path: customerMetadataProperties, tags.1.member.key
    value: Any
    constraint: str
    sensitive: bool = False  # AWS does not repeat a sensitive member's value

    def message(self) -> str:
        value = "" if self.sensitive else f" {java_string(self.value)}"
        return f"Value{value} at '{self.path}' failed to satisfy constraint: {self.constraint}"


def java_string(value: Any) -> str:
    """How AWS's (Java) services print a value in a validation message: quoted, ``null`` unquoted."""
    if value is None:
        return "null"
    return f"'{_java_text(value)}'"


def _java_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_java_text(k)}={_java_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_java_text(item) for item in value) + "]"
    if isinstance(value, bytes | bytearray):
        return f"java.nio.HeapByteBuffer[pos=0 lim={len(value)} cap={len(value)}]"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def validation_message(violations: list[Violation]) -> str:
    """``1 validation error detected: ...`` / ``N validation errors detected: a; b``."""
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(v.message() for v in violations)


def _member_path(parent: str, member: str) -> str:
    name = member[:1].lower() + member[1:]  # AWS: first letter lower-cased (kMSKeyArn, s3Uri)
    return f"{parent}.{name}" if parent else name


def _is_sensitive(shape: Shape) -> bool:
    return bool(shape.metadata.get("sensitive"))


def scalar_constraints(shape: Shape, value: Any) -> list[str]:
    """What a scalar value breaks among the checks botocore leaves to the server (in AWS's words).

    Lengths count characters (code points), as Smithy's length trait does for strings:
    https://smithy.io/2.0/spec/constraint-traits.html#length-trait
    """
    failed = []
    metadata = shape.metadata
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in metadata and len(value) > metadata["max"]:
            failed.append(f"Member must have length less than or equal to {metadata['max']}")
        if "pattern" in metadata and not matches_pattern(metadata["pattern"], value):
            failed.append(f"Member must satisfy regular expression pattern: {metadata['pattern']}")
        if shape.enum and value not in shape.enum:
            failed.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    elif shape.type_name == "blob" and isinstance(value, bytes | bytearray | str):
        size = len(value.encode() if isinstance(value, str) else value)
        if "max" in metadata and size > metadata["max"]:
            failed.append(f"Member must have length less than or equal to {metadata['max']}")
    elif (
        shape.type_name in _NUMBER_TYPES
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and "max" in metadata
        and value > metadata["max"]
    ):
        failed.append(f"Member must have value less than or equal to {metadata['max']}")
    return failed


def _collection_constraints(shape: Shape, value: Any) -> list[str]:
    if "max" in shape.metadata and len(value) > shape.metadata["max"]:
        return [f"Member must have length less than or equal to {shape.metadata['max']}"]
    return []


def _nested(shape: Shape) -> bool:
    return shape.type_name in ("structure", "list", "map")


def server_side_violations(shape: Shape, value: Any, path: str = "") -> Iterator[Violation]:
    """Every constraint ``value`` breaks that botocore's client does not check (see the module doc).

    Values of the wrong type are skipped: botocore's client rejects them before a request is sent.
    """
    sensitive = _is_sensitive(shape)
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        for name, member in shape.members.items():
            if value.get(name) is not None:
                yield from server_side_violations(member, value[name], _member_path(path, name))
    elif kind == "list" and isinstance(value, list | tuple):
        for constraint in _collection_constraints(shape, value):
            yield Violation(path, value, constraint, sensitive)
        member = shape.member
        if _nested(member):
            for index, item in enumerate(value, start=1):
                yield from server_side_violations(member, item, f"{path}.{index}.member")
        else:
            failed = _unique(c for item in value for c in scalar_constraints(member, item))
            if failed:
                joined = ", ".join(failed)
                yield Violation(path, value, f"Member must satisfy constraint: [{joined}]", sensitive)
    elif kind == "map" and isinstance(value, Mapping):
        for constraint in _collection_constraints(shape, value):
            yield Violation(path, value, constraint, sensitive)
        yield from _map_violations(shape, value, path, sensitive)
    else:
        for constraint in scalar_constraints(shape, value):
            yield Violation(path, value, constraint, sensitive)


def _map_violations(
    shape: Shape, value: Mapping[str, Any], path: str, sensitive: bool
) -> Iterator[Violation]:
    for key, item in value.items():
        failed_key = scalar_constraints(shape.key, key)
        if failed_key:
            constraint = f"Map keys must satisfy constraint: [{', '.join(failed_key)}]"
            yield Violation(path, key, constraint, sensitive)
        if item is None:
            continue
        if _nested(shape.value):
            # AWS documents no path for members inside a map's values; the key names the entry.
            yield from server_side_violations(shape.value, item, f"{path}.{key}")
            continue
        failed_value = scalar_constraints(shape.value, item)
        if failed_value:
            constraint = f"Map value must satisfy constraint: [{', '.join(failed_value)}]"
            yield Violation(path, item, constraint, sensitive or _is_sensitive(shape.value))


def _unique(items: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------- S3's own server-side errors
@dataclass(frozen=True)
class ServiceError:
    """An error response a service returns: code, message and HTTP status."""

    code: str
    message: str
    status: int = 400


# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (general purpose buckets)
_BUCKET_CHARACTERS = regex.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")
_S3_KEY_OPERATIONS = ("PutObject", "GetObject", "HeadObject", "DeleteObject", "CopyObject")


def s3_bucket_name_problem(bucket: str) -> str | None:
    """Which naming rule ``bucket`` breaks, or None (the S3 user guide's rules, quoted above)."""
    if not _BUCKET_CHARACTERS.fullmatch(bucket):
        return (
            "3 to 63 characters: lowercase letters, digits, '.' and '-', beginning and ending with a "
            "letter or digit"
        )
    if ".." in bucket:
        return "no two adjacent periods"
    try:
        ipaddress.IPv4Address(bucket)
        return "not formatted as an IP address"
    except ValueError:
        pass
    if bucket.startswith(_RESERVED_BUCKET_PREFIXES) or bucket.endswith(_RESERVED_BUCKET_SUFFIXES):
        return "no reserved prefix or suffix"
    return None


def s3_error(operation: str, params: Mapping[str, Any]) -> ServiceError | None:
    """What S3 itself refuses (error codes: https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""
    bucket = params.get("Bucket")
    if operation == "CreateBucket" and isinstance(bucket, str) and s3_bucket_name_problem(bucket):
        return ServiceError("InvalidBucketName", "The specified bucket is not valid.")
    key = params.get("Key")
    if operation in _S3_KEY_OPERATIONS and isinstance(key, str) and len(key.encode()) > S3_KEY_MAX_BYTES:
        if operation == "HeadObject":  # a HEAD response has no body: botocore sees only the status
            return ServiceError("400", "Bad Request")
        return ServiceError("KeyTooLongError", "Your key is too long.")
    return None


# ---------------------------------------------------------------- checking a request
def with_idempotency_tokens(service: str, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` plus the idempotency tokens botocore fills in when they are not given.

    botocore does it before validating (``botocore.handlers.generate_idempotent_uuid``), so a required
    token such as CreatePipeline's ``ClientRequestToken`` is never missing from what AWS receives.
    """
    request = dict(params)
    for name in operation_model(service, operation).idempotent_members:
        request.setdefault(name, str(uuid.uuid4()))
    return request


def client_side_report(service: str, operation: str, params: Mapping[str, Any]) -> str:
    """botocore's report for what its client refuses before sending ('' when nothing)."""
    if service == "s3" and isinstance(params.get("Bucket"), str):
        try:
            validate_bucket_name(dict(params))
        except ParamValidationError as exc:
            return exc.kwargs["report"]
    report = ParamValidator().validate(dict(params), operation_model(service, operation).input_shape)
    return report.generate_report() if report.has_errors() else ""


def request_violations(service: str, operation: str, params: Mapping[str, Any]) -> list[Violation]:
    """The constraints a ``ValidationException`` service checks on its side (not S3: see s3_error)."""
    shape = operation_model(service, operation).input_shape
    return list(server_side_violations(shape, params)) if shape is not None else []


def service_error(service: str, operation: str, params: Mapping[str, Any]) -> ServiceError | None:
    """What the service itself answers to a request botocore sends (None when it accepts it)."""
    if service == "s3":
        return s3_error(operation, params)
    violations = request_violations(service, operation, params)
    return ServiceError(VALIDATION_EXCEPTION, validation_message(violations)) if violations else None


def request_problems(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """Every problem of a request, one line each: botocore's report lines, then the service's."""
    params = with_idempotency_tokens(service, operation, params)
    report = client_side_report(service, operation, params)
    problems = report.splitlines() if report else []
    if service == "s3":
        error = s3_error(operation, params)
        return problems + ([f"{error.code}: {error.message}"] if error else [])
    return problems + [violation.message() for violation in request_violations(service, operation, params)]


def response_problems(service: str, operation: str, response: Mapping[str, Any]) -> list[str]:
    """Every way a response (a local stand-in's) breaks the operation's output shape, one line each.

    The same checks as a request's, on the output shape: a local client whose answers pass here answers
    as AWS documents. ``ResponseMetadata`` is boto3's own addition, not part of the model.
    """
    shape = operation_model(service, operation).output_shape
    body = {key: value for key, value in response.items() if key != "ResponseMetadata"}
    if shape is None:
        return [f"{operation} returns no members, got {sorted(body)}"] if body else []
    report = ParamValidator().validate(body, shape)
    problems = report.generate_report().splitlines() if report.has_errors() else []
    return problems + [violation.message() for violation in server_side_violations(shape, body)]


def validate_request(
    service: str, operation: str, params: Mapping[str, Any], *, exceptions: Any = None
) -> None:
    """Raise what botocore or AWS would for this request; return when AWS would accept it.

    ``exceptions``: a client's ``exceptions`` namespace; a modelled class for the error code (e.g.
    Greengrass's ``ValidationException``) is raised when it has one, else ``ClientError``.
    """
    params = with_idempotency_tokens(service, operation, params)
    report = client_side_report(service, operation, params)
    if report:
        raise ParamValidationError(report=report)
    error = service_error(service, operation, params)
    if error is not None:
        cls = getattr(exceptions, error.code, None) if exceptions is not None else None
        raise client_error(error.code, error.message, operation, cls=cls, status=error.status)


# ---------------------------------------------------------------- wrapping a client
# boto3's S3 transfer methods are not API operations; each starts with the request named here.
_TRANSFER_REQUESTS: dict[str, tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    "upload_file": (
        "PutObject",
        lambda a: {"Bucket": a["Bucket"], "Key": a["Key"], **(a.get("ExtraArgs") or {})},
    ),
    "download_file": ("HeadObject", lambda a: {"Bucket": a["Bucket"], "Key": a["Key"]}),
}


class ValidatedPaginator:
    """A paginator whose ``paginate`` validates its request first (later pages only add the token)."""

    def __init__(self, paginator: Any, service: str, operation: str, exceptions: Any) -> None:
        self._paginator, self._service, self._operation = paginator, service, operation
        self._exceptions = exceptions

    def paginate(self, **kwargs: Any) -> Any:
        request = {k: v for k, v in kwargs.items() if k != "PaginationConfig"}
        validate_request(self._service, self._operation, request, exceptions=self._exceptions)
        return self._paginator.paginate(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._paginator, name)


class ValidatedClient:
    """A client whose API methods check each request against botocore's model before delegating.

    Attributes that are not API methods pass through to the wrapped client, and setting one sets it
    there (``client.on_event = ...``). ``__class__`` reports the wrapped client's class, so
    ``isinstance(wrapped, LocalS3Client)`` still holds, as it does for ``unittest.mock`` objects.
    """

    __slots__ = ("_client", "_service")

    def __init__(self, client: Any, service: str) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_service", service)
        method_operations(service)  # load the model now: an unknown service fails here, not later

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._client)

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        operation = operation_for_method(self._service, name)
        if operation is not None and callable(attribute):
            return self._api_method(name, operation, attribute)
        if name in _TRANSFER_REQUESTS and self._service == "s3" and callable(attribute):
            return self._transfer_method(name, attribute)
        if name == "get_paginator" and callable(attribute):
            return self._paginator_factory(attribute)
        return attribute

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._client, name, value)

    def __repr__(self) -> str:
        return f"<validated {self._service} {self._client!r}>"

    def _exceptions(self) -> Any:
        return getattr(self._client, "exceptions", None)

    def _api_method(self, name: str, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        service = self._service

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            if args:  # boto3's own message for positional arguments
                raise TypeError(f"{name}() only accepts keyword arguments.")
            validate_request(service, operation, kwargs, exceptions=self._exceptions())
            return method(**kwargs)

        return call

    def _transfer_method(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        operation, request_of = _TRANSFER_REQUESTS[name]
        signature = inspect.signature(method)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            validate_request(self._service, operation, request_of(bound), exceptions=self._exceptions())
            return method(*args, **kwargs)

        return call

    def _paginator_factory(self, get_paginator: Callable[[str], Any]) -> Callable[[str], Any]:
        def factory(operation_name: str) -> Any:
            paginator = get_paginator(operation_name)
            operation = operation_for_method(self._service, operation_name)
            if operation is None:
                return paginator
            return ValidatedPaginator(paginator, self._service, operation, self._exceptions())

        return factory


def validated(client: Any, service: str) -> Any:
    """``client`` with every request checked as AWS checks it (a client already wrapped is returned)."""
    if type(client) is ValidatedClient:  # type(), not isinstance: __class__ names the wrapped class
        return client
    return ValidatedClient(client, service)
