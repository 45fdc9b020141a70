"""The demo's third part: the auto-labelling loop (issue 19, docs/labelling.md) on the classifier the demo
just approved: new photos -> ``robocar label predict`` on the car's runtime -> a scripted reviewer ->
``robocar label land`` -> the new-data rule -> the retrained classifier.

The reviewer is a script standing in for a person at the review page: it walks the pre-labels through the
review server's HTTP API, the API the page itself sends its decisions to (docs/labelling-review.md), and
decides as a correct person would, from the synthetic photos' own labels (``truth/output.manifest``, kept
apart from the photos by ``robocar data synth --unlabelled``): it accepts a right pre-label and corrects a
wrong one. The summary says the command a person runs to do the same review in the browser.
"""

from __future__ import annotations

import json
import shlex
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.demo import _fmt, _s3_json, output_uri, recipe_settings_flags, robocar, this_models_package
from pipelines.demo_classifier import DEMO_CLASSES, GROUP, PIPELINE_NAME
from pipelines.labelling import manifest
from processing.ground_truth import ADJUSTMENT_STATUS, METADATA_SUFFIX

# The demo's own choice: 100 new photos, pre-labelled in well under a second on the car's runtime; the
# retrain then reads the 600 the classifier was trained on and these (docs/labelling.md, "The demo").
NEW_PHOTOS = 100
SEED_OFFSET = 2000  # new photos: another seed than the training set's (seed) and the car's (seed + 1000)
REQUEST_TIMEOUT_S = 30


def truth_classes(truth_manifest: Path) -> dict[str, str]:
    """The synthetic set's labels kept apart from its photos: photo file name -> class name."""
    truth = {}
    for record in manifest.read_records(truth_manifest):
        attribute = manifest.find_attribute(record)
        truth[Path(record["source-ref"]).name] = record[f"{attribute}{METADATA_SUFFIX}"]["class-name"]
    return truth


def _api(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the review server: JSON in (a POST) and out, as the page sends it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="GET" if body is None else "POST"
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:  # noqa: S310 (127.0.0.1)
        return json.loads(answer.read())


def correct_reviewer(url: str, truth: dict[str, str]) -> None:
    """Decide every record through the review server's API: accept a right pre-label, correct a wrong
    one to the photo's true class; a photo without a known class is rejected."""
    total = _api(url, "/api/state")["total"]
    for index in range(total):
        record = _api(url, f"/api/records/{index}")
        right = truth.get(Path(record["source_ref"]).name)
        if right is None:
            decision = {"action": "reject", "reason": "no known class"}
        elif record["prelabel"]["class"] == right:
            decision = {"action": "accept"}
        else:
            decision = {"action": "correct", "class": right}
        _api(url, "/api/decision", {"index": index, **decision})


def review_counts(reviewed: Path) -> dict[str, int]:
    """Accepted unchanged, corrected and rejected decisions of a review's output (``OUT`` and
    ``OUT.rejected``, docs/labelling-review.md)."""
    counts = {"accepted": 0, "corrected": 0, "rejected": 0}
    for record in manifest.read_records(reviewed):
        status = next(
            v[ADJUSTMENT_STATUS] for v in record.values() if isinstance(v, dict) and ADJUSTMENT_STATUS in v
        )
        counts["corrected" if status == "adjusted" else "accepted"] += 1
    rejected = Path(f"{reviewed}.rejected")
    if rejected.exists():
        counts["rejected"] = len(manifest.read_records(rejected))
    return counts


def labelling_lines(
    predicted: dict[str, Any],
    review: dict[str, int],
    data: dict[str, Any] | None,
    evaluation: dict[str, Any] | None,
    review_command: str,
    package: dict[str, Any] | None = None,
) -> list[str]:
    """The loop's part of the closing summary, from what its stages wrote: ``robocar label predict``'s
    report, the review's counts, and the retrain's data report and evaluation (None: nothing retrained)."""
    lines = [
        "auto-labelling",
        f"predict   {predicted['predicted']} of {predicted['photos']} new photos pre-labelled on the car's "
        f"runtime: {predicted['images_per_second']:.1f} photos/s",
        f"review    {review['accepted']} accepted unchanged, {review['corrected']} corrected, "
        f"{review['rejected']} rejected (a scripted correct reviewer, through the review page's API)",
    ]
    if data is None or evaluation is None:
        lines.append("retrain   no new execution: these labels had landed already (delete the workspace)")
    else:
        labels = data["labels"]
        accuracy = evaluation["multiclass_classification_metrics"]["accuracy"]["value"]
        reasons = ", ".join(f"{reason} x{n}" for reason, n in data.get("rejected_by_reason", {}).items())
        lines += [
            f"retrain   {data['read']} photos read, {data['accepted']} accepted"
            + (f" ({data['rejected']} rejected: {reasons})" if data["rejected"] else "")
            + f": {labels['human']} human labels, {labels['machine']} machine labels",
            f"          test accuracy {_fmt(accuracy)} on {evaluation['test_images']} photos",
        ]
        if package:
            lines.append(f"          {package['ModelPackageArn']} ({package['ModelApprovalStatus']})")
    lines.append(f"by hand   {review_command}   (the same review in your browser)")
    return lines


def run_labelling_demo(workspace: Path, seed: int) -> dict[str, Any]:
    """Every stage of the loop; returns where the summary reads from."""
    from pipelines.labelling.review import start_review_server
    from pipelines.local.store import list_executions

    seed += SEED_OFFSET
    new = workspace / "new-photos" / f"synth-{DEMO_CLASSES}x{NEW_PHOTOS}-s{seed}"
    if not new.exists():
        robocar(
            "data", "synth", "--classifier", "--unlabelled", "--out", new, "--classes", DEMO_CLASSES,
            "--images", NEW_PHOTOS, "--seed", seed,
        )  # fmt: skip
    flags = ["--workspace", workspace, *recipe_settings_flags("classifier")]
    prelabels = workspace / "prelabels"
    car = ["--via", "car", "--car-root", workspace / "labeller"]
    robocar("label", "predict", new / "images", "--out", prelabels, *car, *flags)
    to_review = prelabels / manifest.TO_REVIEW
    reviewed = prelabels / "to-review.reviewed.manifest"
    print(
        f"\n(the reviewer: a script deciding {to_review.name} through the review page's API, from the truth)"
    )
    # predict rewrote to-review.manifest (a rerun's model may order it otherwise), so the scripted review
    # starts anew; the review server refuses a journal of another manifest, as it should for a person's
    for earlier in (reviewed, Path(f"{reviewed}.journal"), Path(f"{reviewed}.rejected")):
        earlier.unlink(missing_ok=True)
    with start_review_server(to_review, reviewed) as server:
        correct_reviewer(server.url, truth_classes(new / "truth" / "output.manifest"))
    robocar("label", "land", reviewed, *flags)
    before = {e.path for e in list_executions(workspace, PIPELINE_NAME)}
    robocar("trigger", "watch", "--once", "--settle", 0, *flags)
    started = [e for e in list_executions(workspace, PIPELINE_NAME) if e.path not in before]
    return {
        "prelabels": str(prelabels),
        "reviewed": str(reviewed),
        "execution": str(started[-1].path) if started else None,
        "review_command": shlex.join(["robocar", "label", "review", str(to_review)]),
    }


def summary_lines(workspace: Path, result: dict[str, Any]) -> list[str]:
    """The loop's part of the closing summary, read back from the files its stages wrote."""
    from edge.aws import clients
    from pipelines.local.store import load

    predicted = json.loads((Path(result["prelabels"]) / manifest.PREDICT_REPORT).read_text())
    data = evaluation = package = None
    if result.get("execution"):
        aws = clients(local_root=str(workspace))
        execution = load(Path(result["execution"]))
        data = _s3_json(aws.s3, f"{output_uri(execution, 'Preprocess', 'report')}/data-report.json")
        evaluation = _s3_json(aws.s3, f"{output_uri(execution, 'Evaluate', 'evaluation')}/evaluation.json")
        package = this_models_package(aws.sagemaker, execution, GROUP)
    review = review_counts(Path(result["reviewed"]))
    return labelling_lines(predicted, review, data, evaluation, result["review_command"], package)
