"""The gate after Evaluate: a pilot below the quality bar fails loudly; a good one is registered once.

Two Condition steps, both reading Evaluate's report:

- ``CheckQuality``: test angle MAE within ``AngleMaeThreshold``? Else ``AngleMaeTooHigh`` fails the
  execution with the metric and the threshold.
- ``ShouldRegister``: the same bar *and* this model (the training job's ``S3ModelArtifacts``) not yet in
  the group? Then CompileForEdge -> Register; else nothing: an identical rerun (Preprocess and Train from
  the cache) ends here, ``ShouldRegister -> False``, instead of registering the same model again.

Side by side rather than nested: AWS's published pipeline-definition schema allows no Condition step in
another's ``IfSteps``, and the repeated MAE condition keeps ``ShouldRegister`` false whenever the Fail
step runs.
"""

from __future__ import annotations

from typing import Any

from sagemaker.core.workflow.conditions import ConditionEquals, ConditionLessThanOrEqualTo
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.steps import ProcessingStep, Step

from steps.evaluate import ALREADY_REGISTERED_PATH, ANGLE_MAE_PATH


def quality_gate_steps(
    *, evaluate_step: ProcessingStep, report: PropertyFile, threshold: Any, register_steps: list[Step]
) -> list[ConditionStep]:
    def report_value(path: str) -> JsonGet:
        return JsonGet(step_name=evaluate_step.name, property_file=report, json_path=path)

    angle_mae = report_value(ANGLE_MAE_PATH)
    good_enough = ConditionLessThanOrEqualTo(left=angle_mae, right=threshold)
    fail = FailStep(
        name="AngleMaeTooHigh",
        error_message=Join(
            on=" ",
            values=["Test angle MAE", angle_mae, "is above the threshold AngleMaeThreshold =", threshold],
        ),
    )
    check_quality = ConditionStep(
        name="CheckQuality", conditions=[good_enough], if_steps=[], else_steps=[fail]
    )
    should_register = ConditionStep(
        name="ShouldRegister",
        conditions=[good_enough, ConditionEquals(left=report_value(ALREADY_REGISTERED_PATH), right=False)],
        if_steps=register_steps,
        else_steps=[],  # already registered: nothing to do
    )
    return [check_quality, should_register]
