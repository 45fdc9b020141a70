"""CompileForEdge: the trained pilot compiled for each edge target (docs/contracts.md section 5).

Runs in a Processing container (or as a local process). Two modes:

* ``neo`` (AWS): one SageMaker Neo ``CreateCompilationJob`` per target, with the framework and input
  shape from ``model.json``; ``DescribeCompilationJob`` is polled with exponential backoff until a
  timeout, and a failed job fails the step with Neo's ``FailureReason``. Each compiled output is
  downloaded and repackaged with a manifest (runtime DLR).
* ``local``: LiteRT float32, LiteRT full-integer int8 (calibrated on a deterministic sample of the
  training split), ONNX float32 and ONNX static int8. Every artifact is run through the car's own
  runtime code (``edge.runtimes``) on the test split and compared with the float Keras model.

Output, per target: ``OUTPUT/<target>/model.tar.gz`` (the artifacts and ``manifest.json``) and
``OUTPUT/<target>/manifest.json``; and ``OUTPUT/compiled.json``::

    {"targets": {"<target>": {"uri", "sha256", "size_bytes", "runtimes", "default"}}, "mode", ...}

The Register step reads ``targets.<target>.sha256`` with JsonGet. ``uri`` is relative to the step's
output (``<target>/model.tar.gz``) because the step's S3 output prefix is only known to the pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (the container): make `processing`/`edge` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edge.frames import FrameSpec, decode_outputs, to_model_input  # noqa: E402

PROCESSING = "/opt/ml/processing"
DEFAULT_TARGETS = "jetson_nano,rasp4b"
VENDORED_TARGETS = Path(__file__).with_name("neo_targets.json")
PACKAGE_NAME = "model.tar.gz"
MANIFEST_NAME = "manifest.json"
COMPILED_NAME = "compiled.json"
MANIFEST_FORMAT = "robocar-edge/1"
DEFAULT_MAX_ANGLE_DELTA = 0.03  # the bound on an int8 pilot's angle error against the float model
NEO_FRAMEWORKS = {"tensorflow": "TENSORFLOW", "keras": "TENSORFLOW", "mxnet": "MXNET"}
NEO_DONE = {"COMPLETED"}
NEO_FAILED = {"FAILED", "STOPPED"}


class CompileError(RuntimeError):
    """A problem the step reports in one line (bad input, failed Neo job) instead of a traceback."""


def log(message: str) -> None:
    print(f"compile: {message}", flush=True)


# ----------------------------------------------------------------------------------------- targets


def vendored_target_devices() -> list[str]:
    """Neo's TargetDevice names as shipped with this script (for containers and devices without botocore)."""
    return list(json.loads(VENDORED_TARGETS.read_text())["target_devices"])


def botocore_target_devices() -> list[str] | None:
    """The TargetDevice enum of the installed botocore's SageMaker model, or None without botocore."""
    try:
        import botocore.session
    except ImportError:
        return None
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TargetDevice").enum)


def target_devices() -> list[str]:
    return botocore_target_devices() or vendored_target_devices()


def parse_targets(text: str, allowed: Sequence[str]) -> list[str]:
    """``"jetson_nano,rasp4b"`` -> de-duplicated targets in order, each a Neo TargetDevice."""
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not targets:
        raise CompileError("--targets is empty: name at least one Neo target device, e.g. jetson_nano")
    for target in targets:
        if target not in allowed:
            close = difflib.get_close_matches(target, allowed, n=3)
            hint = (
                f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(allowed))}"
            )
            raise CompileError(f"unknown Neo target device {target!r}{hint}")
    return targets


def resolve_mode(mode: str, model_s3_uri: str | None, environ: Mapping[str, str]) -> str:
    """``auto`` is Neo when the model is in S3 and no local workspace (ROBOCAR_LOCAL_ROOT) is set."""
    if mode == "auto":
        return "neo" if model_s3_uri and not environ.get("ROBOCAR_LOCAL_ROOT") else "local"
    return mode


# ------------------------------------------------------------------------------ model and packages


def unpack_model(model: Path, work: Path) -> Path:
    """``--model`` (a folder with model.tar.gz, the archive itself, or an extracted model) -> model folder."""
    if (model / "model.json").is_file():
        return model
    archive = model / PACKAGE_NAME if model.is_dir() else model
    if not archive.is_file():
        raise CompileError(f"{model}: no {PACKAGE_NAME} and no model.json (expected the training output)")
    target = work / "model"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, '..' and links out of the folder
    except (tarfile.TarError, OSError) as exc:
        raise CompileError(f"{archive}: cannot unpack the model archive: {exc}") from exc
    if not (target / "model.json").is_file():
        raise CompileError(f"{archive} has no model.json at its top level")
    return target


def read_model_json(model_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        shape = [int(v) for v in meta["input"]["shape"]]
        names = [str(o["name"]) for o in meta["outputs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CompileError(
            f"{model_dir / 'model.json'} is not a model description (contracts section 3): {exc}"
        ) from exc
    if len(shape) != 3 or shape[2] != 3 or names != ["angle", "throttle"]:
        raise CompileError(
            f"model.json: expected input [H, W, 3] and outputs angle, throttle; got {shape}, {names}"
        )
    return meta


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_package(files: Mapping[str, Path], manifest: Mapping[str, Any], dest: Path) -> dict[str, Any]:
    """A reproducible model.tar.gz: regular files only, sorted, zero mtimes (same input, same sha256)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    members = {MANIFEST_NAME: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
    members.update({name: path.read_bytes() for name, path in files.items()})
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    (dest.parent / MANIFEST_NAME).write_bytes(members[MANIFEST_NAME])
    return {"sha256": sha256_file(dest), "size_bytes": dest.stat().st_size}


def base_manifest(target: str, meta: Mapping[str, Any], source_sha256: str | None) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "target": target,
        "model_type": meta.get("model_type", "linear"),
        "throttle_range": float(meta.get("throttle_range", 0.5)),
        "frame_spec": meta["input"].get("frame_spec") or FrameSpec().to_dict(),
        "source_model": {"sha256": source_sha256, "dataset_fingerprint": meta.get("dataset_fingerprint")},
    }


def finish_manifest(
    manifest: dict[str, Any], artifacts: list[dict[str, Any]], default: str
) -> dict[str, Any]:
    """Adds the artifacts and, at the top level, contract section 5's fields of the default artifact."""
    chosen = next(a for a in artifacts if a["file"] == default)
    manifest.update({"artifacts": artifacts, "default": default})
    for key in ("runtime", "file", "input", "outputs", "sha256", "size_bytes", "accuracy_delta"):
        manifest[key] = chosen[key]
    return manifest


def compiled_entry(target: str, package: Mapping[str, Any], artifacts: list[dict[str, Any]], default: str):
    return {
        "uri": f"{target}/{PACKAGE_NAME}",
        "sha256": package["sha256"],
        "size_bytes": package["size_bytes"],
        "runtimes": sorted({a["runtime"] for a in artifacts}),
        "artifacts": [a["file"] for a in artifacts],
        "default": default,
        "manifest": f"{target}/{MANIFEST_NAME}",
    }


# -------------------------------------------------------------------------------------------- Neo


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise CompileError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def neo_job_name(target: str, model_sha256: str, now: float) -> str:
    """Unique per model, target and second; Neo names allow [a-zA-Z0-9-], at most 63 characters."""
    return f"robocar-{target.replace('_', '-')}-{model_sha256[:8]}-{int(now)}"[:63]


def neo_input_config(
    meta: Mapping[str, Any], model_s3_uri: str, framework_version: str | None
) -> dict[str, Any]:
    frameworks = [f.lower() for f in (meta.get("framework") or {"tensorflow": None})]
    framework = next((NEO_FRAMEWORKS[f] for f in frameworks if f in NEO_FRAMEWORKS), None)
    if framework is None:
        raise CompileError(f"model.json framework {frameworks} has no Neo equivalent")
    height, width, channels = (int(v) for v in meta["input"]["shape"])
    # TensorFlow takes NHWC as trained; MXNet takes NCHW.
    shape = [1, height, width, channels] if framework == "TENSORFLOW" else [1, channels, height, width]
    config = {
        "S3Uri": model_s3_uri,
        "DataInputConfig": json.dumps({meta["input"].get("name", "img_in"): shape}),
        "Framework": framework,
    }
    if framework_version:
        config["FrameworkVersion"] = framework_version
    return config


def compilation_job_request(
    name: str, target: str, input_config: Mapping[str, Any], output_s3_uri: str, role_arn: str, timeout_s: int
) -> dict[str, Any]:
    return {
        "CompilationJobName": name,
        "RoleArn": role_arn,
        "InputConfig": dict(input_config),
        "OutputConfig": {
            "S3OutputLocation": f"{output_s3_uri.rstrip('/')}/{target}/",
            "TargetDevice": target,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": int(timeout_s)},
    }


def wait_for_compilation(
    sagemaker: Any,
    names: Sequence[str],
    timeout_s: float,
    *,
    first_delay_s: float = 5.0,
    max_delay_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """Poll DescribeCompilationJob for all jobs with exponential backoff; fail on the first failed job.

    Boto3 has no waiter for compilation jobs (sdk-notes.md). On timeout the unfinished jobs are stopped.
    """
    deadline = clock() + timeout_s
    pending, done = list(names), {}
    delay = first_delay_s
    while True:
        for name in list(pending):
            job = sagemaker.describe_compilation_job(CompilationJobName=name)
            status = job["CompilationJobStatus"]
            if status in NEO_FAILED:
                reason = job.get("FailureReason") or "no FailureReason given"
                raise CompileError(f"Neo compilation job {name} {status}: {reason}")
            if status in NEO_DONE:
                done[name] = job
                pending.remove(name)
                log(f"{name} completed")
        if not pending:
            return done
        remaining = deadline - clock()
        if remaining <= 0:
            for name in pending:
                try:
                    sagemaker.stop_compilation_job(CompilationJobName=name)
                except Exception as exc:  # stopping is a courtesy; the timeout is the error to report
                    log(f"could not stop {name}: {exc}")
            raise CompileError(
                f"Neo compilation timed out after {timeout_s:.0f} s: {', '.join(pending)} unfinished"
            )
        log(f"waiting for {', '.join(pending)} ({remaining:.0f} s left)")
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay_s)


def download_neo_output(s3: Any, artifacts_uri: str, dest: Path) -> Path:
    """Neo's ``S3ModelArtifacts`` is the compiled archive's URI (or, seen in moto, its output prefix)."""
    bucket, key = split_s3_uri(artifacts_uri)
    if not key.endswith(".tar.gz"):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        archives = [o["Key"] for o in listed if o["Key"].endswith(".tar.gz")]
        if len(archives) != 1:
            raise CompileError(f"expected one compiled .tar.gz under {artifacts_uri}, found {len(archives)}")
        key = archives[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(dest))
    return dest


def compile_with_neo(
    sagemaker: Any,
    s3: Any,
    meta: Mapping[str, Any],
    targets: Sequence[str],
    *,
    model_s3_uri: str,
    output_s3_uri: str,
    role_arn: str,
    timeout_s: int,
    out_dir: Path,
    source_sha256: str,
    framework_version: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """One Neo job per target, all started before any is waited for; returns compiled.json's targets."""
    input_config = neo_input_config(meta, model_s3_uri, framework_version)
    jobs: dict[str, str] = {}
    for target in targets:
        name = neo_job_name(target, source_sha256, time.time())
        request = compilation_job_request(name, target, input_config, output_s3_uri, role_arn, timeout_s)
        sagemaker.create_compilation_job(**request)
        log(f"started Neo compilation job {name} for {target}")
        jobs[target] = name
    finished = wait_for_compilation(sagemaker, list(jobs.values()), timeout_s, sleep=sleep, clock=clock)
    entries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target, name in jobs.items():
            job = finished[name]
            uri = job["ModelArtifacts"]["S3ModelArtifacts"]
            archive = download_neo_output(s3, uri, Path(tmp) / target / "neo.tar.gz")
            unpacked = Path(tmp) / target / "neo"
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
            files = {
                f"neo/{p.relative_to(unpacked).as_posix()}": p
                for p in sorted(unpacked.rglob("*"))
                if p.is_file()
            }
            artifact = {
                "file": "neo",
                "runtime": "dlr",
                "precision": "float32",
                "input": {
                    "name": meta["input"].get("name", "img_in"),
                    "shape": list(meta["input"]["shape"]),
                    "dtype": "float32",
                    "normalization": "x/255",
                    "quantization": None,
                },
                # Neo keeps the serving signature's output order (angle, throttle: training/export.py).
                "outputs": [
                    {"name": n, "index": i, "dtype": "float32", "quantization": None}
                    for i, n in enumerate(("angle", "throttle"))
                ],  # fmt: skip
                "sha256": sha256_file(archive),
                "size_bytes": archive.stat().st_size,
                # DLR does not run in the Processing container: the device's smoke test checks the output.
                "accuracy_delta": None,
                "neo": {"job_name": name, "job_arn": job.get("CompilationJobArn"), "s3_uri": uri},
            }
            manifest = finish_manifest(base_manifest(target, meta, source_sha256), [artifact], "neo")
            package = write_package(files, manifest, out_dir / target / PACKAGE_NAME)
            entries[target] = compiled_entry(target, package, [artifact], "neo")
            log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']}")
    return entries


# ------------------------------------------------------------------------------------------ local


@dataclass(frozen=True)
class LocalArtifact:
    """One locally compiled model file and how the runtimes must feed it."""

    file: str
    runtime: str
    precision: str
    scheme: str


LOCAL_ARTIFACTS = (  # best first: the car drives with the first one within tolerance
    LocalArtifact(
        "pilot_int8.tflite", "litert", "int8", "full-integer int8 (int8 input = frame - 128, scale 1/255)"
    ),
    LocalArtifact("pilot_float32.tflite", "litert", "float32", "float32"),
    LocalArtifact(
        "pilot_int8.onnx",
        "onnxruntime",
        "int8",
        "static QDQ, per-channel int8 weights, uint8 activations and input",
    ),
    LocalArtifact("pilot_float32.onnx", "onnxruntime", "float32", "float32"),
)


def representative_indices(total: int, wanted: int, seed: int) -> np.ndarray:
    """A deterministic, sorted sample of frame indices for int8 calibration."""
    if total <= 0:
        raise CompileError("the training split is empty: int8 calibration needs frames")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(total, wanted), replace=False))


def with_full_input_range(frames: np.ndarray) -> np.ndarray:
    """The calibration frames with one pixel of the first set to 0 and one to 255.

    Quantisers take the input's range from what they see; a dim or washed-out training set would give
    the input a narrower range than the camera's, clipping brighter frames on the car and losing the
    exact frame-to-int8 mapping (scale 1/255). Two pixels of one frame fix the range and change the
    activations' statistics negligibly.
    """
    frames = np.array(frames, dtype=np.uint8, copy=True)
    if len(frames):
        frames[0, 0, 0, 0], frames[0, 0, 0, 1] = 0, 255
    return frames


def load_images(split_dir: Path) -> np.ndarray:
    from processing.shards import ShardError, load_split

    try:
        arrays, _ = load_split(split_dir)
    except (ShardError, OSError) as exc:
        raise CompileError(f"cannot read the {split_dir.name} split: {exc}") from exc
    return arrays["images"]


def serving_model(model: Any, output_names: Sequence[str]) -> Any:
    """The Keras model with its outputs keyed by name, so every converter names them angle/throttle."""
    import keras

    outputs = model.outputs
    if len(outputs) != len(output_names):
        raise CompileError(f"the model has {len(outputs)} outputs, model.json names {len(output_names)}")
    return keras.Model(model.inputs, dict(zip(output_names, outputs, strict=True)), name="serving")


def convert_litert(model: Any, calibration: np.ndarray | None = None) -> bytes:
    """Keras -> .tflite; with calibration frames, full-integer int8 whose input is the frame minus 128."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([to_model_input(frame[None])] for frame in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # x/255 quantises to int8 as frame - 128 (scale 1/255, zero point -128): one XOR on the car. A uint8
        # input would put a uint8->int8 QUANTIZE op in the graph, measured 12% slower at batch 1.
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.float32  # heads dequantised in-graph: angle keeps full precision
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints every captured variable
        return converter.convert()


def convert_onnx(model: Any, dest: Path, calibration: np.ndarray | None = None) -> None:
    """Keras -> ONNX (Keras' own exporter, tf2onnx underneath); with calibration frames, static int8 QDQ."""
    import tensorflow as tf

    # An explicit signature (batch dimension free): Keras refuses to export a model never called otherwise.
    signature = [tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=model.inputs[0].name)]
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(dest), format="onnx", verbose=False, input_signature=signature)
    if calibration is None:
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = model.inputs[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._frames = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self._frames, None)
            return None if frame is None else {input_name: to_model_input(frame[None])}

    float_path = dest.with_suffix(".float.onnx")
    dest.rename(float_path)
    quantize_static(
        str(float_path),
        str(dest),
        Frames(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    float_path.unlink()
    feed_frames_directly(dest)


FRAME_SCALE = 1.0 / 255.0


def feed_frames_directly(path: Path) -> bool:
    """Make a QDQ model take the uint8 frame: drop the input's QuantizeLinear when it is exactly x/255.

    With the calibration's full input range the input quantises with scale 1/255 and zero point 0, so
    ``quantize(frame / 255)`` is the frame itself; feeding it saves the float conversion on the car and
    the QuantizeLinear in the graph (measured 6% at batch 1). Layout-only Transposes between the input
    and the QuantizeLinear stay (they move uint8 as well as float). Returns whether the model changed.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    tensor = graph.input[0].name
    consumers = [n for n in graph.node if tensor in n.input]
    while len(consumers) == 1 and consumers[0].op_type == "Transpose":
        tensor = consumers[0].output[0]
        consumers = [n for n in graph.node if tensor in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        return False
    quantize = consumers[0]
    scale, zero_point = (constants.get(name) for name in quantize.input[1:3])
    if scale is None or zero_point is None or zero_point.dtype != np.uint8 or int(zero_point) != 0:
        return False
    if abs(float(scale) - FRAME_SCALE) > 1e-6 * FRAME_SCALE:
        return False
    for node in graph.node:
        node.input[:] = [tensor if name == quantize.output[0] else name for name in node.input]
    graph.node.remove(quantize)
    stale = [info for info in graph.value_info if info.name == tensor]  # was float, now uint8: re-inferred
    for info in stale:
        graph.value_info.remove(info)
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.save(model, str(path))
    return True


def _quantization(details: Mapping[str, Any]) -> dict[str, float] | None:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def litert_io(path: Path, meta: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Input and named outputs of a .tflite, read from its serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(path)).get_signature_runner()
    (input_details,) = signature.get_input_details().values()
    outputs = signature.get_output_details()
    input_spec = _input_spec(meta, np.dtype(input_details["dtype"]).name, _quantization(input_details))
    output_specs = [
        {
            "name": name,
            "tensor": outputs[name]["name"],
            "dtype": np.dtype(outputs[name]["dtype"]).name,
            "quantization": _quantization(outputs[name]),
        }
        for name in ("angle", "throttle")
    ]
    return input_spec, output_specs


def onnx_io(path: Path, meta: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != ["angle", "throttle"]:
        raise CompileError(f"{path.name}: outputs {names}, expected angle and throttle")
    outputs = [
        {"name": n, "tensor": n, "dtype": "float32", "quantization": None} for n in ("angle", "throttle")
    ]
    if session.get_inputs()[0].type == "tensor(uint8)":  # feed_frames_directly: the frame, scale 1/255
        return _input_spec(meta, "uint8", {"scale": FRAME_SCALE, "zero_point": 0}), outputs
    return _input_spec(meta, "float32", None), outputs


def _input_spec(meta: Mapping[str, Any], dtype: str, quantization: dict[str, float] | None) -> dict[str, Any]:
    return {
        "name": meta["input"].get("name", "img_in"),
        "shape": [int(v) for v in meta["input"]["shape"]],
        "dtype": dtype,
        "normalization": meta["input"].get("normalization", "x/255"),
        "quantization": quantization,
        "frame_spec": meta["input"].get("frame_spec") or FrameSpec().to_dict(),
    }


def keras_reference(model: Any, frames: np.ndarray, meta: Mapping[str, Any], batch: int = 128):
    """The float Keras model's (angle, throttle) on the frames: what every artifact is compared with."""
    angles, throttles = [], []
    for start in range(0, len(frames), batch):
        heads = model(to_model_input(frames[start : start + batch]), training=False)
        heads = [np.asarray(heads[name]) for name in ("angle", "throttle")]
        angle, throttle = decode_outputs(
            heads, meta.get("model_type", "linear"), meta.get("throttle_range", 0.5)
        )
        angles.append(angle)
        throttles.append(throttle)
    return np.concatenate(angles), np.concatenate(throttles)


def accuracy_delta(
    pilot: Any, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], batch: int = 128
):
    """Angle/throttle error of a runtime pilot against the float Keras model on the same frames."""
    outputs = [pilot.run_batch(frames[start : start + batch]) for start in range(0, len(frames), batch)]
    angle = np.concatenate([a for a, _ in outputs])
    throttle = np.concatenate([t for _, t in outputs])
    angle_err, throttle_err = np.abs(angle - reference[0]), np.abs(throttle - reference[1])
    return {
        "frames": len(frames),
        "angle_mae": float(angle_err.mean()),
        "angle_max": float(angle_err.max()),
        "throttle_mae": float(throttle_err.mean()),
        "throttle_max": float(throttle_err.max()),
    }


def choose_default(artifacts: list[dict[str, Any]], max_angle_delta: float) -> str:
    """Marks each artifact ``within_tolerance``; the car drives with the first (best) one that is."""
    for artifact in artifacts:
        artifact["within_tolerance"] = artifact["accuracy_delta"]["angle_mae"] <= max_angle_delta
    usable = [a["file"] for a in artifacts if a["within_tolerance"]]
    if not usable:
        raise CompileError(f"no compiled artifact is within angle MAE {max_angle_delta} of the float model")
    return usable[0]


def compile_locally(
    model_dir: Path,
    meta: Mapping[str, Any],
    targets: Sequence[str],
    *,
    train_dir: Path,
    test_dir: Path,
    out_dir: Path,
    source_sha256: str | None,
    calibration_frames: int = 200,
    seed: int = 0,
    max_angle_delta: float = DEFAULT_MAX_ANGLE_DELTA,
) -> dict[str, dict[str, Any]]:
    """LiteRT and ONNX artifacts (float32 and int8), measured on the test split; one package per target."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge import runtimes

    model_path = model_dir / "model.keras"
    if not model_path.is_file():
        raise CompileError(
            f"{model_path} not found: local compilation needs the Keras model (contracts section 3)"
        )
    train_images = load_images(train_dir)
    test_images = load_images(test_dir)
    if len(test_images) == 0:
        raise CompileError("the test split is empty: the accuracy delta needs frames")
    calibration = with_full_input_range(
        train_images[representative_indices(len(train_images), calibration_frames, seed)]
    )
    del train_images
    log(
        f"loading {model_path.name}; calibrating on {len(calibration)} training frames, "
        f"measuring on {len(test_images)} test frames"
    )
    model = serving_model(keras.saving.load_model(model_path, compile=False), ("angle", "throttle"))
    reference = keras_reference(model, test_images, meta)

    artifacts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for spec in LOCAL_ARTIFACTS:
            path = work / spec.file
            started = time.perf_counter()
            int8 = calibration if spec.precision == "int8" else None
            if spec.runtime == "litert":
                path.write_bytes(convert_litert(model, int8))
                input_spec, output_specs = litert_io(path, meta)
            else:
                convert_onnx(model, path, int8)
                input_spec, output_specs = onnx_io(path, meta)
            artifact = {
                "file": spec.file,
                "runtime": spec.runtime,
                "precision": spec.precision,
                "quantization_scheme": spec.scheme,
                "input": input_spec,
                "outputs": output_specs,
                "sha256": sha256_file(path),
                "size_bytes": path.stat().st_size,
            }
            # Measured through the car's own code path: edge.runtimes reads model_type from the manifest.
            pilot = runtimes.load_artifact(work, artifact, base_manifest(targets[0], meta, source_sha256))
            artifact["accuracy_delta"] = accuracy_delta(pilot, test_images, reference)
            artifacts.append(artifact)
            delta = artifact["accuracy_delta"]
            log(
                f"{spec.file}: {artifact['size_bytes']:,} bytes in {time.perf_counter() - started:.1f} s, "
                f"angle MAE {delta['angle_mae']:.4f}, throttle MAE {delta['throttle_mae']:.4f} vs Keras"
            )
        default = choose_default(artifacts, max_angle_delta)
        files = {a["file"]: work / a["file"] for a in artifacts}
        entries = {}
        for target in targets:
            manifest = base_manifest(target, meta, source_sha256)
            manifest["tolerance"] = {"angle_mae": max_angle_delta}
            manifest = finish_manifest(manifest, artifacts, default)
            package = write_package(files, manifest, out_dir / target / PACKAGE_NAME)
            entries[target] = compiled_entry(target, package, artifacts, default)
            log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']} (drives with {default})")
    return entries


# ------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compile.py",
        description="CompileForEdge: compile the trained pilot per edge target, with SageMaker Neo (on AWS) "
        "or locally with LiteRT (float32, int8) and ONNX (float32, int8). "
        "Writes OUTPUT/<target>/model.tar.gz, "
        "OUTPUT/<target>/manifest.json and OUTPUT/compiled.json.",
    )
    parser.add_argument(
        "--model", type=Path, default=Path(f"{PROCESSING}/model"), help="folder with model.tar.gz"
    )
    parser.add_argument(
        "--train", type=Path, default=Path(f"{PROCESSING}/train"), help="training split (shards)"
    )
    parser.add_argument("--test", type=Path, default=Path(f"{PROCESSING}/test"), help="test split (shards)")
    parser.add_argument("--output", type=Path, default=Path(f"{PROCESSING}/output"), help="output folder")
    parser.add_argument(
        "--targets",
        default=DEFAULT_TARGETS,
        help=f"comma-separated Neo TargetDevice names (default {DEFAULT_TARGETS})",
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "neo", "local"),
        default="auto",
        help="neo: SageMaker Neo; local: LiteRT and ONNX here; auto (default): neo when --model-s3-uri is "
        "given and ROBOCAR_LOCAL_ROOT is not set, else local",
    )
    parser.add_argument("--model-s3-uri", help="S3 URI of model.tar.gz (Neo's input)")
    parser.add_argument("--output-s3-uri", help="S3 prefix Neo writes to (one folder per target)")
    parser.add_argument("--role-arn", help="IAM role Neo assumes to read the model and write its output")
    parser.add_argument("--timeout-s", type=int, default=1800, help="Neo: per-step time limit (default 1800)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"), help="AWS region for Neo")
    parser.add_argument("--framework-version", help="Neo: FrameworkVersion (default: Neo's own)")
    parser.add_argument("--calibration-frames", type=int, default=200, help="local: int8 calibration frames")
    parser.add_argument("--seed", type=int, default=0, help="local: seed of the calibration sample")
    parser.add_argument(
        "--max-angle-delta",
        type=float,
        default=DEFAULT_MAX_ANGLE_DELTA,
        help="local: largest angle MAE vs the float model for the artifact the car drives with "
        "(default 0.03)",
    )
    return parser


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    targets = parse_targets(args.targets, target_devices())
    mode = resolve_mode(args.mode, args.model_s3_uri, environ)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = unpack_model(args.model, Path(tmp))
        meta = read_model_json(model_dir)
        archive = args.model / PACKAGE_NAME if args.model.is_dir() else args.model
        source_sha256 = sha256_file(archive) if archive.is_file() else None
        log(f"{mode} compilation of a {meta.get('model_type', 'linear')} pilot for {', '.join(targets)}")
        if mode == "neo":
            needed = {"--model-s3-uri": args.model_s3_uri, "--output-s3-uri": args.output_s3_uri}
            needed["--role-arn"] = args.role_arn
            missing = [flag for flag, value in needed.items() if not value]
            if missing:
                raise CompileError(f"Neo mode needs {', '.join(missing)}")
            import boto3

            session = boto3.session.Session(region_name=args.region)
            entries = compile_with_neo(
                session.client("sagemaker"),
                session.client("s3"),
                meta,
                targets,
                model_s3_uri=args.model_s3_uri,
                output_s3_uri=args.output_s3_uri,
                role_arn=args.role_arn,
                timeout_s=args.timeout_s,
                out_dir=args.output,
                source_sha256=source_sha256 or "0" * 64,
                framework_version=args.framework_version,
            )
        else:
            entries = compile_locally(
                model_dir,
                meta,
                targets,
                train_dir=args.train,
                test_dir=args.test,
                out_dir=args.output,
                source_sha256=source_sha256,
                calibration_frames=args.calibration_frames,
                seed=args.seed,
                max_angle_delta=args.max_angle_delta,
            )
    compiled = {
        "format": "robocar-compiled/1",
        "mode": mode,
        "source_model_sha256": source_sha256,
        "targets": entries,
    }
    (args.output / COMPILED_NAME).write_text(json.dumps(compiled, indent=2, sort_keys=True) + "\n")
    log(f"wrote {args.output / COMPILED_NAME}")
    return compiled


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout_s <= 0 or args.calibration_frames <= 0:
        parser.error("--timeout-s and --calibration-frames must be positive")
    try:
        run(args, os.environ)
    except CompileError as exc:
        print(f"compile: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
