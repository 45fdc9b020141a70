"""Evaluate the trained pilot on the test split, against a constant baseline and the current champion.

Writes ``evaluation.json`` (docs/contracts.md section 4; the pipeline's Condition reads
``regression_metrics.angle_mae.value``) and PNG plots next to it:

- ``regression_metrics``: angle MAE, throttle MAE (each with the standard deviation of the per-frame
  absolute error), angle RMSE (standard deviation of the signed error) and angle R^2;
  ``classification_metrics`` (categorical pilots): bin accuracy of angle and throttle (donkeycar's bins).
- ``baseline``: the same metrics for a constant prediction, the **median of the test split** (the
  train-set mean is not an input of this step; the median is the constant with the lowest MAE on this
  split, so the baseline is the strongest constant there is: a model that beats it has learnt something).
- ``champion``: the package a car with the first of ``--edge-targets`` installs, i.e. the newest
  Approved package of ``--model-package-group`` with an artifact for that target (``edge.registry``;
  without ``--edge-targets``: the newest Approved package), its ``ModelDataUrl`` downloaded and
  evaluated on the same frames; null without a group or without such a package.
- ``already_registered``: whether a package of the group (any approval status) already carries this
  model, i.e. its ``ModelDataUrl`` is ``--model-s3-uri`` (the training job's ``S3ModelArtifacts``): an
  identical rerun takes Train from the cache, and the pipeline then registers nothing new.

The model is evaluated through its SavedModel ``serving_default`` signature, i.e. exactly what the TF
Serving endpoint runs, and its outputs are decoded by ``edge.frames.decode_outputs`` like on the car.

    python processing/evaluate.py --model DIR_WITH_model.tar.gz --test DIR/test --output OUT \
        [--model-package-group NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import ANGLE_BINS, THROTTLE_BINS, decode_outputs, linear_bin, to_model_input
from processing.errors import ARCHIVE_READ_ERRORS, UserError, add_debug_flag, run_main

MODEL_ARCHIVE = "model.tar.gz"
PLOTS = ("angle_over_time.png", "angle_scatter.png")
BATCH = 256

PredictFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class EvaluationError(UserError, ValueError):
    """Input that cannot be evaluated (missing model, wrong split, mismatched frames): one clear line."""


@dataclass(frozen=True)
class LoadedModel:
    model_json: dict[str, Any]
    predict: PredictFn  # float32 [N,H,W,3] -> {"angle": raw head, "throttle": raw head}


# --- metrics (pure) ----------------------------------------------------------------------------------


def _metric(value: float | None, std: float | None = None) -> dict[str, float | None]:
    out: dict[str, float | None] = {"value": None if value is None else float(value)}
    if std is not None:
        out["standard_deviation"] = float(std)
    return out


def regression_metrics(
    angle_true: np.ndarray, throttle_true: np.ndarray, angle_pred: np.ndarray, throttle_pred: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """MAE (std of |error|), angle RMSE (std of the error), angle R^2 (null when the split is constant)."""
    angle_err = np.asarray(angle_pred, np.float64) - np.asarray(angle_true, np.float64)
    throttle_err = np.asarray(throttle_pred, np.float64) - np.asarray(throttle_true, np.float64)
    ss_res = float(np.sum(angle_err**2))
    ss_tot = float(np.sum((np.asarray(angle_true, np.float64) - np.mean(angle_true)) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    return {
        "angle_mae": _metric(np.mean(np.abs(angle_err)), np.std(np.abs(angle_err))),
        "throttle_mae": _metric(np.mean(np.abs(throttle_err)), np.std(np.abs(throttle_err))),
        "angle_rmse": _metric(math.sqrt(np.mean(angle_err**2)), np.std(angle_err)),
        "angle_r2": _metric(r2),
    }


def bin_accuracy(
    angle_true: np.ndarray,
    throttle_true: np.ndarray,
    angle_probs: np.ndarray,
    throttle_probs: np.ndarray,
    throttle_range: float,
) -> dict[str, dict[str, float | None]]:
    """Share of frames whose most likely bin is the recorded value's bin (donkeycar's linear_bin)."""
    angle_bins = [int(np.argmax(linear_bin(float(a), n=ANGLE_BINS, offset=1.0, r=2.0))) for a in angle_true]
    throttle_bins = [
        int(np.argmax(linear_bin(float(t), n=THROTTLE_BINS, offset=0.0, r=throttle_range)))
        for t in throttle_true
    ]
    return {
        "angle_bin_accuracy": _metric(np.mean(np.argmax(angle_probs, axis=-1) == np.asarray(angle_bins))),
        "throttle_bin_accuracy": _metric(
            np.mean(np.argmax(throttle_probs, axis=-1) == np.asarray(throttle_bins))
        ),
    }


def baseline_report(angle_true: np.ndarray, throttle_true: np.ndarray) -> dict[str, Any]:
    """The constant-prediction baseline: the test split's median angle and throttle."""
    angle_const = float(np.median(angle_true))
    throttle_const = float(np.median(throttle_true))
    return {
        "prediction": {"angle": angle_const, "throttle": throttle_const},
        "statistic": "median of the test split",
        "regression_metrics": regression_metrics(
            angle_true,
            throttle_true,
            np.full(len(angle_true), angle_const),
            np.full(len(throttle_true), throttle_const),
        ),
    }


def model_report(
    loaded: LoadedModel, images: np.ndarray, angle: np.ndarray, throttle: np.ndarray
) -> dict[str, Any]:
    """Metrics of one model on the test frames, plus its decoded predictions (for the plots)."""
    model_json = loaded.model_json
    expected = tuple(model_json["input"]["shape"])
    if tuple(images.shape[1:]) != expected:
        raise EvaluationError(
            f"the model takes frames {expected}, the test split holds {tuple(images.shape[1:])}"
        )
    raw: dict[str, list[np.ndarray]] = {"angle": [], "throttle": []}
    for start in range(0, len(images), BATCH):
        outputs = loaded.predict(to_model_input(images[start : start + BATCH]))
        for key in raw:
            raw[key].append(np.asarray(outputs[key]))
    heads = {key: np.concatenate(parts) for key, parts in raw.items()}
    throttle_range = float(model_json.get("throttle_range", 0.5))
    angle_pred, throttle_pred = decode_outputs(
        [heads["angle"], heads["throttle"]], model_json["model_type"], throttle_range
    )
    report: dict[str, Any] = {
        "regression_metrics": regression_metrics(angle, throttle, angle_pred, throttle_pred),
    }
    if model_json["model_type"] == "categorical":
        report["classification_metrics"] = bin_accuracy(
            angle, throttle, heads["angle"], heads["throttle"], throttle_range
        )
    report["_predictions"] = {"angle": angle_pred, "throttle": throttle_pred}
    return report


# --- loading models ----------------------------------------------------------------------------------


def extract_model(source: Path, workdir: Path, marker: str = "model.json") -> Path:
    """A model directory from ``source``: a model.tar.gz, a folder holding one, or an extracted folder.

    ``marker`` is the file every model directory of the recipe holds: train.py's ``model.json``,
    training/classifier.py's ``classifier-spec.json``."""
    from edge.artifacts import ArtifactError, safe_extract

    if source.is_dir() and (source / marker).is_file():
        return source
    archive = source / MODEL_ARCHIVE if source.is_dir() else source
    if not archive.is_file():
        raise EvaluationError(f"no {MODEL_ARCHIVE} (or extracted model with {marker}) at {source}")
    target = Path(tempfile.mkdtemp(prefix="model-", dir=workdir)) / "model"  # safe_extract wants a new folder
    try:
        safe_extract(archive, target)
    except (ArtifactError, *ARCHIVE_READ_ERRORS) as exc:  # processing/errors.py says which
        raise EvaluationError(f"cannot extract {archive}: {exc}") from exc
    if not (target / marker).is_file():
        raise EvaluationError(f"{archive} holds no {marker}: not a model directory of this recipe's trainer")
    return target


def load_serving_model(model_dir: Path) -> LoadedModel:
    """The SavedModel's serving signature (what TF Serving runs) with the model.json beside it."""
    import tensorflow as tf

    model_json = json.loads((model_dir / "model.json").read_text())
    serving = model_json.get("serving", {})
    saved_model = model_dir / serving.get("saved_model", "1")
    try:
        loaded = tf.saved_model.load(str(saved_model))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot load the SavedModel {saved_model}: {exc}") from exc
    signature = loaded.signatures[serving.get("signature", "serving_default")]

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(tf.constant(x, dtype=tf.float32))
        return {key: value.numpy() for key, value in outputs.items()}

    predict.keep_alive = loaded  # the signature's variables live as long as the loaded object
    return LoadedModel(model_json, predict)


# --- the champion ------------------------------------------------------------------------------------


def champion_target(edge_targets: str | None) -> str | None:
    """The target the champion is chosen for: the first of the pipeline's ``EdgeTargets``
    (``"jetson_nano,rasp4b"`` -> ``jetson_nano``); None without targets."""
    first = (edge_targets or "").split(",")[0].strip()
    return first or None


def find_champion(sagemaker: Any, group: str | None, target: str | None = None) -> dict[str, str] | None:
    """The champion: {"model_package_arn", "model_data_url"}, or None (docs/contracts.md section 4).

    With ``target``: the newest Approved package of ``group`` with a usable artifact for it, i.e. the
    package a car with that target installs (``edge.registry``, the car's own reader); without: the
    newest Approved package.
    """
    if not group:
        return None
    from edge import registry

    try:
        described = registry.newest(sagemaker, group, registry.APPROVED, target)
    except Exception as exc:  # botocore ClientError, or the local client's; a missing group means no champion
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("ResourceNotFound", "ValidationException"):
            print(f"no champion: model package group {group!r} not found ({code})", flush=True)
            return None
        raise
    if described is None:
        return None
    arn = described["ModelPackageArn"]
    containers = described.get("InferenceSpecification", {}).get("Containers", [])
    url = next((c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")), None)
    if url is None:
        raise EvaluationError(f"champion {arn} has no ModelDataUrl in its inference specification")
    return {"model_package_arn": arn, "model_data_url": url}


def registered_package(
    sagemaker: Any, group: str | None, model_data_url: str | None
) -> dict[str, Any] | None:
    """The package of ``group`` that serves ``model_data_url`` (DescribeModelPackage's answer), or None.

    ListModelPackages has no model URL, so each package is described, newest first (a cached Train's
    model is a recent one), until one serves it.
    """
    if not group or not model_data_url:
        return None
    try:
        pages = sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"
        )
        for page in pages:
            for summary in page.get("ModelPackageSummaryList", []):
                described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                containers = described.get("InferenceSpecification", {}).get("Containers", [])
                if any(c.get("ModelDataUrl") == model_data_url for c in containers):
                    return described
    except Exception as exc:  # as in find_champion: a missing group holds no package
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("ResourceNotFound", "ValidationException"):
            return None
        raise
    return None


def is_registered(sagemaker: Any, group: str | None, model_data_url: str | None) -> bool:
    """Whether a package of ``group`` (any approval status) already serves this model."""
    return registered_package(sagemaker, group, model_data_url) is not None


def download(s3: Any, url: str, target: Path) -> Path:
    from edge.artifacts import parse_s3_uri

    bucket, key = parse_s3_uri(url)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with target.open("wb") as out:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            out.write(chunk)
    return target


def champion_report(
    champion: Mapping[str, str] | None,
    s3: Any,
    workdir: Path,
    images: np.ndarray,
    angle: np.ndarray,
    throttle: np.ndarray,
    loader: Callable[[Path], LoadedModel] = load_serving_model,
) -> dict[str, Any] | None:
    """The champion evaluated on the same frames; ``error`` instead of metrics when it cannot take them."""
    if champion is None:
        return None
    archive = download(s3, champion["model_data_url"], workdir / "champion-model.tar.gz")
    report: dict[str, Any] = {"model_package_arn": champion["model_package_arn"]}
    report["model_data_url"] = champion["model_data_url"]
    try:
        metrics = model_report(loader(extract_model(archive, workdir)), images, angle, throttle)
    except EvaluationError as exc:
        print(f"champion {champion['model_package_arn']} not comparable: {exc}", flush=True)
        return {**report, "regression_metrics": None, "error": str(exc)}
    metrics.pop("_predictions")
    return {**report, **metrics}


# --- plots -------------------------------------------------------------------------------------------


def write_plots(
    out_dir: Path, order: np.ndarray, angle: np.ndarray, predicted: np.ndarray, title: str
) -> list[str]:
    """Predicted vs recorded angle over time (frames in drive order) and as a scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(angle[order], label="recorded", linewidth=1)
    ax.plot(predicted[order], label="predicted", linewidth=1)
    ax.set(xlabel="test frame (drive order)", ylabel="angle", title=f"{title}: angle over time")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[0], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(angle, predicted, s=4, alpha=0.5)
    ax.plot([-1, 1], [-1, 1], color="grey", linewidth=1)
    ax.set(xlabel="recorded angle", ylabel="predicted angle", xlim=(-1.05, 1.05), ylim=(-1.05, 1.05))
    ax.set_title(f"{title}: predicted vs recorded")
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[1], dpi=80)
    plt.close(fig)
    return list(PLOTS)


# --- wiring ------------------------------------------------------------------------------------------


def load_test_split(test_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from processing.shards import ShardError, load_split

    try:
        arrays, dataset = load_split(test_dir)
    except (ShardError, OSError, ValueError, KeyError) as exc:
        raise EvaluationError(f"cannot read the test split {test_dir}: {exc}") from exc
    if "angle" not in arrays:
        raise EvaluationError(f"{test_dir} holds no angle/throttle (a classifier split?)")
    if len(arrays["images"]) == 0:
        raise EvaluationError(f"{test_dir} holds no frames")
    return arrays, dataset


def evaluate(
    model_source: Path,
    test_dir: Path,
    out_dir: Path,
    *,
    group: str | None = None,
    sagemaker: Any = None,
    s3: Any = None,
    loader: Callable[[Path], LoadedModel] = load_serving_model,
    plots: bool = True,
    model_s3_uri: str | None = None,
    edge_targets: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/evaluation.json`` (+ plots) and return it. Clients are needed only with ``group``."""
    arrays, dataset = load_test_split(test_dir)
    images, angle, throttle = arrays["images"], arrays["angle"], arrays["throttle"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        workdir = Path(tmp)
        loaded = loader(extract_model(model_source, workdir))
        report = model_report(loaded, images, angle, throttle)
        predictions = report.pop("_predictions")
        champion = champion_report(
            find_champion(sagemaker, group, champion_target(edge_targets)),
            s3,
            workdir,
            images,
            angle,
            throttle,
            loader,
        )
    evaluation: dict[str, Any] = {
        **report,
        "baseline": baseline_report(angle, throttle),
        "champion": champion,
        "already_registered": is_registered(sagemaker, group, model_s3_uri),
        "test_frames": int(len(images)),
        "test_fingerprint": dataset.get("fingerprint"),
        "model": {
            "model_type": loaded.model_json["model_type"],
            "dataset_fingerprint": loaded.model_json.get("dataset_fingerprint"),
        },
        "plots": [],
    }
    if plots:
        order = np.lexsort((arrays["timestamp_ms"], arrays["session"]))
        title = f"{loaded.model_json['model_type']} pilot"
        evaluation["plots"] = write_plots(out_dir, order, angle, predictions["angle"], title)
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n")
    return evaluation


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """The champion's and the registry's options, the same in every recipe's Evaluate."""
    parser.add_argument(
        "--model-package-group",
        default=None,
        help="registry group whose newest Approved package (for the first --edge-targets) is the champion",
    )
    parser.add_argument(
        "--edge-targets",
        default=None,
        help="the pipeline's EdgeTargets, comma-separated: the champion is the package the car with the "
        "first one installs",
    )
    parser.add_argument(
        "--model-s3-uri",
        default=None,
        help="the model's S3 URI (S3ModelArtifacts): already_registered says whether the group holds it",
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")
    parser.add_argument("--endpoint-url", default=None, help="AWS endpoint (a moto server in tests)")
    parser.add_argument("--local-root", default=None, help="local S3/registry folder instead of AWS")


def registry_clients(args: argparse.Namespace) -> tuple[Any, Any]:
    """(sagemaker, s3) clients for the champion with ``--model-package-group``, else (None, None)."""
    if not args.model_package_group:
        return None, None
    from edge.aws import clients

    aws = clients(local_root=args.local_root, region=args.region, endpoint_url=args.endpoint_url)
    return aws.sagemaker, aws.s3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate the trained pilot on the test split against a constant baseline and the "
        "champion (newest Approved package); write evaluation.json and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("/opt/ml/processing/model"),
        help="model.tar.gz, or a folder with it",
    )
    parser.add_argument(
        "--test", type=Path, default=Path("/opt/ml/processing/test"), help="test split folder"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("/opt/ml/processing/evaluation"), help="evaluation.json goes here"
    )
    add_registry_arguments(parser)
    parser.add_argument(
        "--no-plots", dest="plots", action="store_false", help="skip the PNG plots (plots are on)"
    )
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("evaluate.py", lambda: _evaluate_and_print(args), debug=args.debug)


def _evaluate_and_print(args: argparse.Namespace) -> int:
    sagemaker, s3 = registry_clients(args)
    evaluation = evaluate(
        args.model, args.test, args.output, group=args.model_package_group, sagemaker=sagemaker, s3=s3,
        plots=args.plots, model_s3_uri=args.model_s3_uri, edge_targets=args.edge_targets,
    )  # fmt: skip
    metrics = evaluation["regression_metrics"]
    baseline = evaluation["baseline"]["regression_metrics"]
    champion = evaluation["champion"]
    line = (
        f"angle_mae={metrics['angle_mae']['value']:.6g} "
        f"baseline_angle_mae={baseline['angle_mae']['value']:.6g} "
        f"throttle_mae={metrics['throttle_mae']['value']:.6g} test_frames={evaluation['test_frames']}"
    )
    if champion and champion.get("regression_metrics"):
        line += f" champion_angle_mae={champion['regression_metrics']['angle_mae']['value']:.6g}"
    if evaluation["already_registered"]:
        line += " already_registered=true"
    print(line, flush=True)
    print(f"wrote {args.output / 'evaluation.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
