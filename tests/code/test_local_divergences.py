"""Local mode behaves as SageMaker Pipelines does where the docs say how (docs/local-mode.md).

Each test states the AWS rule and the page it comes from: the ExpireAfter forms, the execution
variables, retry policies, S3Prefix inputs as key prefixes, how many steps run at once.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sample_pipeline as sample

from pipelines.local import DefinitionError, run_local, runners
from pipelines.local.client import LocalPipelineClient
from pipelines.local.executor import RetryPolicy, parse_duration, parse_retry_policy, retry_delay
from pipelines.local.expressions import EXECUTION_VARIABLES
from pipelines.local.s3 import LocalS3Client
from pipelines.step_requests import step_requests


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    sample.upload_sample(LocalS3Client(tmp_path))
    return tmp_path


def run(workspace: Path, definition: dict[str, Any], parameters: dict | None = None, **kwargs: Any):
    return run_local(definition, workspace, parameters or {}, pipeline_name="sample", **kwargs)


# ---------------------------------------------------------------- ExpireAfter
# "Turn on step caching" (https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-caching-enabling.html):
# "30d" = 30 days, "5y" = 5 years, "T16m" = 16 minutes, "30dT5h" = 30 days and 5 hours; the SDK's
# CacheConfig shows "p30d", "P4DT12H", "T12H", the page's own SDK example "PT1H".
@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("30d", timedelta(days=30)),
        ("5y", timedelta(days=5 * 365)),
        ("T16m", timedelta(minutes=16)),
        ("30dT5h", timedelta(days=30, hours=5)),
        ("P30D", timedelta(days=30)),
        ("PT1H", timedelta(hours=1)),
        ("p30d", timedelta(days=30)),
        ("P4DT12H", timedelta(days=4, hours=12)),
        ("T12H", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("1m", timedelta(days=30)),  # before T, m is months
        ("PT90S", timedelta(seconds=90)),
    ],
)
def test_every_expire_after_form_the_docs_show_is_accepted(text: str, duration: timedelta) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    "text",
    ["", "P", "T", "PT", "30dT", "30 days", "5x", "1H", "-5d", "1.5d", "d", "5d5d", "T5", "99999999999y"],
)
def test_expire_after_garbage_is_still_refused(text: str) -> None:
    with pytest.raises(DefinitionError):
        parse_duration(text)


def test_a_docs_form_expire_after_runs_and_caches(workspace: Path) -> None:
    definition = sample.definition()
    for step in definition["Steps"][:3]:
        if "CacheConfig" in step:  # Evaluate is never cached (it reads the registry's current state)
            step["CacheConfig"]["ExpireAfter"] = "30dT5h"
    first = run(workspace, definition)
    assert first.status == "Succeeded", first.failure_reason
    second = run(workspace, definition)
    assert second.steps["Train"].cache_hit_from == first.arn

    definition["Steps"][1]["CacheConfig"]["ExpireAfter"] = "30 days"
    with pytest.raises(
        DefinitionError, match="'Train': CacheConfig.ExpireAfter: '30 days' is not a duration"
    ):
        run(workspace, definition)


# ---------------------------------------------------------------- execution variables
def test_every_execution_variable_the_sdk_defines_is_known() -> None:
    from sagemaker.core.workflow.execution_variables import ExecutionVariable, ExecutionVariables

    defined = {v.name for v in vars(ExecutionVariables).values() if isinstance(v, ExecutionVariable)}
    assert defined == set(EXECUTION_VARIABLES)


def test_job_name_variables_are_the_name_of_the_job_their_step_starts(workspace: Path) -> None:
    definition = sample.definition()
    preprocess, train = definition["Steps"][0], definition["Steps"][1]
    preprocess["Arguments"]["Environment"]["JOB"] = {"Get": "Execution.ProcessingJobName"}
    train["Arguments"]["Environment"]["JOB"] = {"Get": "Execution.TrainingJobName"}
    execution = run(workspace, definition)
    assert execution.status == "Succeeded", execution.failure_reason

    processing = execution.steps["Preprocess"].properties
    assert processing["Environment"]["JOB"] == processing["ProcessingJobName"]
    assert processing["ProcessingJobName"].startswith(f"pipelines-{execution.execution_id}-Preprocess-")
    training = execution.steps["Train"].properties
    assert training["Environment"]["JOB"] == training["TrainingJobName"]
    assert training["TrainingJobName"].startswith(f"pipelines-{execution.execution_id}-Train-")
    assert processing["ProcessingJobName"] != training["TrainingJobName"]

    requests = {r.step: r.request for r in step_requests(definition, pipeline_name="sample")}
    assert requests["Preprocess"]["Environment"]["JOB"] == requests["Preprocess"]["ProcessingJobName"]
    assert requests["Train"]["Environment"]["JOB"] == requests["Train"]["TrainingJobName"]


def test_a_job_name_variable_outside_its_own_step_type_is_refused(workspace: Path) -> None:
    definition = sample.definition()
    definition["Steps"][0]["Arguments"]["Environment"]["JOB"] = {"Get": "Execution.TrainingJobName"}
    with pytest.raises(DefinitionError, match=r"'Preprocess' \(Processing\) uses Execution.TrainingJobName"):
        run(workspace, definition)


# ---------------------------------------------------------------- retry policies
RETRY_PAGE_TYPES = [
    "Step.SERVICE_FAULT",
    "Step.THROTTLING",
    "SageMaker.JOB_INTERNAL_ERROR",
    "SageMaker.CAPACITY_ERROR",
    "SageMaker.RESOURCE_LIMIT",
]


def preprocess_only(**step: Any) -> dict[str, Any]:
    """The sample with its first step only (uncached, so every run runs it), ``step`` merged into it."""
    definition = sample.definition()
    preprocess = definition["Steps"][0]
    preprocess["CacheConfig"] = {"Enabled": False}
    preprocess.update(step)
    definition["Steps"] = [preprocess]
    return definition


@pytest.fixture
def failing_preprocess(monkeypatch):
    """``fail(kind, times)``: Preprocess's next ``times`` attempts fail with ``kind``, later ones run."""
    calls = {"n": 0}
    real = runners.run_processing

    def arm(kind: str, times: int) -> dict[str, int]:
        def flaky(job, arguments, property_files):
            calls["n"] += 1
            if calls["n"] <= times:
                raise runners.StepFailed(f"injected failure {calls['n']}", kind)
            return real(job, arguments, property_files)

        monkeypatch.setattr(runners, "run_processing", flaky)
        return calls

    return arm


# "Retry Policy for Pipeline Steps", https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-retry-policy.html


def test_max_attempts_counts_retries_so_a_step_runs_once_more_than_it(workspace, failing_preprocess) -> None:
    # "MaxAttempts: ... the maximum number of retry attempts. If the error recurs more times than
    # MaxAttempts specifies, retries cease": MaxAttempts 2 is the first run and 2 retries.
    policy = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0, "MaxAttempts": 2}
    failing_preprocess(runners.INTERNAL_ERROR, times=2)
    recovered = run(workspace, preprocess_only(RetryPolicies=[policy]))
    assert recovered.status == "Succeeded", recovered.failure_reason
    assert recovered.steps["Preprocess"].attempts == 3

    failing_preprocess(runners.INTERNAL_ERROR, times=99)
    exhausted = run(workspace, preprocess_only(RetryPolicies=[policy]))
    assert exhausted.status == "Failed"
    assert exhausted.steps["Preprocess"].attempts == 3
    assert exhausted.steps["Preprocess"].failure_reason.startswith("injected failure")


def test_max_attempts_defaults_to_five_retries_and_zero_never_retries(workspace, failing_preprocess) -> None:
    # "(5 by default)"; "if both are not specified, MaxAttempts becomes the default"; "A value of 0
    # specifies that errors are never retried".
    failing_preprocess(runners.SERVICE_FAULT, times=99)
    default = run(
        workspace,
        preprocess_only(RetryPolicies=[{"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 0}]),
    )
    assert default.steps["Preprocess"].attempts == 6

    failing_preprocess(runners.SERVICE_FAULT, times=99)
    zero = {"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 0, "MaxAttempts": 0}
    assert run(workspace, preprocess_only(RetryPolicies=[zero])).steps["Preprocess"].attempts == 1


def test_expire_after_min_alone_retries_until_the_expiry(workspace, failing_preprocess) -> None:
    # "ExpireAfterMin: ... the maximum timespan of retry. If the error recurs after ExpireAfterMin minutes
    # counting from the step gets executed, retries cease ... A value of 0 specifies that errors are
    # never retried." Given alone, it is the policy's only bound: no MaxAttempts default applies.
    policy = {"ExceptionType": ["SageMaker.RESOURCE_LIMIT"], "IntervalSeconds": 0, "ExpireAfterMin": 5}
    failing_preprocess("SageMaker.RESOURCE_LIMIT", times=7)  # more than the default MaxAttempts of 5
    recovered = run(workspace, preprocess_only(RetryPolicies=[policy]))
    assert recovered.status == "Succeeded", recovered.failure_reason
    assert recovered.steps["Preprocess"].attempts == 8

    failing_preprocess("SageMaker.RESOURCE_LIMIT", times=1)
    never = {**policy, "ExpireAfterMin": 0}
    assert run(workspace, preprocess_only(RetryPolicies=[never])).steps["Preprocess"].attempts == 1

    expiring = parse_retry_policy(policy)
    assert expiring.max_attempts is None and expiring.expire_after_min == 5
    assert expiring.allows(retries_done=100, elapsed_s=5 * 60 - 1)
    assert not expiring.allows(retries_done=0, elapsed_s=5 * 60)


def test_interval_and_backoff_space_the_retries(workspace, failing_preprocess) -> None:
    # "IntervalSeconds: The number of seconds before the first retry attempt (1 by default)";
    # "BackoffRate: The multiplier by which the retry interval increases during each attempt (2.0 by
    # default)".
    policy = parse_retry_policy({"ExceptionType": ["Step.THROTTLING"], "IntervalSeconds": 3})
    assert [policy.delay(retry) for retry in (1, 2, 3)] == [3, 6, 12]
    defaults = parse_retry_policy({"ExceptionType": ["Step.THROTTLING"]})
    assert (defaults.interval_seconds, defaults.backoff_rate, defaults.max_attempts) == (1, 2.0, 5)

    failing_preprocess("Step.THROTTLING", times=2)
    halving = {"ExceptionType": ["Step.THROTTLING"], "IntervalSeconds": 1, "BackoffRate": 0.5}
    execution = run(workspace, preprocess_only(RetryPolicies=[halving]))
    assert execution.status == "Succeeded"
    log = Path(execution.steps["Preprocess"].log_path).read_text()
    assert "attempt 1 failed (Step.THROTTLING: injected failure 1); retrying in 1 s" in log
    assert "attempt 2 failed (Step.THROTTLING: injected failure 2); retrying in 0.5 s" in log


def test_only_the_named_exception_types_are_retried(workspace, failing_preprocess) -> None:
    failing_preprocess(runners.SERVICE_FAULT, times=1)
    other = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0}
    execution = run(workspace, preprocess_only(RetryPolicies=[other]))
    assert execution.status == "Failed" and execution.steps["Preprocess"].attempts == 1

    # The first policy naming the type decides, with its own count.
    policies = [parse_retry_policy(other), RetryPolicy(("Step.SERVICE_FAULT",), 7, 1.0, 1)]
    retries: dict[int, int] = {}
    assert retry_delay(policies, runners.SERVICE_FAULT, retries, 0.0) == 7
    assert retry_delay(policies, runners.SERVICE_FAULT, retries, 0.0) is None
    assert retry_delay(policies, runners.ALGORITHM_ERROR, {}, 0.0) is None


def test_a_killed_step_process_is_an_algorithm_error_no_policy_retries(workspace, monkeypatch) -> None:
    # The page's exception types are SageMaker's own faults (InternalServerError, EC2
    # InsufficientCapacityErrors, quotas, throttling); a container that dies fails its job as an
    # AlgorithmError ("AlgorithmError: Exit Code: 139", https://github.com/aws/sagemaker-python-sdk/issues/134),
    # which no policy names. So a killed local step process is never retried.
    monkeypatch.setenv("SAMPLE_KILL_ONCE_MARKER", str(workspace / "killed-once"))
    every_type = {"ExceptionType": RETRY_PAGE_TYPES, "IntervalSeconds": 0, "MaxAttempts": 20}
    definition = sample.definition(preprocess_extra=["--fail", "kill-once"])
    definition["Steps"][0]["RetryPolicies"] = [every_type]
    execution = run(workspace, definition)
    assert execution.status == "Failed"
    step = execution.steps["Preprocess"]
    assert step.attempts == 1 and step.failure_reason == "the process was killed by SIGKILL"
    assert (workspace / "killed-once").is_file()  # it was the kill, not something before it


@pytest.mark.parametrize(
    ("policy", "refusal"),
    [
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "MaxAttempts": 3, "ExpireAfterMin": 10}, "only one of"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "MaxAttempts": 21}, "MaxAttempts must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "MaxAttempts": -1}, "MaxAttempts must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "ExpireAfterMin": 14_401}, "ExpireAfterMin must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 43_201}, "IntervalSeconds must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 1.5}, "IntervalSeconds must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "BackoffRate": -1}, "BackoffRate must be"),
        ({"ExceptionType": ["Step.TIMEOUT"]}, "ExceptionType must be"),
        ({"ExceptionType": []}, "ExceptionType must be"),
        ({"IntervalSeconds": 1}, "ExceptionType must be"),
        ({"ExceptionType": ["Step.SERVICE_FAULT"], "FailureReasonType": ["x"]}, "unknown field"),
    ],
)
def test_retry_policies_outside_the_pages_limits_are_refused_before_anything_runs(
    workspace: Path, policy: dict, refusal: str
) -> None:
    # IntervalSeconds at most 43200, MaxAttempts at most 20, ExpireAfterMin at most 14,400; "If both
    # properties are identified within one policy, then the retry policy will generate a validation
    # error"; ExceptionType one of the five types the page lists.
    with pytest.raises(DefinitionError, match=refusal):
        run(workspace, preprocess_only(RetryPolicies=[policy]))
    assert not (workspace / "executions").exists()


def test_retry_policies_at_the_pages_limits_are_accepted() -> None:
    limits = parse_retry_policy(
        {"ExceptionType": RETRY_PAGE_TYPES, "IntervalSeconds": 43_200, "BackoffRate": 0, "MaxAttempts": 20}
    )
    assert limits.max_attempts == 20 and limits.interval_seconds == 43_200
    assert (
        parse_retry_policy({"ExceptionType": ["Step.THROTTLING"], "ExpireAfterMin": 14_400}).expire_after_min
        == 14_400
    )


def test_retry_policies_on_a_step_type_the_page_does_not_list_are_refused(workspace: Path) -> None:
    # "The retry policy only supports the following pipeline steps": Processing, Training, Tuning, AutoML,
    # CreateModel, RegisterModel, Transform, Notebook job; not Condition or Fail.
    definition = sample.definition()
    definition["Steps"][3]["RetryPolicies"] = [{"ExceptionType": ["Step.SERVICE_FAULT"]}]
    with pytest.raises(DefinitionError, match="a Condition step takes no RetryPolicies"):
        run(workspace, definition)


# ---------------------------------------------------------------- S3Prefix inputs are key prefixes
# ProcessingS3Input (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html)
# and S3DataSource (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html): "If
# you choose S3Prefix, S3Uri identifies a key name prefix. SageMaker uses all objects with the specified
# key name prefix". Where they land below LocalPath the pages do not say; AWS keeps a key the prefix cuts into
# whole ("train-data.csv" for s3://b/data/train, https://github.com/aws/sagemaker-python-sdk/issues/3612)
# and a folder's objects below it.
PREFIX_KEYS = [
    "data/part-0.csv",
    "data/part-0.csv.bak",
    "data/part-1.csv",
    "data/part/x",
    "data/part/sub/y",
    "data/partial/z",
    "data/other.csv",
    "data/pa",
]


@pytest.fixture
def prefix_bucket(tmp_path: Path) -> LocalS3Client:
    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket="prefix-bucket")
    for key in PREFIX_KEYS:
        s3.put_object(Bucket="prefix-bucket", Key=key, Body=key.encode())
    return s3


def landed(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_s3_prefix_matches_keys_not_folders(prefix_bucket: LocalS3Client, tmp_path: Path) -> None:
    runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part", tmp_path / "in")
    assert landed(tmp_path / "in") == {
        "part-0.csv": "data/part-0.csv",  # the prefix cuts into the name: the whole name
        "part-0.csv.bak": "data/part-0.csv.bak",
        "part-1.csv": "data/part-1.csv",
        "x": "data/part/x",  # below the prefix as a folder: the path below it
        "sub/y": "data/part/sub/y",
        "partial/z": "data/partial/z",
    }
    runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part/", tmp_path / "folder")
    assert landed(tmp_path / "folder") == {"x": "data/part/x", "sub/y": "data/part/sub/y"}
    runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part-0.csv", tmp_path / "object")
    assert landed(tmp_path / "object") == {
        "part-0.csv": "data/part-0.csv",  # an exact key keeps its basename ...
        "part-0.csv.bak": "data/part-0.csv.bak",  # ... and is a prefix too
    }
    with pytest.raises(runners.StepFailed, match="no objects found"):
        runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/nothing", tmp_path / "none")


def test_sharded_instances_split_the_matched_objects_in_key_order(
    prefix_bucket: LocalS3Client, tmp_path: Path
) -> None:
    # Key order (UTF-8): part-0.csv, part-0.csv.bak, part-1.csv, part/sub/y, part/x, partial/z.
    runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part", tmp_path / "algo-1", shard=(0, 2))
    runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part", tmp_path / "algo-2", shard=(1, 2))
    assert set(landed(tmp_path / "algo-1")) == {"part-0.csv", "part-1.csv", "x"}
    assert set(landed(tmp_path / "algo-2")) == {"part-0.csv.bak", "sub/y", "partial/z"}


def test_two_matched_objects_landing_on_one_path_fail_the_step(
    prefix_bucket: LocalS3Client, tmp_path: Path
) -> None:
    prefix_bucket.put_object(Bucket="prefix-bucket", Key="data/part/part-1.csv", Body=b"inner")
    with pytest.raises(runners.StepFailed, match="data/part-1.csv and data/part/part-1.csv would both land"):
        runners.download_s3(prefix_bucket, "s3://prefix-bucket/data/part", tmp_path / "in")


def test_a_pipeline_input_prefix_that_cuts_into_a_name_runs_and_the_cache_keys_on_the_path(
    workspace: Path,
) -> None:
    partial = f"s3://{sample.BUCKET}/sample/raw/tu"  # the sample's records are under sample/raw/tub/
    definition = sample.definition()
    data = definition["Steps"][0]["Arguments"]["ProcessingInputs"][1]["S3Input"]
    data["S3DataType"] = "S3Prefix"  # the sample reads a dataset manifest; here, a plain key prefix
    first = run(workspace, definition, {"InputDataUrl": partial})
    assert first.status == "Succeeded", first.failure_reason
    out = workspace / "s3" / sample.BUCKET / "sample" / "preprocess" / first.execution_id / "train"
    assert json.loads((out / "frames.json").read_text())["records"] == [
        f"tub/record_{i}.json" for i in range(3)
    ]
    # A new object the prefix matches changes no S3 path: SageMaker keys the cache on ProcessingInputs'
    # paths, never the objects behind them (pipelines-default-keys.html), so Preprocess is a cache hit.
    LocalS3Client(workspace).put_object(Bucket=sample.BUCKET, Key="sample/raw/tux.json", Body=b"{}")
    second = run(workspace, definition, {"InputDataUrl": partial})
    assert second.steps["Preprocess"].cache_hit_from == first.arn


# ---------------------------------------------------------------- parallelism
def twins(count: int) -> dict[str, Any]:
    """``count`` independent copies of Preprocess, each writing under its own prefix."""
    definition = sample.definition()
    first = definition["Steps"][0]
    first["CacheConfig"] = {"Enabled": False}
    steps = [first]
    for number in range(1, count):
        twin = json.loads(json.dumps(first))
        twin["Name"] = f"Preprocess{number}"
        for output in twin["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
            output["S3Output"]["S3Uri"]["Std:Join"]["Values"][0] = f"s3://{sample.BUCKET}/sample/twin{number}"
        steps.append(twin)
    definition["Steps"] = steps
    return definition


def test_every_ready_step_starts_when_no_parallelism_is_configured(workspace: Path) -> None:
    # AWS runs every step whose dependencies are done unless ParallelismConfiguration says otherwise
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ParallelismConfiguration.html).
    # Five is one more than the old local cap of four.
    execution = run(workspace, twins(5), {"PreprocessSeconds": 0.5})
    assert execution.status == "Succeeded", execution.failure_reason
    steps = execution.steps.values()
    assert max(s.start_time for s in steps) < min(s.end_time for s in steps)  # all five ran at once


def test_max_parallel_execution_steps_is_honoured(workspace: Path) -> None:
    # "MaxParallelExecutionSteps: The max number of steps that can be executed in parallel ... Minimum
    # value of 1."
    execution = run(workspace, twins(2), {"PreprocessSeconds": 0.2}, max_parallel=1)
    first, second = sorted(execution.steps.values(), key=lambda s: s.start_time)
    assert execution.status == "Succeeded" and second.start_time >= first.end_time

    configured = twins(2)
    configured["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": 0}
    with pytest.raises(DefinitionError, match="at least 1"):
        run(workspace, configured)


def test_the_local_client_honours_the_pipelines_parallelism_configuration(workspace: Path) -> None:
    client = LocalPipelineClient(workspace)
    client.create_pipeline(
        PipelineName="sample",
        PipelineDefinition=json.dumps(twins(2)),
        RoleArn="arn:aws:iam::123456789012:role/sample",
        ParallelismConfiguration={"MaxParallelExecutionSteps": 1},
    )
    client.start_pipeline_execution(
        PipelineName="sample", PipelineParameters=[{"Name": "PreprocessSeconds", "Value": "0.2"}]
    )
    execution = client.last_execution
    first, second = sorted(execution.steps.values(), key=lambda s: s.start_time)
    assert execution.status == "Succeeded" and second.start_time >= first.end_time
