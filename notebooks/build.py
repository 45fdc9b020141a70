"""Write the notebooks from their cells below, so they stay tidy: no outputs, stable cell ids, one style.

    python notebooks/build.py          # (re)write notebooks/*.ipynb
    python notebooks/build.py --check  # exit 1 when a committed notebook differs from this file

Each notebook starts with the same setup cell: settings come from flags > environment > ``robocar.toml``
(``pipelines/settings.py``, as for the CLI) and the clients from ``edge.aws.clients``, so one notebook
runs against AWS, a moto server (``ROBOCAR_ENDPOINT_URL``) or the local workspace (``ROBOCAR_LOCAL_ROOT``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}

SETUP = """\
# Settings: flags > environment > robocar.toml (pipelines/settings.py), exactly as the CLI reads them.
import json
import os
from argparse import Namespace

from edge.aws import clients
from pipelines import settings as robocar_settings

LOCAL_ROOT = os.environ.get("ROBOCAR_LOCAL_ROOT")  # set: the local workspace instead of AWS
settings = robocar_settings.resolve(Namespace(), use_examples=bool(LOCAL_ROOT))
aws = clients(local_root=LOCAL_ROOT, region=settings.region, endpoint_url=settings.endpoint_url)
where = f"local workspace {aws.local_root}" if aws.is_local else (settings.endpoint_url or "AWS")
print(f"{settings.pipeline_name} in {settings.region} ({where})")
print(f"data s3://{settings.bucket}/{settings.prefix}/, registry group {settings.model_package_group}")"""

EVALUATION_REPORT = '''\
from edge.artifacts import parse_s3_uri


def evaluation_report(package):
    """The evaluation.json the Register step recorded in the package (ModelMetrics.ModelQuality)."""
    bucket, key = parse_s3_uri(package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    return json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def metric_values(metrics):
    """{"angle_mae": {"value": ...}, ...} -> {"angle_mae": value, ...} (None stays None)."""
    return {name: (value or {}).get("value") for name, value in (metrics or {}).items()}


def compared(report):
    """The model's metrics, the constant-prediction baseline's and the champion's (same test frames)."""
    columns = {
        "model": metric_values(report["regression_metrics"]),
        "baseline": metric_values((report.get("baseline") or {}).get("regression_metrics")),
    }
    if report.get("champion"):  # its metrics are None when it could not be evaluated on these frames
        columns["champion"] = metric_values(report["champion"].get("regression_metrics"))
    return columns'''

RUN_PIPELINE = [
    new_markdown_cell(
        "# 1 · Run the pipeline\n\n"
        "Build the definition (offline), upsert it, start an execution, follow it to the end and read the "
        "metrics of the model it registered. On AWS the steps run as SageMaker jobs; against the local "
        "workspace (`ROBOCAR_LOCAL_ROOT`) `start` runs them here, one after the other. The stack from "
        "`robocar infra deploy` provides the bucket, the role and the model package group; "
        "`robocar infra show` prints the `robocar.toml` lines for them."
    ),
    new_code_cell(SETUP),
    new_markdown_cell(
        "## Build\n\nThe same definition `robocar pipeline definition` prints: built by the SageMaker SDK "
        "without network or credentials, identical between builds."
    ),
    new_code_cell(
        """\
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
print("steps:", *step_lines(definition["Steps"]), sep="\\n")"""
    ),
    new_markdown_cell(
        "## Upsert\n\nUploads each step's code bundle the definition names (named by its content, so "
        "unchanged code is not uploaded again), then creates the pipeline or updates it; an unchanged "
        "pipeline is left alone."
    ),
    new_code_cell(
        """\
result = control.upsert(aws.sagemaker, aws.s3, definition=definition_text, settings=settings, code=code)
print(f"{result.action}: {result.pipeline_arn} ({result.code_objects_uploaded} code object(s) uploaded)")"""
    ),
    new_markdown_cell(
        "## Start\n\nParameters are `NAME=VALUE`, as for `robocar pipeline start --param`, and are checked "
        "against the definition before anything is sent. Preprocess reads a dataset named by its content: "
        "the tubs under `<prefix>/raw/` are snapshotted into `<prefix>/datasets/<sha256>.manifest` first, as "
        "`robocar pipeline start` does (docs/datasets.md). New tubs start the pipeline by themselves (the "
        "stack's snapshot function); this is the manual way."
    ),
    new_code_cell(
        """\
from pipelines import datasets

PARAMETERS = ["Epochs=10"]
parameters = control.parse_parameters(definition, PARAMETERS)
parameters, snapshot = datasets.start_parameters(
    aws.s3, definition, parameters, bucket=settings.bucket, prefix=settings.prefix
)
print(snapshot.line() if snapshot else "the given dataset")
execution_arn = control.start(aws.sagemaker, pipeline_name=settings.pipeline_name, parameters=parameters)
print(execution_arn)"""
    ),
    new_markdown_cell("## Follow\n\nPoll until the execution ends, printing each change of status."),
    new_code_cell(
        """\
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
        print(f"  {step['StepName']:20} {step['StepStatus']:10} {step.get('FailureReason', '')}")"""
    ),
    new_markdown_cell(
        "## Metrics\n\nThe Register step points the model package at its evaluation report "
        "(`ModelMetrics`): the model's test-set metrics next to the constant-prediction baseline and the "
        "current champion evaluated on the same frames. No package means the quality gate stopped the run."
    ),
    new_code_cell(EVALUATION_REPORT),
    new_code_cell(
        """\
import pandas as pd

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
    display(pd.DataFrame(compared(report)))"""
    ),
]

APPROVE_MODEL = [
    new_markdown_cell(
        "# 2 · Approve (or reject) a model\n\n"
        "Pending packages with their metrics, compared with the champion (the newest Approved package) on "
        "the same test frames; then approve or reject one, with the reason recorded in the registry "
        "(`ApprovalDescription`). Approving is what releases a pilot to the cars: on AWS the stack's "
        "EventBridge rule runs the rollout function; locally the same rollout runs right here."
    ),
    new_code_cell(SETUP),
    new_code_cell(EVALUATION_REPORT),
    new_markdown_cell("## Pending packages"),
    new_code_cell(
        """\
import pandas as pd

from edge.agent import edge_targets_of


def packages(status):
    return aws.sagemaker.list_model_packages(
        ModelPackageGroupName=settings.model_package_group,
        ModelApprovalStatus=status,
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]


def describe(summary):
    return aws.sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])


pending = [describe(summary) for summary in packages("PendingManualApproval")]
rows = {}
for package in pending:
    report = evaluation_report(package)
    columns = compared(report)
    rows[f"v{package['ModelPackageVersion']}"] = {
        **columns["model"],
        "baseline angle_mae": columns["baseline"].get("angle_mae"),
        "champion angle_mae": columns.get("champion", {}).get("angle_mae"),
        "test frames": report.get("test_frames"),
        "edge targets": " ".join(edge_targets_of(package.get("CustomerMetadataProperties", {}))),
        "created": package["CreationTime"],
    }
print(f"{len(pending)} pending package(s)")
display(pd.DataFrame(rows).T)"""
    ),
    new_markdown_cell(
        "## The champion\n\nThe newest Approved package is what the cars drive now. Each evaluation "
        "re-ran it on the candidate's own test frames, so the comparison is like for like."
    ),
    new_code_cell(
        """\
approved = packages("Approved")
champion = describe(approved[0]) if approved else None
if champion is None:
    print("no champion yet: the first approved model becomes it")
else:
    print(f"champion: v{champion['ModelPackageVersion']} {champion['ModelPackageArn']}")
    print(f"  approved: {champion.get('ApprovalDescription', '')}")
    own = metric_values(evaluation_report(champion)["regression_metrics"])
    display(pd.DataFrame({"champion (its own test set)": own}))"""
    ),
    new_markdown_cell(
        "## Decide\n\nThe suggestion: approve the newest pending package when it beats the baseline and "
        "the champion on the same frames (lower angle MAE). Override `DECISION` and `REASON` to decide "
        "otherwise; the reason is stored with the package."
    ),
    new_code_cell(
        """\
if not pending:
    raise SystemExit("nothing pending: run the pipeline first (notebook 1)")
candidate = pending[0]
report = evaluation_report(candidate)
columns = compared(report)
mae = columns["model"]["angle_mae"]
baseline = columns["baseline"].get("angle_mae")
champion_mae = columns.get("champion", {}).get("angle_mae")
beats_baseline = baseline is None or mae < baseline
beats_champion = champion_mae is None or mae < champion_mae
DECISION = "Approved" if beats_baseline and beats_champion else "Rejected"
REASON = (
    f"angle MAE {mae:.4f} on {report.get('test_frames')} test frames; baseline {baseline}; "
    f"champion {champion_mae if champion_mae is not None else 'none'} on the same frames"
)
print(f"v{candidate['ModelPackageVersion']}: {DECISION} ({REASON})")"""
    ),
    new_code_cell(
        """\
aws.sagemaker.update_model_package(
    ModelPackageArn=candidate["ModelPackageArn"], ModelApprovalStatus=DECISION, ApprovalDescription=REASON
)
after = aws.sagemaker.describe_model_package(ModelPackageName=candidate["ModelPackageArn"])
print(after["ModelApprovalStatus"], "-", after.get("ApprovalDescription"))
if aws.is_local:  # what the stack's "approved" rule does on AWS, on the local workspace
    from pipelines.local.trigger import rollout_after_registry_change

    lines = rollout_after_registry_change(aws.local_root, aws.sagemaker, settings.model_package_group)
    print(*lines, sep="\\n")
elif DECISION == "Approved":
    print("EventBridge runs the rollout function: a Greengrass component version, deployed to the cars")"""
    ),
]

EDGE = [
    new_markdown_cell(
        "# 3 · What the car does with the approved model\n\n"
        "The car runs the device agent (`robocar-edge`, `edge/`): it asks the registry for the newest "
        "Approved package that has an artifact for its target, downloads it, checks its SHA-256 against "
        "the registry, unpacks it safely, smoke-tests it and swaps it in atomically, keeping the previous "
        "model to roll back to. On AWS it arrives as a Greengrass component version, which the rollout "
        "function created on approval. This notebook plays the car."
    ),
    new_code_cell(SETUP),
    new_markdown_cell("## What the registry offers this car"),
    new_code_cell(
        """\
from edge import agent

TARGET = os.environ.get("ROBOCAR_EDGE_TARGET", "rasp4b")
candidate = agent.find_newest(aws.sagemaker, settings.model_package_group, TARGET)
if candidate is None:
    raise SystemExit(f"no Approved package has an artifact for {TARGET}: approve one first (notebook 2)")
print(f"v{candidate.version} {candidate.model_package_arn}")
print(f"  artifact {candidate.artifact_uri}")
print(f"  sha256   {candidate.sha256}")"""
    ),
    new_markdown_cell(
        "## The Greengrass component the rollout created\n\nThe recipe pins the package and the "
        "artifact's URI; Greengrass computes the artifact's digest when the version is created and checks "
        "it on the car, and the agent checks the SHA-256 again against the registry."
    ),
    new_code_cell(
        """\
from edge.greengrass import component

description = aws.sagemaker.describe_model_package(ModelPackageName=candidate.model_package_arn)
recipe = component.render_recipe(component.load_template(), description, TARGET)
print(recipe["ComponentName"], recipe["ComponentVersion"])
print(json.dumps(recipe["ComponentConfiguration"]["DefaultConfiguration"], indent=2))
print(recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"])"""
    ),
    new_markdown_cell(
        "## The car's check\n\nOne pass of the agent into a scratch folder (`ROBOCAR_EDGE_ROOT` to choose "
        "it): find, download, verify, unpack, smoke-test, swap."
    ),
    new_code_cell(
        """\
import tempfile
from pathlib import Path

car_root = Path(os.environ.get("ROBOCAR_EDGE_ROOT") or tempfile.mkdtemp(prefix="robocar-car-"))
car = agent.Agent(
    car_root, group=settings.model_package_group, target=TARGET, sagemaker=aws.sagemaker, s3=aws.s3
)
result = car.check()
print(result.outcome, "-", result.detail)
print("current ->", car.current_name())
print(json.dumps(car.load_state()["last_check"], indent=2))"""
    ),
    new_markdown_cell(
        "## Driving\n\nThe installed pilot on a camera frame: the same preprocessing as training "
        "(`edge/frames.py`), then angle and throttle for the actuators."
    ),
    new_code_cell(
        """\
from edge import drive, frames

pilot = drive.open_pilot(car.current_dir())
image = frames.decode_image(agent.smoke_frame_bytes())  # the frame the smoke test uses
angle, throttle = pilot(image)
print(f"angle {angle:+.3f}  throttle {throttle:+.3f}")
print("a second check finds nothing newer:", car.check().outcome)"""
    ),
]

NOTEBOOKS = {
    "01_run_pipeline.ipynb": RUN_PIPELINE,
    "02_approve_model.ipynb": APPROVE_MODEL,
    "03_edge.ipynb": EDGE,
}


def render(name: str) -> str:
    """The notebook's JSON text: stable cell ids (name + position), no outputs, no execution counts."""
    cells = []
    for index, cell in enumerate(NOTEBOOKS[name]):
        cell = nbformat.from_dict(dict(cell))
        cell["id"] = f"{name.split('_')[0]}-{index:02d}"
        cells.append(cell)
    notebook = new_notebook(cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a notebook differs")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path, text = args.out / name, render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
