"""CompileForEdge for the classifier recipe: the trained MXNet classifier compiled per edge target.

Runs in the MXNet environment (``mxnet-training`` image; locally ``pipelines/local/requirements/mxnet.txt``).
The input is the trainer's model (``training/classifier.py``: ``image-classification-symbol.json``, one
``image-classification-NNNN.params``, ``classifier-spec.json``), as ``model.tar.gz`` or a folder.

* ``local``: ONNX float32 exported by ``mx.onnx.export_model`` with two fixes (``export_onnx``), and static
  int8 (``onnxruntime.quantization.quantize_static`` calibrated on training photos). Each is run by ONNX
  Runtime on the test split and compared with MXNet's own forward of the same weights; the car gets int8
  when it is within ``--tolerance-points`` accuracy points of MXNet, else float32.
* ``neo`` (AWS): the symbol and params in one tar.gz, one ``CreateCompilationJob`` per target with
  framework ``MXNET`` and ``DataInputConfig`` ``{"data": [1, 3, H, W]}`` (``processing/neo.py``).
* ``dry-run``: that archive (``OUTPUT/neo-input.tar.gz``) and each target's request
  (``OUTPUT/<target>/create_compilation_job.json``); no AWS API is called.

Output as the pilot's (docs/contracts.md section 5): ``OUTPUT/<target>/model.tar.gz`` and
``OUTPUT/<target>/manifest.json`` (``"task": "classification"``), and ``OUTPUT/compiled.json`` whose
``targets.<target>.sha256`` and ``.runtime`` the Register step reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.archives import write_reproducible_tar_gz
from edge.artifacts import sha256_file
from edge.photos import PhotoError, PhotoTransform, prepare_for
from processing.compile import DEFAULT_TARGETS, compile_mode, dry_run_requests, unpack_model
from processing.edge_package import (
    COMPILED_FORMAT,
    COMPILED_NAME,
    MANIFEST_FORMAT,
    PACKAGE_NAME,
    CompileError,
    CompileFailed,
    compiled_entry,
    finish_manifest,
    json_bytes,
    log,
    write_package,
)
from processing.errors import add_debug_flag, run_main
from processing.local_compile import representative_indices
from processing.neo import (
    NEO_INPUT_NAME,
    NeoInput,
    parse_targets,
    target_devices,
)
from processing.pixel_input import input_overrides, pixel_artifact
from training.classifier import ARTIFACT_PREFIX, SPEC_FILE, read_image_list

PROCESSING = "/opt/ml/processing"
SYMBOL_FILE = f"{ARTIFACT_PREFIX}-symbol.json"
PARAMS_GLOB = f"{ARTIFACT_PREFIX}-[0-9][0-9][0-9][0-9].params"
FLOAT_FILE, INT8_FILE = "classifier-float32.onnx", "classifier-int8.onnx"
# mx.onnx's converters are written for opsets 12 and 13 (mx2onnx/_op_translations_opset1{2,3}.py): 13
# is what they emit. IR 7 is the lowest IR version that can declare opset 13 (onnx.helper.VERSION_TABLE).
EXPORT_OPSET, EXPORT_IR_VERSION = 13, 7
# ONNX Runtime float32 against MXNet's forward: measured ~1e-6 on probabilities (docs/classifier.md);
# a difference above this is a wrong export, not rounding.
FLOAT_MAX_ABS_DIFFERENCE = 1e-4
DEFAULT_TOLERANCE_POINTS = 1.0  # issue 16: int8 when within one accuracy point of MXNet
DEFAULT_CALIBRATION_PHOTOS = 200
OUTPUT_MEANING = "probabilities"  # the symbol ends in a softmax (training/classifier.py export)
# Neo's edge frameworks: MXNet "1.8", "Supports 1.8 or earlier", one symbol file and one params file
# (https://docs.aws.amazon.com/sagemaker/latest/dg/neo-supported-devices-edge-frameworks.html).
NEO_FRAMEWORK = "MXNET"
NEO_FRAMEWORK_VERSION = "1.8"


@dataclass(frozen=True)
class ClassifierModel:
    """The trainer's files and what ``classifier-spec.json`` says about them."""

    folder: Path
    symbol: Path
    params: Path
    transform: PhotoTransform
    classes: list[str]


@dataclass(frozen=True)
class Int8Scheme:
    """How quantize_static writes the int8 model (chosen by measurement: docs/classifier.md "Compile")."""

    quant_format: str  # "QDQ" or "QOperator"
    per_channel: bool

    def describe(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        return f"static {self.quant_format}, BatchNorm folded, {weights} int8 weights, uint8 activations"


# Measured on a 3-class model, 300 test photos, batch 1, one thread (docs/classifier.md "Compile"):
# per-tensor weights lost 7.7 points, per-channel none; QOperator ran 1.4x QDQ's speed at equal accuracy.
INT8_SCHEME = Int8Scheme("QOperator", per_channel=True)


# -------------------------------------------------------------------------------------------- model


def read_model(folder: Path) -> ClassifierModel:
    """The symbol, the one params file and the spec of a trained classifier; CompileError otherwise."""
    spec_path, symbol = folder / SPEC_FILE, folder / SYMBOL_FILE
    params = sorted(folder.glob(PARAMS_GLOB))
    if not symbol.is_file() or len(params) != 1:
        raise CompileError(
            f"{folder}: expected {SYMBOL_FILE} and one image-classification-NNNN.params "
            f"(found {len(params)}): the classifier trainer's output"
        )
    try:
        spec = json.loads(spec_path.read_text())
        transform = PhotoTransform.from_dict(spec["input"])
        classes = [str(name) for name in spec["classes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:  # PhotoError is a ValueError
        raise CompileError(f"{spec_path} is not a classifier spec: {exc}") from exc
    if len(classes) < 2:
        raise CompileError(f"{spec_path}: a classifier needs at least 2 classes, got {classes}")
    return ClassifierModel(folder, symbol, params[0], transform, classes)


def input_shape(model: ClassifierModel) -> list[int]:
    return [1, 3, model.transform.height, model.transform.width]


# ----------------------------------------------------------------------------------------- photos


def read_split(split: Path) -> list[tuple[int, Path]]:
    """(class id, photo) of a split's image list (Preprocess's ``images.lst``)."""
    try:
        return read_image_list(split)
    except ValueError as exc:  # training's UsageError: same meaning here, bad input
        raise CompileError(f"the {split.name} split: {exc}") from exc


def prepared(
    photos: Sequence[Path], transform: PhotoTransform, spec: Mapping[str, Any] | None = None
) -> np.ndarray:
    """[N, 3, H, W] float32 through the car's own ``edge.photos.prepare`` (an artifact's ``input`` spec:
    as ``edge.photos.prepare_for`` feeds it); an unreadable photo is bad input (exit 2), not a bug."""
    try:
        return np.concatenate([prepare_for(path, transform, spec) for path in photos])
    except PhotoError as exc:
        raise CompileError(str(exc)) from exc


def calibration_photos(train: Path, wanted: int, seed: int) -> list[Path]:
    """A deterministic sample of up to ``wanted`` training photos (the same on every rerun)."""
    entries = read_split(train)
    return [entries[int(i)][1] for i in representative_indices(len(entries), wanted, seed)]


# -------------------------------------------------------------------------------------------- ONNX


@contextlib.contextmanager
def _exporter_opset(opset: int) -> Iterator[None]:
    """mx.onnx.export_model with ``opset`` as "the installed onnx's newest opset".

    export_model takes no opset: it reads ``onnx.defs.onnx_opset_version()`` (23 with onnx 1.18), picks
    each operator's converter at or below it (they exist for 12 and 13 only), checks the graph against
    onnx.checker's default context (that newest opset) and declares it. The converters' ReduceMean
    carries ``axes`` as an attribute, an input since opset 18, so the check fails ("Unrecognized
    attribute: axes for operator ReduceMean"); and a model declaring 23 would be read with opset-23
    semantics. For the duration of the export both see ``opset``.
    """
    import onnx.checker
    import onnx.defs

    newest, context = onnx.defs.onnx_opset_version, onnx.checker.DEFAULT_CONTEXT
    declared = dict(context.opset_imports)
    onnx.defs.onnx_opset_version = lambda: opset
    context.opset_imports = {"": opset}
    try:
        yield
    finally:
        onnx.defs.onnx_opset_version = newest
        context.opset_imports = declared


def export_onnx(model: ClassifierModel, dest: Path) -> Any:
    """The classifier as a checked ONNX model (opset 13, IR 7, weights only as initializers), saved."""
    return export_mxnet_onnx(
        str(model.symbol), str(model.params), model.transform.name, input_shape(model), dest, outputs=1
    )


def export_mxnet_onnx(
    symbol: Any,
    params: Any,
    input_name: str,
    shape: Sequence[int],
    dest: Path,
    *,
    outputs: int | Sequence[str],
) -> Any:
    """An MXNet symbol and its params (files, or a Symbol and a dict) as a checked ONNX model (opset 13,
    IR 7, weights only as initializers), saved at ``dest``. ``outputs``: how many outputs the export
    must have, or their names (the graph's outputs renamed to them, in order)."""
    import mxnet as mx
    import onnx

    with tempfile.TemporaryDirectory() as tmp, _exporter_opset(EXPORT_OPSET):
        raw = Path(tmp) / "export.onnx"
        mx.onnx.export_model(symbol, params, [tuple(shape)], [np.float32], str(raw))
        proto = onnx.load(str(raw))
    del proto.opset_import[:]
    proto.opset_import.append(onnx.helper.make_opsetid("", EXPORT_OPSET))
    proto.ir_version = EXPORT_IR_VERSION
    # The exporter lists every weight as a graph input too: runtimes then treat them as inputs a caller
    # may override, which blocks constant folding and quantisation (quantize_static leaves them float).
    weights = {init.name for init in proto.graph.initializer}
    kept = [value for value in proto.graph.input if value.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    if [value.name for value in proto.graph.input] != [input_name]:
        raise CompileError(f"the ONNX export takes {[v.name for v in kept]}, expected [{input_name!r}]")
    wanted = outputs if isinstance(outputs, int) else len(outputs)
    if len(proto.graph.output) != wanted:
        raise CompileError(f"the ONNX export has {len(proto.graph.output)} outputs, expected {wanted}")
    if not isinstance(outputs, int):
        _rename_outputs(proto, list(outputs))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(dest))
    return proto


def _rename_outputs(proto: Any, names: Sequence[str]) -> None:
    """The graph's outputs renamed, in order, to ``names`` (and every node that reads or writes them)."""
    renamed = {value.name: name for value, name in zip(proto.graph.output, names, strict=True)}
    for node in proto.graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
        node.input[:] = [renamed.get(name, name) for name in node.input]
    for value in proto.graph.output:
        value.name = renamed[value.name]


def onnx_summary(path: Path) -> dict[str, Any]:
    """compiled.json's record of the float32 export every local artifact derives from."""
    import onnx

    proto = onnx.load(str(path))
    return {
        "sha256": sha256_file(path),
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
        "input": {"name": proto.graph.input[0].name, "layout": "NCHW"},
        "output": proto.graph.output[0].name,
    }


def quantize_int8(
    float_path: Path,
    dest: Path,
    calibration: np.ndarray,
    scheme: Int8Scheme,
    extra_options: Mapping[str, Any] | None = None,
) -> None:
    """Static int8 of the float32 export, calibrated (MinMax) on ``calibration`` [N, 3, H, W];
    ``extra_options``: quantize_static's (processing/pixel_input.py's ``input_overrides``).

    ONNX Runtime's pre-processing runs first: it folds each BatchNormalization into its convolution, so
    the int8 convolutions carry the folded weights. Without it the BatchNormalizations stay float
    between int8 convolutions ("Axis 1 is out-of-range" for their per-channel scales); measured: the
    int8 model ran at 0.4-0.6x the speed of the pre-processed one at no better accuracy.
    Symbolic shape inference is skipped (it needs sympy; the export's shapes are static).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(float_path)).graph.input[0].name
    folded = dest.with_suffix(".folded.onnx")
    quant_pre_process(str(float_path), str(folded), skip_symbolic_shape=True)

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._photos = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            photo = next(self._photos, None)
            return None if photo is None else {input_name: photo[None]}

    quantize_static(
        str(folded),
        str(dest),
        Photos(),
        quant_format=QuantFormat.QDQ if scheme.quant_format == "QDQ" else QuantFormat.QOperator,
        per_channel=scheme.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options=dict(extra_options or {}),
    )
    folded.unlink()


def ort_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session; ``threads`` 0 lets ONNX Runtime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probabilities(path: Path, inputs: np.ndarray) -> np.ndarray:
    """The ONNX model's output for each photo, one at a time (the export's batch is 1, as the car's)."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: photo[None]})[0] for photo in inputs])


def mxnet_probabilities(model: ClassifierModel, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """MXNet's own forward of the trained symbol and params: the reference every artifact is compared with."""
    import mxnet as mx

    from training.classifier import load_exported

    net, _, _ = load_exported(model.folder)
    return np.concatenate(
        [net(mx.nd.array(inputs[i : i + batch])).asnumpy() for i in range(0, len(inputs), batch)]
    )


def accuracy_delta(probabilities: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The contract's accuracy_delta: accuracy against the labels and top-1 agreement with MXNet."""
    predicted, expected = probabilities.argmax(axis=1), reference.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    reference_accuracy = float((expected == labels).mean())
    return {
        "images": int(len(labels)),
        "accuracy": accuracy,
        "reference_accuracy": reference_accuracy,
        "points": 100.0 * (reference_accuracy - accuracy),
        "agreement": float((predicted == expected).mean()),
        "max_abs_difference": float(np.abs(probabilities - reference).max()),
    }


# -------------------------------------------------------------------------------------- packages


def artifact_record(
    path: Path,
    precision: str,
    scheme: str,
    model: ClassifierModel,
    delta: Mapping[str, Any],
    input_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One artifact as the manifest lists it (contract "Compiled output"); its input the transform's
    float32 unless ``input_spec`` says otherwise (edge.photos.pixel_input_spec)."""
    import onnx

    output = onnx.load(str(path)).graph.output[0].name
    float_input = {"name": model.transform.name, "shape": input_shape(model), "dtype": "float32"}
    return {
        "file": path.name,
        "runtime": "onnxruntime",
        "precision": precision,
        "quantization_scheme": scheme,
        "input": dict(input_spec or float_input),
        "outputs": [{"name": output, "index": 0, "dtype": "float32", "meaning": OUTPUT_MEANING}],
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "accuracy_delta": dict(delta),
    }


def choose_default(artifacts: list[dict[str, Any]], tolerance_points: float) -> str:
    """Marks ``within_tolerance``; the first (int8 before float32) within the tolerance is the default."""
    for artifact in artifacts:
        artifact["within_tolerance"] = artifact["accuracy_delta"]["points"] <= tolerance_points
    usable = [a["file"] for a in artifacts if a["within_tolerance"]]
    if not usable:
        raise CompileFailed(f"no compiled artifact is within {tolerance_points} accuracy points of MXNet")
    return usable[0]


def classifier_manifest(
    target: str, model: ClassifierModel, source_sha256: str | None, tolerance_points: float | None
) -> dict[str, Any]:
    """The fields of a classifier package's manifest common to its artifacts."""
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "task": "classification",
        "target": target,
        "classes": list(model.classes),
        "input_transform": model.transform.as_dict(),
        "source_model": {"sha256": source_sha256},
    }
    if tolerance_points is not None:
        manifest["tolerance"] = {"accuracy_points": tolerance_points}
    return manifest


def package_targets(
    targets: Sequence[str],
    model: Any,
    artifacts: list[dict[str, Any]],
    files: Mapping[str, Path],
    default: str,
    *,
    out_dir: Path,
    source_sha256: str | None,
    tolerance_points: float | None,
    manifest_for: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``OUT/<target>/model.tar.gz`` and ``manifest.json`` per target; compiled.json's targets.
    ``manifest_for(target, model, source_sha256, tolerance_points)``: the manifest's common fields
    (``classifier_manifest`` unless given: the detection recipe passes its own)."""
    entries = {}
    for target in targets:
        common = (manifest_for or classifier_manifest)(target, model, source_sha256, tolerance_points)
        manifest = finish_manifest(common, [dict(a) for a in artifacts], default)
        package = write_package(files, manifest, out_dir / target / PACKAGE_NAME)
        entries[target] = compiled_entry(target, package, artifacts, default)
        log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']} (default {default})")
    return entries


# ------------------------------------------------------------------------------------------ local


def compile_locally(
    model: ClassifierModel,
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
    """ONNX float32 and int8, measured on the test split against MXNet; (targets, the export's record)."""
    test_entries = read_split(test)
    labels = np.array([label for label, _ in test_entries], dtype=np.int64)
    if labels.max() >= len(model.classes):
        raise CompileError(
            f"the test split has class id {labels.max()}, the model knows {len(model.classes)}"
        )
    inputs = prepared([path for _, path in test_entries], model.transform)
    calibration = prepared(calibration_photos(train, calibration_photos_wanted, seed), model.transform)
    log(f"calibrating on {len(calibration)} training photos, measuring on {len(inputs)} test photos")
    reference = mxnet_probabilities(model, inputs)

    float_path, int8_path = work / FLOAT_FILE, work / INT8_FILE
    started = time.perf_counter()
    export_onnx(model, float_path)
    float_delta = accuracy_delta(onnx_probabilities(float_path, inputs), reference, labels)
    if float_delta["max_abs_difference"] > FLOAT_MAX_ABS_DIFFERENCE:
        raise CompileFailed(
            f"{FLOAT_FILE} differs from MXNet by {float_delta['max_abs_difference']:.2e} "
            f"(more than {FLOAT_MAX_ABS_DIFFERENCE:g}): the export is wrong"
        )
    log(f"{FLOAT_FILE}: exported in {time.perf_counter() - started:.1f} s, {_summary(float_delta)}")
    started = time.perf_counter()
    quantize_int8(
        float_path,
        int8_path,
        calibration,
        INT8_SCHEME,
        input_overrides(model.transform, model.transform.name),
    )
    int8_delta = accuracy_delta(onnx_probabilities(int8_path, inputs), reference, labels)
    log(f"{INT8_FILE}: quantised in {time.perf_counter() - started:.1f} s, {_summary(int8_delta)}")

    artifacts = [  # best first: the car runs the first one within tolerance
        artifact_record(int8_path, "int8", INT8_SCHEME.describe(), model, int8_delta),
        artifact_record(float_path, "float32", "float32 (mx.onnx export, opset 13)", model, float_delta),
    ]
    pixels = pixel_artifact(
        int8_path, model.transform, [path for _, path in test_entries], INT8_SCHEME.describe()
    )
    if (
        pixels is not None
    ):  # first: 650 -> 580 us a photo on an Intel Xeon, the same answers (docs/classifier.md)
        delta = accuracy_delta(onnx_probabilities(pixels.path, pixels.inputs), reference, labels)
        artifacts.insert(0, artifact_record(pixels.path, "int8", pixels.scheme, model, delta, pixels.spec))
    default = choose_default(artifacts, tolerance_points)
    files = {a["file"]: work / a["file"] for a in artifacts}
    entries = package_targets(
        targets,
        model,
        artifacts,
        files,
        default,
        out_dir=out_dir,
        source_sha256=source_sha256,
        tolerance_points=tolerance_points,
    )
    return entries, onnx_summary(float_path)


def _summary(delta: Mapping[str, Any]) -> str:
    return (
        f"accuracy {delta['accuracy']:.4f} vs MXNet {delta['reference_accuracy']:.4f} "
        f"({delta['points']:+.2f} points), agreement {delta['agreement']:.4f}, "
        f"max |p - p_mxnet| {delta['max_abs_difference']:.1e}"
    )


# -------------------------------------------------------------------------------------------- Neo


def write_neo_input(model: ClassifierModel, dest: Path) -> NeoInput:
    """The tar.gz Neo reads for MXNet: the symbol file and the params file, nothing else, reproducibly."""
    package = write_reproducible_tar_gz(
        {model.symbol.name: model.symbol, model.params.name: model.params}, dest
    )
    return NeoInput(
        dest,
        model.transform.name,
        tuple(input_shape(model)),
        package["sha256"],
        framework=NEO_FRAMEWORK,
        framework_version=NEO_FRAMEWORK_VERSION,
    )


def neo_artifact(
    model: Any, neo_input: NeoInput, output: Any, outputs: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The manifest entry of a Neo-compiled model (runtime DLR): a classifier's probabilities unless
    ``outputs`` names the recipe's."""
    return {
        "file": "neo",
        "runtime": "dlr",
        "precision": "float32",
        "input": {"name": model.transform.name, "shape": input_shape(model), "dtype": "float32"},
        "outputs": [dict(o) for o in outputs]
        if outputs is not None
        else [{"name": "softmax", "index": 0, "dtype": "float32", "meaning": OUTPUT_MEANING}],
        "sha256": sha256_file(output.archive),
        "size_bytes": output.archive.stat().st_size,
        # DLR does not run in the Processing container: the device's smoke test checks the output.
        "accuracy_delta": None,
        "neo": {
            "job_name": output.job["CompilationJobName"],
            "job_arn": output.job.get("CompilationJobArn"),
            "s3_uri": output.uri,
            "input_sha256": neo_input.sha256,
            "framework": NEO_FRAMEWORK,
            "framework_version": NEO_FRAMEWORK_VERSION,
        },
    }


def compile_on_neo(
    args: argparse.Namespace,
    model: Any,
    targets: Sequence[str],
    source_sha256: str | None,
    work: Path,
    *,
    artifact_for: Callable[[Any, NeoInput, Any], dict[str, Any]] | None = None,
    manifest_for: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """One Neo job per target on ``write_neo_input(model)``, each packaged with its manifest:
    ``artifact_for`` (``neo_artifact``) and ``manifest_for`` (``classifier_manifest``) are the recipe's."""
    import boto3

    from processing.neo import run_compilation_jobs

    session = boto3.session.Session(region_name=args.region)
    neo_input = write_neo_input(model, work / NEO_INPUT_NAME)
    outputs = run_compilation_jobs(
        session.client("sagemaker"),
        session.client("s3"),
        targets,
        neo_input,
        output_s3_uri=args.output_s3_uri,
        role_arn=args.role_arn,
        timeout_s=args.timeout_s,
        work=work / "neo",
    )
    entries = {}
    for target, output in outputs.items():
        artifact = (artifact_for or neo_artifact)(model, neo_input, output)
        common = (manifest_for or classifier_manifest)(target, model, source_sha256, None)
        manifest = finish_manifest(common, [artifact], "neo")
        package = write_package(output.files, manifest, args.output / target / PACKAGE_NAME)
        entries[target] = compiled_entry(target, package, [artifact], "neo")
        log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']}")
    return entries


def dry_run(args: argparse.Namespace, model: ClassifierModel, targets: Sequence[str]) -> dict[str, Any]:
    """The Neo input and each target's request, written as they would be sent; nothing is called."""
    return dry_run_requests(args, write_neo_input(model, args.output / NEO_INPUT_NAME), targets)


# ------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compile_classifier.py",
        description="CompileForEdge for the classifier: locally ONNX float32 and static int8 measured "
        "against MXNet on the test split, or SageMaker Neo (framework MXNET) per target. Writes "
        "OUTPUT/<target>/model.tar.gz, OUTPUT/<target>/manifest.json and OUTPUT/compiled.json; "
        "--mode dry-run writes OUTPUT/neo-input.tar.gz and OUTPUT/<target>/create_compilation_job.json.",
    )
    parser.add_argument(
        "--model", type=Path, default=Path(f"{PROCESSING}/model"), help="folder with model.tar.gz"
    )
    parser.add_argument(
        "--train", type=Path, default=Path(f"{PROCESSING}/train"), help="training split (int8 calibration)"
    )
    parser.add_argument("--test", type=Path, default=Path(f"{PROCESSING}/test"), help="test split (accuracy)")
    parser.add_argument("--output", type=Path, default=Path(f"{PROCESSING}/output"), help="output folder")
    parser.add_argument(
        "--edge-targets",
        "--targets",
        dest="targets",
        default=DEFAULT_TARGETS,
        help=f"comma-separated Neo TargetDevice names (default {DEFAULT_TARGETS})",
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "local", "neo", "dry-run"),
        default="auto",
        help="local: ONNX float32 and int8 here; neo: SageMaker Neo; dry-run: write Neo's input and "
        "requests, call nothing; auto (default): neo when --model-s3-uri is given and ROBOCAR_LOCAL_ROOT "
        "is not set, else local",
    )
    parser.add_argument("--dry-run", action="store_true", help="the same as --mode dry-run")
    parser.add_argument("--model-s3-uri", help="S3 URI of the training model.tar.gz (selects Neo in auto)")
    parser.add_argument(
        "--output-s3-uri", help="S3 prefix for Neo: its input under input/, its output per target"
    )
    parser.add_argument("--role-arn", help="IAM role Neo assumes to read the model and write its output")
    parser.add_argument("--timeout-s", type=int, default=1800, help="Neo: per-step time limit (default 1800)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"), help="AWS region for Neo")
    parser.add_argument(
        "--calibration-photos",
        type=int,
        default=DEFAULT_CALIBRATION_PHOTOS,
        help=f"local: training photos int8 is calibrated on (default {DEFAULT_CALIBRATION_PHOTOS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="local: seed of the calibration sample")
    parser.add_argument(
        "--tolerance-points",
        type=float,
        default=DEFAULT_TOLERANCE_POINTS,
        help="local: accuracy points below MXNet an artifact may lose and still be the car's (default 1.0)",
    )
    return parser


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    targets = parse_targets(args.targets, target_devices())
    mode = compile_mode(args, environ)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = read_model(unpack_model(args.model, work, marker=SPEC_FILE))
        archive = args.model / PACKAGE_NAME if args.model.is_dir() else args.model
        source_sha256 = sha256_file(archive) if archive.is_file() else None
        shape, names = input_shape(model), ", ".join(targets)
        log(f"{mode}: a {len(model.classes)}-class classifier, input {shape}, for {names}")
        if mode == "dry-run":
            return dry_run(args, model, targets)
        compiled: dict[str, Any] = {
            "format": COMPILED_FORMAT,
            "task": "classification",
            "mode": mode,
            "source_model_sha256": source_sha256,
            "classes": model.classes,
            "input_transform": model.transform.as_dict(),
        }
        if mode == "neo":
            compiled["targets"] = compile_on_neo(args, model, targets, source_sha256, work)
        else:
            compiled["targets"], compiled["onnx"] = compile_locally(
                model,
                targets,
                train=args.train,
                test=args.test,
                out_dir=args.output,
                work=work,
                source_sha256=source_sha256,
                calibration_photos_wanted=args.calibration_photos,
                seed=args.seed,
                tolerance_points=args.tolerance_points,
            )
    (args.output / COMPILED_NAME).write_bytes(json_bytes(compiled))
    log(f"wrote {args.output / COMPILED_NAME}")
    return compiled


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 compiled, 1 compiling failed (Neo, accuracy tolerance), 2 bad input, 70 a bug."""
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.timeout_s <= 0 or args.calibration_photos <= 0 or args.tolerance_points < 0:
        parser.error("--timeout-s and --calibration-photos must be positive, --tolerance-points >= 0")

    def body() -> int:
        run(args, os.environ)
        return 0

    return run_main("compile", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
