# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Run the pipeline
#
# Build the definition (offline), upsert it, start an execution, follow it to the end and read the metrics
# of the model it registered. On AWS the steps run as SageMaker jobs; against the local workspace
# (`ROBOCAR_LOCAL_ROOT`) `start` runs them here, one after the other. The stack from `robocar infra deploy`
# provides the bucket, the role and the model package group; `robocar infra show` prints the `robocar.toml`
# lines for them. The recipe is a setting too: `ROBOCAR_RECIPE=classifier` (or `recipe = "classifier"` in
# robocar.toml) builds and runs the classifier's pipeline instead of the pilot's.

# %%
# Settings as both CLIs resolve them (edge/settings.py): environment > robocar.toml > default; the local
# workspace unless ROBOCAR_BACKEND=aws or ROBOCAR_ENDPOINT_URL says otherwise (ROBOCAR_LOCAL_ROOT picks it).
from pipelines import notebook

settings, aws = notebook.connect()

# %% [markdown]
# ## Build
#
# The same definition `robocar pipeline definition` prints: built by the SageMaker SDK without network or
# credentials, identical between builds.

# %%
import json

from pipelines import control
from pipelines.code_bundle import CodeBundle

code = CodeBundle(bucket=settings.bucket, prefix=settings.prefix)  # read now: upsert uploads what this names
definition_text = control.build_definition(settings, code=code)
definition = json.loads(definition_text)


def step_lines(steps, depth=1):
    for step in steps:
        yield "  " * depth + f"{step['Name']} ({step['Type']})"
        for branch in ("IfSteps", "ElseSteps"):
            yield from step_lines(step.get("Arguments", {}).get(branch, []), depth + 1)


print("parameters:")
for parameter in definition["Parameters"]:
    print(f"  {parameter['Name']:24} {parameter['Type']:8} default {parameter.get('DefaultValue')!r}")
print("steps:", *step_lines(definition["Steps"]), sep="\n")

# %% [markdown]
# ## Upsert
#
# Uploads each step's code bundle the definition names (named by its content, so unchanged code is not
# uploaded again), then creates the pipeline or updates it; an unchanged pipeline is left alone.

# %%
result = control.upsert(aws.sagemaker, aws.s3, definition=definition_text, settings=settings, code=code)
print(f"{result.action}: {result.pipeline_arn} ({result.code_objects_uploaded} code object(s) uploaded)")

# %% [markdown]
# ## Start
#
# Parameters are `NAME=VALUE`, as for `robocar pipeline start --param`, and are checked against the
# definition before anything is sent. Preprocess reads a dataset named by its content: the tubs under
# `<prefix>/raw/` are snapshotted into `<prefix>/datasets/<sha256>.manifest` first, as `robocar pipeline
# start` does (docs/datasets.md). New tubs start the pipeline by themselves (the stack's snapshot function);
# this is the manual way.

# %%
from pipelines import datasets

PARAMETERS = ["Epochs=10"]
parameters = control.parse_parameters(definition, PARAMETERS)
parameters, snapshot = datasets.start_parameters(
    aws.s3, definition, parameters, bucket=settings.bucket, prefix=settings.prefix
)
print(snapshot.line() if snapshot else "the given dataset")
execution_arn = control.start(aws.sagemaker, pipeline_name=settings.pipeline_name, parameters=parameters)
print(execution_arn)

# %% [markdown]
# ## Follow
#
# Poll until the execution ends, printing each change of status.

# %%
import time

TERMINAL = {"Succeeded", "Failed", "Stopped"}
POLL_SECONDS, TIMEOUT_SECONDS = 30, 4 * 3600
started, last = time.monotonic(), None
while True:
    execution = aws.sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    status = execution["PipelineExecutionStatus"]
    if status != last:
        print(f"[{time.monotonic() - started:7.0f}s] {status}")
        last = status
    if status in TERMINAL or time.monotonic() - started > TIMEOUT_SECONDS:
        break
    time.sleep(POLL_SECONDS)
if execution.get("FailureReason"):
    print("reason:", execution["FailureReason"])

recent = control.recent_executions(aws.sagemaker, settings.pipeline_name, limit=10)
(this_run,) = [e for e in recent if e["PipelineExecutionArn"] == execution_arn]
if this_run["Steps"] is None:
    print("this endpoint does not list execution steps (moto does not)")
else:
    for step in this_run["Steps"]:
        print(f"  {step['StepName']:20} {step['StepStatus']:10} {step.get('FailureReason', '')}")

# %% [markdown]
# ## Metrics
#
# The Register step points the model package at its evaluation report (`ModelMetrics`): the model's test-set
# metrics next to the constant-prediction baseline and the current champion evaluated on the same frames. No
# package means the quality gate stopped the run.

# %%
from pipelines.notebook import compared


def evaluation_report(package):
    return notebook.evaluation_report(aws.s3, package)


# %%
import pandas as pd
from IPython.display import display

newest = aws.sagemaker.list_model_packages(
    ModelPackageGroupName=settings.model_package_group,
    SortBy="CreationTime",
    SortOrder="Descending",
    MaxResults=1,
)["ModelPackageSummaryList"]
if not newest:
    print("no model package in the group: the quality gate did not let a model through")
else:
    package = aws.sagemaker.describe_model_package(ModelPackageName=newest[0]["ModelPackageArn"])
    print(package["ModelPackageArn"], package["ModelApprovalStatus"])
    if package["CreationTime"] < execution.get("CreationTime", package["CreationTime"]):
        print("note: registered before this execution started; this execution registered nothing new")
    report = evaluation_report(package)
    print(f"{report.get('test_frames')} test frames")
    display(pd.DataFrame(compared(report)))
