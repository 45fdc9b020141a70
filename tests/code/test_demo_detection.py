"""The demo's detector half scores the car's boxes against the true boxes of the photos it saw."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.demo_detection import car_found, true_boxes
from pipelines.synth_boxes import write_boxes


def test_the_car_is_scored_against_the_boxes_of_the_photos_it_detected_in(tmp_path: Path) -> None:
    labelled = tmp_path / "photos"
    write_boxes(labelled, classes=3, images=8, seed=5)
    truth = true_boxes(labelled)
    names = sorted(truth)
    assert all(0 <= v <= 1 for objects in truth.values() for _, box in objects for v in box)
    lines = []
    for index, name in enumerate(names[:6]):  # photo 0: every object twice; 1: a wrong class; 2: nothing
        objects = truth[name]
        boxes = [{"class": cls, "score": 0.9, "box": box} for cls, box in objects]
        if index == 0:
            boxes += boxes  # a second box on a found object finds nothing
        if index == 1:
            wrong = next(c for c in ("circle", "square", "triangle") if c != objects[0][0])
            boxes[0] = {**boxes[0], "class": wrong}
        if index == 2:
            boxes = []
        lines.append(json.dumps({"frame": index, "origin": f"images/{name}", "boxes": boxes}))
    lines.append(json.dumps({"frame": 9, "origin": "elsewhere.jpg", "boxes": [{"class": "circle"}]}))
    results = tmp_path / "detect.jsonl"
    results.write_text("\n".join(lines) + "\n")

    scored = car_found(results, labelled)

    counts = [len(truth[name]) for name in names[:6]]
    assert scored == {
        "photos": 6,
        "objects": sum(counts),
        "found": sum(counts) - 1 - counts[2],  # the wrong class and the empty photo's objects are missed
        "false_boxes": counts[0] + 1,  # the duplicates and the wrong class
    }
    assert car_found(tmp_path / "missing.jsonl", labelled)["photos"] == 0
