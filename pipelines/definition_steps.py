"""The steps of a pipeline definition, Condition branches included: the one walker of the step tree.

A ConditionStep holds its branches in ``Arguments.IfSteps`` and ``Arguments.ElseSteps`` (the
ConditionStep of AWS's pipeline definition schema, ``pipelines/schemas/pipeline-definition.schema.json``;
https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-sdk.html shows a condition step in a DAG);
those steps appear nowhere else in the definition, so every reader of "all steps" walks into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

CONDITION = "Condition"
Branch = tuple[str, bool]  # (condition step's name, True for IfSteps / False for ElseSteps)


def condition_branches(step: Any) -> tuple[list[Any], list[Any]]:
    """``(IfSteps, ElseSteps)`` of a Condition step; two empty lists for any other step."""
    if not isinstance(step, dict) or step.get("Type") != CONDITION:
        return [], []
    arguments = step.get("Arguments") or {}
    return list(arguments.get("IfSteps") or []), list(arguments.get("ElseSteps") or [])


def walk_steps(steps: Iterable[Any], branch: Branch | None = None) -> Iterator[tuple[Any, Branch | None]]:
    """Each step with the branch it sits in (None at the top level), depth first in definition order.

    A step is yielded before its branches are read, so a caller can refuse a malformed one first.
    """
    for step in steps:
        yield step, branch
        if_steps, else_steps = condition_branches(step)
        if if_steps or else_steps:
            yield from walk_steps(if_steps, (step["Name"], True))
            yield from walk_steps(else_steps, (step["Name"], False))


def all_steps(steps: Iterable[Any]) -> Iterator[Any]:
    """Every step, nested ones included (``walk_steps`` without the branches)."""
    return (step for step, _ in walk_steps(steps))
