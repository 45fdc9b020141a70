"""The robocar pipeline: a dataset snapshot -> preprocess -> train -> evaluate -> (compile -> register).

``get_pipeline(**kwargs)`` is the module contract (the SageMaker Projects "modelbuild" template's):
it builds the definition offline, with no network and no credentials, byte-identical between builds.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.settings import default_of
from pipelines.code_bundle import CodeBundle
from pipelines.datasets import no_snapshot_uri
from pipelines.offline import pipeline_session, prepare_environment
from pipelines.robocar.targets import DEFAULT_EDGE_TARGETS, parse_edge_targets
from training.spec import DEFAULT_EPOCHS

DEFAULT_REGION = "us-east-1"
DEFAULT_PIPELINE_NAME = default_of("pipeline_name")  # the settings' defaults (edge/settings.py)
DEFAULT_GROUP_NAME = default_of("model_package_group")
DEFAULT_PREFIX = default_of("prefix")
MODEL_TYPES = ("linear", "categorical")
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CACHE_EXPIRY = "P30D"


def get_pipeline(
    region: str = DEFAULT_REGION,
    role: str = "arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    default_bucket: str = "robocar-data-123456789012",
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    model_package_group_name: str = DEFAULT_GROUP_NAME,
    base_prefix: str = DEFAULT_PREFIX,
    edge_targets: Sequence[str] | str = DEFAULT_EDGE_TARGETS,
    code: CodeBundle | None = None,
):
    """The SageMaker Pipeline (sagemaker v3 ``Pipeline``).

    ``edge_targets`` fixes which targets the Register step records (one artifact slot each); the
    ``EdgeTargets`` parameter defaults to them and ``robocar pipeline start`` checks it matches.
    """
    prepare_environment(region)
    from sagemaker.core import image_uris
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import CacheConfig

    from steps.compile import compile_step, compiled_uri
    from steps.containers import TF_FRAMEWORK_VERSION, TF_PY_VERSION, s3_join
    from steps.evaluate import evaluate_step, evaluation_uri
    from steps.preprocess import RESOURCE_CONFIG, preprocess_step, split_uri
    from steps.quality_gate import quality_gate_steps
    from steps.register import check_edge_uris_fit, register_step
    from steps.train import model_artifacts_uri, train_step

    targets = parse_edge_targets(edge_targets)
    session = pipeline_session(region, default_bucket)
    code = code or CodeBundle(bucket=default_bucket, prefix=base_prefix)
    prefix = s3_join(f"s3://{default_bucket}", base_prefix)
    check_edge_uris_fit(s3_join(prefix, "edge"), targets)

    # Each execution names its dataset snapshot (pipelines/datasets.py); the default names none.
    input_data_url = ParameterString(
        name="InputDataUrl", default_value=no_snapshot_uri(default_bucket, base_prefix)
    )
    processing_instance_type = ParameterString(name="ProcessingInstanceType", default_value="ml.m5.xlarge")
    # Preprocess only: each instance takes a share of the tub archives (steps/preprocess.py).
    processing_instance_count = ParameterInteger(name="ProcessingInstanceCount", default_value=1)
    training_instance_type = ParameterString(name="TrainingInstanceType", default_value="ml.m5.2xlarge")
    model_type = ParameterString(name="ModelType", default_value="linear", enum_values=list(MODEL_TYPES))
    epochs = ParameterString(name="Epochs", default_value=str(DEFAULT_EPOCHS))  # hyperparameters: strings
    angle_mae_threshold = ParameterFloat(name="AngleMaeThreshold", default_value=0.12)
    approval_status = ParameterString(
        name="ModelApprovalStatus", default_value="PendingManualApproval", enum_values=list(APPROVAL_STATUSES)
    )
    edge_targets_param = ParameterString(name="EdgeTargets", default_value=",".join(targets))

    def image(scope: str) -> str:
        return image_uris.retrieve(
            framework="tensorflow", region=region, version=TF_FRAMEWORK_VERSION, py_version=TF_PY_VERSION,
            instance_type="ml.m5.xlarge", image_scope=scope,
        )  # fmt: skip

    training_image, inference_image = image("training"), image("inference")
    cache = CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY)
    jobs = dict(role=role, image_uri=training_image, instance_type=processing_instance_type)

    preprocess = preprocess_step(
        session, **jobs, input_data_url=input_data_url,
        code_uri=code.step("processing/preprocess.py").uri,
        output_uri=s3_join(prefix, "preprocess"), cache=cache, instance_count=processing_instance_count,
        extra_arguments=["--resource-config", RESOURCE_CONFIG],
    )  # fmt: skip
    train = train_step(
        session, role=role, image_uri=training_image, instance_type=training_instance_type,
        sourcedir_uri=code.step("training/train.py").uri, train_uri=split_uri(preprocess, "train"),
        validation_uri=split_uri(preprocess, "validation"), output_uri=s3_join(prefix, "models"),
        program="training/train.py", hyperparameters={"model-type": model_type, "epochs": epochs},
        cache=cache,
    )  # fmt: skip
    evaluate, report = evaluate_step(
        session, **jobs, code_uri=code.step("processing/evaluate.py").uri,
        model_uri=model_artifacts_uri(train),
        test_uri=split_uri(preprocess, "test"), output_uri=s3_join(prefix, "evaluate"),
        model_package_group_name=model_package_group_name, edge_targets=edge_targets_param, region=region,
    )  # fmt: skip
    compile_, compiled = compile_step(
        session, **jobs, code_uri=code.step("processing/compile.py").uri,
        model_uri=model_artifacts_uri(train),
        train_uri=split_uri(preprocess, "train"), test_uri=split_uri(preprocess, "test"),
        output_uri=s3_join(prefix, "edge"), edge_targets=edge_targets_param, region=region, cache=cache,
    )  # fmt: skip
    register = register_step(
        session, bucket=default_bucket, role=role, inference_image_uri=inference_image,
        model_uri=model_artifacts_uri(train),
        evaluation_uri=evaluation_uri(evaluate), model_package_group_name=model_package_group_name,
        approval_status=approval_status, edge_targets=targets, compile_step=compile_,
        compiled=compiled, compiled_uri=compiled_uri(compile_),
    )  # fmt: skip
    gate = quality_gate_steps(
        evaluate_step=evaluate, report=report, threshold=angle_mae_threshold,
        register_steps=[compile_, register],
    )  # fmt: skip
    return Pipeline(
        name=pipeline_name,
        parameters=[
            input_data_url,
            processing_instance_type,
            processing_instance_count,
            training_instance_type,
            model_type,
            epochs,
            angle_mae_threshold,
            approval_status,
            edge_targets_param,
        ],  # fmt: skip
        steps=[preprocess, train, evaluate, *gate],
        sagemaker_session=session,
    )
