"""CompileForEdge: the trained pilot compiled for each edge target (docs/contracts.md section 5, docs/neo.md).

Runs in a Processing container (or as a local process). Every mode starts from the same Neo input: the
Keras pilot exported as one ONNX model within ONNX 1.7 (``processing/onnx_export.py``).

* ``neo`` (AWS, ``processing/neo.py``): the Neo input is uploaded, one ``CreateCompilationJob`` per
  target is started (framework ONNX, NCHW input shape, the target's CompilerOptions) and
  ``DescribeCompilationJob`` is polled with exponential backoff until a timeout; a failed job fails the
  step with Neo's ``FailureReason``. Each compiled output is repackaged with a manifest (runtime DLR).
* ``local`` (``processing/local_compile.py``): LiteRT float32 and int8, ONNX float32 and int8, all
  derived from the Neo input and measured through the car's runtime code against the Keras model.
* ``--dry-run``: writes the Neo input (``OUTPUT/neo-input.tar.gz``) and, per target, the exact
  request (``OUTPUT/<target>/create_compilation_job.json``) without calling any AWS API.

Output, per target: ``OUTPUT/<target>/model.tar.gz`` (the artifacts and ``manifest.json``) and
``OUTPUT/<target>/manifest.json``; and ``OUTPUT/compiled.json``::

    {"targets": {"<target>": {"uri", "sha256", "size_bytes", "runtime", "runtimes", "default"}},
     "mode", "neo_onnx", ...}

The Register step reads ``targets.<target>.sha256`` and ``targets.<target>.runtime`` with JsonGet.
``uri`` is relative to the step's output (``<target>/model.tar.gz``) because the step's S3 output prefix
is only known to the pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# ONNX, TensorFlow and boto3 are imported where they are used: the control plane imports parse_targets
# from here (pipelines/robocar/targets.py) with none of them installed.
from edge.artifacts import sha256_file
from edge.registry import DEFAULT_EDGE_TARGETS
from processing.edge_package import (
    COMPILED_FORMAT,
    COMPILED_NAME,
    PACKAGE_NAME,
    CompileError,
    CompileFailed,
    frame_contract,
    json_bytes,
    log,
)
from processing.errors import add_debug_flag, run_main
from processing.local_compile import DEFAULT_MAX_ANGLE_DELTA
from processing.neo import (
    NEO_INPUT_NAME,
    NeoInput,
    parse_targets,
    requests_for_targets,
    target_devices,
    write_dry_run,
    write_neo_input,
)

__all__ = ["CompileError", "CompileFailed", "main", "parse_targets", "run", "target_devices"]

PROCESSING = "/opt/ml/processing"
DEFAULT_TARGETS = ",".join(DEFAULT_EDGE_TARGETS)
# The dry run fills what it was not given with these: the request stays valid and calls nothing.
DRY_RUN_OUTPUT_S3_URI = "s3://robocar-dry-run/neo"
DRY_RUN_ROLE_ARN = "arn:aws:iam::123456789012:role/robocar-dry-run"


def resolve_mode(mode: str, model_s3_uri: str | None, environ: Mapping[str, str]) -> str:
    """``auto`` is Neo when the model is in S3 and no local workspace (ROBOCAR_LOCAL_ROOT) is set."""
    if mode == "auto":
        return "neo" if model_s3_uri and not environ.get("ROBOCAR_LOCAL_ROOT") else "local"
    return mode


# -------------------------------------------------------------------------------------------- model


def unpack_model(model: Path, work: Path, marker: str = "model.json") -> Path:
    """``--model`` (a folder with model.tar.gz, the archive itself, or an extracted model) -> model folder
    holding ``marker`` (the pilot's model.json; the classifier's classifier-spec.json)."""
    if (model / marker).is_file():
        return model
    archive = model / PACKAGE_NAME if model.is_dir() else model
    if not archive.is_file():
        raise CompileError(f"{model}: no {PACKAGE_NAME} and no {marker} (expected the training output)")
    target = work / "model"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, '..' and links out of the folder
    except (tarfile.TarError, OSError) as exc:
        raise CompileError(f"{archive}: cannot unpack the model archive: {exc}") from exc
    if not (target / marker).is_file():
        raise CompileError(f"{archive} has no {marker} at its top level")
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
    spec_shape = frame_contract(meta)["frame_spec"]  # before loading Keras: a bad record fails in a second
    if [spec_shape["height"], spec_shape["width"], 3] != shape:
        raise CompileError(f"model.json: input shape {shape} is not its frame_spec's {spec_shape}")
    return meta


def load_keras_model(model_dir: Path) -> Any:
    """The trained Keras pilot (``model.keras``, contracts section 3): what the Neo input is exported from."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path = model_dir / "model.keras"
    if not path.is_file():
        raise CompileError(f"{path} not found: compilation needs the Keras model (contracts section 3)")
    import keras

    log(f"loading {path.name}")
    return keras.saving.load_model(path, compile=False)


def export_neo_onnx(keras_model: Any, meta: Mapping[str, Any]) -> Any:
    """The ONNX model Neo compiles, checked against ONNX 1.7's limits (opset 12, IR version 7)."""
    from processing.onnx_export import OnnxExportError, check_neo_onnx_limits
    from processing.onnx_export import export_neo_onnx as export

    expected = [int(v) for v in meta["input"]["shape"]]
    actual = [int(v) for v in keras_model.inputs[0].shape[1:]]
    if actual != expected:
        raise CompileError(f"model.keras takes {actual}, model.json says {expected}")
    try:
        proto = export(keras_model, str(meta["input"].get("name", "img_in")))
        check_neo_onnx_limits(proto)
    except OnnxExportError as exc:
        raise CompileError(f"cannot write the Neo input: {exc}") from exc
    return proto


def neo_onnx_summary(proto: Any) -> dict[str, Any]:
    """compiled.json's record of the Neo model every artifact derives from."""
    from processing.onnx_export import input_shape, onnx_versions, serialize

    (graph_input,) = proto.graph.input
    return {
        "sha256": hashlib.sha256(serialize(proto)).hexdigest(),
        "input": {"name": graph_input.name, "shape": input_shape(proto), "layout": "NCHW"},
        **onnx_versions(proto),
    }


def write_neo_archive(proto: Any, dest: Path) -> NeoInput:
    from processing.onnx_export import input_shape, serialize

    return write_neo_input(serialize(proto), dest, proto.graph.input[0].name, input_shape(proto))


# ------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compile.py",
        description="CompileForEdge: compile the trained pilot per edge target, with SageMaker Neo (on AWS) "
        "or locally with LiteRT (float32, int8) and ONNX (float32, int8), all from the ONNX model Neo "
        "gets. Writes OUTPUT/<target>/model.tar.gz, OUTPUT/<target>/manifest.json and "
        "OUTPUT/compiled.json; --dry-run writes OUTPUT/neo-input.tar.gz and "
        "OUTPUT/<target>/create_compilation_job.json instead.",
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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write the Neo input and each target's CreateCompilationJob request as JSON; call no AWS API",
    )
    parser.add_argument("--model-s3-uri", help="S3 URI of the training model.tar.gz (selects Neo in auto)")
    parser.add_argument(
        "--output-s3-uri", help="S3 prefix for Neo: its input under input/, its output per target"
    )
    parser.add_argument("--role-arn", help="IAM role Neo assumes to read the model and write its output")
    parser.add_argument("--timeout-s", type=int, default=1800, help="Neo: per-step time limit (default 1800)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"), help="AWS region for Neo")
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


def dry_run(args: argparse.Namespace, proto: Any, targets: Sequence[str]) -> dict[str, Any]:
    """The Neo input and each target's request, written as they would be sent; nothing is called."""
    return dry_run_requests(args, write_neo_archive(proto, args.output / NEO_INPUT_NAME), targets)


def dry_run_requests(args: argparse.Namespace, neo_input: Any, targets: Sequence[str]) -> dict[str, Any]:
    """Each target's CreateCompilationJob request for a written Neo input, as it would be sent (``--output``
    gets one JSON file per target); no AWS API is called. Both recipes' ``--dry-run``."""
    from processing.neo import neo_input_s3_uri

    output_s3_uri = args.output_s3_uri or DRY_RUN_OUTPUT_S3_URI
    requests = requests_for_targets(
        targets,
        neo_input,
        input_s3_uri=neo_input_s3_uri(output_s3_uri, neo_input),
        output_s3_uri=output_s3_uri,
        role_arn=args.role_arn or DRY_RUN_ROLE_ARN,
        timeout_s=args.timeout_s,
        now=time.time(),
    )
    for path in write_dry_run(args.output, requests):
        log(f"wrote {path}")
    log(f"wrote {neo_input.archive} (sha256 {neo_input.sha256}); no AWS API was called")
    return {"mode": "dry-run", "neo_input": str(neo_input.archive), "requests": requests}


def compile_on_neo(
    args: argparse.Namespace,
    proto: Any,
    meta: Mapping[str, Any],
    targets: Sequence[str],
    source_sha256: str | None,
    work: Path,
) -> dict[str, dict[str, Any]]:
    import boto3

    from processing.neo import compile_with_neo

    session = boto3.session.Session(region_name=args.region)
    return compile_with_neo(
        session.client("sagemaker"),
        session.client("s3"),
        meta,
        targets,
        write_neo_archive(proto, work / NEO_INPUT_NAME),
        output_s3_uri=args.output_s3_uri,
        role_arn=args.role_arn,
        timeout_s=args.timeout_s,
        out_dir=args.output,
        source_sha256=source_sha256,
    )


def compile_mode(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The mode a CompileForEdge run takes (``--dry-run``, else ``resolve_mode``); Neo's needs checked."""
    mode = "dry-run" if args.dry_run else resolve_mode(args.mode, args.model_s3_uri, environ)
    if mode == "neo":
        needed = {"--model-s3-uri": args.model_s3_uri, "--output-s3-uri": args.output_s3_uri}
        needed["--role-arn"] = args.role_arn
        missing = [flag for flag, value in needed.items() if not value]
        if missing:
            raise CompileError(f"Neo mode needs {', '.join(missing)}")
    return mode


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    targets = parse_targets(args.targets, target_devices())
    mode = compile_mode(args, environ)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = unpack_model(args.model, Path(tmp))
        meta = read_model_json(model_dir)
        archive = args.model / PACKAGE_NAME if args.model.is_dir() else args.model
        source_sha256 = sha256_file(archive) if archive.is_file() else None
        log(f"{mode}: a {meta.get('model_type', 'linear')} pilot for {', '.join(targets)}")
        keras_model = load_keras_model(model_dir)
        proto = export_neo_onnx(keras_model, meta)
        if mode == "dry-run":
            return dry_run(args, proto, targets)
        if mode == "neo":
            entries = compile_on_neo(args, proto, meta, targets, source_sha256, Path(tmp))
        else:
            from processing.local_compile import compile_locally

            entries = compile_locally(
                keras_model,
                proto,
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
        "format": COMPILED_FORMAT,
        "mode": mode,
        "source_model_sha256": source_sha256,
        "neo_onnx": neo_onnx_summary(proto),
        "preprocessing": frame_contract(meta)["preprocessing"],
        "targets": entries,
    }
    (args.output / COMPILED_NAME).write_bytes(json_bytes(compiled))
    log(f"wrote {args.output / COMPILED_NAME}")
    return compiled


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 compiled, 1 compiling failed (Neo, accuracy tolerance), 2 bad input, 70 a bug."""
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.timeout_s <= 0 or args.calibration_frames <= 0:
        parser.error("--timeout-s and --calibration-frames must be positive")

    def body() -> int:
        run(args, os.environ)
        return 0

    return run_main("compile", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
