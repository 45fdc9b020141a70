"""The classifier pipeline: Ground Truth labels + photos -> preprocess -> train (MXNet) -> evaluate ->
(compile -> register).

``get_pipeline(**kwargs)`` is the module contract, as for the pilot (pipelines/robocar/pipeline.py): the
definition is built offline, with no network and no credentials, byte-identical between builds.

Which trainer runs is ``training_algorithm`` (docs/classifier.md):

- ``gluon`` (the default): ``training/classifier.py`` in SageMaker's MXNet framework container (script
  mode), fine-tuning EfficientNet-Lite0 from ImageNet weights;
- ``builtin``: SageMaker's built-in ``image-classification`` algorithm (ResNet-18,
  ``use_pretrained_model=1``) fed the Ground Truth augmented manifest Preprocess writes, in Pipe mode.

It is fixed when the definition is built, not a run-time parameter: a parameter cannot change a
Training step's kind of request (script mode's ``sagemaker_*`` hyperparameters are refused by the
built-in algorithm), and branching on it would nest the quality gate's Condition steps inside another
Condition step's branch, which AWS's published pipeline-definition schema does not allow. The definition
records the choice in the ``TrainingAlgorithm`` parameter (one allowed value) so a start that asks for
the other trainer is refused before it reaches AWS.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.settings import RECIPE_NAMES, TRAINING_ALGORITHMS
from pipelines.code_bundle import CodeBundle
from pipelines.datasets import no_snapshot_uri
from pipelines.offline import pipeline_session, prepare_environment
from pipelines.robocar.targets import DEFAULT_EDGE_TARGETS, parse_edge_targets

DEFAULT_REGION = "us-east-1"
DEFAULT_PIPELINE_NAME, DEFAULT_GROUP_NAME = RECIPE_NAMES["classifier"]
DEFAULT_PREFIX = "robocar"
GLUON, BUILTIN = TRAINING_ALGORITHMS
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CACHE_EXPIRY = "P30D"
# From ImageNet weights one epoch reaches 0.99 validation accuracy (docs/classifier.md).
DEFAULT_EPOCHS = 3
DEFAULT_IMAGE_SIZE = 64  # the crop side: 2 CPU cores train ~21 photos/s at 64 px
DEFAULT_ACCURACY_THRESHOLD = 0.8
# SageMaker's MXNet deep learning containers end at MXNet 1.9.0 on Python 3.8
# (https://github.com/aws/deep-learning-containers/blob/master/available_images.md): the model package
# names its inference image (serving is issue 17's); training and processing use the project's image.
MXNET_FRAMEWORK_VERSION = "1.9.0"
MXNET_PY_VERSION = "py38"
# The built-in algorithm's content types (https://docs.aws.amazon.com/sagemaker/latest/dg/image-classification.html).
CONTENT_TYPES = ["application/x-image", "image/jpeg", "image/png"]


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
    if training_algorithm not in TRAINING_ALGORITHMS:
        raise ValueError(f"training_algorithm must be one of {', '.join(TRAINING_ALGORITHMS)}")
    prepare_environment(region)
    from sagemaker.core import image_uris
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import CacheConfig

    from steps.compile import compile_step, compiled_uri
    from steps.containers import (
        MXNET_REPOSITORY,
        TF_FRAMEWORK_VERSION,
        TF_PY_VERSION,
        account_image_uri,
        execution_uri,
        mxnet_image_tag,
        s3_join,
    )
    from steps.evaluate import evaluate_step, evaluation_uri
    from steps.preprocess import preprocess_step, split_uri
    from steps.quality_gate import ACCURACY_BAR, quality_gate_steps
    from steps.register import check_edge_uris_fit, register_step
    from steps.train import model_artifacts_uri
    from steps.train_classifier import builtin_train_step, gluon_train_step

    targets = parse_edge_targets(edge_targets)
    session = pipeline_session(region, default_bucket)
    code = code or CodeBundle(bucket=default_bucket, prefix=base_prefix)
    prefix = s3_join(f"s3://{default_bucket}", base_prefix, "classifier")
    check_edge_uris_fit(s3_join(prefix, "edge"), targets)

    input_data_url = ParameterString(
        name="InputDataUrl", default_value=no_snapshot_uri(default_bucket, base_prefix)
    )
    processing_instance_type = ParameterString(name="ProcessingInstanceType", default_value="ml.m5.xlarge")
    training_instance_type = ParameterString(name="TrainingInstanceType", default_value="ml.m5.2xlarge")
    algorithm = ParameterString(
        name="TrainingAlgorithm", default_value=training_algorithm, enum_values=[training_algorithm]
    )
    epochs = ParameterString(name="Epochs", default_value=str(DEFAULT_EPOCHS))  # hyperparameters: strings
    image_size = ParameterString(name="ImageSize", default_value=str(DEFAULT_IMAGE_SIZE))
    accuracy_threshold = ParameterFloat(name="AccuracyThreshold", default_value=DEFAULT_ACCURACY_THRESHOLD)
    approval_status = ParameterString(
        name="ModelApprovalStatus", default_value="PendingManualApproval", enum_values=list(APPROVAL_STATUSES)
    )
    edge_targets_param = ParameterString(name="EdgeTargets", default_value=",".join(targets))

    def framework_image(framework: str, version: str, py_version: str, scope: str) -> str:
        return image_uris.retrieve(
            framework=framework, region=region, version=version, py_version=py_version,
            instance_type="ml.m5.xlarge", image_scope=scope,
        )  # fmt: skip

    # Preprocess needs the project's Python (jsonschema, Pillow): the TensorFlow image, as the pilot's.
    python_image = framework_image("tensorflow", TF_FRAMEWORK_VERSION, TF_PY_VERSION, "training")
    # SageMaker's MXNet training image runs Python 3.8, too old for the project's code: the project's own
    # (infra/images/mxnet, the pins of local mode's MXNet environment) in the role's account.
    mxnet_image = account_image_uri(role, region, MXNET_REPOSITORY, mxnet_image_tag())
    inference_image = framework_image("mxnet", MXNET_FRAMEWORK_VERSION, MXNET_PY_VERSION, "inference")
    cache = CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY)
    preprocess_output = s3_join(prefix, "preprocess")
    data_report = PropertyFile(name="DataReport", output_name="report", path="data-report.json")

    preprocess = preprocess_step(
        session, role=role, image_uri=python_image, instance_type=processing_instance_type,
        input_data_url=input_data_url, code_uri=code.step("processing/preprocess_classifier.py").uri,
        output_uri=preprocess_output, cache=cache, script="processing/preprocess_classifier.py",
        distribution="FullyReplicated",  # a manifest and the photos it names go to the same instance
        property_files=[data_report],
        extra_arguments=[
            "--image-size", image_size,
            # the augmented manifests name each photo by where this execution's output puts it
            "--output-uri", execution_uri(preprocess_output),
        ],
    )  # fmt: skip
    training = dict(
        session=session, role=role, instance_type=training_instance_type,
        train_uri=split_uri(preprocess, "train"), validation_uri=split_uri(preprocess, "validation"),
        output_uri=s3_join(prefix, "models"), epochs=epochs, image_size=image_size, cache=cache,
    )  # fmt: skip
    if training_algorithm == GLUON:
        train = gluon_train_step(
            **training, image_uri=mxnet_image, sourcedir_uri=code.step("training/classifier.py").uri
        )
    else:
        train = builtin_train_step(
            **training, image_uri=image_uris.retrieve("image-classification", region),
            preprocess=preprocess, data_report=data_report,
        )  # fmt: skip
    mxnet_jobs = dict(role=role, image_uri=mxnet_image, instance_type=processing_instance_type)
    evaluate, report = evaluate_step(
        session, **mxnet_jobs, code_uri=code.step("processing/evaluate_classifier.py").uri,
        script="processing/evaluate_classifier.py", model_uri=model_artifacts_uri(train),
        test_uri=split_uri(preprocess, "test"), train_uri=split_uri(preprocess, "train"),
        output_uri=s3_join(prefix, "evaluate"), model_package_group_name=model_package_group_name,
        edge_targets=edge_targets_param, region=region,
    )  # fmt: skip
    compile_, compiled = compile_step(
        session, **mxnet_jobs, code_uri=code.step("processing/compile_classifier.py").uri,
        script="processing/compile_classifier.py", model_uri=model_artifacts_uri(train),
        train_uri=split_uri(preprocess, "train"), test_uri=split_uri(preprocess, "test"),
        output_uri=s3_join(prefix, "edge"), edge_targets=edge_targets_param, region=region, cache=cache,
    )  # fmt: skip
    register = register_step(
        session, bucket=default_bucket, role=role, inference_image_uri=inference_image,
        model_uri=model_artifacts_uri(train), evaluation_uri=evaluation_uri(evaluate),
        model_package_group_name=model_package_group_name, approval_status=approval_status,
        edge_targets=targets, compile_step=compile_, compiled=compiled, compiled_uri=compiled_uri(compile_),
        content_types=CONTENT_TYPES,
    )  # fmt: skip
    gate = quality_gate_steps(
        evaluate_step=evaluate, report=report, threshold=accuracy_threshold,
        register_steps=[compile_, register], bar=ACCURACY_BAR,
    )  # fmt: skip
    return Pipeline(
        name=pipeline_name,
        parameters=[
            input_data_url,
            processing_instance_type,
            training_instance_type,
            algorithm,
            epochs,
            image_size,
            accuracy_threshold,
            approval_status,
            edge_targets_param,
        ],  # fmt: skip
        steps=[preprocess, train, evaluate, *gate],
        sagemaker_session=session,
    )
