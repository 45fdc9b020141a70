"""CompileForEdge for the detection recipe: the trained SSD's heads in ONNX, anchors as data, for the car.

Runs in the MXNet environment. The input is the trainer's model directory (``detector-spec.json`` and the
built-in algorithm's files), as ``model.tar.gz`` or a folder; its deploy form comes from
``training.detector.deploy_network`` (outputs ``cls_prob`` (1, C+1, A), ``loc_preds`` (1, A*4),
``anchors`` (1, A, 4)).

``mx.onnx`` cannot export ``MultiBoxPrior`` nor ``MultiBoxDetection``, so the car gets what it can run
anywhere: the class and box heads (``cls_prob``, ``loc_preds``) as ONNX float32 and static int8
(processing/compile_classifier.py's export fixes and int8 scheme), the anchors (fixed for a given input
size) as ``anchors.npy``, and decoding + NMS in numpy on the car (``edge.detect.decode``, the one
decoder). Each artifact's ``accuracy_delta`` is its mAP@0.5 on the test split (heads -> decode) against
MXNet's own forward of the deploy symbol + the same decode: ``points`` = 100 x (reference - artifact).

* ``local``: the above; the car gets int8 when it is within ``--tolerance-points`` mAP points, else float32.
* ``neo`` (AWS): one ``CreateCompilationJob`` per target on that input (the classifier's
  ``compile_on_neo``), packaged with the detector's manifest (the anchors are inside the symbol there).
* ``dry-run``: Neo's input (the deploy symbol with ``MultiBoxDetection``, framework MXNET:
  ``training.detector.deploy_detections``) and each target's request; nothing is called.

Output as the classifier's: ``OUTPUT/<target>/model.tar.gz`` + ``manifest.json`` (``"task": "detection"``,
``classes``, ``input_transform``, ``anchors_file``, ``decode``) and ``OUTPUT/compiled.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifacts import sha256_file
from edge.detect import DEFAULT_VARIANCES, decode, decode_settings
from edge.photos import PhotoTransform
from processing.compile import compile_mode, dry_run_requests, unpack_model
from processing.compile_classifier import (
    EXPORT_OPSET,
    INT8_SCHEME,
    choose_default,
    compile_on_neo,
    export_mxnet_onnx,
    input_shape,
    ort_session,
    package_targets,
    prepared,
    quantize_int8,
    write_neo_input,
)
from processing.compile_classifier import (
    build_parser as classifier_parser,
)
from processing.compile_classifier import (
    neo_artifact as classifier_neo_artifact,
)
from processing.edge_package import (
    COMPILED_FORMAT,
    COMPILED_NAME,
    MANIFEST_FORMAT,
    PACKAGE_NAME,
    CompileError,
    json_bytes,
    log,
)
from processing.errors import add_debug_flag, run_main
from processing.evaluate import EvaluationError
from processing.evaluate_detection import SPEC_FILE, detection_metrics, read_spec, read_split
from processing.local_compile import representative_indices
from processing.neo import NEO_INPUT_NAME, parse_targets, target_devices
from processing.pixel_input import input_overrides, pixel_artifact

TASK = "detection"
FLOAT_FILE, INT8_FILE = "detector-float32.onnx", "detector-int8.onnx"
ANCHORS_FILE = "anchors.npy"
HEAD_NAMES = ("cls_prob", "loc_preds")  # the heads the car runs; anchors are data
DEFAULT_THRESHOLD = 0.01  # decode's score threshold (MultiBoxDetection's default)
# ONNX Runtime float32 heads against MXNet's: a wrong export differs by far more than float rounding.
FLOAT_MAX_ABS_DIFFERENCE = 1e-4
DEPLOY_SYMBOL, DEPLOY_PARAMS = "detector-deploy-symbol.json", "detector-deploy-0000.params"

Deploy = Callable[[Path], tuple[Any, Mapping[str, Any], Mapping[str, Any]]]


@dataclass(frozen=True)
class DetectorModel:
    """The trained detector: its spec, deploy form, and (for Neo) the deploy files written out."""

    folder: Path
    transform: PhotoTransform
    classes: list[str]
    decode: dict[str, Any]
    network: tuple[Any, Mapping[str, Any], Mapping[str, Any]]  # (symbol, arg_params, aux_params)
    symbol: Path = field(default=Path())  # write_neo_input's files (the deploy symbol and params)
    params: Path = field(default=Path())


def read_model(folder: Path, deploy: Deploy | None = None) -> DetectorModel:
    """The detector of a model directory through ``deploy`` (training.detector.deploy_network)."""
    try:
        spec, classes, transform = read_spec(folder)
    except EvaluationError as exc:
        raise CompileError(str(exc)) from exc
    if deploy is None:
        from training.detector import deploy_network as deploy
    settings = {"threshold": DEFAULT_THRESHOLD, "variances": DEFAULT_VARIANCES, **decode_settings(spec)}
    settings["variances"] = [float(v) for v in settings["variances"]]
    return DetectorModel(folder, transform, classes, settings, deploy(folder))


def heads_network(model: DetectorModel) -> tuple[Any, dict[str, Any]]:
    """The deploy symbol cut to its class and box heads, with only the weights they use."""
    import mxnet as mx

    symbol, arg_params, aux_params = model.network
    heads = mx.sym.Group([symbol[0], symbol[1]])
    wanted = set(heads.list_arguments()) | set(heads.list_auxiliary_states())
    params = {k: v for k, v in {**arg_params, **aux_params}.items() if k in wanted}
    return heads, params


def mxnet_outputs(
    model: DetectorModel, inputs: np.ndarray
) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """MXNet's forward of the deploy symbol, photo by photo: ([(cls_prob, loc_preds)], anchors (A, 4))."""
    from processing.evaluate_detection import mxnet_heads

    forward = mxnet_heads(*model.network)
    answers, anchors = [], None
    for photo in inputs:
        cls_prob, loc_preds, anchors = forward(photo[None])
        answers.append((cls_prob[0], loc_preds[0]))
    return answers, np.asarray(anchors, np.float32).reshape(-1, 4)


def onnx_outputs(path: Path, inputs: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The ONNX heads' (cls_prob, loc_preds) of each photo, one at a time (batch 1, as the car)."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return [tuple(o[0] for o in session.run(list(HEAD_NAMES), {name: photo[None]})) for photo in inputs]


def map_delta(
    answers: Sequence[tuple[np.ndarray, ...]],
    reference: Sequence[tuple[np.ndarray, ...]],
    anchors: np.ndarray,
    truths: Sequence[np.ndarray],
    model: DetectorModel,
) -> dict[str, Any]:
    """The contract's accuracy_delta: mAP@0.5 of decoded answers against MXNet's, on the same photos."""

    def score(outputs: Sequence[tuple[np.ndarray, ...]]) -> float:
        found = [decode(c, loc, anchors, **model.decode) for c, loc in outputs]
        return detection_metrics(found, truths, model.classes)["map_50"]["value"]

    value, reference_value = score(answers), score(reference)
    difference = max(
        float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
        for pair, ref in zip(answers, reference, strict=True)
        for a, b in zip(pair, ref, strict=True)
    )
    return {
        "images": len(answers),
        "map_50": value,
        "reference_map_50": reference_value,
        "points": 100.0 * (reference_value - value),
        "max_abs_difference": difference,
    }


def artifact_record(
    path: Path,
    precision: str,
    scheme: str,
    model: DetectorModel,
    delta: Mapping,
    input_spec: Mapping[str, Any] | None = None,
) -> dict:
    """One artifact as the manifest lists it: the heads, float32 out; in, the transform's float32 input
    unless ``input_spec`` says otherwise (edge.photos.pixel_input_spec)."""
    float_input = {"name": model.transform.name, "shape": input_shape(model), "dtype": "float32"}
    return {
        "file": path.name,
        "runtime": "onnxruntime",
        "precision": precision,
        "quantization_scheme": scheme,
        "input": dict(input_spec or float_input),
        "outputs": [
            {"name": name, "index": i, "dtype": "float32", "meaning": name}
            for i, name in enumerate(HEAD_NAMES)
        ],
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "accuracy_delta": dict(delta),
    }


def detection_manifest(
    target: str, model: DetectorModel, source_sha256: str | None, tolerance_points: float | None
) -> dict[str, Any]:
    """The fields of a detector package's manifest common to its artifacts."""
    decode_spec = model.decode
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "task": TASK,
        "target": target,
        "classes": list(model.classes),
        "input_transform": model.transform.as_dict(),
        "anchors_file": ANCHORS_FILE,
        "decode": {
            "variances": list(decode_spec["variances"]),
            "nms_threshold": decode_spec.get("nms_threshold", 0.45),
            "nms_topk": decode_spec.get("nms_topk", 400),
            "threshold": decode_spec["threshold"],
        },
        "source_model": {"sha256": source_sha256},
    }
    if tolerance_points is not None:
        manifest["tolerance"] = {"map_points": tolerance_points}
    return manifest


def calibration_photos(train: Path, wanted: int, seed: int) -> list[Path]:
    """A deterministic sample of up to ``wanted`` training photos (the same on every rerun)."""
    paths = read_split(train).paths
    return [paths[int(i)] for i in representative_indices(len(paths), wanted, seed)]


def compile_locally(
    model: DetectorModel,
    targets: Sequence[str],
    *,
    train: Path,
    test: Path,
    out_dir: Path,
    work: Path,
    source_sha256: str | None,
    calibration_photos_wanted: int,
    seed: int,
    tolerance_points: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Heads in ONNX float32 and int8 + anchors, measured on the test split against MXNet."""
    try:
        split = read_split(test)
        calibration = prepared(calibration_photos(train, calibration_photos_wanted, seed), model.transform)
    except EvaluationError as exc:
        raise CompileError(str(exc)) from exc
    if split.classes != model.classes:
        raise CompileError(
            f"the test split's classes {split.classes} differ from the model's {model.classes}"
        )
    inputs = prepared(split.paths, model.transform)
    log(f"calibrating on {len(calibration)} training photos, measuring on {len(inputs)} test photos")
    reference, anchors = mxnet_outputs(model, inputs)
    np.save(work / ANCHORS_FILE, anchors)

    float_path, int8_path = work / FLOAT_FILE, work / INT8_FILE
    started = time.perf_counter()
    heads, params = heads_network(model)
    export_mxnet_onnx(heads, params, model.transform.name, input_shape(model), float_path, outputs=HEAD_NAMES)
    float_delta = map_delta(onnx_outputs(float_path, inputs), reference, anchors, split.boxes, model)
    if float_delta["max_abs_difference"] > FLOAT_MAX_ABS_DIFFERENCE:
        raise CompileError(
            f"{FLOAT_FILE} differs from MXNet by {float_delta['max_abs_difference']:.2e}: the export is wrong"
        )
    log(f"{FLOAT_FILE}: exported in {time.perf_counter() - started:.1f} s, {_summary(float_delta)}")
    started = time.perf_counter()
    overrides = input_overrides(model.transform, model.transform.name)
    quantize_int8(float_path, int8_path, calibration, INT8_SCHEME, overrides)
    int8_delta = map_delta(onnx_outputs(int8_path, inputs), reference, anchors, split.boxes, model)
    log(f"{INT8_FILE}: quantised in {time.perf_counter() - started:.1f} s, {_summary(int8_delta)}")
    artifacts = [  # best first: the car runs the first one within tolerance
        artifact_record(int8_path, "int8", INT8_SCHEME.describe(), model, int8_delta),
        artifact_record(
            float_path, "float32", f"float32 (mx.onnx export, opset {EXPORT_OPSET})", model, float_delta
        ),
    ]
    pixels = pixel_artifact(int8_path, model.transform, split.paths, INT8_SCHEME.describe())
    if pixels is not None:  # first: 3.7x MXNet's speed against 3.0x for the heads (docs/detection.md)
        delta = map_delta(onnx_outputs(pixels.path, pixels.inputs), reference, anchors, split.boxes, model)
        artifacts.insert(0, artifact_record(pixels.path, "int8", pixels.scheme, model, delta, pixels.spec))
    default = choose_default(artifacts, tolerance_points)
    files = {a["file"]: work / a["file"] for a in artifacts}
    files[ANCHORS_FILE] = work / ANCHORS_FILE
    entries = package_targets(
        targets, model, artifacts, files, default, out_dir=out_dir, source_sha256=source_sha256,
        tolerance_points=tolerance_points, manifest_for=detection_manifest,
    )  # fmt: skip
    return entries, {"anchors": int(len(anchors)), "anchors_sha256": sha256_file(work / ANCHORS_FILE)}


def _summary(delta: Mapping[str, Any]) -> str:
    return (
        f"mAP@0.5 {delta['map_50']:.4f} vs MXNet {delta['reference_map_50']:.4f} ({delta['points']:+.2f} "
        f"points), max |head - head_mxnet| {delta['max_abs_difference']:.1e}"
    )


def with_deploy_files(model: DetectorModel, work: Path, detections: Deploy | None = None) -> DetectorModel:
    """The model with Neo's input written: ``training.detector.deploy_detections`` (the deploy symbol
    ending in MultiBoxDetection, what Neo compiles for framework MXNET) as a symbol and a params file."""
    import mxnet as mx

    if detections is None:
        from training.detector import deploy_detections as detections
    symbol, arg_params, aux_params = detections(model.folder)
    symbol.save(str(work / DEPLOY_SYMBOL))
    saved = {f"arg:{k}": v for k, v in arg_params.items()} | {f"aux:{k}": v for k, v in aux_params.items()}
    mx.nd.save(str(work / DEPLOY_PARAMS), saved)
    return DetectorModel(**{**model.__dict__, "symbol": work / DEPLOY_SYMBOL, "params": work / DEPLOY_PARAMS})


def neo_artifact(model: DetectorModel, neo_input: Any, output: Any) -> dict[str, Any]:
    """The manifest entry of a Neo-compiled detector (the classifier's, with the deploy symbol's one
    output: (1, A, 6) rows of decode's columns, class -1 for dropped rows). The car runs ONNX detectors
    only: a Neo package is for the devices Neo targets, checked by their own smoke test."""
    outputs = [{"name": "detection", "index": 0, "dtype": "float32", "meaning": "detections"}]
    return classifier_neo_artifact(model, neo_input, output, outputs)


def build_parser() -> argparse.ArgumentParser:
    """The classifier's options (the same step contract), described for the detector."""
    parser = classifier_parser()
    parser.prog = "compile_detection.py"
    parser.description = (
        "CompileForEdge for the detector: locally the class and box heads as ONNX float32 and int8 with the "
        "anchors as data, each measured (mAP@0.5) against MXNet on the test split; --mode dry-run writes "
        "Neo's input (the deploy symbol with MultiBoxDetection) and requests."
    )
    return parser


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    deploy: Deploy | None = None,
    detections: Deploy | None = None,
) -> dict[str, Any]:
    """Compile as ``args`` say; ``deploy`` and ``detections``: training.detector's ``deploy_network`` and
    ``deploy_detections`` unless given (a test's stand-in)."""
    targets = parse_targets(args.targets, target_devices())
    mode = compile_mode(args, environ)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = read_model(unpack_model(args.model, work, marker=SPEC_FILE), deploy)
        archive = args.model / PACKAGE_NAME if args.model.is_dir() else args.model
        source_sha256 = sha256_file(archive) if archive.is_file() else None
        shape, names = input_shape(model), ", ".join(targets)
        log(f"{mode}: a {len(model.classes)}-class detector, input {shape}, for {names}")
        if mode == "dry-run":
            return dry_run_requests(
                args,
                write_neo_input(with_deploy_files(model, work, detections), args.output / NEO_INPUT_NAME),
                targets,
            )
        compiled: dict[str, Any] = {
            "format": COMPILED_FORMAT,
            "task": TASK,
            "mode": mode,
            "source_model_sha256": source_sha256,
            "classes": model.classes,
            "input_transform": model.transform.as_dict(),
        }
        if mode == "neo":
            compiled["targets"] = compile_on_neo(
                args, with_deploy_files(model, work, detections), targets, source_sha256, work,
                artifact_for=neo_artifact, manifest_for=detection_manifest,
            )  # fmt: skip
        else:
            compiled["targets"], compiled["anchors"] = compile_locally(
                model, targets, train=args.train, test=args.test, out_dir=args.output, work=work,
                source_sha256=source_sha256, calibration_photos_wanted=args.calibration_photos,
                seed=args.seed, tolerance_points=args.tolerance_points,
            )  # fmt: skip
    (args.output / COMPILED_NAME).write_bytes(json_bytes(compiled))
    log(f"wrote {args.output / COMPILED_NAME}")
    return compiled


def main(
    argv: Sequence[str] | None = None, deploy: Deploy | None = None, detections: Deploy | None = None
) -> int:
    """Exit 0 compiled, 1 compiling failed (mAP tolerance), 2 bad input, 70 a bug."""
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.calibration_photos <= 0 or args.tolerance_points < 0:
        parser.error("--calibration-photos must be positive, --tolerance-points >= 0")

    def body() -> int:
        run(args, os.environ, deploy, detections)
        return 0

    return run_main("compile", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
