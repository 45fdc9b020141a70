"""CompileForEdge: the trained model compiled per edge target (Neo on AWS, LiteRT/ONNX locally).

No SDK has a compilation step (docs/design.md "Neo and DLR"), so this is a Processing step running
``processing/compile.py``; its ``compiled.json`` is a property file the Register step reads.
"""

from __future__ import annotations

from typing import Any

from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

from steps.containers import CODE_DIR, PROCESSING, execution_uri, s3_join
from steps.preprocess import processor, s3_input, s3_output

MODEL_DIR = f"{PROCESSING}/model"
TRAIN_DIR = f"{PROCESSING}/train"
TEST_DIR = f"{PROCESSING}/test"
OUTPUT_DIR = f"{PROCESSING}/output"
REPORT_NAME = "CompiledArtifacts"


def compile_step(
    session: Any,
    *,
    role: str,
    image_uri: str,
    instance_type: Any,
    code_uri: str,
    model_uri: Any,
    train_uri: Any,
    test_uri: Any,
    output_uri: str,
    edge_targets: Any,
    region: str,
    cache: CacheConfig,
    script: str = "processing/compile.py",
) -> tuple[ProcessingStep, PropertyFile]:
    compiled = PropertyFile(name=REPORT_NAME, output_name="compiled", path="compiled.json")
    compiled_uri = execution_uri(output_uri, "compiled")
    proc = processor(session, role=role, image_uri=image_uri, instance_type=instance_type, script=script)
    step_args = proc.run(
        inputs=[
            s3_input("code", code_uri, CODE_DIR),
            s3_input("model", model_uri, MODEL_DIR),
            s3_input("train", train_uri, TRAIN_DIR),
            s3_input("test", test_uri, TEST_DIR),
        ],
        outputs=[s3_output("compiled", OUTPUT_DIR, compiled_uri)],
        arguments=[
            "--model",
            MODEL_DIR,
            "--train",
            TRAIN_DIR,
            "--test",
            TEST_DIR,
            "--output",
            OUTPUT_DIR,
            "--targets",
            edge_targets,
            "--model-s3-uri",
            model_uri,
            "--output-s3-uri",
            s3_join(output_uri, "neo"),  # Neo's files go under its input's digest (processing/neo.py)
            "--role-arn",
            role,
            "--region",
            region,
        ],  # fmt: skip
    )
    step = ProcessingStep(
        name="CompileForEdge", step_args=step_args, property_files=[compiled], cache_config=cache
    )
    return step, compiled


def compiled_uri(step: ProcessingStep) -> Any:
    return step.properties.ProcessingOutputConfig.Outputs["compiled"].S3Output.S3Uri
