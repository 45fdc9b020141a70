"""The gate after Evaluate: a model below the quality bar fails loudly; a good one is registered once.

Two Condition steps, both reading Evaluate's report:

- ``CheckQuality``: the recipe's metric within its threshold (the pilot: test angle MAE within
  ``AngleMaeThreshold``, else ``AngleMaeTooHigh``; the classifier: test accuracy at least
  ``AccuracyThreshold``, else ``AccuracyTooLow``)? The Fail step names the metric and the threshold.
- ``ShouldRegister``: the same bar *and* this model (the training job's ``S3ModelArtifacts``) not yet in
  the group? Then CompileForEdge -> Register; else nothing: an identical rerun (Preprocess and Train from
  the cache) ends here, ``ShouldRegister -> False``, instead of registering the same model again.

Side by side rather than nested: AWS's published pipeline-definition schema allows no Condition step in
another's ``IfSteps``, and the repeated MAE condition keeps ``ShouldRegister`` false whenever the Fail
step runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagemaker.core.workflow.conditions import (
    ConditionEquals,
    ConditionGreaterThanOrEqualTo,
    ConditionLessThanOrEqualTo,
)
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.steps import ProcessingStep, Step

from steps.evaluate import ACCURACY_PATH, ALREADY_REGISTERED_PATH, ANGLE_MAE_PATH, MAP_50_PATH


@dataclass(frozen=True)
class QualityBar:
    """What the gate reads from evaluation.json and how it compares it with the threshold parameter."""

    metric_path: str
    higher_is_better: bool
    fail_step_name: str
    metric_words: str  # e.g. "Test angle MAE"
    threshold_name: str


ANGLE_MAE_BAR = QualityBar(ANGLE_MAE_PATH, False, "AngleMaeTooHigh", "Test angle MAE", "AngleMaeThreshold")
ACCURACY_BAR = QualityBar(ACCURACY_PATH, True, "AccuracyTooLow", "Test accuracy", "AccuracyThreshold")
MAP_BAR = QualityBar(MAP_50_PATH, True, "MapTooLow", "Test mAP@0.5", "MapThreshold")


def quality_gate_steps(
    *,
    evaluate_step: ProcessingStep,
    report: PropertyFile,
    threshold: Any,
    register_steps: list[Step],
    bar: QualityBar = ANGLE_MAE_BAR,
) -> list[ConditionStep]:
    def report_value(path: str) -> JsonGet:
        return JsonGet(step_name=evaluate_step.name, property_file=report, json_path=path)

    metric = report_value(bar.metric_path)
    compare = ConditionGreaterThanOrEqualTo if bar.higher_is_better else ConditionLessThanOrEqualTo
    good_enough = compare(left=metric, right=threshold)
    side = "below" if bar.higher_is_better else "above"
    fail = FailStep(
        name=bar.fail_step_name,
        error_message=Join(
            on=" ",
            values=[bar.metric_words, metric, f"is {side} the threshold {bar.threshold_name} =", threshold],
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
