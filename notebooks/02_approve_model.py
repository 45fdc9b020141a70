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
# # 2 · Approve (or reject) a model
#
# Pending packages with their metrics, compared with the champion (the newest Approved package) on the same
# test frames; then approve or reject one, with the reason recorded in the registry (`ApprovalDescription`).
# Approving is what releases a pilot to the cars: on AWS the stack's EventBridge rule runs the rollout
# function; locally the same rollout runs right here.

# %%
# Settings as both CLIs resolve them (edge/settings.py): environment > robocar.toml > default; the local
# workspace unless ROBOCAR_BACKEND=aws or ROBOCAR_ENDPOINT_URL says otherwise (ROBOCAR_LOCAL_ROOT picks it).
from pipelines import notebook

settings, aws = notebook.connect()

# %%
from pipelines.notebook import compared, metric_values


def evaluation_report(package):
    return notebook.evaluation_report(aws.s3, package)


# %% [markdown]
# ## Pending packages

# %%
import pandas as pd
from IPython.display import display

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
display(pd.DataFrame(rows).T)

# %% [markdown]
# ## The champion
#
# The newest Approved package is what the cars drive now. Each evaluation re-ran it on the candidate's own
# test frames, so the comparison is like for like.

# %%
approved = packages("Approved")
champion = describe(approved[0]) if approved else None
if champion is None:
    print("no champion yet: the first approved model becomes it")
else:
    print(f"champion: v{champion['ModelPackageVersion']} {champion['ModelPackageArn']}")
    print(f"  approved: {champion.get('ApprovalDescription', '')}")
    own = metric_values(evaluation_report(champion)["regression_metrics"])
    display(pd.DataFrame({"champion (its own test set)": own}))

# %% [markdown]
# ## Decide
#
# The suggestion: approve the newest pending package when it beats the baseline and the champion on the same
# frames (lower angle MAE). Override `DECISION` and `REASON` to decide otherwise; the reason is stored with
# the package.

# %%
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
print(f"v{candidate['ModelPackageVersion']}: {DECISION} ({REASON})")

# %%
aws.sagemaker.update_model_package(
    ModelPackageArn=candidate["ModelPackageArn"], ModelApprovalStatus=DECISION, ApprovalDescription=REASON
)
after = aws.sagemaker.describe_model_package(ModelPackageName=candidate["ModelPackageArn"])
print(after["ModelApprovalStatus"], "-", after.get("ApprovalDescription"))
if aws.is_local:  # what the stack's "approved" rule does on AWS, on the local workspace
    from pipelines.local.trigger import rollout_after_registry_change

    group = settings.model_package_group  # the recipe's component and thing group (a car runs one model)
    lines = rollout_after_registry_change(aws.local_root, aws.sagemaker, group, recipe=settings.recipe)
    print(*lines, sep="\n")
elif DECISION == "Approved":
    print("EventBridge runs the rollout function: a Greengrass component version, deployed to the cars")
