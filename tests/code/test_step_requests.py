"""Each step of a definition, resolved into the request SageMaker makes, is one AWS accepts.

The pilot's definition is built offline as ``robocar pipeline definition`` prints it; one test per step,
so a failure names the step, and its message names the member and AWS's reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines.step_requests import (
    SAMPLE_EXECUTION_ID,
    StepProblem,
    check_definition,
    main,
    step_requests,
)

PILOT_REQUEST_STEPS = ["Preprocess", "Train", "Evaluate", "CompileForEdge", "Register"]
BUCKET = "robocar-data-123456789012"
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-cpu-py312"


@pytest.fixture(scope="module")
def pilot(pilot_definition_text: str) -> dict[str, Any]:
    return json.loads(pilot_definition_text)


@pytest.fixture(scope="module")
def pilot_problems(pilot: dict[str, Any]) -> list[StepProblem]:
    return check_definition(pilot)


def test_every_request_step_of_the_pilot_is_checked(pilot: dict[str, Any]) -> None:
    assert [r.step for r in step_requests(pilot)] == PILOT_REQUEST_STEPS


@pytest.mark.parametrize("step", PILOT_REQUEST_STEPS)
def test_pilot_step_request_is_valid(step: str, pilot_problems: list[StepProblem]) -> None:
    problems = [str(p) for p in pilot_problems if p.step == step]
    assert problems == [], "AWS would refuse:\n" + "\n".join(problems)


# ---------------------------------------------------------------- small definitions
def _processing(name: str, instance_type: Any, output: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30}
            },
            "AppSpecification": {
                "ImageUri": IMAGE,
                "ContainerArguments": [
                    "--run",
                    {"Std:Join": {"On": "-", "Values": ["run", {"Get": "Execution.PipelineExecutionId"}]}},
                ],
            },
            "RoleArn": ROLE,
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "train",
                        "S3Output": {
                            "S3Uri": output,
                            "LocalPath": "/opt/ml/processing/output/train",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        },
    }


def _training(name: str, data: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": IMAGE},
            "RoleArn": ROLE,
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data}},
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/robocar/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    }


def _register(targets: Any) -> dict[str, Any]:
    compiled = {"Get": "Steps.Compile.PropertyFiles.CompiledArtifacts"}
    return {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "robocar-pilots",
            "InferenceSpecification": {
                "Containers": [
                    {"Image": IMAGE, "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}
                ]
            },
            "CustomerMetadataProperties": {
                "edge:targets": targets,
                "edge:rasp4b:sha256": {
                    "Std:JsonGet": {"PropertyFile": compiled, "Path": "targets.rasp4b.sha256"}
                },
                "angle_mae": {"Std:JsonGet": {"PropertyFile": compiled, "Path": "targets.rasp4b.angle_mae"}},
            },
        },
    }


def definition(targets: Any = "rasp4b") -> dict[str, Any]:
    """Compile -> Train -> (CheckData: Register | nothing), with the expressions pilots use."""
    run_output = {
        "Std:Join": {
            "On": "/",
            "Values": [f"s3://{BUCKET}/robocar", {"Get": "Execution.PipelineExecutionId"}, "train"],
        }
    }
    compile_ = _processing("Compile", {"Get": "Parameters.InstanceType"}, run_output)
    compile_["PropertyFiles"] = [
        {"PropertyFileName": "CompiledArtifacts", "OutputName": "train", "FilePath": "compiled.json"}
    ]
    train = _training(
        "Train", {"Get": "Steps.Compile.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
    )
    condition = {
        "Name": "CheckData",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {"Type": "Equals", "LeftValue": {"Get": "Parameters.Register"}, "RightValue": True}
            ],
            "IfSteps": [_register(targets)],
            "ElseSteps": [],
        },
    }
    return {
        "Version": "2020-12-01",
        "Parameters": [
            {"Name": "InstanceType", "Type": "String", "DefaultValue": "ml.m5.xlarge"},
            {"Name": "Register", "Type": "Boolean", "DefaultValue": True},
            {"Name": "EdgeTargets", "Type": "String", "DefaultValue": "jetson_nano,rasp4b"},
        ],
        "Steps": [compile_, train, condition],
    }


def test_arguments_resolve_into_the_requests_sagemaker_makes() -> None:
    requests = {r.step: r for r in step_requests(definition())}
    assert [(r.step, r.operation) for r in requests.values()] == [
        ("Compile", "CreateProcessingJob"),
        ("Train", "CreateTrainingJob"),
        ("Register", "CreateModelPackage"),  # inside the Condition's IfSteps
    ]
    assert re.fullmatch(r"[a-z0-9]{12}", SAMPLE_EXECUTION_ID)
    compile_ = requests["Compile"].request
    assert compile_["ProcessingJobName"] == f"pipelines-{SAMPLE_EXECUTION_ID}-Compile-k7m2p9"
    assert compile_["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"  # the default
    assert compile_["AppSpecification"]["ContainerArguments"] == ["--run", f"run-{SAMPLE_EXECUTION_ID}"]
    output = f"s3://{BUCKET}/robocar/{SAMPLE_EXECUTION_ID}/train"
    assert compile_["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == output
    train = requests["Train"].request
    assert train["TrainingJobName"] == f"pipelines-{SAMPLE_EXECUTION_ID}-Train-k7m2p9"
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == output  # a step's property
    register = requests["Register"].request
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == (
        f"s3://{BUCKET}/robocar/models/{train['TrainingJobName']}/output/model.tar.gz"
    )
    metadata = register["CustomerMetadataProperties"]
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["edge:rasp4b:sha256"])  # JsonGet of a *.sha256 path
    assert metadata["angle_mae"] == "0.05"  # a number, sent as the string the map holds
    assert check_definition(definition()) == []


def test_a_refused_member_is_reported_with_its_step_and_awss_reason() -> None:
    problems = check_definition(definition({"Get": "Parameters.EdgeTargets"}))
    assert [(p.step, p.operation) for p in problems] == [("Register", "CreateModelPackage")]
    assert problems[0].message.startswith(
        "Value 'jetson_nano,rasp4b' at 'customerMetadataProperties' failed to satisfy constraint: "
        "Map value must satisfy constraint: [Member must satisfy regular expression pattern: "
    )
    assert str(problems[0]).startswith("step Register (CreateModelPackage): Value 'jetson_nano,rasp4b'")


def test_parameter_values_replace_the_defaults() -> None:
    problems = check_definition(definition(), {"InstanceType": "ml.bogus.xlarge"})
    assert [(p.step, p.operation) for p in problems] == [("Compile", "CreateProcessingJob")]
    assert problems[0].message.startswith(
        "Value 'ml.bogus.xlarge' at 'processingResources.clusterConfig.instanceType' failed to satisfy "
        "constraint: Member must satisfy enum value set: ["
    )
    assert check_definition(definition({"Get": "Parameters.EdgeTargets"}), {"EdgeTargets": "rasp4b"}) == []


def test_botocores_own_checks_are_reported_too() -> None:
    broken = definition()
    del broken["Steps"][1]["Arguments"]["RoleArn"]
    broken["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = "1"
    assert [str(p) for p in check_definition(broken)] == [
        "step Compile (CreateProcessingJob): Invalid type for parameter "
        "ProcessingResources.ClusterConfig.InstanceCount, value: 1, type: <class 'str'>, "
        "valid types: <class 'int'>",
        'step Train (CreateTrainingJob): Missing required parameter in input: "RoleArn"',
    ]


def test_an_unresolvable_reference_is_a_problem_of_its_step() -> None:
    broken = definition()
    broken["Steps"][1]["Arguments"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = {
        "Get": "Steps.Compile.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"
    }
    (problem,) = [p for p in check_definition(broken) if p.step == "Train"]
    assert problem.message.startswith("cannot resolve its arguments:") and "'test'" in problem.message


def test_command_line_prints_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition({"Get": "Parameters.EdgeTargets"})))
    assert main([str(path)]) == 1
    assert capsys.readouterr().out.startswith(
        "step Register (CreateModelPackage): Value 'jetson_nano,rasp4b'"
    )
    assert main([str(path), "EdgeTargets=rasp4b"]) == 0
    assert capsys.readouterr().out == ""
