"""The detection pipeline: Ground Truth bounding boxes + photos -> Preprocess -> Train (MXNet SSD) ->
Evaluate (mAP) -> (CompileForEdge -> Register); the image recipes' shape (pipelines/image_recipe.py).

``get_pipeline(**kwargs)`` is the module contract, as for the other recipes.

- ``gluon`` (the default trainer): ``training/detector.py``, a small SSD in Gluon (docs/detection.md);
- ``builtin``: SageMaker's ``object-detection`` (SSD on ``resnet-50``, pretrained base), whose artifact
  CompileForEdge converts to its deploy form before Neo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edge.settings import RECIPE_NAMES
from pipelines.code_bundle import CodeBundle
from pipelines.image_recipe import GLUON, ImageRecipe, build_image_pipeline
from pipelines.robocar.targets import DEFAULT_EDGE_TARGETS
from training.detector import METRIC_DEFINITIONS

DEFAULT_REGION = "us-east-1"
DEFAULT_PIPELINE_NAME, DEFAULT_GROUP_NAME = RECIPE_NAMES["detection"]
DEFAULT_PREFIX = "robocar"
# The built-in algorithm offers resnet-50 and vgg-16 only
# (https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-api-config.html).
BUILTIN_BASE_NETWORK = "resnet-50"


def gluon_hyperparameters(epochs: Any, image_size: Any) -> dict[str, Any]:
    """The trainer's small backbone (from scratch: 0.97 validation mAP@0.5 against EfficientNet-Lite0's 0.57
    in the same 4 epochs, docs/detection.md "Training"); the rate drops 10x after epoch 20. An anchor is a
    positive of a true box from IoU 0.4 (the algorithm's default is 0.5): about 9 anchors per synthetic
    object instead of 3, which took the test split's mAP@0.5 from 0.81 to 0.93 in the same 24 epochs
    (docs/detection.md, "Why squares were weak")."""
    return {
        "epochs": epochs,
        "image_shape": image_size,
        "lr_scheduler_step": "20",
        "overlap_threshold": "0.4",
    }


def builtin_hyperparameters(epochs: Any, image_size: Any, report: Callable[[str], Any]) -> dict[str, Any]:
    """The algorithm's names; it requires ``num_classes`` and ``num_training_samples`` (Preprocess's
    data report gives both)."""
    return {
        "base_network": BUILTIN_BASE_NETWORK,
        "use_pretrained_model": "1",
        "num_classes": report("builtin.num_classes"),
        "num_training_samples": report("builtin.num_training_samples"),
        "image_shape": image_size,
        "epochs": epochs,
    }


DETECTION = ImageRecipe(
    name="detection",
    preprocess_script="processing/preprocess_detection.py",
    train_program="training/detector.py",
    evaluate_script="processing/evaluate_detection.py",
    compile_script="processing/compile_detection.py",
    gluon_hyperparameters=gluon_hyperparameters,
    builtin_algorithm="object-detection",
    builtin_hyperparameters=builtin_hyperparameters,
    label_attribute="boxes",  # processing/preprocess_detection.py's augmented manifests
    metric_definitions=METRIC_DEFINITIONS,
    bar="MAP_BAR",
    threshold_default=0.5,
    default_epochs=24,  # the synthetic set's plateau: 0.868 validation mAP@0.5 at epoch 21
    default_image_size=128,
    # The built-in algorithm's (https://docs.aws.amazon.com/sagemaker/latest/dg/object-detection-in-formats.html).
    content_types=("image/jpeg", "image/png", "application/x-image"),
)


def get_pipeline(
    region: str = DEFAULT_REGION,
    role: str = "arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    default_bucket: str = "robocar-data-123456789012",
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    model_package_group_name: str = DEFAULT_GROUP_NAME,
    base_prefix: str = DEFAULT_PREFIX,
    edge_targets: Sequence[str] | str = DEFAULT_EDGE_TARGETS,
    code: CodeBundle | None = None,
    training_algorithm: str = GLUON,
):
    """The SageMaker Pipeline (sagemaker v3 ``Pipeline``) of the detection recipe."""
    return build_image_pipeline(
        DETECTION, region=region, role=role, default_bucket=default_bucket, pipeline_name=pipeline_name,
        model_package_group_name=model_package_group_name, base_prefix=base_prefix,
        edge_targets=edge_targets, code=code, training_algorithm=training_algorithm,
    )  # fmt: skip
