"""Register: the pilot and its compiled edge artifacts as one model package version in the group.

Per DESIGN.md "Compile before register", every package carries, for each edge target, the compiled
artifact's S3 URI and SHA-256: an ``AdditionalInferenceSpecifications`` entry per target (the registry's
own field; ``ModelBuilder.register`` has no argument for it, so it is added to the request it builds)
and, for tools that read metadata, ``CustomerMetadataProperties`` ``edge:<target>:sha256``.
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
from edge.agent import SHA256_ENV, TARGET_ENV, edge_spec_name, metadata_sha256_key

CONTENT_TYPES = ["image/jpeg", "image/png", "application/json"]
RESPONSE_TYPES = ["application/json"]
INFERENCE_INSTANCES = ["ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"]
TRANSFORM_INSTANCES = ["ml.m5.large", "ml.m5.xlarge"]


def edge_specifications(
    targets: Sequence[str], *, image_uri: str, compiled_uri: Any, compile_step: ProcessingStep,
    compiled: PropertyFile,
) -> list[dict[str, Any]]:  # fmt: skip
    specs = []
    for target in targets:
        sha256 = JsonGet(
            step_name=compile_step.name, property_file=compiled, json_path=f"targets.{target}.sha256"
        )
        specs.append(
            {
                "Name": edge_spec_name(target),
                "Description": f"Compiled for the edge target {target}",
                "Containers": [
                    {
                        "Image": image_uri,
                        "ModelDataUrl": Join(on="/", values=[compiled_uri, target, "model.tar.gz"]),
                        "Environment": {SHA256_ENV: sha256, TARGET_ENV: target},
                    }
                ],
                "SupportedContentTypes": ["image/jpeg"],
                "SupportedResponseMIMETypes": RESPONSE_TYPES,
            }
        )
    return specs


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
) -> ModelStep:
    builder = ModelBuilder(
        image_uri=inference_image_uri,
        s3_model_data_url=model_uri,
        role_arn=role,
        sagemaker_session=session,
    )
    builder.bucket = bucket  # else register() lists S3 buckets (sdk-notes.md)
    metrics = ModelMetrics(
        model_quality=ModelQuality(
            statistics=MetricsSource(
                content_type="application/json",
                s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"]),
            )
        )
    )
    metadata = {
        metadata_sha256_key(t): JsonGet(
            step_name=compile_step.name, property_file=compiled, json_path=f"targets.{t}.sha256"
        )
        for t in edge_targets
    }
    step_args = builder.register(
        model_package_group_name=model_package_group_name,
        content_types=CONTENT_TYPES,
        response_types=RESPONSE_TYPES,
        inference_instances=INFERENCE_INSTANCES,
        transform_instances=TRANSFORM_INSTANCES,
        model_metrics=metrics,
        approval_status=approval_status,
        customer_metadata_properties={"edge:targets": ",".join(edge_targets), **metadata},
    )
    request = step_args.create_model_package_request
    for container in request["InferenceSpecification"]["Containers"]:
        # ModelBuilder writes SAGEMAKER_PROGRAM="" etc.; the serving container finds code/inference.py itself.
        container["Environment"] = {k: v for k, v in container.get("Environment", {}).items() if v != ""}
    request["AdditionalInferenceSpecifications"] = edge_specifications(
        edge_targets, image_uri=inference_image_uri, compiled_uri=compiled_uri,
        compile_step=compile_step, compiled=compiled,
    )  # fmt: skip
    return ModelStep(name="Register", step_args=step_args, depends_on=[compile_step])
