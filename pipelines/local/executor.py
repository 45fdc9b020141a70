"""Run a SageMaker pipeline definition on this machine: no AWS account, no Docker.

``run_local(definition, workspace, parameters)`` reads the same definition JSON that ``upsert`` sends
and runs it: parameters bound and type-checked, the step graph from data dependencies and ``DependsOn``
(plus each Condition branch's owner), steps run as local processes (``runners.py``) in dependency order,
independent ones in parallel, with ``CacheConfig`` and ``RetryPolicies`` honoured. Everything that can
be checked is checked before the first step starts: unknown step types, dangling references, cycles,
bad parameters, images no local environment stands in for (``environments.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import string
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.atomic_files import IN_PROGRESS_PREFIX, atomic_write_json
from edge.local_readers import ACCOUNT_ID, resolve_region, to_iso
from edge.settings import DEFAULT_WORKSPACE as SHARED_WORKSPACE
from pipelines.definition_steps import walk_steps
from pipelines.local import environments, runners, store
from pipelines.local.expressions import (
    CONDITION_TYPES,
    EXECUTION_VARIABLES,
    JOB_NAME_VARIABLES,
    ExpressionError,
    Scope,
    condition_types,
    evaluate_conditions,
    referenced_steps,
    references,
    resolve,
    step_scope,
)
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import Execution, StepRecord
from pipelines.parameters import ParameterError, parameter_value

DEFAULT_WORKSPACE = Path(SHARED_WORKSPACE)  # the one definition: edge/settings.py
RUNNABLE_TYPES = ("Processing", "Training", "Condition", "Fail", "RegisterModel", "Model")
CACHEABLE_TYPES = ("Processing", "Training")
TEMP_TREE_MAX_AGE_S = 24 * 3600
# CacheConfig.ExpireAfter: an ISO 8601 duration of years, months, weeks, days, hours or minutes, each a
# number and its unit's letter; "Turn on step caching"
# (https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-caching-enabling.html) shows "30d", "5y",
# "T16m" and "30dT5h" (no P, lower case) and the SDK's CacheConfig "p30d", "P4DT12H", "T12H": so the P
# is optional and the letters are either case. Seconds, ISO 8601's last unit, are accepted too; a T must
# be followed by a time part.
_DURATION = re.compile(
    r"^P?(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$",
    re.IGNORECASE,
)
# "Retry Policy for Pipeline Steps" (https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-retry-policy.html):
# the exception types a policy may name, its fields and their limits.
RETRY_EXCEPTION_TYPES = (
    "Step.SERVICE_FAULT",
    "Step.THROTTLING",
    "SageMaker.JOB_INTERNAL_ERROR",
    "SageMaker.CAPACITY_ERROR",
    "SageMaker.RESOURCE_LIMIT",
)
RETRY_POLICY_FIELDS = ("ExceptionType", "IntervalSeconds", "BackoffRate", "MaxAttempts", "ExpireAfterMin")
RETRYABLE_TYPES = ("Processing", "Training", "RegisterModel", "Model")  # of RUNNABLE_TYPES, per that page
MAX_RETRY_INTERVAL_S = 43_200  # IntervalSeconds: at most 12 hours
MAX_RETRY_ATTEMPTS = 20  # MaxAttempts: at most 20 retries
MAX_RETRY_EXPIRE_MIN = 14_400  # ExpireAfterMin: at most 10 days
DEFAULT_RETRY_ATTEMPTS = 5  # MaxAttempts when neither it nor ExpireAfterMin is given

Event = dict[str, Any]  # {"event": "step-started"|"step-finished"|"execution-finished", ...}


class DefinitionError(ValueError):
    """The definition cannot run locally (raised before any step starts); the message says why."""


# ---------------------------------------------------------------- the plan
@dataclass
class PlannedStep:
    name: str
    type: str
    spec: dict[str, Any]
    depends_on: set[str] = field(default_factory=set)
    branch_of: tuple[str, bool] | None = None  # (condition step, True for IfSteps / False for ElseSteps)


@dataclass
class Plan:
    steps: dict[str, PlannedStep]
    order: list[str]  # a topological order (for display and deterministic scheduling)
    parameters: list[dict[str, Any]]


def _flatten(steps: list[dict[str, Any]]) -> list[PlannedStep]:
    planned = []
    for spec, branch_of in walk_steps(steps):
        if not isinstance(spec, dict) or "Name" not in spec or "Type" not in spec:
            raise DefinitionError(f"a step without Name and Type: {json.dumps(spec)[:200]}")
        planned.append(PlannedStep(spec["Name"], spec["Type"], spec, branch_of=branch_of))
    return planned


def _step_expressions(spec: dict[str, Any]) -> Any:
    """The parts of a step whose references make dependencies (not a Condition's nested steps)."""
    if spec["Type"] == "Condition":
        return spec.get("Arguments", {}).get("Conditions", [])
    return [spec.get("Arguments", {}), spec.get("PropertyFiles", [])]


def plan(definition: Mapping[str, Any]) -> Plan:
    """Check the definition and order its steps; raises DefinitionError listing every problem found."""
    if not isinstance(definition, Mapping) or "Steps" not in definition:
        raise DefinitionError("not a pipeline definition: no 'Steps'")
    flat = _flatten(list(definition["Steps"]))
    problems: list[str] = []
    steps: dict[str, PlannedStep] = {}
    for step in flat:
        if step.name in steps:
            problems.append(f"step name {step.name!r} is used twice")
        steps[step.name] = step
    declared = {p.get("Name") for p in definition.get("Parameters", [])}
    for step in flat:
        if step.type not in RUNNABLE_TYPES:
            problems.append(
                f"step {step.name!r} has type {step.type!r}, which the local executor cannot run "
                f"(it runs: {', '.join(RUNNABLE_TYPES)})"
            )
            continue
        problems += _check_step(step, declared)
        for name in referenced_steps(_step_expressions(step.spec)) | set(step.spec.get("DependsOn", [])):
            if name not in steps:
                problems.append(
                    f"step {step.name!r} refers to step {name!r}, which the definition does not have"
                )
            elif name != step.name:
                step.depends_on.add(name)
        if step.branch_of:
            step.depends_on.add(step.branch_of[0])
    if problems:
        raise DefinitionError("the definition cannot run locally:\n  - " + "\n  - ".join(problems))
    return Plan(steps, _topological_order(steps), list(definition.get("Parameters", [])))


def _check_step(step: PlannedStep, declared: set[str]) -> list[str]:
    problems = []
    arguments = step.spec.get("Arguments", {})
    for ref in references(_step_expressions(step.spec)):
        kind, _, rest = ref.partition(".")
        if kind == "Parameters" and rest not in declared:
            problems.append(
                f"step {step.name!r} uses parameter {rest!r}, which the definition does not declare"
            )
        elif kind == "Execution" and rest not in EXECUTION_VARIABLES:
            problems.append(f"step {step.name!r} uses unknown execution variable {rest!r}")
        elif kind == "Execution" and rest in _foreign_job_names(step.type):
            owner = next(t for t, v in JOB_NAME_VARIABLES.items() if v == rest)
            problems.append(
                f"step {step.name!r} ({step.type}) uses Execution.{rest}, the name of the job a "
                f"{owner} step starts: only a {owner} step's arguments have it"
            )
    if step.type == "Processing":
        for spec in arguments.get("ProcessingInputs", []):
            s3_input = spec.get("S3Input")
            if s3_input is None:
                problems.append(f"step {step.name!r}: input {spec.get('InputName')!r} is not an S3Input")
            elif (
                s3_input.get("S3DataType", "S3Prefix") not in runners.PROCESSING_DATA_TYPES
                or s3_input.get("S3CompressionType", "None") != "None"
            ):
                problems.append(
                    f"step {step.name!r}: input {spec.get('InputName')!r} must be an uncompressed "
                    + " or ".join(runners.PROCESSING_DATA_TYPES)
                )
        for spec in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
            if "S3Output" not in spec:
                problems.append(f"step {step.name!r}: output {spec.get('OutputName')!r} is not an S3Output")
    if step.type == "Training":
        for channel in arguments.get("InputDataConfig", []):
            source = channel.get("DataSource", {}).get("S3DataSource", {})
            augmented = source.get("S3DataType") == "AugmentedManifestFile"
            # Pipe mode runs locally only as an augmented manifest (pipelines/local/builtin.py turns it
            # into files, as the built-in algorithms' stand-ins read them).
            if channel.get("InputMode", "File") == "Pipe" and not augmented:
                problems.append(f"step {step.name!r}: channel {channel.get('ChannelName')!r} uses Pipe mode")
    if step.type == "Condition":
        for condition in arguments.get("Conditions", []):
            for kind in condition_types(condition):
                if kind not in CONDITION_TYPES:
                    problems.append(f"step {step.name!r}: unsupported condition type {kind!r}")
    expire = step.spec.get("CacheConfig", {}).get("ExpireAfter")
    if step.spec.get("CacheConfig", {}).get("Enabled") and expire:
        try:
            parse_duration(expire)
        except DefinitionError as exc:
            problems.append(f"step {step.name!r}: CacheConfig.ExpireAfter: {exc}")
    return problems + _retry_problems(step)


def _retry_problems(step: PlannedStep) -> list[str]:
    specs = step.spec.get("RetryPolicies")
    if specs is None:
        return []
    if step.type not in RETRYABLE_TYPES:
        return [f"step {step.name!r}: a {step.type} step takes no RetryPolicies"]
    if not isinstance(specs, list):
        return [f"step {step.name!r}: RetryPolicies must be a list"]
    problems = []
    for number, spec in enumerate(specs, 1):
        try:
            parse_retry_policy(spec)
        except DefinitionError as exc:
            problems.append(f"step {step.name!r}: retry policy {number}: {exc}")
    return problems


def _foreign_job_names(step_type: str) -> set[str]:
    """The job-name execution variables a step of this type has no value for (another type's job)."""
    return {v for t, v in JOB_NAME_VARIABLES.items() if t != step_type}


def _topological_order(steps: dict[str, PlannedStep]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise DefinitionError(f"the steps depend on each other in a cycle: {cycle}")
        state[name] = "visiting"
        for dependency in sorted(steps[name].depends_on):
            visit(dependency, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in steps:
        visit(name, [])
    return order


# ---------------------------------------------------------------- parameters
def bind_parameters(
    declared: list[dict[str, Any]], overrides: Mapping[str, Any] | list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Defaults overridden by ``overrides`` (a mapping, or boto3's ``[{"Name", "Value"}]``), type-checked."""
    if isinstance(overrides, list):
        overrides = {item["Name"]: item["Value"] for item in overrides}
    overrides = dict(overrides or {})
    by_name = {p["Name"]: p for p in declared}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)}; "
            f"the pipeline declares: {', '.join(sorted(by_name)) or 'none'}"
        )
    values = {}
    for name, spec in by_name.items():
        if name in overrides:
            values[name] = parameter_value(spec, overrides[name])
        elif "DefaultValue" in spec:
            values[name] = parameter_value(spec, spec["DefaultValue"])
        else:
            raise ParameterError(f"parameter {name} has no default value: give it with --param {name}=VALUE")
    return values


def check_s3_parameters(values: Mapping[str, Any], s3: LocalS3Client) -> None:
    """Refuse, before any step runs, a parameter that names an S3 location local S3 cannot hold
    (``InputDataUrl=s3://bucket/../../x``): its steps would otherwise fail one by one, or worse."""
    for name, value in values.items():
        if isinstance(value, str) and value.startswith("s3://"):
            try:
                s3.uri_to_path(value)
            except ValueError as exc:
                raise ParameterError(f"parameter {name}: {exc}") from None


# ---------------------------------------------------------------- cache
def parse_duration(text: str) -> timedelta:
    """CacheConfig.ExpireAfter as SageMaker's docs write it (``30d``, ``T16m``, ``30dT5h``, ``5y``, ``P30D``,
    ``PT1H``: ``_DURATION``); a year is 365 days and a month 30 (AWS does not say what it counts)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise DefinitionError(
            f"{text!r} is not a duration like 30d, T16m, 30dT5h, 5y or PT1H (ISO 8601: years, months, "
            "weeks, days, then T and hours, minutes, seconds)"
        )
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    try:
        return timedelta(
            days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes, seconds=seconds
        )
    except OverflowError:
        raise DefinitionError(f"{text!r} is longer than any date can reach") from None


def _output_uris(step_type: str, properties: dict[str, Any]) -> list[str]:
    if step_type == "Processing":
        return [
            o["S3Output"]["S3Uri"] for o in properties.get("ProcessingOutputConfig", {}).get("Outputs", [])
        ]
    return [properties["ModelArtifacts"]["S3ModelArtifacts"]]


# What SageMaker keys a cached step on, per step type ("Default cache key attributes by pipeline step
# type", https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html): never the outputs,
# so execution-scoped output URIs (steps.containers.execution_uri) still hit the cache, and never what
# lies under an S3 path, so new objects under an unchanged prefix hit it too.
CACHE_KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
}


def cache_key(step: PlannedStep, arguments: dict[str, Any]) -> str:
    """AWS's key: the step type's key attributes of the resolved arguments, and nothing else.

    S3 paths, not contents, as on AWS: the data is a manifest named by its content (pipelines/datasets.py),
    the code lives under ``code/<sha256>/`` and step outputs under the execution id, so a changed input
    is a changed path.
    """
    document = {
        "type": step.type,
        "arguments": {name: arguments.get(name) for name in CACHE_KEY_ATTRIBUTES[step.type]},
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    """``WORKSPACE/cache/<pipeline>/<step>/<key>.json``: a successful step's result, reused while fresh."""

    def __init__(self, workspace: Path, pipeline_name: str, s3: LocalS3Client) -> None:
        self.folder = workspace / "cache" / pipeline_name
        self.s3 = s3

    def lookup(self, step: PlannedStep, key: str) -> dict[str, Any] | None:
        path = self.folder / step.name / f"{key}.json"
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        expire = step.spec["CacheConfig"].get("ExpireAfter")
        if expire and datetime.fromisoformat(entry["created"]) + parse_duration(expire) < datetime.now(UTC):
            return None
        if not all(runners.s3_exists(self.s3, uri) for uri in _output_uris(step.type, entry["properties"])):
            return None  # its outputs were deleted since: run again
        # PropertyFiles are not in the key: read them, as the definition names them now, from the outputs.
        files = runners.output_property_files(
            self.s3, entry["properties"], step.spec.get("PropertyFiles", [])
        )
        if files is None:
            return None
        return {**entry, "property_files": files}

    def store(self, step: PlannedStep, key: str, outcome: runners.StepOutcome, execution_arn: str) -> None:
        atomic_write_json(
            self.folder / step.name / f"{key}.json",
            {
                "created": to_iso(datetime.now(UTC)),
                "execution_arn": execution_arn,
                "properties": outcome.properties,
                "script_seconds": outcome.script_seconds,
            },
        )


# ---------------------------------------------------------------- the run
def new_execution_id() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=12))


def job_name(execution_id: str, step_name: str, suffix: str) -> str:
    """A step's job name: ``pipelines-<execution id>-<step>-<suffix>``, within SageMaker's 63 characters."""
    return f"pipelines-{execution_id}-{step_name}"[:56] + f"-{suffix}"


def pipeline_arn(region: str, pipeline_name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:pipeline/{pipeline_name.lower()}"


# ---------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """One of a step's ``RetryPolicies``, as "Retry Policy for Pipeline Steps" defines it
    (https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-retry-policy.html)."""

    exception_types: tuple[str, ...]
    interval_seconds: int = 1  # before the first retry
    backoff_rate: float = 2.0  # the interval's multiplier at each further retry
    max_attempts: int | None = DEFAULT_RETRY_ATTEMPTS  # retries, not attempts: 0 never retries
    expire_after_min: int | None = None  # minutes from the step's start after which no retry starts

    def allows(self, retries_done: int, elapsed_s: float) -> bool:
        """Whether the failure that just recurred is retried: "If the error recurs more times than
        MaxAttempts specifies" or "after ExpireAfterMin minutes counting from the step gets executed,
        retries cease"."""
        if self.expire_after_min is not None:
            return elapsed_s < self.expire_after_min * 60
        return retries_done < (self.max_attempts or 0)

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): IntervalSeconds, times BackoffRate per retry."""
        try:
            seconds = self.interval_seconds * self.backoff_rate ** (retry - 1)
        except OverflowError:
            seconds = math.inf
        return min(seconds, threading.TIMEOUT_MAX)  # what Event.wait accepts


def _whole_number(spec: Mapping[str, Any], name: str, maximum: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise DefinitionError(f"{name} must be a whole number from 0 to {maximum}; got {value!r}")
    return value


def parse_retry_policy(spec: Any) -> RetryPolicy:
    """A ``RetryPolicies`` entry checked against the page's limits; DefinitionError says what is wrong."""
    if not isinstance(spec, Mapping):
        raise DefinitionError(f"not an object: {spec!r}")
    unknown = sorted(set(spec) - set(RETRY_POLICY_FIELDS))
    if unknown:
        raise DefinitionError(
            f"unknown field(s) {', '.join(unknown)} (known: {', '.join(RETRY_POLICY_FIELDS)})"
        )
    types = spec.get("ExceptionType")
    if not isinstance(types, list) or not types or any(t not in RETRY_EXCEPTION_TYPES for t in types):
        raise DefinitionError(
            f"ExceptionType must be a non-empty list of {', '.join(RETRY_EXCEPTION_TYPES)}; got {types!r}"
        )
    rate = spec.get("BackoffRate", 2.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < math.inf:
        raise DefinitionError(f"BackoffRate must be a number of at least 0; got {rate!r}")
    interval = _whole_number(spec, "IntervalSeconds", MAX_RETRY_INTERVAL_S)
    attempts = _whole_number(spec, "MaxAttempts", MAX_RETRY_ATTEMPTS)
    expire = _whole_number(spec, "ExpireAfterMin", MAX_RETRY_EXPIRE_MIN)
    if attempts is not None and expire is not None:
        raise DefinitionError("only one of MaxAttempts or ExpireAfterMin can be given, not both")
    return RetryPolicy(
        exception_types=tuple(types),
        interval_seconds=1 if interval is None else interval,
        backoff_rate=float(rate),
        max_attempts=DEFAULT_RETRY_ATTEMPTS if attempts is None and expire is None else attempts,
        expire_after_min=expire,
    )


def retry_delay(
    policies: list[RetryPolicy], kind: str, retries: dict[int, int], elapsed_s: float
) -> float | None:
    """Seconds before the step's next attempt after a failure of ``kind``, or None: not retried.

    The first policy naming ``kind`` decides, counting its own retries in ``retries`` (policy index ->
    retries started) against MaxAttempts, or the seconds since the step started against ExpireAfterMin.
    A failure no policy names (an AlgorithmError: the script failed) is never retried.
    """
    for index, policy in enumerate(policies):
        if kind in policy.exception_types:
            done = retries.get(index, 0)
            if not policy.allows(done, elapsed_s):
                return None
            retries[index] = done + 1
            return policy.delay(done + 1)
    return None


def _max_parallel(given: int | None, definition: Mapping[str, Any]) -> int | None:
    """How many steps may run at once: ``ParallelismConfiguration.MaxParallelExecutionSteps`` ("The max
    number of steps that can be executed in parallel", at least 1:
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ParallelismConfiguration.html), or
    None when none is given: then, as on AWS, every step whose dependencies are done starts."""
    configured = (definition.get("ParallelismConfiguration") or {}).get("MaxParallelExecutionSteps")
    value = given if given is not None else configured
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DefinitionError(
            f"MaxParallelExecutionSteps must be a whole number of at least 1; got {value!r}"
        )
    return value


class LocalExecutor:
    """One execution of a plan; ``run()`` returns the finished Execution record."""

    def __init__(
        self,
        definition: Mapping[str, Any],
        workspace: Path,
        *,
        pipeline_name: str,
        parameters: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        region: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_parallel: int | None = None,
        display_name: str | None = None,
        description: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        self.definition = dict(definition)
        self.plan = plan(self.definition)
        self.values = bind_parameters(self.plan.parameters, parameters)
        self.workspace = Path(workspace).resolve()
        self.region = resolve_region(region)
        # Steps call these as AWS would be called: a request AWS refuses fails here too. Imported here:
        # aws_rules needs botocore, and `robocar edge` imports this module on a car without it.
        from pipelines.aws_rules import validated
        from pipelines.step_requests import check_definition

        # Each step is a request on AWS (CreateProcessingJob, CreateTrainingJob...): refuse, before anything
        # runs, an execution whose requests AWS would refuse, though local mode never sends them.
        refused = check_definition(
            self.definition, self.values, pipeline_name=pipeline_name, region=self.region
        )
        if refused:
            raise DefinitionError(
                "AWS would refuse these step requests:\n  - " + "\n  - ".join(str(p) for p in refused)
            )
        self.s3 = validated(LocalS3Client(self.workspace, self.region), "s3")
        self.sagemaker = validated(LocalSageMakerClient(self.workspace, self.region), "sagemaker")
        check_s3_parameters(self.values, self.s3)
        self.on_event = on_event or (lambda event: None)
        self.max_parallel = _max_parallel(max_parallel, self.definition)
        self.stop = threading.Event()
        self.stop_reason = ""
        self.lock = threading.Lock()
        self.jobs: dict[str, runners.StepJob] = {}
        self.cache = StepCache(self.workspace, pipeline_name, self.s3)

        execution_id = execution_id or new_execution_id()
        arn = f"{pipeline_arn(self.region, pipeline_name)}/execution/{execution_id}"
        now = to_iso(datetime.now(UTC))
        self.execution = Execution(
            arn=arn,
            execution_id=execution_id,
            pipeline_name=pipeline_name,
            pipeline_arn=pipeline_arn(self.region, pipeline_name),
            directory=str(store.executions_dir(self.workspace, pipeline_name) / execution_id),
            parameters=self.values,
            start_time=now,
            last_modified_time=now,
            display_name=display_name or execution_id,
            description=description,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        self.scope = Scope(
            parameters=self.values,
            execution={
                "PipelineExecutionId": execution_id,
                "PipelineExecutionArn": arn,
                "PipelineName": pipeline_name,
                "PipelineArn": self.execution.pipeline_arn,
                "StartDateTime": now,
                "CurrentDateTime": now,
            },
            read_s3_json=self._read_s3_json,
        )
        # Every image a step runs must have a local environment standing in for it (environments.py).
        unmapped = environments.unmapped_images(self.plan.steps.values(), self.scope)
        if unmapped:
            raise DefinitionError(
                "the definition names images local mode has no environment for: " + ", ".join(unmapped)
            )

    def _read_s3_json(self, uri: str) -> Any:
        """``Std:JsonGet`` with an ``S3Uri``: the object's JSON, read through local S3's checked paths."""
        try:
            return json.loads(self.s3.uri_to_path(uri).read_text())
        except (OSError, ValueError) as exc:  # a key local S3 refuses, a missing object, not JSON
            raise ExpressionError(f"Std:JsonGet: cannot read {uri}: {exc}") from None

    # -- bookkeeping
    def _save(self) -> None:
        with self.lock:
            self.execution.last_modified_time = to_iso(datetime.now(UTC))
            store.save(self.execution)

    def _emit(self, event: Event) -> None:
        with contextlib.suppress(Exception):  # progress display must never break the run
            self.on_event(event)

    def _heartbeat(self) -> None:
        while not self._done.wait(store.HEARTBEAT_S):
            with contextlib.suppress(OSError):
                store.touch_heartbeat(self.execution)

    def request_stop(self, reason: str) -> None:
        """Stop the execution: running steps' processes are terminated, no new step starts."""
        self.stop_reason = self.stop_reason or reason
        self.stop.set()
        for job in list(self.jobs.values()):
            with job.lock:
                processes = list(job.processes)
            for process in processes:
                threading.Thread(target=runners.terminate, args=(process,), daemon=True).start()

    # -- steps
    def _job(self, step: PlannedStep) -> runners.StepJob:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        name = job_name(self.execution.execution_id, step.name, suffix)
        env = dict(os.environ)
        # A step that calls AWS (the registry, Neo) talks to this workspace's local clients.
        env.update(
            {
                "ROBOCAR_LOCAL_ROOT": str(self.workspace),
                "AWS_DEFAULT_REGION": self.region,
                "PYTHONUNBUFFERED": "1",
            }
        )
        log_path = self.execution.path / "logs" / f"{step.name}.log"
        return runners.StepJob(
            step_name=step.name,
            job_name=name,
            workspace=self.workspace,
            s3=self.s3,
            sagemaker=self.sagemaker,
            region=self.region,
            log_path=log_path,
            base_env=env,
            stop=self.stop,
        )

    def _run_once(
        self, step: PlannedStep, arguments: dict[str, Any], job: runners.StepJob
    ) -> runners.StepOutcome:
        if step.type == "Processing":
            return runners.run_processing(job, arguments, step.spec.get("PropertyFiles", []))
        return runners.RUNNERS[step.type](job, arguments)

    def _run_step(self, step: PlannedStep) -> None:
        """Run one step to a terminal status (in a worker thread); records everything on the StepRecord."""
        record = self.execution.steps[step.name]
        try:
            self.scope.execution["CurrentDateTime"] = to_iso(datetime.now(UTC))
            if step.type == "Condition":
                outcome = evaluate_conditions(
                    step.spec.get("Arguments", {}).get("Conditions", []), self.scope
                )
                record.outcome = str(outcome)
                self._finish(step, runners.StepOutcome({"Outcome": str(outcome)}), "Succeeded")
                return
            job = self._job(step)  # named first: Execution.ProcessingJobName/TrainingJobName is its name
            arguments = resolve(
                step.spec.get("Arguments", {}), step_scope(self.scope, step.type, job.job_name)
            )
            if step.type == "Fail":
                message = runners.to_string(arguments.get("ErrorMessage", ""))
                record.failure_reason = message
                self._finish(step, None, "Failed")
                return
            key = None
            if step.type in CACHEABLE_TYPES and step.spec.get("CacheConfig", {}).get("Enabled"):
                key = cache_key(step, arguments)
                hit = self.cache.lookup(step, key)
                if hit is not None:
                    record.cache_hit_from = hit["execution_arn"]
                    outcome = runners.StepOutcome(hit["properties"], hit["property_files"], 0.0)
                    self._finish(step, outcome, "Succeeded")
                    return
            record.log_path = str(job.log_path)
            self.jobs[step.name] = job
            policies = [parse_retry_policy(spec) for spec in step.spec.get("RetryPolicies", [])]
            retries: dict[int, int] = {}
            started = time.monotonic()
            while True:
                record.attempts += 1
                self._save()
                try:
                    outcome = self._run_once(step, arguments, job)
                    break
                except runners.StepFailed as failed:
                    delay = retry_delay(policies, failed.kind, retries, time.monotonic() - started)
                    if delay is None or self.stop.is_set():
                        raise
                    note = f"attempt {record.attempts} failed ({failed.kind}: {failed.reason})"
                    job.log_path.parent.mkdir(parents=True, exist_ok=True)  # it may fail before its process
                    with open(job.log_path, "a") as log:
                        log.write(f"\n[local executor] {note}; retrying in {delay:g} s\n")
                    if self.stop.wait(delay):
                        raise runners.StepStopped() from None
            if key is not None:
                self.cache.store(step, key, outcome, self.execution.arn)
            self._finish(step, outcome, "Succeeded")
        except runners.StepStopped:
            record.failure_reason = self.stop_reason or "stopped"
            self._finish(step, None, "Stopped")
        except runners.StepFailed as failed:
            record.failure_reason = failed.reason
            self._finish(step, None, "Failed", log_tail=failed.log_tail)
        except ExpressionError as exc:
            record.failure_reason = str(exc)
            self._finish(step, None, "Failed")
        except Exception as exc:  # an executor defect: fail this step loudly, keep the record consistent
            record.failure_reason = f"local executor error: {type(exc).__name__}: {exc}"
            log_path = self.execution.path / "logs" / f"{step.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as log:
                log.write(traceback.format_exc())
            record.log_path = str(log_path)
            self._finish(step, None, "Failed", log_tail=runners.log_tail(Path(record.log_path)))

    def _finish(
        self, step: PlannedStep, outcome: runners.StepOutcome | None, status: str, log_tail: str = ""
    ) -> None:
        record = self.execution.steps[step.name]
        if outcome is not None:
            with self.lock:
                self.scope.steps[step.name] = outcome.properties
                if outcome.property_files:
                    self.scope.property_files[step.name] = outcome.property_files
            record.properties = outcome.properties
            record.script_seconds = outcome.script_seconds
            record.metadata = _metadata(step.type, outcome.properties)
        record.status = status
        record.end_time = to_iso(datetime.now(UTC))
        self._save()
        self._emit({"event": "step-finished", "step": record, "log_tail": log_tail})

    # -- scheduling
    def _ready(self, name: str, finished: dict[str, str]) -> str | None:
        """'run', 'skip' (a dependency did not succeed, or its branch was not taken), or None (wait)."""
        step = self.plan.steps[name]
        if not all(d in finished for d in step.depends_on):
            return None
        if any(finished[d] != "Succeeded" for d in step.depends_on):
            return "skip"
        if step.branch_of:
            condition, branch = step.branch_of
            if self.execution.steps[condition].outcome != str(branch):
                return "skip"
        return "run"

    def run(self) -> Execution:
        clean_abandoned(self.workspace)
        self.execution.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.execution.path / "definition.json", self.definition)
        store.touch_heartbeat(self.execution)
        self._save()
        self._emit({"event": "execution-started", "execution": self.execution, "order": self.plan.order})
        self._done = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        heartbeat.start()
        with _signals_stop(self):
            try:
                self._schedule()
            finally:
                self._done.set()
                self._finalise()
        return self.execution

    def _schedule(self) -> None:
        finished: dict[str, str] = {}  # name -> terminal status, or "Skipped"
        running: dict[Future, str] = {}
        pending = list(self.plan.order)
        workers = self.max_parallel or max(1, len(self.plan.steps))  # unbounded: at most every step at once
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step")
        try:
            while pending or running:
                failed = any(s in ("Failed", "Stopped") for s in finished.values())
                for name in list(pending):
                    if self.stop.is_set() or failed:
                        break
                    verdict = self._ready(name, finished)
                    if verdict == "skip":
                        pending.remove(name)
                        finished[name] = "Skipped"
                    elif verdict == "run" and (self.max_parallel is None or len(running) < self.max_parallel):
                        pending.remove(name)
                        step = self.plan.steps[name]
                        record = StepRecord(
                            name=name,
                            type=step.type,
                            status="Executing",
                            start_time=to_iso(datetime.now(UTC)),
                        )
                        with self.lock:  # workers serialise the record while this thread adds to it
                            self.execution.steps[name] = record
                        self._save()
                        self._emit({"event": "step-started", "step": record})
                        running[self._pool.submit(self._run_step, step)] = name
                if not running:
                    break  # nothing can start: finished, failed or stopped
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    future.result()
                    finished[name] = self.execution.steps[name].status
        except KeyboardInterrupt:
            self.request_stop("interrupted (Ctrl-C)")
        finally:
            self._pool.shutdown(wait=True)

    def _finalise(self) -> None:
        steps = self.execution.steps.values()
        for record in steps:
            if record.status not in store.TERMINAL:  # started but its thread never reported (interrupt)
                record.status = "Stopped"
                record.end_time = record.end_time or to_iso(datetime.now(UTC))
        failed = [r for r in steps if r.status == "Failed"]
        if failed:
            self.execution.status = "Failed"
            self.execution.failure_reason = f"step {failed[0].name} failed: {failed[0].failure_reason}"
        elif self.stop.is_set() or any(r.status == "Stopped" for r in steps):
            self.execution.status = "Stopped"
            self.execution.failure_reason = self.stop_reason or "stopped"
        else:
            self.execution.status = "Succeeded"
        self.execution.end_time = to_iso(datetime.now(UTC))
        self._save()
        with contextlib.suppress(Exception):
            from pipelines.local.report import write_report

            write_report(self.execution)
        self._emit({"event": "execution-finished", "execution": self.execution})


def clean_abandoned(workspace: Path, max_age_s: float = TEMP_TREE_MAX_AGE_S) -> None:
    """What killed runs left in the workspace, cleaned before a run starts.

    - executions left ``Executing`` by an executor that is gone: recorded ``Failed`` on disk
      (``store.settle_abandoned``);
    - temporary ``/opt/ml`` trees (``tmp/``) of a dead executor; a failed step's tree, kept on purpose
      for a look inside, and a tree that names no owner go after ``max_age_s`` (a day);
    - local S3's in-progress files (``s3/.tmp/.tmp-<pid>-*``: staged outputs, half-written models) of a
      dead process; any after ``max_age_s``.
    What a live executor (this host, its pid running) still uses is left alone.
    """
    store.settle_abandoned(workspace)
    cutoff = datetime.now(UTC).timestamp() - max_age_s
    trees = workspace / "tmp"
    for tree in sorted(trees.iterdir()) if trees.is_dir() else []:
        with contextlib.suppress(OSError):
            if tree.is_dir() and (tree.stat().st_mtime < cutoff or _tree_abandoned(tree)):
                shutil.rmtree(tree, ignore_errors=True)
    staging = workspace / "s3" / ".tmp"
    for entry in sorted(staging.iterdir()) if staging.is_dir() else []:
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < cutoff or not store.process_alive(_writer_pid(entry.name)):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _tree_abandoned(tree: Path) -> bool:
    """A temporary tree whose owner (``runners.TREE_OWNER``) is gone and that was not kept on purpose."""
    if (tree / runners.TREE_KEPT).exists():
        return False
    try:
        owner = json.loads((tree / runners.TREE_OWNER).read_text())
    except (OSError, ValueError):
        return False  # no owner named (yet): the age rule decides
    return owner.get("host") == socket.gethostname() and not store.process_alive(int(owner.get("pid", 0)))


def _writer_pid(name: str) -> int:
    """The pid in an in-progress name (``.tmp-<pid>-...``, ``edge.atomic_files.in_progress_prefix``)."""
    match = re.match(re.escape(IN_PROGRESS_PREFIX) + r"(\d+)-", name)
    return int(match.group(1)) if match else os.getpid()  # unnamed: treated as live (the age rule applies)


def _metadata(step_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The ``Metadata`` block ``list_pipeline_execution_steps`` shows for a step of this type."""
    if step_type == "Processing":
        return {"ProcessingJob": {"Arn": properties.get("ProcessingJobArn")}}
    if step_type == "Training":
        return {"TrainingJob": {"Arn": properties.get("TrainingJobArn")}}
    if step_type == "RegisterModel":
        return {"RegisterModel": {"Arn": properties.get("ModelPackageArn")}}
    if step_type == "Model":
        return {"Model": {"Arn": properties.get("ModelArn")}}
    if step_type == "Condition":
        return {"Condition": {"Outcome": properties.get("Outcome")}}
    return {}


@contextlib.contextmanager
def _signals_stop(executor: LocalExecutor):
    """Ctrl-C, SIGTERM and SIGHUP stop the execution cleanly: running steps are terminated and recorded
    as Stopped, nothing more starts. A handler (not KeyboardInterrupt, which could strike in the middle
    of writing a record) only sets the stop flag. Signals ignored by whoever started us stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        executor.request_stop(f"interrupted ({name})")

    previous = {
        sig: signal.signal(sig, handler)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_local(
    definition: Mapping[str, Any] | str,
    workspace: str | os.PathLike[str] = DEFAULT_WORKSPACE,
    parameters: Mapping[str, Any] | list[dict[str, Any]] | None = None,
    *,
    pipeline_name: str = "local-pipeline",
    region: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_parallel: int | None = None,
    display_name: str | None = None,
) -> Execution:
    """Run a pipeline definition (dict or JSON text) in ``workspace``; returns the finished Execution.

    Raises DefinitionError / ParameterError before anything starts; a failing step does not raise: the
    returned Execution has ``status == "Failed"`` and the step's ``failure_reason`` and ``log_path``.
    """
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"the definition is not JSON: {exc}") from None
    executor = LocalExecutor(
        definition,  # type: ignore[arg-type]
        Path(workspace),
        pipeline_name=pipeline_name,
        parameters=parameters,
        region=region,
        on_event=on_event,
        max_parallel=max_parallel,
        display_name=display_name,
    )
    return executor.run()
