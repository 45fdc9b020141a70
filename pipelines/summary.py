"""A readable summary of a pipeline definition: parameters, and the steps as a tree with their wiring."""

from __future__ import annotations

from typing import Any

from edge.agent import edge_targets_of
from pipelines.definition_steps import condition_branches

STEP_INPUTS = {
    "Processing": lambda a: [i["InputName"] for i in a.get("ProcessingInputs", [])],
    "Training": lambda a: [c["ChannelName"] for c in a.get("InputDataConfig", [])],
}


def _script(step: dict[str, Any]) -> str:
    args = step["Arguments"]
    if step["Type"] == "Processing":
        return args["AppSpecification"]["ContainerEntrypoint"][-1].rsplit("/code/", 1)[-1]
    if step["Type"] == "Training":
        return args["HyperParameters"].get("sagemaker_program", "").strip('"')
    if step["Type"] == "RegisterModel":
        targets = edge_targets_of(args.get("CustomerMetadataProperties") or {})
        return f"group {args['ModelPackageGroupName']}, edge artifacts: {', '.join(targets)}"
    return ""


def _expr(value: Any) -> str:
    if isinstance(value, dict):
        if "Get" in value:
            return value["Get"]
        if "Std:JsonGet" in value:
            return (
                f"{value['Std:JsonGet']['PropertyFile']['Get'].split('.')[-1]}:{value['Std:JsonGet']['Path']}"
            )
        if "Std:Join" in value:
            return " ".join(_expr(v) for v in value["Std:Join"]["Values"])
    return str(value)


def _step_lines(steps: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for step in steps:
        detail = _script(step)
        lines.append(f"{indent}{step['Name']:<16} {step['Type']:<14} {detail}".rstrip())
        inputs = STEP_INPUTS.get(step["Type"])
        if inputs:
            lines.append(f"{indent}{'':<16} {'':<14} inputs: {', '.join(inputs(step['Arguments']))}")
        if step["Type"] == "Condition":
            conditions = step["Arguments"]["Conditions"]
            for index, cond in enumerate(conditions):  # SageMaker ANDs a step's conditions
                word, end = ("if" if index == 0 else "and"), (":" if index == len(conditions) - 1 else "")
                comparison = f"{_expr(cond['LeftValue'])} {cond['Type']} {_expr(cond['RightValue'])}"
                lines.append(f"{indent}  {word} {comparison}{end}")
            if_steps, else_steps = condition_branches(step)
            lines += _step_lines(if_steps, indent + "    ") or [f"{indent}    (nothing)"]
            lines.append(f"{indent}  else:")
            lines += _step_lines(else_steps, indent + "    ") or [f"{indent}    (nothing)"]
    return lines


def summarise(definition: dict[str, Any], pipeline_name: str) -> str:
    lines = [f"Pipeline {pipeline_name}", "", "Parameters:"]
    for p in definition["Parameters"]:
        enum = f"  one of {', '.join(p['EnumValues'])}" if p.get("EnumValues") else ""
        lines.append(f"  {p['Name']:<24} {p['Type']:<8} = {p.get('DefaultValue')!s}{enum}")
    lines += ["", "Steps:"]
    lines += _step_lines(definition["Steps"], "  ")
    return "\n".join(lines)
