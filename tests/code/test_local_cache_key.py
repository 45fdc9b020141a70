"""The local cache key is AWS's: each request attribute either changes it or not, per step type, as documented
(https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html); contents never do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import sample_pipeline as sample

from pipelines.local import run_local
from pipelines.local.executor import CACHE_KEY_ATTRIBUTES, PlannedStep, cache_key
from pipelines.local.expressions import Scope, resolve
from pipelines.local.s3 import LocalS3Client

# A resolved request of each type, as the executor keys it (the sample's, with every member present).
SCOPE = Scope(
    parameters={"InputDataUrl": sample.MANIFEST_URI, "Epochs": "2", "ModelType": "linear",
                "PreprocessSeconds": 0.0},
    execution={"PipelineExecutionId": "q9x1b2c3d4e5"},
    steps={"Preprocess": {"ProcessingOutputConfig": {"Outputs": [{"OutputName": "train", "S3Output": {
        "S3Uri": f"s3://{sample.BUCKET}/sample/preprocess/q9x1b2c3d4e5/train"}}]}}},
)  # fmt: skip
STEPS = {step["Name"]: step for step in sample.definition()["Steps"]}
CHANGED = {"changed": "value"}


def resolved(name: str) -> tuple[PlannedStep, dict[str, Any]]:
    spec = STEPS[name]
    arguments = resolve(spec["Arguments"], SCOPE)
    arguments.update(  # members the sample leaves out: they must not matter either way
        {
            "Processing": {"NetworkConfig": {"EnableNetworkIsolation": False}, "StoppingCondition": {}},
            "Training": {"CheckpointConfig": {"S3Uri": f"s3://{sample.BUCKET}/checkpoints"}, "Tags": []},
        }[spec["Type"]]
    )
    return PlannedStep(name, spec["Type"], spec), arguments


NOT_KEYED = {
    "Processing": ("ProcessingOutputConfig", "ProcessingResources", "RoleArn", "StoppingCondition",
                   "NetworkConfig"),
    "Training": ("OutputDataConfig", "ResourceConfig", "RoleArn", "StoppingCondition", "Tags"),
}  # fmt: skip
CASES = [
    (step, attribute, attribute in CACHE_KEY_ATTRIBUTES[kind])
    for step, kind in (("Preprocess", "Processing"), ("Train", "Training"))
    for attribute in (*CACHE_KEY_ATTRIBUTES[kind], *NOT_KEYED[kind])
]


def test_the_key_attributes_are_the_documented_ones() -> None:
    assert CACHE_KEY_ATTRIBUTES == {
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


@pytest.mark.parametrize(("step", "attribute", "keyed"), CASES, ids=[f"{s}.{a}" for s, a, _ in CASES])
def test_each_attribute_changes_the_key_or_not(step: str, attribute: str, keyed: bool) -> None:
    planned, arguments = resolved(step)
    changed = copy.deepcopy(arguments)
    changed[attribute] = CHANGED
    assert (cache_key(planned, changed) != cache_key(planned, arguments)) is keyed


def test_a_changed_environment_variable_or_input_path_changes_the_key() -> None:
    planned, arguments = resolved("Preprocess")
    environment = copy.deepcopy(arguments)
    environment["Environment"]["PYTHONUNBUFFERED"] = "0"
    data = copy.deepcopy(arguments)
    data["ProcessingInputs"][1]["S3Input"]["S3Uri"] = f"s3://{sample.BUCKET}/sample/datasets/other.manifest"
    output = copy.deepcopy(arguments)
    output["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] += "-elsewhere"
    property_files = PlannedStep(planned.name, planned.type, {**planned.spec, "PropertyFiles": [CHANGED]})
    key = cache_key(planned, arguments)
    assert cache_key(planned, environment) != key and cache_key(planned, data) != key
    assert cache_key(planned, output) == key  # outputs are execution-scoped: never keyed
    assert cache_key(property_files, arguments) == key  # not a request attribute


def test_new_objects_under_an_unchanged_prefix_are_a_cache_hit(tmp_path: Path) -> None:
    """The code input is an S3Prefix: an object added under it changes no path, so the cache holds (AWS)."""
    s3 = LocalS3Client(tmp_path)
    sample.upload_sample(s3)
    first = run_local(sample.definition(), tmp_path, pipeline_name="sample")
    s3.put_object(Bucket=sample.BUCKET, Key=f"{sample.CODE_PREFIX}/notes.txt", Body=b"new")
    s3.put_object(Bucket=sample.BUCKET, Key="sample/raw/tub/record_7.json", Body=b"{}")
    second = run_local(sample.definition(), tmp_path, pipeline_name="sample")
    assert second.steps["Preprocess"].cache_hit_from == first.arn
    assert second.steps["Train"].cache_hit_from == first.arn


def test_a_hit_reads_property_files_from_the_outputs_as_the_definition_names_them_now(tmp_path: Path) -> None:
    """PropertyFiles are not in the key: a hit whose step now declares one reads it from earlier outputs."""
    sample.upload_sample(LocalS3Client(tmp_path))
    definition = sample.definition()
    definition["Steps"] = definition["Steps"][:1]  # Preprocess alone
    first = run_local(definition, tmp_path, pipeline_name="sample")
    definition["Steps"][0]["PropertyFiles"] = [
        {"PropertyFileName": "Frames", "OutputName": "test", "FilePath": "frames.json"}
    ]
    split = {
        "Std:JsonGet": {"PropertyFile": {"Get": "Steps.Preprocess.PropertyFiles.Frames"}, "Path": "split"}
    }
    definition["Steps"].append(
        {
            "Name": "ReadsFrames",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [{"Type": "Equals", "LeftValue": split, "RightValue": "test"}],
                "IfSteps": [],
                "ElseSteps": [],
            },
        }
    )
    again = run_local(definition, tmp_path, pipeline_name="sample")
    assert again.status == "Succeeded", again.failure_reason
    assert again.steps["Preprocess"].cache_hit_from == first.arn
    assert again.steps["ReadsFrames"].outcome == "True"
