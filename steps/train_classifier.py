"""Train the classifier: the Gluon trainer in the MXNet framework container, or SageMaker's built-in
``image-classification`` algorithm (pipelines/classifier/pipeline.py chooses one when it builds).

Both get the same hyperparameter names where they mean the same (the built-in algorithm's:
https://docs.aws.amazon.com/sagemaker/latest/dg/IC-Hyperparameter.html) and both write the built-in
algorithm's artifact layout, so Evaluate and Compile take either.
"""

from __future__ import annotations

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
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep
from sagemaker.train import ModelTrainer

from steps.containers import execution_uri
from steps.train import MAX_RUNTIME_S, TRAINING_CODE_DIR, train_step
from training.classifier import METRIC_DEFINITIONS

PROGRAM = "training/classifier.py"
BUILTIN_NETWORK_LAYERS = "18"  # ResNet-18: the smallest the algorithm offers, the one a Jetson Nano runs
LABEL_ATTRIBUTE = "class"  # the augmented manifests' label attribute (processing/preprocess_classifier.py)


def image_shape(image_size: Any) -> Join:
    """``3,N,N``: the algorithm's ``image_shape`` from the square crop side."""
    return Join(on=",", values=["3", image_size, image_size])


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
    epochs: Any,
    image_size: Any,
    cache: CacheConfig,
) -> TrainingStep:
    """``training/classifier.py`` in script mode: EfficientNet-Lite0 fine-tuned from ImageNet weights."""
    return train_step(
        session, role=role, image_uri=image_uri, instance_type=instance_type, sourcedir_uri=sourcedir_uri,
        train_uri=train_uri, validation_uri=validation_uri, output_uri=output_uri, program=PROGRAM,
        hyperparameters={
            "epochs": epochs, "image_shape": image_shape(image_size), "use_pretrained_model": "1",
        },
        cache=cache, metric_definitions=METRIC_DEFINITIONS, base_job_name="robocar-classifier-train",
        environment={"PYTHONPATH": TRAINING_CODE_DIR},
    )  # fmt: skip


def manifest_channel(name: str, split_uri: Any) -> Channel:
    """A Ground Truth augmented manifest channel in Pipe mode: the photo first, then its label
    (https://docs.aws.amazon.com/sagemaker/latest/dg/augmented-manifest.html)."""
    return Channel(
        channel_name=name,
        data_source=DataSource(
            s3_data_source=S3DataSource(
                s3_data_type="AugmentedManifestFile",
                s3_uri=Join(on="/", values=[split_uri, f"{name}.manifest"]),
                s3_data_distribution_type="FullyReplicated",
                attribute_names=["source-ref", LABEL_ATTRIBUTE],
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
    epochs: Any,
    image_size: Any,
    cache: CacheConfig,
    preprocess: ProcessingStep,
    data_report: PropertyFile,
) -> TrainingStep:
    """The built-in algorithm with a pretrained ResNet-18. It needs ``num_classes`` and
    ``num_training_samples``: Preprocess's data report gives both (as strings, hyperparameters' type)."""

    def report_value(path: str) -> Join:
        return Join(
            on="", values=[JsonGet(step_name=preprocess.name, property_file=data_report, json_path=path)]
        )

    trainer = ModelTrainer(
        sagemaker_session=session,
        role=role,
        training_image=image_uri,
        base_job_name="robocar-classifier-builtin",
        compute=Compute(instance_type=instance_type, instance_count=1, volume_size_in_gb=30),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=MAX_RUNTIME_S),
        output_data_config=OutputDataConfig(s3_output_path=execution_uri(output_uri)),
        training_input_mode="Pipe",
        hyperparameters={
            "num_layers": BUILTIN_NETWORK_LAYERS,
            "use_pretrained_model": "1",
            "num_classes": report_value("builtin.num_classes"),
            "num_training_samples": report_value("builtin.num_training_samples"),
            "image_shape": image_shape(image_size),
            "epochs": epochs,
            "augmentation_type": "crop_color_transform",
        },
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
    )
    step_args = trainer.train(
        input_data_config=[
            manifest_channel("train", train_uri),
            manifest_channel("validation", validation_uri),
        ],
        wait=False,
    )
    return TrainingStep(name="Train", step_args=step_args, cache_config=cache)
