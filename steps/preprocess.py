"""Preprocess: tubs (or a Ground Truth manifest) -> validated train/validation/test shards and a report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagemaker.core.processing import Processor
from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

from steps.containers import CODE_DIR, CODE_ENV, PROCESSING, execution_uri, script_command

SPLITS = ("train", "validation", "test")
INPUT_DIR = f"{PROCESSING}/input/data"
OUTPUT_DIR = f"{PROCESSING}/output"
# Where SageMaker tells each instance its host and the job's hosts; passed explicitly (it is the
# script's default) so that local mode maps it into each instance's own /opt/ml tree.
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"


def s3_input(
    name: str, uri: Any, local_path: str, data_type: str = "S3Prefix", distribution: str = "FullyReplicated"
) -> ProcessingInput:
    """``data_type``: ``S3Prefix`` (every object under ``uri``) or ``ManifestFile`` (those it lists);
    ``distribution``: ``FullyReplicated`` (every instance gets all) or ``ShardedByS3Key`` (a share each)."""
    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=local_path, s3_data_type=data_type, s3_input_mode="File",
            s3_data_distribution_type=distribution,
        ),
    )  # fmt: skip


def s3_output(name: str, local_path: str, uri: Any) -> ProcessingOutput:
    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=uri, local_path=local_path, s3_upload_mode="EndOfJob"),
    )


def processor(
    session: Any, *, role: str, image_uri: str, instance_type: Any, script: str, instance_count: Any = 1
) -> Processor:
    return Processor(
        role=role,
        image_uri=image_uri,
        entrypoint=script_command(script),
        instance_count=instance_count,
        instance_type=instance_type,
        sagemaker_session=session,
        env=dict(CODE_ENV),
    )


def preprocess_step(
    session: Any,
    *,
    role: str,
    image_uri: str,
    instance_type: Any,
    input_data_url: Any,
    code_uri: str,
    output_uri: str,
    cache: CacheConfig,
    instance_count: Any = 1,
    script: str = "processing/preprocess.py",
    extra_arguments: Sequence[Any] = (),
    distribution: str = "ShardedByS3Key",
    property_files: Sequence[Any] = (),
) -> ProcessingStep:
    """``input_data_url`` is a dataset manifest (a pipeline parameter, ``pipelines/datasets.py``): the
    tubs are named by content, so SageMaker's cache, which keys on S3 paths, reruns Preprocess exactly
    when the data changed. Outputs go under ``output_uri``.

    On ``instance_count`` instances (a pipeline parameter) each is given a share of the objects the
    manifest lists: ``ShardedByS3Key``
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html; on one
    instance the same as ``FullyReplicated``). Preprocess then needs every tub to be one object (an
    archive) and refuses a loose file; each instance writes its own shards and report under names
    carrying its host, into the same output prefixes (docs/contracts.md section 2).

    ``script`` is the recipe's Preprocess (its arguments after ``--input``/``--output``:
    ``extra_arguments``); a recipe whose records refer to each other across objects (a Ground Truth
    manifest and its photos) takes every object on its one instance (``FullyReplicated``).
    """
    proc = processor(
        session,
        role=role,
        image_uri=image_uri,
        instance_type=instance_type,
        script=script,
        instance_count=instance_count,
    )
    step_args = proc.run(
        inputs=[
            s3_input("code", code_uri, CODE_DIR),
            s3_input("tubs", input_data_url, INPUT_DIR, "ManifestFile", distribution=distribution),
        ],
        outputs=[
            s3_output(name, f"{OUTPUT_DIR}/{name}", execution_uri(output_uri, name))
            for name in (*SPLITS, "report")
        ],
        arguments=["--input", INPUT_DIR, "--output", OUTPUT_DIR, *extra_arguments],
    )
    return ProcessingStep(
        name="Preprocess",
        step_args=step_args,
        cache_config=cache,
        property_files=list(property_files) or None,
    )


def split_uri(step: ProcessingStep, split: str) -> Any:
    """The S3 URI a downstream step reads a split from: a property, so the data dependency is explicit."""
    return step.properties.ProcessingOutputConfig.Outputs[split].S3Output.S3Uri
