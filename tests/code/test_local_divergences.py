"""Local mode behaves as SageMaker Pipelines does where the docs say how (docs/local-mode.md).

Each test states the AWS rule and the page it comes from: the ExpireAfter forms, the execution
variables, retry policies, S3Prefix inputs as key prefixes, how many steps run at once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.local_aws import LocalS3Client
from pipelines.local import DefinitionError, run_local, sample
from pipelines.local.executor import parse_duration
from pipelines.local.expressions import EXECUTION_VARIABLES
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
