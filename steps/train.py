"""Train: a recipe's trainer in its framework container (script mode): the pilot in TensorFlow's, the
classifier in MXNet's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sagemaker.core.shapes import MetricDefinition, OutputDataConfig, StoppingCondition
from sagemaker.core.training.configs import Compute, InputData
from sagemaker.mlops.workflow.steps import CacheConfig, TrainingStep
from sagemaker.train import ModelTrainer

from steps.containers import execution_uri
from training.metrics import METRIC_DEFINITIONS

TRAINING_CODE_DIR = "/opt/ml/code"  # where the framework container extracts sourcedir.tar.gz
MAX_RUNTIME_S = 3 * 3600


def script_mode_hyperparameters(program: str, sourcedir_uri: str, **hyperparameters: Any) -> dict[str, Any]:
    """Hyperparameters as the framework containers read them: ``sagemaker_*`` values JSON-quoted.

    ModelTrainer's own ``SourceCode`` would upload a driver folder under a timestamped key on every
    build (docs/design.md), so the script-mode contract is written out here instead.
    """
    return {
        "sagemaker_program": json.dumps(program),
        "sagemaker_submit_directory": json.dumps(sourcedir_uri),
        **hyperparameters,
    }


def train_step(
    session: Any,
    *,
    role: str,
    image_uri: str,
    instance_type: Any,
    sourcedir_uri: str,
    train_uri: Any,
    validation_uri: Any,
    output_uri: str,
    program: str,
    hyperparameters: dict[str, Any],
    cache: CacheConfig,
    metric_definitions: Sequence[dict[str, str]] = METRIC_DEFINITIONS,
    base_job_name: str = "robocar-train",
    environment: dict[str, str] | None = None,
) -> TrainingStep:
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=role,
        training_image=image_uri,
        base_job_name=base_job_name,
        compute=Compute(instance_type=instance_type, instance_count=1, volume_size_in_gb=30),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=MAX_RUNTIME_S),
        output_data_config=OutputDataConfig(s3_output_path=execution_uri(output_uri)),
        hyperparameters=script_mode_hyperparameters(program, sourcedir_uri, **hyperparameters),
        environment=environment or {"PYTHONPATH": TRAINING_CODE_DIR, "TF_CPP_MIN_LOG_LEVEL": "2"},
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in metric_definitions]
    )
    step_args = trainer.train(
        input_data_config=[
            InputData(channel_name="train", data_source=train_uri),
            InputData(channel_name="validation", data_source=validation_uri),
        ],
        wait=False,
    )
    return TrainingStep(name="Train", step_args=step_args, cache_config=cache)


def model_artifacts_uri(step: TrainingStep) -> Any:
    return step.properties.ModelArtifacts.S3ModelArtifacts
