"""The classifier's definition: built offline, deterministic, each step a request AWS accepts, the schema
passed outside its named gaps, with either trainer."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from test_pipeline_definition import SETTINGS, all_steps, inputs, json_get, output_get

from pipelines.classifier.pipeline import get_pipeline
from pipelines.control import build_definition, parse_parameters
from pipelines.parameters import ParameterError
from pipelines.schema_check import schema_errors
from pipelines.step_requests import check_definition
from steps.containers import mxnet_image_tag

CLASSIFIER = replace(
    SETTINGS,
    recipe="classifier",
    pipeline_name="robocar-classifier",
    model_package_group="robocar-classifiers",
)
# the project's MXNet image (infra/images/mxnet), in the role's account, tagged by its pins
MXNET_IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/robocar-mxnet:{mxnet_image_tag()}"
BUILTIN_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"


@pytest.fixture(scope="module")
def text() -> str:
    return build_definition(CLASSIFIER)


@pytest.fixture(scope="module")
def definition(text: str) -> dict[str, Any]:
    return json.loads(text)


@pytest.fixture(scope="module")
def builtin() -> dict[str, Any]:
    from pipelines.control import quiet_sdk

    with quiet_sdk():
        return json.loads(get_pipeline(training_algorithm="builtin").definition())


def test_the_recipe_chooses_the_pipeline_and_the_build_is_deterministic(
    text: str, pilot_definition_text: str
) -> None:
    assert build_definition(CLASSIFIER) == text
    assert json.loads(text)["Parameters"] != json.loads(pilot_definition_text)["Parameters"]


def test_steps_and_wiring(definition: dict[str, Any]) -> None:
    steps = all_steps(definition["Steps"])
    assert {name: step["Type"] for name, step in steps.items()} == {
        "Preprocess": "Processing", "Train": "Training", "Evaluate": "Processing",
        "CheckQuality": "Condition", "ShouldRegister": "Condition", "CompileForEdge": "Processing",
        "Register": "RegisterModel", "AccuracyTooLow": "Fail",
    }  # fmt: skip
    preprocess = steps["Preprocess"]["Arguments"]
    assert preprocess["AppSpecification"]["ContainerArguments"][-4:-2] == [
        "--image-size",
        {"Get": "Parameters.ImageSize"},
    ]
    tubs = next(i for i in preprocess["ProcessingInputs"] if i["InputName"] == "tubs")["S3Input"]
    assert tubs["S3DataDistributionType"] == "FullyReplicated"  # manifests and photos together
    train = steps["Train"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == MXNET_IMAGE
    assert json.loads(train["HyperParameters"]["sagemaker_program"]) == "training/classifier.py"
    assert train["HyperParameters"]["image_shape"] == {
        "Std:Join": {
            "On": ",",
            "Values": ["3", {"Get": "Parameters.ImageSize"}, {"Get": "Parameters.ImageSize"}],
        }
    }
    for name in ("Evaluate", "CompileForEdge"):
        step = steps[name]["Arguments"]
        assert step["AppSpecification"]["ImageUri"] == MXNET_IMAGE, name
        assert inputs(steps[name])["train"] == output_get("Preprocess", "train")
    gate = steps["CheckQuality"]["Arguments"]["Conditions"][0]
    assert gate["Type"] == "GreaterThanOrEqualTo"
    assert gate["LeftValue"] == json_get(
        "Evaluate", "EvaluationReport", "multiclass_classification_metrics.accuracy.value"
    )
    assert gate["RightValue"] == {"Get": "Parameters.AccuracyThreshold"}
    register = steps["Register"]["Arguments"]
    assert register["ModelPackageGroupName"] == "robocar-classifiers"
    container = register["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == MXNET_IMAGE  # the endpoint serves from the project's image (its `serve`)
    assert "application/x-image" in register["InferenceSpecification"]["SupportedContentTypes"]


@pytest.mark.parametrize("which", ["gluon", "builtin"])
def test_every_step_request_is_one_aws_accepts(
    which: str, definition: dict[str, Any], builtin: dict[str, Any]
) -> None:
    chosen = definition if which == "gluon" else builtin
    problems = [str(p) for p in check_definition(chosen)]
    assert problems == [], "AWS would refuse:\n" + "\n".join(problems)
    assert schema_errors(chosen) == []


def test_the_builtin_trainer_reads_the_augmented_manifest_in_pipe_mode(builtin: dict[str, Any]) -> None:
    train = all_steps(builtin["Steps"])["Train"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == BUILTIN_IMAGE
    assert train["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    hps = train["HyperParameters"]
    assert not any(key.startswith("sagemaker_") for key in hps)  # the algorithm refuses script mode's
    assert (hps["num_layers"], hps["use_pretrained_model"]) == ("18", "1")
    assert hps["num_classes"] == {
        "Std:Join": {"On": "", "Values": [json_get("Preprocess", "DataReport", "builtin.num_classes")]}
    }
    channels = {c["ChannelName"]: c for c in train["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    source = channels["train"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "AugmentedManifestFile"
    assert source["AttributeNames"] == ["source-ref", "class"]
    assert source["S3Uri"] == {
        "Std:Join": {"On": "/", "Values": [output_get("Preprocess", "train"), "train.manifest"]}
    }
    assert channels["train"]["RecordWrapperType"] == "RecordIO"
    parameter = next(p for p in builtin["Parameters"] if p["Name"] == "TrainingAlgorithm")
    assert (parameter["DefaultValue"], parameter["EnumValues"]) == ("builtin", ["builtin"])


def test_a_start_asking_for_the_other_trainer_is_refused(definition: dict[str, Any]) -> None:
    assert parse_parameters(definition, ["TrainingAlgorithm=gluon"]) == [
        {"Name": "TrainingAlgorithm", "Value": "gluon"}
    ]
    with pytest.raises(ParameterError, match="TrainingAlgorithm"):
        parse_parameters(definition, ["TrainingAlgorithm=builtin"])


def test_an_unknown_trainer_is_refused_when_building() -> None:
    with pytest.raises(ValueError, match="training_algorithm must be one of gluon, builtin"):
        get_pipeline(training_algorithm="resnet")
