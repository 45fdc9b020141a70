"""The definition: eight steps wired by data, content-addressed code and data, offline and deterministic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from definition_fixtures import PILOT_SETTINGS

from pipelines.code_bundle import CodeBundle
from pipelines.control import build_definition, registered_edge_targets

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "robocar_definition.json"
SETTINGS = PILOT_SETTINGS


@pytest.fixture(scope="module")
def text(pilot_definition_text: str) -> str:
    return pilot_definition_text


@pytest.fixture(scope="module")
def definition(text: str) -> dict[str, Any]:
    return json.loads(text)


def all_steps(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for step in steps:
        found[step["Name"]] = step
        if step["Type"] == "Condition":
            found.update(all_steps(step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"]))
    return found


def inputs(step: dict[str, Any]) -> dict[str, Any]:
    return {i["InputName"]: i["S3Input"]["S3Uri"] for i in step["Arguments"]["ProcessingInputs"]}


def output_get(step: str, name: str) -> dict[str, str]:
    return {"Get": f"Steps.{step}.ProcessingOutputConfig.Outputs['{name}'].S3Output.S3Uri"}


def json_get(step: str, report: str, path: str) -> dict[str, Any]:
    return {"Std:JsonGet": {"PropertyFile": {"Get": f"Steps.{step}.PropertyFiles.{report}"}, "Path": path}}


CODE_URI = r"s3://robocar-data-123456789012/robocar/code/[0-9a-f]{64}/"
TRAINED_MODEL = {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}


def test_steps_and_types(definition: dict[str, Any]) -> None:
    types = {name: step["Type"] for name, step in all_steps(definition["Steps"]).items()}
    assert types == {
        "Preprocess": "Processing",
        "Train": "Training",
        "Evaluate": "Processing",
        "CheckQuality": "Condition",
        "ShouldRegister": "Condition",
        "CompileForEdge": "Processing",
        "Register": "RegisterModel",
        "AngleMaeTooHigh": "Fail",
    }


def test_parameters_and_defaults(definition: dict[str, Any]) -> None:
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert {n: p["Type"] for n, p in params.items()} == {
        "InputDataUrl": "String",
        "ProcessingInstanceType": "String",
        "ProcessingInstanceCount": "Integer",
        "TrainingInstanceType": "String",
        "ModelType": "String",
        "Epochs": "String",
        "AngleMaeThreshold": "Float",
        "ModelApprovalStatus": "String",
        "EdgeTargets": "String",
    }
    assert params["ModelType"]["EnumValues"] == ["linear", "categorical"]
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["EdgeTargets"]["DefaultValue"] == "jetson_nano,rasp4b"
    # no dataset by default: every start names a snapshot (pipelines/datasets.py)
    no_snapshot = "s3://robocar-data-123456789012/robocar/datasets/snapshot-required.manifest"
    assert params["InputDataUrl"]["DefaultValue"] == no_snapshot


def test_preprocess_reads_the_input_parameter_and_code(definition: dict[str, Any]) -> None:
    step = all_steps(definition["Steps"])["Preprocess"]
    found = inputs(step)
    assert re.fullmatch(CODE_URI, found.pop("code"))
    assert found == {"tubs": {"Get": "Parameters.InputDataUrl"}}
    types = {i["InputName"]: i["S3Input"]["S3DataType"] for i in step["Arguments"]["ProcessingInputs"]}
    assert types == {"code": "S3Prefix", "tubs": "ManifestFile"}  # the data is a dataset manifest
    assert step["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
    app = step["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/processing/input/code/processing/bootstrap.py",
        "processing/preprocess.py",
    ]
    outputs = {o["OutputName"] for o in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]}
    assert outputs == {"train", "validation", "test", "report"}
    assert step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {
        "Get": "Parameters.ProcessingInstanceType"
    }


def test_train_reads_preprocess_outputs_and_parameters(definition: dict[str, Any]) -> None:
    args = all_steps(definition["Steps"])["Train"]["Arguments"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in args["InputDataConfig"]}
    assert channels == {"train": output_get("Preprocess", "train"),
                        "validation": output_get("Preprocess", "validation")}  # fmt: skip
    hps = args["HyperParameters"]
    assert hps["model-type"] == {"Get": "Parameters.ModelType"}
    assert hps["epochs"] == {"Get": "Parameters.Epochs"}
    assert json.loads(hps["sagemaker_program"]) == "training/train.py"
    assert re.fullmatch(CODE_URI + "sourcedir.tar.gz", json.loads(hps["sagemaker_submit_directory"]))
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    names = {m["Name"] for m in args["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"train:loss", "validation:loss"} <= names


def test_evaluate_reads_the_model_and_test_split(definition: dict[str, Any]) -> None:
    step = all_steps(definition["Steps"])["Evaluate"]
    found = inputs(step)
    assert found["model"] == TRAINED_MODEL
    assert found["test"] == output_get("Preprocess", "test")
    arguments = step["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--model-s3-uri") + 1] == TRAINED_MODEL  # already registered?
    # the champion is what the car with the first EdgeTargets target installs (contracts section 4)
    assert arguments[arguments.index("--edge-targets") + 1] == {"Get": "Parameters.EdgeTargets"}
    assert "CacheConfig" not in step  # the registry it reads changes between executions
    assert step["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]


def test_gate_compares_angle_mae_with_the_threshold_and_registers_a_model_once(
    definition: dict[str, Any],
) -> None:
    good_enough = {
        "Type": "LessThanOrEqualTo",
        "LeftValue": json_get("Evaluate", "EvaluationReport", "regression_metrics.angle_mae.value"),
        "RightValue": {"Get": "Parameters.AngleMaeThreshold"},
    }
    steps = all_steps(definition["Steps"])
    gate = steps["CheckQuality"]["Arguments"]
    assert gate["Conditions"] == [good_enough]
    assert gate["IfSteps"] == []
    assert [s["Name"] for s in gate["ElseSteps"]] == ["AngleMaeTooHigh"]
    should_register = steps["ShouldRegister"]["Arguments"]
    not_registered = {
        "Type": "Equals",
        "LeftValue": json_get("Evaluate", "EvaluationReport", "already_registered"),
        "RightValue": False,
    }
    assert should_register["Conditions"] == [good_enough, not_registered]
    assert [s["Name"] for s in should_register["IfSteps"]] == ["CompileForEdge", "Register"]
    assert should_register["ElseSteps"] == []  # already registered: nothing to do
    assert [s["Name"] for s in definition["Steps"]][-2:] == ["CheckQuality", "ShouldRegister"]  # not nested
    message = gate["ElseSteps"][0]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert json_get("Evaluate", "EvaluationReport", "regression_metrics.angle_mae.value") in message
    assert {"Get": "Parameters.AngleMaeThreshold"} in message


def test_compile_runs_before_register_with_the_targets_parameter(definition: dict[str, Any]) -> None:
    steps = all_steps(definition["Steps"])
    compile_args = steps["CompileForEdge"]["Arguments"]
    assert inputs(steps["CompileForEdge"])["model"] == TRAINED_MODEL
    container_args = compile_args["AppSpecification"]["ContainerArguments"]
    assert container_args[container_args.index("--targets") + 1] == {"Get": "Parameters.EdgeTargets"}
    assert steps["Register"]["DependsOn"] == ["CompileForEdge"]


def test_register_carries_model_metrics_and_every_edge_artifact(definition: dict[str, Any]) -> None:
    args = all_steps(definition["Steps"])["Register"]["Arguments"]
    assert args["ModelPackageGroupName"] == "robocar-pilots"
    assert args["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert args["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == TRAINED_MODEL
    statistics = args["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]["Std:Join"]
    assert statistics["Values"] == [output_get("Evaluate", "evaluation"), "evaluation.json"]
    assert "AdditionalInferenceSpecifications" not in args  # no SDK emits it in a RegisterModel step
    metadata = args["CustomerMetadataProperties"]
    assert len(metadata) == 6
    for target in ("jetson_nano", "rasp4b"):
        assert metadata[f"edge:{target}:uri"]["Std:Join"]["Values"] == [
            output_get("CompileForEdge", "compiled"),
            target,
            "model.tar.gz",
        ]
        for field in ("sha256", "runtime"):
            assert metadata[f"edge:{target}:{field}"] == json_get(
                "CompileForEdge", "CompiledArtifacts", f"targets.{target}.{field}"
            )
    assert registered_edge_targets(definition) == ("jetson_nano", "rasp4b")


def test_edge_targets_choose_the_register_slots() -> None:
    definition = json.loads(build_definition(SETTINGS, "rasp3b"))
    register = all_steps(definition["Steps"])["Register"]["Arguments"]
    assert [k for k in register["CustomerMetadataProperties"] if k.endswith(":uri")] == ["edge:rasp3b:uri"]
    with pytest.raises(ValueError, match="unknown Neo target device.*raspberry9"):
        build_definition(SETTINGS, "rasp3b,raspberry9")


def test_code_is_content_addressed(definition: dict[str, Any], tmp_path: Path) -> None:
    """Each step names its own bundle (its entry script's), addressed by that bundle's content."""
    code = CodeBundle("robocar-data-123456789012", "robocar")
    steps = all_steps(definition["Steps"])
    named = {}
    for name, step in steps.items():
        if step["Type"] == "Processing":
            script = step["Arguments"]["AppSpecification"]["ContainerEntrypoint"][-1]
            named[name] = (code.step(script).uri, inputs(step)["code"])
        elif step["Type"] == "Training":
            hps = step["Arguments"]["HyperParameters"]
            script = json.loads(hps["sagemaker_program"])
            named[name] = (code.step(script).uri, json.loads(hps["sagemaker_submit_directory"]))
    assert sorted(named) == ["CompileForEdge", "Evaluate", "Preprocess", "Train"]
    for name, (expected, found) in named.items():
        assert found == expected and re.match(CODE_URI, found), name
    assert len({found for _, found in named.values()}) == 4
    # Another tree with one byte changed gets other addresses; the same tree the same ones.
    for name, data in code.step("processing/preprocess.py").files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    copy = CodeBundle("robocar-data-123456789012", "robocar", root=tmp_path)
    assert copy.step("processing/preprocess.py").uri == code.step("processing/preprocess.py").uri
    (tmp_path / "edge" / "frames.py").write_bytes(
        code.step("processing/preprocess.py").files["edge/frames.py"] + b"\n"
    )
    copy = CodeBundle("robocar-data-123456789012", "robocar", root=tmp_path)
    assert copy.step("processing/preprocess.py").uri != code.step("processing/preprocess.py").uri


def normalised_for_golden(text: str) -> str:
    return re.sub(r"/code/[0-9a-f]{64}/", "/code/<sha256>/", text)


def test_every_output_is_under_the_execution_id(definition: dict[str, Any]) -> None:
    """A later execution never overwrites what a registered package points at (contracts section 0)."""
    steps = all_steps(definition["Steps"])
    processing = [s["Arguments"] for s in steps.values() if s["Type"] == "Processing"]
    training = [s["Arguments"] for s in steps.values() if s["Type"] == "Training"]
    scoped = [o["S3Output"]["S3Uri"] for a in processing for o in a["ProcessingOutputConfig"]["Outputs"]]
    scoped += [a["OutputDataConfig"]["S3OutputPath"] for a in training]
    assert len(scoped) == 7  # 3 splits and a report, the model, the evaluation, the compiled artifacts
    for uri in scoped:
        values = uri["Std:Join"]["Values"]
        assert uri["Std:Join"]["On"] == "/" and values[1] == {"Get": "Execution.PipelineExecutionId"}, uri
    # Neo's own files go under its input's digest: the step's arguments (part of SageMaker's cache key)
    # carry no execution id, so compiling the same model again is a cache hit.
    for step in processing:
        assert "Execution.PipelineExecutionId" not in json.dumps(step["AppSpecification"]), step
    neo = steps["CompileForEdge"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert neo[neo.index("--output-s3-uri") + 1] == "s3://robocar-data-123456789012/robocar/edge/neo"


def test_golden_definition(text: str) -> None:
    """The whole definition, byte for byte (the code hash abstracted). Regenerate: UPDATE_GOLDEN=1."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(normalised_for_golden(text))
    assert normalised_for_golden(text) == GOLDEN.read_text()


# The CLI's main in a fresh process (pytest's handlers would hide it), then the process's logging.
DEFINITION_THEN_LOGGING = """
import logging, sys
from pipelines.cli import main
code = main(["pipeline", "definition"])
root = logging.getLogger()
with open(sys.argv[1], "w") as facts:
    facts.write(f"{code} {len(root.handlers)} {root.level} {logging.root.manager.disable}")
"""


def test_definition_command_is_offline_byte_identical_and_leaves_logging_alone(
    offline_subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """`robocar pipeline definition` in two fresh processes with fake credentials and no network: the same
    bytes; and the SDK's import-time basicConfig is undone (the second process reports its logging).
    Two processes, not three: each imports the SDK, ~8 s of CPU."""
    facts = tmp_path / "logging.txt"
    commands = [
        [sys.executable, "-m", "pipelines.cli", "pipeline", "definition"],
        [sys.executable, "-c", DEFINITION_THEN_LOGGING, str(facts)],
    ]
    runs = [
        subprocess.run(command, cwd=REPO, env=offline_subprocess_env, capture_output=True, timeout=300)
        for command in commands
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert run.stderr == b""  # no SDK chatter, no warnings
    assert runs[0].stdout == runs[1].stdout
    assert json.loads(runs[0].stdout)["Version"] == "2020-12-01"
    # exit 0, no handler, WARNING, nothing disabled
    assert facts.read_text().split() == ["0", "0", str(30), "0"]


def test_a_prefix_too_long_for_the_registry_metadata_is_refused_when_building() -> None:
    from steps.register import check_edge_uris_fit

    check_edge_uris_fit("s3://" + "b" * 63 + "/" + "p" * 100 + "/edge", ["jetson_nano"])  # 221 characters fit
    with pytest.raises(ValueError, match=r"\(257 characters\) exceed the model registry's 256-character"):
        check_edge_uris_fit("s3://" + "b" * 63 + "/" + "p" * 141 + "/edge", ["rasp4b"])


def test_the_summary_shows_the_anded_conditions_and_the_empty_branches(definition: dict[str, Any]) -> None:
    from pipelines.summary import summarise

    lines = summarise(definition, "robocar-pipeline").splitlines()
    start = lines.index("  ShouldRegister   Condition")
    assert lines[start + 1].startswith(
        "    if EvaluationReport:regression_metrics.angle_mae.value LessThanOrEqualTo"
    )
    assert lines[start + 2] == "    and EvaluationReport:already_registered Equals False:"
    assert lines[-2:] == ["    else:", "      (nothing)"]  # already registered: nothing to do
