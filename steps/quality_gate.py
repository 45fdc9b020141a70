"""CheckQuality: register only a pilot whose test angle MAE is within the threshold; else fail loudly."""

from __future__ import annotations

from typing import Any

from sagemaker.core.workflow.conditions import ConditionLessThanOrEqualTo
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.steps import ProcessingStep, Step

from steps.evaluate import ANGLE_MAE_PATH


def quality_gate_step(
    *, evaluate_step: ProcessingStep, report: PropertyFile, threshold: Any, if_steps: list[Step]
) -> ConditionStep:
    angle_mae = JsonGet(step_name=evaluate_step.name, property_file=report, json_path=ANGLE_MAE_PATH)
    fail = FailStep(
        name="AngleMaeTooHigh",
        error_message=Join(
            on=" ",
            values=["Test angle MAE", angle_mae, "is above the threshold AngleMaeThreshold =", threshold],
        ),
    )
    return ConditionStep(
        name="CheckQuality",
        conditions=[ConditionLessThanOrEqualTo(left=angle_mae, right=threshold)],
        if_steps=if_steps,
        else_steps=[fail],
    )
