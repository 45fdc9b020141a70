"""The image recipes' one pipeline shape: Ground Truth labels + photos -> Preprocess -> Train (MXNet) ->
Evaluate -> (CompileForEdge -> Register), each recipe (pipelines/classifier/, pipelines/detection/) an
``ImageRecipe`` of scripts, hyperparameters and quality bar.

Which trainer runs is ``training_algorithm`` (docs/classifier.md):

- ``gluon`` (the default): the recipe's Gluon script in script mode in the project's MXNet image,
  fine-tuning from ImageNet weights;
- ``builtin``: SageMaker's built-in algorithm for the task, fed the Ground Truth augmented manifests
  Preprocess writes, in Pipe mode.

It is fixed when the definition is built, not a run-time parameter: a parameter cannot change a
Training step's kind of request (script mode's ``sagemaker_*`` hyperparameters are refused by the
built-in algorithms), and branching on it would nest the quality gate's Condition steps inside another
Condition step's branch, which AWS's published pipeline-definition schema does not allow. The definition
records the choice in the ``TrainingAlgorithm`` parameter (one allowed value) so a start that asks for
the other trainer is refused before it reaches AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.settings import TRAINING_ALGORITHMS
from pipelines.code_bundle import CodeBundle
from pipelines.datasets import no_snapshot_uri
from pipelines.offline import pipeline_session, prepare_environment
from pipelines.robocar.targets import parse_edge_targets

GLUON, BUILTIN = TRAINING_ALGORITHMS
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CACHE_EXPIRY = "P30D"

# (epochs, image size) -> the Gluon trainer's hyperparameters;
# (epochs, image size, a value of Preprocess's data report) -> the built-in algorithm's.
GluonHyperparameters = Callable[[Any, Any], dict[str, Any]]
BuiltinHyperparameters = Callable[[Any, Any, Callable[[str], Any]], dict[str, Any]]


@dataclass(frozen=True)
class ImageRecipe:
    name: str  # also the S3 folder of its outputs under the prefix
    preprocess_script: str
    train_program: str
    evaluate_script: str
    compile_script: str
    gluon_hyperparameters: GluonHyperparameters
    builtin_algorithm: str  # image_uris.retrieve's name of the built-in algorithm
    builtin_hyperparameters: BuiltinHyperparameters
    label_attribute: str  # the augmented manifests' label attribute
    metric_definitions: Sequence[dict[str, str]]
    bar: str  # the steps.quality_gate QualityBar's name (the SDK is imported only when building)
    threshold_default: float
    default_epochs: int
    default_image_size: int
    content_types: Sequence[str]


def image_shape(image_size: Any) -> Any:
    """``3,N,N``: an algorithm's ``image_shape`` from the square input side."""
    from sagemaker.core.workflow.functions import Join

    return Join(on=",", values=["3", image_size, image_size])


def build_image_pipeline(
    recipe: ImageRecipe,
    *,
    region: str,
    role: str,
    default_bucket: str,
    pipeline_name: str,
    model_package_group_name: str,
    base_prefix: str,
    edge_targets: Sequence[str] | str,
    code: CodeBundle | None,
    training_algorithm: str,
):
    """The SageMaker Pipeline (sagemaker v3 ``Pipeline``) of ``recipe``."""
    if training_algorithm not in TRAINING_ALGORITHMS:
        raise ValueError(f"training_algorithm must be one of {', '.join(TRAINING_ALGORITHMS)}")
    prepare_environment(region)
    from sagemaker.core import image_uris
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import CacheConfig

    from steps import quality_gate
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
    from steps.register import check_edge_uris_fit, register_step
    from steps.train import model_artifacts_uri
    from steps.train_image import builtin_train_step, gluon_train_step

    bar = getattr(quality_gate, recipe.bar)
    targets = parse_edge_targets(edge_targets)
    session = pipeline_session(region, default_bucket)
    code = code or CodeBundle(bucket=default_bucket, prefix=base_prefix)
    prefix = s3_join(f"s3://{default_bucket}", base_prefix, recipe.name)
    check_edge_uris_fit(s3_join(prefix, "edge"), targets)

    input_data_url = ParameterString(
        name="InputDataUrl", default_value=no_snapshot_uri(default_bucket, base_prefix)
    )
    processing_instance_type = ParameterString(name="ProcessingInstanceType", default_value="ml.m5.xlarge")
    training_instance_type = ParameterString(name="TrainingInstanceType", default_value="ml.m5.2xlarge")
    algorithm = ParameterString(
        name="TrainingAlgorithm", default_value=training_algorithm, enum_values=[training_algorithm]
    )
    epochs = ParameterString(
        name="Epochs", default_value=str(recipe.default_epochs)
    )  # hyperparameters: strings
    image_size = ParameterString(name="ImageSize", default_value=str(recipe.default_image_size))
    threshold = ParameterFloat(name=bar.threshold_name, default_value=recipe.threshold_default)
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
    cache = CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY)
    preprocess_output = s3_join(prefix, "preprocess")
    data_report = PropertyFile(name="DataReport", output_name="report", path="data-report.json")

    preprocess = preprocess_step(
        session, role=role, image_uri=python_image, instance_type=processing_instance_type,
        input_data_url=input_data_url, code_uri=code.step(recipe.preprocess_script).uri,
        output_uri=preprocess_output, cache=cache, script=recipe.preprocess_script,
        distribution="FullyReplicated",  # a manifest and the photos it names go to the same instance
        property_files=[data_report],
        extra_arguments=[
            "--image-size", image_size,
            # the augmented manifests name each photo by where this execution's output puts it
            "--output-uri", execution_uri(preprocess_output),
        ],
    )  # fmt: skip

    def report_value(path: str) -> Join:
        """A value of Preprocess's data report, as the string a hyperparameter is."""
        value = JsonGet(step_name=preprocess.name, property_file=data_report, json_path=path)
        return Join(on="", values=[value])

    training = dict(
        session=session, role=role, instance_type=training_instance_type,
        train_uri=split_uri(preprocess, "train"), validation_uri=split_uri(preprocess, "validation"),
        output_uri=s3_join(prefix, "models"), metric_definitions=recipe.metric_definitions, cache=cache,
    )  # fmt: skip
    if training_algorithm == GLUON:
        train = gluon_train_step(
            **training, image_uri=mxnet_image, sourcedir_uri=code.step(recipe.train_program).uri,
            program=recipe.train_program, hyperparameters=recipe.gluon_hyperparameters(epochs, image_size),
            base_job_name=f"robocar-{recipe.name}-train",
        )  # fmt: skip
    else:
        train = builtin_train_step(
            **training, image_uri=image_uris.retrieve(recipe.builtin_algorithm, region),
            hyperparameters=recipe.builtin_hyperparameters(epochs, image_size, report_value),
            label_attribute=recipe.label_attribute, base_job_name=f"robocar-{recipe.name}-builtin",
        )  # fmt: skip
    mxnet_jobs = dict(role=role, image_uri=mxnet_image, instance_type=processing_instance_type)
    evaluate, report = evaluate_step(
        session, **mxnet_jobs, code_uri=code.step(recipe.evaluate_script).uri,
        script=recipe.evaluate_script, model_uri=model_artifacts_uri(train),
        test_uri=split_uri(preprocess, "test"), train_uri=split_uri(preprocess, "train"),
        output_uri=s3_join(prefix, "evaluate"), model_package_group_name=model_package_group_name,
        edge_targets=edge_targets_param, region=region,
    )  # fmt: skip
    compile_, compiled = compile_step(
        session, **mxnet_jobs, code_uri=code.step(recipe.compile_script).uri,
        script=recipe.compile_script, model_uri=model_artifacts_uri(train),
        train_uri=split_uri(preprocess, "train"), test_uri=split_uri(preprocess, "test"),
        output_uri=s3_join(prefix, "edge"), edge_targets=edge_targets_param, region=region, cache=cache,
    )  # fmt: skip
    register = register_step(
        # the endpoint serves from the project's image too (its `serve`: infra/images/mxnet/serve)
        session, bucket=default_bucket, role=role, inference_image_uri=mxnet_image,
        model_uri=model_artifacts_uri(train), evaluation_uri=evaluation_uri(evaluate),
        model_package_group_name=model_package_group_name, approval_status=approval_status,
        edge_targets=targets, compile_step=compile_, compiled=compiled, compiled_uri=compiled_uri(compile_),
        content_types=recipe.content_types,
    )  # fmt: skip
    gate = quality_gate.quality_gate_steps(
        evaluate_step=evaluate,
        report=report,
        threshold=threshold,
        register_steps=[compile_, register],
        bar=bar,
    )
    return Pipeline(
        name=pipeline_name,
        parameters=[
            input_data_url,
            processing_instance_type,
            training_instance_type,
            algorithm,
            epochs,
            image_size,
            threshold,
            approval_status,
            edge_targets_param,
        ],  # fmt: skip
        steps=[preprocess, train, evaluate, *gate],
        sagemaker_session=session,
    )
