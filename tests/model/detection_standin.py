"""A stand-in detector for tests, run in the MXNet environment: a deploy symbol with the outputs
``training.detector.deploy_network`` gives (cls_prob (N, C+1, A), loc_preds (N, A*4), anchors (1, A, 4))
that finds a red square at ``RED_BOX`` (class 0) and a blue one at ``BLUE_BOX`` (class 1) by the mean
colour of the photo: two anchors placed on those boxes, zero offsets, class logits a linear function of
the channel means. ``write_photos`` makes splits as Preprocess does (annotations.jsonl, classes.json).

    python detection_standin.py evaluate --model DIR --test T --train T --output OUT ...  # evaluate_detection
    python detection_standin.py compile --model DIR --train T --test T --output OUT ...  # compile_detection
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = ["red", "blue", "never"]  # "never" has no true box in any split
RED_BOX, BLUE_BOX = (0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 0.9, 0.9)
SIDE = 64
SPEC = {
    "schema": "robocar/detector-spec/1",
    "classes": CLASSES,
    "input": {
        "height": SIDE,
        "width": SIDE,
        "resize_shorter_side": SIDE,
        "mean": [0.0] * 3,
        "std": [255.0] * 3,
        "scale": 1.0,
        "crop": "stretch",
    },  # fmt: skip
    "anchors": {"sizes": [[0.3, 0.4]], "ratios": [[1.0]]},
    "variances": [0.1, 0.1, 0.2, 0.2],
    "nms": {"threshold": 0.45, "topk": 400},
}


def write_photos(folder: Path, photos: int, seed: int) -> None:
    """Black photos, each with the red square, the blue one, or both (by ``seed``), and their boxes."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(photos):
        kinds = [[0], [1], [0, 1]][int(rng.integers(0, 3))]
        pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
        boxes = []
        for kind in kinds:
            box = (RED_BOX, BLUE_BOX)[kind]
            x0, y0, x1, y1 = (round(v * SIDE) for v in box)
            pixels[y0:y1, x0:x1, 2 * kind] = 255
            boxes.append([kind, *box])
        name = f"images/{i:06d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=95)
        lines.append(json.dumps({"image": name, "boxes": boxes}))
    (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "classes.json").write_text(json.dumps(CLASSES))


# The real detector's input, (pixel - 127) / 128 (training/detector.py): the stand-in then samples every
# other pixel through a 3x3 stride-2 convolution first, so its int8 heads can take pixel blocks.
PIXEL_SCALED_INPUT = {**SPEC["input"], "mean": [127.0] * 3, "std": [128.0] * 3}


def write_model(folder: Path, pixel_scaled: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**SPEC, "input": PIXEL_SCALED_INPUT} if pixel_scaled else SPEC
    (folder / "detector-spec.json").write_text(json.dumps(spec))


def deploy_network(model_dir: Path) -> tuple[Any, dict, dict]:
    """The stand-in's (symbol, arg_params, aux_params), as training.detector.deploy_network answers."""
    import mxnet as mx

    anchors_count, classes = 2, len(CLASSES)
    pixel_scaled = (
        json.loads((Path(model_dir) / "detector-spec.json").read_text())["input"]["mean"][0] == 127.0
    )
    data = mx.sym.var("data")
    if pixel_scaled:  # the centre tap of each channel: every other pixel, the squares' shares unchanged
        data = mx.sym.Convolution(data, kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_filter=3, no_bias=True,
                                  name="sample")  # fmt: skip
    means = mx.sym.mean(data, axis=(2, 3))  # (N, 3): the share of red, green, blue (or its scaled value)
    logits = mx.sym.FullyConnected(means, num_hidden=(classes + 1) * anchors_count, name="cls")
    cls_prob = mx.sym.softmax(
        mx.sym.reshape(logits, (0, classes + 1, anchors_count)), axis=1, name="cls_prob"
    )
    loc_preds = mx.sym.FullyConnected(means, num_hidden=anchors_count * 4, name="loc_preds")
    anchors = mx.sym.identity(
        mx.sym.var("anchor_boxes", shape=(1, anchors_count, 4), dtype="float32"), name="anchors"
    )
    # logits [class, anchor] = weight . (r, g, b) + bias; background 0; red area 9%, blue 16% of the photo
    weight = np.zeros((classes + 1, anchors_count, 3), np.float32)
    bias = np.full((classes + 1, anchors_count), -10.0, np.float32)
    bias[0] = 0.0
    weight[1, 0, 0], bias[1, 0] = 100.0, -3.0  # red on anchor 0
    weight[2, 1, 2], bias[2, 1] = 100.0, -3.0  # blue on anchor 1
    if pixel_scaled:  # share = (128 x + 127) / 255 for the scaled mean x
        bias, weight = bias + weight.sum(axis=2) * 127 / 255, weight * 128 / 255
    args = {
        "cls_weight": mx.nd.array(weight.reshape(-1, 3)),
        "cls_bias": mx.nd.array(bias.reshape(-1)),
        "loc_preds_weight": mx.nd.zeros((anchors_count * 4, 3)),
        "loc_preds_bias": mx.nd.zeros(anchors_count * 4),
        "anchor_boxes": mx.nd.array([[RED_BOX, BLUE_BOX]]),
    }
    if pixel_scaled:
        sample = np.zeros((3, 3, 3, 3), np.float32)
        sample[[0, 1, 2], [0, 1, 2], 1, 1] = 1.0
        args["sample_weight"] = mx.nd.array(sample)
    return mx.sym.Group([cls_prob, loc_preds, anchors]), args, {}


def deploy_detections(model_dir: Path) -> tuple[Any, dict, dict]:
    """The stand-in + MultiBoxDetection with the spec's settings, as training.detector.deploy_detections."""
    import mxnet as mx

    heads, args, aux = deploy_network(model_dir)
    detections = mx.sym.contrib.MultiBoxDetection(
        heads[0], heads[1], heads[2], nms_threshold=SPEC["nms"]["threshold"], nms_topk=SPEC["nms"]["topk"],
        threshold=0.01, variances=tuple(SPEC["variances"]), name="detection",
    )  # fmt: skip
    return detections, args, aux


def main(command: str, *arguments: str) -> None:
    if command == "evaluate":  # the rest: processing/evaluate_detection.py's own arguments
        from processing.evaluate_detection import load_mxnet_detector
        from processing.evaluate_detection import main as evaluate_main

        sys.exit(evaluate_main(list(arguments), loader=lambda d: load_mxnet_detector(d, deploy_network)))
    elif command == "compile":  # the rest: processing/compile_detection.py's own arguments
        from processing.compile_detection import main as compile_main

        sys.exit(compile_main(list(arguments), deploy=deploy_network, detections=deploy_detections))


if __name__ == "__main__":
    main(*sys.argv[1:])
