"""Register: the pilot and its compiled edge artifacts as one model package version in the group.

Every package carries, per edge target, the compiled artifact's S3 URI, SHA-256 and runtime as
``CustomerMetadataProperties`` (``edge:<target>:uri|sha256|runtime``, keys defined on the car's side in
``edge.agent``): a member the SDK's own RegisterModel emits, unlike ``AdditionalInferenceSpecifications``,
which no SDK emits in a RegisterModel step and which the Pipelines service may refuse (docs/registry.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagemaker.core.shapes import MetricsSource, ModelMetrics, ModelQuality
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.steps import ProcessingStep
from sagemaker.serve.model_builder import ModelBuilder

# What the car reads is defined once, on the car's side (edge/ is the leaf library every unit may import).
from edge.agent import edge_metadata

CONTENT_TYPES = ["image/jpeg", "image/png", "application/json"]
RESPONSE_TYPES = ["application/json"]
INFERENCE_INSTANCES = ["ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"]
TRANSFORM_INSTANCES = ["ml.m5.large", "ml.m5.xlarge"]
METADATA_VALUE_MAX = 256  # CustomerMetadataValue: 1 to 256 characters (botocore's sagemaker model)
EXECUTION_ID = "x" * 12  # a pipeline execution id: 12 lowercase letters and digits


def check_edge_uris_fit(edge_output_root: str, targets: Sequence[str]) -> None:
    """Refuse, when building, a bucket/prefix whose artifact URIs would be too long for the metadata."""
    for target in targets:
        uri = f"{edge_output_root.rstrip('/')}/{EXECUTION_ID}/compiled/{target}/model.tar.gz"
        if len(uri) > METADATA_VALUE_MAX:
            raise ValueError(
                f"edge artifact URIs such as {uri} ({len(uri)} characters) exceed the model registry's "
                f"{METADATA_VALUE_MAX}-character metadata values: choose a shorter bucket or prefix"
            )


def edge_artifacts_metadata(
    targets: Sequence[str], *, compiled_uri: Any, compile_step: ProcessingStep, compiled: PropertyFile
) -> dict[str, Any]:
    """Each target's artifact: its URI under the compile output; digest and runtime from compiled.json."""

    def compiled_value(target: str, field: str) -> JsonGet:
        return JsonGet(
            step_name=compile_step.name, property_file=compiled, json_path=f"targets.{target}.{field}"
        )

    metadata: dict[str, Any] = {}
    for target in targets:
        metadata |= edge_metadata(
            target,
            uri=Join(on="/", values=[compiled_uri, target, "model.tar.gz"]),
            sha256=compiled_value(target, "sha256"),
            runtime=compiled_value(target, "runtime"),
        )
    return metadata


def register_step(
    session: Any,
    *,
    bucket: str,
    role: str,
    inference_image_uri: str,
    model_uri: Any,
    evaluation_uri: Any,
    model_package_group_name: str,
    approval_status: Any,
    edge_targets: Sequence[str],
    compile_step: ProcessingStep,
    compiled: PropertyFile,
    compiled_uri: Any,
    content_types: Sequence[str] = CONTENT_TYPES,
) -> ModelStep:
    """``content_types``: what the model's endpoint accepts (the pilot's handler: JPEG, PNG, JSON)."""
    builder = ModelBuilder(
        image_uri=inference_image_uri,
        s3_model_data_url=model_uri,
        role_arn=role,
        sagemaker_session=session,
    )
    builder.bucket = bucket  # else register() lists S3 buckets (docs/design.md)
    metrics = ModelMetrics(
        model_quality=ModelQuality(
            statistics=MetricsSource(
                content_type="application/json",
                s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"]),
            )
        )
    )
    step_args = builder.register(
        model_package_group_name=model_package_group_name,
        content_types=list(content_types),
        response_types=RESPONSE_TYPES,
        inference_instances=INFERENCE_INSTANCES,
        transform_instances=TRANSFORM_INSTANCES,
        model_metrics=metrics,
        approval_status=approval_status,
        customer_metadata_properties=edge_artifacts_metadata(
            edge_targets, compiled_uri=compiled_uri, compile_step=compile_step, compiled=compiled
        ),
    )
    request = step_args.create_model_package_request
    for container in request["InferenceSpecification"]["Containers"]:
        # ModelBuilder writes SAGEMAKER_PROGRAM="" etc.; the serving container finds code/inference.py itself.
        container["Environment"] = {k: v for k, v in container.get("Environment", {}).items() if v != ""}
    return ModelStep(name="Register", step_args=step_args, depends_on=[compile_step])
