"""The demo's second recipe: labelled photos -> the classifier pipeline locally -> approve -> the car
classifies photos it has never seen.

Like the pilot's half (pipelines/demo.py), each stage runs the command a user would type, and the summary
is read back from what the stages wrote: the data report, the evaluation, the registry, the compiled
artifacts and the car's JSON lines, which are scored against the new photos' own labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.settings import RECIPE_NAMES
from pipelines.demo import (
    ImageRecipeDemo,
    _fmt,
    image_data_line,
    image_recipe_outputs,
    newest_execution,
    package_lines,
    run_image_recipe_demo,
)

PIPELINE_NAME, GROUP = RECIPE_NAMES["classifier"]
# The demo's own choices (the pipeline's defaults are in pipelines/classifier/pipeline.py): 4 classes,
# 600 photos and 2 epochs from ImageNet weights reach ~1.0 test accuracy in about a minute on 2 cores.
DEMO_CLASSES = 4
DEMO = ImageRecipeDemo(
    "classifier", "--classifier", "labels", "car-photos", "car-classifier", "classify",
    classes=DEMO_CLASSES, photos=600, epochs=2,
    car_photos=100,  # new photos (another seed) the car classifies after approval
    artifact="int8",
)  # fmt: skip


def run_classifier_demo(workspace: Path, seed: int) -> dict[str, Any]:
    """Every stage of the classifier's half; returns what the summary needs from the car."""
    summary, unseen, results = run_image_recipe_demo(DEMO, workspace, seed)
    summary["accuracy_on_new_photos"] = car_accuracy(results, unseen)
    # this half's execution: the summary reads it, not a later one (the auto-labelling loop's retrain)
    summary["execution"] = str(newest_execution(workspace, PIPELINE_NAME).path)
    return summary


def car_accuracy(results: Path, labelled: Path) -> dict[str, Any]:
    """The car's top-1 against the labels of the photos it classified (their Ground Truth manifest)."""
    from pipelines.synth_classes import MANIFEST_NAME

    truth = {}
    for line in (labelled / MANIFEST_NAME).read_text().splitlines():
        record = json.loads(line)
        attribute = next(k for k in record if k != "source-ref" and not k.endswith("-metadata"))
        truth[record["source-ref"].rsplit("/", 1)[-1]] = record[f"{attribute}-metadata"]["class-name"]
    scored = correct = 0
    for line in results.read_text().splitlines() if results.exists() else []:
        result = json.loads(line)
        name = Path(str(result.get("origin") or "")).name
        if name in truth and result.get("top"):
            scored += 1
            correct += result["top"][0]["class"] == truth[name]
    return {"photos": scored, "correct": correct, "accuracy": correct / scored if scored else None}


def summary_lines(workspace: Path, car: dict[str, Any]) -> list[str]:
    """The classifier's part of the closing summary."""
    from pipelines.local.store import load

    execution = (
        load(Path(car["execution"])) if car.get("execution") else newest_execution(workspace, PIPELINE_NAME)
    )
    outputs = image_recipe_outputs(workspace, execution, GROUP)
    evaluation = outputs.evaluation
    metrics = evaluation["multiclass_classification_metrics"]
    champion = (evaluation.get("champion") or {}).get("accuracy", {}).get("value")
    lines = [
        "classifier",
        image_data_line(outputs.data, "labelled"),
        f"metrics   on {evaluation['test_images']} test photos        model    baseline  champion",
        f"          accuracy                 {_fmt(metrics['accuracy']['value']):>8} "
        f"{_fmt(evaluation['baseline']['accuracy']['value']):>10} {_fmt(champion):>9}",
        f"          top-{metrics['top_k_accuracy']['k']} accuracy           "
        f"{_fmt(metrics['top_k_accuracy']['value']):>8}",
        *package_lines(outputs),
    ]
    scored = car.get("accuracy_on_new_photos") or {}
    if car:
        lines.append(
            f"car       classified {car.get('photos', '?')} new photos with {car.get('artifact', '?')}: "
            f"{car.get('fps', 0):.0f} photos/s, top-1 right on {scored.get('correct', '?')} of "
            f"{scored.get('photos', '?')} ({_fmt(scored.get('accuracy'), 3)})"
        )
    return lines
