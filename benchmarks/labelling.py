"""Auto-labelling (issue 19 item 5): pre-label throughput, and the pre-labels a correct reviewer keeps.

A person's labels per hour cannot be measured here; what decides them can. For each image recipe, in one
run, on a workspace of its own (``--workspace``, else a temporary one):

1. train a small model the way the demo does (``robocar data synth`` -> ``robocar run --local`` ->
   ``robocar registry approve latest``), unless the group already has an Approved package;
2. write a synthetic **unlabelled** set (``robocar data synth --unlabelled``: another seed, the truth kept
   apart) and pre-label the same photos with ``robocar label predict`` twice: ``--via car`` (the car's
   runtime on the package's ONNX artifact) and ``--via endpoint`` (the local endpoint ``robocar endpoint
   deploy`` starts: MXNet behind HTTP). Pre-label photos/s is each report's ``images_per_second`` (from
   the first photo read to the last record, setup excluded); the car is the baseline of the ratio;
3. score the endpoint's pre-labels against the truth at each confidence threshold t: of the photos whose
   pre-label scores at least t (what ``--review-below t`` accepts as machine labels), the share a correct
   reviewer would accept unchanged, and the share of all photos that is. A classification is accepted
   when its class is the true one; a detection when its boxes and the true boxes match one to one, same
   class, IoU >= ``ACCEPT_IOU``, none left over on either side;
4. plot both curves per recipe (``--plot``, a PNG) and print the figures as JSON.

Usage: ``python benchmarks/labelling.py [--workspace DIR] [--photos 200] [--plot benchmarks/labelling.png]``
(about 5 minutes on 2 cores, most of it training; with ``--workspace`` holding Approved packages, well
under one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# 0.75: COCO's strict IoU. A box shifted by d of its side along one axis keeps IoU (1 - d) / (1 + d), so
# 0.75 lets it be off by a seventh of its size (or 15% too large on each axis: 1 / 1.15^2 = 0.76): a box
# a reviewer keeps rather than redraws; at 0.5 (the mAP threshold) a box half off its object would count
# as accepted.
ACCEPT_IOU = 0.75
THRESHOLDS = [round(0.05 * i, 2) for i in range(21)]
# The demo's recipe settings: the classifier's (docs/classifier.md: ~1.0 test accuracy), and the detection
# recipe's default epochs on 600 photos (docs/detection.md: validation mAP@0.5 ~0.87; 12 epochs on 300
# photos gave 0.56 and a reviewer would keep 2.5% of its pre-labels). Training takes ~4 min on 2 cores.
RECIPES = {
    "classifier": {"synth": "--classifier", "classes": 3, "images": 300, "epochs": 2},
    "detection": {"synth": "--detection", "classes": 3, "images": 600, "epochs": 24},
}


def robocar(*argv: Any) -> None:
    from pipelines.demo import robocar as run

    run(*argv)


def has_approved(workspace: Path, recipe: str) -> bool:
    from edge.aws import clients
    from edge.registry import APPROVED, newest
    from edge.settings import RECIPE_NAMES

    sagemaker = clients(local_root=workspace).sagemaker
    try:
        return newest(sagemaker, RECIPE_NAMES[recipe][1], APPROVED) is not None
    except Exception:  # no group yet
        return False


def train(workspace: Path, recipe: str) -> None:
    settings = RECIPES[recipe]
    labels = workspace / f"labels-{recipe}"
    robocar(
        "data",
        "synth",
        settings["synth"],
        "--out",
        labels / "synth",
        "--classes",
        settings["classes"],
        "--images",
        settings["images"],
        "--seed",
        0,
    )
    robocar(
        "run",
        "--local",
        "--workspace",
        workspace,
        "--recipe",
        recipe,
        "--data",
        labels,
        "--param",
        f"Epochs={settings['epochs']}",
    )
    robocar("registry", "approve", "latest", "--workspace", workspace, "--recipe", recipe)


def prelabel(workspace: Path, recipe: str, images: Path, via: str) -> dict[str, Any]:
    out = workspace / f"prelabels-{recipe}-{via}"
    robocar(
        "label",
        "predict",
        images,
        "--out",
        out,
        "--recipe",
        recipe,
        "--workspace",
        workspace,
        "--via",
        via,
        "--job-name",
        f"bench-{via}",
    )
    report = json.loads((out / "predict-report.json").read_text())
    records = [
        json.loads(line)
        for name in ("to-review.manifest", "machine-labelled.manifest")
        for line in (out / name).read_text().splitlines()
    ]
    return {"report": report, "records": records}


# ---------------------------------------------------------------- acceptance
def truth_by_photo(truth_manifest: Path) -> dict[str, Any]:
    """Photo file name -> its true label (a class id, or the annotations in pixels)."""
    truth = {}
    for line in truth_manifest.read_text().splitlines():
        record = json.loads(line)
        attribute = next(k for k in record if k != "source-ref" and not k.endswith("-metadata"))
        truth[record["source-ref"].rsplit("/", 1)[1]] = record[attribute]
    return truth


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    width = min(a["left"] + a["width"], b["left"] + b["width"]) - max(a["left"], b["left"])
    height = min(a["top"] + a["height"], b["top"] + b["height"]) - max(a["top"], b["top"])
    inter = max(width, 0) * max(height, 0)
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def boxes_accepted(predicted: list[dict], truth: list[dict], min_iou: float = ACCEPT_IOU) -> bool:
    """One-to-one by class at IoU >= ``min_iou`` (greedy, best pair first), nothing left over."""
    if len(predicted) != len(truth):
        return False
    pairs = sorted(
        (
            (iou(p, t), i, j)
            for i, p in enumerate(predicted)
            for j, t in enumerate(truth)
            if p["class_id"] == t["class_id"]
        ),
        reverse=True,
    )
    used_p, used_t = set(), set()
    for overlap, i, j in pairs:
        if overlap >= min_iou and i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_p) == len(predicted)


def scored(
    records: list[dict], truth: dict[str, Any], attribute: str = "prelabel", min_iou: float = ACCEPT_IOU
) -> list[tuple[float, bool]]:
    """(confidence, accepted unchanged) of each pre-label."""
    from pipelines.labelling.manifest import record_confidence

    out = []
    for record in records:
        label, true = record[attribute], truth[Path(record["source-ref"]).name]
        accepted = (
            label == true
            if isinstance(label, int)
            else boxes_accepted(label["annotations"], true["annotations"], min_iou)
        )
        out.append((record_confidence(record, attribute), accepted))
    return out


def acceptance_curve(scores: list[tuple[float, bool]]) -> list[dict[str, Any]]:
    """Per threshold t: the share of photos scoring >= t, and of those the share accepted unchanged."""
    curve = []
    for t in THRESHOLDS:
        above = [accepted for confidence, accepted in scores if confidence >= t]
        curve.append(
            {
                "threshold": t,
                "coverage": round(len(above) / len(scores), 4),
                "accepted_unchanged": round(sum(above) / len(above), 4) if above else None,
            }
        )
    return curve


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for axis, (recipe, result) in zip(axes[0], results.items(), strict=True):
        curve = result["curve"]
        thresholds = [p["threshold"] for p in curve]
        axis.plot(
            thresholds, [p["accepted_unchanged"] for p in curve], marker="o", label="accepted unchanged"
        )
        axis.plot(thresholds, [p["coverage"] for p in curve], marker=".", label="share of photos at or above")
        axis.set(
            title=f"{recipe} ({result['photos']} photos)",
            xlabel="confidence threshold (--review-below)",
            ylim=(0, 1.02),
        )
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def run_recipe(workspace: Path, recipe: str, photos: int) -> dict[str, Any]:
    if not has_approved(workspace, recipe):
        train(workspace, recipe)
    settings = RECIPES[recipe]
    unlabelled = workspace / f"unlabelled-{recipe}"
    if not unlabelled.exists():
        robocar(
            "data",
            "synth",
            settings["synth"],
            "--unlabelled",
            "--out",
            unlabelled,
            "--classes",
            settings["classes"],
            "--images",
            photos,
            "--seed",
            1000,
        )
    car = prelabel(workspace, recipe, unlabelled / "images", "car")
    robocar("endpoint", "deploy", "--workspace", workspace, "--recipe", recipe)
    try:
        endpoint = prelabel(workspace, recipe, unlabelled / "images", "endpoint")
    finally:
        robocar("endpoint", "delete", "--workspace", workspace, "--recipe", recipe)
    truth = truth_by_photo(unlabelled / "truth" / "output.manifest")
    scores = scored(endpoint["records"], truth)
    car_scores = scored(car["records"], truth)
    car_rate, endpoint_rate = (x["report"]["images_per_second"] for x in (car, endpoint))
    result = {
        "photos": len(scores),
        "images_per_second": {
            "car": car_rate,
            "endpoint": endpoint_rate,
            "endpoint_vs_car": round(endpoint_rate / car_rate, 3),
        },
        "car_artifact": car["report"]["via"].get("artifact"),
        "accepted_unchanged_all": {
            "endpoint": round(sum(a for _, a in scores) / len(scores), 4),
            "car": round(sum(a for _, a in car_scores) / len(car_scores), 4),
        },
        "curve": acceptance_curve(scores),
    }
    if recipe == "detection":  # the same pre-labels judged at the mAP threshold: what the strict IoU costs
        strict = scored(endpoint["records"], truth, min_iou=0.5)
        result["accepted_unchanged_all"]["endpoint_at_iou_0.5"] = round(
            sum(a for _, a in strict) / len(strict), 4
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--photos", type=int, default=200, help="unlabelled photos per recipe")
    parser.add_argument("--recipes", default="classifier,detection")
    parser.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "labelling.png")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    # The MXNet environment the tests build, reused (local mode builds it per workspace otherwise).
    os.environ.setdefault("ROBOCAR_ENV_CACHE", str(Path.home() / ".cache" / "robocar-envs"))
    with tempfile.TemporaryDirectory(prefix="robocar-labelling-") as scratch:
        workspace = args.workspace or Path(scratch)
        results = {recipe: run_recipe(workspace, recipe, args.photos) for recipe in args.recipes.split(",")}
    plot(results, args.plot)
    text = json.dumps({"accept_iou": ACCEPT_IOU, "recipes": results}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
