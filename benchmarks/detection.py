"""Detection benchmark: the recipe's SSD on the synthetic set, its car artifacts against MXNet and the CPU.

What is measured, in one run, on the same photos and the same weights:

* mAP@0.5 on the test split of a model trained as the recipe trains it: ``pipelines.synth_boxes``'
  photos (600, 3 classes, seed 0) through ``processing/preprocess_detection.py`` (128 px), then
  ``training/detector.py`` with the recipe's defaults (``pipelines/detection/pipeline.py``: 24 epochs,
  ``lr_scheduler_step`` 20, ``overlap_threshold`` 0.4), scored by ``processing/evaluate_detection.py``'s
  ``predict`` and ``detection_metrics`` on MXNet's deploy heads;
* each artifact of the compile step (``processing/compile_detection.py``: ONNX float32 and int8 heads,
  anchors as data): ``edge.runtimes.onnx_session`` (the car's session options), one intra-op thread,
  then ``edge.detect.decode`` (anchor decoding + NMS in numpy) on one prepared photo, with the package's
  settings (threshold 0.01: the same boxes as MultiBoxDetection); the "car" rows decode as
  ``robocar-edge run`` does, at its reporting score (``edge.detect.reporting_settings``, 0.5: the same
  reported boxes); the "heads" rows do not decode, to split the time;
* MXNet's own forward of the deploy symbol ending in ``MultiBoxDetection``
  (``training.detector.deploy_detections``, bound for inference by ``bind_deploy``), one engine thread,
  the same photos: the baseline of the ratio;
* this machine's single-thread limit (``benchmarks/edge.py``'s ``measure_peaks``) over the heads'
  multiply-adds per photo (``count_macs`` of the float32 graph): limit fps, and each runner's share;
* the int8 artifact's mAP@0.5 delta against MXNet on the test split, as the compile step measured it.

Goals (issue 18): mAP@0.5 >= 0.85; each artifact >= 3x MXNet's frames/s; int8 within 1 mAP point.
Timing runs pinned to one CPU; rounds interleave the peak and every runner so all see the same machine
load; each figure is the median of ``--repeats`` rounds of ``--seconds``.

Usage, from the project's environment (it writes and preprocesses the synthetic photos there, then
re-runs itself in local mode's MXNet environment, as benchmarks/classifier_edge.py does):
``python benchmarks/detection.py [--epochs N]`` (the recorded figure uses the default 24);
``--model DIR --splits DIR`` benchmarks a trained detector on Preprocess's splits.
"""

from __future__ import annotations

import os

# One thread for MXNet's engine and every BLAS: the comparison is single-core. Must precede their import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.classifier_edge import (  # noqa: E402
    cpu_name,
    fed_photos,
    in_mxnet_environment,
    macs_by_kind,
    print_profile,
    profile_ops,
    rerun_in_mxnet_environment,
)

GOALS = {"map_50": 0.85, "x_mxnet": 3.0, "int8_map_points": 1.0}
CLASSES = 3
IMAGES = 600  # docs/detection.md's synthetic set: 432 train / 89 validation photos at seed 0
TIMING_PHOTOS = 64
RUNNER_NOTES = {
    "car": "(decoded at the car's reporting score)",
    "heads": "(heads only, no decoding)",
}
# pipelines/detection/pipeline.py's gluon_hyperparameters (a test holds them equal)
LR_SCHEDULER_STEP = "20"
OVERLAP_THRESHOLD = "0.4"


# ------------------------------------------------------------------------------------------ inputs


def write_splits(root: Path, image_size: int, seed: int) -> Path:
    """Synthetic boxed photos through Preprocess (in the project's venv: the Ground Truth reader needs
    jsonschema, which the MXNet environment lacks); returns the folder holding train/validation/test."""
    from pipelines.synth_boxes import write_boxes
    from processing import preprocess_detection

    write_boxes(root / "labels", classes=CLASSES, images=IMAGES, seed=seed)
    out = root / "splits"
    argv = ["--input", str(root / "labels"), "--output", str(out), "--image-size", str(image_size)]
    if preprocess_detection.main([*argv, "--seed", str(seed)]) != 0:
        raise SystemExit("preprocessing the synthetic set failed")
    return out


def train_model(splits: Path, dest: Path, image_size: int, epochs: int, seed: int) -> float:
    """training/detector.py as the recipe runs it (its defaults but ``epochs``); returns seconds."""
    command = [sys.executable, str(REPO / "training" / "detector.py"), "--epochs", str(epochs)]
    command += [
        "--image_shape",
        str(image_size),
        "--lr_scheduler_step",
        LR_SCHEDULER_STEP,
        "--overlap_threshold",
        OVERLAP_THRESHOLD,
        "--seed",
        str(seed),
    ]
    command += ["--train", str(splits / "train"), "--validation", str(splits / "validation")]
    started = time.perf_counter()
    subprocess.run([*command, "--sm-model-dir", str(dest)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def compile_package(model: Path, splits: Path, out: Path) -> Path:
    """The compile step's local package for one target, extracted; returns its folder."""
    from processing import compile_detection

    argv = ["--model", str(model), "--train", str(splits / "train"), "--test", str(splits / "test")]
    if compile_detection.main([*argv, "--output", str(out), "--mode", "local", "--edge-targets", "rasp4b"]):
        raise SystemExit("compiling failed")
    extracted = out / "package"
    with tarfile.open(out / "rasp4b" / "model.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    return extracted


def score_test_split(model: Path, test: Path) -> dict[str, Any]:
    """evaluate_detection's figures of the trained model (MXNet's deploy heads) on the test split."""
    from processing.evaluate_detection import detection_metrics, load_mxnet_detector, predict, read_split

    split = read_split(test)
    detector = load_mxnet_detector(model)
    metrics = detection_metrics(predict(detector, split.paths), split.boxes, split.classes)
    return {
        "map_50": metrics["map_50"]["value"],
        "map_50_95": metrics["map_50_95"]["value"],
        "per_class_ap_50": metrics["per_class_ap_50"],
        "photos": len(split.paths),
        "objects": metrics["objects"],
    }


# ------------------------------------------------------------------------------------------ runners


def mxnet_runner(model: Path, side: int) -> Callable[[Any], Any]:
    """The deploy symbol with MultiBoxDetection, bound once for batch 1 (memory planned once)."""
    import mxnet as mx

    from training.detector import bind_deploy, deploy_detections

    module = bind_deploy(*deploy_detections(model), side)

    def forward(photo: Any) -> Any:
        module.forward(mx.io.DataBatch([mx.nd.array(photo)]), is_train=False)
        return module.get_outputs()[0].asnumpy()  # asnumpy waits for MXNet's async engine

    return forward


def onnx_runner(
    path: Path, anchors: Any, settings: Mapping[str, Any], decoding: bool = True
) -> Callable[[Any], Any]:
    """The artifact through the car's session options, one thread, then the car's decoder with
    ``settings`` (``decoding`` False: the heads alone, to split the time between network and decoder)."""
    from edge.detect import HEAD_NAMES, decode
    from edge.runtimes import onnx_session

    session = onnx_session(path, threads=1)
    name = session.get_inputs()[0].name

    def detect(photo: Any) -> Any:
        cls_prob, loc_preds = session.run(list(HEAD_NAMES), {name: photo})
        return decode(cls_prob[0], loc_preds[0], anchors, **settings) if decoding else cls_prob

    return detect


# ------------------------------------------------------------------------------------------ figures


def summarise(
    rounds: Mapping[str, Sequence[Mapping[str, float]]],
    peaks: Sequence[Mapping[str, Mapping[str, float]]],
    macs: int,
    precisions: Mapping[str, str],
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Per runner: median fps and p99, median per-round ratio to MXNet's fps (``rounds["mxnet"]``) and to
    the round's limit (the precision's best peak multiply-adds/s over ``macs``); and the median limits."""
    from benchmarks.edge import median

    limits = [{p: max(peak[p].values()) * 1e9 / macs for p in ("float32", "int8")} for peak in peaks]
    rows = {}
    for name, measured in rounds.items():
        fps = [r["fps"] for r in measured]
        rows[name] = {
            "fps": median(fps),
            "p99_ms": median([r["p99_ms"] for r in measured]),
            "x_mxnet": median([f / m["fps"] for f, m in zip(fps, rounds["mxnet"], strict=True)]),
            "of_limit": median([f / lim[precisions[name]] for f, lim in zip(fps, limits, strict=True)]),
            "precision": precisions[name],
        }
    return rows, {p: median([lim[p] for lim in limits]) for p in ("float32", "int8")}


def verdicts(report: Mapping[str, Any]) -> list[str]:
    """One line per goal: met or NOT met, with the figure."""

    def said(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = []
    map_50 = report["accuracy"]["map_50"]
    lines.append(f"goal mAP@0.5 >= {GOALS['map_50']}: {said(map_50 >= GOALS['map_50'])} ({map_50:.4f})")
    for name, row in report["rows"].items():
        if name != "mxnet" and not name.endswith(" heads"):  # the heads alone are not what anyone runs
            ok = row["x_mxnet"] >= GOALS["x_mxnet"]
            lines.append(f"goal {name} >= {GOALS['x_mxnet']:.0f}x MXNet: {said(ok)} ({row['x_mxnet']:.2f}x)")
    points = report["int8"]["points"]
    ok = points <= GOALS["int8_map_points"]
    lines.append(f"goal int8 within {GOALS['int8_map_points']:.0f} mAP point: {said(ok)} ({points:+.2f})")
    return lines


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from benchmarks.edge import count_macs, measure, measure_peaks, median, pin_to_one_cpu
    from edge.detect import DEFAULT_MIN_SCORE, check_manifest, reporting_settings
    from processing.evaluate_detection import read_split

    cpu = pin_to_one_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        training_seconds = None
        model = args.model
        if model is None:
            model = work / "model"
            training_seconds = train_model(args.splits, model, args.image_size, args.epochs, args.seed)
        accuracy = score_test_split(model, args.splits / "test")
        package = compile_package(model, args.splits, work / "compiled")
        manifest = json.loads((package / "manifest.json").read_text())
        _, transform, settings = check_manifest(manifest)
        anchors = np.load(package / manifest["anchors_file"]).astype(np.float32).reshape(-1, 4)
        paths = read_split(args.splits / "test").paths[:TIMING_PHOTOS]
        artifacts = {a["file"]: a for a in manifest["artifacts"]}
        fed = fed_photos(paths, transform, artifacts)
        float_file = next(f for f, a in artifacts.items() if a["precision"] == "float32")
        int8_file = next(f for f, a in artifacts.items() if a["precision"] == "int8")
        macs = count_macs(package / float_file)
        mac_kinds = macs_by_kind(package / float_file)
        profiles = {f: profile_ops(package / f, fed[f][0], args.profile_runs) for f in artifacts}
        runners = {"mxnet": (mxnet_runner(model, transform.as_dict()["shape"][-1]), fed["mxnet"])}
        car = reporting_settings(settings, DEFAULT_MIN_SCORE)
        for suffix, decode_with, decoding in (
            ("", settings, True),
            (" car", car, True),
            (" heads", settings, False),
        ):
            for f in artifacts:
                runners[f"{f}{suffix}"] = (onnx_runner(package / f, anchors, decode_with, decoding), fed[f])
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
        peaks: list[dict[str, dict[str, float]]] = []
        for _ in range(args.repeats):
            peaks.append(measure_peaks())
            for name, (runner, photos) in runners.items():
                rounds[name].append(measure(runner, photos, args.seconds, 1))
    precisions = {"mxnet": "float32", **{f: a["precision"] for f, a in artifacts.items()}}
    precisions.update(
        {f"{f} {kind}": a["precision"] for f, a in artifacts.items() for kind in ("car", "heads")}
    )
    rows, limits = summarise(rounds, peaks, macs, precisions)
    return {
        "machine": {"cpu": cpu_name(), "pinned_cpu": cpu, "python": platform.python_version()},
        "model": {
            "macs_per_photo": macs,
            "input": transform.as_dict()["shape"],
            "anchors": len(anchors),
            "default": manifest["default"],
            "epochs": args.epochs if args.model is None else None,
            "training_seconds": training_seconds,
        },
        "accuracy": accuracy,
        "int8": artifacts[int8_file]["accuracy_delta"],
        "float32": artifacts[float_file]["accuracy_delta"],
        "limit_fps": limits,
        "peak_gmacs": {p: median([max(peak[p].values()) for peak in peaks]) for p in ("float32", "int8")},
        "profile": {"us_per_photo": profiles, "macs_by_kind": mac_kinds},
        "rows": rows,
        "artifacts": list(artifacts),
        "rounds": args.repeats,
        "seconds": args.seconds,
    }


# ------------------------------------------------------------------------------------------ report


def print_report(report: Mapping[str, Any]) -> None:
    model, accuracy = report["model"], report["accuracy"]
    print(f"machine: {report['machine']['cpu']}, one CPU, Python {report['machine']['python']}")
    trained = (
        f"trained {model['epochs']} epochs in {model['training_seconds']:.0f} s; "
        if model["training_seconds"]
        else ""
    )
    print(
        f"model: input {model['input']}, {model['anchors']} anchors, {model['macs_per_photo'] / 1e6:.1f} M "
        f"multiply-adds per photo; {trained}test mAP@0.5 {accuracy['map_50']:.4f}, mAP@0.5:0.95 "
        f"{accuracy['map_50_95']:.4f} ({accuracy['photos']} photos)"
    )
    print(
        f"limit {report['limit_fps']['float32']:,.0f} fps float32 ({report['peak_gmacs']['float32']:.1f} "
        f"G/s), {report['limit_fps']['int8']:,.0f} fps int8 ({report['peak_gmacs']['int8']:.1f} G/s)"
    )
    print(f"{'runner':<28}{'fps':>9}{'p99 ms':>9}{'x MXNet':>9}{'of limit':>10}  mAP@0.5 vs MXNet")
    deltas = {"int8": report["int8"], "float32": report["float32"]}
    for name, row in report["rows"].items():
        delta = deltas.get(row["precision"]) if name in report["artifacts"] else None
        vs = (
            f"{delta['map_50']:.4f} vs {delta['reference_map_50']:.4f} ({delta['points']:+.2f} points)"
            if delta
            else ("(the reference)" if name == "mxnet" else RUNNER_NOTES[name.rsplit(" ", 1)[-1]])
        )
        print(
            f"{name:<28}{row['fps']:>9,.0f}{row['p99_ms']:>9.3f}{row['x_mxnet']:>8.2f}x"
            f"{100 * row['of_limit']:>9.1f}%  {vs}"
        )
    print_profile(report)
    for line in verdicts(report):
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained detector folder (with --splits)")
    parser.add_argument("--splits", type=Path, help="Preprocess's output: train/, validation/, test/")
    parser.add_argument("--epochs", type=int, default=24, help="training epochs (the recipe's 24)")
    parser.add_argument("--image-size", type=int, default=128, help="photo side (the recipe's 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing round (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; figures are medians (default 5)")
    parser.add_argument(
        "--profile-runs", type=int, default=300, help="ONNX Runtime profiler runs per artifact (default 300)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.model and not args.splits:
        raise SystemExit("--model needs --splits")
    if not in_mxnet_environment():
        if args.splits:
            return rerun_in_mxnet_environment(argv, Path(__file__))
        with tempfile.TemporaryDirectory() as tmp:
            splits = write_splits(Path(tmp), args.image_size, args.seed)
            return rerun_in_mxnet_environment([*argv, "--splits", str(splits)], Path(__file__))
    if not args.splits:
        raise SystemExit(
            "run from the project's environment (it writes the synthetic splits), or give --splits"
        )
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
