"""The classifier pipeline: Ground Truth image-classification labels + photos -> Preprocess -> Train
(MXNet) -> Evaluate -> (CompileForEdge -> Register); the image recipes' shape (pipelines/image_recipe.py).

``get_pipeline(**kwargs)`` is the module contract, as for the pilot (pipelines/robocar/pipeline.py): the
definition is built offline, with no network and no credentials, byte-identical between builds.

- ``gluon`` (the default trainer): ``training/classifier.py``, EfficientNet-Lite0 fine-tuned from ImageNet
  weights;
- ``builtin``: SageMaker's ``image-classification`` (ResNet-18, ``use_pretrained_model=1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edge.settings import RECIPE_NAMES
from pipelines.code_bundle import CodeBundle
from pipelines.image_recipe import GLUON, ImageRecipe, build_image_pipeline, image_shape
from pipelines.robocar.targets import DEFAULT_EDGE_TARGETS
from training.classifier import METRIC_DEFINITIONS

DEFAULT_REGION = "us-east-1"
DEFAULT_PIPELINE_NAME, DEFAULT_GROUP_NAME = RECIPE_NAMES["classifier"]
DEFAULT_PREFIX = "robocar"
BUILTIN_NETWORK_LAYERS = "18"  # ResNet-18: the smallest the algorithm offers, the one a Jetson Nano runs


def gluon_hyperparameters(epochs: Any, image_size: Any) -> dict[str, Any]:
    return {"epochs": epochs, "image_shape": image_shape(image_size), "use_pretrained_model": "1"}


def builtin_hyperparameters(epochs: Any, image_size: Any, report: Callable[[str], Any]) -> dict[str, Any]:
    """The algorithm's names (https://docs.aws.amazon.com/sagemaker/latest/dg/IC-Hyperparameter.html);
    it requires ``num_classes`` and ``num_training_samples``: Preprocess's data report gives both."""
    return {
        "num_layers": BUILTIN_NETWORK_LAYERS,
        "use_pretrained_model": "1",
        "num_classes": report("builtin.num_classes"),
        "num_training_samples": report("builtin.num_training_samples"),
        "image_shape": image_shape(image_size),
        "epochs": epochs,
        "augmentation_type": "crop_color_transform",
    }


CLASSIFIER = ImageRecipe(
    name="classifier",
    preprocess_script="processing/preprocess_classifier.py",
    train_program="training/classifier.py",
    evaluate_script="processing/evaluate_classifier.py",
    compile_script="processing/compile_classifier.py",
    gluon_hyperparameters=gluon_hyperparameters,
    builtin_algorithm="image-classification",
    builtin_hyperparameters=builtin_hyperparameters,
    label_attribute="class",  # processing/preprocess_classifier.py's augmented manifests
    metric_definitions=METRIC_DEFINITIONS,
    bar="ACCURACY_BAR",
    threshold_default=0.8,
    default_epochs=3,  # from ImageNet weights one epoch reaches 0.99 validation accuracy (docs/classifier.md)
    default_image_size=64,  # the crop side: 2 CPU cores train ~120 photos/s at 64 px
    # The built-in algorithm's (https://docs.aws.amazon.com/sagemaker/latest/dg/image-classification.html).
    content_types=("application/x-image", "image/jpeg", "image/png"),
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
    """The SageMaker Pipeline (sagemaker v3 ``Pipeline``) of the classifier recipe."""
    return build_image_pipeline(
        CLASSIFIER, region=region, role=role, default_bucket=default_bucket, pipeline_name=pipeline_name,
        model_package_group_name=model_package_group_name, base_prefix=base_prefix,
        edge_targets=edge_targets, code=code, training_algorithm=training_algorithm,
    )  # fmt: skip
