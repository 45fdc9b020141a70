"""Train an image recipe (the classifier, the detector): its Gluon trainer in script mode in the MXNet
image, or SageMaker's built-in algorithm for it (pipelines/image_recipe.py chooses one when it builds).

Both get the same hyperparameter names where they mean the same (the built-in algorithms':
https://docs.aws.amazon.com/sagemaker/latest/dg/IC-Hyperparameter.html,
https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-api-config.html) and both write the
built-in algorithm's artifact layout, so Evaluate and Compile take either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagemaker.core.shapes import (
    Channel,
    DataSource,
    MetricDefinition,
    OutputDataConfig,
    S3DataSource,
    StoppingCondition,
)
from sagemaker.core.training.configs import Compute
from sagemaker.core.workflow.functions import Join
from sagemaker.mlops.workflow.steps import CacheConfig, TrainingStep
from sagemaker.train import ModelTrainer

from steps.containers import execution_uri
from steps.train import MAX_RUNTIME_S, TRAINING_CODE_DIR, train_step


def gluon_train_step(
    *,
    session: Any,
    role: str,
    image_uri: str,
    instance_type: Any,
    sourcedir_uri: str,
    train_uri: Any,
    validation_uri: Any,
    output_uri: str,
    program: str,
    hyperparameters: dict[str, Any],
    metric_definitions: Sequence[dict[str, str]],
    base_job_name: str,
    cache: CacheConfig,
) -> TrainingStep:
    """The recipe's own trainer (``program``) in script mode, fine-tuning from ImageNet weights."""
    return train_step(
        session, role=role, image_uri=image_uri, instance_type=instance_type, sourcedir_uri=sourcedir_uri,
        train_uri=train_uri, validation_uri=validation_uri, output_uri=output_uri, program=program,
        hyperparameters=hyperparameters, cache=cache, metric_definitions=metric_definitions,
        base_job_name=base_job_name, environment={"PYTHONPATH": TRAINING_CODE_DIR},
    )  # fmt: skip


def manifest_channel(name: str, split_uri: Any, label_attribute: str) -> Channel:
    """A Ground Truth augmented manifest channel in Pipe mode: the photo first, then its label
    (https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html)."""
    return Channel(
        channel_name=name,
        data_source=DataSource(
            s3_data_source=S3DataSource(
                s3_data_type="AugmentedManifestFile",
                s3_uri=Join(on="/", values=[split_uri, f"{name}.manifest"]),
                s3_data_distribution_type="FullyReplicated",
                attribute_names=["source-ref", label_attribute],
            )
        ),
        content_type="application/x-recordio",
        record_wrapper_type="RecordIO",
        input_mode="Pipe",
    )


def builtin_train_step(
    *,
    session: Any,
    role: str,
    image_uri: str,
    instance_type: Any,
    train_uri: Any,
    validation_uri: Any,
    output_uri: str,
    hyperparameters: dict[str, Any],
    label_attribute: str,
    metric_definitions: Sequence[dict[str, str]],
    base_job_name: str,
    cache: CacheConfig,
) -> TrainingStep:
    """The built-in algorithm, fed each split's augmented manifest in Pipe mode."""
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=role,
        training_image=image_uri,
        base_job_name=base_job_name,
        compute=Compute(instance_type=instance_type, instance_count=1, volume_size_in_gb=30),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=MAX_RUNTIME_S),
        output_data_config=OutputDataConfig(s3_output_path=execution_uri(output_uri)),
        training_input_mode="Pipe",
        hyperparameters=hyperparameters,
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in metric_definitions]
    )
    step_args = trainer.train(
        input_data_config=[
            manifest_channel("train", train_uri, label_attribute),
            manifest_channel("validation", validation_uri, label_attribute),
        ],
        wait=False,
    )
    return TrainingStep(name="Train", step_args=step_args, cache_config=cache)
