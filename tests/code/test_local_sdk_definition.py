"""The executor runs what the sagemaker v3 SDK really emits: a pipeline built offline with the SDK itself.

Every condition type the SDK has, JsonGet on a property file, Join, execution variables, the four
parameter types, a TrainingStep from ModelTrainer (script mode), a ModelStep from ModelBuilder.register
and a FailStep, run against the sample scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sample_pipeline as sample

from pipelines.local import run_local
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.offline import pipeline_session

pytestmark = pytest.mark.filterwarnings("ignore:Running within a PipelineSession")
ROLE = "arn:aws:iam::123456789012:role/sample"
CODE = f"s3://{sample.BUCKET}/{sample.CODE_PREFIX}"


def build_definition() -> dict:
    session = pipeline_session("us-east-1", sample.BUCKET)
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        OutputDataConfig,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
        StoppingCondition,
    )
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.core.workflow.conditions import (
        ConditionEquals,
        ConditionGreaterThan,
        ConditionGreaterThanOrEqualTo,
        ConditionIn,
        ConditionLessThan,
        ConditionLessThanOrEqualTo,
        ConditionNot,
        ConditionOr,
    )
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train import ModelTrainer

    data_url = ParameterString(name="InputDataUrl", default_value=f"s3://{sample.BUCKET}/sample/raw")
    threshold = ParameterFloat(name="MaeThreshold", default_value=0.2)
    min_epochs = ParameterInteger(name="MinEpochs", default_value=1)
    strict = ParameterBoolean(name="Strict", default_value=False)
    model_type = ParameterString(
        name="ModelType", default_value="linear", enum_values=["linear", "categorical"]
    )

    def processing_input(name: str, uri, path: str) -> ProcessingInput:
        return ProcessingInput(
            input_name=name,
            s3_input=ProcessingS3Input(
                s3_uri=uri, local_path=path, s3_data_type="S3Prefix", s3_input_mode="File"
            ),
        )

    def processing_output(name: str, path: str, uri) -> ProcessingOutput:
        return ProcessingOutput(
            output_name=name,
            s3_output=ProcessingS3Output(s3_uri=uri, local_path=path, s3_upload_mode="EndOfJob"),
        )

    def processor() -> Processor:
        return Processor(
            role=ROLE,
            image_uri=sample.PROCESSING_IMAGE,
            entrypoint=["python3", "/opt/ml/processing/input/code/sample_steps.py"],
            instance_count=1,
            instance_type="ml.m5.xlarge",
            sagemaker_session=session,
        )

    cache = CacheConfig(enable_caching=True, expire_after="P1D")
    preprocess = ProcessingStep(
        name="Preprocess",
        step_args=processor().run(
            inputs=[
                processing_input("code", f"{CODE}/", "/opt/ml/processing/input/code"),
                processing_input("data", data_url, "/opt/ml/processing/input/data"),
            ],
            outputs=[
                processing_output(
                    "train",
                    "/opt/ml/processing/output/train",
                    Join(
                        on="/",
                        values=[
                            f"s3://{sample.BUCKET}/sdk",
                            ExecutionVariables.PIPELINE_EXECUTION_ID,
                            "train",
                        ],
                    ),
                )
            ],
            arguments=[
                "preprocess",
                "--input",
                "/opt/ml/processing/input/data",
                "--output",
                "/opt/ml/processing/output",
            ],
        ),
        cache_config=cache,
    )
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=ROLE,
        training_image=sample.TRAINING_IMAGE,
        base_job_name="sdk-train",
        compute=Compute(instance_type="ml.m5.xlarge", instance_count=1, volume_size_in_gb=30),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=600),
        output_data_config=OutputDataConfig(s3_output_path=f"s3://{sample.BUCKET}/sdk/models"),
        hyperparameters={
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(f"{CODE}/sourcedir.tar.gz"),
            "epochs": "2",
            "model-type": model_type,
        },
        environment={"PYTHONPATH": "/opt/ml/code"},
    )
    train_uri = preprocess.properties.ProcessingOutputConfig.Outputs["train"].S3Output.S3Uri
    train = TrainingStep(
        name="Train",
        step_args=trainer.train(
            input_data_config=[InputData(channel_name="train", data_source=train_uri)], wait=False
        ),
    )
    model_uri = train.properties.ModelArtifacts.S3ModelArtifacts
    report = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    evaluate = ProcessingStep(
        name="Evaluate",
        step_args=processor().run(
            inputs=[
                processing_input("code", f"{CODE}/", "/opt/ml/processing/input/code"),
                processing_input("model", model_uri, "/opt/ml/processing/model"),
            ],
            outputs=[
                processing_output(
                    "evaluation", "/opt/ml/processing/evaluation", f"s3://{sample.BUCKET}/sdk/evaluation"
                )
            ],
            arguments=[
                "evaluate",
                "--input",
                "/opt/ml/processing/model",
                "--output",
                "/opt/ml/processing/evaluation",
            ],
        ),
        property_files=[report],
    )
    mae = JsonGet(
        step_name=evaluate.name, property_file=report, json_path="regression_metrics.angle_mae.value"
    )
    frames = JsonGet(step_name=evaluate.name, property_file=report, json_path="test_frames")
    builder = ModelBuilder(
        image_uri=sample.INFERENCE_IMAGE,
        s3_model_data_url=model_uri,
        role_arn=ROLE,
        sagemaker_session=session,
    )
    builder.bucket = sample.BUCKET
    register = ModelStep(
        name="Register",
        step_args=builder.register(
            model_package_group_name="sdk-pilots",
            content_types=["application/json"],
            response_types=["application/json"],
            inference_instances=["ml.m5.large"],
            transform_instances=["ml.m5.large"],
            approval_status="PendingManualApproval",
            customer_metadata_properties={"angle_mae": mae},
        ),
    )
    fail = FailStep(
        name="TooInaccurate", error_message=Join(on=" ", values=["angle MAE", mae, "above", threshold])
    )
    gate = ConditionStep(
        name="CheckQuality",
        conditions=[
            ConditionLessThanOrEqualTo(left=mae, right=threshold),
            ConditionLessThan(left=mae, right=1.0),
            ConditionGreaterThan(left=frames, right=min_epochs),
            ConditionGreaterThanOrEqualTo(left=frames, right=2),
            ConditionIn(value=model_type, in_values=["linear", "categorical"]),
            ConditionOr(
                conditions=[
                    ConditionEquals(left=strict, right=True),
                    ConditionNot(expression=ConditionEquals(left=model_type, right="x")),
                ]
            ),
        ],
        if_steps=[register],
        else_steps=[fail],
    )
    pipeline = Pipeline(
        name="sdk-pipeline",
        parameters=[data_url, threshold, min_epochs, strict, model_type],
        steps=[preprocess, train, evaluate, gate],
        sagemaker_session=session,
    )
    return json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def definition() -> dict:
    return build_definition()


def test_sdk_definition_runs_end_to_end(definition: dict, tmp_path: Path) -> None:
    sample.upload_sample(LocalS3Client(tmp_path))
    execution = run_local(definition, tmp_path, {"ModelType": "categorical"}, pipeline_name="sdk-pipeline")
    assert execution.status == "Succeeded", execution.failure_reason
    assert execution.steps["CheckQuality"].outcome == "True"
    train_uri = execution.steps["Preprocess"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"][
        "S3Uri"
    ]
    assert (
        train_uri == f"s3://{sample.BUCKET}/sdk/{execution.execution_id}/train"
    )  # ExecutionVariables resolved
    arn = execution.steps["Register"].properties["ModelPackageArn"]
    package = LocalSageMakerClient(tmp_path).describe_model_package(ModelPackageName=arn)
    assert package["CustomerMetadataProperties"] == {"angle_mae": "0.1"}
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].endswith("/output/model.tar.gz")


def test_sdk_definition_else_branch(definition: dict, tmp_path: Path) -> None:
    sample.upload_sample(LocalS3Client(tmp_path))
    execution = run_local(definition, tmp_path, {"MaeThreshold": 0.05}, pipeline_name="sdk-pipeline")
    assert execution.status == "Failed"
    assert execution.steps["TooInaccurate"].failure_reason == "angle MAE 0.1 above 0.05"
