"""Evaluate: the trained model (and the current champion) on the test split -> evaluation.json.

Never cached. Its result depends on the registry, which changes between executions: the champion it
compares against, and whether this very model is registered already (``already_registered``, which
stops an identical rerun from registering the same model again: a RegisterModel step is never cached).
A cached Evaluate would answer with the registry as an earlier execution saw it.
"""

from __future__ import annotations

from typing import Any

from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.steps import ProcessingStep

from steps.containers import CODE_DIR, PROCESSING, execution_uri
from steps.preprocess import processor, s3_input, s3_output

MODEL_DIR = f"{PROCESSING}/model"
TEST_DIR = f"{PROCESSING}/test"
TRAIN_DIR = f"{PROCESSING}/train"
EVALUATION_DIR = f"{PROCESSING}/evaluation"
REPORT_NAME = "EvaluationReport"
ANGLE_MAE_PATH = "regression_metrics.angle_mae.value"  # what the quality gate reads (docs/contracts.md §4)
ACCURACY_PATH = "multiclass_classification_metrics.accuracy.value"  # the classifier's gate
MAP_50_PATH = "detection_metrics.map_50.value"  # the detector's gate
ALREADY_REGISTERED_PATH = "already_registered"  # true when the group holds this model (contracts §4)


def evaluate_step(
    session: Any,
    *,
    role: str,
    image_uri: str,
    instance_type: Any,
    code_uri: str,
    model_uri: Any,
    test_uri: Any,
    output_uri: str,
    model_package_group_name: str,
    edge_targets: Any,
    region: str,
    script: str = "processing/evaluate.py",
    train_uri: Any = None,
) -> tuple[ProcessingStep, PropertyFile]:
    """``train_uri``: also give the script the train split (``--train``; the classifier's majority-class
    baseline counts its labels)."""
    report = PropertyFile(name=REPORT_NAME, output_name="evaluation", path="evaluation.json")
    proc = processor(session, role=role, image_uri=image_uri, instance_type=instance_type, script=script)
    train = [] if train_uri is None else [s3_input("train", train_uri, TRAIN_DIR)]
    step_args = proc.run(
        inputs=[
            s3_input("code", code_uri, CODE_DIR),
            s3_input("model", model_uri, MODEL_DIR),
            s3_input("test", test_uri, TEST_DIR),
            *train,
        ],
        outputs=[s3_output("evaluation", EVALUATION_DIR, execution_uri(output_uri, "evaluation"))],
        arguments=[
            "--model",
            MODEL_DIR,
            "--test",
            TEST_DIR,
            "--output",
            EVALUATION_DIR,
            "--model-package-group",
            model_package_group_name,
            "--model-s3-uri",
            model_uri,
            "--edge-targets",
            edge_targets,  # the champion is what the car with the first target installs (contracts §4)
            "--region",
            region,
            *([] if train_uri is None else ["--train", TRAIN_DIR]),
        ],  # fmt: skip
    )
    step = ProcessingStep(name="Evaluate", step_args=step_args, property_files=[report])  # uncached
    return step, report


def evaluation_uri(step: ProcessingStep) -> Any:
    return step.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
