"""The demo's third recipe: boxed photos -> the detection pipeline locally -> approve -> the car detects
objects in photos it has never seen.

Like the classifier's half (pipelines/demo_classifier.py), each stage runs the command a user would type,
and the summary is read back from what the stages wrote: the data report, the evaluation (mAP, per-class
AP), the registry, the compiled artifacts and the car's JSON lines, whose boxes are scored against the new
photos' own Ground Truth boxes.
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

PIPELINE_NAME, GROUP = RECIPE_NAMES["detection"]
# The demo's own choices (the recipe's defaults are in pipelines/detection/pipeline.py): 3 classes, 600
# photos and the recipe's 24 epochs. The whole half took 69 s on 2 cores at load average 2 (the MXNet
# environment already built by the classifier's half): test mAP@0.5 0.928 at seed 7, and the car found
# 147 of the 157 objects in 60 new photos. At 12 epochs it was 0.61 with the old overlap threshold.
DEMO = ImageRecipeDemo(
    "detection", "--detection", "boxes", "car-boxes", "car-detector", "detect",
    classes=3, photos=600, epochs=24,
    car_photos=60,  # new photos (another seed) the car detects in after approval
    artifact="int8",
)  # fmt: skip
MATCH_IOU = 0.5  # a reported box finds a true object of its class at this IoU (mAP@0.5's)


def run_detection_demo(workspace: Path, seed: int) -> dict[str, Any]:
    """Every stage of the detector's half; returns what the summary needs from the car."""
    summary, unseen, results = run_image_recipe_demo(DEMO, workspace, seed)
    summary["found_on_new_photos"] = car_found(results, unseen)
    return summary


def true_boxes(labelled: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Photo name -> its objects (class name, [xmin, ymin, xmax, ymax] normalised) from the Ground Truth
    bounding-box manifest the synthetic photos came with."""
    from pipelines.synth_classes import MANIFEST_NAME

    truth = {}
    for line in (labelled / MANIFEST_NAME).read_text().splitlines():
        record = json.loads(line)
        attribute = next(k for k in record if k != "source-ref" and not k.endswith("-metadata"))
        (size,) = record[attribute]["image_size"]
        names = record[f"{attribute}-metadata"]["class-map"]
        truth[record["source-ref"].rsplit("/", 1)[-1]] = [
            (names[str(a["class_id"])], [a["left"] / size["width"], a["top"] / size["height"],
             (a["left"] + a["width"]) / size["width"], (a["top"] + a["height"]) / size["height"]])
            for a in record[attribute]["annotations"]
        ]  # fmt: skip
    return truth


def car_found(results: Path, labelled: Path) -> dict[str, Any]:
    """The car's reported boxes against the photos' true ones: objects found (a reported box of the same
    class at IoU >= ``MATCH_IOU``, each box finding at most one object) and boxes that found none."""
    import numpy as np

    from processing.evaluate_detection import box_iou

    truth = true_boxes(labelled)
    photos = objects = found = false_boxes = 0
    for line in results.read_text().splitlines() if results.exists() else []:
        result = json.loads(line)
        name = Path(str(result.get("origin") or "")).name
        if name not in truth:
            continue
        photos += 1
        objects += len(truth[name])
        unmatched = list(truth[name])
        for box in result.get("boxes") or []:  # best first, as the car reports them
            same = [i for i, (cls, _) in enumerate(unmatched) if cls == box["class"]]
            overlaps = (
                box_iou(np.array([box["box"]]), np.array([unmatched[i][1] for i in same]))[0] if same else []
            )
            if len(overlaps) and overlaps.max() >= MATCH_IOU:
                unmatched.pop(same[int(np.argmax(overlaps))])
                found += 1
            else:
                false_boxes += 1
    return {"photos": photos, "objects": objects, "found": found, "false_boxes": false_boxes}


def summary_lines(workspace: Path, car: dict[str, Any]) -> list[str]:
    """The detector's part of the closing summary."""

    outputs = image_recipe_outputs(workspace, newest_execution(workspace, PIPELINE_NAME), GROUP)
    evaluation = outputs.evaluation
    metrics = evaluation["detection_metrics"]
    champion = ((evaluation.get("champion") or {}).get("map_50") or {}).get("value")
    lines = [
        "detector",
        image_data_line(outputs.data, "boxed"),
        f"metrics   on {evaluation['test_images']} test photos        model    baseline  champion",
        f"          mAP@0.5                  {_fmt(metrics['map_50']['value']):>8} "
        f"{_fmt(evaluation['baseline']['map_50']['value']):>10} {_fmt(champion):>9}",
        f"          mAP@0.5:0.95             {_fmt(metrics['map_50_95']['value']):>8}",
        "          AP@0.5 per class         "
        + ", ".join(f"{name} {_fmt(ap, 3)}" for name, ap in metrics["per_class_ap_50"].items()),
        *package_lines(outputs),
    ]
    scored = car.get("found_on_new_photos") or {}
    if car:
        lines.append(
            f"car       detected in {car.get('photos', '?')} new photos with {car.get('artifact', '?')}: "
            f"{car.get('fps', 0):.0f} photos/s, found {scored.get('found', '?')} of "
            f"{scored.get('objects', '?')} objects, {scored.get('false_boxes', '?')} boxes of nothing"
        )
    return lines
