"""Photos of coloured rectangles at known boxes, in the layout Preprocess writes for a detector
(``images/``, ``annotations.jsonl`` with normalised boxes, ``classes.json``): a stand-in until
``pipelines/synth_boxes.py`` is on main."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}


def write_boxed_channel(channel: Path, photos: int, seed: int, side: int = 128) -> list[list[list[float]]]:
    """``photos`` photos with 1 to 3 non-overlapping rectangles each (sides 15% to 45% of the photo) on a
    noisy grey background; returns the boxes per photo, [class_id, xmin, ymin, xmax, ymax] normalised."""
    rng = np.random.default_rng(seed)
    (channel / "images").mkdir(parents=True, exist_ok=True)
    lines, everything = [], []
    for index in range(photos):
        pixels = rng.normal(128, 20, (side, side, 3)).clip(0, 255)
        boxes: list[list[float]] = []
        for _ in range(50):  # tries, until 1 to 3 rectangles are placed
            if len(boxes) == rng.integers(1, 4):
                break
            width, height = rng.integers(int(0.15 * side), int(0.45 * side), size=2)
            left, top = rng.integers(0, side - width), rng.integers(0, side - height)
            box = [left / side, top / side, (left + width) / side, (top + height) / side]
            if any(b[1] < box[2] and box[0] < b[3] and b[2] < box[3] and box[1] < b[4] for b in boxes):
                continue
            cls = int(rng.integers(0, len(COLOURS)))
            pixels[top : top + height, left : left + width] = list(COLOURS.values())[cls]
            boxes.append([cls, *box])
        name = f"images/{index:06d}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(channel / name, quality=90)
        lines.append(json.dumps({"image": name, "boxes": boxes}) + "\n")
        everything.append(boxes)
    (channel / "annotations.jsonl").write_text("".join(lines))
    (channel / "classes.json").write_text(json.dumps(list(COLOURS)) + "\n")
    return everything
