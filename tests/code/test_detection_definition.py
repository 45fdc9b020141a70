"""The detection recipe's definition: the image recipes' shape with its own scripts, trainer and mAP
gate; each step a request AWS accepts and the schema passed, with either trainer."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from test_classifier_definition import MXNET_IMAGE
from test_pipeline_definition import SETTINGS, all_steps, json_get

from pipelines.control import build_definition, quiet_sdk
from pipelines.detection.pipeline import get_pipeline
from pipelines.schema_check import schema_errors
from pipelines.step_requests import check_definition

DETECTION = replace(
    SETTINGS, recipe="detection", pipeline_name="robocar-detector", model_package_group="robocar-detectors"
)


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return json.loads(build_definition(DETECTION))


@pytest.fixture(scope="module")
def builtin() -> dict[str, Any]:
    with quiet_sdk():
        return json.loads(get_pipeline(training_algorithm="builtin").definition())


def test_the_steps_run_the_detection_scripts_and_gate_on_map(definition: dict[str, Any]) -> None:
    steps = all_steps(definition["Steps"])
    assert "MapTooLow" in steps and "AccuracyTooLow" not in steps
    entry = {
        name: steps[name]["Arguments"]["AppSpecification"]["ContainerEntrypoint"][-1]
        for name in ("Preprocess", "Evaluate", "CompileForEdge")
    }
    assert entry == {
        "Preprocess": "processing/preprocess_detection.py",
        "Evaluate": "processing/evaluate_detection.py",
        "CompileForEdge": "processing/compile_detection.py",
    }
    train = steps["Train"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == MXNET_IMAGE
    assert json.loads(train["HyperParameters"]["sagemaker_program"]) == "training/detector.py"
    assert train["HyperParameters"]["image_shape"] == {"Get": "Parameters.ImageSize"}  # one side, as SSD's
    gate = steps["CheckQuality"]["Arguments"]["Conditions"][0]
    assert gate["LeftValue"] == json_get("Evaluate", "EvaluationReport", "detection_metrics.map_50.value")
    assert gate["RightValue"] == {"Get": "Parameters.MapThreshold"}
    assert steps["Register"]["Arguments"]["ModelPackageGroupName"] == "robocar-detectors"
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert (defaults["Epochs"], defaults["ImageSize"]) == ("24", "128")


@pytest.mark.parametrize("which", ["gluon", "builtin"])
def test_every_step_request_is_one_aws_accepts(
    which: str, definition: dict[str, Any], builtin: dict[str, Any]
) -> None:
    chosen = definition if which == "gluon" else builtin
    assert [str(p) for p in check_definition(chosen)] == []
    assert schema_errors(chosen) == []


def test_the_builtin_trainer_is_ssd_on_resnet_50_fed_the_boxes_manifest(builtin: dict[str, Any]) -> None:
    train = all_steps(builtin["Steps"])["Train"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"].endswith("/object-detection:1")
    hps = train["HyperParameters"]
    assert (hps["base_network"], hps["use_pretrained_model"]) == ("resnet-50", "1")
    source = {c["ChannelName"]: c for c in train["InputDataConfig"]}["train"]["DataSource"]["S3DataSource"]
    assert source["AttributeNames"] == ["source-ref", "boxes"]
